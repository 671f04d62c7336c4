// Goal: the ring is reused forever without losing or mixing records: records
// wrap around the ring end (never straddling it) through many laps as space is
// released; a full ring refuses a record with JOURNAL_FULL and takes records
// again once space is released; space freed by release() is overwritten only
// after a header naming the new tail is durable, so a crash at any moment
// finds the chain where the header says it starts; readFrom() stays within its
// bounds. Method: an in-memory device of the minimum size, records of a few
// MiB so each lap is short; every record's data is derived from its seq and
// checked when read back, before and after crashes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Journal } from '../../src/journal/index.js';
import { append, formatted, memoryDevice, pattern, readAll, recordMeta } from './helpers.js';

const mib = 2 ** 20;

test('many laps of wrap-around with release: every record reads back, before and after a crash', async () => {
  const device = memoryDevice();
  const journal = await formatted(device);
  const lengths = [mib + 17, 3 * mib, 5000, 2 * mib - 4096, 700_000];
  let wraps = 0;
  let previous = 0;
  for (let i = 0; i < 600; i += 1) {
    const length = lengths[i % lengths.length]!;
    const reservation = await append(journal, recordMeta(i % 7 === 0 ? 'zero' : 'write', length), journal.nextSeq);
    if (reservation.position < previous) wraps += 1;
    previous = reservation.position;
    assert.ok(reservation.position + reservation.recordBytes <= Journal.MIN_BYTES);
    if (i % 3 === 0) await journal.sync();
    if (i % 10 === 0) {
      const batch = await journal.readFrom(journal.tailSeq, 8 * mib);
      for (const record of batch) if (record.data) assert.ok(record.data.equals(pattern(record.seq, record.length)), `seq ${record.seq}`);
      journal.release(Math.max(journal.tailSeq, journal.durableSeq - 12));
    }
    assert.ok(journal.usedBytes <= journal.capacityBytes);
  }
  assert.ok(wraps >= 5, `the ring wrapped ${wraps} times`);
  await journal.sync();
  const kept = (await readAll(journal)).map((r) => r.seq);
  const { journal: reopened } = await Journal.open(device.crash());
  assert.ok(reopened.tailSeq <= journal.tailSeq, 'the persisted tail is never ahead of the in-memory one');
  const records = await readAll(reopened);
  assert.deepEqual(records.map((r) => r.seq).slice(-kept.length), kept);
  assert.equal(reopened.nextSeq, 601);
  for (const record of records) if (record.data) assert.ok(record.data.equals(pattern(record.seq, record.length)));
});

test('JOURNAL_FULL when the ring is full; space returns after release', async () => {
  const device = memoryDevice();
  const journal = await formatted(device);
  const meta = recordMeta('write', 4 * mib);
  let error: unknown;
  while (error === undefined) {
    try {
      await append(journal, meta, journal.nextSeq);
    } catch (caught) {
      error = caught;
    }
  }
  assert.equal((error as { code?: string }).code, 'JOURNAL_FULL');
  const appended = journal.nextSeq - 1;
  assert.equal(appended, Math.floor((Journal.MIN_BYTES - 8192) / (4 * mib + 4096)));
  assert.ok(journal.capacityBytes - journal.usedBytes < 4 * mib + 4096);
  await journal.sync();
  journal.release(3);
  const before = journal.usedBytes;
  await append(journal, meta, journal.nextSeq); // reuses the space of seq 1 and 2 (and the wrap waste)
  assert.ok(journal.usedBytes > before);
  await journal.sync();
  const { journal: reopened } = await Journal.open(device.crash());
  const records = await readAll(reopened);
  assert.deepEqual(records.map((r) => r.seq), Array.from({ length: appended - 1 }, (_, i) => i + 3));
  for (const record of records) assert.ok(record.data!.equals(pattern(record.seq, 4 * mib)));
});

test('released space is overwritten only after the header naming the new tail is durable', async () => {
  const device = memoryDevice();
  const journal = await formatted(device);
  const meta = recordMeta('write', 8 * mib);
  while (journal.capacityBytes - journal.usedBytes >= 8 * mib + 4096) await append(journal, meta, journal.nextSeq);
  await journal.sync();
  journal.release(2); // frees seq 1: less than the share that starts a header round by itself
  device.holdWrites();
  const reservation = journal.reserve(meta, 8 * mib);
  const write = journal.write(reservation, meta, pattern(reservation.seq, 8 * mib));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(device.heldCount, 1, 'only the header write is issued; the record waits for it');
  // A crash now finds the old tail (or the new one, if the header landed) and intact records from there.
  const crashed = await Journal.open(device.crash());
  assert.ok([1, 2].includes(crashed.journal.tailSeq));
  const records = await readAll(crashed.journal);
  for (const record of records) assert.ok(record.data!.equals(pattern(record.seq, 8 * mib)), `seq ${record.seq}`);
  assert.equal(records[records.length - 1]!.seq, reservation.seq - 1);
  void write; // never settles: the device it runs on crashed
});

test('readFrom returns at least one record, at most maxBytes of data, and refuses released or future seqs', async () => {
  const journal = await formatted(memoryDevice());
  for (let i = 0; i < 10; i += 1) await append(journal, recordMeta('write', 100 * 1024), journal.nextSeq);
  await journal.sync();
  assert.equal((await journal.readFrom(1, 250 * 1024)).length, 2);
  assert.equal((await journal.readFrom(1, 0)).length, 1);
  assert.equal((await journal.readFrom(1, 64 * mib)).length, 10);
  assert.deepEqual(await journal.readFrom(11, mib), []);
  journal.release(4);
  await assert.rejects(journal.readFrom(3, mib), { code: 'JOURNAL_RECORD_GONE' });
  await assert.rejects(journal.readFrom(12, mib), { code: 'JOURNAL_SEQ_MISMATCH' });
  assert.equal((await journal.readFrom(4, mib))[0]!.seq, 4);
});
