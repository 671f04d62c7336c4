// Goal: the per-group fence policy (docs/architecture.md §6). With `fence: data` a P-VOL
// whose link has been down `fenceAfterMs` refuses host writes (EPERM), so it
// never accepts a write the other site cannot get; it keeps refusing when the
// link is back, until `pair resync`, after which it writes and replicates
// again and the volumes are identical. With the default `never` the P-VOL
// goes on writing (tracked) through the same cut.
// Method: two real arrays, B pulling through a TCP proxy that the test cuts;
// qemu-io writes on A; pair display for status and reason; qemu-img compare.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { run, runOk } from '../helpers/array.js';
import { display, healAndResync, linkUp, startSite, waitFor } from '../helpers/replication.js';

test('fence data: a P-VOL cut off for fenceAfterMs refuses writes until resync; then it replicates again', { timeout: 180_000 }, async (t) => {
  const site = await startSite(t, { volumes: 1, volumeSize: '32MiB', pairArgs: ['--fence', 'data', '--fence-after', '3000'] });
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x31 0 1M', '-c', 'flush']);
  await waitFor('lag 0', async () => (await display(site.a)).every((p) => p.status === 'PAIR' && p.lagRecords === 0), 60_000, 100);

  site.proxy.setMode('cut');
  await waitFor('A to fence itself', async () => /fence data/.test((await display(site.a))[0]!.statusReason ?? ''), 30_000, 100);
  const row = (await display(site.a))[0]!;
  t.diagnostic(`A: ${row.status} (${row.statusReason})`);
  assert.equal(row.status, 'PSUE');
  const refused = run('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x32 4M 1M']);
  assert.notEqual(refused.code, 0, 'a data-fenced P-VOL refuses host writes');
  assert.match(refused.stdout + refused.stderr, /Operation not permitted/);

  site.proxy.setMode('pass');
  await waitFor('the link both ways', () => linkUp(site), 30_000, 100);
  assert.notEqual(run('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x32 4M 1M']).code, 0, 'still refused with the link back, until resync');

  const resync = await site.a.api('POST', '/v1/pairs/resync', { group: 'g1' });
  assert.equal(resync.status, 200, JSON.stringify(resync.json));
  await waitFor('PAIR, lag 0', async () => (await display(site.a)).every((p) => p.status === 'PAIR' && p.lagRecords === 0), 60_000, 100);
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x33 4M 1M', '-c', 'flush']);
  await waitFor('lag 0', async () => (await display(site.a)).every((p) => p.lagRecords === 0), 60_000, 100);
  runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', site.a.uri('pvol0'), site.b.uri('svol0')]);
});

test('fence never (the default): a P-VOL cut off goes on taking writes, tracked, and resync brings them over', { timeout: 180_000 }, async (t) => {
  const site = await startSite(t, { volumes: 1, volumeSize: '32MiB', suspendAfterMs: 3000 });
  site.proxy.setMode('cut');
  await waitFor('PSUE link-down', async () => (await display(site.a))[0]!.status === 'PSUE', 30_000, 100);
  t.diagnostic(`A: ${(await display(site.a))[0]!.statusReason}`);
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x34 4M 1M', '-c', 'flush']);
  await healAndResync(site);
  runOk('qemu-io', ['-r', '-f', 'raw', site.b.uri('svol0'), '-c', 'read -P 0x34 4M 1M']);
});
