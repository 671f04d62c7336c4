// Reusable I/O buffers. Allocating and faulting in a fresh 1 MiB buffer per
// request costs 20x a reused one on these machines (bench/baseline.md),
// so request payloads and read replies borrow from power-of-two size classes
// and give the buffer back when the socket or drive is done with it. The pool
// keeps at most `retainBytesMax` idle; beyond that released buffers are dropped.

import { assert } from '../errors.js';

const classMinBytes = 4096;

export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private retainedBytes = 0;

  constructor(private readonly retainBytesMax: number = 256 * 2 ** 20) {}

  /** A buffer of exactly `length` bytes (a view of a pooled slab). Contents are stale: fill it. */
  acquire(length: number): Buffer {
    assert(Number.isSafeInteger(length) && length >= 0, 'buffer length is a whole number');
    const size = classSize(length);
    const stack = this.free.get(size);
    const slab = stack?.pop();
    if (slab !== undefined) {
      this.retainedBytes -= size;
      return slab.subarray(0, length);
    }
    return Buffer.allocUnsafeSlow(size).subarray(0, length);
  }

  release(buffer: Buffer): void {
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
