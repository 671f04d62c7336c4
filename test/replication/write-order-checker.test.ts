// Goal: the write-order checker (test/helpers/write-order.ts) accepts every
// image the hosts could have read at one instant and rejects the rest, so that
// the replication fault tests can trust it. Method: synthetic host logs and
// images built by hand, one case per rule: a consistent prefix, a torn
// in-flight write, concurrent overlapping writes in either order, a lost
// acknowledged write, ordering across two volumes, corrupt and unknown blocks,
// a recovery after a crash of the primary, and the "nothing flushed is lost"
// check. The Python hosts and the checker must also agree on the stamp bytes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runOk } from '../helpers/array.js';
import { blockBytes, checkFlushed, checkWriteOrder, decodeBlock, parseHostLog, stampBlock, type HostLog } from '../helpers/write-order.js';
import path from 'node:path';

interface W {
  id: number;
  volume?: number;
  block: number;
  blocks?: number;
  issue: number;
  /** undefined: still in flight. */
  end?: number;
  failed?: boolean;
}

function logOf(writes: W[], flushes: Array<{ id: number; volume?: number; issue: number; end: number }> = []): HostLog {
  const lines: string[] = [];
  for (const w of writes) {
    lines.push(JSON.stringify({ t: 'w', id: w.id, v: w.volume ?? 0, b: w.block, n: w.blocks ?? 1, c: 0, i: w.issue }));
    if (w.end !== undefined) lines.push(JSON.stringify(w.failed ? { t: 'e', id: w.id, e: w.end, err: 'killed' } : { t: 'a', id: w.id, a: w.end }));
  }
  for (const f of flushes) {
    lines.push(JSON.stringify({ t: 'f', id: f.id, v: f.volume ?? 0, c: 0, i: f.issue }), JSON.stringify({ t: 'a', id: f.id, a: f.end }));
  }
  return parseHostLog(lines.join('\n') + '\n');
}

/** An image of `blocks` blocks; `held` maps block -> write id (0 or absent: the initial zeros). */
function image(volume: number, blocks: number, held: Record<number, number>): Buffer {
  const out = Buffer.alloc(blocks * blockBytes);
  for (const [block, id] of Object.entries(held)) {
    if (id !== 0) stampBlock(volume, id, Number(block)).copy(out, Number(block) * blockBytes);
  }
  return out;
}

test('a prefix of sequential writes is consistent, at an instant between the right issue and ack', () => {
  const log = logOf([
    { id: 1, block: 0, issue: 10, end: 20 },
    { id: 2, block: 1, issue: 30, end: 40 },
    { id: 3, block: 0, issue: 50, end: 60 },
  ]);
  const result = checkWriteOrder({ log, images: [image(0, 4, { 0: 1, 1: 2 })] });
  assert.deepEqual(result.violations, []);
  assert.ok(result.instantUs! > 30 && result.instantUs! < 60, `instant ${result.instantUs}`);
  assert.equal(result.blocksWritten, 2);
  assert.ok(checkWriteOrder({ log, images: [image(0, 4, { 0: 3, 1: 2 })] }).consistent, 'the final state');
  assert.ok(checkWriteOrder({ log, images: [image(0, 4, {})] }).consistent, 'the initial state');
});

test('a torn in-flight write is allowed, block by block', () => {
  const log = logOf([
    { id: 1, block: 0, blocks: 4, issue: 10, end: 20 },
    { id: 2, block: 0, blocks: 4, issue: 30 },
    { id: 3, block: 8, blocks: 4, issue: 35, end: 90, failed: true },
  ]);
  const torn = image(0, 16, { 0: 2, 1: 1, 2: 2, 3: 1, 8: 3, 10: 3 });
  assert.deepEqual(checkWriteOrder({ log, images: [torn] }).violations, []);
});

test('concurrent overlapping writes may land in either order', () => {
  const log = logOf([
    { id: 1, block: 0, blocks: 2, issue: 10, end: 30 },
    { id: 2, block: 1, blocks: 2, issue: 20, end: 25 },
    { id: 3, block: 5, issue: 40, end: 50 },
  ]);
  assert.ok(checkWriteOrder({ log, images: [image(0, 8, { 0: 1, 1: 1, 2: 2, 5: 3 })] }).consistent, 'write 2 first, then write 1');
  assert.ok(checkWriteOrder({ log, images: [image(0, 8, { 0: 1, 1: 2, 2: 2, 5: 3 })] }).consistent, 'write 1 first, then write 2');
});

test('a lost write that was acknowledged before a held write was issued is caught', () => {
  const log = logOf([
    { id: 1, block: 0, issue: 10, end: 20 },
    { id: 2, block: 0, issue: 30, end: 40 },
    { id: 3, block: 5, issue: 50, end: 60 },
  ]);
  const result = checkWriteOrder({ log, images: [image(0, 8, { 0: 1, 5: 3 })] });
  assert.equal(result.consistent, false);
  assert.equal(result.violations.length, 1);
  assert.match(result.violations[0]!, /volume 0 block 5 holds write 3, issued at t=0\.000050s, but volume 0 block 0 holds write 1, which a later write to it had replaced by t=0\.000040s/);
  const initial = checkWriteOrder({ log, images: [image(0, 8, { 5: 3 })] });
  assert.match(initial.violations[0]!, /block 0 holds the initial zeros/);
});

test('ordering across the two volumes of a group is checked', () => {
  const log = logOf([
    { id: 1, volume: 0, block: 3, issue: 10, end: 20 },
    { id: 2, volume: 1, block: 3, issue: 30, end: 40 },
  ]);
  assert.ok(checkWriteOrder({ log, images: [image(0, 4, { 3: 1 }), image(1, 4, {})] }).consistent, 'the first write alone');
  const result = checkWriteOrder({ log, images: [image(0, 4, {}), image(1, 4, { 3: 2 })] });
  assert.equal(result.consistent, false);
  assert.match(result.violations[0]!, /volume 1 block 3 holds write 2.*volume 0 block 3 holds the initial zeros/);
});

test('corrupt, misplaced, unknown and future blocks are violations', () => {
  const log = logOf([{ id: 1, block: 0, issue: 10, end: 20 }, { id: 2, block: 1, issue: 500, end: 600 }]);
  const corrupt = image(0, 4, { 0: 1 });
  corrupt[100] = corrupt[100]! ^ 1;
  assert.match(checkWriteOrder({ log, images: [corrupt] }).violations[0]!, /block 0: stamp checksum mismatch/);
  const misplaced = Buffer.alloc(4 * blockBytes);
  stampBlock(0, 1, 0).copy(misplaced, 2 * blockBytes);
  assert.match(checkWriteOrder({ log, images: [misplaced] }).violations[0]!, /block 2: holds write 1's block for volume 0 block 0/);
  const garbage = Buffer.alloc(4 * blockBytes);
  garbage[5] = 7;
  assert.match(checkWriteOrder({ log, images: [garbage] }).violations[0]!, /neither zeros nor a stamp/);
  assert.match(checkWriteOrder({ log, images: [image(0, 4, { 3: 1 })] }).violations[0]!, /block 3 holds write 1, which the hosts never wrote there/);
  assert.match(checkWriteOrder({ log, images: [image(0, 4, { 0: 9 })] }).violations[0]!, /block 0 holds write 9/);
  const future = checkWriteOrder({ log, images: [image(0, 4, { 0: 1, 1: 2 })], takenUs: 300 });
  assert.match(future.violations[0]!, /holds write 2, issued at t=0\.000500s, after the image was read/);
});

test('an initial image other than zeros (data from before the hosts, even old stamps) is the initial content', () => {
  const log = logOf([{ id: 7, block: 1, issue: 10, end: 20 }]);
  const initial = image(0, 4, { 0: 99, 1: 98 });
  initial.fill(0x33, 2 * blockBytes, 3 * blockBytes);
  assert.ok(checkWriteOrder({ log, images: [initial], initial: [initial] }).consistent, 'everything as it was');
  assert.ok(checkWriteOrder({ log, images: [image(0, 4, { 0: 99, 1: 7 })], initial: [initial] }).consistent === false, 'block 2 lost its initial bytes');
  const later = Buffer.from(initial);
  stampBlock(0, 7, 1).copy(later, blockBytes);
  assert.ok(checkWriteOrder({ log, images: [later], initial: [initial] }).consistent, 'write 7 over the initial content');
  assert.match(checkWriteOrder({ log, images: [initial] }).violations[0]!, /holds write 99, which the hosts never wrote there/, 'without the initial image, old stamps are unknown writes');
});

test('a recovery after a crash of the primary is a state the hosts saw', () => {
  // Write 2 was acknowledged but not flushed; the crash lost it, the P-VOL came back with write 1.
  const writes: W[] = [
    { id: 1, block: 0, issue: 10, end: 20 },
    { id: 2, block: 0, issue: 30, end: 40 },
    { id: 3, block: 1, issue: 45, end: 100, failed: true },
    { id: 4, block: 2, issue: 300, end: 310 },
  ];
  const log = logOf(writes);
  const recovery = { atUs: 200, images: [image(0, 4, { 0: 1, 1: 3 })] };
  const after = image(0, 4, { 0: 1, 1: 3, 2: 4 });
  assert.equal(checkWriteOrder({ log, images: [after] }).consistent, false, 'without the recovery, block 0 went back in time');
  const result = checkWriteOrder({ log, images: [after], recoveries: [recovery] });
  assert.deepEqual(result.violations, []);
  assert.ok(result.instantUs! > 300 && result.instantUs! < 310 + 1e9);
  assert.ok(checkWriteOrder({ log, images: [image(0, 4, { 0: 2 })], recoveries: [recovery] }).consistent, 'before the crash');
  const mixed = checkWriteOrder({ log, images: [image(0, 4, { 0: 2, 2: 4 })], recoveries: [recovery] });
  assert.equal(mixed.consistent, false, 'write 2 was gone after the recovery, before write 4 was issued');
});

test('nothing flushed may be lost: checkFlushed', () => {
  const log = logOf(
    [
      { id: 1, block: 0, issue: 10, end: 20 },
      { id: 2, block: 1, issue: 30, end: 40 },
      { id: 4, block: 1, issue: 60, end: 70 },
      { id: 5, block: 2, issue: 60, end: 70 },
    ],
    [{ id: 3, issue: 50, end: 55 }],
  );
  const window = { crashUs: 1000, sinceUs: 0 };
  const kept = checkFlushed(log, [image(0, 4, { 0: 1, 1: 2 })], window);
  assert.deepEqual(kept.violations, []);
  assert.equal(kept.flushedWrites, 2);
  assert.deepEqual(checkFlushed(log, [image(0, 4, { 0: 1, 1: 4, 2: 5 })], window).violations, []);
  const lost = checkFlushed(log, [image(0, 4, { 1: 2 })], window);
  assert.match(lost.violations[0]!, /volume 0 block 0 holds the initial zeros, older than write 1 \(acknowledged at t=0\.000020s; FLUSH 3 issued/);
  assert.deepEqual(checkFlushed(log, [image(0, 4, {})], { crashUs: 52, sinceUs: 0 }).violations, [], 'the FLUSH had not completed before the crash');
  // An earlier crash at 45 lost writes 1 and 2 (not flushed then); FLUSH 3 after it does not bring them back.
  assert.deepEqual(checkFlushed(log, [image(0, 4, {})], { crashUs: 1000, sinceUs: 45 }).violations, []);
});

test('the Python hosts and the checker stamp blocks the same way', () => {
  const script = [
    'import importlib.util, sys',
    `spec = importlib.util.spec_from_file_location("hosts", ${JSON.stringify(path.join(import.meta.dirname, '..', 'helpers', 'write-order-hosts.py'))})`,
    'hosts = importlib.util.module_from_spec(spec); spec.loader.exec_module(hosts)',
    'sys.stdout.write(hosts.stamp(1, 123456789012, 77).hex())',
  ].join('\n');
  const fromPython = Buffer.from(runOk('python3', ['-c', script]), 'hex');
  assert.ok(fromPython.equals(stampBlock(1, 123456789012, 77)));
  assert.deepEqual(decodeBlock(fromPython, 1, 77), { kind: 'write', id: 123456789012 });
});

test('a torn last log line is ignored; a completion without its issue is an error', () => {
  const log = parseHostLog('{"t":"w","id":1,"v":0,"b":0,"n":1,"c":0,"i":5}\n{"t":"a","id":1,"a":9}\n{"t":"w","id":2,"v"');
  assert.equal(log.writes.size, 1);
  assert.equal(log.writes.get(1)!.acked, true);
  assert.throws(() => parseHostLog('{"t":"a","id":7,"a":9}\n'), /request 7, which was never issued/);
});
