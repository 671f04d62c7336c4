// Goal: `pair display` tells an operator what each state means (issue 16): a
// copy shows its rate and ETA; a paused restore shows `paused`; a split pair
// shows the regions and bytes it owes (not lag 0) and the command that
// recovers it; after a takeover both sites name the same primary, and the
// fenced old primary's volume lists as `fenced` (not `pvol rw`).
// Method: two real arrays (startSite) with a paced initial copy; pair display
// through the API and the CLI table on both arrays; qemu-io writes to the
// P-VOL while split; kill -9 of A, takeover on B, A started again.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runAsync, type RunningArray } from '../helpers/array.js';
import { display, setRestorePaused, startSite, startWithin, waitFor, waitForPairAndLag0, type PairRow } from '../helpers/replication.js';

const mib = 2 ** 20;

async function qemuWrite(array: RunningArray, volume: string, offset: number, length: number): Promise<void> {
  const result = await runAsync('qemu-io', ['-f', 'raw', array.uri(volume), '-c', `write -P 0x5a ${offset} ${length}`, '-c', 'flush']);
  assert.equal(result.code, 0, `qemu-io write: ${result.stderr}`);
}

async function table(array: RunningArray): Promise<string> {
  const result = await array.cliAsync(['pair', 'display', '--group', 'g1']);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout;
}

test('pair display: copy rate and ETA, paused restore, pending regions and recovery of PSUS', { timeout: 420_000 }, async (t) => {
  const site = await startSite(t, { volumes: 1, volumeSize: '64MiB', copyPace: '4MiB', waitForPair: false, envA: {}, envB: {} });

  // COPY: a rate once two displays are a moment apart, an ETA from the bytes left.
  let copying: PairRow | undefined;
  await waitFor('a COPY row on A with a copy rate and an ETA', async () => {
    const row = (await display(site.a))[0]!;
    if (row.status === 'PAIR') throw new Error('the copy ended before a rate was shown (raise the volume size or lower the pace)');
    if (row.copyRateBytesPerSecond !== null && row.copyRateBytesPerSecond > 0) copying = row;
    return copying !== undefined;
  }, 60_000, 500);
  assert.ok(copying!.copyRemainingBytes > 0, `bytes left to copy: ${JSON.stringify(copying)}`);
  assert.ok(copying!.copyRateBytesPerSecond! < 64 * mib, `a rate near the pace of 4 MiB/s, not a burst: ${copying!.copyRateBytesPerSecond}`);
  assert.ok(copying!.copyEtaSeconds !== null && copying!.copyEtaSeconds > 0, `an ETA: ${JSON.stringify(copying)}`);
  assert.match(await table(site.a), /COPY\s+\d+ \([\d.]+\w+\/s, ETA \d+[smh]\)/, 'the table shows rate and ETA');
  await waitForPairAndLag0(site);

  // A paused restore says so on the S-VOL array, and on the master once B's next pull has said it.
  await setRestorePaused(site.b, true);
  const paused = (await display(site.b))[0]!;
  assert.equal(paused.restorePaused, true);
  assert.equal(paused.statusReason, 'restore paused');
  assert.match(await table(site.b), /PAIR \(paused\)/);
  await waitFor('A to show the paused restore B reported', async () => (await display(site.a))[0]!.restorePaused, 30_000, 100);
  await setRestorePaused(site.b, false);
  assert.equal((await display(site.b))[0]!.restorePaused, false);
  await waitFor('A to show the restore running again', async () => !(await display(site.a))[0]!.restorePaused, 30_000, 100);

  // PSUS: writes go to the bitmap; the display shows them and the way back.
  const split = await site.a.api('POST', '/v1/pairs/split', { group: 'g1' });
  assert.equal(split.status, 200, JSON.stringify(split.json));
  await qemuWrite(site.a, 'pvol0', 8 * mib, mib);
  const suspended = (await display(site.a))[0]!;
  assert.equal(suspended.status, 'PSUS');
  assert.ok(suspended.pendingRegions >= 1 && suspended.pendingBytes >= mib, `1 MiB of writes pending in the bitmap: ${JSON.stringify(suspended)}`);
  assert.equal(suspended.recovery, 'resync: twinstore pair resync --group g1');
  await waitFor('B to name the same command once it has the split', async () => (await display(site.b))[0]!.recovery === 'resync: twinstore pair resync --group g1', 30_000, 200);
  const splitTable = await table(site.a);
  assert.match(splitTable, /\d+ regions \(\S+\)/, `the PENDING column: ${splitTable}`);
  assert.match(splitTable, /g1: resync: twinstore pair resync --group g1/);
  const resync = await site.a.api('POST', '/v1/pairs/resync', { group: 'g1' });
  assert.equal(resync.status, 200, JSON.stringify(resync.json));
  await waitForPairAndLag0(site);
  assert.equal((await display(site.a))[0]!.recovery, null, 'PAIR needs no recovery');
});

test('pair display after a takeover: both sites name B the primary; the fenced P-VOL lists as fenced', { timeout: 300_000 }, async (t) => {
  const site = await startSite(t, { volumes: 1, volumeSize: '16MiB', envA: {}, envB: {} });
  await waitFor('B PAIR (a takeover needs a consistent S-VOL)', async () => (await display(site.b))[0]!.status === 'PAIR', 60_000, 200);
  await site.a.kill9();
  const taken = await site.b.api('POST', '/v1/takeover', { group: 'g1', force: false });
  assert.equal(taken.status, 200, JSON.stringify(taken.json));
  assert.equal((await display(site.b))[0]!.status, 'SSWS');
  await startWithin(site.a, 'A');
  await waitFor('A FENCED after hearing B\'s newer epoch', async () => (await display(site.a))[0]!.status === 'FENCED', 60_000, 200);
  const [onA, onB] = [(await display(site.a))[0]!, (await display(site.b))[0]!];
  assert.equal(onA.direction, onB.direction, `both sites name the same direction: A ${onA.direction}, B ${onB.direction}`);
  assert.equal(onA.direction, 'site-b->site-a');
  assert.equal(onA.pvol, onB.pvol, 'and the same P-VOL');
  assert.match(onB.recovery ?? '', /^when site-a is back: twinstore pair resync --group g1 --swap/);
  assert.match(onA.recovery ?? '', /^on site-b \(the primary now\): twinstore pair resync --group g1 --swap/);

  const volumes = (await site.a.api('GET', '/v1/volumes')).json.volumes as Array<{ name: string; role: string; writesRefused: string | null }>;
  const fencedVolume = volumes.find((v) => v.name === 'pvol0')!;
  assert.match(fencedVolume.writesRefused ?? '', /FENCED/, `the fenced P-VOL says why it refuses writes: ${JSON.stringify(fencedVolume)}`);
  const listed = await site.a.cliAsync(['volume', 'list']);
  const line = listed.stdout.split('\n').find((l) => l.startsWith('pvol0 '));
  assert.match(line ?? '', /\bfenced\b/, `volume list shows pvol0 as fenced: ${listed.stdout}`);
  assert.doesNotMatch(line ?? '', /\brw\b/);
});
