// Goal: a P-VOL on array A is copied to its S-VOL on array B and kept in step
// while hosts write, through two real `twinstore serve` processes linked over
// TLS-PSK. Method: real NBD clients (qemu-io, fio) write the P-VOL during the
// initial copy and after; once PAIR and lag 0, `qemu-img compare` over NBD
// finds the S-VOL identical to the P-VOL. The S-VOL starts with old data, which
// the copy must clear (trim records for holes); it is read-only while paired.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createVolume, run, runOk, startPairOfArrays, type RunningArray } from '../helpers/array.js';

interface Pair {
  status: string;
  lagRecords: number;
  copyPercent: number;
  consistencySeq: number;
}

function display(array: RunningArray, group: string): Pair[] {
  const out = array.cli(['pair', 'display', '--group', group, '--json']);
  assert.equal(out.code, 0, out.stderr);
  return (JSON.parse(out.stdout) as { pairs: Pair[] }).pairs;
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

test('pair create, initial copy under host writes, PAIR, identical S-VOL', async (t) => {
  const { a, b } = await startPairOfArrays(t);
  const pvol = createVolume(a, 'pvol', '64MiB');
  createVolume(b, 'svol', '64MiB');
  runOk('qemu-io', ['-f', 'raw', b.uri('svol'), '-c', 'write -P 0x77 0 64M']);
  runOk('qemu-io', ['-f', 'raw', pvol, '-c', 'write -P 0x11 0 8M', '-c', 'write -P 0x22 32M 1M']);
  assert.equal(a.cli(['journal', 'create', 'jnl', '--size', '160MiB']).code, 0);
  assert.equal(b.cli(['journal', 'create', 'jnl', '--size', '160MiB']).code, 0);

  const created = a.cli(['pair', 'create', '--group', 'g1', '--pvol', 'pvol', '--svol', 'site-b:svol', '--journal', 'jnl', '--remote-journal', 'site-b:jnl', '--json']);
  assert.equal(created.code, 0, created.stderr);
  runOk('qemu-io', ['-f', 'raw', pvol, '-c', 'write -P 0x33 4M 2M', '-c', 'write -z 40M 1M', '-c', 'write -P 0x44 63M 512k']);
  runOk('fio', ['--name=during', '--ioengine=nbd', `--uri=${pvol}`, '--rw=randwrite', '--bs=4k', '--size=16M', '--offset=16M', '--iodepth=16', '--numjobs=2', '--io_size=8M', '--output=/dev/null']);

  await waitFor('PAIR with lag 0', () => display(a, 'g1').every((p) => p.status === 'PAIR' && p.lagRecords === 0));
  assert.equal(display(b, 'g1')[0]!.status, 'PAIR');
  runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', pvol, b.uri('svol')]);

  const readOnly = run('qemu-io', ['-f', 'raw', b.uri('svol'), '-c', 'write -P 0x99 0 4k']);
  assert.notEqual(readOnly.code, 0, 'the S-VOL refuses host writes while paired');

  runOk('qemu-io', ['-f', 'raw', pvol, '-c', 'write -P 0x55 10M 3M', '-c', 'discard 20M 2M', '-c', 'flush']);
  await waitFor('lag 0 again', () => display(a, 'g1').every((p) => p.lagRecords === 0));
  runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', pvol, b.uri('svol')]);
});
