// Goal: the two header slots are written alternately with rising generations;
// opening uses the valid slot with the higher generation and falls back to the
// other one when a slot is torn or fails its checksum (both bad: JOURNAL_CORRUPT);
// cursors reach the header lazily; role changes give a new instance id and
// epoch, persisted, keeping or discarding records as asked. Method: an in-memory
// device whose raw header slots the test decodes with the journal's own parser
// (src/journal/layout.ts) and damages by planting bytes; crashes that tear the
// header write come from the device's seeded crash model.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Journal, type MemoryJournalDevice } from '../../src/journal/index.js';
import { parseHeaderSlot, type HeaderState } from '../../src/journal/layout.js';
import { Prng } from '../../src/util/prng.js';
import { append, epochA, epochB, formatted, memoryDevice, pattern, readAll, recordMeta } from './helpers.js';

async function slots(device: MemoryJournalDevice): Promise<[HeaderState | undefined, HeaderState | undefined]> {
  const bytes = Buffer.alloc(8192);
  await device.read(0, bytes);
  return [parseHeaderSlot(bytes.subarray(0, 4096), 0), parseHeaderSlot(bytes.subarray(4096), 1)];
}

async function appendWrites(journal: Journal, count: number): Promise<void> {
  for (let i = 0; i < count; i += 1) await append(journal, recordMeta('write', 5000), journal.nextSeq);
  await journal.sync();
}

test('header slots alternate, each persist raising the generation by one', async () => {
  const device = memoryDevice();
  const journal = await formatted(device);
  let [slot0, slot1] = await slots(device);
  assert.deepEqual([slot0?.generation, slot1?.generation], [2, 1], 'format writes both slots');
  for (let generation = 3; generation <= 8; generation += 1) {
    await journal.persistHeader();
    [slot0, slot1] = await slots(device);
    const written = generation % 2 === 0 ? slot0 : slot1;
    const other = generation % 2 === 0 ? slot1 : slot0;
    assert.equal(written?.generation, generation);
    assert.equal(other?.generation, generation - 1, 'the other slot keeps the previous header');
  }
});

test('cursors are persisted lazily: release and markApplied reach the device only with the next header', async () => {
  const device = memoryDevice();
  const journal = await formatted(device);
  await appendWrites(journal, 6);
  journal.markApplied(4);
  journal.release(3);
  const before = (await slots(device)).find((slot) => slot?.generation === 2);
  assert.equal(before?.tailSeq, 1);
  await journal.persistHeader();
  const newest = (await slots(device)).find((slot) => slot?.generation === 3);
  assert.deepEqual([newest?.tailSeq, newest?.appliedSeq], [3, 4]);
  const { journal: reopened } = await Journal.open(device.crash());
  assert.deepEqual([reopened.tailSeq, reopened.appliedSeq, reopened.nextSeq], [3, 4, 7]);
});

test('a torn newest slot falls back to the other slot and its (older) tail', async () => {
  const device = memoryDevice();
  const journal = await formatted(device);
  await appendWrites(journal, 6);
  journal.release(2);
  await journal.persistHeader(); // generation 3, slot 1, tail 2
  journal.release(5);
  await journal.persistHeader(); // generation 4, slot 0, tail 5
  await device.plant(2000, pattern(1, 1000)); // tear slot 0 halfway
  const after = device.crash();
  const { journal: reopened, recovery } = await Journal.open(after);
  assert.equal(recovery.headerSlot, 1);
  assert.equal(recovery.headerCase, 'slot0_torn_or_damaged');
  assert.equal(reopened.tailSeq, 2);
  assert.deepEqual((await readAll(reopened)).map((r) => r.seq), [2, 3, 4, 5, 6]);
  const [slot0, slot1] = await slots(after);
  assert.deepEqual([slot0?.generation, slot1?.generation], [4, 3], 'open writes its header over the torn slot, never over the one it opened from');
});

test('a slot with a bad checksum (one flipped bit) falls back to the other slot', async () => {
  const device = memoryDevice();
  const journal = await formatted(device);
  await appendWrites(journal, 2);
  await journal.persistHeader(); // generation 3 in slot 1
  const byte = Buffer.alloc(1);
  await device.read(4096 + 41, byte);
  await device.plant(4096 + 41, Buffer.from([byte[0]! ^ 1])); // the tail seq field of slot 1
  const { recovery } = await Journal.open(device.crash());
  assert.equal(recovery.headerSlot, 0);
  assert.equal(recovery.headerCase, 'slot1_torn_or_damaged');
});

test('both slots bad: JOURNAL_CORRUPT, and a device that never held a journal is refused the same way', async () => {
  const device = memoryDevice();
  await formatted(device);
  await device.plant(0, pattern(3, 8192));
  await assert.rejects(Journal.open(device.crash()), { code: 'JOURNAL_CORRUPT' });
  await assert.rejects(Journal.open(memoryDevice()), { code: 'JOURNAL_CORRUPT' });
});

test('a header write torn by a crash leaves the previous header in charge', async () => {
  for (let seed = 1; seed <= 20; seed += 1) {
    const device = memoryDevice();
    const journal = await formatted(device);
    await appendWrites(journal, 4);
    journal.release(3);
    device.holdWrites();
    void journal.persistHeader();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(device.heldCount, 1, 'the header write is in flight');
    const { journal: reopened, recovery } = await Journal.open(device.crash({ prng: new Prng(seed), landShare: 0.3, tearShare: 0.7 }));
    assert.ok([1, 3].includes(reopened.tailSeq), `seed ${seed}: the old (1) or the new (3) tail, got ${reopened.tailSeq}`);
    assert.equal(recovery.headerSlot, reopened.tailSeq === 3 ? 1 : 0);
    assert.equal(reopened.nextSeq, 5);
  }
});

test('every open starts a new session and persists it before any record is written', async () => {
  const device = memoryDevice();
  await formatted(device);
  let current = device;
  for (let i = 2; i <= 4; i += 1) {
    const { journal } = await Journal.open(current);
    const newest = (await slots(current)).sort((a, b) => (b?.generation ?? 0) - (a?.generation ?? 0))[0];
    assert.equal(newest?.session, i);
    await appendWrites(journal, 1);
    current = current.crash();
  }
});

test('close() marks a clean shutdown; the next open reports it, and a crash does not', async () => {
  const device = memoryDevice();
  const journal = await formatted(device);
  await appendWrites(journal, 2);
  await journal.close();
  assert.throws(() => journal.reserve(recordMeta('zero', 4096), 0), { code: 'SHUTTING_DOWN' });
  const first = await Journal.open(device.crash());
  assert.equal(first.recovery.cleanShutdown, true);
  const second = await Journal.open(device.crash().crash());
  assert.equal(second.recovery.cleanShutdown, false);
});

test('setRole without keeping records: new instance id, epoch and role, a fresh seq space, persisted', async () => {
  const device = memoryDevice();
  const journal = await formatted(device);
  await appendWrites(journal, 5);
  const oldInstance = journal.instanceId;
  await journal.setRole('restore', epochB, { keepRecords: false, firstSeq: 100 });
  assert.notEqual(journal.instanceId, oldInstance);
  assert.deepEqual([journal.role, journal.epoch, journal.tailSeq, journal.nextSeq, journal.usedBytes], ['restore', epochB, 100, 100, 0]);
  await append(journal, recordMeta('write', 5000, { epoch: epochB }), 100);
  await journal.sync();
  const { journal: reopened } = await Journal.open(device.crash());
  assert.deepEqual([reopened.role, reopened.epoch, reopened.instanceId], ['restore', epochB, journal.instanceId]);
  assert.deepEqual((await readAll(reopened)).map((r) => r.seq), [100]);
});

test('setRole keeping records: old records stay readable under their old instance and epoch', async () => {
  const device = memoryDevice();
  const journal = await formatted(device);
  await appendWrites(journal, 3);
  await journal.setRole('master', epochB, { keepRecords: true });
  assert.equal(journal.nextSeq, 4);
  await append(journal, recordMeta('write', 5000, { epoch: epochB }), 4);
  await journal.sync();
  const { journal: reopened, recovery } = await Journal.open(device.crash());
  assert.equal(recovery.records, 4);
  const records = await readAll(reopened);
  assert.deepEqual(records.map((r) => [r.seq, r.epoch.counter]), [[1, 1], [2, 1], [3, 1], [4, 2]]);
  assert.deepEqual(reopened.epoch, epochB);
});

test('setRole refuses an older epoch, a firstSeq with kept records, unwritten reservations, and too many kept instances', async () => {
  const journal = await formatted(memoryDevice());
  await appendWrites(journal, 1);
  await journal.setRole('master', epochB, { keepRecords: true });
  await assert.rejects(journal.setRole('restore', epochA, { keepRecords: false }), { code: 'JOURNAL_EPOCH_STALE' });
  await assert.rejects(journal.setRole('restore', epochB, { keepRecords: true, firstSeq: 50 }), { code: 'BAD_REQUEST' });
  const reservation = journal.reserve(recordMeta('trim', 4096, { epoch: epochB }), 0);
  await assert.rejects(journal.setRole('restore', epochB, { keepRecords: false }), { code: 'BAD_REQUEST' });
  await journal.write(reservation, recordMeta('trim', 4096, { epoch: epochB }), undefined);
  await journal.sync();
  let counter = 2;
  const next = () => ({ counter: (counter += 1), arrayId: 'site-b', nonce: 'fedcba9876543210' });
  for (let i = 0; i < 6; i += 1) {
    const epoch = next();
    await journal.setRole('master', epoch, { keepRecords: true });
    await append(journal, recordMeta('zero', 4096, { epoch }), 0);
  }
  await journal.sync();
  await assert.rejects(journal.setRole('master', next(), { keepRecords: true }), { code: 'BAD_REQUEST' }, '8 instances own kept records');
  journal.release(journal.durableSeq);
  await journal.setRole('master', next(), { keepRecords: true });
});
