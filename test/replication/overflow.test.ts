// Goal: a full master journal follows the group's overflow policy, and host
// writes never stop. Method: two real arrays; restore paused on B so nothing is
// applied and A may free nothing; fio then writes more than the journal holds.
// Under `suspend` the pair goes PSUE with reason journal-full at once and
// fio's writes all succeed; under `throttle` host writes wait for space (the
// write latency shows it) and the pair suspends once throttleMsMax is spent.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createVolume, runOk, startPairOfArrays, type RunningArray } from '../helpers/array.js';

interface Row {
  status: string;
  statusReason: string | null;
  journalUsedPercent: number;
}

function display(array: RunningArray): Row {
  const out = array.cli(['pair', 'display', '--json']);
  assert.equal(out.code, 0, out.stderr);
  return (JSON.parse(out.stdout) as { pairs: Row[] }).pairs[0]!;
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function pairWithSmallJournals(t: Parameters<typeof startPairOfArrays>[0], overflow: string, extraConfig = ''): Promise<{ a: RunningArray; b: RunningArray; pvol: string }> {
  const { a, b } = await startPairOfArrays(t, extraConfig ? { extraConfig } : {});
  const pvol = createVolume(a, 'pvol', '320MiB');
  createVolume(b, 'svol', '320MiB');
  for (const site of [a, b]) assert.equal(site.cli(['journal', 'create', 'jnl', '--size', '132MiB']).code, 0);
  const created = a.cli(['pair', 'create', '--group', 'g', '--pvol', 'pvol', '--svol', 'site-b:svol', '--journal', 'jnl', '--remote-journal', 'site-b:jnl', '--overflow', overflow]);
  assert.equal(created.code, 0, created.stderr);
  await waitFor('PAIR', () => display(a).status === 'PAIR');
  assert.equal(b.cli(['pair', 'restore', '--group', 'g', '--pause']).code, 0);
  return { a, b, pvol };
}

test('suspend: a full journal suspends the group (PSUE journal-full) and host writes go on; resync recovers', async (t) => {
  const { a, b, pvol } = await pairWithSmallJournals(t, 'suspend');
  runOk('fio', ['--name=fill', '--ioengine=nbd', `--uri=${pvol}`, '--rw=write', '--bs=1M', '--iodepth=8', '--size=300M', '--output=/dev/null'], { timeoutMs: 120_000 });
  const row = display(a);
  assert.equal(row.status, 'PSUE');
  assert.equal(row.statusReason, 'journal-full');
  runOk('qemu-io', ['-f', 'raw', pvol, '-c', 'write -P 0x5c 0 1M', '-c', 'read -P 0x5c 0 1M']);
  // B applies what it holds, then resync copies what the journal could not carry.
  assert.equal(b.cli(['pair', 'restore', '--group', 'g', '--resume']).code, 0);
  const resync = a.cli(['pair', 'resync', '--group', 'g', '--json']);
  assert.equal(resync.code, 0, resync.stderr);
  t.diagnostic(`resync after journal-full: ${resync.stdout.trim()}`);
  await waitFor('PAIR after the resync', () => display(a).status === 'PAIR', 120_000);
  runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', pvol, b.uri('svol')]);
});

test('throttle: host writes wait for journal space, then the group suspends after throttleMsMax', async (t) => {
  const { a, pvol } = await pairWithSmallJournals(t, 'throttle', 'groups:\n  defaults:\n    throttleMsMax: 1500');
  const started = Date.now();
  runOk('fio', ['--name=fill', '--ioengine=nbd', `--uri=${pvol}`, '--rw=write', '--bs=1M', '--iodepth=4', '--size=300M', '--output=/dev/null'], { timeoutMs: 120_000 });
  const elapsedMs = Date.now() - started;
  const row = display(a);
  assert.equal(row.status, 'PSUE');
  assert.equal(row.statusReason, 'journal-full');
  assert.ok(elapsedMs >= 1500, `writes waited for space before the suspension (${elapsedMs} ms)`);
});
