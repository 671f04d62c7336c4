// Goal: after an unclean stop of A, the S-VOLs stay at a consistency point
// while A re-sends its active regions as base records (docs/architecture.md
// §3.8, the re-send after an unclean stop; §5 "every S-VOL shows its P-VOL as of one sequence number").
// Regression test for a bug the write-order fault rounds found (seed 1, round
// 12): a crash can leave P-VOL blocks newer than the recovered journal (records
// dropped after a gap, or lost while their P-VOL blocks reached the disk); B
// applied the re-sent base records region by region, so between the first and
// the last one the S-VOLs mixed the state before the crash with the state
// after it, which the hosts never saw, while pair display showed PAIR and a
// consistency seq. The re-send is now one atomic unit (src/replication/units.ts).
// Method: volatile-cache arrays, the libnbd hosts at QD 16 on two P-VOLs,
// restore paused on B, kill -9 of A; once A is back and B has stored the
// re-sent records, restore runs one batch at a time and the write-order
// checker looks at the S-VOLs after every batch. Several kills.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Hosts, nowUs } from '../helpers/hosts.js';
import {
  appliedSeq, display, journalShow, readSvols, readVolume, setRestorePaused, sleep, stableNextSeq, startSite, startWithin, waitFor,
} from '../helpers/replication.js';
import { checkWriteOrder, type Recovery } from '../helpers/write-order.js';

test('the S-VOLs stay consistent while A re-sends its active regions after an unclean stop', { timeout: 300_000 }, async (t) => {
  const site = await startSite(t, { seed: 7 });
  const hosts = await Hosts.start(t, { volumes: site.pvols.map((name) => site.a.uri(name)), hotBlocks: 4096, dir: site.dir, seed: 7, writesPerSecondPerConnection: 400 });
  const recoveries: Recovery[] = [];
  const found: string[] = [];
  let states = 0;
  for (let kill = 1; kill <= 4 && found.length === 0; kill++) {
    await sleep(1500);
    await setRestorePaused(site.b, true);
    await sleep(300);
    await site.a.kill9();
    await hosts.allDown();
    await startWithin(site.a, 'A');
    recoveries.push({ atUs: nowUs(), images: site.pvols.map((name) => readVolume(site.a, name, site.dir)) });
    const end = await stableNextSeq(site);
    await waitFor('B to store the re-sent records', async () => (await journalShow(site.b)).cursors.durableSeq >= end, 60_000, 50);
    while ((await appliedSeq(site.b)) < end) {
      await setRestorePaused(site.b, false);
      const svols = await readSvols(site, { leavePaused: true });
      states += 1;
      const check = checkWriteOrder({ log: hosts.readLog(), images: svols.images, recoveries, takenUs: svols.takenUs });
      const status = (await display(site.b))[0]!;
      if (!check.consistent) found.push(`kill ${kill}, S-VOLs at seq ${svols.appliedSeq} of ${end} (B shows ${status.status}, consistencySeq ${status.consistencySeq}): ${check.violations[0]}`);
    }
    await setRestorePaused(site.b, false);
    hosts.go();
    await hosts.allUp();
  }
  await hosts.stop();
  t.diagnostic(`${states} S-VOL states checked during re-sends: ${found.length === 0 ? 'all consistent' : found.join(' | ')}`);
  assert.deepEqual(found, []);
});
