// Goal: a peer array that sends malformed link bodies (another version, or one that lies) is
// refused where the body comes in (src/replication/protocol.ts) and harms nothing: a pair.join
// whose pair has a LUN that is not a number is answered BAD_REQUEST naming the field, and B holds
// no group afterwards; a journal.read answer that reports a pair status no array has is refused
// with LINK_PROTOCOL naming the field (logged once at warn), and B's pair keeps the status it
// had. On the code before protocol.ts, B joined the group with LUN "zero", and adopted the
// status "HACKED" and persisted it.
// Method: B is a real `twinstore serve` (test/helpers/array.ts) whose peer site-a is this test:
// a LinkServer that B pulls from, and a PeerLink to B's link port that sends pair.prepare and
// pair.join, both speaking the real link protocol (src/link) with B's key.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { LinkServer, PeerLink, readPskFile, type LinkRequest, type LinkResponse } from '../../src/link/index.js';
import { isTwinstoreError } from '../../src/errors.js';
import { createVolume, startArray, tempDir, writePsk, type RunningArray } from '../helpers/array.js';
import { cliOk, displayCli, waitFor } from '../helpers/replication.js';
import { captureLog, once } from '../link/helpers.js';

const HOST = '127.0.0.1';
const sizeBytes = 16 * 2 ** 20;
const epoch = { counter: 1, arrayId: 'site-a', nonce: '0123456789abcdef' };
const pair = { pvolLun: 0, pvolName: 'pvol', svolName: 'svol', localVolumeId: -1, sizeBytes, status: 'COPY', statusReason: null, copyOffset: 0, copyLastSeq: null };
const prepare = { group: 'g1', svol: 'svol', journal: 'jnl', sizeBytes, master: 'site-a' };
const join = { group: 'g1', master: 'site-a', epoch, journal: 'jnl', remoteJournal: 'jnl', pair };

interface FakeMaster {
  b: RunningArray;
  /** Sends to B over the link, as site-a. */
  toB: PeerLink;
  /** journal.read requests B sent. */
  pulls: unknown[];
}

/** B, with site-a (this test) as its peer; `answer` is what site-a answers B's journal.read with. */
async function startWithFakeMaster(t: TestContext, answer: (request: LinkRequest) => LinkResponse): Promise<FakeMaster> {
  const psk = writePsk(tempDir(t));
  const identity = { arrayId: 'site-a', psk: readPskFile(psk) };
  const pulls: unknown[] = [];
  const server = new LinkServer({
    identity,
    isPeer: (id) => id === 'site-b',
    log: captureLog().log,
    handler: async (_peer, request) => {
      if (request.method !== 'journal.read') throw new Error(`site-a does not answer ${request.method} in this test`);
      pulls.push(request.body);
      return answer(request);
    },
  });
  t.after(() => server.close());
  const { port } = await server.listen(HOST, 0);
  const b = await startArray(t, { id: 'site-b', pskFile: psk, extraConfig: `peers:\n  - id: site-a\n    link: ${HOST}:${port}` });
  createVolume(b, 'svol', '16MiB');
  cliOk(b, ['journal', 'create', 'jnl', '--size', '160MiB']);
  const [host, linkPort] = b.ready!.link!.split(':');
  const toB = new PeerLink({ identity, peerId: 'site-b', address: { host: host!, port: Number(linkPort) }, log: captureLog().log });
  t.after(() => toB.close());
  const up = once(toB, 'up', 30_000);
  toB.start();
  await up;
  return { b, toB, pulls };
}

function role(b: RunningArray, volume: string): string {
  return (JSON.parse(cliOk(b, ['volume', 'show', volume, '--json'])) as { role: string }).role;
}

test('a pair.join whose pair LUN is not a number is refused with BAD_REQUEST naming the field; B holds no group', { timeout: 120_000 }, async (t) => {
  const { b, toB } = await startWithFakeMaster(t, () => ({ body: null, payload: [] }));
  await toB.request('pair.prepare', prepare);
  await assert.rejects(toB.request('pair.join', { ...join, pair: { ...pair, pvolLun: 'zero' } }), (error: unknown) => {
    assert.ok(isTwinstoreError(error), String(error));
    assert.equal(error.code, 'BAD_REQUEST', error.message);
    assert.match(error.message, /^pair\.pvolLun must be a whole number/);
    return true;
  });
  const shown = b.cli(['pair', 'display', '--group', 'g1', '--json']);
  assert.equal(shown.code, 1, `B holds no group g1: ${shown.stdout}`);
  assert.match(shown.stderr, /GROUP_NOT_FOUND/);
  assert.equal(role(b, 'svol'), 'simplex', 'the S-VOL is untouched');
  assert.equal(role(b, 'jnl'), 'journal-free', 'the journal is untouched');
});

test('a journal.read answer with a pair status no array has is refused with LINK_PROTOCOL; B keeps its status', { timeout: 120_000 }, async (t) => {
  const lie = { records: [], masterNextSeq: 0, pairs: [{ pvolLun: 0, status: 'HACKED', statusReason: 'a lie' }] };
  const { b, toB, pulls } = await startWithFakeMaster(t, () => ({ body: lie, payload: [] }));
  await toB.request('pair.prepare', prepare);
  await toB.request('pair.join', join);
  // Each refused answer is followed by a retry: three pulls mean B has read the lie at least twice.
  await waitFor('B to pull from site-a three times', () => pulls.length >= 3, 60_000);
  const [row] = displayCli(b);
  assert.equal(row?.status, 'COPY', `B's pair keeps the status it joined with: ${JSON.stringify(row)}`);
  // No reason from the lie; 'link-down' only if a loaded machine's pause dropped the fake master's link just then.
  assert.ok(row?.statusReason === null || row?.statusReason === 'link-down', `B's pair keeps its reason: ${JSON.stringify(row)}`);
  const warned = b.stderr.split('\n').filter((line) => line.includes('journal.read answer: pairs[0].status must be one of'));
  assert.equal(warned.length, 1, `B warns once about the refused answer, naming the field: ${b.stderr.slice(-3000)}`);
  assert.match(warned[0]!, /"level":40/);
  assert.match(warned[0]!, /LINK_PROTOCOL/);
});
