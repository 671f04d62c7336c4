// Goal: the fault proxy of the fault rounds (test/helpers/link-proxy.ts) does
// what each mode says, so a campaign's "link faults" are the faults named.
// Method: plain TCP in this process, a client -> the proxy -> a target server
// that records what arrives (and, for round trips, echoes it). Checked per
// mode: delay adds its latency both ways and keeps the order; bandwidth paces
// each direction to its rate; split delivers one write as several reads, bytes
// intact; drop discards bytes without any close or reset, the connection stays
// dead after the drop, a connection opened during it never reaches the target,
// and new ones after it work; reset (and its first name, cut) resets open and
// new connections until the mode changes; stall holds bytes and delivers them
// in order afterwards; slow (split plus delay) still passes everything.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { TestContext } from 'node:test';
import { LinkProxy } from '../helpers/link-proxy.js';

interface Target {
  address: string;
  /** Connections the target accepted. */
  accepted: number;
  /** Per accepted connection, every chunk as it arrived. */
  received: Buffer[][];
  /** Connections closed (by the proxy or the client). */
  closed: number;
}

async function startTarget(t: TestContext, echo: boolean): Promise<Target> {
  const target: Target = { address: '', accepted: 0, received: [], closed: 0 };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      target.closed += 1;
    });
    const chunks: Buffer[] = [];
    target.received.push(chunks);
    target.accepted += 1;
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      if (echo) socket.write(chunk);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  target.address = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return target;
}

interface Client {
  socket: net.Socket;
  received: Buffer[];
  events: string[];
}

async function connect(t: TestContext, address: string): Promise<Client> {
  const at = address.lastIndexOf(':');
  const socket = net.connect(Number(address.slice(at + 1)), address.slice(0, at));
  socket.setNoDelay(true);
  const client: Client = { socket, received: [], events: [] };
  socket.on('data', (chunk: Buffer) => client.received.push(chunk));
  socket.on('error', (error: NodeJS.ErrnoException) => client.events.push(`error ${error.code ?? error.message}`));
  socket.on('end', () => client.events.push('end'));
  socket.on('close', () => client.events.push('close'));
  t.after(() => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return client;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

const total = (chunks: Buffer[]): number => chunks.reduce((n, c) => n + c.length, 0);

test('delay: each chunk waits delayMs (+ jitter) each way, in order', async (t) => {
  const target = await startTarget(t, true);
  const proxy = await LinkProxy.start(t, target.address, 11);
  const client = await connect(t, proxy.address);
  proxy.setMode('delay', { delayMs: 100, jitterMs: 0 });
  const started = Date.now();
  client.socket.write('ping');
  await until('the echo', () => total(client.received) === 4);
  const roundTripMs = Date.now() - started;
  assert.ok(roundTripMs >= 190, `round trip ${roundTripMs} ms with 100 ms each way`);
  // With jitter, many small chunks still arrive in the order sent.
  proxy.setMode('delay', { delayMs: 5, jitterMs: 40 });
  const sent: Buffer[] = [];
  for (let i = 0; i < 50; i++) {
    const chunk = Buffer.from(`<${i}>`);
    sent.push(chunk);
    client.socket.write(chunk);
    await sleep(1);
  }
  const expected = Buffer.concat([Buffer.from('ping'), ...sent]);
  await until('every chunk echoed', () => total(client.received) === expected.length);
  assert.deepEqual(Buffer.concat(client.received), expected);
  assert.ok(proxy.stats.delayedChunks >= 2);
});

test('bandwidth: each direction is paced to bytesPerSecond', async (t) => {
  const target = await startTarget(t, false);
  const proxy = await LinkProxy.start(t, target.address, 12);
  const client = await connect(t, proxy.address);
  proxy.setMode('bandwidth', { bytesPerSecond: 128 * 1024 });
  const payload = Buffer.alloc(96 * 1024, 7);
  const started = Date.now();
  client.socket.write(payload);
  await until('the payload at the target', () => total(target.received[0] ?? []) === payload.length, 10_000);
  const ms = Date.now() - started;
  // 96 KiB at 128 KiB/s: the first 16 KiB piece goes after 125 ms, the last after 750 ms.
  assert.ok(ms >= 650, `96 KiB took ${ms} ms at 128 KiB/s`);
  assert.deepEqual(Buffer.concat(target.received[0]!), payload);
  assert.equal(proxy.stats.pacedBytes, payload.length);
  proxy.setMode('pass');
  client.socket.write(payload);
  await until('the payload again', () => total(target.received[0]!) === 2 * payload.length);
  assert.equal(proxy.stats.pacedBytes, payload.length, 'pass is not paced');
});

test('split: one write arrives as several reads, bytes intact', async (t) => {
  const target = await startTarget(t, false);
  const proxy = await LinkProxy.start(t, target.address, 13);
  const client = await connect(t, proxy.address);
  await until('the target connection', () => target.accepted === 1);
  proxy.setMode('split');
  const writes: Buffer[] = [];
  for (let i = 0; i < 20; i++) {
    const chunk = Buffer.alloc(2000, i);
    writes.push(chunk);
    client.socket.write(chunk);
    // One write at a time, so each read at the target is a piece of one write.
    await until(`write ${i} delivered`, () => total(target.received[0]!) === (i + 1) * 2000);
  }
  assert.deepEqual(Buffer.concat(target.received[0]!), Buffer.concat(writes));
  assert.ok(target.received[0]!.length > writes.length, `${target.received[0]!.length} reads for ${writes.length} writes`);
  assert.equal(proxy.stats.splitWrites, writes.length);
});

test('drop: bytes vanish with no close or reset; the connection stays dead; new ones work after', async (t) => {
  const target = await startTarget(t, true);
  const proxy = await LinkProxy.start(t, target.address, 14);
  const client = await connect(t, proxy.address);
  client.socket.write('before');
  await until('the echo before the drop', () => total(client.received) === 6);
  proxy.setMode('drop');
  client.socket.write('during');
  const during = await connect(t, proxy.address);
  during.socket.write('hello?');
  await sleep(300);
  assert.equal(total(target.received[0]!), 6, 'nothing more reached the target');
  assert.equal(target.accepted, 1, 'a connection opened during the drop never reached the target');
  assert.deepEqual(client.events, [], 'no close, end or reset during the drop');
  assert.deepEqual(during.events, []);
  proxy.setMode('pass');
  client.socket.write('after');
  await sleep(300);
  assert.equal(total(target.received[0]!), 6, 'a connection that lost bytes stays dead');
  assert.equal(total(client.received), 6);
  assert.deepEqual(client.events, [], 'still no reset: the peer finds out by its own timeouts');
  const fresh = await connect(t, proxy.address);
  fresh.socket.write('new');
  await until('the echo on a new connection', () => total(fresh.received) === 3);
  assert.equal(proxy.stats.blackholed, 2);
  assert.equal(proxy.stats.bytesDropped, 'during'.length + 'hello?'.length + 'after'.length);
  // When one end gives up and closes, the other end learns of it (now that the network passes).
  assert.equal(target.closed, 0);
  client.socket.destroy();
  await until('the dead pair torn down at the target', () => target.closed === 1);
});

for (const mode of ['reset', 'cut'] as const) {
  test(`${mode}: open and new connections are reset (RST) until the mode changes`, async (t) => {
    const target = await startTarget(t, true);
    const proxy = await LinkProxy.start(t, target.address, 15);
    const client = await connect(t, proxy.address);
    client.socket.write('x');
    await until('the echo', () => total(client.received) === 1);
    proxy.setMode(mode);
    await until('the reset', () => client.events.includes('close'));
    assert.ok(client.events.includes('error ECONNRESET'), client.events.join(', '));
    const refused = net.connect(Number(proxy.address.split(':')[1]), '127.0.0.1');
    const code = await new Promise<string>((resolve) => {
      refused.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? ''));
      refused.on('close', () => resolve('close'));
    });
    assert.equal(code, 'ECONNRESET');
    proxy.setMode('pass');
    const fresh = await connect(t, proxy.address);
    fresh.socket.write('y');
    await until('the echo after the reset', () => total(fresh.received) === 1);
    assert.ok(proxy.stats.resets >= 2);
  });
}

test('stall: bytes are held and delivered in order once it passes; slow still passes everything', async (t) => {
  const target = await startTarget(t, true);
  const proxy = await LinkProxy.start(t, target.address, 16);
  const client = await connect(t, proxy.address);
  await until('the target connection', () => target.accepted === 1);
  proxy.setMode('stall');
  client.socket.write('one,');
  client.socket.write('two,');
  await sleep(200);
  assert.equal(total(target.received[0]!), 0);
  assert.deepEqual(client.events, []);
  proxy.setMode('slow');
  client.socket.write('three');
  await until('everything echoed', () => total(client.received) === 'one,two,three'.length);
  assert.equal(Buffer.concat(client.received).toString(), 'one,two,three');
});
