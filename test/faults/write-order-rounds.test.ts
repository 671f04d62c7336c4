// Goal: whatever fails — array A or B killed -9 at a random moment, the link
// delayed, capped, split, blackholed, reset or stalled, restore paused, the
// master journal filled until it overflows — the S-VOLs of a journal group
// always hold a state the hosts could have seen at one instant, no flushed
// write is lost, an overflow suspends the group (PSUE journal-full) and
// `pair resync` brings it back, and once the faults stop the S-VOLs converge
// to the P-VOLs.
// Method: test/helpers/fault-rounds.ts (volatile-cache arrays with 132 MiB
// journals, libnbd hosts at QD 16 over four connections to two P-VOLs in one
// group, test/helpers/link-proxy.ts on the link B pulls over) runs seeded
// randomized rounds, every kind of fault at least once; after each one the
// write-order checker (test/helpers/write-order.ts) must find a consistent
// instant for both S-VOLs together (after an overflow also at the suspension
// point, before the resync); at the end lag reaches 0 and qemu-img compare
// finds every pair identical. The summary table is printed.
// A fixed seed by default, so CI runs the same schedule each time (timing
// still varies); another with TWINSTORE_FAULT_SEED=N, more rounds with
// TWINSTORE_FAULT_ROUNDS=N. Longer campaigns: `npm run faults -- --seed N
// --rounds K`, `npm run soak`. Seed 693047 once stalled: a restarted A never
// became ready (the startup race of test/replication/startup-race.test.ts, now
// fixed); every API call and restart in the rounds is bounded, so a hang
// fails with a message instead of stalling.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FAULT_KINDS, LINK_FAULTS, runFaultRounds, summaryTable } from '../helpers/fault-rounds.js';

const seed = Number(process.env.TWINSTORE_FAULT_SEED ?? 1);
const rounds = Number(process.env.TWINSTORE_FAULT_ROUNDS ?? 20);

// 20 rounds take ~145 s on a quiet 2-core machine and went past 600 s at a load average of 10;
// every round is bounded on its own, so this bound is for the whole campaign only.
test(`write order holds through ${rounds} randomized fault rounds (seed ${seed})`, { timeout: Math.max(1_200_000, rounds * 60_000) }, async (t) => {
  const print = (line: string): void => {
    t.diagnostic(line);
    if (process.env.TWINSTORE_FAULT_VERBOSE === '1') process.stderr.write(`${line}\n`);
  };
  print(`seed ${seed}: replay with TWINSTORE_FAULT_SEED=${seed} (or npm run faults -- --seed ${seed} --rounds ${rounds})`);
  const keepDir = process.env.TWINSTORE_FAULT_KEEP;
  const report = await runFaultRounds(t, { seed, rounds, print, ...(keepDir === undefined ? {} : { keepDir }) });
  for (const line of summaryTable(report)) print(line);
  assert.deepEqual(report.violations, [], `seed ${seed}: violations`);
  assert.equal(report.rounds, rounds);
  if (rounds >= FAULT_KINDS.length) {
    const { counts } = report;
    assert.ok(counts.killA >= 1 && counts.killB >= 1 && counts.pause >= 1 && counts.fills >= 1, 'every kind of fault ran');
    for (const kind of LINK_FAULTS) assert.ok(counts.link[kind] >= 1, `link fault ${kind} ran`);
    assert.ok(counts.overflows >= counts.fills, 'every fill overflowed the journal, as A showed it');
    assert.equal(counts.overflowsLogged, counts.overflows, "A's log names every overflow pair display showed");
  }
});
