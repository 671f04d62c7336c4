// Goal: a primary that restarts never takes a host write that the new primary
// will discard (issue 12). Regression for: kill -9 A, takeover on B (SSWS),
// start A again, and a host write issued the moment A was ready was taken by
// A's P-VOL before A had heard B's newer epoch; `pair resync --swap` then
// refused with "site-a took 1 host writes after seq N … run --discard site-a".
// At start a sending group holds host writes (queued) until a hello with the
// peer has settled the epochs, for at most takeover.startHoldMs; then the
// fence policy decides (never: go on, journaled; data: refuse).
// Method: two real arrays (startSite), qemu-io started the instant A prints its
// ready line (not awaited: it runs while the test goes on), its outcome and
// time to exit; pair display, journal show, qemu-img compare. Also a normal
// restart with B up (the delay the hold adds to the first write, printed),
// and B down: the write waits out the bound, then goes through (never) or is
// refused (data) until B is back.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { type RunningArray } from '../helpers/array.js';
import { display, linkUp, readVolume, startSite, startWithin, waitFor, compareAll, type Site } from '../helpers/replication.js';

const mib = 2 ** 20;

interface Timed {
  code: number | null;
  stderr: string;
  /** From the spawn to the exit. */
  ms: number;
}

/** qemu-io writing `pattern` over 4 KiB at `offset`, then a flush; started now, not awaited by the caller. */
function writeNow(array: RunningArray, volume: string, pattern: number, offset = 0): Promise<Timed> {
  const started = performance.now();
  const child = spawn('qemu-io', ['-f', 'raw', array.uri(volume), '-c', `write -P ${pattern} ${offset} 4k`, '-c', 'flush'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  const killer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  return new Promise((resolve) => child.once('exit', (code) => {
    clearTimeout(killer);
    resolve({ code, stderr: output, ms: performance.now() - started });
  }));
}

/** Restarts A and starts a write to its P-VOL the instant it is ready. */
async function restartAndWrite(site: Site, pattern: number, offset = 0): Promise<Timed> {
  await startWithin(site.a, 'A');
  return writeNow(site.a, 'pvol0', pattern, offset);
}

function holds(image: Buffer, pattern: number, offset: number, length: number): boolean {
  return image.subarray(offset, offset + length).every((byte) => byte === pattern);
}

async function lag0(primary: RunningArray): Promise<void> {
  await waitFor('PAIR with lag 0 on the primary', async () => (await display(primary)).every((p) => p.status === 'PAIR' && p.lagRecords === 0), 60_000, 100);
}

/** A paired with B (one 64 MiB pair), 0x51 written on A over the first 4 MiB and replicated. */
async function pairedSite(t: Parameters<typeof startSite>[0], options: Partial<Parameters<typeof startSite>[1]> = {}): Promise<Site> {
  const site = await startSite(t, { volumes: 1, volumeSize: '64MiB', envA: {}, envB: {}, ...options });
  assert.equal((await writeNow(site.a, 'pvol0', 0x51)).code, 0);
  await lag0(site.a);
  return site;
}

test('A restarted after a takeover takes no write before it hears B\'s epoch; resync --swap runs without --discard', { timeout: 240_000 }, async (t) => {
  const site = await pairedSite(t);
  await site.a.kill9();
  const taken = await site.b.api('POST', '/v1/takeover', { group: 'g1', force: false });
  assert.equal(taken.status, 200, JSON.stringify(taken.json));
  assert.equal(taken.json.kind, 'takeover');
  assert.equal((await writeNow(site.b, 'svol0', 0x52, 8 * mib)).code, 0, 'B takes host writes in SSWS');

  const write = await restartAndWrite(site, 0x77);
  t.diagnostic(`the write issued at A's ready line: exit ${write.code} after ${Math.round(write.ms)} ms: ${write.stderr.trim().split('\n').pop()}`);
  assert.notEqual(write.code, 0, `A took a host write before it heard B's newer epoch (it is lost at resync --swap): ${write.stderr}`);
  assert.match(write.stderr, /Operation not permitted/, 'refused with EPERM (FENCED), not failed with an I/O error');
  await waitFor('A FENCED', async () => (await display(site.a))[0]!.status === 'FENCED', 30_000, 100);
  const fenced = (await display(site.a))[0]!;
  t.diagnostic(`A: ${fenced.status} (${fenced.statusReason})`);
  assert.doesNotMatch(fenced.statusReason ?? '', /diverged/, 'A holds no host write B never saw');

  await waitFor('the link both ways', () => linkUp(site), 30_000, 100);
  const resync = await site.b.api('POST', '/v1/pairs/resync', { group: 'g1', swap: true });
  assert.equal(resync.status, 200, `resync --swap without --discard: ${JSON.stringify(resync.json)}`);
  await lag0(site.b);
  compareAll(site);
  const a = readVolume(site.a, 'pvol0', site.dir);
  assert.ok(holds(a, 0x51, 0, 4096) && holds(a, 0x52, 8 * mib, 4096), 'A holds B\'s data; the refused write is nowhere');
});

test('start hold: with B up a restart settles at once (delay measured); with B down the write waits the bound, then goes on, journaled', { timeout: 240_000 }, async (t) => {
  const site = await pairedSite(t);
  const baseline = await writeNow(site.a, 'pvol0', 0x53, 4 * mib);
  assert.equal(baseline.code, 0);

  // A normal restart with B up: the hello comes as soon as the link is up.
  await site.a.stop();
  const normal = await restartAndWrite(site, 0x54, 4 * mib);
  assert.equal(normal.code, 0, normal.stderr);
  const settledMs = /"ms":(\d+)[^\n]*start hold: the epochs are settled/.exec(site.a.stderr)?.[1];
  t.diagnostic(`normal restart with B up: first write ${Math.round(normal.ms)} ms from A's ready line (a qemu-io write on a running A: ${Math.round(baseline.ms)} ms); hold settled ${settledMs} ms after the groups opened`);
  assert.ok(normal.ms < 9000, `a restart with B up holds the first write until the hello (${Math.round(normal.ms)} ms), not the 10 s bound`);
  await lag0(site.a);

  // B down: nothing can settle the epochs; the default 10 s bound, then fence never lets the write go on.
  await site.b.stop();
  await site.a.stop();
  const held = await restartAndWrite(site, 0x55, 12 * mib);
  t.diagnostic(`B down: the write issued at A's ready line acknowledged after ${Math.round(held.ms)} ms`);
  assert.equal(held.code, 0, `fence never: past the bound the write goes on: ${held.stderr}`);
  // The bound runs from the groups' opening, a little before the ready line: up to 3 s of slack for a busy machine.
  assert.ok(held.ms >= 7000, `the write was held until the bound (takeover.startHoldMs 10 s), not taken at once (${Math.round(held.ms)} ms)`);
  assert.ok(held.ms < 10_000 + 20_000, `the hold ends at the bound (${Math.round(held.ms)} ms)`);
  const rows = await display(site.a);
  assert.ok(rows[0]!.lagRecords >= 1, `the write is journaled for B (lag ${rows[0]!.lagRecords} records)`);

  await startWithin(site.b, 'B');
  await lag0(site.a);
  compareAll(site);
  assert.ok(holds(readVolume(site.b, 'svol0', site.dir), 0x55, 12 * mib, 4096), 'B got the write A took past the bound');
});

test('start hold with fence data: B down, the write waits the bound and is refused; once B answers writes go on', { timeout: 240_000 }, async (t) => {
  const site = await pairedSite(t, { pairArgs: ['--fence', 'data', '--fence-after', '600000'], extraConfigA: 'takeover:\n  peerTimeoutMs: 2000\n  startHoldMs: 6000' });
  await site.b.stop();
  await site.a.stop();
  const refused = await restartAndWrite(site, 0x56, 16 * mib);
  t.diagnostic(`B down, fence data: the write issued at A's ready line: exit ${refused.code} after ${Math.round(refused.ms)} ms`);
  assert.notEqual(refused.code, 0, 'fence data: past the bound, with B unheard, the write is refused');
  assert.match(refused.stderr, /Operation not permitted/);
  assert.ok(refused.ms >= 3000, `held until the bound (6 s, from the groups' opening) before the refusal (${Math.round(refused.ms)} ms)`);

  await startWithin(site.b, 'B');
  await waitFor('the link both ways', () => linkUp(site), 30_000, 100);
  let after: Timed | undefined;
  await waitFor('a write to A to be taken once B has told its epoch', async () => (after = await writeNow(site.a, 'pvol0', 0x57, 16 * mib)).code === 0, 30_000, 200);
  assert.equal((await display(site.a))[0]!.status, 'PAIR');
  await lag0(site.a);
  compareAll(site);
  assert.ok(holds(readVolume(site.b, 'svol0', site.dir), 0x57, 16 * mib, 4096), `B got the write taken after the hello (${after?.ms} ms)`);
});
