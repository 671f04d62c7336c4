// Goal: requests over a real link arrive whole and are answered correctly:
// JSON and multi-buffer payloads round-trip, pipelined requests are matched to
// their answers by id whatever order they finish in, handler errors reach the
// caller as TwinstoreErrors with the same code, and a request that cannot be
// answered fails with LINK_DOWN, LINK_TIMEOUT or LINK_FRAME_TOO_LARGE.
// Method: a LinkServer ('site-b') and a PeerLink from 'site-a' on 127.0.0.1
// (port 0), with handlers that echo, delay at random (seeded), throw, or hold
// requests until released; both are closed in t.after.

import { crc32c } from '@node-rs/crc32';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TwinstoreError } from '../../src/errors.js';
import { PeerLink } from '../../src/link/index.js';
import { Prng } from '../../src/util/prng.js';
import { HOST, captureLog, delay, identity, once, startPair, waitFor } from './helpers.js';

function rejectsWith(code: string, message?: RegExp): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(error instanceof TwinstoreError, `a TwinstoreError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (message !== undefined) assert.match(error.message, message);
    return true;
  };
}

test('JSON and multi-buffer payloads round-trip, in both directions', async (t) => {
  const seen: unknown[] = [];
  const { peer } = await startPair(t, {
    handler: async (peerId, request) => {
      seen.push({ peerId, method: request.method, body: request.body, sizes: request.payload.map((b) => b.length) });
      const reversed = request.payload.map((b) => Buffer.from(b).reverse());
      return { body: { echoed: request.body, count: request.payload.length }, payload: [Buffer.from('head'), ...reversed] };
    },
  });
  const big = Buffer.alloc(5 * 2 ** 20);
  for (let i = 0; i < big.length; i += 4096) big.writeUInt32BE(i, i);
  const body = { text: 'grüße', list: [1, null, true, { nested: 'x' }], n: 2 ** 52 };
  const response = await peer.request('test.echo', body, [Buffer.from('one'), Buffer.alloc(0), big]);
  assert.deepEqual(response.body, { echoed: body, count: 3 });
  assert.deepEqual(response.payload.map((b) => b.length), [4, 3, 0, big.length]);
  assert.equal(response.payload[0]!.toString(), 'head');
  assert.equal(response.payload[1]!.toString(), 'eno');
  assert.ok(response.payload[3]!.equals(Buffer.from(big).reverse()), '5 MiB payload intact');
  assert.deepEqual(seen, [{ peerId: 'site-a', method: 'test.echo', body, sizes: [3, 0, big.length] }]);

  const empty = await peer.request('test.empty', undefined);
  assert.deepEqual(empty, { body: { count: 0 }, payload: [Buffer.from('head')], payloadCrcs: [crc32c(Buffer.from('head'))] }, 'undefined is left out, as JSON does');
  assert.deepEqual(response.payloadCrcs, response.payload.map((b) => crc32c(b) >>> 0), 'each segment\'s CRC, checked, comes with the answer');
});

test('200 pipelined requests are answered out of order, each to its own caller', async (t) => {
  const prng = new Prng(7);
  let inHandler = 0;
  let inHandlerMax = 0;
  const finished: number[] = [];
  const { peer } = await startPair(t, {
    handler: async (_peerId, request) => {
      const n = (request.body as { n: number }).n;
      inHandler += 1;
      inHandlerMax = Math.max(inHandlerMax, inHandler);
      await delay(prng.below(40));
      inHandler -= 1;
      finished.push(n);
      return { body: { n, square: n * n }, payload: [Buffer.from(`payload ${n}`)] };
    },
  });
  const answers = await Promise.all(Array.from({ length: 200 }, (_, n) => peer.request('test.square', { n })));
  answers.forEach((answer, n) => {
    assert.deepEqual(answer.body, { n, square: n * n });
    assert.equal(answer.payload[0]!.toString(), `payload ${n}`);
  });
  assert.ok(inHandlerMax > 1, `requests overlapped in the handler (max ${inHandlerMax})`);
  assert.notDeepEqual(finished, [...finished].sort((a, b) => a - b), 'handlers finished out of order');
});

test('handler errors reach the caller with their code and message', async (t) => {
  const { peer, serverLog } = await startPair(t, {
    handler: async (_peerId, request) => {
      if (request.method === 'twinstore') throw new TwinstoreError('VOLUME_NOT_FOUND', 'no volume named vol9 on site-b');
      if (request.method === 'bug') throw new RangeError('index out of range');
      if (request.method === 'huge') return { body: null, payload: [Buffer.alloc(64 * 2 ** 20), Buffer.alloc(1)] };
      return { body: 'fine', payload: [] };
    },
  });
  await assert.rejects(peer.request('twinstore', {}), rejectsWith('VOLUME_NOT_FOUND', /^no volume named vol9 on site-b$/));
  await assert.rejects(peer.request('bug', {}), rejectsWith('INTERNAL', /index out of range/));
  await assert.rejects(peer.request('huge', {}), rejectsWith('LINK_FRAME_TOO_LARGE'));
  assert.equal((await peer.request('other', {})).body, 'fine', 'the connection still works after errors');
  assert.ok(peer.connected);
  assert.ok(serverLog.some((line) => line.level === 50 && /bug from site-a failed/.test(line.msg)), 'a non-Twinstore error is logged at error level');
});

test('a frame over the limits is refused before it is sent', async (t) => {
  const { peer } = await startPair(t);
  await assert.rejects(peer.request('m', { blob: 'x'.repeat(2 ** 20) }), rejectsWith('LINK_FRAME_TOO_LARGE'));
  await assert.rejects(peer.request('m', {}, [Buffer.alloc(2 ** 26 + 1)]), rejectsWith('LINK_FRAME_TOO_LARGE'));
  assert.deepEqual((await peer.request('m', 1)).body, { peerId: 'site-a', method: 'm', body: 1 });
});

test('request() rejects with LINK_DOWN before start, while down, when the connection drops, and after close', async (t) => {
  const { log } = captureLog();
  const idle = new PeerLink({ identity: identity('site-a'), peerId: 'site-b', address: { host: HOST, port: 1 }, log });
  t.after(() => idle.close());
  await assert.rejects(idle.request('m', {}), rejectsWith('LINK_DOWN', /not connected yet/));

  let release: () => void = () => undefined;
  const { peer, server } = await startPair(t, {
    peer: { backoffMsMin: 20, backoffMsMax: 40 },
    handler: (_peerId, request) => (request.method === 'hang' ? new Promise((resolve) => { release = () => resolve({ body: null, payload: [] }); }) : Promise.resolve({ body: 'ok', payload: [] })),
  });
  const hanging = peer.request('hang', {});
  const down = once(peer, 'down');
  await delay(20);
  await server.close();
  await assert.rejects(hanging, rejectsWith('LINK_DOWN', /went down/));
  const [reason, code] = await down;
  assert.equal(typeof reason, 'string');
  assert.equal(code, 'LINK_DOWN');
  assert.equal(peer.connected, false);
  await assert.rejects(peer.request('m', {}), rejectsWith('LINK_DOWN', /is down/));
  release();
  await peer.close();
  await assert.rejects(peer.request('m', {}), rejectsWith('LINK_DOWN', /closed/));
});

test('a request with no answer in time rejects with LINK_TIMEOUT; the late answer is dropped', async (t) => {
  const { peer } = await startPair(t, {
    peer: { requestTimeoutMs: 100 },
    handler: async (_peerId, request) => {
      if (request.method === 'slow') await delay(300);
      return { body: request.method, payload: [] };
    },
  });
  const started = Date.now();
  await assert.rejects(peer.request('slow', {}), rejectsWith('LINK_TIMEOUT', /did not answer slow within 100 ms/));
  assert.ok(Date.now() - started < 250);
  await assert.rejects(peer.request('slow', {}, [], { timeoutMs: 30 }), rejectsWith('LINK_TIMEOUT', /within 30 ms/));
  await delay(350);
  assert.equal((await peer.request('fast', {})).body, 'fast', 'late answers did not disturb later requests');
  assert.ok(peer.connected);
});

test('back-pressure: the server runs at most requestsInFlightMax requests of a connection at once', async (t) => {
  let inHandler = 0;
  let inHandlerMax = 0;
  const waiting: Array<() => void> = [];
  const { peer } = await startPair(t, {
    requestsInFlightMax: 8,
    handler: async (_peerId, request) => {
      inHandler += 1;
      inHandlerMax = Math.max(inHandlerMax, inHandler);
      await new Promise<void>((resolve) => waiting.push(resolve));
      inHandler -= 1;
      return { body: request.body, payload: [] };
    },
  });
  const all = Promise.all(Array.from({ length: 100 }, (_, n) => peer.request('held', n)));
  await waitFor('8 requests in the handler', () => inHandler === 8);
  await delay(50);
  assert.equal(inHandler, 8, 'the server stopped reading at its bound');
  while (waiting.length > 0 || inHandler > 0) {
    waiting.splice(0).forEach((resolve) => resolve());
    await delay(2);
  }
  const answers = await all;
  assert.deepEqual(answers.map((a) => a.body), Array.from({ length: 100 }, (_, n) => n));
  assert.equal(inHandlerMax, 8);
});

test('the peer queues requests past its own in-flight bound and sends them in order', async (t) => {
  const order: number[] = [];
  const { peer } = await startPair(t, {
    peer: { requestsInFlightMax: 3 },
    handler: async (_peerId, request) => {
      order.push(request.body as number);
      await delay(5);
      return { body: request.body, payload: [] };
    },
  });
  const answers = await Promise.all(Array.from({ length: 30 }, (_, n) => peer.request('q', n)));
  assert.deepEqual(answers.map((a) => a.body), Array.from({ length: 30 }, (_, n) => n));
  assert.deepEqual(order.slice(0, 3).sort(), [0, 1, 2]);
});
