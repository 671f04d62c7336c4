// Goal: an operator who points a second array at a live array's drives gets an
// error naming the drive and its owner, and nothing on the drive changes: the
// second array never re-labels a labelled drive, whether the owner runs or
// not, and the owner starts again (also after kill -9) with its data. A drive
// that is missing is named truthfully, with what each configured path carries.
// Method: real `twinstore serve` processes (test/helpers/array.ts); a second
// config in another folder with its own data folder and the same drive path
// (same array id: a copied config, and another id); qemu-io writes and reads
// the owner's volume; the drive's label block is hashed before and after.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RunningArray, createVolume, projectRoot, run, runOk, startArray } from '../helpers/array.js';

const cliEntry = path.join(projectRoot, 'bin', 'twinstore.js');
/** A refused start exits at once; a start that goes on (the old behaviour) is cut here. */
const refusedStartMsMax = 60_000;

function labelHash(drive: string): string {
  const fd = fs.openSync(drive, 'r');
  try {
    const block = Buffer.alloc(4096);
    fs.readSync(fd, block, 0, 4096, 0);
    return crypto.createHash('sha256').update(block).digest('hex');
  } finally {
    fs.closeSync(fd);
  }
}

/** A config of its own folder and data folder that names `drive` as its only drive. */
function secondConfig(dir: string, id: string, drive: string): string {
  const file = path.join(dir, `${id}-second.yaml`);
  fs.writeFileSync(file, [
    'array:', `  id: ${id}`, `  dataDir: data-${id}`,
    'drives:', `  - path: ${drive}`,
    'listen:', '  nbd: 127.0.0.1:0', '  api: 127.0.0.1:0', '',
  ].join('\n'));
  return file;
}

function serveRefused(config: string): { code: number | null; stderr: string } {
  const result = run(process.execPath, [cliEntry, 'serve', '--config', config], { timeoutMs: refusedStartMsMax });
  return { code: result.code, stderr: result.stderr };
}

function readsPattern(array: RunningArray, byte: number): boolean {
  return run('qemu-io', ['-f', 'raw', '-c', `read -P 0x${byte.toString(16)} 0 1M`, array.uri('vol')]).code === 0;
}

test('a second array given a live array\'s drive is refused with DRIVE_OWNED and changes nothing, running or not', { timeout: 300_000 }, async (t) => {
  const a = await startArray(t);
  createVolume(a, 'vol', '16MiB');
  runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 1M', '-c', 'flush', a.uri('vol')]);
  const drive = path.join(a.dir, 'data', 'drive0.img');
  const label = labelHash(drive);
  const other = fs.mkdtempSync(path.join(os.tmpdir(), 'twinstore-test-'));
  t.after(() => fs.rmSync(other, { recursive: true, force: true }));

  for (const id of ['site-a', 'site-z']) {
    const refused = serveRefused(secondConfig(other, id, drive));
    t.diagnostic(`second array ${id} with A running: exit ${refused.code}: ${refused.stderr.trim().split('\n').pop()}`);
    assert.equal(refused.code, 1, `the second array ${id} exits 1 at once (another code: it started, and ran until cut ${refusedStartMsMax} ms later)`);
    assert.match(refused.stderr, /DRIVE_OWNED: drive .*drive0\.img belongs to array site-a \(data folder .*data\)/);
    assert.equal(labelHash(drive), label, 'the label is not rewritten');
    assert.ok(readsPattern(a, 0x5a), 'A still reads its data');
  }

  await a.stop('SIGTERM');
  const again = serveRefused(secondConfig(other, 'site-a', drive));
  assert.equal(again.code, 1, 'refused with A stopped too');
  assert.match(again.stderr, /DRIVE_OWNED/);
  assert.equal(labelHash(drive), label, 'the label is still A\'s');

  await a.start();
  assert.ok(readsPattern(a, 0x5a), 'A starts again with its data');
  await a.kill9();
  await a.start();
  assert.ok(readsPattern(a, 0x5a), 'after kill -9, A starts again with its data');
});

test('a drive that holds extents and is gone is named with what each configured path carries', { timeout: 120_000 }, async (t) => {
  const a = await startArray(t);
  createVolume(a, 'vol', '16MiB');
  runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 1M', '-c', 'flush', a.uri('vol')]);
  await a.stop('SIGTERM');
  const drive = path.join(a.dir, 'data', 'drive0.img');
  fs.renameSync(drive, path.join(a.dir, 'data', 'moved.img'));
  const started = await a.start().then(() => undefined, (error: Error) => error);
  assert.ok(started instanceof Error, 'the start fails');
  assert.match(a.stderr, /DRIVE_MISSING: drive [0-9a-f-]+ \(last seen at .*drive0\.img\) holds volume extents, but no configured drive carries its label \(.*drive0\.img carries no label \(a new drive\)\)/);
});

test('a block device is claimed for its array: a second process gets DRIVE_OWNED; the claim ends with the process, even kill -9', { timeout: 120_000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twinstore-test-'));
  let device: string | undefined;
  let array: RunningArray | undefined;
  t.after(async () => {
    await array?.stop('SIGKILL');
    if (device !== undefined) run('losetup', ['--detach', device]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const backing = path.join(dir, 'backing.img');
  fs.writeFileSync(backing, '');
  fs.truncateSync(backing, 64 * 2 ** 20);
  const attached = run('losetup', ['--find', '--show', backing]);
  if (attached.code !== 0) {
    t.skip(`losetup refused (uid ${process.getuid?.()}; no loop driver?): ${attached.stderr.trim()}`);
    return;
  }
  device = attached.stdout.trim();
  const configFile = path.join(dir, 'site-a.yaml');
  fs.writeFileSync(configFile, ['array:', '  id: site-a', '  dataDir: data', 'drives:', `  - path: ${device}`, 'listen:', '  nbd: 127.0.0.1:0', '  api: 127.0.0.1:0', ''].join('\n'));
  array = new RunningArray(dir, configFile, {});
  await array.start();
  createVolume(array, 'vol', '16MiB');
  runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 1M', '-c', 'flush', array.uri('vol')]);

  const refused = serveRefused(secondConfig(dir, 'site-a', device));
  t.diagnostic(`second array on ${device}: exit ${refused.code}: ${refused.stderr.trim().split('\n').pop()}`);
  assert.equal(refused.code, 1, 'the second array exits 1 at once');
  assert.match(refused.stderr, /DRIVE_OWNED: drive \/dev\/loop\d+ is a block device that another process holds open exclusively/);
  assert.ok(readsPattern(array, 0x5a), 'A still reads its data');

  await array.kill9();
  await array.start();
  assert.ok(readsPattern(array, 0x5a), 'after kill -9 the claim is gone: A starts again with its data');
});
