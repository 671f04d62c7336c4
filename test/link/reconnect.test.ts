// Goal: a PeerLink comes back by itself: after the peer's server restarts on
// the same port, after its connection is cut, and after its address changes;
// the delays between attempts grow exponentially, stay capped, and replay from
// their seed.
// Method: a LinkServer on 127.0.0.1 whose port is first picked with port 0 and
// then reused for the restart; a TCP proxy between the two that resets every
// connection through it; a port with nothing listening (bound, then closed).
// The 'retry' event reports each scheduled delay; Backoff is also driven
// directly. Back-off values are small (tens of ms) so the file runs quickly.

import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import { TwinstoreError } from '../../src/errors.js';
import { Backoff } from '../../src/link/backoff.js';
import { LinkServer, PeerLink } from '../../src/link/index.js';
import { HOST, captureLog, echoHandler, identity, once, peersOf, TEST_PEERS, startProxy, waitFor } from './helpers.js';

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function window(minMs: number, maxMs: number, attempt: number): [number, number] {
  const ceiling = Math.min(maxMs, minMs * 2 ** attempt);
  return [Math.max(minMs, Math.ceil(ceiling / 2)), ceiling];
}

describe('back-off', () => {
  test('grows from min, doubles, is capped at max, with jitter inside each window', () => {
    const backoff = new Backoff({ minMs: 10, maxMs: 200, seed: 1 });
    const delays = Array.from({ length: 12 }, () => backoff.next());
    delays.forEach((delayMs, attempt) => {
      const [low, high] = window(10, 200, attempt);
      assert.ok(delayMs >= low && delayMs <= high, `attempt ${attempt}: ${delayMs} in [${low}, ${high}]`);
    });
    assert.ok(delays.slice(5).every((d) => d >= 100 && d <= 200), `capped: ${delays.join(' ')}`);
    assert.ok(new Set(delays.slice(5)).size > 1, 'jittered, not all equal at the cap');
    assert.deepEqual(Array.from({ length: 12 }, ((b) => () => b.next())(new Backoff({ minMs: 10, maxMs: 200, seed: 1 }))), delays, 'the seed replays');
    assert.notDeepEqual(Array.from({ length: 12 }, ((b) => () => b.next())(new Backoff({ minMs: 10, maxMs: 200, seed: 2 }))), delays, 'another seed differs');
    backoff.reset();
    assert.equal(backoff.next(), 10, 'reset starts again from min');
  });

  test('a PeerLink retries a dead address with growing, capped delays', async (t) => {
    const port = await freePort();
    const { log, lines } = captureLog();
    const peer = new PeerLink({ identity: identity('site-a'), peerId: 'site-b', address: { host: HOST, port }, log, backoffMsMin: 10, backoffMsMax: 80, seed: 3 });
    t.after(() => peer.close());
    const delays: number[] = [];
    const times: number[] = [];
    peer.on('retry', (delayMs) => {
      delays.push(delayMs);
      times.push(Date.now());
    });
    peer.start();
    await waitFor('9 attempts', () => delays.length >= 9);
    assert.match(peer.lastDownReason ?? '', /ECONNREFUSED/);
    await peer.close();
    delays.forEach((delayMs, attempt) => {
      const [low, high] = window(10, 80, attempt);
      assert.ok(delayMs >= low && delayMs <= high, `attempt ${attempt}: ${delayMs} in [${low}, ${high}]`);
    });
    for (let i = 1; i < times.length; i++) assert.ok(times[i]! - times[i - 1]! >= delays[i - 1]! - 2, 'each attempt waited its delay');
    const warned = lines.filter((line) => line.level === 40);
    assert.equal(warned.length, 1, 'the same failure is logged at warn once, then at debug');
    assert.match(warned[0]!.msg, /cannot connect to site-b at 127\.0\.0\.1:\d+: connect ECONNREFUSED/);
  });
});

describe('reconnects', () => {
  test('after the server restarts on the same port', async (t) => {
    const serverLog = captureLog();
    const first = new LinkServer({ identity: identity('site-b'), isPeer: TEST_PEERS, handler: echoHandler, log: serverLog.log });
    t.after(() => first.close());
    const { port } = await first.listen(HOST, 0);
    const { log } = captureLog();
    const peer = new PeerLink({ identity: identity('site-a'), peerId: 'site-b', address: { host: HOST, port }, log, backoffMsMin: 10, backoffMsMax: 50 });
    t.after(() => peer.close());
    peer.start();
    await once(peer, 'up');
    assert.deepEqual((await peer.request('m', 'before')).body, { peerId: 'site-a', method: 'm', body: 'before' });

    const down = once(peer, 'down');
    const retry = once(peer, 'retry');
    await first.close();
    await down;
    const [firstDelay] = await retry;
    assert.ok((firstDelay as number) <= 10, 'back-off starts again from min after a connection was up');
    await assert.rejects(peer.request('m', 'while down'), (error: unknown) => error instanceof TwinstoreError && error.code === 'LINK_DOWN');

    const second = new LinkServer({ identity: identity('site-b'), isPeer: TEST_PEERS, handler: echoHandler, log: serverLog.log });
    t.after(() => second.close());
    const up = once(peer, 'up');
    assert.equal((await second.listen(HOST, port)).port, port);
    await up;
    assert.deepEqual((await peer.request('m', 'after')).body, { peerId: 'site-a', method: 'm', body: 'after' });
    assert.deepEqual(second.connectedPeers(), ['site-a']);
  });

  test('after the connection is cut (sockets destroyed); requests in flight fail with LINK_DOWN', async (t) => {
    const server = new LinkServer({ identity: identity('site-b'), isPeer: TEST_PEERS, handler: async (peerId, request) => {
      if (request.method === 'slow') await new Promise((resolve) => setTimeout(resolve, 200));
      return echoHandler(peerId, request);
    }, log: captureLog().log });
    t.after(() => server.close());
    const { port } = await server.listen(HOST, 0);
    const proxy = await startProxy(t, port);
    const peer = new PeerLink({ identity: identity('site-a'), peerId: 'site-b', address: { host: HOST, port: proxy.port }, log: captureLog().log, backoffMsMin: 10, backoffMsMax: 50 });
    t.after(() => peer.close());
    let ups = 0;
    peer.on('up', () => { ups += 1; });
    peer.start();
    await waitFor('up', () => ups === 1);
    for (let round = 1; round <= 3; round++) {
      const inFlight = peer.request('slow', round);
      const down = once(peer, 'down');
      await new Promise((resolve) => setTimeout(resolve, 20));
      proxy.cut();
      const [reason, code] = await down;
      assert.equal(code, 'LINK_DOWN', String(reason));
      await assert.rejects(inFlight, (error: unknown) => error instanceof TwinstoreError && error.code === 'LINK_DOWN');
      await waitFor(`up again after cut ${round}`, () => ups === round + 1);
      assert.deepEqual((await peer.request('m', round)).body, { peerId: 'site-a', method: 'm', body: round });
    }
    await waitFor('the server dropped the dead connections', () => server.connectedPeers().length === 1);
  });

  test('setAddress moves the link to a new address at once, without waiting for the back-off', async (t) => {
    const deadPort = await freePort();
    const server = new LinkServer({ identity: identity('site-b'), isPeer: TEST_PEERS, handler: echoHandler, log: captureLog().log });
    t.after(() => server.close());
    const { port } = await server.listen(HOST, 0);
    const peer = new PeerLink({ identity: identity('site-a'), peerId: 'site-b', address: { host: HOST, port: deadPort }, log: captureLog().log, backoffMsMin: 2000, backoffMsMax: 4000 });
    t.after(() => peer.close());
    peer.start();
    await once(peer, 'retry');
    const started = Date.now();
    const up = once(peer, 'up');
    peer.setAddress({ host: HOST, port });
    await up;
    assert.ok(Date.now() - started < 1000, 'did not wait for the 2 s back-off');
    assert.deepEqual(peer.currentAddress, { host: HOST, port });
    assert.deepEqual((await peer.request('m', 1)).body, { peerId: 'site-a', method: 'm', body: 1 });
  });

  test('an inbound hello from the peer cuts a waiting back-off short: both directions come back together', async (t) => {
    // B dials A, whose port is dead at first: B waits out a back-off of at least 4 s. A's server then
    // listens and A dials B; B's server sees A's hello and tells its own link to try now.
    const portA = await freePort();
    const toA = new PeerLink({ identity: identity('site-b'), peerId: 'site-a', address: { host: HOST, port: portA }, log: captureLog().log, backoffMsMin: 4000, backoffMsMax: 8000 });
    t.after(() => toA.close());
    const serverB = new LinkServer({ identity: identity('site-b'), isPeer: TEST_PEERS, handler: echoHandler, log: captureLog().log, onPeer: (id) => { if (id === 'site-a') toA.retryNow(); } });
    t.after(() => serverB.close());
    const { port: portB } = await serverB.listen(HOST, 0);
    toA.start();
    const [waitMs] = await once(toA, 'retry');
    assert.ok((waitMs as number) >= 4000, `the back-off waits ${String(waitMs)} ms`);
    const serverA = new LinkServer({ identity: identity('site-a'), isPeer: peersOf('site-b'), handler: echoHandler, log: captureLog().log });
    t.after(() => serverA.close());
    assert.equal((await serverA.listen(HOST, portA)).port, portA);
    const toB = new PeerLink({ identity: identity('site-a'), peerId: 'site-b', address: { host: HOST, port: portB }, log: captureLog().log });
    t.after(() => toB.close());
    const started = Date.now();
    const upA = once(toA, 'up');
    toB.start();
    await once(toB, 'up');
    await upA;
    assert.ok(Date.now() - started < 2000, `B's link came up ${Date.now() - started} ms after A's hello, not after its back-off`);
    assert.deepEqual((await toA.request('m', 'now')).body, { peerId: 'site-b', method: 'm', body: 'now' });
    toA.retryNow(); // up: nothing to cut short
    assert.equal(toA.connected, true);
  });
});
