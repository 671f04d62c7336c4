// Goal: pair split stops the S-VOLs at a consistency point while both sides go
// on taking writes (tracked in region bitmaps), and pair resync copies only
// the regions changed on either side, after which every S-VOL equals its
// P-VOL byte for byte; a link down longer than link.suspendAfterMs suspends
// the pair (PSUE link-down) and a resync recovers it.
// Method: two real arrays (B pulls through a TCP proxy), two pairs in one
// group, qemu-io writing patterns; split --rw sent to B (forwarded to A);
// writes on both P-VOLs and on an S-VOL; resync; qemu-img compare of every
// pair and the patterns read back; the bytes the resync sent are compared
// with the bytes of the dirty regions (≤ 1.1×).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { auditLines, run, runOk, type RunningArray } from '../helpers/array.js';
import {
  cliOk, compareAll, display, journalShow, readVolume, setRestorePaused, sleep, startSite, waitFor, waitForPairAndLag0, type Site,
} from '../helpers/replication.js';

const mib = 2 ** 20;

function write(site: Site, side: 'a' | 'b', volume: string, pattern: number, offsetMiB: number, lengthMiB: number): void {
  const array = side === 'a' ? site.a : site.b;
  runOk('qemu-io', ['-f', 'raw', array.uri(volume), '-c', `write -P ${pattern} ${offsetMiB}M ${lengthMiB}M`, '-c', 'flush']);
}

/**
 * An NBD client that stays connected (reading every 50 ms) until the server closes its session;
 * resolves with the read-only flag it was given and whether the server closed it.
 */
function watchSession(uri: string): { connected: Promise<boolean>; closed: Promise<boolean> } {
  const child = spawn('/usr/bin/nbdsh', ['-u', uri, '-c', [
    'import time, sys',
    'print("ro", h.is_read_only(), flush=True)',
    'try:',
    '    for i in range(600):',
    '        h.pread(4096, 0)',
    '        time.sleep(0.05)',
    '    print("still open", flush=True)',
    'except nbd.Error as e:',
    '    print("closed", flush=True)',
  ].join('\n')], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` } });
  let out = '';
  let onRo: (ro: boolean) => void = () => undefined;
  const connected = new Promise<boolean>((resolve) => { onRo = resolve; });
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
    const match = /ro (\d|True|False)/.exec(out);
    if (match) onRo(match[1] === '1' || match[1] === 'True');
  });
  const closed = new Promise<boolean>((resolve) => child.on('close', () => {
    onRo(false);
    resolve(out.includes('closed'));
  }));
  return { connected, closed };
}

function holds(image: Buffer, pattern: number, offsetMiB: number, lengthMiB: number): boolean {
  return image.subarray(offsetMiB * mib, (offsetMiB + lengthMiB) * mib).every((byte) => byte === pattern);
}

test('split --rw, writes on both sides, resync: only changed regions are copied and the S-VOLs equal the P-VOLs', { timeout: 180_000 }, async (t) => {
  const site = await startSite(t, { volumeSize: '64MiB', envA: {}, envB: {} });
  write(site, 'a', 'pvol0', 0x11, 0, 4);
  await waitForPairAndLag0(site);

  const readOnlySession = watchSession(site.b.uri('svol0'));
  assert.equal(await readOnlySession.connected, true, 'a paired S-VOL is exported read-only');

  // Split from B's side (the API `pair split` uses; B's link runs through this process's proxy, so no
  // blocking CLI call here): the command runs on A, B's S-VOLs stop at the split point and turn writable.
  const response = await site.b.api('POST', '/v1/pairs/split', { group: 'g1', rw: true });
  assert.equal(response.status, 200, JSON.stringify(response.json));
  const split = response.json as { splitSeq: number; consistencySeq: number; atSplitPoint: boolean; svolWritable: boolean };
  t.diagnostic(`split: ${JSON.stringify(split)}`);
  assert.ok(split.atSplitPoint && split.svolWritable);
  // A audits the split it ran for B: as forwarded by the peer, not as an admin call of its own.
  const splitLine = (array: RunningArray): Record<string, unknown> | undefined => auditLines(array).find((l) => l.route === '/v1/pairs/split' && l.status === 200);
  await waitFor('the audit lines of the split on A (forwarded) and on B', () => splitLine(site.a) !== undefined && splitLine(site.b) !== undefined);
  assert.equal(splitLine(site.a)!.via, 'peer site-b');
  assert.equal(splitLine(site.b)!.via, null, 'B\'s own line: the caller called B');
  assert.equal(await readOnlySession.closed, true, 'split --rw closes the S-VOL\'s read-only sessions so hosts reconnect');
  const writableSession = watchSession(site.b.uri('svol0'));
  assert.equal(await writableSession.connected, false, 'after split --rw the S-VOL is exported writable');
  for (const array of [site.a, site.b]) {
    // B hears of the split with its next journal pull.
    await waitFor('PSUS shown', async () => (await display(array)).every((r) => r.status === 'PSUS'), 5000, 50);
    const rows = await display(array);
    assert.ok(rows.every((r) => r.consistencySeq === split.consistencySeq), `${array === site.a ? 'A' : 'B'} holds the split point`);
  }

  // Both sides write: P-VOL writes are tracked on A, S-VOL writes on B.
  write(site, 'a', 'pvol0', 0x22, 8, 2);
  write(site, 'a', 'pvol1', 0x44, 30, 1);
  write(site, 'b', 'svol0', 0x33, 20, 1);
  await sleep(300);
  const svolSplit = readVolume(site.b, 'svol0', site.dir);
  assert.ok(holds(svolSplit, 0x11, 0, 4), 'the S-VOL keeps what it had at the split');
  assert.ok(holds(svolSplit, 0, 8, 2), 'P-VOL writes after the split do not reach the S-VOL');
  assert.ok(holds(svolSplit, 0x33, 20, 1), 'the S-VOL took its own write');

  const resync = JSON.parse(cliOk(site.a, ['pair', 'resync', '--group', 'g1', '--json'])) as { dirtyBytes: number };
  t.diagnostic(`resync: ${JSON.stringify(resync)}`);
  assert.equal(resync.dirtyBytes, 4 * mib, 'the dirty regions: 2 MiB + 1 MiB on A, 1 MiB on B');
  assert.equal(await writableSession.closed, true, 'resync closes the S-VOL\'s writable sessions');
  const readOnly = run('qemu-io', ['-f', 'raw', site.b.uri('svol0'), '-c', 'write -P 0x55 0 4k']);
  assert.notEqual(readOnly.code, 0, 'the S-VOL is read-only again once resync starts');

  await waitForPairAndLag0(site);
  compareAll(site);
  const svol0 = readVolume(site.b, 'svol0', site.dir);
  assert.ok(holds(svol0, 0x22, 8, 2) && holds(svol0, 0, 20, 1) && holds(svol0, 0x11, 0, 4), 'svol0 is pvol0 again, its own write undone');
  assert.ok(holds(readVolume(site.b, 'svol1', site.dir), 0x44, 30, 1), 'svol1 has the write pvol1 took while split');
  const copied = (await display(site.a)).reduce((n, r) => n + r.copyBytes, 0);
  t.diagnostic(`resync sent ${copied} bytes for ${resync.dirtyBytes} bytes of dirty regions (${(copied / resync.dirtyBytes).toFixed(2)}x)`);
  assert.ok(copied <= 1.1 * resync.dirtyBytes, `resync bytes ${copied} ≤ 1.1 × ${resync.dirtyBytes}`);

  // PAIR again: host writes replicate as before.
  write(site, 'a', 'pvol1', 0x66, 40, 1);
  await waitForPairAndLag0(site);
  compareAll(site);

  // pair delete: the S-VOLs become simplex; their read-only sessions are closed so hosts reconnect writable.
  const paired = watchSession(site.b.uri('svol1'));
  assert.equal(await paired.connected, true);
  cliOk(site.a, ['pair', 'delete', '--group', 'g1']);
  assert.equal(await paired.closed, true, 'pair delete closes the S-VOL\'s read-only sessions');
  const simplex = watchSession(site.b.uri('svol1'));
  assert.equal(await simplex.connected, false, 'a deleted pair\'s S-VOL is writable');
});

test('a link down longer than link.suspendAfterMs suspends the pair (PSUE link-down); resync recovers it', { timeout: 180_000 }, async (t) => {
  // 10 s: long enough that a loaded machine's pauses do not suspend the pair while it is set up.
  const site = await startSite(t, { volumes: 1, volumeSize: '64MiB', envA: {}, envB: {}, suspendAfterMs: 10_000 });
  site.proxy.setMode('cut');
  write(site, 'a', 'pvol0', 0x21, 2, 3);
  await waitFor('PSUE link-down on A', async () => (await display(site.a))[0]!.status === 'PSUE', 30_000, 100);
  const suspended = (await display(site.a))[0]!;
  t.diagnostic(`A: ${suspended.status} ${suspended.statusReason}`);
  assert.equal(suspended.statusReason, 'link-down');
  write(site, 'a', 'pvol0', 0x22, 10, 1); // tracked in the bitmap
  await site.b.stop();
  await waitFor('A to see B gone', () => JSON.parse(cliOk(site.a, ['peer', 'list', '--json'])).peers[0].connected === false, 30_000, 100);
  const refused = site.a.cli(['pair', 'resync', '--group', 'g1']);
  assert.notEqual(refused.code, 0, 'no resync while the peer is unreachable');
  assert.match(refused.stderr, /LINK_DOWN/);
  await site.b.start();
  site.proxy.setMode('pass');
  await waitFor('A to reach B again', () => JSON.parse(cliOk(site.a, ['peer', 'list', '--json'])).peers[0].connected === true, 30_000, 100);
  await waitFor('B to hear of the suspension', async () => (await display(site.b))[0]!.status === 'PSUE', 30_000, 100);
  const resync = await site.b.api('POST', '/v1/pairs/resync', { group: 'g1' });
  assert.equal(resync.status, 200, JSON.stringify(resync.json));
  await waitForPairAndLag0(site);
  compareAll(site);
  const svol = readVolume(site.b, 'svol0', site.dir);
  assert.ok(holds(svol, 0x21, 2, 3) && holds(svol, 0x22, 10, 1));
});

/** Flips a data byte of the stored write record at `offset` in a stopped array's drive files; returns its seq. */
function damageStoredWrite(driveFile: string, offset: number): number {
  const fd = fs.openSync(driveFile, 'r+');
  try {
    const size = fs.fstatSync(fd).size;
    const chunk = Buffer.alloc(16 * mib);
    for (let at = 0; at < size; at += chunk.length) {
      const read = fs.readSync(fd, chunk, 0, chunk.length, at);
      for (let block = 0; block + 4096 <= read; block += 4096) {
        if (chunk.readUInt32BE(block) !== 0x54574a52 || chunk[block + 6] !== 1) continue; // "TWJR", kind write
        if (Number(chunk.readBigUInt64BE(block + 32)) !== offset) continue;
        const seq = Number(chunk.readBigUInt64BE(block + 16));
        const flip = Buffer.alloc(1);
        fs.readSync(fd, flip, 0, 1, at + block + 4096 + 100);
        flip[0] = flip[0]! ^ 0xff;
        fs.writeSync(fd, flip, 0, 1, at + block + 4096 + 100);
        return seq;
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  throw new Error(`no stored write record for offset ${offset} in ${driveFile}`);
}

test('a stored record damaged on the receiving array: restore stops before it, PSUE bad-record, resync recovers', { timeout: 180_000 }, async (t) => {
  const site = await startSite(t, { volumes: 1, volumeSize: '64MiB', envA: {}, envB: {} });
  await setRestorePaused(site.b, true);
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x31 0 1M', '-c', 'write -P 0x32 4M 1M', '-c', 'write -P 0x33 8M 1M', '-c', 'flush']);
  const end = (await journalShow(site.a)).cursors.nextSeq;
  await waitFor('B to store every record', async () => (await journalShow(site.b)).cursors.durableSeq >= end, 30_000, 50);
  // A record stored after those were synced proves they were (unsyncedBefore): damage to one of
  // them is then damage, not a tear that a crash left (which B would cut off and pull again).
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), '-c', 'write -P 0x34 12M 64k', '-c', 'flush']);
  const after = (await journalShow(site.a)).cursors.nextSeq;
  await waitFor('B to store the later record', async () => (await journalShow(site.b)).cursors.durableSeq >= after, 30_000, 50);
  await site.b.stop();
  const seq = damageStoredWrite(path.join(site.b.dir, 'data', 'drive0.img'), 4 * mib);
  t.diagnostic(`damaged the stored record seq ${seq} (the write at 4 MiB) in B's drive`);
  await site.b.start();
  await waitFor('PSUE bad-record on A', async () => /^bad-record: seq \d+ on site-b$/.test((await display(site.a))[0]!.statusReason ?? ''), 30_000, 100);
  const a = (await display(site.a))[0]!;
  t.diagnostic(`A: ${a.status} ${a.statusReason}; consistency seq ${a.consistencySeq}`);
  assert.equal(a.status, 'PSUE');
  assert.equal(a.consistencySeq, seq - 1, 'the S-VOL stops right before the damaged record');
  const svol = readVolume(site.b, 'svol0', site.dir);
  assert.ok(holds(svol, 0x31, 0, 1) && holds(svol, 0, 4, 1) && holds(svol, 0, 8, 1), 'the S-VOL holds the writes before the damaged one, and none after');
  cliOk(site.a, ['pair', 'resync', '--group', 'g1']);
  await waitForPairAndLag0(site);
  compareAll(site);
});

