// Goal: the link frame decoder yields exactly the frames that were sent, however
// the bytes are split, and refuses every malformed frame with a reason; the
// encoder writes the layout of docs/link-protocol.md and refuses frames over the
// limits. No sockets.
// Method: a stream of frames of every type is built byte by byte in the test
// (test/link/helpers.ts, from the documented layout, not with src/link's encoder),
// fed to FrameDecoder whole, split in two at every byte position, split in three
// at every pair of a sample of positions, and one byte at a time; every run must
// decode the same frames. The encoder's bytes are compared with the hand-built
// ones. Broken frames (magic, checksums, version, type, lengths, JSON) must each
// yield `fatal` and leave the decoder failed.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FrameDecoder, type Decoded } from '../../src/link/decoder.js';
import { encodeFrame, type Frame } from '../../src/link/frame.js';
import { BODY_BYTES_MAX, PAYLOAD_BYTES_MAX } from '../../src/link/protocol.js';
import { TwinstoreError } from '../../src/errors.js';
import { LINK_VERSION, TYPE, rawFrame, rawHello, rawRequest } from './helpers.js';
import { crc32c } from '@node-rs/crc32';

/** Each segment's CRC32C, as a decoded frame carries them. */
function crcs(...segments: Buffer[]): number[] {
  return segments.map((segment) => crc32c(segment) >>> 0);
}

const payloadA = Buffer.from('first segment');
const payloadB = Buffer.alloc(3000, 0x5a);

/** The hand-built stream and the frames it must decode to. */
const cases: Array<{ bytes: Buffer; frame: Frame }> = [
  { bytes: rawHello('site-a', 250), frame: { type: 1, requestId: 0, hello: { protocolVersion: LINK_VERSION, arrayId: 'site-a', heartbeatMs: 250 } } },
  {
    bytes: rawRequest(1, 'journal.read', { afterSeq: 41, bytesMax: 65536 }, [payloadA, Buffer.alloc(0), payloadB]),
    frame: { type: 2, requestId: 1, method: 'journal.read', body: { afterSeq: 41, bytesMax: 65536 }, payload: [payloadA, Buffer.alloc(0), payloadB], payloadCrcs: crcs(payloadA, Buffer.alloc(0), payloadB) },
  },
  { bytes: rawRequest(2 ** 40 + 7, 'status', null), frame: { type: 2, requestId: 2 ** 40 + 7, method: 'status', body: null, payload: [], payloadCrcs: [] } },
  { bytes: rawFrame({ type: TYPE.response, requestId: 1, json: { body: [1, 'two', { three: 3 }] }, segments: [payloadB] }), frame: { type: 3, requestId: 1, body: [1, 'two', { three: 3 }], payload: [payloadB], payloadCrcs: crcs(payloadB) } },
  { bytes: rawFrame({ type: TYPE.response, requestId: 9, json: {} }), frame: { type: 3, requestId: 9, body: undefined, payload: [], payloadCrcs: [] } },
  { bytes: rawFrame({ type: TYPE.error, requestId: 2, json: { code: 'VOLUME_NOT_FOUND', message: 'no volume ü' } }), frame: { type: 4, requestId: 2, error: { code: 'VOLUME_NOT_FOUND', message: 'no volume ü' } } },
  { bytes: rawFrame({ type: TYPE.ping, requestId: 0 }), frame: { type: 5, requestId: 0 } },
  { bytes: rawFrame({ type: TYPE.pong, requestId: 0 }), frame: { type: 6, requestId: 0 } },
];
const stream = Buffer.concat(cases.map((c) => c.bytes));
const expected = cases.map((c) => c.frame);

function drain(decoder: FrameDecoder, into: Decoded[]): void {
  for (let decoded = decoder.next(); decoded !== undefined; decoded = decoder.next()) {
    into.push(decoded);
    if (decoded.kind === 'fatal') return;
  }
}

function decodeChunks(chunks: Buffer[]): Decoded[] {
  const decoder = new FrameDecoder();
  const out: Decoded[] = [];
  for (const chunk of chunks) {
    decoder.push(chunk);
    drain(decoder, out);
    if (out.at(-1)?.kind === 'fatal') break;
  }
  assert.equal(decoder.buffered, 0, 'nothing left over');
  return out;
}

function frames(decoded: Decoded[]): Frame[] {
  return decoded.map((d) => {
    assert.equal(d.kind, 'frame', d.kind === 'fatal' ? d.reason : '');
    return (d as { frame: Frame }).frame;
  });
}

/** The frame with its last byte changed (a payload byte, when it has a payload). */
function flipLastByte(frame: Buffer): Buffer {
  frame[frame.length - 1] = frame[frame.length - 1]! ^ 0x01;
  return frame;
}

describe('frame decoder: split input', () => {
  test('the whole stream in one chunk', () => {
    assert.deepEqual(frames(decodeChunks([stream])), expected);
  });

  test(`split in two at every byte (${stream.length + 1} positions)`, () => {
    for (let at = 0; at <= stream.length; at++) {
      assert.deepEqual(frames(decodeChunks([stream.subarray(0, at), stream.subarray(at)])), expected, `split at ${at}`);
    }
  });

  test('split in three at a sample of position pairs', () => {
    const step = 37;
    for (let first = 0; first <= stream.length; first += step) {
      for (let second = first; second <= stream.length; second += step) {
        const chunks = [stream.subarray(0, first), stream.subarray(first, second), stream.subarray(second)];
        assert.deepEqual(frames(decodeChunks(chunks)), expected, `split at ${first} and ${second}`);
      }
    }
  });

  test('one byte at a time', () => {
    const chunks = Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1));
    assert.deepEqual(frames(decodeChunks(chunks)), expected);
  });

  test('a frame is yielded only when its last byte has arrived', () => {
    const bytes = cases[1]!.bytes;
    const decoder = new FrameDecoder();
    decoder.push(bytes.subarray(0, bytes.length - 1));
    assert.equal(decoder.next(), undefined);
    decoder.push(bytes.subarray(bytes.length - 1));
    assert.deepEqual(frames([decoder.next()!]), [cases[1]!.frame]);
    assert.equal(decoder.next(), undefined);
  });
});

describe('frame encoder', () => {
  test('writes the documented layout, payload buffers as they are', () => {
    for (const { bytes, frame } of cases) {
      const buffers = encodeFrame(frame);
      assert.deepEqual(Buffer.concat(buffers), bytes, `frame type ${frame.type}`);
      if ('payload' in frame) {
        const nonEmpty = frame.payload.filter((b) => b.length > 0);
        assert.equal(buffers.length, 1 + nonEmpty.length, 'header + table + JSON in one buffer, then the payload');
        nonEmpty.forEach((buffer, i) => assert.equal(buffers[i + 1], buffer, 'the very same Buffer object: not copied'));
      }
    }
  });

  test('sends the payload CRCs it is given as they are, and computes them when it is given none', () => {
    const segments = [Buffer.from('abc'), Buffer.alloc(0), Buffer.alloc(5000, 7)];
    const computed = Buffer.concat(encodeFrame({ type: 3, requestId: 4, body: null, payload: segments }));
    assert.deepEqual(computed, rawFrame({ type: TYPE.response, requestId: 4, json: { body: null }, segments }), 'computed CRCs: the documented layout');
    const given = [0x11111111, 0, 0x33333333];
    const head = encodeFrame({ type: 3, requestId: 4, body: null, payload: segments, payloadCrcs: given })[0]!;
    assert.deepEqual([0, 1, 2].map((i) => head.readUInt32BE(32 + 8 * i + 4)), given, 'the given CRCs, no pass over the bytes');
    assert.throws(() => encodeFrame({ type: 3, requestId: 4, body: null, payload: segments, payloadCrcs: [1] }), /a payload CRC is given for every segment or for none/);
  });

  test('refuses frames over the limits with LINK_FRAME_TOO_LARGE', () => {
    const tooLarge = (frame: Frame): void => assert.throws(() => encodeFrame(frame), (error: unknown) => error instanceof TwinstoreError && error.code === 'LINK_FRAME_TOO_LARGE');
    tooLarge({ type: 2, requestId: 1, method: 'm', body: 'x'.repeat(BODY_BYTES_MAX), payload: [] });
    tooLarge({ type: 3, requestId: 1, body: null, payload: [Buffer.alloc(PAYLOAD_BYTES_MAX), Buffer.alloc(1)] });
    tooLarge({ type: 3, requestId: 1, body: null, payload: Array.from({ length: 65536 }, () => Buffer.alloc(0)) });
    assert.doesNotThrow(() => encodeFrame({ type: 3, requestId: 1, body: null, payload: [Buffer.alloc(PAYLOAD_BYTES_MAX)] }));
  });
});

describe('frame decoder: malformed frames', () => {
  const good = rawRequest(5, 'm', { a: 1 }, [Buffer.from('abc')]);
  const malformed: Array<{ name: string; bytes: Buffer; reason: RegExp }> = [
    { name: 'bad magic', bytes: rawFrame({ type: TYPE.ping, magic: 0x47455420 }), reason: /bad magic 0x47455420/ },
    { name: 'bad header checksum', bytes: rawFrame({ type: TYPE.ping, breakHeaderCrc: true }), reason: /bad header checksum/ },
    { name: 'bad data checksum', bytes: rawRequest(5, 'm', {}, [Buffer.from('abc')]).fill(0x41, 32 + 8 + 14), reason: /bad data checksum/ },
    { name: 'bad data checksum (field)', bytes: rawFrame({ type: TYPE.request, requestId: 5, json: { method: 'm' }, breakDataCrc: true }), reason: /bad data checksum/ },
    { name: 'a flipped payload byte', bytes: flipLastByte(rawRequest(5, 'm', {}, [Buffer.from('abc'), Buffer.from('defg')])), reason: /bad checksum in payload segment 1 of 2 \(4 bytes\) of a request frame/ },
    { name: 'bad segment checksum (field)', bytes: rawFrame({ type: TYPE.response, requestId: 5, json: {}, segments: [Buffer.alloc(10), Buffer.alloc(0)], breakSegmentCrc: 0 }), reason: /bad checksum in payload segment 0 of 2/ },
    { name: 'other protocol version', bytes: rawFrame({ type: TYPE.ping, version: LINK_VERSION + 1 }), reason: new RegExp(`unsupported protocol version ${LINK_VERSION + 1}`) },
    { name: 'the previous protocol version', bytes: rawFrame({ type: TYPE.ping, version: 1 }), reason: /unsupported protocol version 1/ },
    { name: 'unknown frame type', bytes: rawFrame({ type: 9 }), reason: /unknown frame type 9/ },
    { name: 'oversize JSON length', bytes: rawFrame({ type: TYPE.request, requestId: 1, json: { method: 'm' }, bodyBytes: BODY_BYTES_MAX + 1 }), reason: /more than the 1048576-byte maximum/ },
    { name: 'oversize payload length', bytes: rawFrame({ type: TYPE.response, requestId: 1, json: {}, segments: [Buffer.alloc(1)], payloadBytes: PAYLOAD_BYTES_MAX + 1 }), reason: /more than the 67108864-byte maximum/ },
    { name: 'segments disagree with the payload length', bytes: rawFrame({ type: TYPE.response, requestId: 1, json: {}, segments: [Buffer.alloc(4)], payloadBytes: 3 }), reason: /add up to 4 bytes/ },
    { name: 'payload on a ping', bytes: rawFrame({ type: TYPE.ping, segments: [Buffer.alloc(1)] }), reason: /cannot carry a payload/ },
    { name: 'JSON on a pong', bytes: rawFrame({ type: TYPE.pong, json: {} }), reason: /cannot carry JSON/ },
    { name: 'JSON that does not parse', bytes: rawFrame({ type: TYPE.request, requestId: 1, jsonBytes: Buffer.from('{"method":') }), reason: /does not parse/ },
    { name: 'request without a method', bytes: rawFrame({ type: TYPE.request, requestId: 1, json: { body: 1 } }), reason: /no method/ },
    { name: 'request with id 0', bytes: rawRequest(0, 'm', {}), reason: /request id 0/ },
    { name: 'hello without an array id', bytes: rawFrame({ type: TYPE.hello, json: { protocolVersion: 1, heartbeatMs: 5 } }), reason: /hello frame lacks/ },
    { name: 'error without a code', bytes: rawFrame({ type: TYPE.error, requestId: 1, json: { message: 'x' } }), reason: /lacks code/ },
  ];

  for (const { name, bytes, reason } of malformed) {
    test(`${name}: fatal after the good frame before it, at every split`, () => {
      const both = Buffer.concat([good, bytes, good]);
      for (let at = 0; at <= both.length; at += at < good.length + 40 ? 1 : 97) {
        const out = decodeChunks([both.subarray(0, at), both.subarray(at)].filter((c) => c.length > 0));
        assert.equal(out.length, 2, `split at ${at}: one frame, then fatal`);
        assert.equal(out[0]!.kind, 'frame');
        const fatal = out[1]!;
        assert.ok(fatal.kind === 'fatal' && reason.test(fatal.reason), `split at ${at}: ${JSON.stringify(fatal)}`);
      }
    });
  }

  test('a failed decoder stays failed and drops later input', () => {
    const decoder = new FrameDecoder();
    decoder.push(rawFrame({ type: TYPE.ping, magic: 1 }));
    assert.equal(decoder.next()?.kind, 'fatal');
    decoder.push(good);
    assert.equal(decoder.next()?.kind, 'fatal');
    assert.equal(decoder.buffered, 0);
  });

  test('an oversize length is refused from the header alone, before any body arrives', () => {
    const decoder = new FrameDecoder();
    decoder.push(rawFrame({ type: TYPE.response, requestId: 1, json: {}, segments: [Buffer.alloc(1)], payloadBytes: 2 ** 32 - 1 }).subarray(0, 32));
    const decoded = decoder.next();
    assert.ok(decoded?.kind === 'fatal' && /maximum/.test(decoded.reason));
  });
});
