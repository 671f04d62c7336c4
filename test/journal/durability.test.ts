// Goal: sync() is what makes records durable. Records written but not synced
// may be lost in a crash; synced ones survive any crash; durableSeq only moves
// over a contiguous prefix of completed writes; concurrent sync() calls share
// one flush (group commit); readFrom() never serves a record that is not
// durable. Method: an in-memory device with a volatile cache (unflushed writes
// dropped or torn at a crash) that can also hold writes so the test decides
// the order in which they complete; flushes are counted.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Journal } from '../../src/journal/index.js';
import { Prng } from '../../src/util/prng.js';
import { append, formatted, memoryDevice, pattern, readAll, readAllOrDamaged, recordMeta } from './helpers.js';

test('written but not synced records are lost in a crash; synced ones survive', async () => {
  const device = memoryDevice();
  const journal = await formatted(device);
  for (let i = 0; i < 5; i += 1) await append(journal, recordMeta('write', 9000), journal.nextSeq);
  await journal.sync();
  for (let i = 0; i < 3; i += 1) await append(journal, recordMeta('write', 9000), journal.nextSeq);
  assert.equal(journal.durableSeq, 6);
  const { journal: reopened } = await Journal.open(device.crash());
  assert.equal(reopened.nextSeq, 6);
  assert.deepEqual((await readAll(reopened)).map((r) => r.seq), [1, 2, 3, 4, 5]);
});

test('synced records survive crashes that land or tear every unsynced write', async () => {
  for (let seed = 1; seed <= 25; seed += 1) {
    const device = memoryDevice();
    const journal = await formatted(device);
    for (let i = 0; i < 4; i += 1) await append(journal, recordMeta('write', 3000 + i * 5000), journal.nextSeq);
    await journal.sync();
    for (let i = 0; i < 4; i += 1) await append(journal, recordMeta('write', 3000 + i * 30000), journal.nextSeq);
    const { journal: reopened, recovery } = await Journal.open(device.crash({ prng: new Prng(seed) }));
    assert.ok(reopened.nextSeq >= 5, `seed ${seed}: the synced records are there`);
    const { records, damaged } = await readAllOrDamaged(reopened);
    for (const record of records) {
      assert.ok(record.data!.equals(pattern(record.seq, record.length)), `seed ${seed}: seq ${record.seq} reads back`);
    }
    assert.deepEqual(damaged, recovery.damaged.map((d) => d.seq));
    assert.ok(damaged.every((seq) => seq >= 5), 'only unsynced records can be damaged');
  }
});

test('durableSeq advances only over the contiguous prefix of completed writes', async () => {
  const device = memoryDevice();
  const journal = await formatted(device);
  device.holdWrites();
  const metas = [recordMeta('write', 4096), recordMeta('zero', 8192), recordMeta('write', 100)];
  const reservations = metas.map((meta) => journal.reserve(meta, meta.kind === 'write' ? meta.length : 0));
  const writes = reservations.map((r, i) => journal.write(r, metas[i]!, metas[i]!.kind === 'write' ? pattern(r.seq, metas[i]!.length) : undefined));
  assert.equal(device.heldCount, 3);
  device.completeHeld([2]); // seq 3 completes first
  await writes[2];
  await journal.sync();
  assert.equal(journal.durableSeq, 1, 'seq 3 is flushed but 1 and 2 are not written');
  assert.deepEqual(await journal.readFrom(1, 1 << 20), []);
  device.completeHeld([0]);
  await writes[0];
  await journal.sync();
  assert.equal(journal.durableSeq, 2);
  device.stopHolding();
  await writes[1];
  await journal.sync();
  assert.equal(journal.durableSeq, 4);
  assert.deepEqual((await journal.readFrom(1, 1 << 20)).map((r) => r.seq), [1, 2, 3]);
});

test('a sync() only covers writes completed before it: a write that completes during the flush needs the next round', async () => {
  const device = memoryDevice();
  const journal = await formatted(device);
  await append(journal, recordMeta('write', 4096), 1);
  const meta = recordMeta('write', 4096);
  const reservation = journal.reserve(meta, 4096);
  const firstRound = journal.sync();
  await journal.write(reservation, meta, pattern(2, 4096));
  await firstRound;
  assert.equal(journal.durableSeq, 2);
  await journal.sync();
  assert.equal(journal.durableSeq, 3);
});

test('group commit: concurrent writers and sync() calls share one flush', async () => {
  const device = memoryDevice();
  const journal = await formatted(device);
  const flushesBefore = device.flushCount;
  await Promise.all(Array.from({ length: 64 }, async (_, i) => {
    await append(journal, recordMeta('write', 4096 * (1 + (i % 4))), i + 1);
  }));
  await Promise.all(Array.from({ length: 64 }, () => journal.sync()));
  assert.equal(device.flushCount - flushesBefore, 1);
  assert.equal(journal.durableSeq, 65);
  await journal.sync();
  assert.equal(device.flushCount - flushesBefore, 1, 'nothing new to make durable: no flush');
});

test('sync() joins a running round when that round already covers every completed write', async () => {
  const device = memoryDevice();
  const journal = await formatted(device);
  await append(journal, recordMeta('trim', 1 << 20), 1);
  const flushesBefore = device.flushCount;
  const first = journal.sync();
  await Promise.resolve();
  await Promise.all([first, journal.sync(), journal.sync()]);
  assert.equal(device.flushCount - flushesBefore, 1);
});
