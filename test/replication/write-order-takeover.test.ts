// Goal: after any takeover, the new primary holds a state that the old
// primary's hosts could have seen at one instant (docs/architecture.md §10's write-order
// check, across role changes). After a planned swap it is more: nothing the
// old primary acknowledged is missing.
// Method: two real arrays in volatile-cache mode, two P-VOLs in one journal
// group. The libnbd hosts of test/helpers/write-order-hosts.py write stamped
// blocks to A's two P-VOLs (QD 16, two connections per volume, overlapping
// rewrites, some FLUSHes) and log issue and ack times. (a) `takeover` on B
// while they write: a planned swap; once A has closed their sessions, B's new
// P-VOLs are read and checked against the hosts' log with the write-order
// checker (one instant) and for acknowledged writes that are missing (none
// may be). (b) After a swap back and fresh hosts on A: kill -9 of A
// mid-workload, `takeover` on B (SSWS), and B's volumes checked the same way
// (one instant; acknowledged writes B never received may be missing, and are
// counted). (c) A comes back FENCED, `pair resync --swap` and a swap back make
// it the primary again; fresh hosts; kill -9 of A, a restart (what the hosts
// find then is a Recovery for the checker, and every flushed write must be in
// it), the hosts write again while A re-sends its active regions; once B has
// applied the re-send and some of the new writes, a second kill -9, and
// `takeover` on B: checked with the Recovery. Each check is shown
// able to fail: the checker must reject the same images with one block set
// back to a write that had been replaced long before (and, after the swap,
// with one acknowledged write removed).

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Hosts, nowUs } from '../helpers/hosts.js';
import { display, journalShow, linkUp, readVolume, sleep, startSite, startWithin, waitFor, type Site } from '../helpers/replication.js';
import { checkFlushed, checkWriteOrder, type HostLog, type Recovery } from '../helpers/write-order.js';
import { checkNothingAckedLost, heldWrites, lostAckControl, staleBlockControl, takeover } from '../helpers/takeover-checks.js';

interface Check {
  log: HostLog;
  images: Buffer[];
  takenUs: number;
  initial?: Buffer[];
  recoveries?: Recovery[];
}

/**
 * The write-order check of `images` (the new primary's volumes), and its control: the same
 * images with one block set back to a long-replaced write must be rejected. Returns how many
 * blocks lack an acknowledged write (the writes the takeover lost).
 */
function checkNewPrimary(t: TestContext, label: string, check: Check): number {
  const { log, images, takenUs } = check;
  const options = { ...(check.initial ? { initial: check.initial } : {}), ...(check.recoveries ? { recoveries: check.recoveries } : {}) };
  const result = checkWriteOrder({ log, images, takenUs, ...options });
  const lost = checkNothingAckedLost(log, images, check.initial);
  const behindMs = result.instantUs === undefined ? '-' : ((takenUs - result.instantUs) / 1000).toFixed(0);
  t.diagnostic(`${label}: ${result.consistent ? 'consistent' : 'VIOLATION'}; ${result.blocksWritten} blocks hold ${result.writesHeld} of ${log.writes.size} writes ` +
    `(${[...log.writes.values()].filter((w) => w.acked).length} acknowledged); instant ${behindMs} ms before the read; ${lost.length} blocks lack an acknowledged write`);
  assert.deepEqual(result.violations.slice(0, 5), [], `${label}: the new primary holds a state the hosts could have seen at one instant`);
  assert.ok(result.writesHeld >= 50, `${label}: the volumes hold the hosts' writes (${result.writesHeld})`);
  const control = staleBlockControl(log, images, options);
  assert.ok(control, `${label}: a block to set back for the control`);
  const rejected = checkWriteOrder({ log, images: control.images, takenUs, ...options });
  assert.ok(!rejected.consistent, `${label}: the checker rejects the images with ${control.what}`);
  return lost.length;
}

/** The control of the "nothing acknowledged lost" check: one acknowledged write removed must be named. */
function assertLostAckCaught(label: string, check: Check): void {
  const control = lostAckControl(check.log, check.images, check.initial);
  assert.ok(control, `${label}: the volumes hold an acknowledged write`);
  assert.ok(checkNothingAckedLost(check.log, control.images, check.initial).length > 0, `${label}: the check catches ${control.what}`);
}

function startHosts(t: TestContext, site: Site, seed: number, firstId: number): Promise<Hosts> {
  return Hosts.start(t, {
    volumes: site.pvols.map((name) => site.a.uri(name)),
    hotBlocks: site.volumeBytes / 4096,
    dir: site.dir,
    seed,
    firstId,
    writesPerSecondPerConnection: 150,
  });
}

function readNewPrimary(site: Site): { images: Buffer[]; takenUs: number } {
  const images = site.svols.map((name) => readVolume(site.b, name, site.dir));
  return { images, takenUs: nowUs() };
}

async function lag0(primary: Site['a']): Promise<void> {
  await waitFor('PAIR with lag 0 on the primary', async () => (await display(primary)).every((p) => p.status === 'PAIR' && p.lagRecords === 0), 60_000, 100);
}

/**
 * kill -9 of A mid-workload, once B has applied 200 of the hosts' records (so that what B
 * holds is worth checking: asynchronous replication may run seconds behind on a busy machine).
 * Returns when it was killed.
 */
async function killWhenReplicating(site: Site): Promise<number> {
  const from = (await display(site.b))[0]!.consistencySeq;
  await sleep(1000);
  await waitFor('B to apply 200 of the hosts\' records', async () => (await display(site.b))[0]!.consistencySeq >= from + 200, 30_000, 100);
  await sleep(300);
  const killedUs = nowUs();
  await site.a.kill9();
  return killedUs;
}

/** A, back after a takeover without it, is FENCED; `pair resync --swap` makes it the receiver; a takeover on A swaps back. */
async function backToA(t: TestContext, site: Site): Promise<void> {
  await startWithin(site.a, 'A');
  await waitFor('A FENCED', async () => (await display(site.a)).every((p) => p.status === 'FENCED'), 30_000, 100);
  // A hears B (the fence came) before B's own connection to A is back (B redials on a backoff of up to 5 s).
  await waitFor('the link both ways', () => linkUp(site), 30_000, 100);
  let resync = await site.b.api('POST', '/v1/pairs/resync', { group: 'g1', swap: true });
  if (resync.status === 409 && /--discard site-a/.test(JSON.stringify(resync.json))) {
    // A's journal held host writes B never received (acknowledged, then lost with A): discard them.
    resync = await site.b.api('POST', '/v1/pairs/resync', { group: 'g1', swap: true, discard: 'site-a' });
  }
  assert.equal(resync.status, 200, JSON.stringify(resync.json));
  t.diagnostic(`resync --swap: ${JSON.stringify(resync.json)}`);
  await lag0(site.b);
  // The receiver adopts the statuses from its next pull: A must show PAIR too, or the takeover is refused (COPY).
  await waitFor('PAIR on A', async () => (await display(site.a)).every((p) => p.status === 'PAIR'), 30_000, 100);
  assert.equal((await takeover(site.a)).kind, 'swap');
  await lag0(site.a);
}

test('the write-order checker across takeovers: planned swap, takeover after kill -9, and after a crash and recovery', { timeout: 180_000 }, async (t) => {
  const site = await startSite(t, { volumes: 2, volumeSize: '8MiB', seed: 5 });

  // (a) A planned swap while the hosts write.
  const hosts = await startHosts(t, site, 21, 1);
  await sleep(1500);
  const swap = await takeover(site.b);
  t.diagnostic(`(a) swap: ${JSON.stringify(swap)}`);
  assert.equal(swap.kind, 'swap');
  await hosts.allDown();
  const a = { log: hosts.readLog(), ...readNewPrimary(site) };
  assert.equal(checkNewPrimary(t, '(a) B after the planned swap', a), 0, 'a planned swap loses no acknowledged write');
  assertLostAckCaught('(a)', a);
  let nextId = await hosts.stop();

  // (b) Swap back; fresh hosts on A; kill -9 of A while they write; takeover on B without it.
  assert.equal((await takeover(site.a)).kind, 'swap');
  await lag0(site.a);
  const initialB = site.pvols.map((name) => readVolume(site.a, name, site.dir));
  const hostsB = await startHosts(t, site, 22, nextId);
  await killWhenReplicating(site);
  await hostsB.allDown();
  const taken = await takeover(site.b);
  t.diagnostic(`(b) takeover with A killed: ${JSON.stringify(taken)}`);
  assert.equal(taken.kind, 'takeover');
  assert.ok((await display(site.b)).every((p) => p.status === 'SSWS'));
  checkNewPrimary(t, '(b) B after kill -9 of A and takeover', { log: hostsB.readLog(), ...readNewPrimary(site), initial: initialB });
  nextId = await hostsB.stop();

  // (c) A back as the primary; fresh hosts; kill -9 of A, restart (a Recovery), the hosts write again, kill -9 again, takeover.
  await backToA(t, site);
  const initialC = site.pvols.map((name) => readVolume(site.a, name, site.dir));
  const hostsC = await startHosts(t, site, 23, nextId);
  const crashUs = await killWhenReplicating(site);
  await hostsC.allDown();
  await startWithin(site.a, 'A');
  const resendFrom = (await journalShow(site.a)).cursors.nextSeq;
  const recovery: Recovery = { images: site.pvols.map((name) => readVolume(site.a, name, site.dir)), atUs: nowUs() };
  const flushed = checkFlushed(hostsC.readLog(), recovery.images, { crashUs, sinceUs: 0, initial: initialC });
  t.diagnostic(`(c) A restarted: ${flushed.flushedWrites} flushed writes checked on its P-VOLs`);
  assert.deepEqual(flushed.violations.slice(0, 5), [], 'every flushed write survived the kill -9');
  hostsC.go();
  await hostsC.allUp();
  // B applies nothing of A's re-send of its active regions until the whole unit is stored; past it, and
  // past records of host writes made after the restart, B holds a state the Recovery is needed to explain.
  await waitFor('B to apply past A\'s re-send', async () => (await display(site.b))[0]!.consistencySeq >= resendFrom, 60_000, 100);
  const past = (await display(site.b))[0]!.consistencySeq;
  await waitFor('B to apply 50 more records', async () => (await display(site.b))[0]!.consistencySeq >= past + 50, 60_000, 100);
  await site.a.kill9();
  await hostsC.allDown();
  const again = await takeover(site.b);
  t.diagnostic(`(c) takeover after the second kill -9 of A: ${JSON.stringify(again)}`);
  assert.equal(again.kind, 'takeover');
  const c = { log: hostsC.readLog(), ...readNewPrimary(site), initial: initialC, recoveries: [recovery] };
  checkNewPrimary(t, '(c) B after a crash, recovery and a second kill -9 of A', c);
  const sinceRestart = [...heldWrites(c.images, initialC)].filter((id) => (c.log.writes.get(id)?.issueUs ?? 0) > recovery.atUs).length;
  t.diagnostic(`(c) B holds ${sinceRestart} writes issued after A's restart`);
  assert.ok(sinceRestart > 0, 'B holds writes made after the restart (so the check needed the Recovery)');
  await hostsC.stop();
});
