// Goal: the array metadata comes back exactly as committed, damage to it is cut
// off or refused (never half-applied), and the storage engine only opens drives
// that are its own. Method: in-process MetaStore and StorageEngine on real files
// in a temporary folder. The log is damaged the way a crash or a bad disk would
// (garbage or a torn frame at the tail, a flipped bit, a stale log file, a
// damaged snapshot) by editing the files between close and reopen; the test
// knows only the frame layout (16-byte header, payload length at byte 4).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { MetaStore } from '../../src/storage/meta-store.js';
import { refDrive, toSnapshot, type MetaRecord, type MetaState, type SnapshotJson, type VolumeMeta } from '../../src/storage/meta-model.js';
import { StorageEngine, type EngineOptions } from '../../src/storage/index.js';
import { isTwinstoreError, type ErrorCode } from '../../src/errors.js';
import { tempDir } from '../helpers/array.js';

const frameHeaderBytes = 16;
const extentBytes = 2 ** 20;

function initial(): MetaState {
  return { arrayId: 'site-a', extentBytes, drives: [], volumes: new Map(), nextVolumeId: 1, documents: new Map(), regionSets: new Map() };
}

function openStore(dir: string): Promise<MetaStore> {
  return MetaStore.open(dir, initial);
}

const driveRecord: MetaRecord = { t: 'drive', index: 0, drive: { id: 'drive-0', path: '/srv/d0.img', extentCount: 100, cleanFrom: 0 } };

function volumeMeta(id: number, name: string): VolumeMeta {
  return { id, name, lun: id - 1, sizeBytes: 16 * 2 ** 20, role: 'simplex', createdAt: '2024-01-01T00:00:00.000Z' };
}

function volumeRecord(id: number, name: string): MetaRecord {
  return { t: 'volume', volume: volumeMeta(id, name) };
}

/** Names of the volumes in a state, sorted. */
function names(state: MetaState): string[] {
  return [...state.volumes.values()].map((v) => v.meta.name).sort();
}

function logFiles(dir: string): string[] {
  return fs.readdirSync(dir).filter((name) => name.startsWith('log-')).sort();
}

function snapshotOf(dir: string): SnapshotJson {
  const text = fs.readFileSync(path.join(dir, 'snapshot'), 'utf8');
  return JSON.parse(text.slice(text.indexOf('\n') + 1)) as SnapshotJson;
}

/** The log file the store writes to now (exactly one must exist). */
function currentLog(dir: string): string {
  const logs = logFiles(dir);
  assert.equal(logs.length, 1, `one log file, found ${logs.join(', ')}`);
  return path.join(dir, logs[0]!);
}

/** Byte ranges of the frames in a log file. */
function frames(file: string): Array<{ start: number; end: number }> {
  const bytes = fs.readFileSync(file);
  const found: Array<{ start: number; end: number }> = [];
  for (let at = 0; at + frameHeaderBytes <= bytes.length;) {
    const end = at + frameHeaderBytes + bytes.readUInt32BE(at + 4);
    found.push({ start: at, end });
    at = end;
  }
  return found;
}

/** Commits each record in its own commit (one frame each) and closes the store. */
async function commitEach(dir: string, records: MetaRecord[]): Promise<void> {
  const store = await openStore(dir);
  for (const record of records) await store.commit([record]);
  await store.close();
}

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, message: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isTwinstoreError(error), `a TwinstoreError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    assert.match(error.message, message);
    return true;
  });
}

test('committed records of every kind read back identically after reopen', async (t) => {
  const dir = tempDir(t);
  const store = await openStore(dir);
  await store.commit([driveRecord, volumeRecord(1, 'alpha'), volumeRecord(2, 'beta')]);
  await store.commit([{ t: 'map', volume: 1, entries: [0, 0, 5, 3, 0, 9, 7, 0, 11] }, { t: 'clean', drive: 0, from: 12 }]);
  await store.commit([{ t: 'map', volume: 1, entries: [3, -1, 0] }, { t: 'volume', volume: { ...volumeMeta(2, 'beta'), role: 'pvol' } }]);
  await store.commit([volumeRecord(3, 'gamma'), { t: 'volume-delete', id: 3 }]);
  const before = toSnapshot(store.durable, 0);
  await store.close();

  const reopened = await openStore(dir);
  t.after(() => reopened.close());
  assert.deepEqual(toSnapshot(reopened.durable, 0), before);
  const alpha = reopened.durable.volumes.get(1)!;
  assert.deepEqual([...alpha.map.keys()].sort(), [0, 7], 'chunk 3 was unmapped');
  assert.equal(reopened.durable.volumes.get(2)!.meta.role, 'pvol');
  assert.deepEqual(names(reopened.durable), ['alpha', 'beta']);
  assert.equal(reopened.durable.drives[0]!.cleanFrom, 12);
  assert.equal(reopened.durable.nextVolumeId, 4, 'a deleted id is never handed out again');
});

test('garbage appended to the log tail is cut off; every committed record survives', async (t) => {
  const dir = tempDir(t);
  await commitEach(dir, [driveRecord, volumeRecord(1, 'alpha'), volumeRecord(2, 'beta')]);
  fs.appendFileSync(currentLog(dir), crypto.randomBytes(300));
  const store = await openStore(dir);
  assert.deepEqual(names(store.durable), ['alpha', 'beta']);
  await store.commit([volumeRecord(3, 'gamma')]);
  await store.close();
  fs.appendFileSync(currentLog(dir), Buffer.alloc(4096));
  const again = await openStore(dir);
  t.after(() => again.close());
  assert.deepEqual(names(again.durable), ['alpha', 'beta', 'gamma'], 'a zero-filled tail is cut off too');
});

test('a torn last frame is cut off; earlier records survive and the log goes on after it', async (t) => {
  const dir = tempDir(t);
  await commitEach(dir, [driveRecord, volumeRecord(1, 'alpha'), volumeRecord(2, 'torn')]);
  const log = currentLog(dir);
  const last = frames(log).at(-1)!;
  fs.truncateSync(log, last.end - 3);
  const store = await openStore(dir);
  assert.deepEqual(names(store.durable), ['alpha']);
  await store.commit([volumeRecord(2, 'beta')]);
  await store.close();

  const header = frames(currentLog(dir)).at(-1)!;
  fs.truncateSync(currentLog(dir), header.start + 10); // only part of the header made it
  const torn = await openStore(dir);
  assert.deepEqual(names(torn.durable), ['alpha']);
  await torn.commit([volumeRecord(2, 'beta')]);
  await torn.close();
  const reopened = await openStore(dir);
  t.after(() => reopened.close());
  assert.deepEqual(names(reopened.durable), ['alpha', 'beta']);
});

test('a frame with a bad checksum ends replay there, even when later frames are intact', async (t) => {
  const dir = tempDir(t);
  await commitEach(dir, [driveRecord, volumeRecord(1, 'alpha'), volumeRecord(2, 'beta'), volumeRecord(3, 'gamma')]);
  const log = currentLog(dir);
  const bytes = fs.readFileSync(log);
  const beta = frames(log)[2]!;
  bytes.writeUInt8(bytes.readUInt8(beta.end - 2) ^ 0x01, beta.end - 2);
  fs.writeFileSync(log, bytes);
  const store = await openStore(dir);
  t.after(() => store.close());
  assert.deepEqual(names(store.durable), ['alpha']);
  assert.equal(store.durable.drives.length, 1);
});

test('a damaged or truncated snapshot is refused with METADATA_CORRUPT', async (t) => {
  const dir = tempDir(t);
  await commitEach(dir, [driveRecord, volumeRecord(1, 'alpha')]);
  await (await openStore(dir)).close(); // folds the log into the snapshot
  const file = path.join(dir, 'snapshot');
  const good = fs.readFileSync(file);
  assert.ok(good.includes('alpha'), 'the snapshot holds the volume');

  const flipped = Buffer.from(good);
  const at = flipped.indexOf('alpha');
  flipped[at] = 'A'.charCodeAt(0);
  fs.writeFileSync(file, flipped);
  await rejectsWith(openStore(dir), 'METADATA_CORRUPT', /snapshot .* fails its checksum/);

  fs.writeFileSync(file, good.subarray(0, good.length - 7));
  await rejectsWith(openStore(dir), 'METADATA_CORRUPT', /fails its checksum/);

  fs.writeFileSync(file, Buffer.concat([Buffer.from('garbage'), good]));
  await rejectsWith(openStore(dir), 'METADATA_CORRUPT', /fails its checksum/);

  fs.writeFileSync(file, good);
  const restored = await openStore(dir);
  t.after(() => restored.close());
  assert.deepEqual(names(restored.durable), ['alpha'], 'the intact snapshot opens again');
});

test('a missing snapshot beside a written log is METADATA_CORRUPT, not an empty array', async (t) => {
  const dir = tempDir(t);
  await commitEach(dir, [driveRecord, volumeRecord(1, 'alpha')]);
  fs.rmSync(path.join(dir, 'snapshot'));
  await rejectsWith(openStore(dir), 'METADATA_CORRUPT', /snapshot is missing/);
});

test('a crash during the very first open (empty log made, snapshot not yet renamed) opens as a new array', async (t) => {
  const dir = tempDir(t);
  fs.writeFileSync(path.join(dir, 'log-1'), '');
  fs.writeFileSync(path.join(dir, 'snapshot.tmp'), 'twinstore-meta v1 crc32c=0000');
  const store = await openStore(dir);
  t.after(() => store.close());
  assert.deepEqual(names(store.durable), []);
  assert.equal(store.durable.arrayId, 'site-a');
  assert.deepEqual(logFiles(dir), ['log-1']);
  assert.equal(snapshotOf(dir).generation, 1);
});

test('every open and every compaction writes a new snapshot generation and removes old logs', async (t) => {
  const dir = tempDir(t);
  const first = await openStore(dir);
  assert.equal(snapshotOf(dir).generation, 1);
  assert.deepEqual(logFiles(dir), ['log-1']);
  await first.commit([driveRecord, volumeRecord(1, 'alpha')]);
  await first.close();

  const second = await openStore(dir);
  assert.equal(snapshotOf(dir).generation, 2);
  assert.deepEqual(logFiles(dir), ['log-2'], 'log-1 was folded into the snapshot and removed');
  assert.equal(fs.statSync(path.join(dir, 'log-2')).size, 0);
  assert.deepEqual(snapshotOf(dir).volumes.map((v) => v.name), ['alpha']);

  // A map record of about 9 MiB: past the 8 MiB log bound, so the commit compacts.
  const entries: number[] = [];
  for (let chunk = 0; chunk < 600_000; chunk++) entries.push(chunk, 0, 1_000_000 + chunk);
  await second.commit([{ t: 'map', volume: 1, entries }]);
  assert.equal(snapshotOf(dir).generation, 3, 'the commit past the bound compacted');
  assert.deepEqual(logFiles(dir), ['log-3']);
  assert.equal(fs.statSync(path.join(dir, 'log-3')).size, 0);
  await second.commit([volumeRecord(2, 'beta')]);
  await second.close();

  const third = await openStore(dir);
  t.after(() => third.close());
  assert.equal(snapshotOf(dir).generation, 4);
  assert.deepEqual(logFiles(dir), ['log-4']);
  assert.deepEqual(names(third.durable), ['alpha', 'beta']);
  assert.equal(third.durable.volumes.get(1)!.map.size, 600_000);
  assert.equal(third.durable.volumes.get(1)!.map.get(599_999), 1_000_000 + 599_999);
});

test('records of a stale generation are never replayed', async (t) => {
  const dir = tempDir(t);
  await commitEach(dir, [driveRecord, volumeRecord(1, 'ghost')]);
  const staleBytes = fs.readFileSync(path.join(dir, 'log-1'));
  const store = await openStore(dir);
  await store.commit([{ t: 'volume-delete', id: 1 }]);
  await store.close();
  assert.deepEqual(logFiles(dir), ['log-2']);

  // Frames of generation 1 at the tail of log-2 (e.g. a reused file): they fail the generation check.
  fs.appendFileSync(path.join(dir, 'log-2'), staleBytes);
  const appended = await openStore(dir);
  assert.deepEqual(names(appended.durable), [], 'the ghost volume stays deleted');
  await appended.close();

  // An old log file left behind (a crash before it was removed) is ignored and removed.
  fs.writeFileSync(path.join(dir, 'log-1'), staleBytes);
  fs.copyFileSync(path.join(dir, 'log-1'), path.join(dir, 'log-0'));
  const leftover = await openStore(dir);
  t.after(() => leftover.close());
  assert.deepEqual(names(leftover.durable), []);
  assert.deepEqual(logFiles(dir), ['log-4']);
});

// The storage engine on top: volumes, data, drives.

function engineOptions(dir: string, drives: string[], arrayId = 'site-a'): EngineOptions {
  return { arrayId, dataDir: path.join(dir, 'data'), extentBytes, drives: drives.map((name) => ({ path: path.join(dir, name), sizeBytes: 32 * 2 ** 20 })) };
}

function pattern(bytes: number, seed: number): Buffer {
  const buffer = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) buffer[i] = (i * 31 + seed) & 0xff;
  return buffer;
}

function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

test('engine: volumes, data and extent maps survive close and reopen', async (t) => {
  const dir = tempDir(t);
  const engine = await StorageEngine.open(engineOptions(dir, ['d0.img', 'd1.img']));
  const vol = await engine.createVolume({ name: 'vol1', sizeBytes: 16 * 2 ** 20, lun: 7 });
  await engine.createVolume({ name: 'empty', sizeBytes: 4096 });
  const first = Buffer.alloc(64 * 1024, 0x42);
  const second = pattern(3 * 4096 + 100, 9);
  await vol.write(0, first);
  await vol.write(5 * 2 ** 20 - 4096, second); // crosses an extent boundary
  await engine.flush();
  const map = vol.mappedExtents();
  assert.equal(map.length, 3);
  await engine.close();

  const reopened = await StorageEngine.open(engineOptions(dir, ['d0.img', 'd1.img']));
  t.after(() => reopened.close());
  assert.deepEqual(reopened.volumes().map((v) => [v.name, v.meta.lun, v.sizeBytes]), [['empty', 0, 4096], ['vol1', 7, 16 * 2 ** 20]]);
  const back = reopened.volume('vol1')!;
  assert.deepEqual(back.mappedExtents(), map);
  const readFirst = Buffer.alloc(first.length);
  await back.read(0, readFirst);
  assert.ok(readFirst.equals(first), 'first write reads back');
  const readSecond = Buffer.alloc(second.length);
  await back.read(5 * 2 ** 20 - 4096, readSecond);
  assert.ok(readSecond.equals(second), 'write across an extent boundary reads back');
  const hole = Buffer.alloc(8192, 0xff);
  await back.read(10 * 2 ** 20, hole);
  assert.ok(hole.every((byte) => byte === 0), 'never-written space reads as zeros');
  assert.equal(reopened.stats().allocatedBytes, 3 * extentBytes);
});

test('engine: a drive labelled by another array is refused with DRIVE_OWNED and left as it was', async (t) => {
  const dir = tempDir(t);
  const other = await StorageEngine.open(engineOptions(dir, ['shared.img'], 'site-b'));
  await (await other.createVolume({ name: 'theirs', sizeBytes: 2 ** 20 })).write(0, pattern(4096, 1));
  await other.close();
  const before = sha256(path.join(dir, 'shared.img'));

  const options = engineOptions(path.join(dir, 'mine'), ['mine.img']);
  fs.mkdirSync(path.join(dir, 'mine'));
  options.drives.push({ path: path.join(dir, 'shared.img') });
  await rejectsWith(StorageEngine.open(options), 'DRIVE_OWNED', /shared\.img belongs to array site-b \(data folder .*\), not to site-a/);
  assert.equal(sha256(path.join(dir, 'shared.img')), before);

  const owner = await StorageEngine.open(engineOptions(dir, ['shared.img'], 'site-b'));
  t.after(() => owner.close());
  const data = Buffer.alloc(4096);
  await owner.volume('theirs')!.read(0, data);
  assert.ok(data.equals(pattern(4096, 1)), 'the owner still reads its data');
});

test('engine: a drive holding non-Twinstore data at offset 0 is refused with DRIVE_INVALID and not written', async (t) => {
  const dir = tempDir(t);
  const foreign = path.join(dir, 'foreign.img');
  const bytes = Buffer.alloc(8 * 2 ** 20);
  bytes.write('\x7fELF not a twinstore drive', 0);
  fs.writeFileSync(foreign, bytes);
  const before = sha256(foreign);
  const options = engineOptions(dir, []);
  options.drives.push({ path: foreign });
  await rejectsWith(StorageEngine.open(options), 'DRIVE_INVALID', /foreign\.img holds data but no Twinstore label/);
  assert.equal(sha256(foreign), before);
  assert.equal(fs.statSync(foreign).size, bytes.length);
});

test('engine: removing a drive that holds extents from the config is DRIVE_MISSING; an empty one may go', async (t) => {
  const dir = tempDir(t);
  const engine = await StorageEngine.open(engineOptions(dir, ['d0.img', 'd1.img']));
  const vol = await engine.createVolume({ name: 'vol1', sizeBytes: 8 * 2 ** 20 });
  await vol.write(0, pattern(4096, 5));
  const used = new Set(vol.mappedExtents().map(([, ref]) => refDrive(ref)));
  assert.equal(used.size, 1, 'one written chunk lies on one drive');
  await engine.close();
  const holder = ['d0.img', 'd1.img'][[...used][0]!]!;
  const spare = holder === 'd0.img' ? 'd1.img' : 'd0.img';

  await rejectsWith(StorageEngine.open(engineOptions(dir, [spare])), 'DRIVE_MISSING', new RegExp(`last seen at .*${holder}\\) holds volume extents`));

  const without = await StorageEngine.open(engineOptions(dir, [holder]));
  const data = Buffer.alloc(4096);
  await without.volume('vol1')!.read(0, data);
  assert.ok(data.equals(pattern(4096, 5)), 'the data is intact without the empty drive');
  await without.close();

  const both = await StorageEngine.open(engineOptions(dir, [spare, holder]));
  t.after(() => both.close());
  await both.volume('vol1')!.read(0, data);
  assert.ok(data.equals(pattern(4096, 5)), 'drives are found by label, whatever their order in the config');
  assert.equal(both.stats().drives.length, 2);
});
