// Goal: a planned swap is a sequence of persisted steps, so an array that dies
// at any named step (TWINSTORE_CRASH_AT, src/util/crash-at.ts) comes back and
// the same `takeover` command, run again, completes the swap: roles flipped,
// replication from the new primary, volumes identical, nothing lost.
// Method: for each step of the array taking over (promote) and of the old
// primary (demote), before and after it: two real arrays, the crash point set
// on the array that must die there, `takeover` sent to B (it fails or never
// answers), the dead array restarted without the switch, `takeover` sent
// again until it answers, then a write on the new primary, lag 0 and
// `qemu-img compare`. When A dies while freezing, the freeze never answers:
// B takes over without it (SSWS), and A, back and FENCED, converges through
// `pair resync --swap` (with `--discard site-a` if A held writes B never got).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runOk, type RunningArray } from '../helpers/array.js';
import { display, startSite, startWithin, waitFor } from '../helpers/replication.js';

const steps: Array<{ step: string; dies: 'a' | 'b' }> = [
  { step: 'swap.promote.before', dies: 'b' },
  { step: 'swap.promote.after', dies: 'b' },
  { step: 'swap.demote.before', dies: 'a' },
  { step: 'swap.demote.after', dies: 'a' },
];

function exited(array: RunningArray): boolean {
  return array.child !== undefined && (array.child.exitCode !== null || array.child.signalCode !== null);
}

/** Through the API, not the CLI: a blocking CLI call would stall the link proxy running in this process. */
async function connected(array: RunningArray): Promise<boolean> {
  return ((await array.api('GET', '/v1/peers')).json as { peers: Array<{ connected: boolean }> }).peers[0]!.connected;
}

for (const { step, dies } of steps) {
  test(`planned swap: ${dies === 'a' ? 'A' : 'B'} dies at ${step}; takeover run again completes it`, { timeout: 180_000 }, async (t) => {
    const crash = { TWINSTORE_CRASH_AT: step };
    const site = await startSite(t, { volumes: 1, volumeSize: '32MiB', envA: dies === 'a' ? crash : {}, envB: dies === 'b' ? crash : {} });
    runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x71 0 2M', '-c', 'flush']);
    await waitFor('PAIR with lag 0', async () => (await display(site.a)).every((p) => p.status === 'PAIR' && p.lagRecords === 0), 60_000, 100);
    const victim = dies === 'a' ? site.a : site.b;

    const first = await site.b.api('POST', '/v1/takeover', { group: 'g1' }).catch((error: Error) => ({ status: 0, json: error.message }));
    t.diagnostic(`first takeover: ${first.status} ${JSON.stringify(first.json).slice(0, 200)}`);
    await waitFor(`${dies === 'a' ? 'A' : 'B'} to die at ${step}`, () => exited(victim), 30_000, 50);
    delete victim.env.TWINSTORE_CRASH_AT;
    await startWithin(victim, dies === 'a' ? 'A' : 'B');
    await waitFor('the link both ways', async () => (await connected(site.a)) && (await connected(site.b)), 30_000, 100);

    let result: { kind: string; resumed: boolean } | undefined;
    await waitFor('takeover to complete when run again', async () => {
      const response = await site.b.api('POST', '/v1/takeover', { group: 'g1' });
      if (response.status === 200) result = response.json;
      else t.diagnostic(`takeover again: ${response.status} ${JSON.stringify(response.json).slice(0, 200)}`);
      return response.status === 200;
    }, 60_000, 500);
    t.diagnostic(`takeover run again: ${JSON.stringify(result)}`);
    assert.equal(result!.kind, 'swap');

    await waitFor('B primary, PAIR, lag 0', async () => (await display(site.b)).every((p) => p.direction === 'site-b->site-a' && p.status === 'PAIR' && p.lagRecords === 0), 60_000, 100);
    runOk('qemu-io', ['-f', 'raw', site.b.uri('svol0'), '-c', 'write -P 0x72 4M 1M', '-c', 'flush']);
    await waitFor('lag 0 on B', async () => (await display(site.b)).every((p) => p.lagRecords === 0), 60_000, 100);
    runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', site.a.uri('pvol0'), site.b.uri('svol0')]);
    const a = (await display(site.a))[0]!;
    assert.equal(a.direction, 'site-b->site-a', 'A receives');
  });
}

for (const step of ['swap.freeze.before', 'swap.freeze.after']) {
  test(`planned swap: A dies at ${step}; B takes over without it, and resync --swap converges`, { timeout: 180_000 }, async (t) => {
    const site = await startSite(t, { volumes: 1, volumeSize: '32MiB', envA: { TWINSTORE_CRASH_AT: step }, envB: {} });
    runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x71 0 2M', '-c', 'flush']);
    await waitFor('PAIR with lag 0', async () => (await display(site.a)).every((p) => p.status === 'PAIR' && p.lagRecords === 0), 60_000, 100);

    // The freeze never answers: B takes over without A (the link drops with the request in flight).
    const first = await site.b.api('POST', '/v1/takeover', { group: 'g1' });
    t.diagnostic(`takeover: ${first.status} ${JSON.stringify(first.json).slice(0, 200)}`);
    assert.equal(first.status, 200, JSON.stringify(first.json));
    assert.equal(first.json.kind, 'takeover');
    await waitFor('A to die', () => exited(site.a), 30_000, 50);
    runOk('qemu-io', ['-f', 'raw', site.b.uri('svol0'), '-c', 'write -P 0x73 8M 1M', '-c', 'flush']);

    delete site.a.env.TWINSTORE_CRASH_AT;
    await startWithin(site.a, 'A');
    await waitFor('A FENCED', async () => (await display(site.a))[0]!.status === 'FENCED', 30_000, 100);
    t.diagnostic(`A: ${(await display(site.a))[0]!.statusReason}`);
    let resync = await site.b.api('POST', '/v1/pairs/resync', { group: 'g1', swap: true });
    if (resync.status === 409) {
      // A held writes B never got (the async tail at the failure): only the operator may drop them.
      t.diagnostic(`resync --swap refused: ${JSON.stringify(resync.json).slice(0, 200)}`);
      resync = await site.b.api('POST', '/v1/pairs/resync', { group: 'g1', swap: true, discard: 'site-a' });
    }
    assert.equal(resync.status, 200, JSON.stringify(resync.json));
    await waitFor('B primary, PAIR, lag 0', async () => (await display(site.b)).every((p) => p.status === 'PAIR' && p.lagRecords === 0), 60_000, 100);
    runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', site.a.uri('pvol0'), site.b.uri('svol0')]);
  });
}
