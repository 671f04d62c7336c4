// Link frames as the code sees them, and the encoder. One Frame type serves both
// directions: encodeFrame(frame) and FrameDecoder give back equal values.
//
// The JSON part of a frame is an envelope per type: a request is
// {"method","body"}, a response {"body"}, an error {"code","message"}, a hello
// {"protocolVersion","arrayId","heartbeatMs"}; pings and pongs carry no JSON.
// Payload buffers are written as they are, after the header: never copied.
// `payloadCrcs`: the CRC32C of each payload segment. A sender may give the ones
// it holds already (checked against those very bytes), and the encoder computes
// the rest; a decoded frame always has them, each checked.

import { crc32c } from '@node-rs/crc32';
import { TwinstoreError, assert } from '../errors.js';
import {
  BODY_BYTES_MAX, FRAME_MAGIC, FRAME_TYPE, HEADER_BYTES, PAYLOAD_BYTES_MAX, PAYLOAD_SEGMENTS_MAX, PROTOCOL_VERSION,
  REQUEST_ID_MAX, SEGMENT_ENTRY_BYTES, type ErrorBody, type HelloBody,
} from './protocol.js';

export type Frame =
  | { type: typeof FRAME_TYPE.HELLO; requestId: number; hello: HelloBody }
  | { type: typeof FRAME_TYPE.REQUEST; requestId: number; method: string; body: unknown; payload: Buffer[]; payloadCrcs?: readonly number[] }
  | { type: typeof FRAME_TYPE.RESPONSE; requestId: number; body: unknown; payload: Buffer[]; payloadCrcs?: readonly number[] }
  | { type: typeof FRAME_TYPE.ERROR; requestId: number; error: ErrorBody }
  | { type: typeof FRAME_TYPE.PING | typeof FRAME_TYPE.PONG; requestId: number };

/** The JSON envelope of a frame, or undefined for frames without JSON. */
function envelope(frame: Frame): unknown {
  switch (frame.type) {
    case FRAME_TYPE.HELLO:
      return frame.hello;
    case FRAME_TYPE.REQUEST:
      return { method: frame.method, body: frame.body };
    case FRAME_TYPE.RESPONSE:
      return { body: frame.body };
    case FRAME_TYPE.ERROR:
      return frame.error;
    default:
      return undefined;
  }
}

function payloadOf(frame: Frame): readonly Buffer[] {
  return frame.type === FRAME_TYPE.REQUEST || frame.type === FRAME_TYPE.RESPONSE ? frame.payload : [];
}

function knownCrcsOf(frame: Frame): readonly number[] | undefined {
  return frame.type === FRAME_TYPE.REQUEST || frame.type === FRAME_TYPE.RESPONSE ? frame.payloadCrcs : undefined;
}

function jsonText(value: unknown): string {
  if (value === undefined) return '';
  try {
    return JSON.stringify(value);
  } catch (error) {
    throw new TwinstoreError('INTERNAL', `a link frame body is not JSON: ${(error as Error).message}`, { cause: error });
  }
}

/**
 * The buffers to write for one frame, in order: header, segment table and JSON
 * in one new buffer, then the caller's payload buffers themselves (empty ones
 * are left out; the table still records them). Throws LINK_FRAME_TOO_LARGE past
 * the limits, before anything is written.
 */
export function encodeFrame(frame: Frame): Buffer[] {
  assert(Number.isSafeInteger(frame.requestId) && frame.requestId >= 0 && frame.requestId <= REQUEST_ID_MAX, 'request id is a safe integer');
  const text = jsonText(envelope(frame));
  const bodyBytes = Buffer.byteLength(text, 'utf8');
  const payload = payloadOf(frame);
  const payloadBytes = payload.reduce((sum, buffer) => sum + buffer.length, 0);
  if (bodyBytes > BODY_BYTES_MAX) {
    throw new TwinstoreError('LINK_FRAME_TOO_LARGE', `a link frame's JSON is ${bodyBytes} bytes, more than the ${BODY_BYTES_MAX}-byte maximum`);
  }
  if (payloadBytes > PAYLOAD_BYTES_MAX || payload.length > PAYLOAD_SEGMENTS_MAX) {
    throw new TwinstoreError('LINK_FRAME_TOO_LARGE', `a link frame's payload is ${payloadBytes} bytes in ${payload.length} buffers, more than the maximum of ${PAYLOAD_BYTES_MAX} bytes in ${PAYLOAD_SEGMENTS_MAX} buffers`);
  }
  const known = knownCrcsOf(frame);
  assert(known === undefined || known.length === payload.length, 'a payload CRC is given for every segment or for none');
  const tableBytes = payload.length * SEGMENT_ENTRY_BYTES;
  const head = Buffer.alloc(HEADER_BYTES + tableBytes + bodyBytes);
  payload.forEach((buffer, i) => {
    const at = HEADER_BYTES + i * SEGMENT_ENTRY_BYTES;
    head.writeUInt32BE(buffer.length, at);
    head.writeUInt32BE((known?.[i] ?? crc32c(buffer)) >>> 0, at + 4);
  });
  head.write(text, HEADER_BYTES + tableBytes, 'utf8');
  const dataCrc = crc32c(head.subarray(HEADER_BYTES));
  writeHeader(head, { type: frame.type, segments: payload.length, requestId: frame.requestId, bodyBytes, payloadBytes, dataCrc });
  return [head, ...payload.filter((buffer) => buffer.length > 0)];
}

interface HeaderFields {
  type: number;
  segments: number;
  requestId: number;
  bodyBytes: number;
  payloadBytes: number;
  dataCrc: number;
}

function writeHeader(head: Buffer, fields: HeaderFields): void {
  head.writeUInt32BE(FRAME_MAGIC, 0);
  head.writeUInt8(PROTOCOL_VERSION, 4);
  head.writeUInt8(fields.type, 5);
  head.writeUInt16BE(fields.segments, 6);
  head.writeUInt32BE(Math.floor(fields.requestId / 2 ** 32), 8);
  head.writeUInt32BE(fields.requestId >>> 0, 12);
  head.writeUInt32BE(fields.bodyBytes, 16);
  head.writeUInt32BE(fields.payloadBytes, 20);
  head.writeUInt32BE(fields.dataCrc >>> 0, 24);
  head.writeUInt32BE(crc32c(head.subarray(0, 28)) >>> 0, 28);
}
