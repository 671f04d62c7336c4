// Incremental decoder for what an NBD client sends: the 4-byte client flags,
// then option frames (IHAVEOPT, option, length, data), then transmission
// requests (28-byte header, plus the payload of a WRITE). It accepts input split
// at any byte, bounds every length, and reads WRITE payloads straight into a
// pooled buffer. A frame that makes the stream unreadable yields `fatal`.

import { ByteQueue } from './byte-queue.js';
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

export class NbdDecoder {
  private readonly queue = new ByteQueue();
  private phase: Phase = 'client-flags';
  private readonly header = Buffer.alloc(requestHeaderBytes);
  private pendingOption: { option: number; data: Buffer; filled: number } | undefined;
  private pendingWrite: { request: NbdRequest; payload: Buffer; filled: number } | undefined;

  constructor(private readonly pool: BufferPool) {}

  push(chunk: Buffer): void {
    this.queue.push(chunk);
  }

  /** Bytes received but not yet decoded. */
  get buffered(): number {
    return this.queue.length;
  }

  enterTransmission(): void {
    this.phase = 'transmission';
  }

  /** The next complete message, or undefined until more bytes arrive. */
  next(): Decoded | undefined {
    switch (this.phase) {
      case 'client-flags':
        return this.nextClientFlags();
      case 'options':
        return this.nextOption();
      case 'transmission':
        return this.nextRequest();
    }
  }

  private nextClientFlags(): Decoded | undefined {
    if (this.queue.length < 4) return undefined;
    this.queue.take(this.header.subarray(0, 4));
    this.phase = 'options';
    return { kind: 'client-flags', flags: this.header.readUInt32BE(0) };
  }

  private nextOption(): Decoded | undefined {
    if (this.pendingOption === undefined) {
      if (this.queue.length < optionHeaderBytes) return undefined;
      this.queue.take(this.header.subarray(0, optionHeaderBytes));
      if (this.header.readBigUInt64BE(0) !== IHAVEOPT) return { kind: 'fatal', reason: 'option without IHAVEOPT magic' };
      const option = this.header.readUInt32BE(8);
      const length = this.header.readUInt32BE(12);
      if (length > OPTION_BYTES_MAX) return { kind: 'fatal', reason: `option ${option} carries ${length} bytes, more than ${OPTION_BYTES_MAX}` };
      this.pendingOption = { option, data: Buffer.alloc(length), filled: 0 };
    }
    const pending = this.pendingOption;
    pending.filled += this.queue.take(pending.data, pending.filled);
    if (pending.filled < pending.data.length) return undefined;
    this.pendingOption = undefined;
    return { kind: 'option', option: pending.option, data: pending.data };
  }

  private nextRequest(): Decoded | undefined {
    if (this.pendingWrite === undefined) {
      if (this.queue.length < requestHeaderBytes) return undefined;
      this.queue.take(this.header);
      const magic = this.header.readUInt32BE(0);
      if (magic !== REQUEST_MAGIC) return { kind: 'fatal', reason: `bad request magic 0x${magic.toString(16)}` };
      const request: NbdRequest = {
        flags: this.header.readUInt16BE(4),
        type: this.header.readUInt16BE(6),
        cookieHigh: this.header.readUInt32BE(8),
        cookieLow: this.header.readUInt32BE(12),
        offset: Number(this.header.readBigUInt64BE(16)),
        length: this.header.readUInt32BE(24),
        payload: undefined,
      };
      if (request.type !== CMD.WRITE) return { kind: 'request', request };
      if (request.length > PAYLOAD_MAX) {
        return { kind: 'fatal', reason: `WRITE payload of ${request.length} bytes exceeds the ${PAYLOAD_MAX}-byte maximum` };
      }
      this.pendingWrite = { request, payload: this.pool.acquire(request.length), filled: 0 };
    }
    const pending = this.pendingWrite;
    pending.filled += this.queue.take(pending.payload, pending.filled);
    if (pending.filled < pending.payload.length) return undefined;
    this.pendingWrite = undefined;
    pending.request.payload = pending.payload;
    return { kind: 'request', request: pending.request };
  }

  /** Gives back a half-read payload when the connection ends. */
  dispose(): void {
    if (this.pendingWrite) this.pool.release(this.pendingWrite.payload);
    this.pendingWrite = undefined;
    this.queue.clear();
  }
}
