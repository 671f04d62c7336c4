// Soak run of the replication fault rounds (test/helpers/fault-rounds.ts):
// as many seeded randomized rounds as asked, with kill -9 of either array,
// link faults through the proxy (delay, bandwidth cap, split writes, drop,
// reset, stall), restore pauses and journal fills until overflow, each followed
// by a write-order check of the S-VOLs; every 25 rounds the pairs converge and
// are compared. Ends with the summary table of `npm run faults`.
//
//   npm run soak -- --rounds 200 --seed 42 [--keep DIR]
//
// Runs under node's test runner (for cleanup of processes by PID); exits
// non-zero on any violation and prints the seed to replay it. --keep DIR
// keeps the hosts' log, the crash times and the images of a failing run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseArgs } from 'node:util';
import { runFaultRounds, summaryTable } from '../test/helpers/fault-rounds.ts';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '200' },
    seed: { type: 'string', default: String(Date.now() % 1_000_000) },
    keep: { type: 'string' },
  },
});
const rounds = Number(values.rounds);
const seed = Number(values.seed);

test(`soak: ${rounds} fault rounds, seed ${seed}`, { timeout: rounds * 60_000 }, async (t) => {
  const print = (line) => process.stdout.write(`${line}\n`);
  print(`soak: ${rounds} rounds, seed ${seed} (replay: npm run soak -- --rounds ${rounds} --seed ${seed})`);
  const report = await runFaultRounds(t, { seed, rounds, print, ...(values.keep === undefined ? {} : { keepDir: values.keep }) });
  print(`soak summary (seed ${seed}):`);
  for (const line of summaryTable(report)) print(line);
  assert.deepEqual(report.violations, [], `seed ${seed}`);
});
