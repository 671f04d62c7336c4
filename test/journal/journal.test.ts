// Goal: the journal's API does what the replication layer relies on: every
// record kind round-trips with all its fields (also after reopening), seqs are
// assigned in order or checked on the receiving side, bad input is refused with
// a code that names the problem, a device too small for four of the largest
// records cannot be formatted, and a device error stops the journal for good.
// Method: in-memory devices; records' data derived from their seq.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32c } from '@node-rs/crc32';
import { Journal, MemoryJournalDevice, type JournalDevice } from '../../src/journal/index.js';
import { append, epochA, epochB, formatted, hasData, kinds, memoryDevice, pattern, readAll, recordMeta } from './helpers.js';

const mib = 2 ** 20;

test('every kind of record round-trips with all its fields, before and after reopening', async () => {
  const device = memoryDevice();
  const journal = await formatted(device, 40);
  const cases = [
    ...kinds.map((kind) => recordMeta(kind, hasData(kind) ? 12_345 : 1 << 30, { lun: 65535, offset: 2 ** 40 + 512 })),
    recordMeta('write', 1), recordMeta('write', 0), recordMeta('base', 65_536), recordMeta('write', 64 * 1024 + 1),
    recordMeta('write', Journal.RECORD_DATA_BYTES_MAX), recordMeta('trim', 2 ** 32 - 1), recordMeta('marker', 0, { timestampMs: 0 }),
  ];
  for (const meta of cases) await append(journal, meta, journal.nextSeq);
  await journal.sync();
  const check = (records: Awaited<ReturnType<Journal['readFrom']>>) => {
    assert.equal(records.length, cases.length);
    records.forEach((record, i) => {
      const meta = cases[i]!;
      assert.deepEqual({ ...record, data: undefined, dataCrc: undefined }, { ...meta, seq: 40 + i, data: undefined, dataCrc: undefined });
      assert.equal(record.dataCrc, record.data === undefined || record.data.length === 0 ? 0 : crc32c(record.data), `seq ${record.seq}: dataCrc is the CRC32C of its data`);
      if (hasData(meta.kind)) assert.ok(record.data!.equals(pattern(40 + i, meta.length)), `seq ${record.seq} data`);
      else assert.equal(record.data, undefined);
    });
  };
  check(await readAll(journal));
  const { journal: reopened } = await Journal.open(device.crash());
  check(await readAll(reopened));
});

test('reserve is synchronous and assigns consecutive seqs; a receiving journal checks the given seq', async () => {
  const journal = await formatted(memoryDevice(), 7);
  const first = journal.reserve(recordMeta('zero', 4096), 0);
  const second = journal.reserve(recordMeta('trim', 4096), 0);
  assert.deepEqual([first.seq, second.seq, journal.nextSeq], [7, 8, 9]);
  assert.equal(second.position, first.position + first.recordBytes);
  assert.throws(() => journal.reserve({ ...recordMeta('zero', 4096), seq: 11 }, 0), { code: 'JOURNAL_SEQ_MISMATCH' });
  assert.equal(journal.reserve({ ...recordMeta('zero', 4096), seq: 9 }, 0).seq, 9);
});

test('records carry their epoch; an epoch older than the last record\'s or the journal\'s is refused', async () => {
  const journal = await formatted(memoryDevice());
  await append(journal, recordMeta('write', 100, { epoch: epochB }), 1);
  assert.throws(() => journal.reserve(recordMeta('zero', 4096, { epoch: epochA }), 0), { code: 'JOURNAL_EPOCH_STALE' });
  const conflicting = { counter: 2, arrayId: 'site-c', nonce: '1111111111111111' };
  assert.throws(() => journal.reserve(recordMeta('zero', 4096, { epoch: conflicting }), 0), { code: 'JOURNAL_EPOCH_STALE' });
});

test('bad record input is refused with BAD_REQUEST naming the field', async () => {
  const journal = await formatted(memoryDevice());
  const refused: [Parameters<Journal['reserve']>[0], number, string][] = [
    [recordMeta('write', Journal.RECORD_DATA_BYTES_MAX + 1), Journal.RECORD_DATA_BYTES_MAX + 1, 'length'],
    [recordMeta('write', 100), 99, 'dataBytes'],
    [recordMeta('zero', 100), 100, 'dataBytes'],
    [{ ...recordMeta('zero', 100), kind: 'copy' as never }, 0, 'kind'],
    [recordMeta('zero', 100, { lun: -1 }), 0, 'lun'],
    [recordMeta('zero', 100, { offset: 1.5 }), 0, 'offset'],
    [recordMeta('zero', 2 ** 32), 0, 'length'],
    [recordMeta('zero', 100, { epoch: { counter: 1, arrayId: 'a', nonce: 'XYZ' } }), 0, 'epoch.nonce'],
    [recordMeta('zero', 100, { epoch: { counter: 1, arrayId: '', nonce: '0123456789abcdef' } }), 0, 'epoch.arrayId'],
  ];
  for (const [meta, dataBytes, field] of refused) {
    assert.throws(() => journal.reserve(meta, dataBytes), { code: 'BAD_REQUEST', field }, field);
  }
  assert.equal(journal.nextSeq, 1, 'nothing was reserved');
  const meta = recordMeta('write', 100);
  const reservation = journal.reserve(meta, 100);
  await assert.rejects(journal.write(reservation, meta, Buffer.alloc(99)), { code: 'BAD_REQUEST', field: 'data' });
  await assert.rejects(journal.write(reservation, { ...meta, lun: 9 }, pattern(1, 100)), { code: 'INTERNAL' }, 'a different record than reserved is a bug');
  assert.throws(() => journal.release(5), { code: 'BAD_REQUEST', field: 'uptoSeq' });
  assert.throws(() => journal.markApplied(5), { code: 'BAD_REQUEST', field: 'uptoSeq' });
});

test('format refuses a device smaller than MIN_BYTES or not a multiple of 4 KiB, and bad identities', async () => {
  assert.equal(Journal.MIN_BYTES, 8192 + 4 * (32 * mib + 4096));
  assert.ok(Journal.MIN_BYTES >= 4 * 32 * mib + 8192);
  await assert.rejects(formatted(new MemoryJournalDevice(Journal.MIN_BYTES - 4096)), { code: 'BAD_REQUEST', field: 'sizeBytes' });
  const odd = memoryDevice();
  await assert.rejects(formatted({ sizeBytes: Journal.MIN_BYTES + 1, read: odd.read, write: odd.write, flush: odd.flush }), { code: 'BAD_REQUEST', field: 'sizeBytes' });
  const device = memoryDevice();
  await assert.rejects(Journal.format(device, { groupId: 'g'.repeat(64), role: 'master', epoch: epochA, firstSeq: 0 }), { code: 'BAD_REQUEST', field: 'groupId' });
  await assert.rejects(Journal.format(device, { groupId: 'g', role: 'boss' as never, epoch: epochA, firstSeq: 0 }), { code: 'BAD_REQUEST', field: 'role' });
  await assert.rejects(Journal.format(device, { groupId: 'g', role: 'free', epoch: epochA, firstSeq: -1 }), { code: 'BAD_REQUEST', field: 'firstSeq' });
  const journal = await Journal.format(device, { groupId: 'g', role: 'free', epoch: epochA, firstSeq: 0 });
  assert.match(journal.instanceId, /^[0-9a-f]{32}$/);
  assert.deepEqual([journal.role, journal.groupId, journal.tailSeq, journal.nextSeq, journal.durableSeq, journal.appliedSeq], ['free', 'g', 0, 0, 0, 0]);
  assert.equal(journal.capacityBytes, Journal.MIN_BYTES - 8192);
});

test('a device error stops the journal: every later call fails with the same error', async () => {
  const inner = memoryDevice();
  let failWrites = false;
  const device: JournalDevice = {
    sizeBytes: inner.sizeBytes,
    read: (offset, buffer) => inner.read(offset, buffer),
    write: (offset, data) => (failWrites ? Promise.reject(new Error('EIO: the disk is gone')) : inner.write(offset, data)),
    flush: () => inner.flush(),
  };
  const journal = await formatted(device);
  await append(journal, recordMeta('write', 4096), 1);
  failWrites = true;
  await assert.rejects(append(journal, recordMeta('write', 4096), 2), { code: 'IO_ERROR', message: /EIO/ });
  failWrites = false;
  assert.throws(() => journal.reserve(recordMeta('zero', 4096), 0), { code: 'IO_ERROR' });
  await assert.rejects(journal.sync(), { code: 'IO_ERROR' });
  await assert.rejects(journal.readFrom(1, mib), { code: 'IO_ERROR' });
});

test('usedBytes counts kept records (with wrap waste) and release gives them back', async () => {
  const journal = await formatted(memoryDevice());
  await append(journal, recordMeta('write', 5000), 1);
  await append(journal, recordMeta('trim', 5000), 2);
  assert.equal(journal.usedBytes, 12288 + 4096);
  await journal.sync();
  journal.release(2);
  assert.equal(journal.usedBytes, 4096);
  journal.release(1);
  assert.equal(journal.tailSeq, 2, 'release never moves the tail back');
});
