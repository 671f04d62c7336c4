// Why this exists: issue 13 asks for the profile of what stands between a
// replicated write and a plain one. This runs two arrays under `node
// --cpu-prof`, makes a pair of empty volumes, runs one fio job against the
// P-VOL until B has applied everything, stops both arrays (the profile is
// written on a clean exit) and prints, for each array, where its CPU went:
// self time by function and by source file. With --trace-gc it also counts each
// array's garbage collections (node --trace-gc) from the start of the fio job.
// Run: npm run bench:profile [-- --job sw1m_qd16] [--seconds N] [--pin] [--out DIR] [--trace-gc]

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ProcessTracker, cpuTimes } from './lib/processes.js';
import { fioJobs, runFio } from './lib/fio.js';
import { BenchSites, runBench } from './lib/sites.js';

const MiB = 2 ** 20;
const volumeBytes = 1024 * MiB;
function argValue(name: string): string | undefined {
  const at = process.argv.indexOf(name);
  return at < 0 ? undefined : process.argv[at + 1];
}
const jobName = argValue('--job') ?? 'sw1m_qd16';
const seconds = Number(argValue('--seconds') ?? 20);
const pin = process.argv.includes('--pin');
const out = path.resolve(argValue('--out') ?? 'profiles');
const traceGc = process.argv.includes('--trace-gc');
/** Rows of each table printed. */
const topRows = 25;

const job = fioJobs.find((j) => j.name === jobName);
if (job === undefined) throw new Error(`--job ${jobName}: no such job (one of ${fioJobs.map((j) => j.name).join(', ')})`);
const tracker = new ProcessTracker();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twinstore-profile-'));
const sites = new BenchSites(tracker, dir);

function log(text: string): void {
  process.stdout.write(`[${new Date().toISOString().slice(11, 19)}] ${text}\n`);
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

/** Self time by function and by file, as percentages of all samples. */
function summarise(file: string): string {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as { nodes: ProfileNode[] };
  const total = profile.nodes.reduce((sum, n) => sum + (n.hitCount ?? 0), 0) || 1;
  const byFunction = new Map<string, number>();
  const byFile = new Map<string, number>();
  for (const node of profile.nodes) {
    const hits = node.hitCount ?? 0;
    if (hits === 0) continue;
    const url = node.callFrame.url.replace(/^file:\/\//, '').replace(`${process.cwd()}/`, '');
    const where = url === '' ? '(native)' : url;
    const name = `${node.callFrame.functionName || '(anonymous)'} ${where}${url === '' ? '' : `:${node.callFrame.lineNumber + 1}`}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + hits);
    byFile.set(where, (byFile.get(where) ?? 0) + hits);
  }
  const top = (map: Map<string, number>) => [...map].sort((x, y) => y[1] - x[1]).slice(0, topRows).map(([k, v]) => `  ${((100 * v) / total).toFixed(1).padStart(5)}%  ${k}`).join('\n');
  return `by function (self):\n${top(byFunction)}\nby file (self):\n${top(byFile)}`;
}

/** Garbage collections seen in one array's --trace-gc lines, and their pauses. */
class GcCounts {
  counting = false;
  markCompacts = 0;
  scavenges = 0;
  pauseMs = 0;

  /** A --trace-gc line: `... ms: Mark-Compact 20.0 (54.6) -> 19.1 (54.6) MB, 20.22 / 0.12 ms ...`. */
  line(text: string): void {
    if (!this.counting) return;
    const kind = /ms: (Mark-Compact|Scavenge)\b/.exec(text)?.[1];
    if (kind === undefined) return;
    if (kind === 'Mark-Compact') this.markCompacts += 1;
    else this.scavenges += 1;
    const pause = /MB, ([0-9.]+) \/ [0-9.]+ ms/.exec(text)?.[1];
    if (pause !== undefined) this.pauseMs += Number(pause);
  }

  toString(): string {
    return `${this.markCompacts} mark-compacts, ${this.scavenges} scavenges, ${this.pauseMs.toFixed(0)} ms paused`;
  }
}

async function main(): Promise<void> {
  fs.mkdirSync(out, { recursive: true });
  log(`job ${job!.name} (${job!.description}) for ${seconds} s; ${pin ? 'pinned: A and fio on CPU 0, B on CPU 1' : 'unpinned'}; profiles in ${out}`);
  const [a, b] = await sites.write();
  const started = Date.now();
  const gc = { a: new GcCounts(), b: new GcCounts() };
  const gcArgs = traceGc ? ['--trace-gc'] : [];
  await sites.start(a!, pin ? 0 : undefined, [...gcArgs, '--cpu-prof', `--cpu-prof-dir=${out}`, `--cpu-prof-name=site-a-${started}.cpuprofile`], (line) => gc.a.line(line));
  await sites.start(b!, pin ? 1 : undefined, [...gcArgs, '--cpu-prof', `--cpu-prof-dir=${out}`, `--cpu-prof-name=site-b-${started}.cpuprofile`], (line) => gc.b.line(line));
  for (const site of [a!, b!]) {
    await sites.cli(site, ['volume', 'create', 'rep', '--size', String(volumeBytes)]);
    await sites.cli(site, ['journal', 'create', 'jnl', '--size', '1GiB']);
  }
  await sites.cli(a!, ['pair', 'create', '--group', 'prof', '--pvol', 'rep', '--svol', 'site-b:rep', '--journal', 'jnl', '--remote-journal', 'site-b:jnl', '--overflow', 'throttle']);
  await sites.waitUntil(a!, (r) => r.status === 'PAIR' && r.lagRecords === 0, 600_000);
  const before = { a: cpuTimes(a!.server!.pid), b: cpuTimes(b!.server!.pid) };
  gc.a.counting = true;
  gc.b.counting = true;
  const m = await runFio(tracker, { job: job!, uri: `nbd://${a!.nbd}/rep`, seconds, imageBytes: volumeBytes, outputFile: path.join(dir, 'fio.json'), ...(pin ? { cpu: 0 } : {}) });
  await sites.waitUntil(a!, (r) => r.lagRecords === 0, 600_000);
  const gib = (m.totalIos * (job!.blockSize === '1M' ? MiB : 4096)) / 2 ** 30;
  const perGiB = (site: 'a' | 'b', pid: number): string => {
    const now = cpuTimes(pid);
    const user = (now.user - before[site].user) / gib;
    const system = (now.system - before[site].system) / gib;
    return `${(user + system).toFixed(1)} (user ${user.toFixed(1)}, system ${system.toFixed(1)})`;
  };
  log(`fio: ${m.value.toFixed(0)} ${job!.metric === 'bandwidth' ? 'MB/s' : 'IOPS'}, ${gib.toFixed(2)} GiB; CPU s/GiB to lag 0: A ${perGiB('a', a!.server!.pid)}, B ${perGiB('b', b!.server!.pid)}`);
  if (traceGc) log(`GC from the job's start to lag 0: A ${gc.a}; B ${gc.b}`);
  for (const site of [a!, b!]) await tracker.stop(site.server!, 60_000);
  for (const site of ['site-a', 'site-b']) {
    const file = path.join(out, `${site}-${started}.cpuprofile`);
    if (!fs.existsSync(file)) throw new Error(`${file}: not written (did the array exit cleanly?)`);
    process.stdout.write(`\n== ${site} (${file})\n${summarise(file)}\n`);
  }
}

runBench('profile-replication', tracker, dir, main);
