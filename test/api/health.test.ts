// Goal: a probe (a cluster manager, a load balancer, curl) can ask an array
// whether its process is up (/healthz) and whether it is ready (/readyz: every
// journal group open, no sending group still holding host writes at start for
// its peer's epoch), without the API token (issue 16).
// Method: real `twinstore serve` processes and real HTTP without an
// Authorization header. A paired site where B is down while A restarts with a
// long takeover.startHoldMs: A's /readyz is 503 naming the group and the hold
// while /healthz is 200; once B is back and has told its epoch, /readyz is 200.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startArray } from '../helpers/array.js';
import { startSite, startWithin, waitFor } from '../helpers/replication.js';

/** A GET with no Authorization header at all: what a probe sends. */
function probe(address: string, route: string): Promise<{ status: number; json: any }> {
  const at = address.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const request = http.get({ host: address.slice(0, at), port: Number(address.slice(at + 1)), path: route, agent: false }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: response.statusCode ?? 0, json: text === '' ? undefined : JSON.parse(text) });
      });
      response.on('error', reject);
    });
    request.setTimeout(30_000, () => request.destroy(new Error(`GET ${route} on ${address}: no answer within 30 s`)));
    request.on('error', reject);
  });
}

test('/healthz and /readyz answer 200 without a token; other routes still need it', { timeout: 60_000 }, async (t) => {
  const array = await startArray(t);
  const health = await probe(array.ready!.api, '/healthz');
  assert.equal(health.status, 200, JSON.stringify(health.json));
  assert.equal(health.json.ok, true);
  const ready = await probe(array.ready!.api, '/readyz');
  assert.equal(ready.status, 200, JSON.stringify(ready.json));
  assert.deepEqual(ready.json, { ready: true });
  const status = await probe(array.ready!.api, '/v1/status');
  assert.equal(status.status, 401, 'the probes are open, the API is not');
});

test('/readyz is 503 naming the group while a restarted primary holds writes for its peer, 200 once the peer answers', { timeout: 240_000 }, async (t) => {
  const site = await startSite(t, { volumes: 1, volumeSize: '16MiB', envA: {}, envB: {}, extraConfigA: 'takeover:\n  peerTimeoutMs: 2000\n  startHoldMs: 120000' });
  await site.b.stop();
  await site.a.stop();
  await startWithin(site.a, 'A');
  const health = await probe(site.a.ready!.api, '/healthz');
  assert.equal(health.status, 200, 'the process is up while it waits');
  const waiting = await probe(site.a.ready!.api, '/readyz');
  assert.equal(waiting.status, 503, `not ready while B has not told its epoch: ${JSON.stringify(waiting.json)}`);
  assert.equal(waiting.json.ready, false);
  assert.equal(waiting.json.error.code, 'ARRAY_STARTING');
  assert.ok(waiting.json.reasons.some((r: string) => /group g1: start hold/.test(r)), `the reason names the group and the hold: ${JSON.stringify(waiting.json)}`);

  await startWithin(site.b, 'B');
  await waitFor('A ready (200 on /readyz) once B is back', async () => (await probe(site.a.ready!.api, '/readyz')).status === 200, 60_000, 200);
  assert.equal((await probe(site.b.ready!.api, '/readyz')).status, 200, 'B (the receiver) is ready too');
});
