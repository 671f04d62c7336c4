// Goal: nothing acknowledged after FLUSH is lost when the array is killed, and
// metadata survives kill -9 at any point. Method: arrays run in the test-only
// volatile-cache drive mode (writes live in the process until fdatasync, a few
// are written back early at random, so a kill drops or tears the rest). Each
// round writes and trims patterns, FLUSHes, writes more without FLUSH, kills -9
// and restarts; every flushed block must read back, every unflushed block must
// hold its old or its new contents, and the volumes must be listed as before.
// The same run with the planted "skip fdatasync" bug must fail.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createVolume, startArray, type RunningArray } from '../helpers/array.js';
import { applyOps, readAll, type TrimOp, type WriteOp } from '../helpers/nbdsh.js';
import { Prng } from '../../src/util/prng.js';

const blockBytes = 4096;
const volumeBytes = 48 * 2 ** 20;
const blocks = volumeBytes / blockBytes;

interface Model {
  /** Per 4 KiB block, the byte values it may hold (one when flushed). */
  allowed: Array<Set<number>>;
}

function randomWrites(prng: Prng, count: number, firstByte: number): WriteOp[] {
  return Array.from({ length: count }, (_, i) => {
    const length = (1 + prng.below(48)) * blockBytes;
    const offset = prng.below(blocks - length / blockBytes) * blockBytes;
    return { offset, length, byte: (firstByte + i) % 255 + 1 };
  });
}

function randomTrims(prng: Prng, count: number): TrimOp[] {
  return Array.from({ length: count }, () => {
    const whole = prng.next() < 0.5;
    const length = whole ? 2 ** 20 * (1 + prng.below(3)) : (1 + prng.below(64)) * blockBytes;
    const offset = whole ? prng.below(volumeBytes / 2 ** 20 - 3) * 2 ** 20 : prng.below(blocks - 64) * blockBytes;
    return { offset, length };
  });
}

function setBlocks(model: Model, offset: number, length: number, values: (old: Set<number>) => Set<number>): void {
  for (let b = offset / blockBytes; b < (offset + length) / blockBytes; b++) model.allowed[b] = values(model.allowed[b]!);
}

/** Checks the volume against the model; returns the number of blocks that break it. */
function violations(data: Buffer, model: Model): number {
  let bad = 0;
  for (let b = 0; b < blocks; b++) {
    const block = data.subarray(b * blockBytes, (b + 1) * blockBytes);
    const value = block[0]!;
    const uniform = block.every((byte) => byte === value);
    if (!uniform || !model.allowed[b]!.has(value)) bad += 1;
  }
  return bad;
}

interface CrashResult {
  /** Blocks that broke the model: flushed data lost, or a torn block. */
  bad: number;
  /** Unflushed blocks that came back with their old contents: proof the crash really dropped writes. */
  dropped: number;
}

async function crashRounds(array: RunningArray, seed: number, rounds: number): Promise<CrashResult> {
  const prng = new Prng(seed);
  createVolume(array, 'crashvol', '48MiB');
  createVolume(array, 'other', '8MiB');
  const model: Model = { allowed: Array.from({ length: blocks }, () => new Set([0])) };
  let found = 0;
  let dropped = 0;
  for (let round = 0; round < rounds; round++) {
    const uri = array.uri('crashvol'); // the port changes at every restart
    const writes = randomWrites(prng, 40, round * 40);
    const trims = randomTrims(prng, 4);
    applyOps(uri, array.dir, { writes, trims, flush: true });
    for (const w of writes) setBlocks(model, w.offset, w.length, () => new Set([w.byte]));
    for (const t of trims) setBlocks(model, t.offset, t.length, () => new Set([0]));
    const unflushed = randomWrites(prng, 20, 200 + round);
    applyOps(uri, array.dir, { writes: unflushed, trims: [], flush: false });
    for (const w of unflushed) setBlocks(model, w.offset, w.length, (old) => new Set([...old, w.byte]));
    const newest = new Map<number, number>();
    for (const w of unflushed) for (let b = w.offset / blockBytes; b < (w.offset + w.length) / blockBytes; b++) newest.set(b, w.byte);
    await array.kill9();
    await array.start();
    const list = array.cli(['volume', 'list', '--json']);
    assert.equal(list.code, 0, list.stderr);
    const names = (JSON.parse(list.stdout) as { volumes: Array<{ name: string; lun: number; sizeBytes: number }> }).volumes;
    assert.deepEqual(names.map((v) => [v.name, v.lun, v.sizeBytes]), [['crashvol', 0, volumeBytes], ['other', 1, 8 * 2 ** 20]], 'metadata intact');
    const data = readAll(array.uri('crashvol'), array.dir);
    const bad = violations(data, model);
    found += bad;
    for (const [b, byte] of newest) if (data[b * blockBytes] !== byte) dropped += 1;
    if (bad > 0) break;
    // What is on the volume now is the new baseline: each block holds exactly one value.
    for (let b = 0; b < blocks; b++) model.allowed[b] = new Set([data[b * blockBytes]!]);
  }
  return { bad: found, dropped };
}

const volatileEnv = { TWINSTORE_TEST_VOLATILE_CACHE: '1' };

test('flushed writes and metadata survive kill -9 in volatile-cache mode', async (t) => {
  for (const seed of [11, 12]) {
    const array = await startArray(t, { env: { ...volatileEnv, TWINSTORE_TEST_SEED: String(seed) } });
    const { bad, dropped } = await crashRounds(array, seed, 3);
    assert.equal(bad, 0, `seed ${seed}: ${bad} blocks lost or torn after FLUSH`);
    assert.ok(dropped > 0, `seed ${seed}: the kill dropped no unflushed write, so the test proved nothing`);
    await array.stop();
  }
});

test('planted bug: skipping fdatasync on drives makes the crash test fail', async (t) => {
  const array = await startArray(t, { env: { ...volatileEnv, TWINSTORE_TEST_SEED: '13', TWINSTORE_TEST_SKIP_FDATASYNC: '1' } });
  const { bad } = await crashRounds(array, 13, 1);
  assert.ok(bad > 0, 'the crash test must detect writes lost by a skipped fdatasync');
});

test('a clean SIGTERM stop keeps even unflushed writes', async (t) => {
  const array = await startArray(t, { env: { ...volatileEnv, TWINSTORE_TEST_SEED: '14' } });
  const uri = createVolume(array, 'clean', '8MiB');
  applyOps(uri, array.dir, { writes: [{ offset: 2 ** 20, length: 65536, byte: 0x5a }], trims: [], flush: false });
  assert.equal(await array.stop('SIGTERM'), 0, 'SIGTERM exits 0');
  await array.start();
  const data = readAll(`nbd://${array.nbd}/clean`, array.dir);
  assert.ok(data.subarray(2 ** 20, 2 ** 20 + 65536).every((b) => b === 0x5a));
});
