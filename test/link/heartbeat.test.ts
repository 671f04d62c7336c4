// Goal: heartbeats keep an idle link up and visible (lastHeardMs moves), and a
// peer that stops reading and answering is detected within about 3 heartbeats
// on both sides: the connection is closed (LINK_TIMEOUT), requests in flight
// fail with LINK_DOWN, and the link comes back when the network does. Sides with
// different heartbeats do not time each other out.
// Method: a LinkServer and a PeerLink on 127.0.0.1 through a TCP proxy that can
// stall (stop forwarding without closing anything); heartbeats of 100 ms; a raw
// TLS-PSK client that sends its HELLO and then nothing (it reads, never answers).
// Pings count the frames sent before them: a raw client whose ping claims a
// frame that never arrived (a frame lost on a live stream, which TCP never does
// but a broken middlebox can) gets its connection closed at once, not a request
// hung until its timeout; a correct count or a peer that does not count (0) is
// answered with a pong that carries the server's own count.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TwinstoreError } from '../../src/errors.js';
import { LinkServer, PeerLink } from '../../src/link/index.js';
import { HOST, TYPE, WARN, captureLog, delay, echoHandler, frameTypes, identity, once, TEST_PEERS, rawFrame, rawHello, rawTlsClient, startPair, startProxy, waitFor } from './helpers.js';

const heartbeatMs = 100;

test('an idle link stays up, and lastHeardMs follows the heartbeats', async (t) => {
  const { peer } = await startPair(t, { serverHeartbeatMs: heartbeatMs, peer: { heartbeatMs } });
  let downs = 0;
  peer.on('down', () => { downs += 1; });
  for (let i = 0; i < 8; i++) {
    await delay(heartbeatMs);
    assert.ok(Date.now() - peer.lastHeardMs <= 2 * heartbeatMs, `heard within 2 heartbeats (${Date.now() - peer.lastHeardMs} ms)`);
  }
  assert.equal(downs, 0);
  assert.ok(peer.connected);
});

test('sides with different heartbeats use the larger one for silence', async (t) => {
  const { peer } = await startPair(t, { serverHeartbeatMs: 400, peer: { heartbeatMs: 50 } });
  let downs = 0;
  peer.on('down', () => { downs += 1; });
  await delay(1500);
  assert.equal(downs, 0, 'the peer waited 3 × 400 ms, not 3 × 50 ms');
  assert.ok(peer.connected);
});

test('a stalled peer is detected within ~3 heartbeats on both sides, then the link recovers', async (t) => {
  const serverLogs = captureLog();
  const server = new LinkServer({ identity: identity('site-b'), handler: echoHandler, isPeer: TEST_PEERS, log: serverLogs.log, heartbeatMs });
  t.after(() => server.close());
  const { port } = await server.listen(HOST, 0);
  const proxy = await startProxy(t, port);
  const peer = new PeerLink({ identity: identity('site-a'), peerId: 'site-b', address: { host: HOST, port: proxy.port }, log: captureLog().log, heartbeatMs, backoffMsMin: 20, backoffMsMax: 50, requestTimeoutMs: 10_000 });
  t.after(() => peer.close());
  const up = once(peer, 'up');
  peer.start();
  await up;
  await delay(2 * heartbeatMs);

  proxy.stall();
  const stalledAt = Date.now();
  const lastHeardBefore = peer.lastHeardMs;
  const inFlight = peer.request('m', 'lost in the stall');
  const [reason, code] = await once(peer, 'down', 3000);
  const detectedMs = Date.now() - stalledAt;
  assert.equal(code, 'LINK_TIMEOUT');
  assert.match(String(reason), /silent for \d+ ms \(3 heartbeats\)/);
  assert.ok(detectedMs >= 2 * heartbeatMs && detectedMs <= 3 * heartbeatMs + 150, `detected after ${detectedMs} ms`);
  assert.ok(peer.lastHeardMs <= lastHeardBefore + heartbeatMs, 'lastHeardMs stopped moving during the stall');
  await assert.rejects(inFlight, (error: unknown) => error instanceof TwinstoreError && error.code === 'LINK_DOWN' && /silent/.test(error.message));
  await waitFor('the server side noticed too', () => serverLogs.lines.some((line) => line.level === WARN && /site-a at 127\.0\.0\.1:\d+ silent for \d+ ms/.test(line.msg)), 3 * heartbeatMs + 300);

  proxy.resume();
  await once(peer, 'up', 3000);
  assert.deepEqual((await peer.request('m', 'after')).body, { peerId: 'site-a', method: 'm', body: 'after' });
  assert.ok(Date.now() - peer.lastHeardMs < heartbeatMs);
});

test('the server closes a connection that sends its HELLO and then nothing', async (t) => {
  const { log, lines } = captureLog();
  const server = new LinkServer({ identity: identity('site-b'), handler: echoHandler, isPeer: TEST_PEERS, log, heartbeatMs });
  t.after(() => server.close());
  const { port } = await server.listen(HOST, 0);
  const raw = await rawTlsClient(t, port, { arrayId: 'site-z' });
  raw.socket.write(rawHello('site-z', heartbeatMs));
  const started = Date.now();
  await raw.closed;
  const closedMs = Date.now() - started;
  assert.ok(closedMs >= 2 * heartbeatMs && closedMs <= 3 * heartbeatMs + 150, `closed after ${closedMs} ms`);
  assert.ok(lines.some((line) => line.level === WARN && /site-z at .* silent for/.test(line.msg)));
});

test('a ping names the frames sent before it: a count that does not match closes the connection at once', async (t) => {
  const { port } = await startPair(t, { serverHeartbeatMs: 5000 });
  // Counted right (the hello was frame 1, so the tag is 2), and not counted (0): both answered.
  const good = await rawTlsClient(t, port, { arrayId: 'site-z' });
  good.socket.write(Buffer.concat([rawHello('site-z', 5000), rawFrame({ type: TYPE.ping, requestId: 2 }), rawFrame({ type: TYPE.ping, requestId: 0 })]));
  await waitFor('two pongs', () => frameTypes(good.received()).filter((f) => f.type === TYPE.pong).length === 2);
  // The server's pongs count its own frames: its hello, then the first pong.
  assert.deepEqual(frameTypes(good.received()).filter((f) => f.type === TYPE.pong).map((f) => f.requestId), [2, 3]);
  assert.ok(!good.socket.destroyed);

  // The ping says 2 frames went before it; only the hello arrived (the other was lost).
  const lossy = await rawTlsClient(t, port, { arrayId: 'site-y' });
  const sentAt = Date.now();
  lossy.socket.write(Buffer.concat([rawHello('site-y', 5000), rawFrame({ type: TYPE.ping, requestId: 3 })]));
  await lossy.closed;
  assert.ok(Date.now() - sentAt < 1000, 'closed at the ping, not after a timeout');
  const last = frameTypes(lossy.received()).at(-1);
  assert.equal(last?.type, TYPE.error);
  assert.match((last?.json as { message: string }).message, /frames were lost or doubled on this connection: the peer sent 2 before its ping \(mod 2\^53\), 1 arrived/);
});
