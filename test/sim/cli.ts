// npm run sim (issue 5): `--seed N` replays one run and prints one line per
// event; `--runs K [--from S]` runs K seeds and prints the failing ones;
// `--seeds a,b,c` runs those; `--plant BUG` switches on a planted bug
// (src/util/planted.ts) for every run. Exit code 1 when any run found a violation.

import { PLANTED_BUGS, type PlantedBug } from '../../src/util/planted.js';
import { FAULT_KINDS, simulate, type SimReport } from './world.js';

const LEGEND = `legend: each line is "<sim seconds> <who> <what>"; who is an array (site-a, site-b), its disk or
network events, or sim (the simulator). Letters after the array name: H host request/answer, A admin
command, F injected fault, X crash/restart, log the array's own log line; "read/write/sync" are drive
I/O completions, "receive NB from" network deliveries, timeout/interval timers. "!! VIOLATION" is a
checker finding.`;

interface Args {
  seed?: number;
  runs?: number;
  from: number;
  seeds?: number[];
  plant: PlantedBug[];
  faultMs?: number;
  without: string[];
  quiet: boolean;
  json: boolean;
  /** Stop at the first failing seed (a planted bug's hunt). */
  firstFailure: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { from: 1, plant: [], without: [], quiet: false, json: false, firstFailure: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    const whole = (v: string): number => {
      const n = Number(v);
      if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${flag}: "${v}" is not a whole number`);
      return n;
    };
    if (flag === '--seed') args.seed = whole(value());
    else if (flag === '--runs') args.runs = whole(value());
    else if (flag === '--from') args.from = whole(value());
    else if (flag === '--seeds') args.seeds = value().split(',').map(whole);
    else if (flag === '--fault-ms') args.faultMs = whole(value());
    else if (flag === '--without') {
      args.without = value().split(',');
      const unknown = args.without.find((k) => !(FAULT_KINDS as readonly string[]).includes(k));
      if (unknown !== undefined) throw new Error(`--without: unknown fault kind "${unknown}" (known: ${FAULT_KINDS.join(', ')})`);
    } else if (flag === '--quiet') args.quiet = true;
    else if (flag === '--first-failure') args.firstFailure = true;
    else if (flag === '--json') args.json = true;
    else if (flag === '--plant') {
      const bug = value() as PlantedBug;
      if (!PLANTED_BUGS.includes(bug)) throw new Error(`--plant: unknown bug "${bug}" (known: ${PLANTED_BUGS.join(', ')})`);
      args.plant.push(bug);
    } else throw new Error(`unknown option ${flag} (use --seed N, --runs K [--from S], --seeds a,b, --plant BUG, --without KIND,KIND, --fault-ms MS, --first-failure, --quiet, --json)`);
  }
  if (args.seed === undefined && args.runs === undefined && args.seeds === undefined) args.runs = 20;
  return args;
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (args.seed !== undefined) {
    if (!args.quiet) console.log(LEGEND);
    const report = await simulate({ seed: args.seed, plant: args.plant, without: args.without, ...(args.faultMs === undefined ? {} : { faultMs: args.faultMs }), ...(args.quiet ? {} : { print: (line: string) => console.log(line) }) });
    printReport(report);
    if (args.json) console.log(JSON.stringify(report));
    return report.violations.length === 0 ? 0 : 1;
  }
  const seeds = args.seeds ?? Array.from({ length: args.runs! }, (_, i) => args.from + i);
  const failing: SimReport[] = [];
  const totals = { steps: 0, simMs: 0, faults: {} as Record<string, number>, ops: {} as Record<string, number>, checks: {} as Record<string, number>, writes: 0 };
  const started = Date.now();
  let ran = 0;
  for (const seed of seeds) {
    ran += 1;
    let report: SimReport;
    try {
      report = await simulate({ seed, plant: args.plant, without: args.without, ...(args.faultMs === undefined ? {} : { faultMs: args.faultMs }) });
    } catch (error) {
      report = { seed, violations: [`the simulator failed: ${(error as Error).stack ?? String(error)}`], steps: 0, simMs: 0, digest: '', faults: {}, ops: {}, hosts: { writes: 0, acked: 0, failed: 0, flushes: 0 }, checks: {} };
    }
    totals.steps += report.steps;
    totals.simMs += report.simMs;
    totals.writes += report.hosts.writes;
    add(totals.faults, report.faults);
    add(totals.ops, report.ops);
    add(totals.checks, report.checks);
    if (args.json) console.log(JSON.stringify({ seed, digest: report.digest, violations: report.violations }));
    if (report.violations.length > 0) {
      failing.push(report);
      console.log(`seed ${seed} FAILED: ${report.violations[0]}`);
      if (args.firstFailure) break;
    }
  }
  const seconds = (Date.now() - started) / 1000;
  console.log(`${ran} seeds${args.plant.length ? ` with ${args.plant.join(',')} planted` : ''}: ${ran - failing.length} passed, ${failing.length} failed, ${seconds.toFixed(1)} s (${totals.steps} events, ${(totals.simMs / 1000).toFixed(0)} s simulated, ${totals.writes} host writes)`);
  console.log(`faults: ${format(totals.faults)}`);
  console.log(`admin: ${format(totals.ops)}`);
  console.log(`checks: ${format(totals.checks)}`);
  if (failing.length > 0) console.log(`failing seeds: ${failing.map((r) => r.seed).join(' ')}  (replay one: npm run sim -- --seed N${args.plant.map((p) => ` --plant ${p}`).join('')})`);
  return failing.length === 0 ? 0 : 1;
}

function add(into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
}

function format(table: Record<string, number>): string {
  return Object.entries(table).sort().map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
}

function printReport(report: SimReport): void {
  console.log(`seed ${report.seed}: ${report.violations.length === 0 ? 'no violation' : `${report.violations.length} violation(s)`}; ${report.steps} events, ${(report.simMs / 1000).toFixed(1)} s simulated, digest ${report.digest}`);
  console.log(`faults: ${format(report.faults)}`);
  console.log(`admin: ${format(report.ops)}`);
  console.log(`hosts: ${format(report.hosts)}`);
  console.log(`checks: ${format(report.checks)}`);
  for (const v of report.violations) console.log(`VIOLATION ${v}`);
}

main().then((code) => process.exit(code), (error: unknown) => {
  console.error((error as Error).message);
  process.exit(2);
});
