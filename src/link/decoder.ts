// Incremental decoder for link frames. It takes the chunks a socket hands out,
// accepts a frame split at any byte, and yields whole, checked frames. Every
// length is checked against its maximum before anything is allocated for it, the
// header checksum before any header field is believed, the checksum of the
// segment table and JSON before any segment is taken in, each segment's checksum
// as it completes, and the JSON envelope before a frame is yielded. The first
// bad frame yields `fatal` and the decoder stays failed: the stream cannot be
// trusted past it.
//
// Memory: queued chunks are what the socket delivered and the owner has not yet
// asked for (the owner pauses the socket to bound it); the frame being received
// holds at most BODY_BYTES_MAX + PAYLOAD_BYTES_MAX plus the segment table.
// Payload segments are borrowed from the buffer pool: a receiver takes hundreds
// of MB/s of records, and a fresh 1 MiB buffer per segment pays its allocation
// and page faults every time (buffer-pool.ts). Whoever ends up with a segment
// may give it back (a journal does once the record is applied) or drop it.

import { crc32c } from '@node-rs/crc32';
import { sharedPool, type BufferPool } from '../util/buffer-pool.js';
import type { Frame } from './frame.js';
import {
  BODY_BYTES_MAX, FRAME_MAGIC, FRAME_TYPE, FRAME_TYPE_NAMES, HEADER_BYTES, METHOD_CHARS_MAX, PAYLOAD_BYTES_MAX,
  PAYLOAD_SEGMENTS_MAX, PROTOCOL_VERSION, SEGMENT_ENTRY_BYTES, isFrameType, type FrameType,
} from './protocol.js';

export type Decoded = { kind: 'frame'; frame: Frame } | { kind: 'fatal'; reason: string };

interface Part {
  data: Buffer;
  filled: number;
}

interface Incoming {
  type: FrameType;
  requestId: number;
  payloadBytes: number;
  dataCrc: number;
  table: Part;
  body: Part;
  bodyDone: boolean;
  /** Segment lengths and CRCs, known once the table is in. */
  lengths: number[] | undefined;
  crcs: number[];
  segments: Buffer[];
  segment: Part | undefined;
  crc: number;
}

/** Every empty segment: nothing to borrow for it. */
const emptySegment = Buffer.alloc(0);

function part(bytes: number): Part {
  return { data: Buffer.allocUnsafe(bytes), filled: 0 };
}

export class FrameDecoder {
  constructor(private readonly pool: BufferPool = sharedPool) {}

  private chunks: Buffer[] = [];
  private queuedBytes = 0;
  private readonly header: Part = { data: Buffer.alloc(HEADER_BYTES), filled: 0 };
  private incoming: Incoming | undefined;
  private failure: string | undefined;

  /** Bytes pushed but not yet taken into a frame. */
  get buffered(): number {
    return this.queuedBytes;
  }

  /** Queues a chunk; the decoder keeps a reference, so the caller must not reuse it. */
  push(chunk: Buffer): void {
    if (chunk.length === 0 || this.failure !== undefined) return;
    this.chunks.push(chunk);
    this.queuedBytes += chunk.length;
  }

  /** The next complete frame, `fatal` for a bad one, or undefined until more bytes arrive. */
  next(): Decoded | undefined {
    if (this.failure !== undefined) return { kind: 'fatal', reason: this.failure };
    const result = this.step();
    if (typeof result === 'string') {
      this.failure = result;
      this.chunks = [];
      this.queuedBytes = 0;
      this.incoming = undefined;
      return { kind: 'fatal', reason: result };
    }
    return result === undefined ? undefined : { kind: 'frame', frame: result };
  }

  /** A frame, a failure reason, or undefined (need more bytes). */
  private step(): Frame | string | undefined {
    if (this.incoming === undefined) {
      if (!this.fill(this.header)) return undefined;
      const started = this.startFrame(this.header.data);
      if (typeof started === 'string') return started;
      this.header.filled = 0;
      this.incoming = started;
    }
    const incoming = this.incoming;
    const table = this.receiveTable(incoming);
    if (table !== true) return table === false ? undefined : table;
    const body = this.receiveBody(incoming);
    if (body !== true) return body === false ? undefined : body;
    const payload = this.receivePayload(incoming);
    if (payload !== true) return payload === false ? undefined : payload;
    this.incoming = undefined;
    return finishFrame(incoming);
  }

  /** Moves queued bytes into `target` until it is full; true when it is. */
  private fill(target: Part): boolean {
    while (target.filled < target.data.length && this.chunks.length > 0) {
      const chunk = this.chunks[0]!;
      const count = Math.min(chunk.length, target.data.length - target.filled);
      chunk.copy(target.data, target.filled, 0, count);
      target.filled += count;
      this.queuedBytes -= count;
      if (count === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(count);
    }
    return target.filled === target.data.length;
  }

  private startFrame(header: Buffer): Incoming | string {
    const magic = header.readUInt32BE(0);
    if (magic !== FRAME_MAGIC) return `bad magic 0x${magic.toString(16).padStart(8, '0')}`;
    if (crc32c(header.subarray(0, 28)) >>> 0 !== header.readUInt32BE(28)) return 'bad header checksum';
    const version = header.readUInt8(4);
    if (version !== PROTOCOL_VERSION) return `unsupported protocol version ${version} (this array speaks ${PROTOCOL_VERSION})`;
    const type = header.readUInt8(5);
    if (!isFrameType(type)) return `unknown frame type ${type}`;
    const segments = header.readUInt16BE(6);
    const requestId = header.readUInt32BE(8) * 2 ** 32 + header.readUInt32BE(12);
    const bodyBytes = header.readUInt32BE(16);
    const payloadBytes = header.readUInt32BE(20);
    const name = FRAME_TYPE_NAMES[type];
    if (!Number.isSafeInteger(requestId)) return `request id ${requestId} is too large`;
    if (bodyBytes > BODY_BYTES_MAX) return `a ${name} frame declares ${bodyBytes} bytes of JSON, more than the ${BODY_BYTES_MAX}-byte maximum`;
    if (payloadBytes > PAYLOAD_BYTES_MAX) return `a ${name} frame declares a ${payloadBytes}-byte payload, more than the ${PAYLOAD_BYTES_MAX}-byte maximum`;
    if (segments > PAYLOAD_SEGMENTS_MAX) return `a ${name} frame declares ${segments} payload segments`;
    if (segments === 0 && payloadBytes > 0) return `a ${name} frame declares payload bytes but no segments`;
    const carriesPayload = type === FRAME_TYPE.REQUEST || type === FRAME_TYPE.RESPONSE;
    if (!carriesPayload && segments > 0) return `a ${name} frame cannot carry a payload`;
    const carriesJson = type !== FRAME_TYPE.PING && type !== FRAME_TYPE.PONG;
    if (carriesJson !== bodyBytes > 0) return carriesJson ? `a ${name} frame has no JSON` : `a ${name} frame cannot carry JSON`;
    return {
      type, requestId, payloadBytes, dataCrc: header.readUInt32BE(24),
      table: part(segments * SEGMENT_ENTRY_BYTES), body: part(bodyBytes), bodyDone: false, lengths: undefined, crcs: [], segments: [], segment: undefined, crc: 0,
    };
  }

  /** True once the segment table is in and `lengths` is set; a string when the table disagrees with the header. */
  private receiveTable(incoming: Incoming): boolean | string {
    if (incoming.lengths !== undefined) return true;
    if (!this.fill(incoming.table)) return false;
    const lengths: number[] = [];
    for (let at = 0; at < incoming.table.data.length; at += SEGMENT_ENTRY_BYTES) {
      lengths.push(incoming.table.data.readUInt32BE(at));
      incoming.crcs.push(incoming.table.data.readUInt32BE(at + 4));
    }
    const sum = lengths.reduce((total, length) => total + length, 0);
    if (sum !== incoming.payloadBytes) return `payload segments add up to ${sum} bytes, but the header says ${incoming.payloadBytes}`;
    incoming.crc = crc32c(incoming.table.data);
    incoming.lengths = lengths;
    return true;
  }

  /** True once the JSON is in and the table and JSON match the header's checksum; a string when they do not. */
  private receiveBody(incoming: Incoming): boolean | string {
    if (incoming.bodyDone) return true;
    if (!this.fill(incoming.body)) return false;
    incoming.crc = crc32c(incoming.body.data, incoming.crc);
    if (incoming.crc >>> 0 !== incoming.dataCrc) return `bad data checksum in a ${FRAME_TYPE_NAMES[incoming.type]} frame`;
    incoming.bodyDone = true;
    return true;
  }

  /** True once every segment is in, each matching its checksum; a string for the first that does not. */
  private receivePayload(incoming: Incoming): boolean | string {
    const lengths = incoming.lengths!;
    for (;;) {
      const index = incoming.segments.length;
      if (incoming.segment === undefined) {
        const length = lengths[index];
        if (length === undefined) return true;
        incoming.segment = { data: length === 0 ? emptySegment : this.pool.acquire(length), filled: 0 };
      }
      if (!this.fill(incoming.segment)) return false;
      const data = incoming.segment.data;
      if (crc32c(data) >>> 0 !== incoming.crcs[index]) {
        return `bad checksum in payload segment ${index} of ${lengths.length} (${data.length} bytes) of a ${FRAME_TYPE_NAMES[incoming.type]} frame`;
      }
      incoming.segments.push(data);
      incoming.segment = undefined;
    }
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Checks the JSON envelope of a received frame and builds the Frame; a string says what is wrong. */
function finishFrame(incoming: Incoming): Frame | string {
  const { type, requestId } = incoming;
  const name = FRAME_TYPE_NAMES[type];
  if (type === FRAME_TYPE.PING || type === FRAME_TYPE.PONG) return { type, requestId };
  let json: unknown;
  try {
    json = JSON.parse(incoming.body.data.toString('utf8'));
  } catch {
    return `the JSON of a ${name} frame does not parse`;
  }
  if (!isObject(json)) return `the JSON of a ${name} frame is not an object`;
  switch (type) {
    case FRAME_TYPE.HELLO: {
      const { protocolVersion, arrayId, heartbeatMs } = json;
      if (!Number.isSafeInteger(protocolVersion) || typeof arrayId !== 'string' || arrayId.length === 0 || arrayId.length > 255
        || typeof heartbeatMs !== 'number' || !Number.isSafeInteger(heartbeatMs) || heartbeatMs < 1) return 'a hello frame lacks protocolVersion, arrayId or heartbeatMs';
      return { type, requestId, hello: { protocolVersion: protocolVersion as number, arrayId, heartbeatMs } };
    }
    case FRAME_TYPE.REQUEST: {
      const method = json.method;
      if (typeof method !== 'string' || method.length === 0 || method.length > METHOD_CHARS_MAX) return `a request frame has no method of 1-${METHOD_CHARS_MAX} characters`;
      if (requestId === 0) return 'a request frame has request id 0';
      return { type, requestId, method, body: json.body, payload: incoming.segments, payloadCrcs: incoming.crcs };
    }
    case FRAME_TYPE.RESPONSE:
      if (requestId === 0) return 'a response frame has request id 0';
      return { type, requestId, body: json.body, payload: incoming.segments, payloadCrcs: incoming.crcs };
    case FRAME_TYPE.ERROR: {
      const { code, message } = json;
      if (typeof code !== 'string' || typeof message !== 'string') return 'an error frame lacks code or message';
      return { type, requestId, error: { code, message } };
    }
  }
}
