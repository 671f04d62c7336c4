// Goal: a real `twinstore serve` answers malformed and out-of-range NBD traffic
// with the error codes docs/nbd.md gives (Commands), drops only the
// connection whose stream it cannot parse (with a log line), keeps serving every
// other session, and works with the clients people use: the kernel's way of talking
// (EXPORT_NAME or GO without info requests, simple replies) and libnbd with many
// requests in flight and several connections.
// Method: one array per test. libnbd's Python shell (nbdsh) with strict mode
// off sends requests libnbd would normally refuse; each script prints its
// observations as JSON and the assertions happen here. What libnbd cannot send
// at all (garbage, FLUSH with an offset, an oversized WRITE header, unknown
// options) goes through a raw node:net client that speaks the wire format
// byte by byte. Data is always checked by reading it back.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { test } from 'node:test';
import { createVolume, run, startArray, type RunningArray } from '../helpers/array.js';
import { ByteInbox } from '../helpers/byte-inbox.js';
import { CMD, CMD_FLAG, IHAVEOPT, INFO, NBDMAGIC, NBD_ERR, OPT, REP, REP_MAGIC, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC, REPLY_TYPE, TFLAG } from '../../src/nbd/protocol.js';

const MiB = 2 ** 20;
const volumeBytes = 64 * MiB;
const waitMsMax = 10_000;

// ---------------------------------------------------------------------------
// nbdsh: a Python prelude shared by every script.

const prelude = `
import json, struct, nbd

def pattern(n, seed):
    """n bytes, 512-byte sectors tagged with the seed and their index, so a misplaced sector shows."""
    return b"".join(struct.pack(">QQ", seed, s) + bytes([(seed + s) & 0xFF]) * 496 for s in range(n // 512))

def attempt(fn):
    """0 on success, else the errno libnbd reports; server says whether the server answered (not a client-side refusal)."""
    try:
        fn()
        return {"errno": 0, "server": True}
    except nbd.Error as e:
        return {"errno": e.errnum, "server": "command failed" in (e.string or "")}

def connect(uri, **settings):
    handle = nbd.NBD()
    for name, value in settings.items():
        getattr(handle, "set_" + name)(value)
    handle.connect_uri(uri)
    return handle
`;

/** Runs a script under nbdsh (no implicit connection) and returns the JSON it printed last. */
function nbdsh<T>(script: string, constants: Record<string, string | number>): T {
  const header = Object.entries(constants).map(([name, value]) => `${name} = ${JSON.stringify(value)}`).join('\n');
  const result = run('nbdsh', ['-c', `${prelude}\n${header}\n${script}`], { timeoutMs: 40_000 });
  assert.equal(result.code, 0, `nbdsh failed:\n${result.stdout}\n${result.stderr}`);
  const last = result.stdout.trim().split('\n').at(-1) ?? '';
  return JSON.parse(last) as T;
}

interface Attempt {
  errno: number;
  server: boolean;
}

// ---------------------------------------------------------------------------
// A raw NBD client over node:net, for bytes libnbd will not send.

class RawClient {
  private readonly inbox = new ByteInbox();
  readonly closed: Promise<void>;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => this.inbox.push(chunk));
    // The server dropping us may surface as ECONNRESET; `closed` is what the tests look at.
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => socket.once('close', () => {
      this.inbox.end();
      resolve();
    }));
  }

  static connect(array: RunningArray): Promise<RawClient> {
    const colon = array.nbd.lastIndexOf(':');
    const host = array.nbd.slice(0, colon);
    const port = Number(array.nbd.slice(colon + 1));
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port }, () => {
        socket.off('error', reject);
        resolve(new RawClient(socket));
      });
      socket.once('error', reject);
    });
  }

  send(...parts: Buffer[]): void {
    this.socket.write(Buffer.concat(parts));
  }

  read(count: number): Promise<Buffer> {
    return this.inbox.read(count, waitMsMax);
  }

  /** True if the server closes the connection within the wait bound. */
  async closedByServer(): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), waitMsMax);
    });
    const result = await Promise.race([this.closed.then(() => true), timeout]);
    clearTimeout(timer);
    return result;
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Reads and checks the 18-byte greeting, then sends the client flags. */
  async handshake(clientFlags = 0x3): Promise<void> {
    const greeting = await this.read(18);
    assert.equal(greeting.readBigUInt64BE(0), NBDMAGIC);
    assert.equal(greeting.readBigUInt64BE(8), IHAVEOPT);
    assert.equal(greeting.readUInt16BE(16), 0x3, 'FIXED_NEWSTYLE | NO_ZEROES');
    this.send(u32(clientFlags));
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0)): void {
    const header = Buffer.alloc(16);
    header.writeBigUInt64BE(IHAVEOPT, 0);
    header.writeUInt32BE(option >>> 0, 8);
    header.writeUInt32BE(data.length, 12);
    this.send(header, data);
  }

  async optionReply(): Promise<{ option: number; type: number; data: Buffer }> {
    const header = await this.read(20);
    assert.equal(header.readBigUInt64BE(0), REP_MAGIC, 'option reply magic');
    const data = await this.read(header.readUInt32BE(16));
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data };
  }

  /** GO on `name`; returns the size and transmission flags from INFO_EXPORT. */
  async go(name: string): Promise<{ sizeBytes: number; flags: number }> {
    const nameBytes = Buffer.from(name, 'utf8');
    this.sendOption(OPT.GO, Buffer.concat([u32(nameBytes.length), nameBytes, u16(1), u16(INFO.BLOCK_SIZE)]));
    let exported: { sizeBytes: number; flags: number } | undefined;
    for (;;) {
      const reply = await this.optionReply();
      assert.equal(reply.option, OPT.GO);
      if (reply.type === REP.ACK) break;
      assert.equal(reply.type, REP.INFO, `GO failed with 0x${reply.type.toString(16)}: ${reply.data.toString()}`);
      if (reply.data.readUInt16BE(0) === INFO.EXPORT) exported = { sizeBytes: Number(reply.data.readBigUInt64BE(2)), flags: reply.data.readUInt16BE(10) };
    }
    assert.ok(exported, 'GO carried INFO_EXPORT');
    return exported;
  }

  request(fields: { type: number; flags?: number; cookie: number; offset: number; length: number }, payload?: Buffer): void {
    const header = Buffer.alloc(28);
    header.writeUInt32BE(REQUEST_MAGIC, 0);
    header.writeUInt16BE(fields.flags ?? 0, 4);
    header.writeUInt16BE(fields.type, 6);
    header.writeBigUInt64BE(BigInt(fields.cookie), 8);
    header.writeBigUInt64BE(BigInt(fields.offset), 16);
    header.writeUInt32BE(fields.length, 24);
    this.send(header, ...(payload ? [payload] : []));
  }

  /** A simple reply: its error and cookie (and `dataBytes` of data when the error is 0). */
  async simpleReply(dataBytes = 0): Promise<{ error: number; cookie: number; data: Buffer }> {
    const header = await this.read(16);
    assert.equal(header.readUInt32BE(0), SIMPLE_REPLY_MAGIC, 'simple reply magic');
    const error = header.readUInt32BE(4);
    const data = error === 0 && dataBytes > 0 ? await this.read(dataBytes) : Buffer.alloc(0);
    return { error, cookie: Number(header.readBigUInt64BE(8)), data };
  }

  /** Writes `data` at `offset` and reads it back through simple replies; returns what came back. */
  async roundTrip(offset: number, data: Buffer, cookie: number): Promise<Buffer> {
    this.request({ type: CMD.WRITE, cookie, offset, length: data.length }, data);
    assert.deepEqual(await this.simpleReply(), { error: 0, cookie, data: Buffer.alloc(0) });
    this.request({ type: CMD.READ, cookie: cookie + 1, offset, length: data.length });
    const read = await this.simpleReply(data.length);
    assert.equal(read.error, 0);
    assert.equal(read.cookie, cookie + 1);
    return read.data;
  }
}

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

function filled(length: number, seed: number): Buffer {
  const buffer = Buffer.alloc(length);
  for (let i = 0; i < length; i++) buffer[i] = (seed * 13 + i * 7 + (i >>> 9)) & 0xff;
  return buffer;
}

/** Waits until the array's log has a JSON line matching `match`. */
async function logLine(array: RunningArray, match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown> | undefined> {
  const deadline = Date.now() + waitMsMax;
  for (;;) {
    for (const text of array.stderr.split('\n')) {
      if (!text.startsWith('{')) continue;
      const line = JSON.parse(text) as Record<string, unknown>;
      if (match(line)) return line;
    }
    if (Date.now() > deadline) return undefined;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const malformedFrameLog = 'closing NBD connection after a malformed frame';

// ---------------------------------------------------------------------------

test('nbdsh, strict mode off: malformed and out-of-range requests get the spec error codes; the connection and others keep working', async (t) => {
  const array = await startArray(t);
  const uri = createVolume(array, 'mal', '64MiB');
  const observed = nbdsh<{ results: Record<string, Attempt>; checks: Record<string, boolean> }>(`
h = connect(URI)
h.set_strict_mode(0)
size = h.get_size()
r = {}
r["read past end"] = attempt(lambda: h.pread(512, size))
r["read straddling end"] = attempt(lambda: h.pread(1024, size - 512))
r["write past end"] = attempt(lambda: h.pwrite(pattern(512, 1), size))
r["write straddling end"] = attempt(lambda: h.pwrite(pattern(1024, 1), size - 512))
r["zero past end"] = attempt(lambda: h.zero(MIB, size))
r["trim past end"] = attempt(lambda: h.trim(MIB, size))
r["read misaligned offset 100"] = attempt(lambda: h.pread(512, 100))
r["read misaligned length"] = attempt(lambda: h.pread(100, 0))
r["write misaligned offset 100"] = attempt(lambda: h.pwrite(pattern(512, 2), 100))
r["read with unknown flag 0x100"] = attempt(lambda: h.pread(512, 0, 0x100))
r["read with NO_HOLE"] = attempt(lambda: h.pread(512, 0, nbd.CMD_FLAG_NO_HOLE))
r["write with unknown flag 0x8000"] = attempt(lambda: h.pwrite(pattern(4096, 3), 0, 0x8000))
r["write with REQ_ONE"] = attempt(lambda: h.pwrite(pattern(4096, 3), 0, nbd.CMD_FLAG_REQ_ONE))
r["zero with DF"] = attempt(lambda: h.zero(4096, 0, nbd.CMD_FLAG_DF))
r["flush with unknown flag 0x40"] = attempt(lambda: h.flush(0x40))
r["block status without a meta context"] = attempt(lambda: h.block_status(4096, 0, lambda *args: 0))
h.pwrite(pattern(4096, 4), 8 * MIB)
r["fast zero on a partly written extent"] = attempt(lambda: h.zero(4096, 8 * MIB, nbd.CMD_FLAG_FAST_ZERO))
r["fast zero on a whole unwritten extent"] = attempt(lambda: h.zero(MIB, 16 * MIB, nbd.CMD_FLAG_FAST_ZERO))
c = {}
c["refused writes left the data alone"] = h.pread(4096, 0) == bytes(4096)
c["refused fast zero left the data alone"] = h.pread(4096, 8 * MIB) == pattern(4096, 4)
c["same connection still alive"] = not h.aio_is_dead() and h.aio_is_ready()
h.pwrite(pattern(64 * 1024, 5), 2 * MIB)
c["same connection reads back"] = h.pread(64 * 1024, 2 * MIB) == pattern(64 * 1024, 5)
h2 = connect(URI)
c["second connection sees the data"] = h2.pread(64 * 1024, 2 * MIB) == pattern(64 * 1024, 5)
h2.pwrite(pattern(8192, 6), 3 * MIB)
c["first connection sees the second's write"] = h.pread(8192, 3 * MIB) == pattern(8192, 6)
h3 = nbd.NBD()
h3.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h3.connect_uri(URI)
c["block status works once base:allocation is negotiated"] = attempt(lambda: h3.block_status(4096, 8 * MIB, lambda *args: 0))["errno"] == 0
for handle in (h, h2, h3):
    handle.shutdown()
print(json.dumps({"results": r, "checks": c}))
`, { URI: uri, MIB: MiB });

  const expected: Record<string, number> = {
    'read past end': NBD_ERR.EINVAL,
    'read straddling end': NBD_ERR.EINVAL,
    'write past end': NBD_ERR.ENOSPC,
    'write straddling end': NBD_ERR.ENOSPC,
    'zero past end': NBD_ERR.ENOSPC,
    'trim past end': NBD_ERR.EINVAL,
    'read misaligned offset 100': NBD_ERR.EINVAL,
    'read misaligned length': NBD_ERR.EINVAL,
    'write misaligned offset 100': NBD_ERR.EINVAL,
    'read with unknown flag 0x100': NBD_ERR.EINVAL,
    'read with NO_HOLE': NBD_ERR.EINVAL,
    'write with unknown flag 0x8000': NBD_ERR.EINVAL,
    'write with REQ_ONE': NBD_ERR.EINVAL,
    'zero with DF': NBD_ERR.EINVAL,
    'flush with unknown flag 0x40': NBD_ERR.EINVAL,
    'block status without a meta context': NBD_ERR.EINVAL,
    // The array's extents are 1 MiB: zeroing 4 KiB of an allocated one needs a data write.
    'fast zero on a partly written extent': NBD_ERR.ENOTSUP,
    'fast zero on a whole unwritten extent': 0,
  };
  assert.deepEqual(Object.fromEntries(Object.entries(observed.results).map(([k, v]) => [k, v.errno])), expected);
  for (const [label, attempt] of Object.entries(observed.results)) assert.ok(attempt.server, `${label}: the server answered (libnbd did not refuse it locally)`);
  for (const [label, ok] of Object.entries(observed.checks)) assert.equal(ok, true, label);
});

test('raw client: on a read-only export (an nbd.access grant) WRITE, WRITE_ZEROES and TRIM get EPERM, payload consumed, bytes unchanged', async (t) => {
  const array = await startArray(t, { extraConfig: ['nbd:', '  access:', '    ro:', '      - address: 127.0.0.1/32', '        readOnly: true'].join('\n') });
  createVolume(array, 'ro', '64MiB');
  const client = await RawClient.connect(array);
  t.after(() => client.destroy());
  await client.handshake();
  const { flags } = await client.go('ro');
  assert.equal(flags & TFLAG.READ_ONLY, TFLAG.READ_ONLY, 'the export says READ_ONLY');
  // A refused WRITE whose payload looks like a request: the server must consume it as payload.
  const decoy = Buffer.alloc(4096);
  decoy.writeUInt32BE(REQUEST_MAGIC, 0);
  decoy.writeUInt16BE(CMD.FLUSH, 6);
  decoy.writeBigUInt64BE(99n, 8);
  client.request({ type: CMD.WRITE, cookie: 1, offset: 0, length: decoy.length }, decoy);
  client.request({ type: CMD.WRITE_ZEROES, cookie: 2, offset: 0, length: 4096 });
  client.request({ type: CMD.TRIM, cookie: 3, offset: 0, length: 4096 });
  const replies = [await client.simpleReply(), await client.simpleReply(), await client.simpleReply()].sort((a, b) => a.cookie - b.cookie);
  assert.deepEqual(replies.map((r) => [r.cookie, r.error]), [[1, NBD_ERR.EPERM], [2, NBD_ERR.EPERM], [3, NBD_ERR.EPERM]]);
  client.request({ type: CMD.READ, cookie: 4, offset: 0, length: 4096 });
  const read = await client.simpleReply(4096);
  assert.deepEqual([read.cookie, read.error], [4, 0], 'reads still work, and the stream is in step');
  assert.ok(read.data.equals(Buffer.alloc(4096)), 'the refused write changed nothing');
});

test('raw client: FLUSH with an offset or length is EINVAL, a refused WRITE payload is consumed, and an unknown option is ERR_UNSUP before a working GO', async (t) => {
  const array = await startArray(t);
  createVolume(array, 'raw', '64MiB');
  const client = await RawClient.connect(array);
  t.after(() => client.destroy());
  await client.handshake();
  client.sendOption(99, Buffer.from('some option data the server must skip'));
  assert.deepEqual(await client.optionReply().then((r) => [r.option, r.type]), [99, REP.ERR_UNSUP]);
  client.sendOption(OPT.EXTENDED_HEADERS);
  assert.deepEqual(await client.optionReply().then((r) => [r.option, r.type]), [OPT.EXTENDED_HEADERS, REP.ERR_UNSUP]);
  const { sizeBytes, flags } = await client.go('raw');
  assert.equal(sizeBytes, volumeBytes);
  assert.equal(flags & TFLAG.SEND_FLUSH, TFLAG.SEND_FLUSH);

  client.request({ type: CMD.FLUSH, cookie: 1, offset: 4096, length: 0 });
  assert.equal((await client.simpleReply()).error, NBD_ERR.EINVAL);
  client.request({ type: CMD.FLUSH, cookie: 2, offset: 0, length: 4096 });
  assert.equal((await client.simpleReply()).error, NBD_ERR.EINVAL);
  client.request({ type: CMD.FLUSH, cookie: 3, offset: 0, length: 0 });
  assert.deepEqual(await client.simpleReply(), { error: 0, cookie: 3, data: Buffer.alloc(0) });

  // A refused WRITE whose payload is itself a valid-looking request: if the server
  // parsed the payload as a request, cookie 99 would get an answer.
  const decoy = Buffer.alloc(4096);
  decoy.writeUInt32BE(REQUEST_MAGIC, 0);
  decoy.writeUInt16BE(CMD.FLUSH, 6);
  decoy.writeBigUInt64BE(99n, 8);
  client.request({ type: CMD.WRITE, flags: CMD_FLAG.REQ_ONE, cookie: 4, offset: 0, length: decoy.length }, decoy);
  client.request({ type: CMD.WRITE, cookie: 5, offset: volumeBytes, length: decoy.length }, decoy);
  client.request({ type: 42, cookie: 6, offset: 0, length: 0 });
  const replies = [await client.simpleReply(), await client.simpleReply(), await client.simpleReply()].sort((a, b) => a.cookie - b.cookie);
  assert.deepEqual(replies.map((r) => [r.cookie, r.error]), [[4, NBD_ERR.EINVAL], [5, NBD_ERR.ENOSPC], [6, NBD_ERR.EINVAL]]);

  const data = filled(8192, 1);
  assert.ok((await client.roundTrip(MiB, data, 10)).equals(data), 'the stream is still in step');
  client.request({ type: CMD.DISC, cookie: 20, offset: 0, length: 0 });
  assert.equal(await client.closedByServer(), true, 'DISC closes the connection');
});

test('raw client: STRUCTURED_REPLY then EXPORT_NAME keeps structured replies for READ', async (t) => {
  const array = await startArray(t);
  createVolume(array, 'sr', '64MiB');
  const client = await RawClient.connect(array);
  t.after(() => client.destroy());
  await client.handshake(0x3);
  client.sendOption(OPT.STRUCTURED_REPLY);
  assert.equal((await client.optionReply()).type, REP.ACK);
  client.sendOption(OPT.EXPORT_NAME, Buffer.from('sr'));
  const reply = await client.read(10);
  assert.equal(Number(reply.readBigUInt64BE(0)), volumeBytes);
  assert.equal(reply.readUInt16BE(8) & TFLAG.SEND_DF, TFLAG.SEND_DF, 'DF is advertised once structured replies are on');
  client.request({ type: CMD.READ, flags: CMD_FLAG.DF, cookie: 7, offset: 0, length: 4096 });
  const chunk = await client.read(20);
  assert.equal(chunk.readUInt32BE(0), STRUCTURED_REPLY_MAGIC, 'a structured chunk, not a simple reply');
  assert.equal(chunk.readUInt16BE(6), REPLY_TYPE.OFFSET_DATA);
  assert.equal(Number(chunk.readBigUInt64BE(8)), 7);
  assert.equal(chunk.readUInt32BE(16), 8 + 4096);
  const payload = await client.read(8 + 4096);
  assert.equal(Number(payload.readBigUInt64BE(0)), 0);
  assert.ok(payload.subarray(8).every((b) => b === 0), 'an unwritten volume reads as zeros');
});

test('raw client: garbage closes only that session; another session on the export keeps working', async (t) => {
  const array = await startArray(t);
  createVolume(array, 'g', '64MiB');
  const good = await RawClient.connect(array);
  t.after(() => good.destroy());
  await good.handshake();
  await good.go('g');
  const before = filled(4096, 2);
  assert.ok((await good.roundTrip(0, before, 1)).equals(before));

  const httpish = await RawClient.connect(array);
  t.after(() => httpish.destroy());
  await httpish.read(18);
  httpish.send(Buffer.from('GET / HTTP/1.1\r\nHost: twinstore\r\n\r\n'));
  assert.equal(await httpish.closedByServer(), true, 'garbage client flags close the connection');

  const midStream = await RawClient.connect(array);
  t.after(() => midStream.destroy());
  await midStream.handshake();
  await midStream.go('g');
  midStream.send(Buffer.alloc(28, 0xff));
  assert.equal(await midStream.closedByServer(), true, 'a request with a bad magic closes the connection');

  const badOption = await RawClient.connect(array);
  t.after(() => badOption.destroy());
  await badOption.handshake();
  badOption.send(Buffer.from('IHAVEOPX'), u32(OPT.LIST), u32(0));
  assert.equal(await badOption.closedByServer(), true, 'an option without IHAVEOPT closes the connection');

  const after = filled(4096, 3);
  assert.ok((await good.roundTrip(4096, after, 3)).equals(after), 'the good session still works');
  assert.ok(await logLine(array, (l) => l.msg === malformedFrameLog && /client flags/.test(String(l.reason))), 'the log names the bad client flags');
  assert.ok(await logLine(array, (l) => l.msg === malformedFrameLog && /magic/.test(String(l.reason)) && l.export === 'g'), 'the log names the bad request magic and the export');
});

test('raw client: a 64 MiB WRITE header closes that connection with a clear log line; other sessions keep working', async (t) => {
  const array = await startArray(t);
  const uri = createVolume(array, 'big', '64MiB');
  const good = await RawClient.connect(array);
  t.after(() => good.destroy());
  await good.handshake();
  await good.go('big');

  const greedy = await RawClient.connect(array);
  t.after(() => greedy.destroy());
  await greedy.handshake();
  await greedy.go('big');
  greedy.request({ type: CMD.WRITE, cookie: 1, offset: 0, length: 64 * MiB });
  greedy.send(Buffer.alloc(64 * 1024, 0xee));
  assert.equal(await greedy.closedByServer(), true, 'the oversized WRITE closes the connection');
  const line = await logLine(array, (l) => l.msg === malformedFrameLog && String(l.reason).includes(String(64 * MiB)));
  assert.ok(line, `a log line names the oversized WRITE; log was:\n${array.stderr}`);
  assert.equal(line.export, 'big');

  const data = filled(64 * 1024, 4);
  assert.ok((await good.roundTrip(0, data, 2)).equals(data), 'the other raw session still works');
  const fresh = nbdsh<{ sha256: string }>(`
import hashlib
h = connect(URI)
print(json.dumps({"sha256": hashlib.sha256(h.pread(64 * 1024, 0)).hexdigest()}))
`, { URI: uri });
  assert.equal(fresh.sha256, crypto.createHash('sha256').update(data).digest('hex'), 'a new connection reads what the good session wrote, not the 0xee bytes');
});

test('kernel-client style: EXPORT_NAME or GO without info requests, simple replies; write, read, flush and trim work', async (t) => {
  const array = await startArray(t);
  const uri = createVolume(array, 'kern', '64MiB');
  const observed = nbdsh<Record<string, unknown>>(`
out = {}
plain = dict(handshake_flags=0, request_structured_replies=False, request_block_size=False)
nbd_client = dict(handshake_flags=nbd.HANDSHAKE_FLAG_FIXED_NEWSTYLE | nbd.HANDSHAKE_FLAG_NO_ZEROES, request_structured_replies=False, request_block_size=False)
for label, settings, base in (("export-name", plain, 0), ("go-no-info", nbd_client, 8 * MIB)):
    h = connect(URI, **settings)
    o = {"protocol": h.get_protocol(), "structured": h.get_structured_replies_negotiated(), "df": h.can_df(),
         "flush": h.can_flush(), "trim": h.can_trim(), "size": h.get_size()}
    h.pwrite(pattern(MIB, 7), base)
    h.pwrite(pattern(64 * 1024, 8), base + MIB, nbd.CMD_FLAG_FUA)
    h.flush()
    o["data reads back"] = h.pread(MIB, base) == pattern(MIB, 7) and h.pread(64 * 1024, base + MIB) == pattern(64 * 1024, 8)
    h.trim(MIB, base)
    o["trimmed reads zero"] = h.pread(MIB, base) == bytes(MIB)
    o["untrimmed intact"] = h.pread(64 * 1024, base + MIB) == pattern(64 * 1024, 8)
    o["misaligned read"] = attempt(lambda: h.pread(512, base + 100))["errno"]
    o["alive after the error"] = h.pread(64 * 1024, base + MIB) == pattern(64 * 1024, 8)
    h.shutdown()
    out[label] = o
check = connect(URI)
out["default client sees both"] = check.pread(64 * 1024, MIB) == pattern(64 * 1024, 8) and check.pread(64 * 1024, 9 * MIB) == pattern(64 * 1024, 8)
print(json.dumps(out))
`, { URI: uri, MIB: MiB });

  for (const [label, protocol] of [['export-name', 'newstyle'], ['go-no-info', 'newstyle-fixed']] as const) {
    assert.deepEqual(observed[label], {
      protocol,
      structured: false,
      df: false,
      flush: true,
      trim: true,
      size: volumeBytes,
      'data reads back': true,
      'trimmed reads zero': true,
      'untrimmed intact': true,
      'misaligned read': NBD_ERR.EINVAL,
      'alive after the error': true,
    }, label);
  }
  assert.equal(observed['default client sees both'], true);
});

test('libnbd concurrency: 64 requests in flight on one handle; multi-conn write, flush and read across handles', async (t) => {
  const array = await startArray(t);
  const uri = createVolume(array, 'conc', '64MiB');
  const observed = nbdsh<Record<string, unknown>>(`
out = {}
h = connect(URI)
count, step = 64, 64 * 1024
writes = [h.aio_pwrite(nbd.Buffer.from_bytearray(pattern(step, 100 + i)), i * 3 * step) for i in range(count)]
out["writes in flight"] = h.aio_in_flight()
while h.aio_in_flight() > 0:
    h.poll(-1)
out["writes completed"] = all(h.aio_command_completed(c) for c in writes)
buffers = [nbd.Buffer(step) for i in range(count)]
reads = [h.aio_pread(buffers[i], i * 3 * step) for i in range(count)]
# Overwrite other ranges while the reads are in flight: replies come back out of order.
rewrites = [h.aio_pwrite(nbd.Buffer.from_bytearray(pattern(step, 200 + i)), i * 3 * step + step) for i in range(count)]
out["mixed in flight"] = h.aio_in_flight()
while h.aio_in_flight() > 0:
    h.poll(-1)
out["reads completed"] = all(h.aio_command_completed(c) for c in reads + rewrites)
out["every read matches its write"] = all(bytes(buffers[i].to_bytearray()) == pattern(step, 100 + i) for i in range(count))
out["rewrites landed"] = all(h.pread(step, i * 3 * step + step) == pattern(step, 200 + i) for i in range(count))
out["gaps untouched"] = all(h.pread(step, i * 3 * step + 2 * step) == bytes(step) for i in range(count))
h1 = connect(URI)
h2 = connect(URI)
out["multi-conn"] = h1.can_multi_conn() and h2.can_multi_conn()
h1.pwrite(pattern(MIB, 300), 40 * MIB)
h2.flush()
out["flush on the other handle, read there"] = h2.pread(MIB, 40 * MIB) == pattern(MIB, 300)
out["third handle reads it too"] = h.pread(MIB, 40 * MIB) == pattern(MIB, 300)
for handle in (h, h1, h2):
    handle.shutdown()
print(json.dumps(out))
`, { URI: uri, MIB: MiB });

  assert.equal(observed['writes in flight'], 64, 'all 64 writes were queued before any reply was awaited');
  assert.equal(observed['mixed in flight'], 128);
  for (const key of ['writes completed', 'reads completed', 'every read matches its write', 'rewrites landed', 'gaps untouched', 'multi-conn', 'flush on the other handle, read there', 'third handle reads it too']) {
    assert.equal(observed[key], true, key);
  }
});
