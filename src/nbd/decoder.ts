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
//
// A WRITE's payload buffer is taken from the global budget (budget.ts) as its
// bytes arrive, never whole at the header: the first bytes go into a buffer of
// at most `payloadFirstBytes`, which doubles (copying what it holds) while the
// payload is larger, so a client that announces 32 MiB and sends nothing holds
// nothing, and one that stalls half way holds about what it sent. Payloads up to
// `payloadFirstBytes` (the usual 4 KiB to 1 MiB) take one buffer and no copy.
// When the budget is spent the decoder waits (`waitingForBudget`) and the
// session stops reading.

import { CMD, IHAVEOPT, OPTION_BYTES_MAX, PAYLOAD_MAX, REQUEST_MAGIC } from './protocol.js';
import type { BufferPool } from '../util/buffer-pool.js';
import { smallBytesMax, type ByteBudget } from './budget.js';

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
/** The first buffer of a WRITE payload; larger payloads double from here as bytes arrive. */
export const payloadFirstBytes = smallBytesMax;

interface Pending {
  data: Buffer;
  filled: number;
}

interface PendingWrite {
  request: NbdRequest;
  /** Holds the first `filled` bytes; undefined until the first byte arrives. */
  data: Buffer | undefined;
  filled: number;
}

export class NbdDecoder {
  private phase: Phase = 'client-flags';
  /** Received, not yet decoded bytes live in staging[start, end). */
  private readonly staging = Buffer.allocUnsafeSlow(STAGING_BYTES);
  private start = 0;
  private end = 0;
  private pendingOption: (Pending & { option: number }) | undefined;
  private pendingWrite: PendingWrite | undefined;
  private targetIsPayload = false;
  private backlog: Buffer[] = [];
  /** When the pending payload last grew (or its header came): the session times a stall from it. */
  private payloadProgressAt = 0;
  /** The pending payload needs a bigger buffer than the budget has left; next() yields nothing until it has. */
  waitingForBudget = false;

  constructor(private readonly pool: BufferPool, private readonly budget: ByteBudget) {}

  /** Since when (Date.now()) a WRITE payload has waited for bytes, or undefined when none is pending. */
  get payloadWaitingSince(): number | undefined {
    return this.pendingWrite === undefined ? undefined : this.payloadProgressAt;
  }

  /** Gives a payload from a `request` message back to the pool and the budget. */
  releasePayload(payload: Buffer): void {
    this.pool.release(payload);
    this.budget.give(payload.length);
  }

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
    if (write?.data !== undefined && write.filled < write.data.length && this.start === this.end) {
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
    if (this.targetIsPayload) {
      this.pendingWrite!.filled += count;
      this.payloadProgressAt = Date.now();
    } else this.end += count;
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
      if (decoded !== undefined || this.backlog.length === 0 || this.waitingForBudget) return decoded;
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
      this.pendingWrite = { request, data: undefined, filled: 0 };
      this.payloadProgressAt = Date.now();
    }
    const pending = this.pendingWrite;
    const length = pending.request.length;
    while (pending.filled < length) {
      if (this.available === 0) return undefined;
      if ((pending.data === undefined || pending.filled === pending.data.length) && !this.grow(pending)) return undefined;
      this.fill(pending as Pending);
      this.payloadProgressAt = Date.now();
    }
    this.pendingWrite = undefined;
    pending.request.payload = pending.data ?? Buffer.alloc(0);
    return { kind: 'request', request: pending.request };
  }

  /** A payload buffer with room for more bytes, from the budget; false (and waitingForBudget) when it has too little. */
  private grow(pending: PendingWrite): boolean {
    const length = pending.request.length;
    const old = pending.data;
    const capacity = Math.min(length, old === undefined ? payloadFirstBytes : old.length * 2);
    if (!this.budget.tryTake(capacity)) {
      this.waitingForBudget = true;
      return false;
    }
    this.waitingForBudget = false;
    const data = this.pool.acquire(capacity);
    if (old !== undefined) {
      old.copy(data, 0, 0, pending.filled);
      this.releasePayload(old);
    }
    pending.data = data;
    return true;
  }

  /** Gives back a half-read payload when the connection ends. */
  dispose(): void {
    if (this.pendingWrite?.data) this.releasePayload(this.pendingWrite.data);
    this.pendingWrite = undefined;
    this.waitingForBudget = false;
    this.backlog = [];
    this.start = 0;
    this.end = 0;
  }
}
