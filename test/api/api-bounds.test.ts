// Goal (issue 12): idle, slow or many connections cannot stop the management API
// from answering, and each is closed within a named bound (src/api/connection-bounds.ts);
// the Authorization scheme is case-insensitive (RFC 7235).
// Method: a real `twinstore serve` whose descriptor limit is lowered to 1024 with
// prlimit (as on a host with `nofile` 1024). Raw TCP sockets from other loopback
// addresses: 600 that connect and send nothing (127.0.0.2) and 600 slowloris ones
// that send a request line and then one header line a second (127.0.0.3). While
// they try, the CLI's own way (fetch from 127.0.0.1) must get `GET /v1/status`
// answered within a bound; past the per-address cap the server closes them at
// once; and every one it held is closed within the idle or header bound. Then
// connections from many addresses: no more than the total cap are held. A
// request that is answered after longer than the idle bound (pair split waiting
// for a paused receiver) is not cut. Finally `Authorization: BEARER tok` and
// `bearer tok` are accepted.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { runOk, startArray, type RunningArray } from '../helpers/array.js';
import { applyOps } from '../helpers/nbdsh.js';
import { setRestorePaused, startSite, waitFor } from '../helpers/replication.js';
import { API_BOUNDS } from '../../src/api/connection-bounds.js';

/** How long `GET /v1/status` may take while the API is under attack, on a busy 2-core machine. */
const answerMsMax = 5_000;
/** Slack on top of a server bound, for a loaded machine. */
const slackMs = 20_000;

interface Client {
  socket: net.Socket;
  closed: boolean;
}

/** Opens `count` raw connections from `localAddress`, `batch` at a time (the listen backlog is bounded). */
async function openMany(port: number, localAddress: string, count: number, onConnect: (socket: net.Socket) => void = () => undefined): Promise<Client[]> {
  const clients: Client[] = [];
  const batch = 50;
  for (let first = 0; first < count; first += batch) {
    const opened = Array.from({ length: Math.min(batch, count - first) }, () => new Promise<void>((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port, localAddress });
      const client: Client = { socket, closed: false };
      clients.push(client);
      socket.on('connect', () => {
        onConnect(socket);
        resolve();
      });
      socket.on('error', () => undefined);
      socket.on('close', () => {
        client.closed = true;
        resolve();
      });
    }));
    await Promise.all(opened);
  }
  return clients;
}

const openCount = (clients: Client[]): number => clients.filter((c) => !c.closed).length;

async function status(array: RunningArray, authorization = `Bearer ${array.token()}`): Promise<{ status: number; ms: number }> {
  const started = Date.now();
  const response = await fetch(`http://${array.ready!.api}/v1/status`, { headers: { authorization }, signal: AbortSignal.timeout(answerMsMax * 2) });
  await response.arrayBuffer();
  return { status: response.status, ms: Date.now() - started };
}

function closeAll(clients: Client[]): void {
  for (const client of clients) client.socket.destroy();
}

test('idle and slowloris connections do not stop the API, and each is closed within its bound', { timeout: 180_000 }, async (t) => {
  const array = await startArray(t);
  runOk('prlimit', ['--pid', String(array.child!.pid), '--nofile=1024:1024']);
  const port = Number(array.ready!.api.split(':').pop());
  const slow: net.Socket[] = [];
  const trickle = setInterval(() => {
    for (const socket of slow) if (!socket.destroyed) socket.write('X-Slow: 1\r\n');
  }, 1000);
  t.after(() => clearInterval(trickle));

  const idle = await openMany(port, '127.0.0.2', 600);
  const slowloris = await openMany(port, '127.0.0.3', 600, (socket) => {
    socket.write('GET /v1/status HTTP/1.1\r\nHost: twinstore\r\n');
    slow.push(socket);
  });
  t.after(() => closeAll([...idle, ...slowloris]));
  const opened = Date.now();

  const answers: number[] = [];
  for (let i = 0; i < 3; i++) {
    const answer = await status(array).catch((error: Error) => ({ status: -1, ms: Date.now() - opened, error: `${error.message} ${String(error.cause ?? '')}` }));
    assert.equal(answer.status, 200, `GET /v1/status while 1200 connections try to hold the API: ${JSON.stringify(answer)}`);
    assert.ok(answer.ms <= answerMsMax, `GET /v1/status took ${answer.ms} ms (bound ${answerMsMax} ms)`);
    answers.push(answer.ms);
  }
  const cap = API_BOUNDS.connectionsPerAddressMax;
  await waitFor(`the server to hold at most ${cap} connections per address (idle: ${openCount(idle)}, slowloris: ${openCount(slowloris)} open)`,
    () => openCount(idle) <= cap && openCount(slowloris) <= cap, 10_000);
  t.diagnostic(`status answered in ${answers.join(', ')} ms; held after the per-address cap: idle ${openCount(idle)}, slowloris ${openCount(slowloris)}`);

  const boundMs = Math.max(API_BOUNDS.idleMs, API_BOUNDS.headersMs + API_BOUNDS.checkIntervalMs) + slackMs;
  await waitFor(`the server to close every idle and slowloris connection within ${boundMs} ms (idle: ${openCount(idle)}, slowloris: ${openCount(slowloris)} still open)`,
    () => openCount(idle) === 0 && openCount(slowloris) === 0, boundMs, 200);
  t.diagnostic(`all closed by the server ${Date.now() - opened} ms after they were opened`);
  assert.equal((await status(array)).status, 200);
});

test('connections from many addresses: at most the total cap is held, and the API answers once they are closed', { timeout: 120_000 }, async (t) => {
  const array = await startArray(t);
  const port = Number(array.ready!.api.split(':').pop());
  const perAddress = Math.floor(API_BOUNDS.connectionsPerAddressMax / 2);
  const addresses = Math.ceil((API_BOUNDS.connectionsMax * 1.5) / perAddress);
  const clients: Client[] = [];
  t.after(() => closeAll(clients));
  for (let i = 0; i < addresses; i++) clients.push(...(await openMany(port, `127.0.1.${i + 1}`, perAddress)));
  await waitFor(`the server to hold at most ${API_BOUNDS.connectionsMax} connections (${openCount(clients)} of ${clients.length} open)`,
    () => openCount(clients) <= API_BOUNDS.connectionsMax, 10_000);
  t.diagnostic(`${clients.length} connections from ${addresses} addresses: ${openCount(clients)} held`);
  await waitFor(`the server to close the idle connections (${openCount(clients)} open)`, () => openCount(clients) === 0, API_BOUNDS.idleMs + slackMs, 200);
  assert.equal((await status(array)).status, 200);
});

test('the Authorization scheme is case-insensitive; the token is not', { timeout: 60_000 }, async (t) => {
  const array = await startArray(t);
  const token = array.token();
  for (const scheme of ['Bearer', 'BEARER', 'bearer', 'bEaReR']) {
    assert.equal((await status(array, `${scheme} ${token}`)).status, 200, `${scheme} <token>`);
  }
  assert.equal((await status(array, `Bearer  ${token}`)).status, 200, 'two spaces after the scheme');
  assert.equal((await status(array, `BEARER ${token.toUpperCase()}x`)).status, 401);
  assert.equal((await status(array, `Basic ${token}`)).status, 401);
  assert.equal((await status(array, token)).status, 401);
});

test('a request answered after longer than the idle bound is not cut', { timeout: 180_000 }, async (t) => {
  const site = await startSite(t, { volumes: 1, volumeSize: '16MiB', journalSize: '129MiB', envA: {}, envB: {} });
  await setRestorePaused(site.b, true);
  applyOps(site.a.uri('pvol0'), site.dir, { writes: [{ offset: 0, length: 65536, byte: 7 }], trims: [], flush: true });
  // split waits up to 30 s for B to apply up to the split point, silent on its socket meanwhile.
  const started = Date.now();
  const { status: code, json } = await site.a.api('POST', '/v1/pairs/split', { group: 'g1' });
  const ms = Date.now() - started;
  t.diagnostic(`pair split answered after ${ms} ms: ${code} ${JSON.stringify(json)}`);
  assert.equal(code, 200, JSON.stringify(json));
  assert.ok(ms > API_BOUNDS.idleMs, `the split took ${ms} ms, not longer than the idle bound ${API_BOUNDS.idleMs} ms: the test shows nothing`);
  assert.equal(json.atSplitPoint, false);
});
