// Goal: the NBD codec (decoder, option negotiation, request checks) does what
// the NBD spec (doc/proto.md) and docs/nbd.md demand, with no sockets involved.
// Method: client messages are built here byte by byte (not with the server's
// encoder), fed to NbdDecoder whole, split in two at every byte position and one
// byte at a time, and every decoding must equal the expected messages. Negotiation
// gets option frames against a fake in-memory export and its reply bytes are
// parsed back; checkRequest is driven through a table of requests and errors.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { NbdDecoder, type Decoded, type NbdRequest } from '../../src/nbd/decoder.js';
import { ExportRegistry, type BlockExport } from '../../src/nbd/exports.js';
import { Negotiation, type OptionOutcome } from '../../src/nbd/negotiation.js';
import {
  BASE_ALLOCATION, BASE_ALLOCATION_ID, BLOCK_MIN, BLOCK_PREFERRED, CMD, CMD_FLAG, IHAVEOPT, INFO, NBD_ERR, OPT,
  OPTION_BYTES_MAX, OPTIONS_PER_SESSION_MAX, PAYLOAD_MAX, REP, REP_MAGIC, REQUEST_MAGIC, TFLAG,
} from '../../src/nbd/protocol.js';
import { checkRequest } from '../../src/nbd/requests.js';
import { BufferPool } from '../../src/util/buffer-pool.js';
import { ByteBudget } from '../../src/nbd/budget.js';
import { softOpenFilesLimit } from '../../src/nbd/server.js';

const MiB = 2 ** 20;

// ---------------------------------------------------------------------------
// Client-side encoders, written from the spec independently of src/nbd/encoder.ts.

function u32(value: number): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeUInt32BE(value >>> 0, 0);
  return buffer;
}

function u16(value: number): Buffer {
  const buffer = Buffer.alloc(2);
  buffer.writeUInt16BE(value, 0);
  return buffer;
}

function optionFrame(option: number, data: Buffer = Buffer.alloc(0), magic: bigint = IHAVEOPT): Buffer {
  const header = Buffer.alloc(16);
  header.writeBigUInt64BE(magic, 0);
  header.writeUInt32BE(option >>> 0, 8);
  header.writeUInt32BE(data.length, 12);
  return Buffer.concat([header, data]);
}

/** INFO/GO data: u32 namelen, name, u16 n, n × u16. */
function infoData(name: string, requests: number[]): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  return Buffer.concat([u32(nameBytes.length), nameBytes, u16(requests.length), ...requests.map(u16)]);
}

/** META_CONTEXT data: u32 namelen, name, u32 n, n × (u32 len, query). */
function metaData(name: string, queries: string[]): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const encoded = queries.flatMap((q) => {
    const bytes = Buffer.from(q, 'utf8');
    return [u32(bytes.length), bytes];
  });
  return Buffer.concat([u32(nameBytes.length), nameBytes, u32(queries.length), ...encoded]);
}

interface RequestFields {
  flags?: number;
  type: number;
  cookie: bigint;
  offset: bigint;
  length: number;
  magic?: number;
}

function requestHeader(fields: RequestFields): Buffer {
  const header = Buffer.alloc(28);
  header.writeUInt32BE(fields.magic ?? REQUEST_MAGIC, 0);
  header.writeUInt16BE(fields.flags ?? 0, 4);
  header.writeUInt16BE(fields.type, 6);
  header.writeBigUInt64BE(fields.cookie, 8);
  header.writeBigUInt64BE(fields.offset, 16);
  header.writeUInt32BE(fields.length, 24);
  return header;
}

function pattern(length: number, seed: number): Buffer {
  const buffer = Buffer.alloc(length);
  for (let i = 0; i < length; i++) buffer[i] = (i * 31 + seed * 7 + (i >>> 8)) & 0xff;
  return buffer;
}

// ---------------------------------------------------------------------------
// Decoding harness: a decoded message as plain, comparable data.

type Plain =
  | { kind: 'client-flags'; flags: number }
  | { kind: 'option'; option: number; data: string }
  | { kind: 'request'; flags: number; type: number; cookie: string; offset: number; length: number; payload: string | null }
  | { kind: 'fatal'; reason: string };

function plain(message: Decoded): Plain {
  switch (message.kind) {
    case 'client-flags':
      return { kind: 'client-flags', flags: message.flags };
    case 'option':
      return { kind: 'option', option: message.option, data: message.data.toString('hex') };
    case 'fatal':
      return { kind: 'fatal', reason: message.reason };
    case 'request':
      return plainRequest(message.request);
  }
}

function plainRequest(request: NbdRequest): Plain {
  const cookie = ((BigInt(request.cookieHigh) << 32n) | BigInt(request.cookieLow)).toString(16);
  return {
    kind: 'request',
    flags: request.flags,
    type: request.type,
    cookie,
    offset: request.offset,
    length: request.length,
    payload: request.payload === undefined ? null : request.payload.toString('hex'),
  };
}

/**
 * Feeds the pieces one after another and drains the decoder after each, the way
 * the session does: transmission starts right after a GO or EXPORT_NAME frame,
 * with whatever bytes already follow it in the queue.
 */
function decodePieces(pieces: Buffer[]): { messages: Plain[]; buffered: number } {
  const decoder = new NbdDecoder(new BufferPool(), new ByteBudget(2 ** 30));
  const messages: Plain[] = [];
  for (const piece of pieces) {
    decoder.push(piece);
    for (let message = decoder.next(); message !== undefined; message = decoder.next()) {
      messages.push(plain(message));
      if (message.kind === 'fatal') return { messages, buffered: decoder.buffered };
      if (message.kind === 'option' && (message.option === OPT.GO || message.option === OPT.EXPORT_NAME)) decoder.enterTransmission();
    }
  }
  return { messages, buffered: decoder.buffered };
}

interface Stream {
  bytes: Buffer;
  expected: Plain[];
  /** Where each expected message ends in `bytes`. */
  ends: number[];
}

/** Builds a byte stream and the messages it must decode to, side by side. */
class StreamBuilder {
  private readonly parts: Buffer[] = [];
  private readonly expected: Plain[] = [];
  private readonly ends: number[] = [];
  private bytes = 0;

  private add(...parts: Buffer[]): void {
    for (const part of parts) {
      this.parts.push(part);
      this.bytes += part.length;
    }
    this.ends.push(this.bytes);
  }

  clientFlags(flags: number): this {
    this.add(u32(flags));
    this.expected.push({ kind: 'client-flags', flags });
    return this;
  }

  option(option: number, data: Buffer = Buffer.alloc(0)): this {
    this.add(optionFrame(option, data));
    this.expected.push({ kind: 'option', option, data: data.toString('hex') });
    return this;
  }

  request(fields: RequestFields, payload?: Buffer): this {
    this.add(requestHeader(fields), ...(payload ? [payload] : []));
    this.expected.push({
      kind: 'request',
      flags: fields.flags ?? 0,
      type: fields.type,
      cookie: fields.cookie.toString(16),
      offset: Number(fields.offset),
      length: fields.length,
      payload: fields.type === CMD.WRITE ? (payload ?? Buffer.alloc(0)).toString('hex') : null,
    });
    return this;
  }

  build(): Stream {
    return { bytes: Buffer.concat(this.parts), expected: this.expected, ends: this.ends };
  }
}

/** Every option a client may send, then GO and one of every request (a WRITE with its payload). */
function goSessionStream(): Stream {
  return new StreamBuilder()
    .clientFlags(0x3)
    .option(OPT.STRUCTURED_REPLY)
    .option(OPT.LIST)
    .option(OPT.STARTTLS)
    .option(OPT.INFO, infoData('vol1', [INFO.NAME, INFO.DESCRIPTION, INFO.BLOCK_SIZE]))
    .option(OPT.LIST_META_CONTEXT, metaData('vol1', []))
    .option(OPT.LIST_META_CONTEXT, metaData('vol1', ['base:']))
    .option(OPT.SET_META_CONTEXT, metaData('vol1', [BASE_ALLOCATION, 'qemu:dirty-bitmap:x']))
    .option(99, Buffer.from('unknown'))
    .option(OPT.GO, infoData('vol1', [INFO.BLOCK_SIZE]))
    .request({ type: CMD.READ, flags: CMD_FLAG.DF, cookie: 0x0102030405060708n, offset: 4096n, length: 65536 })
    .request({ type: CMD.WRITE, flags: CMD_FLAG.FUA, cookie: 0xfffffffffffffffen, offset: 2n ** 40n, length: 1536 }, pattern(1536, 1))
    .request({ type: CMD.FLUSH, cookie: 3n, offset: 0n, length: 0 })
    .request({ type: CMD.TRIM, cookie: 4n, offset: BigInt(MiB), length: MiB })
    .request({ type: CMD.WRITE_ZEROES, flags: CMD_FLAG.NO_HOLE | CMD_FLAG.FAST_ZERO, cookie: 5n, offset: 8192n, length: 4096 })
    .request({ type: CMD.BLOCK_STATUS, flags: CMD_FLAG.REQ_ONE, cookie: 6n, offset: 0n, length: 0xfffffe00 })
    .request({ type: CMD.WRITE, cookie: 7n, offset: 512n, length: 0 })
    .request({ type: CMD.WRITE, cookie: 8n, offset: 0n, length: 512 }, pattern(512, 2))
    .request({ type: CMD.CACHE, cookie: 9n, offset: 0n, length: 4096 })
    .request({ type: CMD.DISC, cookie: 10n, offset: 0n, length: 0 })
    .build();
}

/** The old way in: no fixed newstyle, EXPORT_NAME, then requests. */
function exportNameSessionStream(): Stream {
  return new StreamBuilder()
    .clientFlags(0)
    .option(OPT.EXPORT_NAME, Buffer.from('vol1'))
    .request({ type: CMD.WRITE, cookie: 1n, offset: 0n, length: 4096 }, pattern(4096, 3))
    .request({ type: CMD.READ, cookie: 2n, offset: 0n, length: 4096 })
    .request({ type: CMD.DISC, cookie: 3n, offset: 0n, length: 0 })
    .build();
}

describe('NbdDecoder', () => {
  const streams: Array<[string, Stream]> = [
    ['GO session with every option and request', goSessionStream()],
    ['EXPORT_NAME session', exportNameSessionStream()],
  ];

  for (const [label, stream] of streams) {
    test(`${label}: decodes whole`, () => {
      const { messages, buffered } = decodePieces([stream.bytes]);
      assert.deepEqual(messages, stream.expected);
      assert.equal(buffered, 0);
    });

    test(`${label}: split in two at every byte position`, () => {
      for (let at = 0; at <= stream.bytes.length; at++) {
        const { messages, buffered } = decodePieces([stream.bytes.subarray(0, at), stream.bytes.subarray(at)]);
        assert.deepEqual(messages, stream.expected, `split at byte ${at} of ${stream.bytes.length}`);
        assert.equal(buffered, 0, `split at byte ${at}`);
      }
    });

    test(`${label}: one byte at a time`, () => {
      const pieces = [...stream.bytes].map((byte) => Buffer.from([byte]));
      const { messages, buffered } = decodePieces(pieces);
      assert.deepEqual(messages, stream.expected);
      assert.equal(buffered, 0);
    });
  }

  test('a message is returned exactly when its last byte arrives', () => {
    const stream = goSessionStream();
    const decoder = new NbdDecoder(new BufferPool(), new ByteBudget(2 ** 30));
    let decoded = 0;
    for (let i = 0; i < stream.bytes.length; i++) {
      decoder.push(stream.bytes.subarray(i, i + 1));
      const message = decoder.next();
      if (message === undefined) continue;
      assert.equal(i + 1, stream.ends[decoded], `message ${decoded} completed at byte ${i}`);
      assert.deepEqual(plain(message), stream.expected[decoded]);
      if (message.kind === 'option' && message.option === OPT.GO) decoder.enterTransmission();
      decoded += 1;
      assert.equal(decoder.next(), undefined, 'at most one message completes per byte');
    }
    assert.equal(decoded, stream.expected.length);
  });

  test('an option header without the IHAVEOPT magic is fatal', () => {
    const bytes = Buffer.concat([u32(1), optionFrame(OPT.LIST, Buffer.alloc(0), 0x49484156454f5055n)]);
    for (const pieces of [[bytes], [...bytes].map((b) => Buffer.from([b]))]) {
      const { messages } = decodePieces(pieces);
      assert.equal(messages.length, 2);
      assert.deepEqual(messages[0], { kind: 'client-flags', flags: 1 });
      assert.equal(messages[1]?.kind, 'fatal');
    }
  });

  test('an option longer than OPTION_BYTES_MAX is fatal as soon as its header arrives', () => {
    const header = optionFrame(OPT.GO).subarray(0, 16);
    header.writeUInt32BE(OPTION_BYTES_MAX + 1, 12);
    const { messages } = decodePieces([u32(1), header]);
    assert.equal(messages[1]?.kind, 'fatal');
    assert.match((messages[1] as { reason: string }).reason, new RegExp(String(OPTION_BYTES_MAX + 1)));
  });

  test('an option of exactly OPTION_BYTES_MAX is read whole', () => {
    const data = pattern(OPTION_BYTES_MAX, 4);
    const { messages, buffered } = decodePieces([u32(1), optionFrame(77, data)]);
    assert.deepEqual(messages, [{ kind: 'client-flags', flags: 1 }, { kind: 'option', option: 77, data: data.toString('hex') }]);
    assert.equal(buffered, 0);
  });

  test('a request with a bad magic is fatal, including the reserved old values', () => {
    for (const magic of [0x12560953, 0x25609514, 0x67446698, 0]) {
      const decoder = new NbdDecoder(new BufferPool(), new ByteBudget(2 ** 30));
      decoder.enterTransmission();
      decoder.push(requestHeader({ magic, type: CMD.READ, cookie: 1n, offset: 0n, length: 512 }));
      assert.equal(decoder.next()?.kind, 'fatal', `magic 0x${magic.toString(16)}`);
    }
  });

  test('a WRITE payload above PAYLOAD_MAX is fatal at the header; PAYLOAD_MAX itself waits for its payload', () => {
    const over = new NbdDecoder(new BufferPool(), new ByteBudget(2 ** 30));
    over.enterTransmission();
    over.push(requestHeader({ type: CMD.WRITE, cookie: 1n, offset: 0n, length: PAYLOAD_MAX + 1 }));
    const fatal = over.next();
    assert.equal(fatal?.kind, 'fatal');
    assert.match((fatal as { reason: string }).reason, /WRITE payload/);

    const atMax = new NbdDecoder(new BufferPool(), new ByteBudget(2 ** 30));
    atMax.enterTransmission();
    atMax.push(requestHeader({ type: CMD.WRITE, cookie: 1n, offset: 0n, length: PAYLOAD_MAX }));
    atMax.push(Buffer.alloc(4096, 0xab));
    assert.equal(atMax.next(), undefined);
    assert.equal(atMax.buffered, 0, 'the partial payload was taken into the pooled buffer');
    atMax.dispose();
  });

  test('a WRITE payload takes budget only as its bytes arrive, waits when the budget is spent, and gives it all back', () => {
    const budget = new ByteBudget(8 * MiB);
    const decoder = new NbdDecoder(new BufferPool(), budget);
    decoder.enterTransmission();
    decoder.push(requestHeader({ type: CMD.WRITE, cookie: 1n, offset: 0n, length: 3 * MiB }));
    assert.equal(decoder.next(), undefined);
    assert.equal(budget.used, 0, 'a header alone holds no payload buffer');
    assert.notEqual(decoder.payloadWaitingSince, undefined, 'the payload is pending');
    const data = pattern(3 * MiB, 9);
    decoder.push(data.subarray(0, 4096));
    assert.equal(decoder.next(), undefined);
    assert.equal(budget.used, MiB, 'the first bytes take the first 1 MiB buffer');
    assert.ok(budget.tryTake(4 * MiB), 'someone else takes most of what is left');
    decoder.push(data.subarray(4096));
    assert.equal(decoder.next(), undefined);
    assert.equal(decoder.waitingForBudget, true, 'growing to 2 MiB would pass the large share (6 MiB)');
    budget.give(4 * MiB);
    const message = decoder.next();
    assert.equal(message?.kind, 'request');
    const payload = (message as { request: NbdRequest }).request.payload!;
    assert.ok(payload.equals(data), 'the grown payload holds every byte in order');
    assert.equal(budget.used, 3 * MiB, 'only the final buffer stays charged');
    decoder.releasePayload(payload);
    assert.equal(budget.used, 0);
    assert.equal(decoder.payloadWaitingSince, undefined);
  });

  test('softOpenFilesLimit reads the soft limit from /proc/self/limits', () => {
    const text = 'Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n';
    assert.equal(softOpenFilesLimit(text), 1024);
    assert.equal(softOpenFilesLimit('Max open files            unlimited            unlimited            files\n'), undefined);
    assert.ok((softOpenFilesLimit() ?? 1) > 0);
  });

  test('a READ longer than PAYLOAD_MAX decodes (it is refused later with EINVAL, not by dropping the stream)', () => {
    const decoder = new NbdDecoder(new BufferPool(), new ByteBudget(2 ** 30));
    decoder.enterTransmission();
    decoder.push(requestHeader({ type: CMD.READ, cookie: 1n, offset: 0n, length: 0xffffffff }));
    const message = decoder.next();
    assert.equal(message?.kind, 'request');
    assert.equal((message as { request: NbdRequest }).request.length, 0xffffffff);
  });
});

// ---------------------------------------------------------------------------
// Negotiation against a fake export.

function fakeExport(fields: Partial<Pick<BlockExport, 'name' | 'sizeBytes' | 'readOnly' | 'description'>> = {}): BlockExport {
  const unused = (): never => {
    throw new Error('negotiation never does I/O');
  };
  return {
    name: fields.name ?? 'vol1',
    sizeBytes: fields.sizeBytes ?? 64 * MiB,
    readOnly: fields.readOnly ?? false,
    description: fields.description ?? 'a test volume',
    read: unused,
    write: unused,
    writeZeroes: unused,
    trim: unused,
    zeroIsFast: unused,
    flush: unused,
    blockStatus: unused,
  };
}

function registryWith(...exports: BlockExport[]): ExportRegistry {
  const registry = new ExportRegistry();
  for (const exported of exports) registry.set(exported);
  return registry;
}

interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

/** Parses the concatenated option replies, checking each header's magic and length. */
function parseReplies(buffers: Buffer[]): OptionReply[] {
  const bytes = Buffer.concat(buffers);
  const replies: OptionReply[] = [];
  let at = 0;
  while (at < bytes.length) {
    assert.ok(at + 20 <= bytes.length, 'a whole reply header');
    assert.equal(bytes.readBigUInt64BE(at), REP_MAGIC, 'option reply magic');
    const length = bytes.readUInt32BE(at + 16);
    assert.ok(at + 20 + length <= bytes.length, 'reply data within the bytes');
    replies.push({ option: bytes.readUInt32BE(at + 8), type: bytes.readUInt32BE(at + 12), data: bytes.subarray(at + 20, at + 20 + length) });
    at += 20 + length;
  }
  return replies;
}

function types(outcome: OptionOutcome): number[] {
  return parseReplies(outcome.replies).map((r) => r.type);
}

/** Asserts a single error reply of `type` that echoes the option and carries a message. */
function assertError(outcome: OptionOutcome, option: number, type: number): void {
  const replies = parseReplies(outcome.replies);
  assert.equal(replies.length, 1, `one reply, got types ${replies.map((r) => r.type.toString(16))}`);
  assert.equal(replies[0]!.option, option);
  assert.equal(replies[0]!.type, type, `reply 0x${replies[0]!.type.toString(16)}, expected 0x${type.toString(16)}`);
  assert.ok(replies[0]!.data.length > 0, 'error replies carry a message');
  assert.deepEqual(outcome.next, { step: 'continue' });
}

function infoExportOf(outcome: OptionOutcome): { sizeBytes: bigint; flags: number } {
  const info = parseReplies(outcome.replies).find((r) => r.type === REP.INFO && r.data.readUInt16BE(0) === INFO.EXPORT);
  assert.ok(info, 'an INFO_EXPORT reply');
  assert.equal(info.data.length, 12);
  return { sizeBytes: info.data.readBigUInt64BE(2), flags: info.data.readUInt16BE(10) };
}

function started(registry: ExportRegistry, flags = 0x3): Negotiation {
  const negotiation = new Negotiation(registry);
  assert.deepEqual(negotiation.clientFlags(flags), { step: 'continue' });
  return negotiation;
}

describe('Negotiation', () => {
  test('client flags: known bits continue, any unknown bit closes without grace', () => {
    for (const flags of [0, 1, 2, 3]) assert.deepEqual(new Negotiation(registryWith()).clientFlags(flags), { step: 'continue' });
    for (const flags of [0x4, 0x80000000, 0x7]) {
      const next = new Negotiation(registryWith()).clientFlags(flags);
      assert.equal(next.step, 'close');
      assert.equal((next as { graceful: boolean }).graceful, false);
    }
  });

  test('an unknown option gets ERR_UNSUP and the session goes on to GO', () => {
    const negotiation = started(registryWith(fakeExport()));
    for (const option of [0, 4, 11, 99, 0xffffffff]) assertError(negotiation.option(option, Buffer.from('ignored data')), option, REP.ERR_UNSUP);
    const go = negotiation.option(OPT.GO, infoData('vol1', []));
    assert.equal(go.next.step, 'transmission');
    assert.deepEqual(types(go).at(-1), REP.ACK);
  });

  test('STARTTLS gets ERR_POLICY (ERR_INVALID when it carries data)', () => {
    const negotiation = started(registryWith(fakeExport()));
    assertError(negotiation.option(OPT.STARTTLS, Buffer.alloc(0)), OPT.STARTTLS, REP.ERR_POLICY);
    assertError(negotiation.option(OPT.STARTTLS, Buffer.from([1])), OPT.STARTTLS, REP.ERR_INVALID);
  });

  test('LIST with data is ERR_INVALID; without, one SERVER entry per export then ACK', () => {
    const negotiation = started(registryWith(fakeExport({ name: 'vol2', description: 'second' }), fakeExport()));
    assertError(negotiation.option(OPT.LIST, Buffer.from([0])), OPT.LIST, REP.ERR_INVALID);
    const replies = parseReplies(negotiation.option(OPT.LIST, Buffer.alloc(0)).replies);
    assert.deepEqual(replies.map((r) => r.type), [REP.SERVER, REP.SERVER, REP.ACK]);
    const names = replies.slice(0, 2).map((r) => {
      const nameBytes = r.data.readUInt32BE(0);
      return [r.data.toString('utf8', 4, 4 + nameBytes), r.data.toString('utf8', 4 + nameBytes)];
    });
    assert.deepEqual(names, [['vol1', 'a test volume'], ['vol2', 'second']]);
  });

  test('STRUCTURED_REPLY with data is ERR_INVALID and does not enable structured replies', () => {
    const negotiation = started(registryWith(fakeExport()));
    assertError(negotiation.option(OPT.STRUCTURED_REPLY, Buffer.from([0])), OPT.STRUCTURED_REPLY, REP.ERR_INVALID);
    const go = negotiation.option(OPT.GO, infoData('vol1', []));
    assert.equal((go.next as { structured: boolean }).structured, false);
    assert.equal(infoExportOf(go).flags & TFLAG.SEND_DF, 0, 'DF is only advertised with structured replies');
  });

  test('ABORT is acknowledged, data or not, and closes gracefully', () => {
    for (const data of [Buffer.alloc(0), Buffer.from('bye')]) {
      const outcome = started(registryWith()).option(OPT.ABORT, data);
      assert.deepEqual(types(outcome), [REP.ACK]);
      assert.equal(outcome.next.step, 'close');
      assert.equal((outcome.next as { graceful: boolean }).graceful, true);
    }
  });

  for (const option of [OPT.INFO, OPT.GO]) {
    const label = option === OPT.INFO ? 'INFO' : 'GO';

    test(`${label} with lengths that do not add up is ERR_INVALID`, () => {
      const good = infoData('vol1', [INFO.BLOCK_SIZE]);
      const nameTooLong = Buffer.from(good);
      nameTooLong.writeUInt32BE(200, 0);
      const countTooHigh = Buffer.from(good);
      countTooHigh.writeUInt16BE(2, 8);
      const cases: Array<[string, Buffer]> = [
        ['empty', Buffer.alloc(0)],
        ['shorter than 6 bytes', Buffer.from([0, 0, 0, 0, 0])],
        ['name length overruns', nameTooLong],
        ['count overruns', countTooHigh],
        ['one trailing byte', Buffer.concat([good, Buffer.from([0])])],
        ['one byte short', good.subarray(0, good.length - 1)],
        ['name longer than 4096 bytes', infoData('n'.repeat(4097), [])],
      ];
      const negotiation = started(registryWith(fakeExport()));
      for (const [what, data] of cases) {
        const outcome = negotiation.option(option, data);
        assert.deepEqual(types(outcome), [REP.ERR_INVALID], what);
        assert.deepEqual(outcome.next, { step: 'continue' }, what);
      }
    });

    test(`${label} for an unknown export is ERR_UNKNOWN with no INFO replies`, () => {
      const negotiation = started(registryWith(fakeExport()));
      assertError(negotiation.option(option, infoData('nope', [INFO.NAME])), option, REP.ERR_UNKNOWN);
      assertError(negotiation.option(option, infoData('', [])), option, REP.ERR_UNKNOWN);
    });
  }

  test('INFO answers EXPORT, the requested NAME and DESCRIPTION, BLOCK_SIZE, ACK, and stays in negotiation', () => {
    const negotiation = started(registryWith(fakeExport({ sizeBytes: 5 * MiB })));
    const outcome = negotiation.option(OPT.INFO, infoData('vol1', [INFO.NAME, INFO.DESCRIPTION, INFO.BLOCK_SIZE, 0x7777]));
    assert.deepEqual(outcome.next, { step: 'continue' });
    const replies = parseReplies(outcome.replies);
    assert.ok(replies.every((r) => r.option === OPT.INFO));
    assert.equal(replies.at(-1)?.type, REP.ACK);
    const infos = new Map(replies.filter((r) => r.type === REP.INFO).map((r) => [r.data.readUInt16BE(0), r.data.subarray(2)]));
    assert.deepEqual([...infos.keys()].sort(), [INFO.EXPORT, INFO.NAME, INFO.DESCRIPTION, INFO.BLOCK_SIZE].sort());
    assert.equal(infos.get(INFO.NAME)?.toString('utf8'), 'vol1');
    assert.equal(infos.get(INFO.DESCRIPTION)?.toString('utf8'), 'a test volume');
    const blockSize = infos.get(INFO.BLOCK_SIZE)!;
    assert.equal(blockSize.length, 12);
    assert.deepEqual([blockSize.readUInt32BE(0), blockSize.readUInt32BE(4), blockSize.readUInt32BE(8)], [BLOCK_MIN, BLOCK_PREFERRED, PAYLOAD_MAX]);
    const { sizeBytes, flags } = infoExportOf(outcome);
    assert.equal(sizeBytes, BigInt(5 * MiB));
    assert.equal(flags & TFLAG.HAS_FLAGS, TFLAG.HAS_FLAGS);
    assert.equal(flags & TFLAG.READ_ONLY, 0);
  });

  test('GO on a read-only export advertises READ_ONLY', () => {
    const go = started(registryWith(fakeExport({ readOnly: true }))).option(OPT.GO, infoData('vol1', []));
    assert.equal(infoExportOf(go).flags & TFLAG.READ_ONLY, TFLAG.READ_ONLY);
    assert.equal((go.next as { exported: BlockExport }).exported.readOnly, true);
  });

  test('SET_META_CONTEXT before STRUCTURED_REPLY is ERR_INVALID; after it, base:allocation gets an id and reaches GO', () => {
    const negotiation = started(registryWith(fakeExport()));
    assertError(negotiation.option(OPT.SET_META_CONTEXT, metaData('vol1', [BASE_ALLOCATION])), OPT.SET_META_CONTEXT, REP.ERR_INVALID);
    assert.deepEqual(types(negotiation.option(OPT.STRUCTURED_REPLY, Buffer.alloc(0))), [REP.ACK]);
    const set = parseReplies(negotiation.option(OPT.SET_META_CONTEXT, metaData('vol1', ['qemu:dirty-bitmap:a', BASE_ALLOCATION, 'base:'])).replies);
    assert.deepEqual(set.map((r) => r.type), [REP.META_CONTEXT, REP.ACK]);
    assert.equal(set[0]!.data.readUInt32BE(0), BASE_ALLOCATION_ID);
    assert.equal(set[0]!.data.toString('utf8', 4), BASE_ALLOCATION);
    const go = negotiation.option(OPT.GO, infoData('vol1', [INFO.BLOCK_SIZE]));
    assert.equal(go.next.step, 'transmission');
    assert.deepEqual({ ...go.next, exported: undefined }, { step: 'transmission', exported: undefined, structured: true, allocationContext: true });
    assert.equal(infoExportOf(go).flags & TFLAG.SEND_DF, TFLAG.SEND_DF);
  });

  test('each SET_META_CONTEXT replaces the selection, even when it fails', () => {
    const cases: Array<[string, Buffer]> = [
      ['zero queries', metaData('vol1', [])],
      ['unknown export', metaData('nope', [BASE_ALLOCATION])],
      ['query overrunning the option', metaData('vol1', [BASE_ALLOCATION]).subarray(0, 20)],
      ['only the base: wildcard, which SET ignores', metaData('vol1', ['base:'])],
    ];
    for (const [what, data] of cases) {
      const negotiation = started(registryWith(fakeExport()));
      negotiation.option(OPT.STRUCTURED_REPLY, Buffer.alloc(0));
      assert.deepEqual(types(negotiation.option(OPT.SET_META_CONTEXT, metaData('vol1', [BASE_ALLOCATION]))), [REP.META_CONTEXT, REP.ACK]);
      negotiation.option(OPT.SET_META_CONTEXT, data);
      const go = negotiation.option(OPT.GO, infoData('vol1', []));
      assert.equal((go.next as { allocationContext: boolean }).allocationContext, false, what);
    }
  });

  test('a context set for one export is not active on another', () => {
    const negotiation = started(registryWith(fakeExport(), fakeExport({ name: 'vol2' })));
    negotiation.option(OPT.STRUCTURED_REPLY, Buffer.alloc(0));
    negotiation.option(OPT.SET_META_CONTEXT, metaData('vol1', [BASE_ALLOCATION]));
    const go = negotiation.option(OPT.GO, infoData('vol2', []));
    assert.equal((go.next as { allocationContext: boolean }).allocationContext, false);
  });

  test('LIST_META_CONTEXT with no queries, or base:, lists base:allocation with id 0; other namespaces list nothing', () => {
    const negotiation = started(registryWith(fakeExport()));
    for (const queries of [[], ['base:'], [BASE_ALLOCATION]]) {
      const replies = parseReplies(negotiation.option(OPT.LIST_META_CONTEXT, metaData('vol1', queries)).replies);
      assert.deepEqual(replies.map((r) => r.type), [REP.META_CONTEXT, REP.ACK], JSON.stringify(queries));
      assert.equal(replies[0]!.data.readUInt32BE(0), 0);
      assert.equal(replies[0]!.data.toString('utf8', 4), BASE_ALLOCATION);
    }
    assert.deepEqual(types(negotiation.option(OPT.LIST_META_CONTEXT, metaData('vol1', ['qemu:allocation-depth']))), [REP.ACK]);
    assertError(negotiation.option(OPT.LIST_META_CONTEXT, metaData('nope', [])), OPT.LIST_META_CONTEXT, REP.ERR_UNKNOWN);
    const overrun = metaData('vol1', [BASE_ALLOCATION]);
    overrun.writeUInt32BE(1000, 12);
    assertError(negotiation.option(OPT.LIST_META_CONTEXT, overrun), OPT.LIST_META_CONTEXT, REP.ERR_INVALID);
    assertError(negotiation.option(OPT.LIST_META_CONTEXT, Buffer.concat([metaData('vol1', []), Buffer.from([0])])), OPT.LIST_META_CONTEXT, REP.ERR_INVALID);
  });

  test('EXPORT_NAME for an unknown export closes without a reply', () => {
    const outcome = started(registryWith(fakeExport())).option(OPT.EXPORT_NAME, Buffer.from('nope'));
    assert.deepEqual(outcome.replies, []);
    assert.equal(outcome.next.step, 'close');
    assert.equal((outcome.next as { graceful: boolean }).graceful, false);
  });

  test('EXPORT_NAME replies size, flags and 124 zero bytes, or no zeroes when NO_ZEROES was negotiated', () => {
    for (const [clientFlags, replyBytes] of [[0x1, 134], [0x3, 10]] as const) {
      const outcome = started(registryWith(fakeExport({ sizeBytes: 3 * MiB })), clientFlags).option(OPT.EXPORT_NAME, Buffer.from('vol1'));
      const reply = Buffer.concat(outcome.replies);
      assert.equal(reply.length, replyBytes);
      assert.equal(reply.readBigUInt64BE(0), BigInt(3 * MiB));
      assert.equal(reply.readUInt16BE(8) & TFLAG.HAS_FLAGS, TFLAG.HAS_FLAGS);
      assert.ok(reply.subarray(10).every((b) => b === 0), 'zero padding');
      assert.deepEqual({ ...outcome.next, exported: undefined }, { step: 'transmission', exported: undefined, structured: false, allocationContext: false });
    }
  });

  test('EXPORT_NAME after STRUCTURED_REPLY and SET_META_CONTEXT keeps what was negotiated', () => {
    const negotiation = started(registryWith(fakeExport()));
    negotiation.option(OPT.STRUCTURED_REPLY, Buffer.alloc(0));
    negotiation.option(OPT.SET_META_CONTEXT, metaData('vol1', [BASE_ALLOCATION]));
    const outcome = negotiation.option(OPT.EXPORT_NAME, Buffer.from('vol1'));
    assert.deepEqual({ ...outcome.next, exported: undefined }, { step: 'transmission', exported: undefined, structured: true, allocationContext: true });
    assert.equal(Buffer.concat(outcome.replies).readUInt16BE(8) & TFLAG.SEND_DF, TFLAG.SEND_DF);
  });

  test(`more than ${OPTIONS_PER_SESSION_MAX} options close the session`, () => {
    const negotiation = started(registryWith(fakeExport()));
    for (let i = 0; i < OPTIONS_PER_SESSION_MAX; i++) assert.equal(negotiation.option(99, Buffer.alloc(0)).next.step, 'continue');
    const last = negotiation.option(99, Buffer.alloc(0));
    assert.equal(last.next.step, 'close');
    assert.deepEqual(last.replies, []);
  });
});

// ---------------------------------------------------------------------------
// checkRequest: one row per rule of §1.13.

interface Case {
  label: string;
  type: number;
  flags?: number;
  offset: number;
  length: number;
  readOnly?: boolean;
  allocationContext?: boolean;
  structured?: boolean;
  error: number;
}

const sizeBytes = 64 * MiB;

const cases: Case[] = [
  { label: 'READ inside', type: CMD.READ, offset: 4096, length: 4096, error: 0 },
  { label: 'READ up to the last byte', type: CMD.READ, offset: sizeBytes - 512, length: 512, error: 0 },
  { label: 'READ with FUA', type: CMD.READ, flags: CMD_FLAG.FUA, offset: 0, length: 512, error: 0 },
  { label: 'READ past the end', type: CMD.READ, offset: sizeBytes - 512, length: 1024, error: NBD_ERR.EINVAL },
  { label: 'READ starting past the end', type: CMD.READ, offset: sizeBytes + 512, length: 0, error: NBD_ERR.EINVAL },
  { label: 'READ at offset 2^63', type: CMD.READ, offset: 2 ** 63, length: 512, error: NBD_ERR.EINVAL },
  { label: 'READ misaligned offset', type: CMD.READ, offset: 100, length: 512, error: NBD_ERR.EINVAL },
  { label: 'READ misaligned length', type: CMD.READ, offset: 0, length: 100, error: NBD_ERR.EINVAL },
  { label: 'READ above PAYLOAD_MAX', type: CMD.READ, offset: 0, length: PAYLOAD_MAX + 512, error: NBD_ERR.EINVAL },
  { label: 'READ with NO_HOLE', type: CMD.READ, flags: CMD_FLAG.NO_HOLE, offset: 0, length: 512, error: NBD_ERR.EINVAL },
  { label: 'READ with an unknown flag', type: CMD.READ, flags: 0x100, offset: 0, length: 512, error: NBD_ERR.EINVAL },
  { label: 'READ with DF, simple replies', type: CMD.READ, flags: CMD_FLAG.DF, offset: 0, length: 512, error: NBD_ERR.EINVAL },
  { label: 'READ with DF, structured replies', type: CMD.READ, flags: CMD_FLAG.DF, offset: 0, length: 512, structured: true, error: 0 },
  { label: 'READ on a read-only export', type: CMD.READ, offset: 0, length: 512, readOnly: true, error: 0 },
  { label: 'WRITE inside', type: CMD.WRITE, flags: CMD_FLAG.FUA, offset: 0, length: 4096, error: 0 },
  { label: 'WRITE past the end', type: CMD.WRITE, offset: sizeBytes, length: 512, error: NBD_ERR.ENOSPC },
  { label: 'WRITE straddling the end', type: CMD.WRITE, offset: sizeBytes - 512, length: 1024, error: NBD_ERR.ENOSPC },
  { label: 'WRITE misaligned', type: CMD.WRITE, offset: 512, length: 100, error: NBD_ERR.EINVAL },
  { label: 'WRITE with REQ_ONE', type: CMD.WRITE, flags: CMD_FLAG.REQ_ONE, offset: 0, length: 512, error: NBD_ERR.EINVAL },
  { label: 'WRITE on a read-only export', type: CMD.WRITE, offset: 0, length: 512, readOnly: true, error: NBD_ERR.EPERM },
  { label: 'TRIM on a read-only export', type: CMD.TRIM, offset: 0, length: 512, readOnly: true, error: NBD_ERR.EPERM },
  { label: 'WRITE_ZEROES on a read-only export', type: CMD.WRITE_ZEROES, offset: 0, length: 512, readOnly: true, error: NBD_ERR.EPERM },
  { label: 'TRIM past the end', type: CMD.TRIM, offset: sizeBytes - MiB, length: 2 * MiB, error: NBD_ERR.EINVAL },
  { label: 'WRITE_ZEROES past the end', type: CMD.WRITE_ZEROES, offset: sizeBytes - MiB, length: 2 * MiB, error: NBD_ERR.ENOSPC },
  { label: 'WRITE_ZEROES with NO_HOLE and FAST_ZERO', type: CMD.WRITE_ZEROES, flags: CMD_FLAG.NO_HOLE | CMD_FLAG.FAST_ZERO | CMD_FLAG.FUA, offset: 0, length: MiB, error: 0 },
  { label: 'WRITE_ZEROES with DF', type: CMD.WRITE_ZEROES, flags: CMD_FLAG.DF, offset: 0, length: MiB, error: NBD_ERR.EINVAL },
  { label: 'FLUSH', type: CMD.FLUSH, offset: 0, length: 0, error: 0 },
  { label: 'FLUSH with FUA', type: CMD.FLUSH, flags: CMD_FLAG.FUA, offset: 0, length: 0, error: 0 },
  { label: 'FLUSH with an offset', type: CMD.FLUSH, offset: 4096, length: 0, error: NBD_ERR.EINVAL },
  { label: 'FLUSH with a length', type: CMD.FLUSH, offset: 0, length: 4096, error: NBD_ERR.EINVAL },
  { label: 'FLUSH with FAST_ZERO', type: CMD.FLUSH, flags: CMD_FLAG.FAST_ZERO, offset: 0, length: 0, error: NBD_ERR.EINVAL },
  { label: 'CACHE inside', type: CMD.CACHE, offset: 0, length: MiB, error: 0 },
  { label: 'BLOCK_STATUS without a context', type: CMD.BLOCK_STATUS, offset: 0, length: 4096, error: NBD_ERR.EINVAL },
  { label: 'BLOCK_STATUS with base:allocation', type: CMD.BLOCK_STATUS, flags: CMD_FLAG.REQ_ONE, offset: 0, length: 4096, allocationContext: true, structured: true, error: 0 },
  { label: 'BLOCK_STATUS of length 0', type: CMD.BLOCK_STATUS, offset: 0, length: 0, allocationContext: true, structured: true, error: NBD_ERR.EINVAL },
  { label: 'BLOCK_STATUS past the end', type: CMD.BLOCK_STATUS, offset: sizeBytes, length: 512, allocationContext: true, structured: true, error: NBD_ERR.EINVAL },
  { label: 'unknown command 8', type: 8, offset: 0, length: 0, error: NBD_ERR.EINVAL },
  { label: 'unknown command 0xffff', type: 0xffff, offset: 0, length: 512, error: NBD_ERR.EINVAL },
];

describe('checkRequest', () => {
  for (const c of cases) {
    test(`${c.label} → ${c.error === 0 ? 'accepted' : `error ${c.error}`}`, () => {
      const request: NbdRequest = { flags: c.flags ?? 0, type: c.type, cookieHigh: 0, cookieLow: 1, offset: c.offset, length: c.length, payload: undefined };
      const verdict = checkRequest(request, fakeExport({ sizeBytes, readOnly: c.readOnly ?? false }), c.allocationContext ?? false, c.structured ?? false);
      assert.equal(verdict.error, c.error, verdict.message);
      if (c.error !== 0) assert.ok(verdict.message.length > 0, 'a refusal says why');
    });
  }
});
