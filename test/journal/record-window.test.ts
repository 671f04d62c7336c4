// Goal: the journal serves records it wrote in this session from memory (no
// device read, no checksum of bytes it just wrote), returns exactly what was
// written even when the writer reuses its buffer, falls back to the device past
// the byte bound and after a reopen, and forgets records once released.
// Method: an in-memory device wrapped to count reads.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Journal, MemoryJournalDevice, type JournalDevice } from '../../src/journal/index.js';
import { recentBytesMax } from '../../src/journal/record-window.js';
import { formatted, pattern, readAll, recordMeta } from './helpers.js';

const mib = 2 ** 20;

/** A device that counts the reads it serves. */
class CountingDevice implements JournalDevice {
  reads = 0;
  constructor(readonly inner: MemoryJournalDevice) {}
  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }
  read(offset: number, buffer: Buffer): Promise<void> {
    this.reads += 1;
    return this.inner.read(offset, buffer);
  }
  write(offset: number, data: Buffer): Promise<void> {
    return this.inner.write(offset, data);
  }
  flush(): Promise<void> {
    return this.inner.flush();
  }
}

test('records handed over are read from memory; others come back from the device, as written, though the writer reuses its buffer', async () => {
  const device = new CountingDevice(new MemoryJournalDevice(256 * mib));
  const journal = await formatted(device);
  for (let i = 0; i < 8; i++) {
    const meta = recordMeta('write', mib, { offset: i * mib });
    await journal.write(journal.reserve(meta, mib), meta, pattern(100 + i, mib), { handedOver: true });
  }
  await journal.sync();
  const readsBefore = device.reads;
  const records = await readAll(journal);
  assert.equal(device.reads, readsBefore, 'no device read for records the journal keeps');
  assert.equal(records.length, 8);
  records.forEach((record, i) => assert.ok(record.data!.equals(pattern(100 + i, mib)), `seq ${record.seq}: the data handed over`));
  const other = new CountingDevice(new MemoryJournalDevice(256 * mib));
  const master = await formatted(other);
  const reused = Buffer.alloc(mib);
  for (let i = 0; i < 4; i++) {
    pattern(200 + i, mib).copy(reused);
    const meta = recordMeta('write', mib, { offset: i * mib });
    await master.write(master.reserve(meta, mib), meta, reused);
  }
  reused.fill(0xee); // the writer's buffer goes back to its pool and is overwritten
  await master.sync();
  const before = other.reads;
  const sent = await readAll(master);
  assert.ok(other.reads > before, 'records not handed over are read back from the device (checked) before they are sent');
  sent.forEach((record, i) => assert.ok(record.data!.equals(pattern(200 + i, mib)), `seq ${record.seq}: the data written, not the reused buffer`));
  // Released records are forgotten: reading from below the tail is refused as before.
  journal.release(records[4]!.seq);
  await assert.rejects(journal.readFrom(records[0]!.seq, mib), { code: 'JOURNAL_RECORD_GONE' });
  assert.equal((await readAll(journal)).length, 4);
});

test('past the byte bound and after a reopen, records come from the device, checked', async () => {
  const device = new CountingDevice(new MemoryJournalDevice(256 * mib));
  const journal = await formatted(device);
  const count = recentBytesMax / mib + 8;
  for (let i = 0; i < count; i++) {
    const meta = recordMeta('write', mib, { offset: i * mib });
    await journal.write(journal.reserve(meta, mib), meta, pattern(i, mib), { handedOver: true });
  }
  await journal.sync();
  const readsBefore = device.reads;
  const records = await readAll(journal);
  assert.equal(records.length, count);
  records.forEach((record, i) => assert.ok(record.data!.equals(pattern(i, mib)), `seq ${record.seq}`));
  assert.ok(device.reads > readsBefore, 'the records past the bound were read from the device');
  const { journal: reopened } = await Journal.open(device.inner.crash());
  const again = await readAll(reopened);
  assert.equal(again.length, count);
  again.forEach((record, i) => assert.ok(record.data!.equals(pattern(i, mib)), `reopened seq ${record.seq}`));
});

test('only durable records are served from memory', async () => {
  const device = new CountingDevice(new MemoryJournalDevice(Journal.MIN_BYTES));
  const journal = await formatted(device);
  const meta = recordMeta('write', 4096);
  await journal.write(journal.reserve(meta, 4096), meta, pattern(1, 4096));
  assert.deepEqual(await journal.readFrom(journal.tailSeq, mib), [], 'written but not synced: nothing to read');
  await journal.sync();
  assert.equal((await journal.readFrom(journal.tailSeq, mib)).length, 1);
});
