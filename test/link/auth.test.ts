// Goal: only an array that holds the shared key and is the array expected gets
// a working link. A wrong key (in either direction), no key, plain TCP, or an
// array id that does not match is refused: that peer gets no link frame and no
// handler runs, and the listening array logs one clear warn line with the
// remote address.
// Method: real LinkServers and PeerLinks on 127.0.0.1 (port 0) with different
// keys and ids; a plain TCP socket and a certificate-only TLS client stand in
// for strangers; a raw TLS-PSK client sends a hand-built HELLO whose array id
// differs from its PSK identity. Log lines are captured and checked.

import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { test } from 'node:test';
import { LinkServer, PeerLink, type LinkHandler } from '../../src/link/index.js';
import {
  HOST, KEY_A, KEY_B, WARN, captureLog, delay, echoHandler, frameTypes, identity, once, rawHello, rawTlsClient, type LogLine,
} from './helpers.js';

async function listen(t: import('node:test').TestContext, arrayId: string, psk: Buffer, handler: LinkHandler = echoHandler): Promise<{ server: LinkServer; port: number; lines: LogLine[] }> {
  const { log, lines } = captureLog();
  const server = new LinkServer({ identity: identity(arrayId, psk), handler, log, heartbeatMs: 100 });
  t.after(() => server.close());
  const { port } = await server.listen(HOST, 0);
  return { server, port, lines };
}

function connect(t: import('node:test').TestContext, from: string, psk: Buffer, to: string, port: number): { peer: PeerLink; lines: LogLine[]; ups: () => number } {
  const { log, lines } = captureLog();
  const peer = new PeerLink({ identity: identity(from, psk), peerId: to, address: { host: HOST, port }, log, heartbeatMs: 100, backoffMsMin: 20, backoffMsMax: 50 });
  t.after(() => peer.close());
  let ups = 0;
  peer.on('up', () => { ups += 1; });
  peer.start();
  return { peer, lines, ups: () => ups };
}

const warns = (lines: LogLine[], pattern: RegExp): LogLine[] => lines.filter((line) => line.level === WARN && pattern.test(line.msg));

test('the right key and id: the link comes up (control case)', async (t) => {
  const b = await listen(t, 'site-b', KEY_A);
  const a = connect(t, 'site-a', KEY_A, 'site-b', b.port);
  await once(a.peer, 'up');
  assert.deepEqual((await a.peer.request('m', 1)).body, { peerId: 'site-a', method: 'm', body: 1 });
  assert.deepEqual(warns(b.lines, /./), []);
});

test('wrong key in both directions: neither link comes up; each listener logs one warn line per attempt, with the remote address', async (t) => {
  let handled = 0;
  const counting: LinkHandler = async (peerId, request) => {
    handled += 1;
    return echoHandler(peerId, request);
  };
  const a = await listen(t, 'site-a', KEY_A, counting);
  const b = await listen(t, 'site-b', KEY_B, counting);
  const aToB = connect(t, 'site-a', KEY_A, 'site-b', b.port);
  const bToA = connect(t, 'site-b', KEY_B, 'site-a', a.port);
  await delay(400);
  for (const [side, listener] of [[aToB, b], [bToA, a]] as const) {
    assert.equal(side.ups(), 0, 'never up');
    assert.equal(side.peer.connected, false);
    assert.match(side.peer.lastDownReason ?? '', /TLS-PSK handshake failed/);
    await assert.rejects(side.peer.request('m', {}), (error: unknown) => (error as { code?: string }).code === 'LINK_DOWN');
    const refused = warns(listener.lines, /^link: refused 127\.0\.0\.1:\d+: TLS-PSK handshake failed: wrong link key/);
    assert.ok(refused.length >= 2, `a warn line per attempt (${refused.length})`);
    const remotes = refused.map((line) => line.remote);
    assert.equal(new Set(remotes).size, remotes.length, 'one line per connection, not more');
    assert.equal(refused.length, warns(listener.lines, /./).length, 'no other warn lines');
    assert.ok(warns(side.lines, /cannot connect to .*TLS-PSK handshake failed/).length >= 1, 'the connecting side says why too');
  }
  assert.equal(handled, 0, 'no handler ran');
});

test('plain TCP gets nothing: no link frame, the connection closed, one warn line', async (t) => {
  const b = await listen(t, 'site-b', KEY_A);
  const received: Buffer[] = [];
  const socket = net.connect(b.port, HOST);
  t.after(() => socket.destroy());
  socket.on('data', (chunk: Buffer) => received.push(chunk));
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  const port = socket.localPort;
  socket.write(rawHello('site-a'));
  await once(socket, 'close');
  const bytes = Buffer.concat(received);
  assert.equal(bytes.indexOf('TLNK'), -1, 'no link frame');
  assert.equal(frameTypes(bytes).length, 0);
  assert.ok(bytes.length <= 7, `at most a TLS alert record came back (${bytes.length} bytes)`);
  await delay(20);
  const refused = warns(b.lines, /refused/);
  assert.equal(refused.length, 1);
  assert.equal(refused[0]!.remote, `127.0.0.1:${port}`);
  assert.match(refused[0]!.msg, /not a TLS 1\.2 link client \(plain TCP\?\)/);
});

test('a TCP client that says nothing is dropped when the handshake times out', async (t) => {
  const b = await listen(t, 'site-b', KEY_A);
  const socket = net.connect(b.port, HOST);
  t.after(() => socket.destroy());
  socket.on('error', () => undefined);
  const started = Date.now();
  await once(socket, 'close', 3000);
  assert.ok(Date.now() - started < 2000);
  assert.equal(warns(b.lines, /no TLS handshake in time/).length, 1);
});

test('a TLS client with no key (certificate ciphers only) is refused', async (t) => {
  const b = await listen(t, 'site-b', KEY_A);
  const socket = tls.connect({ host: HOST, port: b.port, rejectUnauthorized: false });
  t.after(() => socket.destroy());
  let secure = false;
  socket.on('secureConnect', () => { secure = true; });
  const error = await once(socket, 'error');
  assert.equal(secure, false);
  assert.match(String((error[0] as Error).message), /handshake failure/);
  await delay(20);
  assert.equal(warns(b.lines, /refused 127\.0\.0\.1:\d+: TLS-PSK handshake failed: no TLS-PSK cipher offered/).length, 1);
});

test('an array id that is not the expected peer: the connecting side refuses and never comes up', async (t) => {
  const b = await listen(t, 'site-b', KEY_A);
  const a = connect(t, 'site-a', KEY_A, 'site-c', b.port);
  await delay(300);
  assert.equal(a.ups(), 0);
  assert.match(a.peer.lastDownReason ?? '', /the array at 127\.0\.0\.1:\d+ is "site-b", not "site-c"/);
  assert.ok(warns(a.lines, /cannot connect to site-c/).length >= 1);
  assert.deepEqual(b.server.connectedPeers(), []);
});

test('a HELLO whose array id differs from the PSK identity is refused with LINK_AUTH and logged', async (t) => {
  let handled = 0;
  const b = await listen(t, 'site-b', KEY_A, async (peerId, request) => {
    handled += 1;
    return echoHandler(peerId, request);
  });
  const raw = await rawTlsClient(t, b.port, { arrayId: 'site-a' });
  raw.socket.write(rawHello('site-x'));
  raw.socket.write(Buffer.alloc(0));
  await raw.closed;
  const frames = frameTypes(raw.received());
  assert.deepEqual(frames.map((f) => f.type), [1, 4], 'the server hello, then an error frame');
  assert.deepEqual(frames[1]!.json, { code: 'LINK_AUTH', message: 'refused by site-b: it says it is array "site-x" but authenticated as "site-a"' });
  const refused = warns(b.lines, /refused/);
  assert.equal(refused.length, 1);
  assert.match(refused[0]!.msg, /^link: refused 127\.0\.0\.1:\d+: it says it is array "site-x" but authenticated as "site-a"$/);
  assert.equal(handled, 0);
});
