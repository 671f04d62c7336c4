// Goal: the event stream (GET /v1/events, `twinstore events`) tells a client
// the array's state and then each change once, in order, and a client that
// comes back with Last-Event-ID gets what it missed and nothing twice
// (issue 16).
// Method: real arrays; SSE read with node's http client in this process and the
// CLI (`events --now --json`) as a child process. A split, a resync and a
// planned swap (takeover on B with A up) on two arrays, with a client on each
// array that stays, and one on A that drops after the split and comes back with
// its last id after the resync; an id of another run gets `resynced` and a
// fresh snapshot.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import readline from 'node:readline';
import { spawn } from 'node:child_process';
import { projectRoot, startArray, createVolume, type RunningArray } from '../helpers/array.js';
import { display, startSite, waitFor, waitForPairAndLag0 } from '../helpers/replication.js';
import { sseParser } from '../helpers/http.js';

interface Event {
  id: string;
  at: string;
  type: string;
  data: Record<string, any>;
}

interface Client {
  events: Event[];
  status: number;
  close: () => void;
  until: (what: string, check: (event: Event) => boolean, timeoutMs?: number) => Promise<Event>;
}

/** An SSE client on the array's API: every event it reads is kept in order. */
function subscribe(array: RunningArray, options: { lastEventId?: string; token?: string } = {}): Promise<Client> {
  const at = array.ready!.api.lastIndexOf(':');
  const headers: Record<string, string> = { authorization: `Bearer ${options.token ?? array.token()}`, accept: 'text/event-stream' };
  if (options.lastEventId !== undefined) headers['last-event-id'] = options.lastEventId;
  return new Promise((resolve, reject) => {
    const request = http.get({ host: array.ready!.api.slice(0, at), port: Number(array.ready!.api.slice(at + 1)), path: '/v1/events', headers, agent: false }, (response) => {
      const events: Event[] = [];
      response.setEncoding('utf8').on('data', sseParser<Event>((event) => events.push(event)));
      response.on('error', () => undefined);
      const until = async (what: string, check: (event: Event) => boolean, timeoutMs = 60_000): Promise<Event> => {
        let found: Event | undefined;
        await waitFor(`event: ${what} (seen: ${events.slice(-5).map((e) => e.type).join(', ')})`, () => (found = events.find(check)) !== undefined, timeoutMs, 50);
        return found!;
      };
      resolve({ events, status: response.statusCode ?? 0, close: () => request.destroy(), until });
    });
    request.on('error', reject);
  });
}

const statusOf = (client: Client, pvol: string): Event[] => client.events.filter((e) => e.type === 'pair-status' && (e.data.pvol === pvol || e.data.svol === pvol));

test('events: the token is needed; --now prints the snapshot and exits; an unknown id gets resynced and a snapshot', { timeout: 60_000 }, async (t) => {
  const array = await startArray(t);
  createVolume(array, 'vol1', '16MiB');
  const refused = await subscribe(array, { token: 'wrong' });
  assert.equal(refused.status, 401, 'the stream needs the API token');
  refused.close();

  const now = array.cli(['events', '--now', '--json']);
  assert.equal(now.code, 0, now.stderr);
  const lines = now.stdout.trim().split('\n').map((line) => JSON.parse(line) as Event);
  assert.deepEqual(lines.map((e) => e.type), ['volume', 'snapshot-end'], now.stdout);
  assert.equal(lines[0]!.data.volume, 'vol1');

  const client = await subscribe(array);
  t.after(() => client.close());
  await client.until('snapshot-end', (e) => e.type === 'snapshot-end');
  createVolume(array, 'vol2', '16MiB');
  const created = await client.until('volume-created vol2', (e) => e.type === 'volume-created' && e.data.volume === 'vol2');
  assert.ok(Number(created.id.split('.')[1]) > Number(client.events[0]!.id.split('.')[1]), 'a change has a later id than the snapshot');

  const stale = await subscribe(array, { lastEventId: 'zz.3' });
  t.after(() => stale.close());
  await stale.until('snapshot-end after resynced', (e) => e.type === 'snapshot-end');
  assert.equal(stale.events[0]!.type, 'resynced', 'an id of another run: resynced first');
  assert.deepEqual(stale.events.filter((e) => e.type === 'volume').map((e) => e.data.volume).sort(), ['vol1', 'vol2'], 'then a fresh snapshot');
});

test('twinstore events --json across a restart of the array: a notice, then resynced and a fresh snapshot', { timeout: 120_000 }, async (t) => {
  const array = await startArray(t);
  createVolume(array, 'vol1', '16MiB');
  const child = spawn(process.execPath, [path.join(projectRoot, 'bin', 'twinstore.js'), '--config', array.configFile, 'events', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => { child.kill('SIGKILL'); });
  const lines: any[] = [];
  readline.createInterface({ input: child.stdout }).on('line', (line) => lines.push(JSON.parse(line)));
  const seen = (what: string, check: (line: any) => boolean): Promise<void> => waitFor(`events --json: ${what} (lines: ${JSON.stringify(lines.slice(-4))})`, () => lines.some(check), 60_000, 50);
  await seen('the first snapshot-end', (line) => line.type === 'snapshot-end');
  await array.stop();
  await seen('a line saying the stream ended or the array is unreachable', (line) => line.unreachable === true);
  assert.equal(child.exitCode, null, 'events goes on while the array is away');
  await array.start();
  await seen('resynced after the restart (its last id is of the earlier run)', (line) => line.type === 'resynced');
  const from = lines.findIndex((line) => line.type === 'resynced');
  await waitFor('a fresh snapshot after resynced', () => lines.slice(from).some((line) => line.type === 'snapshot-end'), 60_000, 50);
  assert.ok(lines.slice(from).some((line) => line.type === 'volume' && line.data.volume === 'vol1'), 'the fresh snapshot has the volume');
});

test('events under split, resync and a planned swap: every status change once, in order; Last-Event-ID resumes exactly', { timeout: 300_000 }, async (t) => {
  const site = await startSite(t, { volumes: 1, volumeSize: '16MiB', envA: {}, envB: {} });
  await waitFor('B PAIR', async () => (await display(site.b))[0]!.status === 'PAIR', 60_000, 200);
  const onA = await subscribe(site.a);
  const onB = await subscribe(site.b);
  const dropping = await subscribe(site.a);
  t.after(() => { onA.close(); onB.close(); dropping.close(); });
  for (const client of [onA, onB, dropping]) await client.until('snapshot-end', (e) => e.type === 'snapshot-end');
  const snapshotPair = onA.events.find((e) => e.type === 'pair')!;
  assert.equal(snapshotPair.data.status, 'PAIR', 'the snapshot has the pair as it is');
  assert.ok(onA.events.some((e) => e.type === 'peer' && e.data.peer === 'site-b' && e.data.up === true), 'and the peer, linked');
  assert.ok(onA.events.some((e) => e.type === 'group' && e.data.group === 'g1' && e.data.role === 'master'), 'and the group');

  assert.equal((await site.a.api('POST', '/v1/pairs/split', { group: 'g1' })).status, 200);
  const split = await dropping.until('PSUS on A', (e) => e.type === 'pair-status' && e.data.status === 'PSUS');
  dropping.close();
  assert.equal((await site.a.api('POST', '/v1/pairs/resync', { group: 'g1' })).status, 200);
  await waitForPairAndLag0(site);
  await onA.until('PAIR again on A', (e) => e.type === 'pair-status' && e.data.status === 'PAIR' && e.data.from === 'COPY');
  await waitFor('B PAIR after the resync', async () => (await display(site.b))[0]!.status === 'PAIR', 60_000, 200);

  const resumed = await subscribe(site.a, { lastEventId: split.id });
  t.after(() => resumed.close());
  await resumed.until('the PAIR it missed', (e) => e.type === 'pair-status' && e.data.status === 'PAIR');
  const after = (list: Event[]): string[] => list.filter((e) => Number(e.id.split('.')[1]) > Number(split.id.split('.')[1])).map((e) => e.id);
  assert.ok(!resumed.events.some((e) => e.type === 'snapshot-end' || e.type === 'resynced'), 'a kept id gets no snapshot');
  assert.deepEqual(resumed.events.map((e) => e.id).slice(0, after(onA.events).length), after(onA.events), 'the events after its id, as a client that stayed saw them: none lost, none repeated');

  const taken = await site.b.api('POST', '/v1/takeover', { group: 'g1', force: false });
  assert.equal(taken.status, 200, JSON.stringify(taken.json));
  assert.equal(taken.json.kind, 'swap');
  await onB.until('takeover done on B', (e) => e.type === 'takeover-step' && e.data.step === 'done' && e.data.kind === 'swap');
  await onB.until('B the master', (e) => e.type === 'pair-status' && e.data.role === 'master');
  await onA.until('A the receiver', (e) => e.type === 'pair-status' && e.data.role === 'restore');

  const sequence = statusOf(onA, 'site-a:pvol0').map((e) => `${e.data.role} ${e.data.status}`);
  t.diagnostic(`A's pair-status events: ${sequence.join(' → ')}; B's: ${statusOf(onB, 'site-b:svol0').map((e) => `${e.data.role} ${e.data.status}`).join(' → ')}`);
  assert.deepEqual(sequence.slice(0, 3), ['master PSUS', 'master COPY', 'master PAIR'], 'split, resync, copied: each once, in order');
  for (const client of [onA, onB]) {
    const changes = client.events.filter((e) => e.type === 'pair-status');
    for (let i = 1; i < changes.length; i++) {
      const [before, now] = [changes[i - 1]!, changes[i]!];
      assert.notEqual(`${before.data.role} ${before.data.status} ${before.data.statusReason}`, `${now.data.role} ${now.data.status} ${now.data.statusReason}`, 'no change is reported twice');
      assert.equal(now.data.from, before.data.status, `each change starts where the one before ended: ${JSON.stringify(now.data)}`);
    }
    const ids = client.events.filter((e) => e.type !== 'group' && e.type !== 'pair' && e.type !== 'peer' && e.type !== 'volume' && e.type !== 'snapshot-end').map((e) => Number(e.id.split('.')[1]));
    for (let i = 1; i < ids.length; i++) assert.ok(ids[i]! > ids[i - 1]!, 'ids grow');
  }
  const lastA = statusOf(onA, 'site-a:pvol0').at(-1)!;
  const lastB = statusOf(onB, 'site-b:svol0').at(-1)!;
  assert.equal(lastA.data.direction, lastB.data.direction, 'after the swap both arrays name the same direction');
  assert.equal(lastB.data.direction, 'site-b->site-a');
});
