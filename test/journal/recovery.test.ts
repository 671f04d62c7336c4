// Goal: each row of the recovery decision table (src/journal/recovery.ts,
// docs/journal-format.md) is reached by a real journal on a device, and
// open() then keeps exactly the records that row says: damage in the middle is
// reported and the scan goes on; damage at the end, a gap in a batch, leftovers
// of an older instance, of an earlier session or of a previous lap are never
// replayed. Method: an in-memory device; the on-disk state of each case is made
// by the journal itself plus a crash, or planted (garbage over a header, one
// flipped data byte, a record encoded with the journal's own encoder at the
// place the scan looks next); then Journal.open and its RecoveryReport.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32c } from '@node-rs/crc32';
import { Journal, type Epoch, type MemoryJournalDevice, type RecoveryReport, type Reservation } from '../../src/journal/index.js';
import { RecordTemplate, parseHeaderSlot, recordBytesFor } from '../../src/journal/layout.js';
import { append, epochA, epochB, formatted, memoryDevice, pattern, readAll, recordMeta } from './helpers.js';

const ringStart = 8192;
const mib = 2 ** 20;

interface Opened {
  device: MemoryJournalDevice;
  journal: Journal;
  recovery: RecoveryReport;
}

/**
 * Formats a journal and appends `count` write records of `length` bytes (seed = seq), synced
 * once at the end, or after each record with `syncEach` (then each record's header proves the
 * ones before it were synced).
 */
async function withRecords(count: number, length = 6000, syncEach = false): Promise<{ device: MemoryJournalDevice; journal: Journal; reservations: Reservation[] }> {
  const device = memoryDevice();
  const journal = await formatted(device);
  const reservations: Reservation[] = [];
  for (let i = 0; i < count; i += 1) {
    reservations.push(await append(journal, recordMeta('write', length), journal.nextSeq));
    if (syncEach) await journal.sync();
  }
  await journal.sync();
  return { device, journal, reservations };
}

/** Power cut (every unflushed write dropped), then open. */
async function reopen(device: MemoryJournalDevice): Promise<Opened> {
  const after = device.crash();
  const { journal, recovery } = await Journal.open(after);
  return { device: after, journal, recovery };
}

function garbage(bytes: number, seed = 7): Buffer {
  return pattern(seed, bytes);
}

interface Planted {
  seq: number;
  session?: number;
  epoch?: Epoch;
  instanceId?: string;
}

/** Encodes a write record with the journal's own encoder and plants it durably at `position`. */
async function plantRecord(device: MemoryJournalDevice, position: number, planted: Planted): Promise<void> {
  const length = 6000;
  const data = pattern(planted.seq, length);
  const block = Buffer.alloc(recordBytesFor('write', length));
  const template = new RecordTemplate(planted.instanceId ?? 'instance-1', 'group-1', planted.epoch ?? epochA);
  template.encode(block, 0, {
    kind: 'write', wrap: false, seq: planted.seq, timestampMs: 1, offset: 0, length, lun: 3, session: planted.session ?? 1, dataCrc: crc32c(data), unsyncedBefore: 0,
  });
  data.copy(block, 4096);
  await device.plant(position, block);
}

function end(reservation: Reservation): number {
  return reservation.position + reservation.recordBytes;
}

function seqs(records: { seq: number }[]): number[] {
  return records.map((record) => record.seq);
}

test('empty: a freshly formatted journal opens with no records', async () => {
  const device = memoryDevice();
  await formatted(device);
  const { journal, recovery } = await reopen(device);
  assert.equal(recovery.case, 'empty');
  assert.deepEqual(recovery.steps, { empty: 1 });
  assert.equal(recovery.records, 0);
  assert.equal(journal.nextSeq, 1);
  assert.deepEqual(await journal.readFrom(1, mib), []);
});

test('end: the scan stops at the first block without a valid header; a torn last header is discarded', async () => {
  const { device, reservations } = await withRecords(4);
  await device.plant(reservations[3]!.position + 100, garbage(200)); // record 4's header block is torn
  const { journal, recovery } = await reopen(device);
  assert.equal(recovery.case, 'end');
  assert.deepEqual(recovery.steps, { record: 3, end: 1 });
  assert.deepEqual(seqs(await readAll(journal)), [1, 2, 3]);
  assert.equal(journal.nextSeq, 4);
});

test('gap (partial batch) and stale_session: records after the first missing seq are discarded and never come back', async () => {
  const { device, reservations } = await withRecords(5);
  await device.plant(reservations[2]!.position, garbage(4096)); // seq 3 never landed; 4 and 5 did
  const first = await reopen(device);
  assert.equal(first.recovery.case, 'gap');
  assert.equal(first.recovery.records, 2);
  assert.deepEqual(seqs(await readAll(first.journal)), [1, 2]);
  assert.equal(first.journal.nextSeq, 3);
  // The journal goes on from seq 3 (same size, same place); the old 4 and 5 are of an earlier session.
  await append(first.journal, recordMeta('write', 6000), 103);
  await first.journal.sync();
  const second = await reopen(first.device);
  assert.equal(second.recovery.case, 'stale_session');
  assert.deepEqual(seqs(await readAll(second.journal)), [1, 2, 3]);
  assert.deepEqual((await second.journal.readFrom(3, mib))[0]!.data, pattern(103, 6000));
});

test('foreign_instance: records of an older instance left in the ring are not replayed', async () => {
  const { device } = await withRecords(3);
  await Journal.format(device, { groupId: 'group-1', role: 'master', epoch: epochA, firstSeq: 1, instanceId: 'instance-2' });
  const { journal, recovery } = await reopen(device);
  assert.equal(recovery.case, 'foreign_instance');
  assert.equal(recovery.records, 0);
  assert.equal(journal.instanceId, 'instance-2');
  assert.equal(journal.nextSeq, 1);
});

test('foreign_instance: a journal formatted over another group\'s journal ignores its records', async () => {
  const { device } = await withRecords(3);
  await Journal.format(device, { groupId: 'group-2', role: 'restore', epoch: epochA, firstSeq: 1, instanceId: 'instance-1' });
  const { journal, recovery } = await reopen(device);
  assert.equal(recovery.case, 'foreign_instance');
  assert.deepEqual([journal.groupId, journal.nextSeq], ['group-2', 1]);
});

test('foreign_instance: after a role change that discards records, the old instance\'s records stay dead', async () => {
  const { device, journal } = await withRecords(3);
  await journal.setRole('restore', epochB, { keepRecords: false, firstSeq: 1 });
  // The new instance starts at the head; plant an old-instance record exactly there.
  await plantRecord(device, ringStart + 3 * 12288, { seq: 1, instanceId: 'instance-1' });
  const { recovery, journal: reopened } = await reopen(device);
  assert.equal(recovery.case, 'foreign_instance');
  assert.equal(reopened.nextSeq, 1);
  assert.equal(reopened.role, 'restore');
});

test('stale_lap: the record after the head is from the previous lap of the ring (lower seq)', async () => {
  const device = memoryDevice();
  const journal = await formatted(device);
  const length = mib - 4096; // 1 MiB records: a lap of the ring is 128 of them plus a wrap
  for (let i = 0; i < 150; i += 1) {
    await append(journal, recordMeta('write', length), journal.nextSeq);
    await journal.sync();
    journal.release(journal.durableSeq - Math.min(10, journal.durableSeq - journal.tailSeq));
  }
  await journal.persistHeader();
  const { journal: reopened, recovery } = await reopen(device);
  assert.equal(recovery.case, 'stale_lap');
  assert.equal(reopened.nextSeq, 151);
  const records = await readAll(reopened);
  assert.deepEqual(seqs(records), Array.from({ length: 151 - reopened.tailSeq }, (_, i) => reopened.tailSeq + i));
  for (const record of records) assert.ok(record.data!.equals(pattern(record.seq, length)), `seq ${record.seq} reads back`);
});

test('a partial batch past the last sync is the end; records lost behind a synced one are reported (lostFrom)', async () => {
  // Synced once at the end: records 4 and 5 do not know 3 was ever synced, so a missing 3 is a tear.
  const torn = await withRecords(5);
  await torn.device.plant(torn.reservations[2]!.position, garbage(4096));
  assert.equal((await reopen(torn.device)).recovery.lostFrom, null);

  // Synced one by one: record 4 was written after 3 was synced, so a destroyed 3 is damage, and 3-5 are lost.
  const synced = await withRecords(5, 6000, true);
  await synced.device.plant(synced.reservations[2]!.position, garbage(4096));
  const { journal, recovery } = await reopen(synced.device);
  assert.equal(recovery.case, 'gap');
  assert.equal(recovery.lostFrom, 3);
  assert.equal(journal.nextSeq, 3);
});

test('a misdirected write over a synced record: the scan stops there, and the loss is reported, not taken for the end', async () => {
  const { device, reservations } = await withRecords(6, 6000, true);
  // Record 6 (header and data) also landed where record 3 was.
  const copy = Buffer.alloc(reservations[5]!.recordBytes);
  await device.read(reservations[5]!.position, copy);
  await device.plant(reservations[2]!.position, copy);
  const { recovery } = await reopen(device);
  assert.equal(recovery.case, 'seq_ahead');
  assert.equal(recovery.nextSeq, 3);
  assert.equal(recovery.lostFrom, 3);
});

test('seq_ahead: a record with a higher seq where the next one should begin ends the scan', async () => {
  const { device, reservations } = await withRecords(3);
  await plantRecord(device, end(reservations[2]!), { seq: 5 });
  const { journal, recovery } = await reopen(device);
  assert.equal(recovery.case, 'seq_ahead');
  assert.equal(journal.nextSeq, 4);
});

const ringRecords = (Journal.MIN_BYTES - ringStart) / 4096;

test('header_behind_ring: a newer record at the persisted tail means a lost header: the journal starts again past every seq on the ring', async () => {
  const device = memoryDevice();
  await formatted(device);
  await plantRecord(device, ringStart, { seq: 9 });
  const { journal, recovery } = await Journal.open(device);
  assert.equal(recovery.case, 'header_behind_ring');
  assert.equal(recovery.headerLost?.maxSeq, 9);
  assert.match(recovery.headerLost?.reason ?? '', /seq 9, not the tail seq 1/);
  assert.equal(journal.nextSeq, 10 + 2 * ringRecords, 'past the highest seq on the ring by two laps of records');
  assert.equal(journal.tailSeq, journal.nextSeq);
  assert.notEqual(journal.instanceId, 'instance-1', 'a new instance: no old record is ever taken for one of it');
  assert.equal(journal.role, 'master');
  await append(journal, recordMeta('write', 4096), 1);
  await journal.sync();
  const again = await reopen(device);
  assert.equal(again.recovery.headerCase, 'both_valid', 'both slots name the new instance');
  assert.equal(again.journal.tailSeq, 10 + 2 * ringRecords);
  assert.equal(again.journal.nextSeq, 11 + 2 * ringRecords);
  assert.match(again.recovery.headerLost?.reason ?? '', /owner had not acted on it/, 'a crash before the owner acted keeps the report');
  await again.journal.acknowledgeStartedAgain();
  const third = await reopen(again.device);
  assert.equal(third.recovery.headerLost, null, 'acknowledged: an ordinary open');
  assert.equal(third.journal.nextSeq, 11 + 2 * ringRecords);
});

/** Flips a byte in the header slot holding the higher generation (the newest header). */
async function damageNewestSlot(device: MemoryJournalDevice): Promise<0 | 1> {
  const slots = Buffer.alloc(ringStart);
  await device.read(0, slots);
  const parsed = [parseHeaderSlot(slots.subarray(0, 4096), 0), parseHeaderSlot(slots.subarray(4096), 1)] as const;
  const newest: 0 | 1 = (parsed[1]?.generation ?? 0) > (parsed[0]?.generation ?? 0) ? 1 : 0;
  const byte = Buffer.alloc(1);
  await device.read(newest * 4096 + 100, byte);
  byte[0] = byte[0]! ^ 0x20;
  await device.write(newest * 4096 + 100, byte);
  await device.flush();
  return newest;
}

test('header lost after a role change: the older slot names the old instance, but records of a newer session lie on the ring', async () => {
  // A receiver's journal is promoted (a takeover): the new instance's header is durable, its records
  // follow, then the newest slot is damaged. Opening from the older slot would stop at the first
  // record of the unknown instance and give its seqs out again.
  const device = memoryDevice();
  const journal = await Journal.format(device, { groupId: 'group-1', role: 'restore', epoch: epochA, firstSeq: 1, instanceId: 'instance-1' });
  for (let i = 0; i < 3; i += 1) await append(journal, recordMeta('write', 6000), journal.nextSeq);
  await journal.sync();
  await journal.setRole('master', epochB, { keepRecords: false, firstSeq: 50 });
  for (let i = 0; i < 4; i += 1) await append(journal, recordMeta('write', 6000, { epoch: epochB }), journal.nextSeq);
  await journal.sync();
  await damageNewestSlot(device);
  const { journal: opened, recovery } = await reopen(device);
  assert.equal(recovery.headerCase === 'slot0_torn_or_damaged' || recovery.headerCase === 'slot1_torn_or_damaged', true, recovery.headerCase);
  assert.ok(recovery.headerLost !== null, 'the loss is reported');
  assert.match(recovery.headerLost.reason, /records of session \d+ lie on the ring/);
  assert.equal(recovery.headerLost.maxSeq, 53);
  assert.ok(opened.nextSeq > 53 + ringRecords, `seqs go on past every one on the ring (${opened.nextSeq})`);
  assert.equal(recovery.records, 0);
});

test('a torn newest header after a crash is no loss: the older slot and the ring agree, and the records come back', async () => {
  const { device, journal } = await withRecords(3);
  await journal.persistHeader();
  for (let i = 0; i < 2; i += 1) await append(journal, recordMeta('write', 6000), journal.nextSeq);
  await journal.sync();
  await damageNewestSlot(device);
  const { journal: opened, recovery } = await reopen(device);
  assert.equal(recovery.headerLost, null);
  assert.notEqual(recovery.headerCase, 'both_valid');
  assert.equal(opened.nextSeq, 6, 'all five records are back');
});

test('stale_epoch: a record older than the journal\'s epoch is not accepted', async () => {
  const { device, reservations } = await withRecords(2);
  await plantRecord(device, end(reservations[1]!), { seq: 3, epoch: { counter: 0, arrayId: 'site-a', nonce: '0000000000000000' } });
  const { journal, recovery } = await reopen(device);
  assert.equal(recovery.case, 'stale_epoch');
  assert.equal(journal.nextSeq, 3);
});

test('stale_session: a record written by a later session than the header knows is not accepted', async () => {
  const { device, reservations } = await withRecords(2);
  await plantRecord(device, end(reservations[1]!), { seq: 3, session: 9 });
  const { recovery } = await reopen(device);
  assert.equal(recovery.case, 'stale_session');
});

test('wrap: the scan follows a wrap marker to the ring start, and records straddle nothing', async () => {
  const device = memoryDevice();
  const journal = await formatted(device);
  const length = 3 * mib + 5; // a lap is 42 of them plus a wrap
  const reservations: Reservation[] = [];
  for (let i = 0; i < 50; i += 1) {
    reservations.push(await append(journal, recordMeta('write', length), journal.nextSeq));
    await journal.sync();
    if (i < 35) journal.release(journal.durableSeq - Math.min(5, journal.durableSeq - journal.tailSeq));
  }
  const wrapped = reservations.findIndex((r, i) => i > 0 && r.position < reservations[i - 1]!.position);
  assert.ok(wrapped > 0, 'the ring wrapped');
  assert.equal(reservations[wrapped]!.position, ringStart);
  for (const r of reservations) assert.ok(r.position + r.recordBytes <= Journal.MIN_BYTES, 'no record straddles the ring end');
  assert.ok(journal.tailSeq < reservations[wrapped]!.seq, 'the wrap is inside the kept records');
  await journal.persistHeader();
  const { journal: reopened, recovery } = await reopen(device);
  assert.equal(recovery.steps.wrap, 1);
  const records = await readAll(reopened);
  assert.deepEqual(seqs(records), Array.from({ length: 51 - reopened.tailSeq }, (_, i) => reopened.tailSeq + i));
  for (const record of records) assert.ok(record.data!.equals(pattern(record.seq, length)));
});

test('damaged: a bad data checksum in the middle of synced records is reported, the scan goes on, and reading it fails naming the seq', async () => {
  const { device, reservations } = await withRecords(5, 6000, true);
  await device.plant(reservations[2]!.position + 4096 + 10, Buffer.from([0xff ^ pattern(3, 11)[10]!]));
  const { journal, recovery } = await reopen(device);
  assert.equal(recovery.case, 'end');
  assert.deepEqual(recovery.damaged, [{ seq: 3, lun: 3, offset: 4096 * 7, length: 6000 }]);
  assert.equal(recovery.steps.damaged, 1);
  assert.equal(journal.nextSeq, 6);
  assert.deepEqual(seqs(await journal.readFrom(1, 64 * mib)), [1, 2], 'a batch stops before the damaged record');
  await assert.rejects(journal.readFrom(3, mib), (error: Error & { code?: string; seq?: number; region?: unknown }) => {
    assert.equal(error.code, 'JOURNAL_RECORD_CORRUPT');
    assert.match(error.message, /seq 3\b/);
    assert.equal(error.seq, 3);
    assert.deepEqual(error.region, { seq: 3, lun: 3, offset: 4096 * 7, length: 6000 });
    return true;
  });
  assert.deepEqual(seqs(await journal.readFrom(4, mib)), [4, 5]);
});

test('torn_unsynced: a bad data checksum in the middle of a batch no later record knew as synced is a crash tear: the records end before it', async () => {
  // One sync after five records: the power cut lost record 3's data block while records 4 and 5 landed.
  const { device, reservations } = await withRecords(5);
  await device.plant(reservations[2]!.position + 4096 + 10, Buffer.from([0xff ^ pattern(3, 11)[10]!]));
  const { journal, recovery } = await reopen(device);
  assert.equal(recovery.case, 'torn_unsynced');
  assert.deepEqual(recovery.damaged, []);
  assert.deepEqual(recovery.cut.map((r) => r.seq), [3, 4, 5], 'the records cut off are named, with their regions');
  assert.deepEqual(recovery.cut[0], { seq: 3, lun: 3, offset: 4096 * 7, length: 6000 });
  assert.deepEqual(seqs(await readAll(journal)), [1, 2]);
  assert.equal(journal.nextSeq, 3);
  // The next record goes where record 3 was; a second crash and open keep it, not the leftovers.
  const next = await append(journal, recordMeta('write', 6000), 3);
  assert.equal(next.position, reservations[2]!.position);
  await journal.sync();
  const again = await reopen(device);
  assert.deepEqual(seqs(await readAll(again.journal)), [1, 2, 3]);
});

test('torn_unsynced is not taken for a record below the header\'s applied cursor: that one was synced, so it is damaged', async () => {
  const { device, journal, reservations } = await withRecords(5);
  journal.markApplied(4);
  await journal.persistHeader();
  await device.plant(reservations[2]!.position + 4096 + 10, Buffer.from([0xff ^ pattern(3, 11)[10]!]));
  const { recovery } = await reopen(device);
  assert.equal(recovery.case, 'end');
  assert.deepEqual(recovery.damaged.map((r) => r.seq), [3]);
  assert.deepEqual(recovery.cut, []);
});

test('a later record written after the sync proves it: damage found past a sync is damaged, not torn', async () => {
  const { device, journal, reservations } = await withRecords(3);
  // Records 4 and 5 were written after records 1-3 were synced: their headers say so.
  reservations.push(await append(journal, recordMeta('write', 6000), 4), await append(journal, recordMeta('write', 6000), 5));
  await journal.sync();
  await device.plant(reservations[2]!.position + 4096 + 10, Buffer.from([0xff ^ pattern(3, 11)[10]!]));
  const { recovery } = await reopen(device);
  assert.deepEqual(recovery.damaged.map((r) => r.seq), [3]);
  assert.equal(recovery.steps.torn_unsynced, undefined);
});

test('torn_data_end: a bad data checksum in the last record is a torn write: discarded', async () => {
  const { device, reservations } = await withRecords(5);
  await device.plant(reservations[4]!.position + 4096 + 3000, garbage(512));
  const { journal, recovery } = await reopen(device);
  assert.equal(recovery.case, 'torn_data_end');
  assert.deepEqual(recovery.damaged, []);
  assert.deepEqual(seqs(await readAll(journal)), [1, 2, 3, 4]);
  assert.equal(journal.nextSeq, 5);
});

test('record: every accepted record is counted, and nothing but the chain is read', async () => {
  const { device } = await withRecords(20);
  const { recovery } = await reopen(device);
  assert.deepEqual(recovery.steps, { record: 20, end: 1 });
  assert.equal(recovery.records, 20);
  assert.equal(recovery.tailSeq, 1);
  assert.equal(recovery.nextSeq, 21);
});
