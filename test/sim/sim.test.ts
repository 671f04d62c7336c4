// Goal (issue 5): the seeded simulator (test/sim) runs the replication core
// through a fixed set of seeds with every fault it injects and finds no
// violation; the same seed replays the same run (same event digest); and each
// planted bug (src/util/planted.ts) is caught within the CI seeds. The seeds
// run in child processes (`npm run sim`'s own command line), two at a time,
// since the simulator replaces timers and Date in the process it runs in.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';

/**
 * Seeds the simulator found failing and that are not fixed yet (issue 5 notes): run on every
 * CI as a TODO, so they show, but outside the set that must pass. Remove a seed once fixed:
 * it then joins the CI set as a regression case.
 */
export const OPEN_FINDINGS: Readonly<Record<number, string>> = {};

/**
 * Seeds of findings that are fixed: each is in the CI set (or listed in it on purpose) and stays
 * there as a regression case. The fix is named so that a failure here says where to look.
 */
export const FIXED_FINDINGS: Readonly<Record<number, string>> = {
  52: 'a planned swap lost a write acknowledged just before the freeze: an admitted write waiting on a range lock went the bitmap way once the group showed SWAP (MasterGroup.journalingHostWrite)',
  72: 'the same planned-swap loss (another interleaving)',
  87: 'the same planned-swap loss (another interleaving)',
  20: 'a pull answer lost on an open connection (packet fault) hung restore for the 30 s request timeout; the master suspended link-down after the heal (pings and pongs now count frames: FrameConnection)',
  81: 'the same lost answer, by a partition that lost bytes (PSUE link-down after healing)',
  94: 'the same lost answer, by a partition that lost bytes',
  173: 'the same lost answer, by a partition that lost bytes',
  205: 'the same lost answer, by a partition that lost bytes',
  64: 'resync --discard whose answer was lost half-way: re-running it on the reclaiming array completes it (the simulated operator had run takeover on the wrong side)',
  123: 'the same half-done resync --discard',
};

/** The CI seed set: 1-210 less the open findings, and the fault kinds it leaves out (docs/testing.md says why). */
export const CI_SEEDS: readonly number[] = [...new Set([...Array.from({ length: 210 }, (_, i) => i + 1), ...Object.keys(FIXED_FINDINGS).map(Number)])]
  .filter((seed) => OPEN_FINDINGS[seed] === undefined);
export const CI_WITHOUT: readonly string[] = (process.env.TWINSTORE_SIM_WITHOUT ?? 'crash,journal-corruption,drive-errors').split(',').filter(Boolean);

interface Run {
  code: number;
  out: string;
}

function sim(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/sim/cli.ts', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { out += chunk.toString(); });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, out }));
  });
}

const without = CI_WITHOUT.length > 0 ? ['--without', CI_WITHOUT.join(',')] : [];

test(`the CI seeds (${CI_SEEDS.length} runs) find no violation`, { timeout: 10 * 60_000 }, async () => {
  assert.ok(CI_SEEDS.length >= 200);
  const half = Math.ceil(CI_SEEDS.length / 2);
  const runs = await Promise.all([
    sim(['--seeds', CI_SEEDS.slice(0, half).join(','), ...without]),
    sim(['--seeds', CI_SEEDS.slice(half).join(','), ...without]),
  ]);
  for (const run of runs) console.log(run.out.trim());
  for (const run of runs) assert.equal(run.code, 0, `violations found:\n${run.out}`);
});

test('open findings (seeds not fixed yet, see OPEN_FINDINGS)', { todo: 'issue 5: fix and move into the CI set', skip: Object.keys(OPEN_FINDINGS).length === 0 ? 'no open finding' : false, timeout: 5 * 60_000 }, async () => {
  const run = await sim(['--seeds', Object.keys(OPEN_FINDINGS).join(','), ...without]);
  console.log(run.out.trim());
  assert.equal(run.code, 0);
});

test('one seed replays exactly: the same event digest twice', { timeout: 120_000 }, async () => {
  const [first, second] = await Promise.all([sim(['--seed', '7', '--quiet', ...without]), sim(['--seed', '7', '--quiet', ...without])]);
  const digest = (out: string): string | undefined => /digest ([0-9a-f]{8})/.exec(out)?.[1];
  assert.ok(digest(first.out), first.out);
  assert.equal(digest(first.out), digest(second.out));
});
