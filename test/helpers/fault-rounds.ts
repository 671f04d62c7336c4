// Randomized fault rounds for a journal group (docs/architecture.md §10), shared by
// test/faults/write-order-rounds.test.ts (20 rounds in `npm test`),
// scripts/faults.ts (`npm run faults`, a campaign with a summary table) and
// scripts/soak.mjs (as many rounds as asked). Everything random (the schedule,
// durations, proxy settings, the hosts, the arrays' volatile caches) comes
// from one seed, so a campaign replays with the same seed.
//
// Setup: arrays A and B (volatile-cache mode), two P-VOLs on A paired with two
// S-VOLs on B in one journal group, with small journals (132 MiB by default,
// so the hosts fill one in seconds); B pulls through a LinkProxy. Once the
// pairs reach PAIR, the libnbd hosts write both P-VOLs (QD 16, two connections
// per volume, overlapping rewrites, some FLUSHes) for the whole run.
//
// Each round lets the hosts write for a random while, then injects one fault
// (or two at once): kill -9 of A or of B and a restart; a link fault through
// the proxy (delay, bandwidth cap, split writes, drop = blackhole, reset,
// stall); restore paused on B; or a journal fill: restore paused, the link
// stalled, blackholed or capped to a trickle while the hosts keep writing,
// until A's master journal overflows. A kill of A also kills the hosts'
// connections: once all are down and A is back, both P-VOLs are read (the
// state the hosts find after the crash, a Recovery for the checker; every
// flushed write must be in it), then the hosts reconnect.
//
// An overflow is counted when A shows it (pair display: PSUE, reason
// journal-full; its log says `suspending journal group` with that reason),
// whether a fill round caused it or another fault ran long. Recovery follows
// docs/replication.md: the link passes, restore runs, B applies every record
// A's journal kept (the S-VOLs are then checked at that point: the group's
// consistency point at the suspension), `pair resync`, and PAIR again.
//
// After each round the S-VOLs are read with restore paused and the checker
// must find one instant the hosts could have read them at. A check waits
// until B has applied what a restart re-applies (B's redo up to what it had
// stored; A's re-sent active regions after an unclean stop): an S-VOL is at a
// consistency point only between applied batches, not in the middle of a
// redo, and not in the middle of the re-send
// (test/replication/resend-window.test.ts shows that window).
// At the end of a stretch of rounds (the whole run in CI; every `roundsPerLog`
// rounds in a long campaign, so the log and the checks stay small): hosts
// stopped, lag 0 on A, qemu-img compare of every pair, and the final S-VOLs and
// P-VOLs checked once more; then fresh hosts start with the volumes as they
// are now as the initial content.

import fs from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { Prng } from '../../src/util/prng.js';
import { Hosts, nowUs } from './hosts.js';
import type { ProxyModeOptions, ProxyStats } from './link-proxy.js';
import {
  appliedSeq, compareAll, display, displayCli, group, journalShow, linkUp, readSvols, readVolume, setRestorePaused, sleep, stableNextSeq, startSite, waitForProgress,
  startWithin, volatileEnv, waitFor, type Site,
} from './replication.js';
import { checkFlushed, checkWriteOrder, type Recovery } from './write-order.js';

/** The link faults, by the names of the summary table (the proxy's modes of the same names; `reset` is also `cut`). */
export type LinkFault = 'delay' | 'bandwidth' | 'split' | 'drop' | 'reset' | 'stall';
export const LINK_FAULTS: readonly LinkFault[] = ['delay', 'bandwidth', 'split', 'drop', 'reset', 'stall'];

export type FaultKind = 'kill-a' | 'kill-b' | LinkFault | 'pause' | 'fill'
  | 'reset+kill-b' | 'drop+kill-b' | 'pause+kill-a' | 'stall+kill-a' | 'fill+kill-a' | 'kill-a+fill';
/**
 * The kinds a campaign draws from by default: every kind but the known-bug ones. `kill-a+fill`
 * (A killed during a fill, so the overflow cuts short its re-send unit) found one: B never applied
 * past the unit's begin marker and the group never reached PAIR after `pair resync`. Fixed: a
 * resync after a suspension makes the receiver pass over what it stored below the resync point.
 */
export const FAULT_KINDS: readonly FaultKind[] = [
  'kill-a', 'kill-b', 'delay', 'bandwidth', 'split', 'drop', 'reset', 'stall', 'pause', 'fill',
  'reset+kill-b', 'drop+kill-b', 'pause+kill-a', 'stall+kill-a', 'fill+kill-a', 'kill-a+fill',
];
/** Kinds that find a known product bug, run only when asked for (`--faults`): none today. */
export const KNOWN_BUG_KINDS: readonly FaultKind[] = [];
export const ALL_FAULT_KINDS: readonly FaultKind[] = [...FAULT_KINDS, ...KNOWN_BUG_KINDS];

/** How a fill round keeps A from freeing its journal while the hosts write. */
type FillMeans = 'pause' | 'stall' | 'drop' | 'bandwidth';
const FILL_MEANS: readonly FillMeans[] = ['pause', 'stall', 'drop', 'bandwidth'];

export interface FaultRoundsOptions {
  seed: number;
  rounds: number;
  print: (line: string) => void;
  /** Extra environment for A and B (planted bugs). */
  envA?: Record<string, string>;
  envB?: Record<string, string>;
  /** Stop at the first violation (default true). */
  stopOnViolation?: boolean;
  faults?: readonly FaultKind[];
  writesPerSecondPerConnection?: number;
  /** Hot area per volume, in 4 KiB blocks (default: the whole 16 MiB volume). */
  hotBlocks?: number;
  /** On a violation, keep the hosts' log, the crash times and the recovered P-VOL images here. */
  keepDir?: string;
  /** Converge, compare and start a fresh hosts' log every this many rounds (default 25). */
  roundsPerLog?: number;
  /** The journals of both arrays (default 132MiB, just above the 128 MiB minimum: the hosts fill it in about 6 s). */
  journalSize?: string;
}

export interface FaultRoundsCounts {
  killA: number;
  killB: number;
  /** Times the proxy was put in each fault mode (alone, in a combined round, or to fill a journal). */
  link: Record<LinkFault, number>;
  /** Restore paused on B (alone, combined, or to fill a journal). */
  pause: number;
  /** Journal fills injected. */
  fills: number;
  /** Journal overflows seen on A: its pair display went PSUE with reason journal-full. */
  overflows: number;
  /** `suspending journal group` with reason journal-full in A's log, over all its lifetimes. */
  overflowsLogged: number;
  /** Write-order checks of the S-VOLs (after each round, at each suspension point, at each convergence). */
  checks: number;
}

export interface FaultRoundsReport {
  seed: number;
  rounds: number;
  counts: FaultRoundsCounts;
  writes: number;
  acknowledged: number;
  flushedChecked: number;
  violations: string[];
  seconds: number;
  /** What the proxy did (connections reset, bytes dropped, writes split, …). */
  proxy?: ProxyStats;
}

interface Run {
  site: Site;
  hosts: Hosts;
  /** The current hosts' writes are in the report (counted at a convergence). */
  hostsCounted: boolean;
  prng: Prng;
  /** The volumes when the current hosts started (undefined: zeros). */
  initial: Buffer[] | undefined;
  recoveries: Recovery[];
  crashes: Array<{ array: 'A' | 'B'; atUs: number; nextSeq?: number }>;
  /** The arrays' logs of earlier lifetimes (RunningArray keeps only the current one). */
  logs: { a: string; b: string };
  /** The S-VOL images of the first check that failed. */
  failedImages?: Buffer[];
  /** A check waits until B has applied below this seq (redo and re-sent regions done). */
  needApplied: number;
  /** What the current round chose and saw (settings, when a kill landed, when the overflow came). */
  detail: string[];
  report: FaultRoundsReport;
  print: (line: string) => void;
}

export async function runFaultRounds(t: TestContext, options: FaultRoundsOptions): Promise<FaultRoundsReport> {
  const started = Date.now();
  const prng = new Prng(options.seed);
  const site = await startSite(t, {
    seed: options.seed,
    journalSize: options.journalSize ?? '132MiB',
    envA: { ...volatileEnv, TWINSTORE_TEST_SEED: String(options.seed), ...options.envA },
    envB: { ...volatileEnv, TWINSTORE_TEST_SEED: String(options.seed + 1), ...options.envB },
  });
  const startHosts = (firstId: number): Promise<Hosts> => Hosts.start(t, {
    volumes: site.pvols.map((name) => site.a.uri(name)),
    hotBlocks: options.hotBlocks ?? site.volumeBytes / 4096,
    dir: site.dir,
    seed: options.seed + firstId,
    firstId,
    writesPerSecondPerConnection: options.writesPerSecondPerConnection ?? 150,
  });
  const report: FaultRoundsReport = {
    seed: options.seed,
    rounds: 0,
    counts: {
      killA: 0, killB: 0, link: { delay: 0, bandwidth: 0, split: 0, drop: 0, reset: 0, stall: 0 }, pause: 0, fills: 0, overflows: 0, overflowsLogged: 0, checks: 0,
    },
    writes: 0, acknowledged: 0, flushedChecked: 0, violations: [], seconds: 0,
  };
  const run: Run = {
    site, hosts: await startHosts(1), hostsCounted: false, prng, initial: undefined, recoveries: [], crashes: [], logs: { a: '', b: '' }, needApplied: 0, detail: [], report, print: options.print,
  };
  const kinds = options.faults ?? FAULT_KINDS;
  // Every kind once (in a seeded order) before any repeats.
  const schedule = shuffle(prng, [...kinds]);
  const stopOnViolation = options.stopOnViolation ?? true;
  const roundsPerLog = options.roundsPerLog ?? 25;
  try {
    for (let round = 1; round <= options.rounds; round++) {
      const fault = round <= schedule.length ? schedule[round - 1]! : kinds[prng.below(kinds.length)]!;
      await sleep(300 + prng.below(1200));
      const faultStarted = Date.now();
      const label = `round ${round}/${options.rounds} ${fault}`;
      run.detail = [];
      try {
        await inject(run, fault, label);
      } catch (error) {
        throw new Error(`${label}${run.detail.length === 0 ? '' : ` (${run.detail.join('; ')})`}: ${(error as Error).message}`);
      }
      const found = await checkRound(run, `${label}${run.detail.length === 0 ? '' : ` (${run.detail.join('; ')})`} (${Date.now() - faultStarted} ms)`);
      report.rounds = round;
      if (found.length > 0 && stopOnViolation) break;
      if (round % roundsPerLog === 0 && round < options.rounds) {
        const nextId = await converge(run);
        if (report.violations.length > 0 && stopOnViolation) break;
        run.initial = site.pvols.map((name) => readVolume(site.a, name, site.dir));
        run.recoveries = [];
        run.hosts = await startHosts(nextId);
        run.hostsCounted = false;
      }
    }
    if (run.hosts.running) await converge(run);
  } catch (error) {
    const message = (error as Error).message;
    if (!report.violations.some((v) => message.includes(v))) report.violations.push(message);
    options.print(`stopped: ${message.slice(0, 2000)}`);
  }
  if (!run.hostsCounted) countWrites(run);
  report.counts.overflowsLogged = overflowsInLog(run.logs.a + site.a.stderr);
  report.proxy = { ...site.proxy.stats };
  if (report.violations.length > 0 && options.keepDir !== undefined) keep(run, options.keepDir);
  report.seconds = Math.round((Date.now() - started) / 100) / 10;
  return report;
}

function shuffle<T>(prng: Prng, items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = prng.below(i + 1);
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

/** Injects one fault and ends it; notes what was chosen in run.detail (for the round's line). */
async function inject(run: Run, fault: FaultKind, label: string): Promise<void> {
  const { site, prng } = run;
  switch (fault) {
    case 'kill-a':
      return crashA(run);
    case 'kill-b':
      return crashB(run);
    case 'delay':
    case 'bandwidth':
    case 'split':
    case 'drop':
    case 'reset':
    case 'stall': {
      linkFault(run, fault);
      const ms = 200 + prng.below(fault === 'drop' ? 2300 : 1800);
      run.detail.push(`${ms} ms`);
      await sleep(ms);
      site.proxy.setMode('pass');
      return;
    }
    case 'pause': {
      run.report.counts.pause += 1;
      const ms = 200 + prng.below(1800);
      run.detail.push(`${ms} ms`);
      await setRestorePaused(site.b, true);
      await sleep(ms);
      await setRestorePaused(site.b, false);
      return;
    }
    case 'fill':
      return fillJournal(run, 'no', label);
    case 'fill+kill-a':
      return fillJournal(run, 'after', label);
    case 'kill-a+fill':
      return fillJournal(run, 'before', label);
    case 'reset+kill-b':
      linkFault(run, 'reset');
      await sleep(prng.below(500));
      await crashB(run);
      await sleep(prng.below(500));
      site.proxy.setMode('pass');
      return;
    case 'drop+kill-b':
      linkFault(run, 'drop');
      await sleep(prng.below(800));
      await crashB(run);
      await sleep(prng.below(800));
      site.proxy.setMode('pass');
      return;
    case 'pause+kill-a':
      run.report.counts.pause += 1;
      await setRestorePaused(site.b, true);
      await sleep(prng.below(800));
      await crashA(run);
      await setRestorePaused(site.b, false);
      return;
    case 'stall+kill-a':
      linkFault(run, 'stall');
      await sleep(prng.below(800));
      await crashA(run);
      site.proxy.setMode('pass');
      return;
  }
}

/** Puts the proxy in a fault mode with seeded settings (`settings` overrides them), noted in run.detail. */
function linkFault(run: Run, kind: LinkFault, settings: ProxyModeOptions = {}): void {
  const { prng } = run;
  run.report.counts.link[kind] += 1;
  if (kind === 'delay') {
    const delayMs = settings.delayMs ?? 5 + prng.below(120);
    const jitterMs = settings.jitterMs ?? prng.below(40);
    run.site.proxy.setMode('delay', { delayMs, jitterMs });
    run.detail.push(`${kind} ${delayMs} ms + 0-${jitterMs} ms per chunk`);
    return;
  }
  if (kind === 'bandwidth') {
    const bytesPerSecond = settings.bytesPerSecond ?? 128 * 1024 * (1 + prng.below(32));
    run.site.proxy.setMode('bandwidth', { bytesPerSecond });
    run.detail.push(`${kind} ${Math.round(bytesPerSecond / 1024)} KiB/s each way`);
    return;
  }
  run.site.proxy.setMode(kind);
  run.detail.push(kind);
}

/**
 * Fills A's master journal: restore paused on B, or the link stalled, blackholed or capped to a
 * trickle, while the hosts keep writing, until A shows the overflow (PSUE journal-full). `killA`:
 * A is also killed -9 at a random moment after the overflow (the group suspended, the hosts
 * writing through the bitmaps), or before it (1-5 s into the fill, so the overflow may come
 * during A's re-send after the restart). Then the cause is lifted and the group recovered
 * (recoverOverflow).
 */
async function fillJournal(run: Run, killA: 'no' | 'before' | 'after', label: string): Promise<void> {
  const { site, prng, report } = run;
  report.counts.fills += 1;
  const means = FILL_MEANS[prng.below(FILL_MEANS.length)]!;
  run.detail.push(`filled by ${means}`);
  if (means === 'pause') {
    report.counts.pause += 1;
    await setRestorePaused(site.b, true);
  } else {
    linkFault(run, means, means === 'bandwidth' ? { bytesPerSecond: 64 * 1024 * (1 + prng.below(4)) } : {});
  }
  const started = Date.now();
  const killAtMs = killA === 'before' ? 1000 + prng.below(4000) : undefined;
  let killed = false;
  let overflowed = false;
  const deadline = started + 120_000;
  while (!overflowed) {
    if (Date.now() > deadline) throw new Error(`A's journal did not overflow within 120 s of the fill`);
    if (killAtMs !== undefined && !killed && Date.now() - started >= killAtMs) {
      run.detail.push(`A killed ${killAtMs} ms in, before the overflow`);
      await crashA(run);
      killed = true;
      continue;
    }
    if (!overflowed && (await display(site.a)).some(isOverflow)) {
      overflowed = true;
      report.counts.overflows += 1;
      run.detail.push(`overflow seen after ${Date.now() - started} ms`);
    }
    await sleep(100);
  }
  if (killA === 'after') {
    const ms = prng.below(1500);
    await sleep(ms);
    run.detail.push(`A killed ${ms} ms after`);
    await crashA(run);
  }
  // The hosts go on writing a while: the suspended group tracks them in the bitmaps.
  await sleep(prng.below(1000));
  if (means === 'pause') await setRestorePaused(site.b, false);
  else site.proxy.setMode('pass');
  await recoverOverflow(run, label);
}

function isOverflow(row: { status: string; statusReason: string | null }): boolean {
  return row.status === 'PSUE' && (row.statusReason ?? '').startsWith('journal-full');
}

/** Lines of a `twinstore serve` log saying the group suspended because the journal was full. */
export function overflowsInLog(log: string): number {
  let count = 0;
  for (const line of log.split('\n')) {
    if (line.includes('"msg":"suspending journal group"') && line.includes('"reason":"journal-full"')) count += 1;
  }
  return count;
}

/**
 * After an overflow (docs/replication.md, Journal full): with the link and restore running again,
 * B applies every record A's journal kept (the S-VOLs then hold the consistency point at the
 * suspension, and are checked there), then `pair resync` copies the tracked regions and the
 * group returns to PAIR.
 */
async function recoverOverflow(run: Run, label: string): Promise<void> {
  const { site } = run;
  await setRestorePaused(site.b, false);
  await waitFor('the link both ways after the overflow', () => linkUp(site), 60_000, 100);
  // B applies what A's journal holds: up to A's nextSeq, or (an unfinished re-send unit left by a
  // kill of A, which the suspension cut short) up to where the applied cursor stops.
  let last = -1;
  let stableSince = Date.now();
  const deadline = Date.now() + 60_000;
  for (;;) {
    const [applied, next] = [await appliedSeq(site.b), (await journalShow(site.a)).cursors.nextSeq];
    if (applied >= next) break;
    if (applied !== last) {
      last = applied;
      stableSince = Date.now();
    } else if (Date.now() - stableSince >= 2000) {
      run.print(`  ${label}: B's applied cursor stays at seq ${applied}, below A's next seq ${next}`);
      break;
    }
    if (Date.now() > deadline) throw new Error(`B kept applying for 60 s after the overflow (at seq ${applied}, A's next ${next})`);
    await sleep(100);
  }
  const rows = await display(site.a);
  if (!rows.every((r) => r.status === 'PSUE')) throw new Error(`after the overflow the group is not suspended on A: ${rows.map((r) => `${r.pvol} ${r.status} (${r.statusReason ?? ''})`).join(', ')}`);
  await checkSvols(run, `${label}: at the suspension point`);
  let resynced = false;
  for (let attempt = 0; attempt < 50 && !resynced; attempt++) {
    const { status, json } = await site.a.api('POST', '/v1/pairs/resync', { group });
    resynced = status === 200;
    if (!resynced) {
      if (attempt === 49) throw new Error(`pair resync after the overflow failed: ${status} ${JSON.stringify(json)}`);
      await sleep(200);
    }
  }
  try {
    await waitFor('PAIR on A after the resync', async () => (await display(site.a)).every((p) => p.status === 'PAIR'), 60_000, 100);
  } catch (error) {
    const [rows, applied, journal] = [await display(site.a), await appliedSeq(site.b), await journalShow(site.a)];
    throw new Error(`${(error as Error).message}: A shows ${rows.map((r) => `${r.pvol} ${r.status} (${r.statusReason ?? ''})`).join(', ')}; ` +
      `B applied below seq ${applied}; A's journal seqs ${journal.cursors.tailSeq}-${journal.cursors.nextSeq}, ${journal.usedBytes} bytes used`);
  }
}

/** kill -9 A at a random moment, restart it, record what the hosts find, let them reconnect. */
async function crashA(run: Run): Promise<void> {
  const { site, hosts, prng } = run;
  run.report.counts.killA += 1;
  const crashUs = nowUs();
  run.crashes.push({ array: 'A', atUs: crashUs });
  await site.a.kill9();
  run.logs.a += `${site.a.stderr}\n---- kill -9 ----\n`;
  await hosts.allDown();
  await sleep(prng.below(400));
  await startWithin(site.a, 'A');
  const images = site.pvols.map((name) => readVolume(site.a, name, site.dir));
  run.recoveries.push({ atUs: nowUs(), images });
  // A re-sends its active regions as base records after an unclean stop, in the background. Until B has
  // applied the last one, the S-VOLs mix old and re-sent regions (see resend-window.test.ts), so the hosts
  // wait until A's journal stops growing, and a check waits until B has applied that far.
  const resendEnd = await stableNextSeq(site);
  run.crashes.at(-1)!.nextSeq = resendEnd;
  run.needApplied = Math.max(run.needApplied, resendEnd);
  const sinceUs = run.recoveries.at(-2)?.atUs ?? 0;
  const flushed = checkFlushed(hosts.readLog(), images, { crashUs, sinceUs, ...(run.initial === undefined ? {} : { initial: run.initial }) });
  run.report.flushedChecked += flushed.flushedWrites;
  for (const v of flushed.violations.slice(0, 5)) run.report.violations.push(`after kill -9 of A (crash ${run.recoveries.length}), a flushed write was lost on the P-VOL: ${v}`);
  run.print(`  kill -9 of A (crash ${run.recoveries.length}): ${flushed.flushedWrites} flushed writes checked, ${flushed.violations.length} blocks lost`);
  hosts.go();
  await hosts.allUp();
}

/** kill -9 B at a random moment and restart it after a while. */
async function crashB(run: Run): Promise<void> {
  const { site, prng } = run;
  run.report.counts.killB += 1;
  run.crashes.push({ array: 'B', atUs: nowUs() });
  await site.b.kill9();
  run.logs.b += `${site.b.stderr}\n---- kill -9 ----\n`;
  await sleep(prng.below(1000));
  await startWithin(site.b, 'B');
  const storedEnd = (await journalShow(site.b)).cursors.nextSeq;
  run.crashes.at(-1)!.nextSeq = storedEnd;
  run.needApplied = Math.max(run.needApplied, storedEnd);
}

async function checkRound(run: Run, label: string): Promise<string[]> {
  const { site } = run;
  const need = run.needApplied;
  let status = await display(site.a);
  for (;;) {
    if (status.some(isOverflow)) {
      // A fault ran long enough for the journal to overflow: the group's policy, not a violation.
      run.report.counts.overflows += 1;
      run.print(`  ${label}: A's journal overflowed (PSUE journal-full); recovering`);
      await recoverOverflow(run, label);
      status = await display(site.a);
    }
    if (status.some((p) => p.status !== 'PAIR')) break;
    // The hosts keep writing meanwhile, so the journal may overflow during the wait too (B then
    // applies nothing more until a resync): that ends the wait, and the overflow is recovered.
    let overflowed = false;
    await waitForProgress(`B to apply up to seq ${need} (redo / re-sent regions)`, async () => {
      status = await display(site.a);
      overflowed = status.some(isOverflow);
      return overflowed ? need : appliedSeq(site.b);
    }, need);
    if (!overflowed) break;
  }
  const violations: string[] = [];
  const suspended = status.filter((p) => p.status !== 'PAIR');
  if (suspended.length > 0) violations.push(`${label}: pair ${suspended[0]!.pvol} is ${suspended[0]!.status} (${suspended[0]!.statusReason ?? ''})`);
  run.report.violations.push(...violations);
  for (const v of violations) run.print(`  ${v}`);
  return [...violations, ...(await checkSvols(run, label, status[0]!.lagRecords))];
}

/** Reads the S-VOLs at a consistency point (restore paused between batches) and runs the write-order checker on them. */
async function checkSvols(run: Run, label: string, lagRecords?: number): Promise<string[]> {
  const { site, hosts, report } = run;
  const snap = await readSvols(site);
  const log = hosts.readLog();
  const result = checkWriteOrder({ log, images: snap.images, recoveries: run.recoveries, takenUs: snap.takenUs, ...(run.initial === undefined ? {} : { initial: run.initial }) });
  report.counts.checks += 1;
  if (!result.consistent) run.failedImages ??= snap.images;
  const violations = result.violations.slice(0, 5).map((v) => `${label}: ${v}`);
  const behindMs = result.instantUs === undefined ? '-' : ((snap.takenUs - result.instantUs) / 1000).toFixed(0);
  run.print(`${label}: ${result.consistent ? 'consistent' : 'VIOLATION'}; S-VOLs at applied seq ${snap.appliedSeq}, ` +
    `${result.blocksWritten} blocks hold ${result.writesHeld} writes of ${log.writes.size}; instant ${behindMs} ms before the read` +
    `${lagRecords === undefined ? '' : `; lag ${lagRecords} records`}`);
  for (const v of violations) run.print(`  ${v}`);
  report.violations.push(...violations);
  return violations;
}

/** Adds the current hosts' writes to the report. */
function countWrites(run: Run): void {
  const log = run.hosts.readLog();
  run.report.writes += log.writes.size;
  run.report.acknowledged += [...log.writes.values()].filter((w) => w.acked).length;
  run.hostsCounted = true;
}

/** Stops the hosts, lets lag reach 0, compares every pair and checks the final volumes; returns the next write id. */
async function converge(run: Run): Promise<number> {
  const { site, hosts, report } = run;
  site.proxy.setMode('pass');
  await setRestorePaused(site.b, false);
  if ((await display(site.a)).some(isOverflow)) {
    report.counts.overflows += 1;
    run.print(`  before converging after round ${report.rounds}: A's journal overflowed (PSUE journal-full); recovering`);
    await recoverOverflow(run, `converging after round ${report.rounds}`);
  }
  const nextId = await hosts.stop();
  const log = hosts.readLog();
  countWrites(run);
  const initial = run.initial === undefined ? {} : { initial: run.initial };
  try {
    await waitForProgress('lag 0 on A (pair display --json; the count is the records B has yet to apply, negated)', async () => -displayCli(site.a).reduce((sum, p) => sum + p.lagRecords, 0), 0, { intervalMs: 500 });
    const final = await readSvols(site);
    const svolCheck = checkWriteOrder({ log, images: final.images, recoveries: run.recoveries, takenUs: final.takenUs, ...initial });
    report.counts.checks += 2;
    report.violations.push(...svolCheck.violations.slice(0, 5).map((v) => `final S-VOLs: ${v}`));
    const pvolImages = site.pvols.map((name) => readVolume(site.a, name, site.dir));
    const pvolCheck = checkWriteOrder({ log, images: pvolImages, recoveries: run.recoveries, takenUs: nowUs(), ...initial });
    report.violations.push(...pvolCheck.violations.slice(0, 5).map((v) => `final P-VOLs: ${v}`));
    compareAll(site);
    run.print(`converged after round ${report.rounds}: lag 0, qemu-img compare identical for ${site.pvols.length} pairs; final S-VOLs and P-VOLs consistent: ${svolCheck.consistent && pvolCheck.consistent}`);
  } catch (error) {
    report.violations.push(`converging after round ${report.rounds}: ${(error as Error).message.split('\n').slice(0, 3).join(' ')}`);
    run.print(`converging after round ${report.rounds}: ${(error as Error).message.split('\n').slice(0, 3).join(' ')}`);
  }
  return nextId;
}

function keep(run: Run, dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(run.hosts.logFile, path.join(dir, 'hosts.jsonl'));
  fs.writeFileSync(path.join(dir, 'run.json'), JSON.stringify({ report: run.report, crashes: run.crashes, recoveries: run.recoveries.map((r) => r.atUs) }, null, 2));
  run.recoveries.forEach((r, i) => r.images.forEach((image, v) => fs.writeFileSync(path.join(dir, `recovery${i + 1}-volume${v}.raw`), image)));
  run.failedImages?.forEach((image, v) => fs.writeFileSync(path.join(dir, `failed-svol${v}.raw`), image));
  fs.writeFileSync(path.join(dir, 'site-a.log'), run.logs.a + run.site.a.stderr);
  fs.writeFileSync(path.join(dir, 'site-b.log'), run.logs.b + run.site.b.stderr);
  run.print(`kept the hosts' log, crash times and recovered images in ${dir}`);
}

/** The summary table of a campaign, one string per line. */
export function summaryTable(report: FaultRoundsReport): string[] {
  const c = report.counts;
  const rows: Array<[string, string]> = [
    ['seed', String(report.seed)],
    ['rounds', String(report.rounds)],
    ['kills of A (kill -9, restart)', String(c.killA)],
    ['kills of B (kill -9, restart)', String(c.killB)],
    ...LINK_FAULTS.map((kind): [string, string] => [`link faults: ${kind}`, String(c.link[kind])]),
    ['restore pauses on B', String(c.pause)],
    ['journal fills injected', String(c.fills)],
    ['journal overflows (seen on A)', `${c.overflows} (A's log: ${c.overflowsLogged})`],
    ['writes acknowledged', `${report.acknowledged} (of ${report.writes} issued)`],
    ['flushed writes checked', String(report.flushedChecked)],
    ['write-order checks run', String(c.checks)],
    ['violations found', String(report.violations.length)],
  ];
  const p = report.proxy;
  if (p !== undefined) {
    rows.push(
      ['proxy: connections / reset / blackholed', `${p.connections} / ${p.resets} / ${p.blackholed}`],
      ['proxy: bytes dropped / bytes paced', `${p.bytesDropped} / ${p.pacedBytes}`],
      ['proxy: writes split / chunks delayed', `${p.splitWrites} / ${p.delayedChunks}`],
    );
  }
  rows.push(['time', `${report.seconds} s`]);
  const left = Math.max(...rows.map(([k]) => k.length));
  const right = Math.max(...rows.map(([, v]) => v.length));
  const line = `+-${'-'.repeat(left)}-+-${'-'.repeat(right)}-+`;
  return [line, ...rows.map(([k, v]) => `| ${k.padEnd(left)} | ${v.padStart(right)} |`), line];
}
