// Goal: an initial copy that was suspended part-way still owes the rest of the
// volume: `pair resync` must not reach PAIR until the S-VOL holds all of the
// P-VOL, also when A dies during that resync. Method: two real arrays; the
// P-VOL holds data only in its second half before pair create; the copy is
// paced (8 MiB/s: 16 s to reach the data, well past the host writes; the resync
// is paced too), restore is paused on B, and host writes to the first 16 MiB
// fill the journal, so the group suspends (PSUE journal-full) with the copy
// still in the first half (base records stop at 75% of the 132 MiB journal,
// the part they leave to host writes, while B applies nothing). Then resume, `pair resync`, PAIR, lag 0 and
// qemu-img compare of P-VOL and S-VOL (B's display shows `svolConsistent`
// false while cut off, true again in PAIR); in the second case A is killed (-9)
// while the resync is still copying (restore still paused, so the copy waits
// for journal space) and restarted first.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { runOk } from '../helpers/array.js';
import {
  compareAll, display, resyncWhenLinked, setRestorePaused, startSite, startWithin, waitFor, waitForPairAndLag0, type Site,
} from '../helpers/replication.js';

/** 128 MiB of patterns in the P-VOL's second half (8 × 16 MiB), flushed, before the pair exists. */
function fillSecondHalf(site: Site): void {
  const commands = Array.from({ length: 8 }, (_, i) => ['-c', `write -P ${0xa0 + i} ${128 + 16 * i}M 16M`]).flat();
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), ...commands, '-c', 'flush'], { timeoutMs: 120_000 });
}

/** A site whose initial copy was suspended (journal-full) before it reached the P-VOL's data. */
async function suspendedMidCopy(t: TestContext): Promise<Site> {
  const site = await startSite(t, { volumes: 1, volumeSize: '256MiB', journalSize: '132MiB', copyPace: '8MiB', waitForPair: false, beforePair: fillSecondHalf });
  await setRestorePaused(site.b, true);
  // 160 MiB of host writes over the first 16 MiB: more than the journal holds.
  const fill = Array.from({ length: 10 }, (_, i) => ['-c', `write -P ${0x10 + i} 0 16M`]).flat();
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), ...fill, '-c', 'flush'], { timeoutMs: 120_000 });
  // journal-full, or link-down when heartbeats were missed on a loaded machine first: either cuts the copy short.
  await waitFor('PSUE on A (journal-full)', async () => (await display(site.a)).every((p) => p.status === 'PSUE'), 60_000, 100);
  const row = (await display(site.a))[0]!;
  t.diagnostic(`suspended mid-copy: ${row.status} ${row.statusReason}, copy ${row.copyBytes} bytes sent`);
  assert.ok(row.copyBytes < 128 * 2 ** 20, `the copy was suspended before the P-VOL's data (${row.copyBytes} bytes sent)`);
  assert.equal(row.svolConsistent, null, 'the master leaves it to the S-VOL array');
  // B's own view: what a cluster manager asks before a takeover there.
  assert.equal((await display(site.b))[0]!.svolConsistent, false, 'B knows its S-VOL was cut off mid-copy');
  return site;
}

test('a resync after an initial copy suspended mid-way copies the rest of the volume', { timeout: 300_000 }, async (t) => {
  const site = await suspendedMidCopy(t);
  await setRestorePaused(site.b, false);
  await resyncWhenLinked(site);
  const row = (await display(site.a))[0]!;
  t.diagnostic(`resync: ${row.status}, copy ${row.copyPercent}%`);
  await waitForPairAndLag0(site, 120_000);
  compareAll(site);
  await waitFor('B showing its S-VOL consistent again in PAIR', async () => (await display(site.b))[0]!.svolConsistent === true, 30_000, 100);
});

test('the rest owed by a suspended initial copy survives a kill -9 of A during the resync', { timeout: 300_000 }, async (t) => {
  const site = await suspendedMidCopy(t);
  // B keeps the records unapplied, so the resync's base records fill the journal and the copy waits.
  await resyncWhenLinked(site);
  await waitFor('the resync copying', async () => (await display(site.a))[0]!.copyBytes > 0, 60_000, 50);
  const row = (await display(site.a))[0]!;
  t.diagnostic(`kill -9 of A during the resync: ${row.status} at ${row.copyPercent}%`);
  assert.equal(row.status, 'COPY');
  await site.a.kill9();
  await startWithin(site.a, 'A');
  await setRestorePaused(site.b, false);
  await waitForPairAndLag0(site, 180_000);
  compareAll(site);
});
