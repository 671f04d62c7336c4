// Goal: independently written NBD clients (qemu-io, qemu-img, nbdinfo, nbdcopy,
// fio) read and write Twinstore volumes correctly. Method: one real
// `twinstore serve` process per test; data is checked byte for byte by the
// clients themselves (read -P patterns, qemu-img compare, fio crc32c verify).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createVolume, run, runOk, startArray, tempDir } from '../helpers/array.js';

test('qemu-io: patterns, write -z, discard, flush and map', async (t) => {
  const array = await startArray(t);
  const uri = createVolume(array, 'qio', '64MiB');
  runOk('qemu-io', ['-f', 'raw', uri,
    '-c', 'write -P 0xa1 0 1M',
    '-c', 'write -P 0xb2 3M 64k',
    '-c', 'write -P 0xc3 8M 4M',
    '-c', 'flush',
    '-c', 'write -z -u 8M 2M',
    '-c', 'write -z 10M 4k',
    '-c', 'discard 0 1M']);
  const reads = runOk('qemu-io', ['-f', 'raw', uri,
    '-c', 'read -P 0 0 1M',
    '-c', 'read -P 0xb2 3M 64k',
    '-c', 'read -P 0 8M 2M',
    '-c', 'read -P 0 10M 4k',
    '-c', `read -P 0xc3 ${10 * 2 ** 20 + 4096} ${2 * 2 ** 20 - 4096}`,
    '-c', 'read -P 0 20M 1M']);
  assert.doesNotMatch(reads, /Pattern verification failed/);
  const map = runOk('qemu-io', ['-f', 'raw', uri, '-c', 'map']);
  assert.match(map, /allocated/);
  const json = JSON.parse(runOk('qemu-img', ['map', '--output=json', '-f', 'raw', uri])) as Array<{ start: number; length: number; data: boolean; zero: boolean }>;
  const dataAt = (offset: number): boolean => json.find((e) => e.start <= offset && offset < e.start + e.length)!.data;
  assert.equal(dataAt(0), false, 'the discarded first MiB is a hole');
  assert.equal(dataAt(3 * 2 ** 20), true, 'written data is allocated');
  assert.equal(dataAt(8 * 2 ** 20), false, 'write -z -u of whole extents unmaps them');
  assert.equal(dataAt(10 * 2 ** 20), true);
  assert.equal(dataAt(40 * 2 ** 20), false, 'never-written space is a hole');
});

test('qemu-img: convert in and out, compare, map', async (t) => {
  const array = await startArray(t);
  const uri = createVolume(array, 'img', '32MiB');
  const dir = tempDir(t);
  const source = path.join(dir, 'source.raw');
  const back = path.join(dir, 'back.raw');
  const image = Buffer.alloc(32 * 2 ** 20);
  crypto.randomFillSync(image.subarray(0, 5 * 2 ** 20));
  crypto.randomFillSync(image.subarray(20 * 2 ** 20, 21 * 2 ** 20 + 12345));
  fs.writeFileSync(source, image);
  runOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', source, uri]);
  runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, uri]);
  runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, back]);
  assert.ok(fs.readFileSync(back).equals(image), 'converted out equals what went in');
  const map = JSON.parse(runOk('qemu-img', ['map', '--output=json', '-f', 'raw', uri])) as Array<{ start: number; length: number; data: boolean }>;
  const dataBytes = map.filter((e) => e.data).reduce((sum, e) => sum + e.length, 0);
  assert.ok(dataBytes >= 6 * 2 ** 20 && dataBytes <= 8 * 2 ** 20, `only written extents are data (${dataBytes})`);
  const different = Buffer.from(image);
  different[31 * 2 ** 20] = 1;
  fs.writeFileSync(source, different);
  assert.equal(run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, uri]).code, 1, 'compare sees a difference');
});

test('nbdinfo --list and --map, nbdcopy both ways', async (t) => {
  const array = await startArray(t);
  const uriA = createVolume(array, 'alpha', '16MiB');
  createVolume(array, 'beta', '8MiB');
  const list = runOk('nbdinfo', ['--list', '--json', `nbd://${array.nbd}`]);
  const exports = (JSON.parse(list) as { exports: Array<{ 'export-name': string; 'export-size': number }> }).exports;
  assert.deepEqual(exports.map((e) => [e['export-name'], e['export-size']]), [['alpha', 16 * 2 ** 20], ['beta', 8 * 2 ** 20]]);

  const dir = tempDir(t);
  const source = path.join(dir, 'in.raw');
  const out = path.join(dir, 'out.raw');
  const image = Buffer.alloc(16 * 2 ** 20);
  crypto.randomFillSync(image.subarray(2 * 2 ** 20, 4 * 2 ** 20));
  fs.writeFileSync(source, image);
  runOk('nbdcopy', ['--flush', source, uriA]);
  runOk('nbdcopy', [uriA, out]);
  assert.ok(fs.readFileSync(out).equals(image));
  const map = JSON.parse(runOk('nbdinfo', ['--map', '--json', uriA])) as Array<{ offset: number; length: number; type: number }>;
  const allocated = map.filter((e) => (e.type & 1) === 0).map((e) => [e.offset, e.length]);
  assert.deepEqual(allocated, [[2 * 2 ** 20, 2 * 2 ** 20]], 'nbdcopy skipped the zero areas and the map shows only the data');
});

test('fio with the nbd engine verifies crc32c at QD16 over two connections', async (t) => {
  const array = await startArray(t);
  const uri = createVolume(array, 'fio', '256MiB');
  const out = runOk('fio', ['--name=verify', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k', '--size=64M',
    '--iodepth=16', '--numjobs=2', '--offset_increment=64M', '--verify=crc32c', '--verify_fatal=1', '--do_verify=1', '--verify_state_save=0',
    '--group_reporting', '--output-format=json', `--output=${path.join(array.dir, 'fio.json')}`], { timeoutMs: 180_000 });
  assert.doesNotMatch(out, /verify: bad/);
  const report = JSON.parse(fs.readFileSync(path.join(array.dir, 'fio.json'), 'utf8')) as { jobs: Array<{ error: number; write: { io_bytes: number }; read: { io_bytes: number } }> };
  assert.equal(report.jobs[0]!.error, 0);
  assert.equal(report.jobs[0]!.write.io_bytes, 128 * 2 ** 20);
  assert.equal(report.jobs[0]!.read.io_bytes, 128 * 2 ** 20, 'every written block was read back and verified');
});
