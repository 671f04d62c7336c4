// Goal: a client of the event stream that stops reading cannot make the array
// hold its events without bound: once more than clientBufferedBytesMax is
// queued to it unsent, it is dropped, and a client that reads goes on getting
// every event, in order (issue 16).
// Method: the real event route (src/api/event-routes.ts) on a real fastify
// server on 127.0.0.1:0 with the real EventBus; one raw TCP client sends the
// GET and never reads (its receive buffer made small from Python's socket
// module, so the kernel holds little), another reads with node's http client.
// Events of about 300 bytes are published until the server's connection count
// shows the drop (it must come past the bound, within 200000 events: the
// array's own events are a few hundred bytes each, so that is changes a real
// array makes over hours).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawn } from 'node:child_process';
import Fastify from 'fastify';
import { addEventRoutes, clientBufferedBytesMax, frame } from '../../src/api/event-routes.js';
import { EventBus } from '../../src/events/bus.js';
import { sseParser } from '../helpers/http.js';

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const stallingClient = `
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /v1/events HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
print("sent", flush=True)
time.sleep(120)
`;

test('a client that never reads is dropped past clientBufferedBytesMax; a reading client gets every event', { timeout: 120_000 }, async (t) => {
  const bus = new EventBus();
  const app = Fastify();
  addEventRoutes(app, () => ({ bus, snapshot: () => [] }));
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.after(() => app.close());
  const port = (app.server.address() as { port: number }).port;
  const connections = (): Promise<number> => new Promise((resolve, reject) => app.server.getConnections((error, count) => (error ? reject(error) : resolve(count))));

  const received: number[] = [];
  const reader = http.get({ host: '127.0.0.1', port, path: '/v1/events' }, (response) => {
    response.setEncoding('utf8').on('data', sseParser<{ type: string; data: { n?: number } }>((event) => {
      if (event.type === 'filler') received.push(event.data.n!);
    }));
  });
  t.after(() => reader.destroy());

  const staller = spawn('python3', ['-c', stallingClient, String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => staller.kill('SIGKILL'));
  await new Promise<void>((resolve) => staller.stdout.once('data', () => resolve()));
  await waitFor('both clients connected to the stream', async () => (await connections()) === 2);

  // In slices, the reading client taking each before the next, as on a real array; until the
  // stalled client is dropped (it may subscribe a moment after its connection is counted).
  const filler = 'x'.repeat(300);
  const eventsMax = 200_000;
  let published = 0;
  while (published < eventsMax && (await connections()) === 2) {
    for (let i = 0; i < 500; i++) bus.publish('filler', { n: published++, filler });
    // The reading client is in this process: let it take what it was sent before the next slice.
    await waitFor(`the reading client keeping up (${received.length} of ${published})`, () => received.length === published);
  }
  assert.equal(await connections(), 1, `the stalled client dropped within ${eventsMax} events of about 400 bytes`);
  const frameBytes = Buffer.byteLength(frame({ id: bus.lastId, at: new Date().toISOString(), type: 'filler', data: { n: published, filler } }));
  assert.ok(published * frameBytes > clientBufferedBytesMax, `dropped past the bound, not before: after ${published} events of ${frameBytes} bytes`);
  await waitFor(`the reading client to get all ${published} events`, () => received.length === published, 60_000);
  assert.ok(received.every((n, i) => n === i), 'every event once, in order');
});
