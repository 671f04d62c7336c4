// Goal: a crash never shows one volume's old data in another. Method: a small
// drive (15 extents) in volatile-cache mode; volume A fills extents with a
// secret pattern and flushes, then trims them all; volume B then needs those
// very extents. Before A's release is durable B gets ENOSPC rather than A's
// extents; after a flush B reuses them (zeroed first). kill -9 at either point
// and after restart no byte of B holds A's secret. The background flush is held
// off (TWINSTORE_TEST_BACKGROUND_FLUSH_MS): on a loaded machine it came between
// the trim and B's writes and made the release durable early.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createVolume, run, startArray } from '../helpers/array.js';
import { applyOps, readAll } from '../helpers/nbdsh.js';

const secret = 0xa5;
const MiB = 2 ** 20;

test('released extents are reused only after a durable release, zeroed, across kill -9', async (t) => {
  const array = await startArray(t, { drives: ['16MiB'], env: { TWINSTORE_TEST_VOLATILE_CACHE: '1', TWINSTORE_TEST_SEED: '21', TWINSTORE_TEST_BACKGROUND_FLUSH_MS: '3600000' } });
  createVolume(array, 'a', '12MiB');
  createVolume(array, 'b', '12MiB');
  const writesA = Array.from({ length: 12 }, (_, i) => ({ offset: i * MiB, length: MiB, byte: secret }));
  applyOps(array.uri('a'), array.dir, { writes: writesA, trims: [], flush: true });

  // A lets go of everything, but nothing has flushed that release yet: B cannot have A's extents.
  applyOps(array.uri('a'), array.dir, { writes: [], trims: [{ offset: 0, length: 12 * MiB }], flush: false });
  const early = run('nbdsh', ['-u', array.uri('b'), '-c', [
    'import errno',
    'try:',
    '    for i in range(12): h.pwrite(bytes([0x11]) * 4096, i * 1048576)',
    '    print("no error")',
    'except nbd.Error as e:',
    '    print("errno", e.errnum == errno.ENOSPC)',
  ].join('\n')]);
  assert.match(early.stdout, /errno True/, `B must get ENOSPC while A's release is not durable: ${early.stdout}${early.stderr}`);

  await array.kill9();
  await array.start();
  let dataB = readAll(array.uri('b'), array.dir);
  assert.ok(!dataB.includes(secret), 'after a crash before the release was durable, B holds none of A\'s data');

  // Now release durably (the trim plus a flush), let B take the extents, crash without B flushing.
  applyOps(array.uri('a'), array.dir, { writes: [], trims: [{ offset: 0, length: 12 * MiB }], flush: true });
  const writesB = Array.from({ length: 12 }, (_, i) => ({ offset: i * MiB + 8192, length: 4096, byte: 0x22 }));
  applyOps(array.uri('b'), array.dir, { writes: writesB, trims: [], flush: false });
  dataB = readAll(array.uri('b'), array.dir);
  assert.ok(!dataB.includes(secret), 'a reused extent is zeroed before B sees it');
  await array.kill9();
  await array.start();
  dataB = readAll(array.uri('b'), array.dir);
  const dataA = readAll(array.uri('a'), array.dir);
  assert.ok(!dataB.includes(secret), 'after kill -9, B holds none of A\'s data');
  assert.ok(dataA.every((byte) => byte === 0), 'A\'s durable trim holds');
});
