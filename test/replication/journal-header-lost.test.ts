// Goal: a journal whose newest header slot is damaged after it was synced (bit rot, not a tear)
// does not stop the array, and no seq means two writes. The primary's journal was opened (a new
// session, persisted) and took records in that session; then its newest header slot is damaged
// while it is down. At restart the older slot knows only the earlier sessions, the records on
// the ring prove a newer header was durable: the journal starts again, empty, past every seq on
// its ring; every region goes into the bitmaps and the group suspends (journal-damaged); a resync
// copies everything and the volumes are identical. On the receiver (records stored in a new
// session, restore paused so no later header follows) the same loss marks its S-VOL inconsistent
// (takeover refuses it), the primary marks every region for it, and a resync copies everything.
// A primary whose last synced record is destroyed (it looks like a torn end) is caught by the
// receiver holding it (receiver-ahead): every region is marked, and the resync leaves both sides
// identical.
// Method: two real arrays; qemu-io writes on A; kill -9 of A (or B); one byte flipped in the header slot
// with the higher generation, found in the drive file by its magic; pair display, journal show,
// qemu-img compare through helpers.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runOk } from '../helpers/array.js';
import { cliOk, compareAll, display, journalShow, readVolume, setRestorePaused, startSite, waitFor, waitForPairAndLag0 } from '../helpers/replication.js';

const mib = 2 ** 20;
const headerMagic = 0x54574a48; // "TWJH"
const recordMagic = 0x54574a52; // "TWJR"

/** In a stopped array's drive file, the block with `magic` whose u64 at `field` is highest: its position and that value. */
function newestBlock(fd: number, magic: number, field: number, what: string): { at: number; value: number } {
  const size = fs.fstatSync(fd).size;
  const chunk = Buffer.alloc(16 * mib);
  let newest: { at: number; value: number } | undefined;
  for (let at = 0; at < size; at += chunk.length) {
    const read = fs.readSync(fd, chunk, 0, chunk.length, at);
    for (let block = 0; block + 4096 <= read; block += 4096) {
      if (chunk.readUInt32BE(block) !== magic) continue;
      const value = Number(chunk.readBigUInt64BE(block + field));
      if (newest === undefined || value > newest.value) newest = { at: at + block, value };
    }
  }
  if (newest === undefined) throw new Error(`no ${what} in the drive file`);
  return newest;
}

/** Opens a stopped array's drive file for `edit`, then syncs and closes it. */
function editDrive<T>(driveFile: string, edit: (fd: number) => T): T {
  const fd = fs.openSync(driveFile, 'r+');
  try {
    const result = edit(fd);
    fs.fsyncSync(fd);
    return result;
  } finally {
    fs.closeSync(fd);
  }
}

/** Flips a byte in the journal header slot with the higher generation in a stopped array's drive file; returns that generation. */
function damageNewestHeader(driveFile: string): number {
  return editDrive(driveFile, (fd) => {
    const newest = newestBlock(fd, headerMagic, 16, 'journal header');
    const flip = Buffer.alloc(1);
    fs.readSync(fd, flip, 0, 1, newest.at + 200);
    flip[0] = flip[0]! ^ 0x40;
    fs.writeSync(fd, flip, 0, 1, newest.at + 200);
    return newest.value;
  });
}

test('a damaged newest journal header on the primary: the array starts, every region is marked, PSUE journal-damaged; resync copies it all', { timeout: 240_000 }, async (t) => {
  const site = await startSite(t, { volumes: 1, volumeSize: '32MiB' });
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x31 0 1M', '-c', 'flush']);
  await waitForPairAndLag0(site);
  // A restart opens a new session (its header persisted first); the writes after it carry it.
  await site.a.stop();
  await site.a.start();
  await waitForPairAndLag0(site);
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x32 4M 1M', '-c', 'write -P 0x33 8M 64k', '-c', 'flush']);
  await waitForPairAndLag0(site);
  const before = (await journalShow(site.a)).cursors.nextSeq;
  await site.a.stop('SIGKILL');
  const generation = damageNewestHeader(path.join(site.a.dir, 'data', 'drive0.img'));
  t.diagnostic(`A killed at journal seq ${before}; its header of generation ${generation} damaged`);

  await site.a.start();
  await waitFor('PSUE journal-damaged on A', async () => /^journal-damaged: its header was lost/.test((await display(site.a))[0]!.statusReason ?? ''), 30_000, 100);
  const row = (await display(site.a))[0]!;
  t.diagnostic(`A: ${row.status} (${row.statusReason})`);
  assert.equal(row.status, 'PSUE');
  const after = (await journalShow(site.a)).cursors.nextSeq;
  assert.ok(after > before, `A's journal goes on past every seq it gave out (${before} -> ${after})`);
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x34 12M 1M', '-c', 'flush']);

  cliOk(site.a, ['pair', 'resync', '--group', 'g1']);
  await waitForPairAndLag0(site);
  compareAll(site);
  const svol = readVolume(site.b, 'svol0', site.dir);
  assert.equal(svol[4 * mib], 0x32, 'the S-VOL holds what A wrote before the damage');
  assert.equal(svol[12 * mib], 0x34, 'and what A wrote while suspended');
});

test('a damaged newest restore-journal header on the receiver: its S-VOL is marked inconsistent, the primary marks every region (PSUE journal-damaged on it); resync copies it all', { timeout: 240_000 }, async (t) => {
  const site = await startSite(t, { volumes: 1, volumeSize: '32MiB' });
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x31 0 1M', '-c', 'flush']);
  await waitForPairAndLag0(site);
  // B's restart opens a new session; with restore paused, the records it stores in that session
  // are followed by no later header (applying would write one).
  await site.b.stop();
  await site.b.start();
  await setRestorePaused(site.b, true);
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x32 4M 1M', '-c', 'write -P 0x33 8M 64k', '-c', 'flush']);
  const end = (await journalShow(site.a)).cursors.nextSeq;
  await waitFor('B to store every record', async () => (await journalShow(site.b)).cursors.durableSeq >= end, 30_000, 50);
  await site.b.stop('SIGKILL');
  const generation = damageNewestHeader(path.join(site.b.dir, 'data', 'drive0.img'));
  t.diagnostic(`B killed with records up to seq ${end - 1} stored, not applied; its header of generation ${generation} damaged`);

  await site.b.start();
  await waitFor('PSUE journal-damaged on A', async () => /^journal-damaged on site-b: its restore journal was lost/.test((await display(site.a))[0]!.statusReason ?? ''), 30_000, 100);
  t.diagnostic(`A: ${(await display(site.a))[0]!.statusReason}`);
  const takeover = await site.b.api('POST', '/v1/takeover', { group: 'g1' });
  assert.equal(takeover.status, 409, `takeover refuses an S-VOL of unknown state: ${JSON.stringify(takeover.json)}`);
  assert.match(JSON.stringify(takeover.json), /not consistent; use --force/);

  cliOk(site.a, ['pair', 'resync', '--group', 'g1']);
  await waitForPairAndLag0(site);
  compareAll(site);
  const svol = readVolume(site.b, 'svol0', site.dir);
  assert.equal(svol[4 * mib], 0x32, 'the S-VOL holds the writes it had stored but not applied when its header was lost');
  assert.equal(svol[8 * mib], 0x33);
});

/** Destroys the header block of the journal record with the highest seq in a stopped array's drive file; returns that seq. */
function destroyNewestRecordHeader(driveFile: string): number {
  return editDrive(driveFile, (fd) => {
    const newest = newestBlock(fd, recordMagic, 16, 'journal record');
    fs.writeSync(fd, Buffer.alloc(4096, 0x5a), 0, 4096, newest.at);
    return newest.value;
  });
}

test('the receiver holds records the primary\'s journal lost (its last synced record destroyed): PSUE receiver-ahead, every region marked; resync leaves both sides identical', { timeout: 240_000 }, async (t) => {
  const site = await startSite(t, { volumes: 1, volumeSize: '32MiB' });
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x31 0 1M', '-c', 'flush']);
  await waitForPairAndLag0(site);
  await setRestorePaused(site.b, true);
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x32 4M 1M', '-c', 'flush', '-c', 'write -P 0x33 20M 64k', '-c', 'flush']);
  const end = (await journalShow(site.a)).cursors.nextSeq;
  await waitFor('B to store every record', async () => (await journalShow(site.b)).cursors.durableSeq >= end, 30_000, 50);
  await site.a.stop('SIGKILL');
  const lost = destroyNewestRecordHeader(path.join(site.a.dir, 'data', 'drive0.img'));
  t.diagnostic(`A killed at seq ${end}; the header of its record seq ${lost} destroyed (B stored it, not applied)`);
  await site.a.start();
  await waitFor('PSUE receiver-ahead on A', async () => /^receiver-ahead/.test((await display(site.a))[0]!.statusReason ?? ''), 30_000, 100);
  t.diagnostic(`A: ${(await display(site.a))[0]!.statusReason}`);
  await setRestorePaused(site.b, false);
  cliOk(site.a, ['pair', 'resync', '--group', 'g1']);
  await waitForPairAndLag0(site);
  compareAll(site);
  const svol = readVolume(site.b, 'svol0', site.dir);
  assert.equal(svol[4 * mib], 0x32, 'the writes whose records the primary kept are on the S-VOL');
  // The write of the destroyed record was acknowledged after a FLUSH, but that record was its only
  // durable copy here: the redo at A's restart stopped before it (the damage looks like a torn end)
  // and rolled its blocks back. B held it; fetching such records back from the receiver is not built
  // (issue 5 notes). What is checked: A detects it, and the resync leaves both sides identical.
  t.diagnostic(`the lost write's block on both sides: 0x${svol[20 * mib]!.toString(16)}`);
});
