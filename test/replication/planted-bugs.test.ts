// Goal: the replication checks catch each bug planted behind
// TWINSTORE_TEST_PLANT (src/util/planted.ts), so a real one of the same kind
// would not slip through. Each scenario runs twice: without the plant it must
// pass, with it the failure must be detected (the test asserts the detection,
// so the suite stays green, and prints what was detected).
// Method, per bug:
// (c) restore-out-of-order on B: restore paused, the hosts write block 0 of
//     volume 0 twice and then block 0 of volume 1, one after the other; once
//     restore resumes and lag is 0, the write-order checker and qemu-img
//     compare look at the S-VOLs.
// (b) free-at-stored on A: restore paused while 40 MiB of records arrive, then
//     one batch applied; A restarts. A must not claim a consistency point past
//     what B applied, and when A shows lag 0 the S-VOL must equal the P-VOL.
// (a) pvol-before-journal on A: end to end it is masked, by design: after an
//     unclean stop A re-sends every active region as base records (docs/architecture.md
//     §3), which also heals a P-VOL write whose record was lost. So the check
//     is made on the crash image itself, before any restart: restore paused
//     on B (A's journal tail cannot move), the hosts write at QD 16, kill -9 of
//     A (page cache kept, as after a process crash), and the data folder is
//     opened in this process: every P-VOL block holding a host write must find
//     that write's record in the master journal ring (docs/architecture.md §3.5: "a crash
//     can leave a record without its P-VOL write, never the reverse").

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runOk } from '../helpers/array.js';
import { Hosts, nowUs } from '../helpers/hosts.js';
import {
  compareAll, display, journalShow, readSvols, setRestorePaused, sleep, startSite, startWithin, volatileEnv, waitFor, type Site,
} from '../helpers/replication.js';
import { blockBytes, checkWriteOrder, decodeBlock, findStamps } from '../helpers/write-order.js';
import { loadConfig } from '../../src/config/index.js';
import { StorageEngine } from '../../src/storage/index.js';

const mib = 2 ** 20;

function planted(bug: string, on: boolean): Record<string, string> {
  return on ? { TWINSTORE_TEST_PLANT: bug } : {};
}

function identical(site: Site): { identical: boolean; detail: string } {
  try {
    compareAll(site);
    return { identical: true, detail: 'identical' };
  } catch (error) {
    return { identical: false, detail: (error as Error).message.split('\n').filter(Boolean).slice(-1)[0] ?? 'differs' };
  }
}

async function waitStored(site: Site): Promise<number> {
  const end = (await journalShow(site.a)).cursors.nextSeq;
  await waitFor('B to store every record', async () => (await journalShow(site.b)).cursors.durableSeq >= end, 30_000, 50);
  return end;
}

// ---- (c) restore-out-of-order ---------------------------------------------------------

async function outOfOrder(t: TestContext, plant: boolean): Promise<{ violations: string[]; compare: string; identical: boolean }> {
  const site = await startSite(t, { envB: { ...volatileEnv, ...planted('restore-out-of-order', plant) } });
  await setRestorePaused(site.b, true);
  const hosts = await Hosts.runScript(t, {
    volumes: site.pvols.map((name) => site.a.uri(name)), hotBlocks: 16, dir: site.dir, seed: 3,
    script: [[0, 0, 1], [0, 0, 1], [1, 0, 1], ['flush', 0]],
  });
  await waitStored(site);
  await setRestorePaused(site.b, false);
  await waitFor('lag 0', async () => (await display(site.a)).every((p) => p.lagRecords === 0), 30_000, 50);
  const svols = await readSvols(site);
  const check = checkWriteOrder({ log: hosts.readLog(), images: svols.images, takenUs: svols.takenUs });
  const compared = identical(site);
  return { violations: check.violations, compare: compared.detail, identical: compared.identical };
}

test('(c) restore applying a record out of order is caught by the checker and by compare', { timeout: 180_000 }, async (t) => {
  const clean = await outOfOrder(t, false);
  assert.deepEqual(clean.violations, [], 'without the plant: consistent');
  assert.ok(clean.identical, 'without the plant: identical');
  const bug = await outOfOrder(t, true);
  t.diagnostic(`restore-out-of-order detected: checker: ${bug.violations.join('; ') || 'nothing'}; qemu-img compare: ${bug.compare}`);
  assert.ok(bug.violations.length > 0, 'the write-order checker catches the swapped records');
  assert.ok(!bug.identical, 'the S-VOL differs from the P-VOL at lag 0');
});

// ---- (b) free-at-stored ---------------------------------------------------------------

interface FreeResult {
  stored: number;
  applied: number;
  tailBeforeRestart: number;
  aConsistencySeq: number;
  aLagRecords: number;
  bConsistencySeq: number;
  compareAtLag0: string | undefined;
}

async function freeAtStored(t: TestContext, plant: boolean): Promise<FreeResult> {
  const site = await startSite(t, { volumes: 1, volumeSize: '64MiB', envA: planted('free-at-stored', plant), envB: {} });
  await setRestorePaused(site.b, true);
  const writes = Array.from({ length: 40 }, (_, i) => ['-c', `write -P ${1 + i} ${i}M 1M`]).flat();
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), ...writes, '-c', 'flush']);
  const stored = await waitStored(site);
  // Let one batch (8 MiB) apply, and hold the rest.
  await setRestorePaused(site.b, false);
  await setRestorePaused(site.b, true);
  let applied = -1;
  await waitFor('B applied cursor to settle', async () => {
    const now = (await display(site.b))[0]!.consistencySeq + 1;
    const settled = now === applied;
    applied = now;
    return settled;
  }, 30_000, 300);
  assert.ok(applied < stored, `one batch applied, not all (applied ${applied}, stored ${stored})`);
  await waitFor('A to hear B\'s cursors', async () => (await display(site.a))[0]!.consistencySeq + 1 === applied, 30_000, 50);
  const tailBeforeRestart = (await journalShow(site.a)).cursors.tailSeq;
  await site.a.stop('SIGTERM');
  await startWithin(site.a, 'A');
  const a = (await display(site.a))[0]!;
  const b = (await display(site.b))[0]!;
  const compareAtLag0 = a.lagRecords === 0 ? identical(site).detail : undefined;
  await setRestorePaused(site.b, false);
  // B's own cursor: with the plant A already claims this point, so A's display proves nothing here.
  await waitFor('B to apply everything (restore resumed)', async () => (await display(site.b)).every((p) => p.consistencySeq === stored - 1), 60_000, 100);
  await waitFor('lag 0 on A', async () => (await display(site.a)).every((p) => p.lagRecords === 0), 60_000, 100);
  assert.ok(identical(site).identical, 'identical once B applied everything');
  return { stored, applied, tailBeforeRestart, aConsistencySeq: a.consistencySeq, aLagRecords: a.lagRecords, bConsistencySeq: b.consistencySeq, compareAtLag0 };
}

test('(b) freeing the master journal at the receiver\'s storedSeq is caught: A overstates the consistency point', { timeout: 180_000 }, async (t) => {
  const clean = await freeAtStored(t, false);
  t.diagnostic(`without the plant: ${JSON.stringify(clean)}`);
  assert.equal(clean.tailBeforeRestart, clean.applied, 'A frees only up to what B applied');
  assert.equal(clean.aConsistencySeq, clean.bConsistencySeq, 'after its restart A shows the consistency point B holds');
  assert.equal(clean.aLagRecords, clean.stored - clean.applied, 'and the records B has not applied as lag');
  const bug = await freeAtStored(t, true);
  const detected: string[] = [];
  if (bug.aConsistencySeq > bug.bConsistencySeq) detected.push(`after its restart A shows consistencySeq ${bug.aConsistencySeq} but B has applied only up to ${bug.bConsistencySeq}`);
  if (bug.aLagRecords < bug.stored - bug.applied) detected.push(`A shows lag ${bug.aLagRecords} records with ${bug.stored - bug.applied} not applied on B`);
  if (bug.compareAtLag0 !== undefined && bug.compareAtLag0 !== 'identical') detected.push(`A shows lag 0 yet qemu-img compare: ${bug.compareAtLag0}`);
  t.diagnostic(`free-at-stored detected (tail ${bug.tailBeforeRestart} = stored ${bug.stored}, applied ${bug.applied}): ${detected.join('; ')}`);
  assert.ok(detected.length > 0, 'the planted early release is detected');
});

// ---- (a) pvol-before-journal ------------------------------------------------------------

interface CrashImageResult {
  attempts: number;
  /** P-VOL blocks holding a write whose record is nowhere in the journal ring. */
  ahead: string[];
  checkedBlocks: number;
}

/** kill -9 of A under load (restore paused on B), then the crash image: is any P-VOL block ahead of the journal? */
async function crashImages(t: TestContext, plant: boolean, attemptsMax: number): Promise<CrashImageResult> {
  // Drive writes through the thread pool (tuning.syncWriteBytesMax: 0): with small writes made
  // synchronously the record and the P-VOL write land in one event-loop turn, and a kill -9
  // almost never falls between them, so the planted order would hide.
  const site = await startSite(t, {
    volumes: 1, volumeSize: '16MiB', journalSize: '384MiB', drives: ['1GiB'], envA: planted('pvol-before-journal', plant), envB: {},
    extraConfigA: 'tuning:\n  syncWriteBytesMax: 0',
  });
  const result: CrashImageResult = { attempts: 0, ahead: [], checkedBlocks: 0 };
  for (let attempt = 1; attempt <= attemptsMax && result.ahead.length === 0; attempt++) {
    result.attempts = attempt;
    await setRestorePaused(site.b, true);
    const pausedUs = nowUs();
    const hosts = await Hosts.start(t, {
      volumes: [site.a.uri('pvol0')], hotBlocks: 4096, dir: site.dir, seed: attempt, firstId: attempt * 10_000_000,
      connectionsPerVolume: 3, blocksMin: 8, blocksMax: 16, writesPerSecondPerConnection: 2000, flushShare: 0,
    });
    await sleep(300 + 100 * attempt);
    // Every write so far was journaled: still PAIR, the journal not full (a suspended pair writes the P-VOL alone).
    const before = (await display(site.a))[0]!;
    assert.ok(before.status === 'PAIR' && before.journalUsedPercent < 90, `attempt ${attempt}: ${before.status}, journal ${before.journalUsedPercent}% used`);
    await site.a.kill9();
    await hosts.allDown();
    hosts.kill();
    const log = hosts.readLog();
    const image = path.join(site.dir, `crash-${attempt}`);
    runOk('cp', ['-a', '--sparse=always', site.a.dir, image]);
    const { pvol, journal } = await readCrashImage(path.join(image, path.basename(site.a.configFile)));
    fs.rmSync(image, { recursive: true, force: true });
    const recorded = new Set(findStamps(journal).map((s) => `${s.volume}:${s.id}:${s.block}`));
    for (let b = 0; b < pvol.length / blockBytes; b++) {
      const content = decodeBlock(pvol.subarray(b * blockBytes, (b + 1) * blockBytes), 0, b);
      if (content.kind !== 'write') continue;
      const write = log.writes.get(content.id);
      if (!write || write.issueUs < pausedUs) continue; // an older write: its record may be released
      result.checkedBlocks += 1;
      if (!recorded.has(`0:${content.id}:${b}`)) {
        result.ahead.push(`attempt ${attempt}: P-VOL block ${b} holds write ${content.id} (${write.acked ? 'acknowledged' : 'in flight'} at the kill), whose record is not in the journal`);
      }
    }
    await startWithin(site.a, 'A');
    await setRestorePaused(site.b, false);
    await waitFor('lag 0 after the restart', async () => (await display(site.a)).every((p) => p.status === 'PAIR' && p.lagRecords === 0), 60_000, 100);
  }
  return result;
}

/** Opens a copy of a dead array's folder in this process (no replication: no redo, no resend) and reads P-VOL and journal. */
async function readCrashImage(configFile: string): Promise<{ pvol: Buffer; journal: Buffer }> {
  const config = loadConfig(configFile);
  const engine = await StorageEngine.open({ arrayId: config.arrayId, dataDir: config.dataDir, extentBytes: config.extentBytes, drives: config.drives });
  try {
    const pvolVolume = engine.volume('pvol0')!;
    const journalVolume = engine.volume('jnl')!;
    const pvol = Buffer.alloc(pvolVolume.sizeBytes);
    const journal = Buffer.alloc(journalVolume.sizeBytes);
    await pvolVolume.read(0, pvol);
    for (let at = 0; at < journal.length; at += 16 * mib) await journalVolume.read(at, journal.subarray(at, Math.min(journal.length, at + 16 * mib)));
    return { pvol, journal };
  } finally {
    await engine.close();
  }
}

test('(a) a P-VOL write issued before its journal record is caught in the crash image', { timeout: 300_000 }, async (t) => {
  const clean = await crashImages(t, false, 3);
  t.diagnostic(`without the plant: ${clean.attempts} kills, ${clean.checkedBlocks} P-VOL blocks checked, none ahead of the journal`);
  assert.deepEqual(clean.ahead, [], 'without the plant, no P-VOL block is ever ahead of the journal');
  assert.ok(clean.checkedBlocks > 100, 'the kills caught enough fresh writes to prove something');
  const bug = await crashImages(t, true, 6);
  t.diagnostic(`pvol-before-journal detected after ${bug.attempts} kill(s): ${bug.ahead.length} blocks, e.g. ${bug.ahead.slice(0, 3).join('; ')}`);
  assert.ok(bug.ahead.length > 0, 'the planted order is caught: P-VOL data with no journal record');
});
