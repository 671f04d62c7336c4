// Goal: one NBD client cannot take a real `twinstore serve` process's memory or
// descriptors. Three abusers, each on its own array: a thousand handshakes left
// half open, forty WRITEs that announce 32 MiB and stall, and one client that
// sends 96 READs of 32 MiB and never reads a reply. Through each, the server's
// RSS (VmHWM, its peak, from /proc) stays under a bound named here, the API
// answers, and a well-behaved libnbd client's 4 KiB reads keep working within a
// latency bound; the abusers' connections are closed by the server within the
// configured timeouts. The client that never reads is closed after
// `nbd.replyStallMs` with no reply leaving its socket, and an array stopped
// (SIGTERM) with such a client exits within the stop's grace (closeGraceMs),
// not never (the old code waited for the replies to leave for ever).
// Method: abusers are raw node:net sockets bound to 127.0.0.2 and up (loopback
// is a /8), so the per-address cap meets them and not the good client, which is
// nbdsh connecting from 127.0.0.1. Short timeouts come from the `nbd:` config
// section so the test runs in seconds.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { test } from 'node:test';
import { createVolume, startArray, type RunningArray } from '../helpers/array.js';
import { ByteInbox } from '../helpers/byte-inbox.js';
import { sleep } from '../helpers/replication.js';
import { descriptorsReserved } from '../../src/nbd/server.js';
import { closeGraceMs } from '../../src/nbd/session.js';
import { CMD, IHAVEOPT, INFO, OPT, REP, REP_MAGIC, REQUEST_MAGIC } from '../../src/nbd/protocol.js';

const MiB = 2 ** 20;
const volumeBytes = 64 * MiB;
/** The slowest 4 KiB read (or connect) of the good client we accept while an abuser runs. */
const goodLatencyMsMax = 3000;
/** How long the API may take to answer GET /v1/status while an abuser runs. */
const apiLatencyMsMax = 5000;

interface Memory {
  rssBytes: number;
  peakBytes: number;
}

function memory(array: RunningArray): Memory {
  const status = fs.readFileSync(`/proc/${array.child!.pid}/status`, 'utf8');
  const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)![1]) * 1024;
  return { rssBytes: field('VmRSS'), peakBytes: field('VmHWM') };
}

const mib = (bytes: number): string => `${(bytes / MiB).toFixed(0)} MiB`;

/** Polls `check` until it holds; the error says what was awaited and what `state` showed last. */
async function waitUntil(what: string, check: () => boolean, timeoutMs: number, state: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${state()})`);
    await sleep(50);
  }
}

function nbdPort(array: RunningArray): number {
  return Number(array.nbd.slice(array.nbd.lastIndexOf(':') + 1));
}

/** A socket to the array's NBD port from `localAddress`, watched for the server closing it. */
class Abuser {
  closed = false;
  greeted = false;
  private readonly inbox = new ByteInbox();

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.greeted = true;
      this.inbox.push(chunk);
    });
    socket.on('error', () => undefined);
    socket.once('close', () => {
      this.closed = true;
      this.inbox.end();
    });
  }

  static connect(array: RunningArray, localAddress: string): Promise<Abuser> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port: nbdPort(array), localAddress }, () => {
        socket.off('error', reject);
        resolve(new Abuser(socket));
      });
      socket.once('error', reject);
    });
  }

  read(count: number): Promise<Buffer> {
    return this.inbox.read(count, 20_000);
  }

  /** Greeting, client flags, GO on `name` until its ACK: the connection is then in transmission. */
  async go(name: string): Promise<void> {
    await this.read(18);
    const nameBytes = Buffer.from(name);
    const data = Buffer.alloc(4 + nameBytes.length + 4);
    data.writeUInt32BE(nameBytes.length, 0);
    nameBytes.copy(data, 4);
    data.writeUInt16BE(1, 4 + nameBytes.length);
    data.writeUInt16BE(INFO.BLOCK_SIZE, 6 + nameBytes.length);
    const header = Buffer.alloc(4 + 16);
    header.writeUInt32BE(0x3, 0);
    header.writeBigUInt64BE(IHAVEOPT, 4);
    header.writeUInt32BE(OPT.GO, 12);
    header.writeUInt32BE(data.length, 16);
    this.socket.write(Buffer.concat([header, data]));
    for (;;) {
      const reply = await this.read(20);
      assert.equal(reply.readBigUInt64BE(0), REP_MAGIC);
      await this.read(reply.readUInt32BE(16));
      if (reply.readUInt32BE(12) === REP.ACK) return;
      assert.equal(reply.readUInt32BE(12), REP.INFO, 'GO answered with INFO then ACK');
    }
  }

  request(type: number, cookie: number, offset: number, length: number): Buffer {
    const header = Buffer.alloc(28);
    header.writeUInt32BE(REQUEST_MAGIC, 0);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(BigInt(cookie), 8);
    header.writeBigUInt64BE(BigInt(offset), 16);
    header.writeUInt32BE(length, 24);
    return header;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Opens `count` connections from `localAddress`, 100 at a time (the listen backlog is finite). */
async function openMany(t: { after: (fn: () => void) => void }, array: RunningArray, localAddress: string, count: number): Promise<Abuser[]> {
  const opened: Abuser[] = [];
  t.after(() => opened.forEach((a) => a.destroy()));
  while (opened.length < count) {
    const batch = Math.min(100, count - opened.length);
    opened.push(...await Promise.all(Array.from({ length: batch }, () => Abuser.connect(array, localAddress))));
  }
  return opened;
}

const openCount = (abusers: Abuser[]): number => abusers.filter((a) => !a.closed).length;

interface GoodReads {
  connectMs: number;
  maxMs: number;
  reads: number;
  ok: boolean;
}

/** nbdsh from 127.0.0.1: connects and does `reads` 4 KiB reads, timing each; checks the data it wrote first. */
function goodReads(uri: string, reads: number): Promise<GoodReads> {
  const script = `
import json, time, nbd
t = time.monotonic()
h = nbd.NBD()
h.connect_uri(URI)
connect_ms = (time.monotonic() - t) * 1000
worst, ok = 0, True
for i in range(READS):
    offset = (i * 37 % 4096) * 4096
    t = time.monotonic()
    data = h.pread(4096, offset)
    worst = max(worst, (time.monotonic() - t) * 1000)
    ok = ok and data == bytes([offset // 4096 % 251]) * 4096
h.shutdown()
print(json.dumps({"connectMs": connect_ms, "maxMs": worst, "reads": READS, "ok": ok}))
`;
  const header = `URI = ${JSON.stringify(uri)}\nREADS = ${reads}\n`;
  return new Promise((resolve, reject) => {
    const child = spawn('nbdsh', ['-c', header + script], { env: { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` } });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`the good client (nbdsh) exited ${code}: ${err.trim() || out.trim()}`));
      else resolve(JSON.parse(out.trim().split('\n').at(-1)!) as GoodReads);
    });
  });
}

/** Writes the pattern goodReads checks (block i holds i % 251) over the first 16 MiB. */
async function writePattern(uri: string): Promise<void> {
  const script = `
import nbd
h = nbd.NBD()
h.connect_uri(URI)
h.pwrite(b"".join(bytes([i % 251]) * 4096 for i in range(4096)), 0)
h.flush()
h.shutdown()
`;
  await new Promise<void>((resolve, reject) => {
    const child = spawn('nbdsh', ['-c', `URI = ${JSON.stringify(uri)}\n${script}`], { env: { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` }, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`nbdsh pattern write exited ${code}: ${err}`))));
  });
}

/** GET /v1/status answers 200 within apiLatencyMsMax; returns how long it took. */
async function apiAnswers(array: RunningArray, label: string): Promise<number> {
  const started = Date.now();
  const response = await fetch(`http://${array.ready!.api}/v1/status`, {
    headers: { authorization: `Bearer ${array.token()}` },
    signal: AbortSignal.timeout(apiLatencyMsMax),
  }).catch((error: Error) => {
    throw new Error(`${label}: GET /v1/status did not answer within ${apiLatencyMsMax} ms (${error.message})`);
  });
  assert.equal(response.status, 200, `${label}: GET /v1/status answers`);
  await response.arrayBuffer();
  return Date.now() - started;
}

/** The good client and the API, checked while an abuser holds on. */
async function wellBehavedWorks(array: RunningArray, uri: string, situation: string): Promise<void> {
  const label = `${situation} (server RSS ${mib(memory(array).rssBytes)})`;
  await apiAnswers(array, label);
  const good = await goodReads(uri, 50);
  assert.equal(good.ok, true, `${label}: the good client reads the data it expects`);
  assert.ok(good.connectMs < goodLatencyMsMax, `${label}: the good client connected in ${good.connectMs.toFixed(0)} ms (bound ${goodLatencyMsMax} ms)`);
  assert.ok(good.maxMs < goodLatencyMsMax, `${label}: the slowest 4 KiB read took ${good.maxMs.toFixed(0)} ms (bound ${goodLatencyMsMax} ms)`);
}

function logHas(array: RunningArray, message: string): boolean {
  return array.stderr.includes(`"msg":"${message}"`);
}

async function prepare(t: Parameters<typeof startArray>[0], nbd: Record<string, string | number>, wrapper?: string[]): Promise<{ array: RunningArray; uri: string }> {
  const entries = Object.entries(nbd);
  const extraConfig = entries.length === 0 ? '' : ['nbd:', ...entries.map(([key, value]) => `  ${key}: ${value}`)].join('\n');
  const array = await startArray(t, { extraConfig, ...(wrapper ? { wrapper } : {}) });
  const uri = createVolume(array, 'rb', '64MiB');
  await writePattern(uri);
  return { array, uri };
}

test('1000 half-open handshakes: the per-address and total caps hold, the handshake timeout closes the rest, the API and a good client keep working', async (t) => {
  const handshakeTimeoutMs = 3000;
  const limits = { connectionsMax: 300, connectionsPerAddressMax: 100 };
  const { array, uri } = await prepare(t, { ...limits, handshakeTimeoutMs });

  // One address opens 1000 and never answers the greeting.
  const oneAddress = await openMany(t, array, '127.0.0.2', 1000);
  await waitUntil(`the server to close all but connectionsPerAddressMax (${limits.connectionsPerAddressMax}) of 1000 connections from one address`,
    () => openCount(oneAddress) <= limits.connectionsPerAddressMax, 20_000, () => `${openCount(oneAddress)} still open`);
  await wellBehavedWorks(array, uri, 'with 1000 half-open handshakes from 127.0.0.2');
  await waitUntil(`the handshake timeout (${handshakeTimeoutMs} ms) to close the held handshakes`, () => openCount(oneAddress) === 0,
    handshakeTimeoutMs + 20_000, () => `${openCount(oneAddress)} still open`);
  assert.ok(oneAddress.filter((a) => a.greeted).length >= limits.connectionsPerAddressMax, 'the held connections were greeted');
  assert.ok(logHas(array, 'closing NBD connection: handshake not finished in time'), 'the log says why the handshakes were closed');

  // Four addresses open 100 each: the total cap holds, then the timeout frees every one.
  const spread = (await Promise.all(['127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6'].map((address) => openMany(t, array, address, 100)))).flat();
  await waitUntil(`the server to keep at most connectionsMax (${limits.connectionsMax}) of 400 connections`,
    () => openCount(spread) <= limits.connectionsMax, 20_000, () => `${openCount(spread)} still open`);
  assert.ok(logHas(array, 'refusing NBD connection over the cap'), 'the refusals are logged');
  await waitUntil('the handshake timeout to close the 300 held handshakes', () => openCount(spread) === 0,
    handshakeTimeoutMs + 20_000, () => `${openCount(spread)} still open`);
  await wellBehavedWorks(array, uri, 'after the held handshakes timed out');
  const { peakBytes } = memory(array);
  t.diagnostic(`peak RSS ${mib(peakBytes)}`);
});

test('with an open-files limit of 512, 600 half-open connections from 12 addresses leave descriptors for the API and a good client', async (t) => {
  const nofile = 512;
  /** What the server may hold: the limit less the descriptors it keeps for the API, the link and the drives. */
  const connectionsMax = nofile - descriptorsReserved;
  const handshakeTimeoutMs = 2000;
  const { array, uri } = await prepare(t, { handshakeTimeoutMs }, ['prlimit', `--nofile=${nofile}:${nofile}`, '--']);
  assert.ok(logHas(array, 'NBD connection cap lowered to fit the open-files limit'), 'the lowered cap is logged at start');
  const abusers = (await Promise.all(Array.from({ length: 12 }, (_, i) => openMany(t, array, `127.0.0.${10 + i}`, 50)))).flat();
  await waitUntil(`the server to hold at most ${connectionsMax} of 600 connections`, () => openCount(abusers) <= connectionsMax,
    20_000, () => `${openCount(abusers)} still open`);
  const apiMs = await apiAnswers(array, `with ${openCount(abusers)} NBD connections held under nofile ${nofile}`);
  t.diagnostic(`API answered in ${apiMs} ms with ${openCount(abusers)} NBD connections held`);
  await waitUntil('the handshake timeout to close the held connections', () => openCount(abusers) === 0,
    handshakeTimeoutMs + 20_000, () => `${openCount(abusers)} still open`);
  await wellBehavedWorks(array, uri, 'after the held connections timed out');
});

test('40 WRITEs that announce 32 MiB, send 24 MiB and stall: RSS stays bounded, each is closed after payloadStallMs, a good client keeps reading', async (t) => {
  const payloadStallMs = 1500;
  /** Peak RSS allowed: the budget's large share (288 MiB) + the buffer pool's idle slabs (256 MiB) + the process itself. */
  const rssBytesMax = 768 * MiB;
  const { array, uri } = await prepare(t, { payloadStallMs, bufferedBytesMax: '384MiB' });
  const sent = Buffer.alloc(24 * MiB, 0xee);
  const writers = await openMany(t, array, '127.0.0.2', 40);
  await Promise.all(writers.map((w) => w.go('rb')));
  writers.forEach((w, i) => w.socket.write(Buffer.concat([w.request(CMD.WRITE, i, 32 * MiB, 32 * MiB), sent])));

  await wellBehavedWorks(array, uri, 'with 40 stalled WRITE payloads');
  let peak = 0;
  await waitUntil('the server to close all 40 stalled WRITEs', () => {
    peak = Math.max(peak, memory(array).rssBytes);
    return openCount(writers) === 0;
  }, 40 * payloadStallMs + 30_000, () => `${openCount(writers)} still open, RSS ${mib(memory(array).rssBytes)}`);
  const { peakBytes } = memory(array);
  t.diagnostic(`peak RSS ${mib(peakBytes)} (sampled ${mib(peak)})`);
  assert.ok(peakBytes < rssBytesMax, `peak RSS ${mib(peakBytes)} stays under ${mib(rssBytesMax)}`);
  assert.ok(logHas(array, 'closing NBD connection: WRITE payload stalled'), 'the log says why the writers were closed');
  await wellBehavedWorks(array, uri, 'after the stalled writers were closed');
});

test('a client that sends 96 READs of 32 MiB and never reads: RSS stays bounded, a good client keeps reading', async (t) => {
  /** Peak RSS allowed: the per-connection bound (128 MiB) + one reply over it + the process itself. */
  const rssBytesMax = 512 * MiB;
  // replyStallMs far above the test's length: here the client must be held, not cut (the next test cuts it).
  const { array, uri } = await prepare(t, { replyStallMs: 600_000 });
  const [greedy] = await openMany(t, array, '127.0.0.2', 1);
  await greedy!.go('rb');
  greedy!.socket.pause();
  greedy!.socket.write(Buffer.concat(Array.from({ length: 96 }, (_, i) => greedy!.request(CMD.READ, i, (i % 2) * 32 * MiB, 32 * MiB))));

  await wellBehavedWorks(array, uri, 'with 96 unread 32 MiB READs');
  // The server has taken what it will once its RSS holds still for a second.
  let last = memory(array).rssBytes;
  let stableSince = Date.now();
  await waitUntil('the server RSS to hold still for 1 s', () => {
    const now = memory(array).rssBytes;
    if (Math.abs(now - last) > 8 * MiB) stableSince = Date.now();
    last = now;
    return Date.now() - stableSince > 1000 || now > rssBytesMax;
  }, 30_000, () => `RSS ${mib(last)}`);
  const { peakBytes } = memory(array);
  t.diagnostic(`peak RSS ${mib(peakBytes)}`);
  assert.ok(peakBytes < rssBytesMax, `peak RSS ${mib(peakBytes)} stays under ${mib(rssBytesMax)}`);
  await wellBehavedWorks(array, uri, 'while the greedy client still holds its replies');
  assert.equal(greedy!.closed, false, 'a client that only reads slowly is not cut off');
});

/** A client that sends 96 READs of 32 MiB on its paused socket; resolves once the server has taken 64 MiB for them. */
async function unreadReads(t: Parameters<typeof startArray>[0], array: RunningArray): Promise<Abuser> {
  const before = memory(array).rssBytes;
  const [greedy] = await openMany(t, array, '127.0.0.2', 1);
  await greedy!.go('rb');
  greedy!.socket.pause();
  greedy!.socket.write(Buffer.concat(Array.from({ length: 96 }, (_, i) => greedy!.request(CMD.READ, i, (i % 2) * 32 * MiB, 32 * MiB))));
  await waitUntil('the server to hold 64 MiB of READ replies for the unread client', () => memory(array).rssBytes - before > 64 * MiB,
    30_000, () => `RSS ${mib(memory(array).rssBytes)}, ${mib(before)} before`);
  return greedy!;
}

test('a client that reads no reply for replyStallMs is closed, and a good client keeps reading', async (t) => {
  const replyStallMs = 2000;
  const { array, uri } = await prepare(t, { replyStallMs });
  const greedy = await unreadReads(t, array);
  await waitUntil(`the server to log that it closes the unread client after replyStallMs (${replyStallMs} ms)`,
    () => logHas(array, 'closing NBD connection: the client reads no replies'), replyStallMs + 30_000, () => 'no such log line yet');
  // A paused socket notices nothing: reading again, the client meets the end of the connection.
  greedy.socket.resume();
  await waitUntil('the unread client\'s connection to end once it reads', () => greedy.closed, 30_000, () => 'still open');
  await wellBehavedWorks(array, uri, 'after the unread client was closed');
});

test('an array stopping (SIGTERM) with a client that never reads exits within closeGraceMs, not at replyStallMs', async (t) => {
  // The default replyStallMs (30 s): only the stop's own grace (5 s) may end this connection.
  const { array } = await prepare(t, {});
  await unreadReads(t, array);
  const started = Date.now();
  const exitMsMax = closeGraceMs + 15_000;
  const code = await Promise.race([array.stop('SIGTERM'), sleep(exitMsMax).then(() => 'still running' as const)]);
  const tookMs = Date.now() - started;
  t.diagnostic(`SIGTERM to exit: ${tookMs} ms (exit ${String(code)})`);
  assert.notEqual(code, 'still running', `the array exits within ${exitMsMax} ms of SIGTERM with a client that never reads`);
  assert.equal(code, 0);
  assert.ok(logHas(array, 'closing NBD connection: the client reads no replies while the array stops'), 'the log says why the client was closed');
});
