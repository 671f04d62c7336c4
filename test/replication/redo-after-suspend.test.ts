// Goal (regression, found by the fault rounds with seed 395928): after an
// unclean stop, A re-applies its journal records to the P-VOLs (redo), but a
// write it took the bitmap way while suspended is newer than those records:
// a flushed one must survive kill -9, not be rolled back to the older record.
// Method: volatile-cache arrays; the link cut so B applies nothing; a flushed
// journaled write X; PSUE (link-down) after suspendAfterMs; a flushed write Y
// over the same bytes, taken the bitmap way; kill -9 of A and a restart; A's
// P-VOL must hold Y; then the link back, resync, lag 0, compare identical.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runOk } from '../helpers/array.js';
import { display, healAndResync, startSite, startWithin, waitFor } from '../helpers/replication.js';

test('a flushed write taken while suspended survives kill -9: redo does not replay older records over it', { timeout: 180_000 }, async (t) => {
  const site = await startSite(t, { volumes: 1, volumeSize: '32MiB', suspendAfterMs: 3000 });
  site.proxy.setMode('cut');
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x11 0 1M', '-c', 'flush']);
  assert.equal((await display(site.a))[0]!.status, 'PAIR', 'X was journaled (the group had not suspended yet)');
  await waitFor('PSUE link-down', async () => (await display(site.a))[0]!.status === 'PSUE', 30_000, 100);
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x22 0 1M', '-c', 'flush']);

  await site.a.kill9();
  await startWithin(site.a, 'A');
  t.diagnostic(`A after its restart: ${JSON.stringify((await display(site.a))[0]!.status)}`);
  runOk('qemu-io', ['-r', '-f', 'raw', site.a.uri('pvol0'), '-c', 'read -P 0x22 0 1M']);

  await healAndResync(site);
  runOk('qemu-io', ['-r', '-f', 'raw', site.b.uri('svol0'), '-c', 'read -P 0x22 0 1M']);
});
