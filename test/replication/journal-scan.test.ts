// Goal: the one journal-scan loop (src/replication/journal-scan.ts) and the one "byte ranges
// into a P-VOL's bitmap" helper (markRanges, src/replication/bitmap-marks.ts) do what their
// callers in master/ and restore/applier.ts rely on. The scan hands every durable record
// in order, in reads of at most batchBytesMax; hands a damaged record to onDamaged and goes on
// past it, or without onDamaged fails naming its seq; stops at toSeq or when onRecord says
// 'stop'; passes over records released under it only when told to. markRanges clamps each range
// to the volume, and what it marks is durable in a bounded number of regions per metadata record.
// Method: a real Journal on an in-memory device, one data byte of a synced record flipped on the
// device (bit rot) and the journal opened again (an open journal serves what it wrote from memory); a real StorageEngine on files in a temporary folder, opened again to read
// the marks back.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Journal, type JournalRecord, type Reservation } from '../../src/journal/index.js';
import { StorageEngine, type EngineOptions } from '../../src/storage/index.js';
import { scanJournal, type ScannedJournal } from '../../src/replication/journal-scan.js';
import { markRanges } from '../../src/replication/bitmap-marks.js';
import { DurableRegionSet } from '../../src/replication/region-set.js';
import { append, formatted, memoryDevice, pattern, recordMeta } from '../journal/helpers.js';
import { tempDir } from '../helpers/array.js';

const mib = 2 ** 20;
const recordLength = 6000;

/** `count` synced records; with `syncEach`, each record proves the ones before it synced, so damage to one is damage, not a torn tail. */
async function journalWith(count: number, syncEach = false): Promise<{ journal: Journal; reservations: Reservation[]; device: ReturnType<typeof memoryDevice> }> {
  const device = memoryDevice();
  const journal = await formatted(device);
  const reservations: Reservation[] = [];
  for (let i = 0; i < count; i += 1) {
    reservations.push(await append(journal, recordMeta('write', recordLength, { offset: 4096 * i }), journal.nextSeq));
    if (syncEach) await journal.sync();
  }
  await journal.sync();
  return { journal, reservations, device };
}

/** The journal, with each readFrom's maxBytes noted (the reads themselves are the journal's). */
function noting(journal: Journal, maxBytes: number[]): ScannedJournal {
  return {
    get tailSeq() { return journal.tailSeq; },
    get durableSeq() { return journal.durableSeq; },
    readFrom: (seq, bytes) => {
      maxBytes.push(bytes);
      return journal.readFrom(seq, bytes);
    },
  };
}

test('the scan hands every durable record in order, each read bounded by batchBytesMax, and ends at durableSeq', async () => {
  const { journal } = await journalWith(10);
  const maxBytes: number[] = [];
  const seen: JournalRecord[] = [];
  const end = await scanJournal({ journal: noting(journal, maxBytes), fromSeq: 3, batchBytesMax: 2 * recordLength, onRecord: (r) => { seen.push(r); } });
  assert.deepEqual(seen.map((r) => r.seq), [3, 4, 5, 6, 7, 8, 9, 10], 'records 3..10, in order');
  for (const r of seen) assert.ok(r.data!.equals(pattern(r.seq, recordLength)), `record ${r.seq} reads back its own bytes`);
  assert.equal(end, journal.durableSeq, 'it stopped at durableSeq');
  assert.ok(maxBytes.length >= 4, `read in batches of two records at most (${maxBytes.length} reads)`);
  assert.ok(maxBytes.every((b) => b === 2 * recordLength), 'every read asked for batchBytesMax');
});

test('a damaged record at the cursor goes to onDamaged with its seq and region, and the scan goes on past it', async () => {
  const { reservations, device } = await journalWith(6, true);
  await device.plant(reservations[2]!.position + 4096 + 10, Buffer.from([0xff ^ pattern(3, 11)[10]!]));
  const { journal } = await Journal.open(device);
  const seen: number[] = [];
  const damaged: Array<{ seq: number; region: unknown }> = [];
  const end = await scanJournal({
    journal, fromSeq: 1, batchBytesMax: mib,
    onRecord: (r) => { seen.push(r.seq); },
    onDamaged: (error) => { damaged.push({ seq: error.seq, region: error.region }); },
  });
  assert.deepEqual(seen, [1, 2, 4, 5, 6], 'every intact record, none twice');
  assert.deepEqual(damaged, [{ seq: 3, region: { seq: 3, lun: 3, offset: 4096 * 2, length: recordLength } }]);
  assert.equal(end, 7);
});

test('without onDamaged the scan fails at the damaged record, naming its seq, after handing every record before it', async () => {
  const { reservations, device } = await journalWith(6, true);
  await device.plant(reservations[3]!.position + 4096 + 10, Buffer.from([0xff ^ pattern(4, 11)[10]!]));
  const { journal } = await Journal.open(device);
  const seen: number[] = [];
  await assert.rejects(scanJournal({ journal, fromSeq: 1, batchBytesMax: mib, onRecord: (r) => { seen.push(r.seq); } }), (error: Error & { code?: string; seq?: number }) => {
    assert.equal(error.code, 'JOURNAL_RECORD_CORRUPT');
    assert.equal(error.seq, 4);
    return true;
  });
  assert.deepEqual(seen, [1, 2, 3]);
});

test("the scan stops before toSeq, and after a record onRecord answers 'stop' for", async () => {
  const { journal } = await journalWith(8);
  const upTo: number[] = [];
  assert.equal(await scanJournal({ journal, fromSeq: 2, toSeq: 5, batchBytesMax: mib, onRecord: (r) => { upTo.push(r.seq); } }), 5);
  assert.deepEqual(upTo, [2, 3, 4], 'toSeq 5: records 2..4 only, though the batch read more');
  const untilStop: number[] = [];
  const end = await scanJournal({ journal, fromSeq: 1, batchBytesMax: mib, onRecord: (r) => { untilStop.push(r.seq); return r.seq === 6 ? 'stop' : undefined; } });
  assert.deepEqual(untilStop, [1, 2, 3, 4, 5, 6]);
  assert.equal(end, 7, 'it says where it stopped: past the record that stopped it');
});

test('records released under the scan are passed over with skipReleased (it goes on at the tail), and fail it otherwise', async () => {
  const { journal } = await journalWith(8);
  const seen: number[] = [];
  // One record per read; the first record seen releases the journal up to 5.
  const release = (r: JournalRecord): void => {
    seen.push(r.seq);
    if (r.seq === 1) journal.release(5);
  };
  assert.equal(await scanJournal({ journal, fromSeq: 1, batchBytesMax: 1, skipReleased: true, onRecord: release }), 9);
  assert.deepEqual(seen, [1, 5, 6, 7, 8], 'after record 1 the scan went on at the new tail, 5');
  const again = await journalWith(8);
  await assert.rejects(
    scanJournal({ journal: again.journal, fromSeq: 1, batchBytesMax: 1, onRecord: (r) => { if (r.seq === 1) again.journal.release(5); } }),
    (error: Error & { code?: string }) => error.code === 'JOURNAL_RECORD_GONE',
  );
});

function engineOptions(dir: string): EngineOptions {
  return { arrayId: 'site-a', dataDir: path.join(dir, 'data'), extentBytes: mib, drives: [{ path: path.join(dir, 'data.img'), sizeBytes: 16 * mib, use: 'data' }] };
}

test('markRanges marks each range clamped to the volume, durably; a range starting past the end names nothing', async (t) => {
  const dir = tempDir(t);
  fs.mkdirSync(path.join(dir, 'data'));
  const regionBytes = 64 * 1024;
  const sizeBytes = mib + 4096; // its last region (16) is 4 KiB long
  let engine = await StorageEngine.open(engineOptions(dir));
  await markRanges(new DurableRegionSet(engine, 'bitmap:test', regionBytes), sizeBytes, [
    [sizeBytes - 100, 10 * regionBytes], // crosses the end: only region 16
    [sizeBytes + 2 * regionBytes, regionBytes], // past the end (region 18): nothing
    [-regionBytes, 2 * regionBytes], // before the start: nothing
    [3 * regionBytes + 1, regionBytes], // regions 3 and 4
    [5 * regionBytes, 0], // empty: the region at its offset, as regionsOf says
  ]);
  await engine.close();
  engine = await StorageEngine.open(engineOptions(dir));
  t.after(() => engine.close());
  assert.deepEqual(new DurableRegionSet(engine, 'bitmap:test', regionBytes).values(), [3, 4, 5, 16], 'read back after a reopen');
});

test('markRanges commits a whole large volume in metadata records of at most 2^20 regions each', async (t) => {
  const dir = tempDir(t);
  fs.mkdirSync(path.join(dir, 'data'));
  const engine = await StorageEngine.open(engineOptions(dir));
  t.after(() => engine.close());
  const regionsPerRecord: number[] = [];
  const bitmap = new DurableRegionSet(engine, 'bitmap:large', 4096);
  const addAll = bitmap.addAll.bind(bitmap);
  bitmap.addAll = (regions) => {
    regionsPerRecord.push(regions.length);
    return addAll(regions);
  };
  const regions = 2 ** 21 + 3;
  await markRanges(bitmap, regions * 4096, [[0, regions * 4096]]);
  assert.equal(bitmap.size, regions, 'every region of the volume is marked');
  assert.ok(regionsPerRecord.length >= 3 && regionsPerRecord.every((n) => n <= 2 ** 20), `records of ${regionsPerRecord.join(', ')} regions`);
});
