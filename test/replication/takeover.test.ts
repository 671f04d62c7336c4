// Goal: one command on the secondary array makes it the primary. With the
// primary alive it is a planned swap: roles flip on both arrays, replication
// runs the other way with no copy, and a second takeover swaps back. With the
// primary dead it is a takeover (SSWS): the secondary writes, the old primary
// comes back FENCED (it refuses host writes), and `pair resync --swap` makes it
// the receiver, copying only what changed; a takeover on it then swaps back.
// Method: two real arrays (B reaches A through a TCP proxy), qemu-io patterns
// written on whichever side is primary, qemu-img compare after each step, the
// roles read from `volume list` and `pair display`.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { run, runOk, type RunningArray } from '../helpers/array.js';
import { cliOk, display, linkUp, readVolume, startSite, startWithin, waitFor, type Site } from '../helpers/replication.js';

const mib = 2 ** 20;

function write(array: RunningArray, volume: string, pattern: number, offsetMiB: number, lengthMiB: number): void {
  runOk('qemu-io', ['-f', 'raw', array.uri(volume), '-c', `write -P ${pattern} ${offsetMiB}M ${lengthMiB}M`, '-c', 'flush']);
}

/** A loopback port chosen at run time with nothing listening on it (bound on port 0, then closed). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function holds(image: Buffer, pattern: number, offsetMiB: number, lengthMiB: number): boolean {
  return image.subarray(offsetMiB * mib, (offsetMiB + lengthMiB) * mib).every((byte) => byte === pattern);
}

function role(array: RunningArray, volume: string): string {
  const volumes = (JSON.parse(cliOk(array, ['volume', 'list', '--json'])) as { volumes: Array<{ name: string; role: string }> }).volumes;
  return volumes.find((v) => v.name === volume)!.role;
}

async function takeover(array: RunningArray, force = false): Promise<{ kind: string; consistencySeq: number; freezeMs: number; epoch: string; ms: number }> {
  const response = await array.api('POST', '/v1/takeover', { group: 'g1', force });
  assert.equal(response.status, 200, JSON.stringify(response.json));
  return response.json;
}

async function lag0(primary: RunningArray): Promise<void> {
  await waitFor('PAIR with lag 0 on the primary', async () => (await display(primary)).every((p) => p.status === 'PAIR' && p.lagRecords === 0), 60_000, 100);
}

function compare(site: Site): void {
  runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', site.a.uri('pvol0'), site.b.uri('svol0')]);
}

/** A and B paired (one 64 MiB pair), `pattern` written on A at 0 and replicated. */
async function pairedSite(t: TestContext, pattern: number, lengthMiB: number): Promise<Site> {
  const site = await startSite(t, { volumes: 1, volumeSize: '64MiB', envA: {}, envB: {} });
  write(site.a, 'pvol0', pattern, 0, lengthMiB);
  await lag0(site.a);
  return site;
}

/** takeover on A (with the CLI) is a planned swap back; then A's writes replicate to B again. */
async function swapBackToA(site: Site, pattern: number, offsetMiB: number): Promise<{ kind: string; epoch: string }> {
  const back = JSON.parse(cliOk(site.a, ['takeover', '--group', 'g1', '--json'])) as { kind: string; epoch: string };
  assert.equal(back.kind, 'swap');
  write(site.a, 'pvol0', pattern, offsetMiB, 1);
  await lag0(site.a);
  compare(site);
  return back;
}

test('planned swap and swap back: roles flip, replication reverses with no copy, volumes identical', { timeout: 180_000 }, async (t) => {
  const site = await pairedSite(t, 0x41, 4);

  const swap = await takeover(site.b);
  t.diagnostic(`swap A->B: ${JSON.stringify(swap)}`);
  assert.equal(swap.kind, 'swap');
  assert.match(swap.epoch, /^2@site-b#/);
  assert.equal(role(site.b, 'svol0'), 'pvol');
  assert.equal(role(site.a, 'pvol0'), 'svol');
  const rows = await display(site.b);
  assert.equal(rows[0]!.direction, 'site-b->site-a');
  assert.equal(rows[0]!.status, 'PAIR');
  const refused = run('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x66 0 4k']);
  assert.notEqual(refused.code, 0, 'the old primary is read-only now');

  write(site.b, 'svol0', 0x42, 8, 2);
  await lag0(site.b);
  compare(site);
  assert.ok(holds(readVolume(site.a, 'pvol0', site.dir), 0x42, 8, 2), 'B\'s writes reach A');
  assert.equal((await display(site.b))[0]!.copyBytes, 0, 'no copy after the swap');

  const back = await swapBackToA(site, 0x43, 20);
  t.diagnostic(`swap B->A: ${JSON.stringify(back)}`);
  assert.match(back.epoch, /^3@site-a#/);
});

test('takeover with A dead (SSWS), A back FENCED, resync --swap, compare, swap back', { timeout: 240_000 }, async (t) => {
  const site = await pairedSite(t, 0x51, 4);
  await site.a.kill9();

  const taken = await takeover(site.b);
  t.diagnostic(`takeover with A dead: ${JSON.stringify(taken)}`);
  assert.equal(taken.kind, 'takeover');
  assert.equal((await display(site.b))[0]!.status, 'SSWS');
  assert.equal(role(site.b, 'svol0'), 'pvol');
  assert.ok(holds(readVolume(site.b, 'svol0', site.dir), 0x51, 0, 4), 'B holds what A had sent');
  write(site.b, 'svol0', 0x52, 10, 2); // tracked: no receiver yet

  await startWithin(site.a, 'A');
  await waitFor('A FENCED', async () => (await display(site.a))[0]!.status === 'FENCED', 30_000, 100);
  const fenced = (await display(site.a))[0]!;
  t.diagnostic(`A after its restart: ${fenced.status} (${fenced.statusReason})`);
  const refused = run('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x66 0 4k']);
  assert.notEqual(refused.code, 0, 'a fenced primary refuses host writes');
  await waitFor('the link both ways', () => linkUp(site), 30_000, 100);

  const resync = await site.b.api('POST', '/v1/pairs/resync', { group: 'g1', swap: true });
  assert.equal(resync.status, 200, JSON.stringify(resync.json));
  t.diagnostic(`resync --swap: ${JSON.stringify(resync.json)}`);
  // B's 2 MiB written in SSWS, and A's active 16 MiB region (the kill -9 may have left writes there
  // that A's journal lost): not the 64 MiB volume.
  assert.ok(resync.json.dirtyBytes >= 2 * mib && resync.json.dirtyBytes <= 18 * mib, `only changed regions are copied (${resync.json.dirtyBytes} bytes)`);
  await lag0(site.b);
  assert.equal(role(site.a, 'pvol0'), 'svol');
  compare(site);
  assert.ok(holds(readVolume(site.a, 'pvol0', site.dir), 0x52, 10, 2), 'A got B\'s writes made during the takeover');

  await swapBackToA(site, 0x53, 30);
});

/**
 * Both sides write after a link cut: B takes over (A unreachable) and writes 0x62 at 8 MiB; A,
 * not knowing, writes 0x63 at 16 MiB. The link comes back: A is fenced, and both arrays show
 * the divergence.
 */
async function divergedSite(t: TestContext): Promise<Site> {
  const site = await pairedSite(t, 0x61, 2);
  // Cut both ways: B pulls through the proxy; A reaches B directly, so point A at a closed port.
  site.proxy.setMode('cut');
  const bLink = JSON.parse(cliOk(site.a, ['peer', 'list', '--json'])).peers[0].link as string;
  cliOk(site.a, ['peer', 'add', 'site-b', '--link', `127.0.0.1:${await closedPort()}`]);
  await waitFor('B to lose A', () => JSON.parse(cliOk(site.b, ['peer', 'list', '--json'])).peers[0].connected === false, 30_000, 100);

  const taken = await takeover(site.b);
  assert.equal(taken.kind, 'takeover');
  write(site.b, 'svol0', 0x62, 8, 1);
  write(site.a, 'pvol0', 0x63, 16, 1); // A does not know: it keeps writing (journaled)

  cliOk(site.a, ['peer', 'add', 'site-b', '--link', bLink]);
  site.proxy.setMode('pass');
  await waitFor('A FENCED', async () => (await display(site.a))[0]!.status === 'FENCED', 30_000, 100);
  const fenced = (await display(site.a))[0]!;
  t.diagnostic(`A: ${fenced.status} (${fenced.statusReason})`);
  assert.match(fenced.statusReason ?? '', /diverged/);
  await waitFor('B to show the divergence', async () => /diverged: site-a took \d+ host writes/.test((await display(site.b))[0]!.statusReason ?? ''), 30_000, 100);
  t.diagnostic(`B: ${(await display(site.b))[0]!.status} (${(await display(site.b))[0]!.statusReason})`);
  await waitFor('the link both ways', () => linkUp(site), 30_000, 100);
  return site;
}

test('a link cut with writes on both sides: both show the divergence; resync --swap refuses until --discard names A, then A holds B\'s data', { timeout: 180_000 }, async (t) => {
  const site = await divergedSite(t);

  const refused = await site.b.api('POST', '/v1/pairs/resync', { group: 'g1', swap: true });
  t.diagnostic(`resync --swap without --discard: ${refused.status} ${JSON.stringify(refused.json)}`);
  assert.equal(refused.status, 409);
  assert.match(refused.json.error.message, /--discard site-a/);
  assert.ok(holds(readVolume(site.a, 'pvol0', site.dir), 0x63, 16, 1), 'nothing was overwritten on A');

  // readVolume blocks this process, and with it the link proxy B pulls through: wait for the link again.
  await waitFor('the link both ways', () => linkUp(site), 30_000, 100);
  const resync = await site.b.api('POST', '/v1/pairs/resync', { group: 'g1', swap: true, discard: 'site-a' });
  assert.equal(resync.status, 200, JSON.stringify(resync.json));
  await lag0(site.b);
  compare(site);
  const a = readVolume(site.a, 'pvol0', site.dir);
  assert.ok(holds(a, 0x62, 8, 1) && holds(a, 0, 16, 1), 'A now holds B\'s data, its own divergent write discarded');
});

test('a link cut with writes on both sides: resync --discard site-b (sent to B) keeps A\'s data; A is the primary again', { timeout: 180_000 }, async (t) => {
  const site = await divergedSite(t);

  const wrongSide = await site.b.api('POST', '/v1/pairs/resync', { group: 'g1', discard: 'site-a' });
  assert.equal(wrongSide.status, 400, 'without --swap A stays: only B\'s writes can be the ones discarded');
  const refused = await site.b.api('POST', '/v1/pairs/resync', { group: 'g1' });
  t.diagnostic(`resync without --discard: ${refused.status} ${JSON.stringify(refused.json)}`);
  assert.equal(refused.status, 409, 'B wrote after the takeover: only --discard site-b may drop that');
  assert.match(refused.json.error.message, /--discard site-b/);
  assert.equal((await display(site.a))[0]!.status, 'FENCED', 'a refused resync changes nothing');
  assert.ok(holds(readVolume(site.b, 'svol0', site.dir), 0x62, 8, 1), 'nothing was overwritten on B');
  await waitFor('the link both ways', () => linkUp(site), 30_000, 100);

  const resync = await site.b.api('POST', '/v1/pairs/resync', { group: 'g1', discard: 'site-b' });
  assert.equal(resync.status, 200, JSON.stringify(resync.json));
  t.diagnostic(`resync --discard site-b: ${JSON.stringify(resync.json)}`);
  await lag0(site.a);
  const rows = await display(site.a);
  assert.equal(rows[0]!.direction, 'site-a->site-b');
  assert.match(rows[0]!.epoch, /^3@site-a#/);
  assert.equal(role(site.a, 'pvol0'), 'pvol');
  assert.equal(role(site.b, 'svol0'), 'svol');
  compare(site);
  const b = readVolume(site.b, 'svol0', site.dir);
  assert.ok(holds(b, 0x63, 16, 1) && holds(b, 0, 8, 1), 'B now holds A\'s data, its own writes since the takeover discarded');
  write(site.a, 'pvol0', 0x64, 24, 1);
  await lag0(site.a);
  compare(site);
});
