// Goal: `pair create --copy-pace` caps a resync as it caps the initial copy: a
// resync after an outage can be as large as the volume, and it must not take
// the link or the drives from the hosts either.
// Method: two real arrays, one 8 MiB pair made with --copy-pace 2MiB; split,
// 8 MiB of random data written to the P-VOL (every region marked), resync: the
// 8 MiB go as one batch of base records, and the pace holds the copy until
// 4 s have passed for them, so PAIR comes no sooner than that (a floor of
// 3.6 s; with no pace the resync took 1.3 s on a loaded machine). The S-VOL is
// compared.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { runOk } from '../helpers/array.js';
import { cliOk, compareAll, display, group, resyncWhenLinked, startSite, waitFor, waitForPairAndLag0 } from '../helpers/replication.js';

const floorMs = 3600;

test('pair create --copy-pace paces a resync too', { timeout: 180_000 }, async (t) => {
  const site = await startSite(t, { volumes: 1, volumeSize: '8MiB', copyPace: '2MiB' });
  cliOk(site.a, ['pair', 'split', '--group', group]);
  await waitFor('PSUS on A', async () => (await display(site.a))[0]!.status === 'PSUS', 30_000, 100);
  const file = path.join(site.dir, 'random.img');
  fs.writeFileSync(file, crypto.randomBytes(8 * 2 ** 20));
  runOk('nbdcopy', [file, site.a.uri('pvol0')]);
  const started = Date.now();
  await resyncWhenLinked(site);
  await waitForPairAndLag0(site);
  const resyncMs = Date.now() - started;
  t.diagnostic(`a resync of 8 MiB at --copy-pace 2MiB: PAIR after ${resyncMs} ms`);
  assert.ok(resyncMs >= floorMs, `the resync of 8 MiB reached PAIR after ${resyncMs} ms: at 2 MiB/s it takes at least ${floorMs}`);
  compareAll(site);
});
