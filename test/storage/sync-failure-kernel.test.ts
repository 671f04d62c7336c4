// Goal: on the real kernel, a failed writeback is never forgotten. Linux reports
// it to one fdatasync of the block device and then returns 0 for the next,
// although the pages are gone; main acknowledged that second FLUSH.
// Method: as root, a loop device over a 64 MiB sparse file on a 32 MiB tmpfs,
// given to a real array as its only drive (a fresh sparse file reads as zeros,
// as docs/config.md asks of a block device). 48 MiB written through NBD (no
// FLUSH), so the writeback to the backing file runs out of room: the FLUSH gets
// EIO, and so does every later one. Skipped, with the reason, only where mount
// or losetup is refused (not root, no loop driver).

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RunningArray, run } from '../helpers/array.js';
import { requests, type NbdStep } from '../helpers/nbdsh.js';
import { cliOk, waitFor } from '../helpers/replication.js';

const mib = 2 ** 20;
const tmpfsBytes = 32 * mib;
const backingBytes = 64 * mib;
const writtenMiB = 48;

interface Stand {
  dir: string;
  /** Set once attached; the cleanup detaches it. */
  device?: string;
  mountPoint?: string;
  array?: RunningArray;
}

/** One hook, in this order: the array killed, the loop device detached, the tmpfs unmounted, the folder removed. */
function cleanUp(t: TestContext, stand: Stand): void {
  t.after(async () => {
    await stand.array?.stop('SIGKILL');
    if (stand.device !== undefined) run('losetup', ['--detach', stand.device]);
    const mountPoint = stand.mountPoint;
    if (mountPoint !== undefined) {
      await waitFor(`umount of ${mountPoint} (the loop device let go of its file)`, () => run('umount', [mountPoint]).code === 0, 30_000, 200);
    }
    fs.rmSync(stand.dir, { recursive: true, force: true });
  });
}

/** Mounts the small tmpfs and attaches a loop device over a sparse file on it; the reason when refused. */
function attachLoop(stand: Stand): string | undefined {
  const mountPoint = path.join(stand.dir, 'tmpfs');
  fs.mkdirSync(mountPoint);
  const mounted = run('mount', ['-t', 'tmpfs', '-o', `size=${tmpfsBytes}`, 'tmpfs', mountPoint]);
  if (mounted.code !== 0) return `mount -t tmpfs refused (uid ${process.getuid?.()}): ${mounted.stderr.trim()}`;
  stand.mountPoint = mountPoint;
  const backing = path.join(mountPoint, 'backing.img');
  fs.writeFileSync(backing, '');
  fs.truncateSync(backing, backingBytes);
  const attached = run('losetup', ['--find', '--show', backing]);
  if (attached.code !== 0) return `losetup refused (no loop driver?): ${attached.stderr.trim()}`;
  stand.device = attached.stdout.trim();
  return undefined;
}

test('a loop device whose backing file runs out of room: the FLUSH gets EIO, and so does every later one', { timeout: 120_000 }, async (t) => {
  const stand: Stand = { dir: fs.mkdtempSync(path.join(os.tmpdir(), 'twinstore-test-')) };
  cleanUp(t, stand);
  const refused = attachLoop(stand);
  if (refused !== undefined) {
    t.skip(refused);
    return;
  }
  const device = stand.device!;
  const configFile = path.join(stand.dir, 'site-a.yaml');
  fs.writeFileSync(configFile, [
    'array:', '  id: site-a', '  dataDir: data',
    'drives:', `  - path: ${device}`,
    'listen:', '  nbd: 127.0.0.1:0', '  api: 127.0.0.1:0', '',
  ].join('\n'));
  const array = new RunningArray(stand.dir, configFile, {});
  stand.array = array;
  await array.start();
  cliOk(array, ['volume', 'create', 'v', '--size', `${writtenMiB}MiB`]);

  const writes: NbdStep[] = Array.from({ length: writtenMiB }, (_, i) => ({ op: 'write', offset: i * mib, length: mib, byte: 0x5a }));
  const flush: NbdStep = { op: 'flush' };
  const outcomes = requests(array.uri('v'), [...writes, flush, flush, flush]);
  t.diagnostic(`the three FLUSHes after ${writtenMiB} MiB written to a drive with room for ${tmpfsBytes / mib} MiB: ${outcomes.slice(writtenMiB).join(', ')}`);
  assert.ok(outcomes.slice(0, writtenMiB).every((o) => o === 'ok'), 'the writes (into the page cache) are taken');
  assert.deepEqual(outcomes.slice(writtenMiB), ['EIO', 'EIO', 'EIO'], 'no FLUSH succeeds after the failed writeback');
  const status = JSON.parse(cliOk(array, ['status', '--json'])) as { syncFailed: boolean; drives: Array<{ path: string; syncError: string | null }> };
  assert.equal(status.syncFailed, true);
  assert.match(status.drives[0]!.syncError ?? '', /EIO/, `the drive ${device} shows the kernel's error`);
});
