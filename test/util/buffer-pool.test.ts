// Goal: a pooled buffer has one owner at a time. The pool takes back only a buffer
// it lent, once; the link decoder lends its payload segments from the pool; a
// journal gives a handed-over segment back once it is written and not kept, or
// once the record is released, and never while a reader may still use it.
// Method: the real pool, decoder and journal (in-memory device); a buffer given
// back shows as the same slab coming out of acquire() again.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferPool, sharedPool } from '../../src/util/buffer-pool.js';
import { FrameDecoder } from '../../src/link/decoder.js';
import { encodeFrame } from '../../src/link/frame.js';
import { FRAME_TYPE } from '../../src/link/protocol.js';
import { recentBytesMax } from '../../src/journal/record-window.js';
import { formatted, memoryDevice, pattern, readAll, recordMeta } from '../journal/helpers.js';

const mib = 2 ** 20;

/** True when acquire() hands out `buffer`'s slab again (it was given back). */
function comesBack(pool: BufferPool, buffer: Buffer): boolean {
  const taken: Buffer[] = [];
  let found = false;
  for (let i = 0; i < 64 && !found; i++) {
    const next = pool.acquire(buffer.length);
    taken.push(next);
    found = next.buffer === buffer.buffer;
  }
  return found;
}

test('the pool takes back only a buffer it lent, and only once', () => {
  const pool = new BufferPool();
  const foreign = Buffer.allocUnsafeSlow(4096);
  pool.release(foreign);
  assert.notEqual(pool.acquire(4096).buffer, foreign.buffer, 'a buffer the pool never lent is not handed out');
  const lent = pool.acquire(8192);
  pool.release(lent);
  pool.release(lent);
  const first = pool.acquire(8192);
  const second = pool.acquire(8192);
  assert.equal(first.buffer, lent.buffer, 'the buffer given back is lent again');
  assert.notEqual(second.buffer, lent.buffer, 'a second release of one buffer does not put it in two hands');
  const view = pool.acquire(4096).subarray(0, 1024);
  pool.release(view);
  assert.equal(comesBack(pool, view), false, 'a view of a lent buffer is not the buffer');
});

test('link payload segments are lent by the pool', () => {
  const pool = new BufferPool();
  const idle = pool.acquire(mib);
  pool.release(idle);
  const decoder = new FrameDecoder(pool);
  const payload = [pattern(1, mib), pattern(2, 4096)];
  for (const buffer of encodeFrame({ type: FRAME_TYPE.RESPONSE, requestId: 7, body: { ok: true }, payload })) decoder.push(buffer);
  const decoded = decoder.next();
  assert.equal(decoded?.kind, 'frame');
  const frame = decoded.kind === 'frame' ? decoded.frame : undefined;
  assert.ok(frame !== undefined && frame.type === FRAME_TYPE.RESPONSE);
  assert.ok(frame.payload[0]!.equals(payload[0]!) && frame.payload[1]!.equals(payload[1]!), 'the segments hold the bytes sent');
  const segment = frame.payload[0]!;
  assert.equal(segment.buffer, idle.buffer, 'the 1 MiB segment was filled into the idle pooled slab, not a fresh buffer');
  pool.release(segment);
  assert.equal(comesBack(pool, segment), true, 'a segment given back is lent again');
});

test('a journal gives handed-over data back when released, not while it is kept for a reader', async () => {
  const journal = await formatted(memoryDevice(256 * mib));
  const kept: Buffer[] = [];
  for (let i = 0; i < 4; i++) {
    const data = sharedPool.acquire(mib);
    pattern(300 + i, mib).copy(data);
    kept.push(data);
    const meta = recordMeta('write', mib, { offset: i * mib });
    await journal.write(journal.reserve(meta, mib), meta, data, { handedOver: true });
  }
  await journal.sync();
  const records = await readAll(journal);
  assert.equal(records.length, 4);
  assert.equal(records[0]!.data, kept[0], 'the kept record is the buffer handed over');
  // Still kept: acquire() must not hand these slabs to anyone.
  const meanwhile = Array.from({ length: 8 }, () => sharedPool.acquire(mib));
  for (const buffer of meanwhile) assert.ok(!kept.some((k) => k.buffer === buffer.buffer), 'a kept record\'s buffer is not lent again');
  records.forEach((record, i) => assert.ok(record.data!.equals(pattern(300 + i, mib)), `seq ${record.seq} intact while kept`));
  for (const buffer of meanwhile) sharedPool.release(buffer);
  journal.release(records[2]!.seq);
  assert.equal(comesBack(sharedPool, kept[0]!), true, 'a released record\'s buffer goes back to the pool');
  assert.ok(records[2]!.data!.equals(pattern(302, mib)) && records[3]!.data!.equals(pattern(303, mib)), 'records not released are left alone');
});

test('a handed-over buffer the journal does not keep goes back once written', async () => {
  const journal = await formatted(memoryDevice(256 * mib));
  const count = recentBytesMax / mib;
  for (let i = 0; i < count; i++) {
    const meta = recordMeta('write', mib, { offset: i * mib });
    await journal.write(journal.reserve(meta, mib), meta, pattern(i, mib), { handedOver: true });
  }
  const extra = sharedPool.acquire(mib);
  pattern(999, mib).copy(extra);
  const meta = recordMeta('write', mib, { offset: count * mib });
  await journal.write(journal.reserve(meta, mib), meta, extra, { handedOver: true });
  assert.equal(comesBack(sharedPool, extra), true, 'written past the keep bound, the buffer is the pool\'s again');
  await journal.sync();
  const records = await readAll(journal);
  assert.ok(records[records.length - 1]!.data!.equals(pattern(999, mib)), 'the record not kept reads back from the device as written');
});
