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
// The same for the takeover without the primary (B dies while applying or
// promoting) and for the two resyncs after a takeover (`--swap`, and
// `--discard site-b` that makes A the primary again): the array dies at each
// named step, comes back, and the same command run again converges.

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
    await waitFor('the link both ways', async () => (await connected(site.a)) && (await connected(site.b)), 30_000, 100);
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

/** Sends a command until it answers 200 (the array may still be coming back); its answer. */
async function untilOk(t: { diagnostic: (s: string) => void }, what: string, send: () => Promise<{ status: number; json: any }>): Promise<any> {
  let result: unknown;
  await waitFor(`${what} to complete when run again`, async () => {
    const response = await send();
    if (response.status === 200) result = response.json;
    else t.diagnostic(`${what} again: ${response.status} ${JSON.stringify(response.json).slice(0, 200)}`);
    return response.status === 200;
  }, 60_000, 500);
  return result;
}

/** After the crash: B the primary of the group (A receiving), lag 0, a write on B replicated, identical. */
async function convergedOnB(site: Awaited<ReturnType<typeof startSite>>): Promise<void> {
  await waitFor('B primary, PAIR, lag 0', async () => (await display(site.b)).every((p) => p.direction === 'site-b->site-a' && p.status === 'PAIR' && p.lagRecords === 0), 60_000, 100);
  runOk('qemu-io', ['-f', 'raw', site.b.uri('svol0'), '-c', 'write -P 0x75 12M 1M', '-c', 'flush']);
  await waitFor('lag 0 on B', async () => (await display(site.b)).every((p) => p.lagRecords === 0), 60_000, 100);
  runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', site.a.uri('pvol0'), site.b.uri('svol0')]);
}

for (const step of ['takeover.apply.before', 'takeover.promote.before', 'takeover.promote.after']) {
  test(`takeover without the primary: B dies at ${step}; takeover run again completes it`, { timeout: 180_000 }, async (t) => {
    const site = await startSite(t, { volumes: 1, volumeSize: '32MiB', envA: {}, envB: { TWINSTORE_CRASH_AT: step } });
    runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x71 0 2M', '-c', 'flush']);
    await waitFor('PAIR with lag 0', async () => (await display(site.a)).every((p) => p.status === 'PAIR' && p.lagRecords === 0), 60_000, 100);
    await site.a.kill9();

    const first = await site.b.api('POST', '/v1/takeover', { group: 'g1' }).catch((error: Error) => ({ status: 0, json: error.message }));
    t.diagnostic(`first takeover: ${first.status} ${JSON.stringify(first.json).slice(0, 200)}`);
    await waitFor(`B to die at ${step}`, () => exited(site.b), 30_000, 50);
    delete site.b.env.TWINSTORE_CRASH_AT;
    await startWithin(site.b, 'B');
    const again = await untilOk(t, 'takeover', () => site.b.api('POST', '/v1/takeover', { group: 'g1' }));
    t.diagnostic(`takeover run again: ${JSON.stringify(again)}`);
    assert.equal(again.kind, 'takeover');
    assert.equal((await display(site.b))[0]!.status, 'SSWS');
    runOk('qemu-io', ['-f', 'raw', site.b.uri('svol0'), '-c', 'write -P 0x74 8M 1M', '-c', 'flush']);

    await startWithin(site.a, 'A');
    await waitFor('A FENCED', async () => (await display(site.a))[0]!.status === 'FENCED', 30_000, 100);
    await waitFor('the link both ways', async () => (await connected(site.a)) && (await connected(site.b)), 30_000, 100);
    await untilOk(t, 'resync --swap', () => site.b.api('POST', '/v1/pairs/resync', { group: 'g1', swap: true, discard: 'site-a' }));
    await convergedOnB(site);
  });
}

const afterTakeover: Array<{ step: string; dies: 'a' | 'b'; command: 'resync --swap' | 'resync --discard site-b' }> = [
  { step: 'resync-swap.reverse.before', dies: 'a', command: 'resync --swap' },
  { step: 'resync-swap.reverse.after', dies: 'a', command: 'resync --swap' },
  { step: 'resync-swap.resync.before', dies: 'b', command: 'resync --swap' },
  { step: 'reclaim.epoch.before', dies: 'a', command: 'resync --discard site-b' },
  { step: 'reclaim.epoch.after', dies: 'a', command: 'resync --discard site-b' },
  { step: 'resync-swap.resync.before', dies: 'a', command: 'resync --discard site-b' },
];

for (const { step, dies, command } of afterTakeover) {
  test(`after a takeover, ${command}: ${dies === 'a' ? 'A' : 'B'} dies at ${step}; the command run again converges`, { timeout: 180_000 }, async (t) => {
    const site = await startSite(t, { volumes: 1, volumeSize: '32MiB', envA: {}, envB: {} });
    runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x71 0 2M', '-c', 'flush']);
    await waitFor('PAIR with lag 0', async () => (await display(site.a)).every((p) => p.status === 'PAIR' && p.lagRecords === 0), 60_000, 100);
    await site.a.kill9();
    assert.equal((await site.b.api('POST', '/v1/takeover', { group: 'g1' })).json.kind, 'takeover');
    runOk('qemu-io', ['-f', 'raw', site.b.uri('svol0'), '-c', 'write -P 0x74 8M 1M', '-c', 'flush']);
    const victim = dies === 'a' ? site.a : site.b;
    victim.env.TWINSTORE_CRASH_AT = step;
    await startWithin(site.a, 'A');
    await waitFor('A FENCED', async () => (await display(site.a))[0]!.status === 'FENCED', 30_000, 100);
    await waitFor('the link both ways', async () => (await connected(site.a)) && (await connected(site.b)), 30_000, 100);
    if (dies === 'b') {
      // B was started before the switch was set: restart it with it.
      await site.b.kill9();
      await startWithin(site.b, 'B');
      await waitFor('the link both ways', async () => (await connected(site.a)) && (await connected(site.b)), 30_000, 100);
    }
    const send = command === 'resync --swap'
      ? () => site.b.api('POST', '/v1/pairs/resync', { group: 'g1', swap: true })
      : () => site.a.api('POST', '/v1/pairs/resync', { group: 'g1', discard: 'site-b' });
    const first = await send().catch((error: Error) => ({ status: 0, json: error.message }));
    t.diagnostic(`first ${command}: ${first.status} ${JSON.stringify(first.json).slice(0, 200)}`);
    await waitFor(`${dies === 'a' ? 'A' : 'B'} to die at ${step}`, () => exited(victim), 30_000, 50);
    delete victim.env.TWINSTORE_CRASH_AT;
    await startWithin(victim, dies === 'a' ? 'A' : 'B');
    await waitFor('the link both ways', async () => (await connected(site.a)) && (await connected(site.b)), 30_000, 100);
    await untilOk(t, command, send);

    if (command === 'resync --swap') {
      await convergedOnB(site);
      return;
    }
    await waitFor('A primary, PAIR, lag 0', async () => (await display(site.a)).every((p) => p.direction === 'site-a->site-b' && p.status === 'PAIR' && p.lagRecords === 0), 60_000, 100);
    runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x76 12M 1M', '-c', 'flush']);
    await waitFor('lag 0 on A', async () => (await display(site.a)).every((p) => p.lagRecords === 0), 60_000, 100);
    runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', site.a.uri('pvol0'), site.b.uri('svol0')]);
    runOk('qemu-io', ['-r', '-f', 'raw', site.b.uri('svol0'), '-c', 'read -P 0 8M 1M']); // B's write since the takeover was discarded
  });
}
