// Goal: `link.bandwidthMax` caps what the primary sends, host writes and
// copies alike (issue 17, a WAN link): an initial copy and the journal of host
// writes go at about the cap, not faster, and replication still completes with
// the S-VOLs equal to the P-VOLs.
// Method: two real arrays (startSite), A capped at 2 MiB/s. 6 MiB of random data
// is put on pvol0 before the pair is made: the copy must take at least
// (6 MiB - the 0.5 MiB burst - a record) / 2 MiB/s, less a margin (2.4 s). In PAIR,
// 6 MiB more is written by nbdcopy in 256 KiB requests: lag 0 again must take as
// long. Both are lower bounds
// (a busy machine only makes them longer); the S-VOLs are compared at the end.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { runOk } from '../helpers/array.js';
import { compareAll, display, startSite, waitForPairAndLag0 } from '../helpers/replication.js';

const capBytesPerSecond = 2 * 2 ** 20;
const writtenBytes = 6 * 2 ** 20;
/** (6 MiB - the 0.5 MiB burst - one 256 KiB record sent in debt) / 2 MiB/s = 2.6 s, less a margin for the clocks. */
const floorMs = 2400;

test('link.bandwidthMax paces the initial copy and the journal; the S-VOLs end equal', { timeout: 180_000 }, async (t) => {
  let pairCreatedAt = 0;
  const site = await startSite(t, {
    volumes: 1,
    bandwidthMaxA: '2MiB',
    waitForPair: false,
    beforePair: (s) => {
      const file = path.join(s.dir, 'random.img');
      fs.writeFileSync(file, crypto.randomBytes(writtenBytes));
      runOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', file, s.a.uri('pvol0')]);
      pairCreatedAt = Date.now();
    },
  });
  await waitForPairAndLag0(site);
  const copyMs = Date.now() - pairCreatedAt;
  assert.ok(copyMs >= floorMs, `the initial copy of ${writtenBytes} bytes took ${copyMs} ms: at ${capBytesPerSecond} B/s it takes at least ${floorMs}`);

  const file = path.join(site.dir, 'random2.img');
  fs.writeFileSync(file, crypto.randomBytes(writtenBytes));
  // From the first write: records start to flow while nbdcopy is still writing. Requests of
  // 256 KiB: a record is sent whole even past the cap (the bucket goes into debt), so the
  // floor below allows one record more.
  const writtenAt = Date.now();
  runOk('nbdcopy', ['--request-size=262144', file, site.a.uri('pvol0')]);
  const rows = await display(site.a);
  assert.ok(rows[0]!.lagBytes > capBytesPerSecond, `the writes wait in A's journal: lag ${rows[0]!.lagBytes} bytes`);
  await waitForPairAndLag0(site);
  const drainMs = Date.now() - writtenAt;
  assert.ok(drainMs >= floorMs, `${writtenBytes} bytes of host writes drained in ${drainMs} ms: at ${capBytesPerSecond} B/s it takes at least ${floorMs}`);
  console.log(`copy ${copyMs} ms, drain ${drainMs} ms for ${writtenBytes} bytes each at a cap of ${capBytesPerSecond} B/s`);
  await compareAll(site);
});
