// Goal (issue 5): the seeded simulator (test/sim) runs the replication core
// through a fixed set of seeds with every fault it injects (crashes, drive
// errors and journal corruption included) and finds no violation; each seed
// of a fixed finding stays as a regression case, in the profile that found it;
// each planted bug (src/util/planted.ts) is caught within the CI seeds; and the
// same seed replays the same run (same event digest). The seeds run in child
// processes (`npm run sim`'s own command line), two at a time, since the
// simulator replaces timers and Date in the process it runs in.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { PLANTED_BUGS } from '../../src/util/planted.js';

/** The profile CI runs: every fault kind, unless TWINSTORE_SIM_WITHOUT names some to leave out. */
export const CI_WITHOUT: readonly string[] = (process.env.TWINSTORE_SIM_WITHOUT ?? '').split(',').filter(Boolean);
/** The profile the first findings came from (before crashes and journal damage passed): no crash, no drive or journal fault. */
const QUIET_DRIVES = ['crash', 'journal-corruption', 'drive-errors'];

/**
 * Seeds the simulator found failing and that are not fixed yet (issue 5 notes): run on every
 * CI as a TODO, so they show, but outside the set that must pass. A fixed one moves to FIXED_FINDINGS.
 */
export const OPEN_FINDINGS: Readonly<Record<number, string>> = {};

interface Finding {
  seed: number;
  /** Fault kinds left out in the run that found it. */
  without: readonly string[];
  what: string;
}

/**
 * Findings that are fixed, each kept as a regression case in the profile that found it (the ones
 * in 1-200 of the full profile run with the CI seeds anyway). The fix is named, so that a failure
 * here says where to look.
 */
export const FIXED_FINDINGS: readonly Finding[] = [
  { seed: 52, without: QUIET_DRIVES, what: 'a planned swap lost a write acknowledged just before the freeze: an admitted write waiting on a range lock went the bitmap way once the group showed SWAP (MasterGroup.journalingHostWrite)' },
  { seed: 72, without: QUIET_DRIVES, what: 'the same planned-swap loss (another interleaving)' },
  { seed: 87, without: QUIET_DRIVES, what: 'the same planned-swap loss (another interleaving)' },
  { seed: 20, without: QUIET_DRIVES, what: 'a pull answer lost on an open connection hung restore for the 30 s request timeout; the master suspended link-down after the heal (pings and pongs count frames: FrameConnection)' },
  { seed: 81, without: QUIET_DRIVES, what: 'the same lost answer, by a partition that lost bytes' },
  { seed: 94, without: QUIET_DRIVES, what: 'the same lost answer, by a partition that lost bytes' },
  { seed: 173, without: QUIET_DRIVES, what: 'the same lost answer, by a partition that lost bytes' },
  { seed: 205, without: QUIET_DRIVES, what: 'the same lost answer, by a partition that lost bytes' },
  { seed: 64, without: QUIET_DRIVES, what: 'resync --discard whose answer was lost half-way: running it again on the reclaiming array completes it' },
  { seed: 123, without: QUIET_DRIVES, what: 'the same half-done resync --discard' },
  { seed: 11, without: [], what: 'an array refused to restart after a power cut tore a journal record past the last sync (recovery: torn_unsynced, unsyncedBefore)' },
  { seed: 14, without: [], what: 'the same torn record, met by the redo after a restart' },
  { seed: 15, without: [], what: 'a misdirected journal write taken for the end of the journal: the redo of the part before rolled back a flushed write (recovery: lostFrom; MasterGroup.journalLost)' },
  { seed: 13, without: [], what: 'resync, then PSUE bad-record again, forever: the receiver pulled the damaged record the resync re-copies (journal.read skipTo)' },
  { seed: 29, without: [], what: 'after a journal lost records, a resync gave their seqs to other writes (journalLost goes on past them)' },
  { seed: 16, without: [], what: 'a demotion failing on a drive error left the group open nowhere until a restart (ReplicationManager.reopenGroup)' },
  { seed: 113, without: [], what: 'the receiver told the master an applied cursor it had not persisted; after its crash the master showed less lag than there was (Applier.persistApplied, restore/applier.ts)' },
  { seed: 196, without: [], what: 'the simulator ran the arrays\' reconnect code in its own event at a reset, so a crash of the peer dropped a reconnect timer (SimNetwork.reset)' },
  { seed: 210, without: [], what: 'the simulated operator checked flushed writes on a side a resync --discard was discarding' },
  { seed: 254, without: [], what: 'a journal record damaged before the heal suspended the group after it: the operator resyncs again' },
  { seed: 315, without: [], what: 'a peer\'s hello during start opened a second RestoreGroup on the same journal (reopenGroup waits for start)' },
  { seed: 325, without: [], what: 'a split group whose journal lost records: the receiver asked below the tail forever (journalLost sets skipTo)' },
  { seed: 163, without: [], what: 'a reclaim overtaken by a newer epoch kept its flag: resync --discard was refused forever (MasterGroup.fence clears it)' },
  { seed: 400, without: [], what: 'takeover promoted S-VOLs suspended in the middle of a resync: not a state the hosts saw (svolInconsistent)' },
  { seed: 62, without: [], what: 'a resync right after the link came back suspended link-down at the next watch tick: the silence before the resync counted (MasterGroup.resync resets lastHeardMs; CI: fence.test.ts)' },
  { seed: 478, without: [], what: 'a master journal header lost to a bit flip (the journal starts again past every seq on its ring, every region marked, resync copies all): the seed that reaches it since 399 no longer does' },
  { seed: 399, without: [], what: 'a journal header slot damaged after a role change: the older slot was behind the ring, JOURNAL_CORRUPT at start and no way back (Journal.open: a lost header starts the journal again past every seq on its ring; MasterGroup/RestoreGroup.journalStartedAgain)' },
  { seed: 226, without: [], what: 'a write whose master record header a bit flip hit was never re-sent: the fold at the suspension skipped a record that names no region (foldFromJournal takes it from the unapplied queue)' },
  { seed: 246, without: [], what: 'a fence failed on a journal a drive error had stopped, so the old primary never fenced and resync --swap failed forever (MasterGroup.fence reopens the journal, counts from memory)' },
  { seed: 979, without: [], what: 'the same fence on a stopped journal' },
  { seed: 471, without: [], what: 'a pause right after a batch failed part-way left the S-VOLs between states (the retry writes older records over newer ones): the pause holds only once a batch committed past it (Applier.betweenStates, restore/applier.ts)' },
  { seed: 262, without: [], what: 'a link attempt under way when the peer reached us failed, and its back-off outlasted suspendAfterMs after the resync (PeerLink.retryNow sets retrySoon)' },
  { seed: 671, without: [], what: 'the simulator took a receiver cursor that a damaged header slot took back at a restart for the master freeing too early (the check keeps the highest cursor for such a receiver)' },
  { seed: 817, without: [], what: 'the same cursor check, after a misdirected header write' },
  { seed: 51, without: [], what: 'a suspension whose fold raced the receiver freeing the journal failed, and every later resync failed on that stale rejection (foldFromJournal goes on from the tail; resync folds again)' },
  { seed: 31, without: [], what: 'after a heal the receiver\'s own connection waited out a 5 s back-off while the other direction was up: silent past suspendAfterMs after the resync (PeerLink.retryNow on an inbound hello)' },
];

/** The CI seed set: 1-200 of the full profile, less the open findings. */
export const CI_SEEDS: readonly number[] = Array.from({ length: 200 }, (_, i) => i + 1).filter((seed) => OPEN_FINDINGS[seed] === undefined);

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

function withoutArgs(kinds: readonly string[]): string[] {
  return kinds.length > 0 ? ['--without', kinds.join(',')] : [];
}

/** Runs the jobs two at a time. */
async function twoAtATime<T>(jobs: Array<() => Promise<T>>): Promise<T[]> {
  const results: T[] = new Array(jobs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const i = next++;
      results[i] = await jobs[i]!();
    }
  };
  await Promise.all([worker(), worker()]);
  return results;
}

test(`the CI seeds (${CI_SEEDS.length} runs, every fault kind) find no violation`, { timeout: 15 * 60_000 }, async () => {
  assert.ok(CI_SEEDS.length >= 199);
  const half = Math.ceil(CI_SEEDS.length / 2);
  const runs = await Promise.all([
    sim(['--seeds', CI_SEEDS.slice(0, half).join(','), ...withoutArgs(CI_WITHOUT)]),
    sim(['--seeds', CI_SEEDS.slice(half).join(','), ...withoutArgs(CI_WITHOUT)]),
  ]);
  for (const run of runs) console.log(run.out.trim());
  for (const run of runs) assert.equal(run.code, 0, `violations found:\n${run.out}`);
});

test(`the seeds of fixed findings (${FIXED_FINDINGS.length}) stay fixed, each in the profile that found it`, { timeout: 10 * 60_000 }, async () => {
  const profiles = new Map<string, number[]>();
  for (const finding of FIXED_FINDINGS) {
    const key = finding.without.join(',');
    profiles.set(key, [...(profiles.get(key) ?? []), finding.seed]);
  }
  const runs = await twoAtATime([...profiles].map(([key, seeds]) => () => sim(['--seeds', seeds.join(','), ...withoutArgs(key.split(',').filter(Boolean))])));
  for (const run of runs) console.log(run.out.trim());
  for (const run of runs) {
    const failed = [...run.out.matchAll(/seed (\d+) FAILED/g)].map((m) => Number(m[1]));
    const what = failed.map((seed) => `${seed}: ${FIXED_FINDINGS.find((f) => f.seed === seed)?.what ?? '?'}`).join('\n');
    assert.equal(run.code, 0, `a fixed finding is back:\n${what}\n${run.out}`);
  }
});

/**
 * The CI seed that last caught each planted bug first: its hunt starts there, so it usually
 * ends after one run instead of after every seed before it (the hunts took 400 s of a CI
 * run). Only the order changes: the hunt still runs over every CI seed, and a bug this seed
 * no longer catches is hunted through the rest. Update a number when the log shows another.
 */
const PLANTED_CAUGHT_BY: Readonly<Record<(typeof PLANTED_BUGS)[number], number>> = {
  'pvol-before-journal': 29, 'free-at-stored': 1, 'restore-out-of-order': 14, 'epoch-after-promote': 1, 'flush-before-durable': 37,
};

test('every planted bug is caught within the CI seeds (each hunt stops at its first failing seed)', { timeout: 15 * 60_000 }, async () => {
  const huntOrder = (bug: (typeof PLANTED_BUGS)[number]): number[] => {
    const first = PLANTED_CAUGHT_BY[bug];
    assert.ok(CI_SEEDS.includes(first), `the seed that caught ${bug} is a CI seed`);
    return [first, ...CI_SEEDS.filter((seed) => seed !== first)];
  };
  const hunts = await twoAtATime(PLANTED_BUGS.map((bug) => () => sim(['--plant', bug, '--seeds', huntOrder(bug).join(','), '--first-failure', '--quiet', ...withoutArgs(CI_WITHOUT)])));
  hunts.forEach((run, i) => {
    const caught = /seed (\d+) FAILED: (.*)/.exec(run.out);
    console.log(`${PLANTED_BUGS[i]}: ${caught ? `caught by seed ${caught[1]}: ${caught[2]!.slice(0, 200)}` : 'not caught'}`);
    assert.equal(run.code, 1, `planted bug ${PLANTED_BUGS[i]} was not caught by any CI seed:\n${run.out}`);
    assert.ok(caught, run.out);
  });
});

test('open findings (seeds not fixed yet, see OPEN_FINDINGS)', { todo: 'issue 5: fix and move to FIXED_FINDINGS', skip: Object.keys(OPEN_FINDINGS).length === 0 ? 'no open finding' : false, timeout: 5 * 60_000 }, async () => {
  const run = await sim(['--seeds', Object.keys(OPEN_FINDINGS).join(','), ...withoutArgs(CI_WITHOUT)]);
  console.log(run.out.trim());
  assert.equal(run.code, 0);
});

test('one seed replays exactly: the same event digest twice', { timeout: 120_000 }, async () => {
  const [first, second] = await Promise.all([sim(['--seed', '16', '--quiet', ...withoutArgs(CI_WITHOUT)]), sim(['--seed', '16', '--quiet', ...withoutArgs(CI_WITHOUT)])]);
  const digest = (out: string): string | undefined => /digest ([0-9a-f]{8})/.exec(out)?.[1];
  assert.ok(digest(first.out), first.out);
  assert.equal(digest(first.out), digest(second.out));
});
