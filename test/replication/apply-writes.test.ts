// Goal: a receiver's batch goes to the S-VOLs with its writes in flight
// together, yet a record that overlaps an earlier one of the batch lands after
// it, and a failure is reported once every issued write has ended.
// Method: applyInOrder with a fake volume that completes writes in an order a
// seeded PRNG picks; the bytes that land are compared with applying the
// records one at a time.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyInOrder, applyWritesInFlightMax } from '../../src/replication/restore/apply-writes.js';
import type { JournalRecord } from '../../src/journal/index.js';
import { Prng } from '../../src/util/prng.js';
import { crc32c } from '@node-rs/crc32';

const epoch = { counter: 1, arrayId: 'site-a', nonce: '0123456789abcdef' };

function record(seq: number, lun: number, offset: number, length: number): JournalRecord {
  const data = Buffer.alloc(length, seq & 0xff);
  return { kind: 'write', seq, epoch, timestampMs: seq, lun, offset, length, data, dataCrc: crc32c(data) };
}

test('overlapping records land in batch order; others are in flight together, within the bound', async () => {
  for (let seed = 1; seed <= 20; seed++) {
    const prng = new Prng(seed);
    const records: JournalRecord[] = [];
    for (let seq = 0; seq < 200; seq++) records.push(record(seq, prng.below(2), prng.below(61) * 512, (1 + prng.below(8)) * 512));
    const image = [Buffer.alloc(64 * 512), Buffer.alloc(64 * 512)];
    const expected = [Buffer.alloc(64 * 512), Buffer.alloc(64 * 512)];
    for (const r of records) r.data!.copy(expected[r.lun]!, r.offset);
    let inFlight = 0;
    let inFlightPeak = 0;
    await applyInOrder(records, async (r) => {
      inFlight += 1;
      inFlightPeak = Math.max(inFlightPeak, inFlight);
      await new Promise((resolve) => setTimeout(resolve, prng.below(4)));
      r.data!.copy(image[r.lun]!, r.offset);
      inFlight -= 1;
    });
    assert.ok(image[0]!.equals(expected[0]!) && image[1]!.equals(expected[1]!), `seed ${seed}: the volumes hold the records applied in order`);
    assert.ok(inFlightPeak > 1, `seed ${seed}: writes were in flight together (peak ${inFlightPeak})`);
    assert.ok(inFlightPeak <= applyWritesInFlightMax, `seed ${seed}: at most ${applyWritesInFlightMax} in flight (peak ${inFlightPeak})`);
  }
});

test('a failed write fails the batch once every write issued has ended; nothing after it is issued', async () => {
  const records = [record(0, 0, 0, 512), record(1, 0, 512, 512), record(2, 0, 0, 512), record(3, 0, 4096, 512)];
  const issued: number[] = [];
  let ended = 0;
  await assert.rejects(applyInOrder(records, async (r) => {
    issued.push(r.seq);
    await new Promise((resolve) => setTimeout(resolve, r.seq === 1 ? 20 : 1));
    ended += 1;
    if (r.seq === 0) throw new Error('EIO on seq 0');
  }), /EIO on seq 0/);
  assert.equal(ended, issued.length, 'every issued write had ended when the batch failed');
  assert.ok(!issued.includes(2) && !issued.includes(3), `seq 2 overlaps the failed seq 0 and is not issued, nor anything after it (issued ${issued.join(',')})`);
});
