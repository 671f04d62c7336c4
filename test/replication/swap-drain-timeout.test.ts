// Goal: a planned swap whose drain takes longer than swap.drainMsMax aborts
// with nothing changed: the primary answered (its drain timed out), so the
// receiver must not take it for a primary that is gone and take over without
// it while it is alive and writing. Method: two real arrays; B's config has
// swap.lagBytesMax 1 MiB and swap.drainMsMax 1000 (B sends both in its
// swap.freeze, A enforces them) and takeover.peerTimeoutMs 15 s (a link that
// flaps on heartbeats under load is not a dead primary); restore is paused on B and 8 MiB are written
// to the P-VOL, so the lag never gets under the bound. `twinstore takeover` on
// B must exit 1 with SWAP_DRAIN_TIMEOUT (not 3, a takeover without the
// primary); A stays the primary (PAIR, pvol, taking writes), B the receiver
// (svol, not SSWS); after resume the pair reaches lag 0 and the volumes agree.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { projectRoot, runOk, type RunningArray } from '../helpers/array.js';
import { compareAll, display, linkUp, setRestorePaused, startSite, waitFor, waitForPairAndLag0 } from '../helpers/replication.js';
import { volumeRole } from '../helpers/takeover-checks.js';

/** The CLI against `array`, in a child process this test does not wait on synchronously. */
function cliAsync(array: RunningArray, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const entry = path.join(projectRoot, 'bin', 'twinstore.js');
  return new Promise((resolve) => {
    execFile(process.execPath, [entry, '--config', array.configFile, ...args], { timeout: 120_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr });
    });
  });
}

test('a swap whose drain exceeds swap.drainMsMax aborts with SWAP_DRAIN_TIMEOUT and changes nothing', { timeout: 180_000 }, async (t) => {
  const site = await startSite(t, { volumes: 1, volumeSize: '64MiB', extraConfigB: 'swap:\n  lagBytesMax: 1MiB\n  drainMsMax: 1000\ntakeover:\n  peerTimeoutMs: 15000\n' });
  await waitFor('PAIR shown on B', async () => (await display(site.b)).every((p) => p.status === 'PAIR'), 30_000, 100);
  await setRestorePaused(site.b, true);
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x5a 0 8M', '-c', 'flush']);
  const lag = (await display(site.a))[0]!.lagBytes;
  assert.ok(lag > 2 ** 20, `the lag (${lag} bytes) is above swap.lagBytesMax`);

  await waitFor('the link up both ways', () => linkUp(site), 30_000, 100);
  const started = Date.now();
  // Run without blocking this process: the link proxy between B and A lives here.
  const result = await cliAsync(site.b, ['takeover', '--group', 'g1', '--json']);
  t.diagnostic(`takeover after ${Date.now() - started} ms: exit ${result.code}: ${(result.stderr + result.stdout).trim()}`);
  for (const line of site.b.stderr.split('\n')) if (/takeover|swap|link down/.test(line)) t.diagnostic(`B: ${line.slice(0, 300)}`);
  assert.equal(result.code, 1, `the swap fails (exit 1), it is no takeover without the primary (exit 3): ${result.stdout}${result.stderr}`);
  assert.match(result.stderr, /SWAP_DRAIN_TIMEOUT/);

  const rowA = (await display(site.a))[0]!;
  const rowB = (await display(site.b))[0]!;
  t.diagnostic(`after: A ${rowA.status} ${rowA.statusReason}, B ${rowB.status} ${rowB.statusReason}`);
  assert.equal(rowA.status, 'PAIR');
  assert.equal(rowA.direction, 'site-a->site-b');
  assert.notEqual(rowB.status, 'SSWS');
  assert.equal(await volumeRole(site.a, 'pvol0'), 'pvol');
  assert.equal(await volumeRole(site.b, 'svol0'), 'svol');
  // A still takes host writes, journaled, and they replicate.
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x5b 8M 1M', '-c', 'flush']);
  await setRestorePaused(site.b, false);
  await waitForPairAndLag0(site, 60_000);
  compareAll(site);
});
