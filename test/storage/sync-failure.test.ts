// Goal: a failed sync is never forgotten (PostgreSQL's "fsyncgate" rule). Linux
// reports a writeback error to one fdatasync and then returns 0 although the
// pages are gone; an array that let a later FLUSH succeed would acknowledge lost
// data. After one failed sync of a drive or of the metadata, every later FLUSH
// and FUA write fails with EIO until the array is restarted; status, the log and
// /metrics say so; a pair on the array goes PSUE drive-error; after a restart
// FLUSH works and what was acknowledged before is intact.
// Method: real `twinstore serve` processes with the test-only fault switch
// (src/storage/fault-file.ts): a line `sync-once PATH` fails the next sync of
// that file once and puts back what the writes since its last sync overwrote,
// as the kernel does; later syncs succeed. Host I/O through nbdsh (libnbd), one
// request at a time, so the test sees which request got EIO.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { startArray, type RunningArray } from '../helpers/array.js';
import { faultTrigger } from '../helpers/fault-trigger.js';
import { requests, type NbdStep } from '../helpers/nbdsh.js';
import { cliOk, compareAll, display, startSite, startWithin, waitFor, waitForPairAndLag0 } from '../helpers/replication.js';

const syncFailedLog = '"msg":"sync failed: writes since its last good sync may be lost';
const mib = 2 ** 20;

function write(offsetMiB: number, lengthMiB: number, byte: number, fua = false): NbdStep {
  return { op: 'write', offset: offsetMiB * mib, length: lengthMiB * mib, byte, fua };
}

function read(offsetMiB: number, lengthMiB: number, byte: number): NbdStep {
  return { op: 'read', offset: offsetMiB * mib, length: lengthMiB * mib, byte };
}

const flush: NbdStep = { op: 'flush' };

function send(array: RunningArray, volume: string, steps: NbdStep[]): string[] {
  return requests(array.uri(volume), steps);
}

function flushFails(array: RunningArray, volume: string, what: string): void {
  assert.deepEqual(send(array, volume, [flush]), ['EIO'], `${what}: FLUSH fails with EIO`);
}

interface StatusJson {
  syncFailed: boolean;
  drives: Array<{ id: string; path: string; syncFailures: number; syncFailedAt: string | null; syncError: string | null }>;
  metadata: { path: string; syncFailures: number; syncFailedAt: string | null; syncError: string | null };
}

function status(array: RunningArray): StatusJson {
  return JSON.parse(cliOk(array, ['status', '--json'])) as StatusJson;
}

async function metric(array: RunningArray, name: string, drive: string): Promise<number | undefined> {
  const text = await (await fetch(`http://${array.ready!.api}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(`drive="${drive}"`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

function count(text: string, part: string): number {
  return text.split(part).length - 1;
}

/** SIGTERM (the stop fails after a failed sync: exit 1), then a start with the fault lines gone. */
async function restart(array: RunningArray, name: string): Promise<number | null> {
  const code = await array.stop('SIGTERM');
  await startWithin(array, name);
  return code;
}

test('one failed drive sync fails every later FLUSH and FUA write until a restart; status, log and metrics show it', { timeout: 180_000 }, async (t) => {
  const fault = faultTrigger(t);
  const array = await startArray(t, { drives: ['256MiB'], env: fault.env });
  const drive = path.join(array.dir, 'data', 'drive0.img');
  cliOk(array, ['volume', 'create', 'v', '--size', '64MiB']);
  assert.deepEqual(send(array, 'v', [write(0, 4, 0x11), flush]), ['ok', 'ok']);

  await fault.set([`sync-once ${drive}`]);
  // The kernel returns 0 for the fdatasync after the failed one (the fault switch's does too): the array must not.
  const outcomes = send(array, 'v', [write(0, 1, 0x33), write(8, 1, 0x22), flush, flush]);
  assert.deepEqual(outcomes, ['ok', 'ok', 'EIO', 'EIO'], 'the FLUSH whose sync failed gets EIO, and so does the next');
  assert.deepEqual(send(array, 'v', [write(2, 1, 0x55, true)]), ['EIO'], 'a FUA write fails');
  // A write without FUA is taken and reads back (no write is durable before a FLUSH).
  assert.deepEqual(send(array, 'v', [write(3, 1, 0x66), read(3, 1, 0x66)]), ['ok', 'ok']);

  await fault.set([]);
  flushFails(array, 'v', 'a FLUSH once the drive works again');
  const shown = status(array);
  t.diagnostic(`status --json: ${JSON.stringify(shown.drives[0])}`);
  assert.equal(shown.syncFailed, true);
  assert.ok(shown.drives[0]!.syncFailedAt !== null && /EIO/.test(shown.drives[0]!.syncError ?? ''), 'the drive shows its failed sync');
  assert.equal(shown.drives[0]!.syncFailures, 1, 'one sync failed on the drive; the later flushes were refused without one');
  assert.equal(shown.metadata.syncFailedAt, null);
  assert.match(cliOk(array, ['status']), /FAILED: every FLUSH fails \(EIO\) until the array is restarted/);
  assert.equal(await metric(array, 'twinstore_drive_sync_failures_total', shown.drives[0]!.id), 1);
  assert.equal(await metric(array, 'twinstore_drive_sync_failed', shown.drives[0]!.id), 1);
  assert.equal(await metric(array, 'twinstore_drive_sync_failed', 'metadata'), 0);
  assert.equal(count(array.stderr, syncFailedLog), 1, 'logged once, however many FLUSHes failed');
  const refused = array.cli(['volume', 'create', 'w', '--size', '4MiB']);
  assert.notEqual(refused.code, 0, 'a volume create (a metadata flush) fails too');
  assert.match(refused.stderr + refused.stdout, /IO_ERROR/);

  const code = await restart(array, 'the array');
  t.diagnostic(`the stop after the failed sync exited ${code}`);
  assert.equal(code, 1, 'the stop is unclean: its last flush failed');
  assert.equal(status(array).syncFailed, false, 'a restart clears the failure');
  assert.deepEqual(send(array, 'v', [write(16, 1, 0x44), flush]), ['ok', 'ok'], 'FLUSH works after the restart');
  // Acknowledged: 0x11 at 0-4M (but where later writes failed or were never flushed: 0-1M, 2M, 3M)
  // and 0x44 at 16M. The writes the failed sync covered are lost, as the kernel loses them: the
  // first MiB holds the old data or the new, whole.
  assert.deepEqual(send(array, 'v', [read(1, 1, 0x11), read(16, 1, 0x44)]), ['ok', 'ok']);
  const head = send(array, 'v', [read(0, 1, 0x11), read(0, 1, 0x33)]);
  t.diagnostic(`after the restart the first MiB holds 0x11: ${head[0]}, 0x33: ${head[1]}`);
  assert.ok(head.includes('ok'), 'the first MiB holds one of the two writes whole');
});

test('one failed metadata sync fails every later FLUSH until a restart', { timeout: 120_000 }, async (t) => {
  const fault = faultTrigger(t);
  const array = await startArray(t, { drives: ['256MiB'], env: fault.env });
  cliOk(array, ['volume', 'create', 'v', '--size', '64MiB']);
  assert.deepEqual(send(array, 'v', [write(0, 4, 0x11), flush]), ['ok', 'ok']);

  await fault.set([`sync-once ${path.join(array.dir, 'data', 'meta')}`]);
  // A write to a new extent: the FLUSH must commit its map entry to the metadata log.
  assert.deepEqual(send(array, 'v', [write(8, 1, 0x22), flush, flush]), ['ok', 'EIO', 'EIO'], 'the FLUSH whose metadata sync failed gets EIO, and so does the next');
  await fault.set([]);
  flushFails(array, 'v', 'a FLUSH once the metadata file works again');
  const shown = status(array);
  assert.equal(shown.syncFailed, true);
  assert.ok(shown.metadata.syncFailedAt !== null, 'the metadata shows its failed sync');
  assert.equal(shown.drives[0]!.syncFailedAt, null, 'the drive did not fail');
  assert.equal(await metric(array, 'twinstore_drive_sync_failures_total', 'metadata'), 1);
  assert.equal(count(array.stderr, syncFailedLog), 1);

  await restart(array, 'the array');
  assert.deepEqual(send(array, 'v', [write(16, 1, 0x44), flush, read(0, 4, 0x11), read(16, 1, 0x44)]), ['ok', 'ok', 'ok', 'ok']);
});

test('a failed sync in the background flush suspends the pair (PSUE drive-error) and no later FLUSH succeeds; a restart and resync recover', { timeout: 240_000 }, async (t) => {
  const fault = faultTrigger(t);
  // The journal on a drive of its own: the P-VOL's drive is synced only by flush rounds.
  const drives = ['1GiB', '1GiB\n    use: journal'];
  const site = await startSite(t, { volumes: 1, volumeSize: '64MiB', drives, envA: fault.env, envB: {} });
  assert.deepEqual(send(site.a, 'pvol0', [write(0, 8, 0x11), flush]), ['ok', 'ok']);
  await waitForPairAndLag0(site);

  // No host FLUSH: the sync that fails is the 5 s background round's, whose error main dropped.
  await fault.set([`sync-once ${path.join(site.a.dir, 'data', 'drive0.img')}`]);
  assert.deepEqual(send(site.a, 'pvol0', [write(1, 1, 0x22)]), ['ok']);
  const reason = /^drive-error: drive sync: .*drive0\.img/;
  await waitFor(`PSUE ${reason} on A`, async () => (await display(site.a)).every((p) => p.status === 'PSUE' && reason.test(p.statusReason ?? '')), 30_000, 100);
  await waitFor(`PSUE ${reason} shown on B`, async () => (await display(site.b)).every((p) => p.status === 'PSUE' && reason.test(p.statusReason ?? '')), 30_000, 100);
  t.diagnostic(`A: ${(await display(site.a))[0]!.statusReason}`);
  flushFails(site.a, 'pvol0', 'a host FLUSH after the background sync failed');
  await fault.set([]);
  flushFails(site.a, 'pvol0', 'a host FLUSH once the drive works again');
  const refused = site.a.cli(['pair', 'resync', '--group', 'g1']);
  assert.notEqual(refused.code, 0, `resync fails until the restart: ${refused.stderr.trim()}`);

  await restart(site.a, 'A');
  assert.deepEqual(send(site.a, 'pvol0', [write(4, 1, 0x33), flush]), ['ok', 'ok'], 'FLUSH works after the restart');
  cliOk(site.a, ['pair', 'resync', '--group', 'g1']);
  await waitForPairAndLag0(site, 60_000);
  compareAll(site);
  assert.deepEqual(send(site.a, 'pvol0', [read(0, 1, 0x11), read(4, 1, 0x33), read(5, 3, 0x11)]), ['ok', 'ok', 'ok'], 'what was acknowledged is intact');
});

test('a failed sync on the receiver suspends the pair (PSUE drive-error on site-b) until B is restarted; then resync recovers', { timeout: 240_000 }, async (t) => {
  const fault = faultTrigger(t);
  const site = await startSite(t, { volumes: 1, volumeSize: '64MiB', envA: {}, envB: fault.env });
  assert.deepEqual(send(site.a, 'pvol0', [write(0, 8, 0x11), flush]), ['ok', 'ok']);
  await waitForPairAndLag0(site);

  await fault.set([`sync-once ${path.join(site.b.dir, 'data', 'drive0.img')}`]);
  assert.deepEqual(send(site.a, 'pvol0', [write(1, 1, 0x22), flush]), ['ok', 'ok'], 'A\'s own FLUSH is not B\'s');
  const reason = /^drive-error on site-b: .*sync.*drive0\.img/;
  await waitFor(`PSUE ${reason} on A`, async () => (await display(site.a)).every((p) => p.status === 'PSUE' && reason.test(p.statusReason ?? '')), 30_000, 100);
  t.diagnostic(`A: ${(await display(site.a))[0]!.statusReason}`);
  await fault.set([]);
  assert.equal(status(site.b).syncFailed, true, 'B shows its failed sync');
  const refused = site.a.cli(['pair', 'resync', '--group', 'g1']);
  assert.notEqual(refused.code, 0, `resync fails until B is restarted: ${refused.stderr.trim()}`);

  await restart(site.b, 'B');
  await waitFor('the link both ways after B\'s restart', async () => site.a.cli(['pair', 'resync', '--group', 'g1']).code === 0, 60_000, 500);
  await waitForPairAndLag0(site, 60_000);
  compareAll(site);
});
