// Goal: either array may die at any time and both come back and converge: no
// full copy starts again, nothing flushed is lost, and the pair reaches lag 0
// with identical volumes. Method: real arrays in volatile-cache mode (a kill
// drops unsynced writes), kill -9 of A and then of B during the initial copy
// of a 256 MiB P-VOL full of data (paced, so the kills land mid-copy) and
// again in PAIR while the libnbd hosts write; after each restart the copy
// percentage and the journal's record count show the copy went on from where
// it was (a full copy would add 256 more base records); after a kill of A the
// P-VOL must hold every flushed write (checkFlushed); at the end qemu-img
// compare and the write-order checker on the P-VOL and S-VOL.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runOk } from '../helpers/array.js';
import { Hosts, nowUs } from '../helpers/hosts.js';
import {
  compareAll, display, displayCli, journalShow, readSvols, readVolume, sleep, stableNextSeq, startSite, startWithin, waitFor, type Site,
} from '../helpers/replication.js';
import { checkFlushed, checkWriteOrder, type Recovery } from '../helpers/write-order.js';

const mib = 2 ** 20;
const copyChunks = 256; // base records of a full copy of the 256 MiB P-VOL (1 MiB each)

async function copyPercent(site: Site): Promise<number> {
  return (await display(site.a))[0]!.copyPercent;
}

/** Writes a 1 MiB pattern byte per MiB with qemu-io (no pair yet: plain writes), and flushes. */
function fillWithPatterns(site: Site): void {
  const commands = Array.from({ length: site.volumeBytes / mib }, (_, i) => ['-c', `write -P ${1 + (i % 250)} ${i}M 1M`]).flat();
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), ...commands, '-c', 'flush'], { timeoutMs: 300_000 });
}

function checkPatterns(image: Buffer, first: number, lastExclusive: number): void {
  for (let i = first; i < lastExclusive; i++) {
    const expected = 1 + (i % 250);
    const chunk = image.subarray(i * mib, (i + 1) * mib);
    assert.ok(chunk.every((byte) => byte === expected), `MiB ${i} lost its flushed pattern ${expected}`);
  }
}

test('kill -9 of A, then of B, mid-copy and mid-transfer: both come back and converge with no full copy and nothing flushed lost', { timeout: 300_000 }, async (t) => {
  const log = (line: string): void => t.diagnostic(line);
  const site = await startSite(t, { volumes: 1, volumeSize: '256MiB', journalSize: '512MiB', copyPace: '48MiB', waitForPair: false, beforePair: fillWithPatterns });

  // ---- mid-copy: kill A --------------------------------------------------------
  await waitFor('the copy past 30%', async () => (await copyPercent(site)) >= 30, 60_000, 50);
  const beforeKillA = await copyPercent(site);
  await site.a.kill9();
  await startWithin(site.a, 'A');
  const afterKillA = await copyPercent(site);
  log(`mid-copy kill -9 of A at ${beforeKillA}%: back at ${afterKillA}% (${(await display(site.a))[0]!.status})`);
  assert.equal((await display(site.a))[0]!.status, 'COPY');
  assert.ok(afterKillA >= 25 && afterKillA <= beforeKillA, `the copy resumes from its last persisted point, not from 0 (was ${beforeKillA}%, now ${afterKillA}%)`);

  // ---- mid-copy: kill B --------------------------------------------------------
  await waitFor('the copy past 60%', async () => (await copyPercent(site)) >= 60, 60_000, 50);
  const beforeKillB = await copyPercent(site);
  await site.b.kill9();
  await sleep(300);
  await startWithin(site.b, 'B');
  const afterKillB = await copyPercent(site);
  log(`mid-copy kill -9 of B at ${beforeKillB}%: A's copy at ${afterKillB}% after B is back`);
  assert.ok(afterKillB >= beforeKillB, 'a restart of B does not set the copy back');

  await waitFor('PAIR with lag 0', async () => (await display(site.a)).every((p) => p.status === 'PAIR' && p.lagRecords === 0), 120_000, 200);
  const copyRecords = (await journalShow(site.a)).cursors.nextSeq;
  log(`initial copy done with ${copyRecords} records (one full pass: ${copyChunks})`);
  assert.ok(copyRecords <= copyChunks + 64 + 4, `no full copy again: ${copyRecords} records (a second full copy would add ${copyChunks})`);
  compareAll(site);
  checkPatterns(readVolume(site.b, 'svol0', site.dir), 0, 256);

  // ---- mid-transfer: hosts write the first 8 MiB; kill A, then B ------------------
  const hotBlocks = (8 * mib) / 4096;
  const initial = [readVolume(site.a, 'pvol0', site.dir)];
  const hosts = await Hosts.start(t, { volumes: [site.a.uri('pvol0')], hotBlocks, dir: site.dir, seed: 5, flushShare: 0.05 });
  const recoveries: Recovery[] = [];
  await sleep(1500);
  const crashUs = nowUs();
  await site.a.kill9();
  await hosts.allDown();
  await startWithin(site.a, 'A');
  const firstSeq = (await journalShow(site.a)).cursors.nextSeq;
  const pvol = readVolume(site.a, 'pvol0', site.dir);
  recoveries.push({ atUs: nowUs(), images: [pvol] });
  const flushed = checkFlushed(hosts.readLog(), [pvol], { crashUs, sinceUs: 0, initial });
  assert.deepEqual(flushed.violations, [], 'every flushed write is on the P-VOL after kill -9 of A');
  checkPatterns(pvol, 8, 256);
  const resent = (await stableNextSeq(site)) - firstSeq;
  const statusA = await display(site.a);
  log(`mid-transfer kill -9 of A: ${flushed.flushedWrites} flushed writes kept; ${resent} base records re-sent; status ${statusA[0]!.status}`);
  assert.equal(statusA[0]!.status, 'PAIR', 'no new copy after a restart in PAIR');
  assert.ok(resent <= 18, `only the active region (16 MiB: 16 base records and the unit's two markers) is re-sent, not the volume: ${resent} records`);
  hosts.go();
  await hosts.allUp();
  await sleep(1500);
  await site.b.kill9();
  await sleep(500);
  await startWithin(site.b, 'B');
  assert.equal((await display(site.b))[0]!.status, 'PAIR');
  await sleep(1500);
  await hosts.stop();

  await waitFor('lag 0 (pair display --json on A)', () => displayCli(site.a).every((p) => p.status === 'PAIR' && p.lagRecords === 0), 120_000, 500);
  compareAll(site);
  const hostLog = hosts.readLog();
  const svols = await readSvols(site);
  const svolCheck = checkWriteOrder({ log: hostLog, images: svols.images, recoveries, takenUs: svols.takenUs, initial });
  assert.deepEqual(svolCheck.violations, []);
  const finalPvol = readVolume(site.a, 'pvol0', site.dir);
  assert.deepEqual(checkFlushed(hostLog, [finalPvol], { crashUs: nowUs(), sinceUs: recoveries[0]!.atUs, initial }).violations, []);
  assert.deepEqual(checkWriteOrder({ log: hostLog, images: [finalPvol], recoveries, takenUs: nowUs(), initial }).violations, []);
  checkPatterns(finalPvol, 8, 256);
  log(`end: lag 0, identical; ${hostLog.writes.size} host writes; S-VOL consistent, flushed writes and patterns read back on A`);
});
