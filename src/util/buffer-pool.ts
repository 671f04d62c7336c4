// Reusable I/O buffers. Allocating and faulting in a fresh 1 MiB buffer per
// request costs 20x a reused one on these machines (bench/baseline.md),
// so request payloads and read replies borrow from power-of-two size classes
// and give the buffer back when the socket or drive is done with it. The pool
// keeps at most `retainBytesMax` idle; beyond that released buffers are dropped.
// Only a buffer the pool lent (the very object acquire() returned) is taken back,
// once: a stray or second release of the same buffer is ignored, so a mistake
// cannot put one slab in two owners' hands.

import { assert } from '../errors.js';

const classMinBytes = 4096;

export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private retainedBytes = 0;
  /** The buffers acquire() handed out and release() has not taken back. */
  private readonly lent = new WeakSet<Buffer>();

  constructor(private readonly retainBytesMax: number = 256 * 2 ** 20) {}

  /** A buffer of exactly `length` bytes (a view of a pooled slab). Contents are stale: fill it. */
  acquire(length: number): Buffer {
    assert(Number.isSafeInteger(length) && length >= 0, 'buffer length is a whole number');
    const size = classSize(length);
    const stack = this.free.get(size);
    const slab = stack?.pop();
    let lent: Buffer;
    if (slab !== undefined) {
      this.retainedBytes -= size;
      lent = slab.subarray(0, length);
    } else {
      lent = Buffer.allocUnsafeSlow(size).subarray(0, length);
    }
    this.lent.add(lent);
    return lent;
  }

  /** Takes back a buffer acquire() returned; the caller and everyone it gave the buffer to are done with it. */
  release(buffer: Buffer): void {
    if (!this.lent.delete(buffer)) return; // not one of ours, or given back already
    const slab = Buffer.from(buffer.buffer, buffer.byteOffset, buffer.buffer.byteLength - buffer.byteOffset);
    const size = slab.length;
    if (size !== classSize(size) || buffer.byteOffset !== 0) return; // not one of ours
    if (this.retainedBytes + size > this.retainBytesMax) return;
    let stack = this.free.get(size);
    if (stack === undefined) {
      stack = [];
      this.free.set(size, stack);
    }
    stack.push(slab);
    this.retainedBytes += size;
  }
}

function classSize(length: number): number {
  let size = classMinBytes;
  while (size < length) size *= 2;
  return size;
}

export const sharedPool = new BufferPool();

/** A zero-filled buffer that is never written: the source for zeroing writes. */
export const zeroBuffer: Buffer = Buffer.alloc(4 * 2 ** 20);
