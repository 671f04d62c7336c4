// Goal: a drive I/O error suspends a pair (PSUE, docs/architecture.md §6) with a reason
// naming it on both arrays, fails the host write it hit (NBD EIO) without
// losing track of the regions concerned, and `pair resync` recovers once the
// drive works again: afterwards every S-VOL equals its P-VOL byte for byte.
// Method: two real arrays; the test-only switch TWINSTORE_TEST_IO_ERROR_FILE
// (src/storage/fault-file.ts) makes one drive fail with EIO while a trigger
// file names it. (a) A's data drive fails under a qemu-io write (the journal
// on its own drive still works, so the record reaches B while the P-VOL write
// failed); (b) B's data drive fails while B applies a stored record; (c) A's
// only drive fails, journal included (the journal is opened again by the
// resync). Then fault off, `pair resync`, lag 0, qemu-img compare, and the
// bytes read back. (d) As (c), while B holds a resync's base records
// unapplied (restore paused) whose regions already left A's bitmap: the
// suspension folds them from A's in-memory list (the journal cannot be read
// back), so the next resync copies them again. A sync that failed in the
// fault window is never forgotten (test/storage/sync-failure.test.ts): that
// array is restarted before the resync.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { run, runOk, type RunningArray } from '../helpers/array.js';
import { faultTrigger } from '../helpers/fault-trigger.js';
import {
  cliOk, compareAll, display, journalShow, readVolume, resyncWhenLinked, setRestorePaused, startSite, startWithin, waitFor, waitForPairAndLag0, type Site,
} from '../helpers/replication.js';

const mib = 2 ** 20;
/** A data drive and a journal drive (the helper writes each entry after `size:`). */
const twoDrives = ['1GiB', '1GiB\n    use: journal'];

interface Fault {
  env: Record<string, string>;
  on: (array: RunningArray) => Promise<void>;
  off: () => Promise<void>;
}

/** The trigger file; on() names the array's first drive in it, off() removes it; both wait until the array acts on it. */
function fault(t: TestContext): Fault {
  const trigger = faultTrigger(t);
  return {
    env: trigger.env,
    on: (array) => trigger.set([path.join(array.dir, 'data', 'drive0.img')]),
    off: () => trigger.set([]),
  };
}

/**
 * A sync that failed while the drive failed is never forgotten (sticky-sync.ts): every FLUSH of that
 * array fails until it is restarted. Whether one ran in the fault window depends on the 5 s flush
 * round; if one did, the array is restarted, as an operator must.
 */
async function restartIfSyncFailed(t: TestContext, array: RunningArray, name: string): Promise<void> {
  const status = JSON.parse(cliOk(array, ['status', '--json'])) as { syncFailed: boolean };
  t.diagnostic(`${name} after the fault: ${status.syncFailed ? 'a sync failed: restarted' : 'no sync failed'}`);
  if (!status.syncFailed) return;
  await array.stop('SIGTERM');
  await startWithin(array, name);
}

function qemuIo(array: RunningArray, volume: string, commands: string[]): { code: number | null; output: string } {
  const result = run('qemu-io', ['-f', 'raw', array.uri(volume), ...commands.flatMap((c) => ['-c', c])]);
  return { code: result.code, output: result.stdout + result.stderr };
}

function holds(data: Buffer, byte: number, offsetMiB: number, lengthMiB: number): boolean {
  return data.subarray(offsetMiB * mib, (offsetMiB + lengthMiB) * mib).every((b) => b === byte);
}

async function waitForReason(site: Site, pattern: RegExp): Promise<void> {
  for (const [name, array] of [['A', site.a], ['B', site.b]] as const) {
    let seen = '';
    await waitFor(`PSUE matching ${pattern} on ${name}`, async () => {
      const rows = await display(array);
      seen = rows.map((p) => `${p.status} (${p.statusReason ?? ''})`).join(', ');
      return rows.every((p) => p.status === 'PSUE' && pattern.test(p.statusReason ?? ''));
    }, 30_000, 100).catch((error: Error) => {
      throw new Error(`${error.message}; ${name} shows ${seen}`);
    });
  }
}

/** `pair resync` (again until taken: after a restart the link comes back first), PAIR, lag 0, compare. */
async function resyncAndCompare(site: Site): Promise<void> {
  await waitFor('pair resync to be taken', () => site.a.cli(['pair', 'resync', '--group', 'g1']).code === 0, 60_000, 500);
  await waitForPairAndLag0(site, 60_000);
  compareAll(site);
}

test('(a) the P-VOL drive fails under a host write: EIO, PSUE drive-error on both arrays, resync re-copies the region', { timeout: 180_000 }, async (t) => {
  const f = fault(t);
  const site = await startSite(t, { volumes: 1, volumeSize: '64MiB', drives: twoDrives, envA: f.env, envB: {} });
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x11 0 8M', '-c', 'flush']);
  await waitForPairAndLag0(site);

  await f.on(site.a);
  const failed = qemuIo(site.a, 'pvol0', ['write -P 0x22 1M 1M', 'flush']);
  t.diagnostic(`qemu-io during the fault: exit ${failed.code}: ${failed.output.trim().split('\n')[0]}`);
  assert.match(failed.output, /Input\/output error/, 'the host write gets EIO');
  await waitForReason(site, /^drive-error: P-VOL pvol0 write: write failed on .*drive0\.img/);
  const a = (await display(site.a))[0]!;
  t.diagnostic(`A: ${a.status} ${a.statusReason}`);

  await f.off();
  // The FLUSH in the fault window synced the failing drive: no FLUSH succeeds until A is restarted.
  const refused = qemuIo(site.a, 'pvol0', ['write -P 0x33 4M 1M', 'flush']);
  assert.match(refused.output, /Input\/output error/, 'a FLUSH (here: the FUA of a writethrough write) still fails once the drive works again');
  assert.equal((JSON.parse(cliOk(site.a, ['status', '--json'])) as { syncFailed: boolean }).syncFailed, true);
  await site.a.stop('SIGTERM');
  await startWithin(site.a, 'A');
  // Host writes go on, tracked in the bitmap (PSUE), now that the drive works again.
  const after = qemuIo(site.a, 'pvol0', ['write -P 0x33 4M 1M', 'flush']);
  assert.doesNotMatch(after.output, /error/i, after.output);
  // The failed write's record reached B (its journal drive works): the S-VOL took it, the P-VOL did not.
  await waitFor('B to apply every record A journaled', async () => (await display(site.a))[0]!.lagRecords === 0, 30_000, 100);
  assert.ok(holds(readVolume(site.b, 'svol0', site.dir), 0x22, 1, 1), 'the record of the failed write reached the S-VOL');
  assert.equal((await display(site.a))[0]!.status, 'PSUE');

  await resyncAndCompare(site);
  const pvol = readVolume(site.a, 'pvol0', site.dir);
  assert.ok(holds(pvol, 0x11, 0, 4) && holds(pvol, 0x33, 4, 1) && holds(pvol, 0x11, 5, 3), 'the P-VOL holds its data, the failed write not applied');
  assert.ok(readVolume(site.b, 'svol0', site.dir).equals(pvol), 'the resync re-copied the failed write\'s region');
});

test('(b) the S-VOL drive fails while B applies: restore stops before the record, PSUE drive-error on site-b, resync recovers', { timeout: 180_000 }, async (t) => {
  const f = fault(t);
  const site = await startSite(t, { volumes: 1, volumeSize: '64MiB', drives: twoDrives, envA: {}, envB: f.env });
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x11 0 8M', '-c', 'flush']);
  await waitForPairAndLag0(site);

  await setRestorePaused(site.b, true);
  const first = (await journalShow(site.a)).cursors.nextSeq;
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x44 2M 1M', '-c', 'write -P 0x45 6M 1M', '-c', 'flush']);
  const end = (await journalShow(site.a)).cursors.nextSeq;
  await waitFor('B to store every record', async () => (await journalShow(site.b)).cursors.durableSeq >= end, 30_000, 50);
  await f.on(site.b);
  await setRestorePaused(site.b, false);

  await waitForReason(site, /^drive-error on site-b: S-VOL svol0 write: write failed on .*drive0\.img/);
  const a = (await display(site.a))[0]!;
  t.diagnostic(`A: ${a.status} ${a.statusReason}; consistency seq ${a.consistencySeq}, records ${first}..${end - 1}`);
  assert.equal(a.consistencySeq, first - 1, 'restore stopped before the first record it could not apply');
  assert.equal((await display(site.b))[0]!.consistencySeq, first - 1);
  // A's host writes go on (tracked) while the pair is suspended.
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x46 12M 1M', '-c', 'flush']);

  await f.off();
  await restartIfSyncFailed(t, site.b, 'B');
  await resyncAndCompare(site);
  const svol = readVolume(site.b, 'svol0', site.dir);
  assert.ok(holds(svol, 0x44, 2, 1) && holds(svol, 0x45, 6, 1) && holds(svol, 0x46, 12, 1) && holds(svol, 0x11, 0, 2));
});

test('(c) A\'s only drive fails, journal included: EIO, PSUE drive-error, resync opens the journal again and recovers', { timeout: 180_000 }, async (t) => {
  const f = fault(t);
  const site = await startSite(t, { volumes: 1, volumeSize: '64MiB', envA: f.env, envB: {} });
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x11 0 8M', '-c', 'flush']);
  await waitForPairAndLag0(site);

  await f.on(site.a);
  const failed = qemuIo(site.a, 'pvol0', ['write -P 0x22 1M 1M', 'flush']);
  assert.match(failed.output, /Input\/output error/, 'the host write gets EIO');
  await waitForReason(site, /^drive-error: journal (write|sync): .*drive0\.img/);
  t.diagnostic(`A: ${(await display(site.a))[0]!.statusReason}`);
  const refused = site.a.cli(['pair', 'resync', '--group', 'g1']);
  assert.notEqual(refused.code, 0, 'resync fails while the drive still fails');

  await f.off();
  await restartIfSyncFailed(t, site.a, 'A');
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x33 4M 1M', '-c', 'flush']);
  await resyncAndCompare(site);
  const pvol = readVolume(site.a, 'pvol0', site.dir);
  assert.ok(holds(pvol, 0x11, 0, 1) && holds(pvol, 0x33, 4, 1) && holds(pvol, 0x11, 5, 3));
  // The journal works again: new writes replicate.
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x55 10M 1M', '-c', 'flush']);
  await waitForPairAndLag0(site, 30_000);
  compareAll(site);
});

test('(d) A\'s only drive fails while B holds a resync\'s base records unapplied: the fold from memory keeps their regions', { timeout: 180_000 }, async (t) => {
  const f = fault(t);
  const site = await startSite(t, { volumes: 1, volumeSize: '64MiB', envA: f.env, envB: {} });
  cliOk(site.a, ['pair', 'split', '--group', 'g1']);
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x66 16M 32M', '-c', 'flush']);
  await setRestorePaused(site.b, true);
  await resyncWhenLinked(site);
  // Every marked region is journaled and has left the bitmap; B stores the records, applies none.
  await waitFor('the resync to queue every marked region', () => site.a.stderr.includes('resync: every marked region queued'), 60_000, 100);

  await f.on(site.a);
  const failed = qemuIo(site.a, 'pvol0', ['write -P 0x22 1M 1M', 'flush']);
  assert.match(failed.output, /Input\/output error/, 'the host write gets EIO');
  await waitForReason(site, /^drive-error: journal (write|sync): .*drive0\.img/);
  await f.off();
  await restartIfSyncFailed(t, site.a, 'A');
  await setRestorePaused(site.b, false);
  await resyncAndCompare(site);
  const svol = readVolume(site.b, 'svol0', site.dir);
  assert.ok(holds(svol, 0x66, 16, 32), 'the S-VOL holds the writes made while split');
});
