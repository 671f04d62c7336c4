// Goal: `drives[].use: journal` keeps journals and volumes apart, and a
// journal's sync touches only the drives its extents lie on. Method: an
// in-process StorageEngine on two files in volatile-cache mode (writes stay in
// the process until that file is synced; a "crash" is closing without sync):
// a volume lands only on the data drive, a journal-role volume only on the
// journal drive (and on the data drive once the journal drive is full);
// syncVolumeData of the journal makes its writes durable while a volume write
// on the data drive is still lost at the crash.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { StorageEngine, type EngineOptions } from '../../src/storage/index.js';
import { refDrive } from '../../src/storage/meta-model.js';
import { tempDir } from '../helpers/array.js';

const mib = 2 ** 20;

function options(dir: string, journalMiB = 16): EngineOptions {
  return {
    arrayId: 'site-a', dataDir: path.join(dir, 'data'), extentBytes: mib,
    drives: [
      { path: path.join(dir, 'data.img'), sizeBytes: 64 * mib, use: 'data' },
      { path: path.join(dir, 'journal.img'), sizeBytes: (journalMiB + 1) * mib, use: 'journal' },
    ],
  };
}

function drivesOf(engine: StorageEngine, name: string): number[] {
  const volume = engine.volume(name)!;
  return [...new Set([...volume.extentRefs()].map((ref) => refDrive(ref)))].sort();
}

test('volumes go to data drives, journals to journal drives first', async (t) => {
  const dir = tempDir(t);
  fs.mkdirSync(path.join(dir, 'data'));
  const engine = await StorageEngine.open(options(dir));
  t.after(() => engine.close());
  const vol = await engine.createVolume({ name: 'vol', sizeBytes: 8 * mib });
  await vol.writeZeroes(0, 8 * mib, true);
  const jnl = await engine.createVolume({ name: 'jnl', sizeBytes: 24 * mib, role: 'journal-free' });
  await jnl.writeZeroes(0, 24 * mib, true);
  await engine.flush();
  assert.deepEqual(drivesOf(engine, 'vol'), [0], 'a volume only on the data drive');
  const refs = [...jnl.extentRefs()];
  assert.equal(refs.filter((r) => refDrive(r) === 1).length, 16, 'the journal fills the journal drive first');
  assert.equal(refs.filter((r) => refDrive(r) === 0).length, 8, 'and spills onto the data drive when it is full');
});

test('a journal sync fdatasyncs only the journal drive; a volume whose map is not durable gets a full flush', async (t) => {
  const dir = tempDir(t);
  fs.mkdirSync(path.join(dir, 'data'));
  const engine = await StorageEngine.open(options(dir));
  t.after(() => engine.close());
  const jnl = await engine.createVolume({ name: 'jnl', sizeBytes: 16 * mib, role: 'journal-free' });
  await jnl.writeZeroes(0, 16 * mib, true);
  await engine.flush();
  // Count fdatasyncs per drive (the engine's open files, reached for this test only).
  const drives = (engine as unknown as { drives: Map<number, { file: { sync: () => Promise<void> } }> }).drives;
  const syncs = new Map<number, number>();
  for (const [index, drive] of drives) {
    const sync = drive.file.sync.bind(drive.file);
    drive.file.sync = () => {
      syncs.set(index, (syncs.get(index) ?? 0) + 1);
      return sync();
    };
  }
  const vol = await engine.createVolume({ name: 'vol', sizeBytes: 8 * mib });
  syncs.clear();
  await vol.write(0, Buffer.alloc(4096, 0xaa)); // allocates: a map entry not yet durable
  await jnl.write(0, Buffer.alloc(4096, 0xbb));
  await engine.syncVolumeData(jnl.meta.id);
  assert.deepEqual([...syncs.entries()].sort(), [[1, 1]], 'only the journal drive was synced');
  syncs.clear();
  await engine.syncVolumeData(vol.meta.id);
  assert.deepEqual([...syncs.entries()].sort(), [[0, 1], [1, 1]], 'a thin volume with a pending map entry gets a full flush round');
});
