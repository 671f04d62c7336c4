// Incremental decoder for what an NBD client sends: the 4-byte client flags,
// then option frames (IHAVEOPT, option, length, data), then transmission
// requests (28-byte header, plus the payload of a WRITE). It accepts input split
// at any byte and bounds every length. A frame that makes the stream unreadable
// yields `fatal`.
//
// Bytes arrive in one of two ways. `readTarget()` names the buffer the socket
// should fill next and `received(n)` says it did: while a WRITE payload is
// outstanding that target is the payload's own pooled buffer, so large writes
// land there straight from the kernel with no copy and no per-read allocation
// (receiver.ts). `push(chunk)` copies a chunk in the same way, for streams that
// hand out their own chunks.

import { CMD, IHAVEOPT, OPTION_BYTES_MAX, PAYLOAD_MAX, REQUEST_MAGIC } from './protocol.js';
import type { BufferPool } from '../util/buffer-pool.js';

export interface NbdRequest {
  flags: number;
  type: number;
  cookieHigh: number;
  cookieLow: number;
  /** Byte offset; values past 2^53 lose precision but lie past any volume anyway. */
  offset: number;
  length: number;
  /** The WRITE payload, from the pool: the receiver releases it. */
  payload: Buffer | undefined;
}

export type Decoded =
  | { kind: 'client-flags'; flags: number }
  | { kind: 'option'; option: number; data: Buffer }
  | { kind: 'request'; request: NbdRequest }
  | { kind: 'fatal'; reason: string };

type Phase = 'client-flags' | 'options' | 'transmission';

const requestHeaderBytes = 28;
const optionHeaderBytes = 16;
export const STAGING_BYTES = 64 * 1024;

interface Pending {
  data: Buffer;
  filled: number;
}

export class NbdDecoder {
  private phase: Phase = 'client-flags';
  /** Received, not yet decoded bytes live in staging[start, end). */
  private readonly staging = Buffer.allocUnsafeSlow(STAGING_BYTES);
  private start = 0;
  private end = 0;
  private pendingOption: (Pending & { option: number }) | undefined;
  private pendingWrite: (Pending & { request: NbdRequest }) | undefined;
  private targetIsPayload = false;
  private backlog: Buffer[] = [];

  constructor(private readonly pool: BufferPool) {}

  /** Bytes received but not yet taken into a message (a payload being filled does not count). */
  get buffered(): number {
    return this.backlog.reduce((sum, chunk) => sum + chunk.length, 0) + this.end - this.start;
  }

  enterTransmission(): void {
    this.phase = 'transmission';
  }

  /** The buffer the next received bytes belong in; empty when staging is full (stop reading). */
  readTarget(): Buffer {
    const write = this.pendingWrite;
    if (write !== undefined && this.start === this.end) {
      this.targetIsPayload = true;
      return write.data.subarray(write.filled);
    }
    this.targetIsPayload = false;
    if (this.start === this.end) {
      this.start = 0;
      this.end = 0;
    } else if (this.end === STAGING_BYTES && this.start > 0) {
      this.staging.copy(this.staging, 0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
    }
    return this.staging.subarray(this.end);
  }

  /** `count` bytes were written at the start of the last readTarget(). */
  received(count: number): void {
    if (this.targetIsPayload) this.pendingWrite!.filled += count;
    else this.end += count;
  }

  /** Queues a chunk (for sources that allocate their own chunks); next() copies it in as room allows. */
  push(chunk: Buffer): void {
    if (chunk.length > 0) this.backlog.push(chunk);
  }

  private drainBacklog(): void {
    while (this.backlog.length > 0) {
      const chunk = this.backlog[0]!;
      const target = this.readTarget();
      if (target.length === 0) return;
      const count = Math.min(target.length, chunk.length);
      chunk.copy(target, 0, 0, count);
      this.received(count);
      if (count === chunk.length) this.backlog.shift();
      else this.backlog[0] = chunk.subarray(count);
    }
  }

  /** The next complete message, or undefined until more bytes arrive. */
  next(): Decoded | undefined {
    for (;;) {
      this.drainBacklog();
      const decoded = this.decodeStaged();
      if (decoded !== undefined || this.backlog.length === 0) return decoded;
    }
  }

  private decodeStaged(): Decoded | undefined {
    switch (this.phase) {
      case 'client-flags':
        return this.nextClientFlags();
      case 'options':
        return this.nextOption();
      case 'transmission':
        return this.nextRequest();
    }
  }

  private get available(): number {
    return this.end - this.start;
  }

  /** Moves staged bytes into `pending` until it is full; true when it is. */
  private fill(pending: Pending): boolean {
    const count = Math.min(this.available, pending.data.length - pending.filled);
    this.staging.copy(pending.data, pending.filled, this.start, this.start + count);
    this.start += count;
    pending.filled += count;
    return pending.filled === pending.data.length;
  }

  private nextClientFlags(): Decoded | undefined {
    if (this.available < 4) return undefined;
    const flags = this.staging.readUInt32BE(this.start);
    this.start += 4;
    this.phase = 'options';
    return { kind: 'client-flags', flags };
  }

  private nextOption(): Decoded | undefined {
    if (this.pendingOption === undefined) {
      if (this.available < optionHeaderBytes) return undefined;
      const at = this.start;
      if (this.staging.readBigUInt64BE(at) !== IHAVEOPT) return { kind: 'fatal', reason: 'option without IHAVEOPT magic' };
      const option = this.staging.readUInt32BE(at + 8);
      const length = this.staging.readUInt32BE(at + 12);
      if (length > OPTION_BYTES_MAX) return { kind: 'fatal', reason: `option ${option} carries ${length} bytes, more than ${OPTION_BYTES_MAX}` };
      this.start += optionHeaderBytes;
      this.pendingOption = { option, data: Buffer.alloc(length), filled: 0 };
    }
    const pending = this.pendingOption;
    if (!this.fill(pending)) return undefined;
    this.pendingOption = undefined;
    return { kind: 'option', option: pending.option, data: pending.data };
  }

  private nextRequest(): Decoded | undefined {
    if (this.pendingWrite === undefined) {
      if (this.available < requestHeaderBytes) return undefined;
      const at = this.start;
      const magic = this.staging.readUInt32BE(at);
      if (magic !== REQUEST_MAGIC) return { kind: 'fatal', reason: `bad request magic 0x${magic.toString(16)}` };
      const request: NbdRequest = {
        flags: this.staging.readUInt16BE(at + 4),
        type: this.staging.readUInt16BE(at + 6),
        cookieHigh: this.staging.readUInt32BE(at + 8),
        cookieLow: this.staging.readUInt32BE(at + 12),
        offset: this.staging.readUInt32BE(at + 16) * 2 ** 32 + this.staging.readUInt32BE(at + 20),
        length: this.staging.readUInt32BE(at + 24),
        payload: undefined,
      };
      this.start += requestHeaderBytes;
      if (request.type !== CMD.WRITE) return { kind: 'request', request };
      if (request.length > PAYLOAD_MAX) {
        return { kind: 'fatal', reason: `WRITE payload of ${request.length} bytes exceeds the ${PAYLOAD_MAX}-byte maximum` };
      }
      this.pendingWrite = { request, data: this.pool.acquire(request.length), filled: 0 };
    }
    const pending = this.pendingWrite;
    if (!this.fill(pending)) return undefined;
    this.pendingWrite = undefined;
    pending.request.payload = pending.data;
    return { kind: 'request', request: pending.request };
  }

  /** Gives back a half-read payload when the connection ends. */
  dispose(): void {
    if (this.pendingWrite) this.pool.release(this.pendingWrite.data);
    this.pendingWrite = undefined;
    this.backlog = [];
    this.start = 0;
    this.end = 0;
  }
}
