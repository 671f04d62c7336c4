// `npm run faults`: a real-process fault campaign (docs/architecture.md §10, issue 5).
// Two `twinstore serve` arrays on loopback (volatile-cache drives, 132 MiB
// journals), the libnbd write-order hosts on A's two P-VOLs, and an in-process
// TCP fault proxy on the link B pulls over; seeded rounds kill either array
// (kill -9) at random points, put the link through delay, bandwidth caps, split
// writes, drops (a blackhole), resets and stalls, pause restore, and fill the
// master journal until it overflows; the write-order checker reads the S-VOLs
// after every round (test/helpers/fault-rounds.ts). Ends with a summary table.
//
//   npm run faults -- [--seed N] [--rounds K] [--faults kind,kind] [--keep DIR]
//
// --rounds defaults to one round per fault kind (16, about two minutes);
// --faults draws only from the kinds listed (known-bug kinds, which the default
// draw leaves out, too; none today: docs/testing.md). The seed
// (default: from the clock) is printed first; the same --seed replays the same
// schedule, durations, proxy settings and host writes. Exits 1 when a violation
// was found (the table counts them; they are listed above it), 2 on bad
// arguments. --keep DIR keeps the hosts' log, the crash times, the recovered
// images and both arrays' logs of a failing campaign.
//
// Everything started (arrays, hosts, proxy, temporary folders) is stopped or
// removed at the end, by PID, also on Ctrl-C.

import type { TestContext } from 'node:test';
import { parseArgs } from 'node:util';
import { ALL_FAULT_KINDS, FAULT_KINDS, runFaultRounds, summaryTable, type FaultKind } from '../test/helpers/fault-rounds.js';

function usage(message: string): never {
  process.stderr.write(`${message}\nusage: npm run faults -- [--seed N] [--rounds K] [--faults ${ALL_FAULT_KINDS.join(',')}] [--keep DIR]\n`);
  process.exit(2);
}

let parsed;
try {
  parsed = parseArgs({
    options: {
      seed: { type: 'string' },
      rounds: { type: 'string' },
      faults: { type: 'string' },
      keep: { type: 'string' },
    },
  });
} catch (error) {
  usage((error as Error).message);
}
const { values } = parsed;
const seed = values.seed === undefined ? Date.now() % 1_000_000 : Number(values.seed);
const rounds = values.rounds === undefined ? FAULT_KINDS.length : Number(values.rounds);
if (!Number.isSafeInteger(seed) || seed < 0) usage(`--seed must be a whole number ≥ 0, not ${values.seed}`);
if (!Number.isSafeInteger(rounds) || rounds < 1) usage(`--rounds must be a whole number ≥ 1, not ${values.rounds}`);
const faults = values.faults?.split(',').map((f) => f.trim()) as FaultKind[] | undefined;
for (const fault of faults ?? []) if (!ALL_FAULT_KINDS.includes(fault)) usage(`unknown fault kind ${fault}`);

// runFaultRounds takes a test context only to register its clean-ups (t.after).
const cleanups: Array<() => unknown> = [];
const context = { after: (fn: () => unknown) => cleanups.push(fn), diagnostic: () => undefined } as unknown as TestContext;
async function cleanUp(): Promise<void> {
  for (const fn of cleanups.splice(0).reverse()) {
    try {
      await fn();
    } catch (error) {
      process.stderr.write(`clean-up: ${(error as Error).message}\n`);
    }
  }
}
process.once('SIGINT', () => {
  process.stderr.write('interrupted; stopping the arrays and hosts\n');
  void cleanUp().finally(() => process.exit(130));
});

const print = (line: string): void => {
  process.stdout.write(`${line}\n`);
};
const replay = `npm run faults -- --seed ${seed} --rounds ${rounds}${values.faults === undefined ? '' : ` --faults ${values.faults}`}`;
print(`fault campaign: ${rounds} rounds, seed ${seed} (replay: ${replay})`);
let code = 0;
try {
  const report = await runFaultRounds(context, {
    seed, rounds, print, ...(faults === undefined ? {} : { faults }), ...(values.keep === undefined ? {} : { keepDir: values.keep }),
  });
  if (report.violations.length > 0) {
    print(`violations (seed ${seed}):`);
    for (const v of report.violations) print(`  ${v.slice(0, 2000)}`);
  }
  print(`fault campaign summary (seed ${seed}, replay: ${replay}):`);
  for (const line of summaryTable(report)) print(line);
  code = report.violations.length > 0 ? 1 : 0;
} catch (error) {
  print(`the campaign failed to run (seed ${seed}): ${(error as Error).stack ?? String(error)}`);
  code = 1;
}
await cleanUp();
process.exit(code);
