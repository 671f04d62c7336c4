// Randomized fault rounds for a journal group (DESIGN.md §10), shared by
// test/faults/write-order-rounds.test.ts (20 rounds) and scripts/soak.mjs
// (as many as asked). Everything random comes from one seed.
//
// Setup: arrays A and B (volatile-cache mode), two P-VOLs on A paired with two
// S-VOLs on B in one journal group; B pulls through a LinkProxy. Once the pairs
// reach PAIR, the libnbd hosts write both P-VOLs (QD 16, two connections per
// volume, overlapping rewrites, some FLUSHes) for the whole run.
//
// Each round lets the hosts write for a random while, then injects one fault
// (or two at once): kill -9 of A or of B and a restart, a cut, stall or slow
// link, restore paused on B. A kill of A also kills the hosts' connections:
// once all are down and A is back, both P-VOLs are read (the state the hosts
// find after the crash, a Recovery for the checker; every flushed write must
// be in it), then the hosts reconnect. After each round the S-VOLs are read
// with restore paused and the checker must find one instant the hosts could
// have read them at. A check waits until B has applied what a restart
// re-applies (B's redo up to what it had stored; A's re-sent active regions
// after an unclean stop): an S-VOL is at a consistency point only between
// applied batches, not in the middle of a redo, and not in the middle of the
// re-send (test/replication/resend-window.test.ts shows that window).
// At the end of a stretch of rounds (the whole run in CI; every `roundsPerLog`
// rounds in a soak, so the log and the checks stay small): hosts stopped, lag 0
// on A, qemu-img compare of every pair, and the final S-VOLs and P-VOLs checked
// once more; a soak then starts fresh hosts with the volumes as they are now as
// the initial content.

import fs from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { Prng } from '../../src/util/prng.js';
import { Hosts, nowUs } from './hosts.js';
import {
  appliedSeq, compareAll, display, displayCli, journalShow, readSvols, readVolume, setRestorePaused, sleep, stableNextSeq, startSite, startWithin,
  volatileEnv, waitFor, type Site,
} from './replication.js';
import { checkFlushed, checkWriteOrder, type Recovery } from './write-order.js';

export type FaultKind = 'kill-a' | 'kill-b' | 'cut' | 'stall' | 'slow' | 'pause' | 'cut+kill-b' | 'pause+kill-a' | 'stall+kill-a';
export const FAULT_KINDS: readonly FaultKind[] = ['kill-a', 'kill-b', 'cut', 'stall', 'slow', 'pause', 'cut+kill-b', 'pause+kill-a', 'stall+kill-a'];

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
}

export interface FaultRoundsReport {
  seed: number;
  rounds: number;
  counts: Record<'killA' | 'killB' | 'cut' | 'stall' | 'slow' | 'pause' | 'checks', number>;
  writes: number;
  acknowledged: number;
  flushedChecked: number;
  violations: string[];
  seconds: number;
}

interface Run {
  site: Site;
  hosts: Hosts;
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
  report: FaultRoundsReport;
  print: (line: string) => void;
}

export async function runFaultRounds(t: TestContext, options: FaultRoundsOptions): Promise<FaultRoundsReport> {
  const started = Date.now();
  const prng = new Prng(options.seed);
  const site = await startSite(t, {
    seed: options.seed,
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
    seed: options.seed, rounds: 0, counts: { killA: 0, killB: 0, cut: 0, stall: 0, slow: 0, pause: 0, checks: 0 },
    writes: 0, acknowledged: 0, flushedChecked: 0, violations: [], seconds: 0,
  };
  const run: Run = {
    site, hosts: await startHosts(1), prng, initial: undefined, recoveries: [], crashes: [], logs: { a: '', b: '' }, needApplied: 0, report, print: options.print,
  };
  const schedule = shuffle(prng, [...(options.faults ?? FAULT_KINDS)]);
  const stopOnViolation = options.stopOnViolation ?? true;
  const roundsPerLog = options.roundsPerLog ?? 25;
  try {
    for (let round = 1; round <= options.rounds; round++) {
      const kinds = options.faults ?? FAULT_KINDS;
      const fault = round <= schedule.length ? schedule[round - 1]! : kinds[prng.below(kinds.length)]!;
      await sleep(300 + prng.below(1200));
      const faultStarted = Date.now();
      try {
        await inject(run, fault);
      } catch (error) {
        throw new Error(`round ${round} ${fault}: ${(error as Error).message}`);
      }
      const found = await checkRound(run, `round ${round}/${options.rounds} ${fault} (${Date.now() - faultStarted} ms)`);
      report.rounds = round;
      if (found.length > 0 && stopOnViolation) break;
      if (round % roundsPerLog === 0 && round < options.rounds) {
        const nextId = await converge(run);
        if (report.violations.length > 0 && stopOnViolation) break;
        run.initial = site.pvols.map((name) => readVolume(site.a, name, site.dir));
        run.recoveries = [];
        run.hosts = await startHosts(nextId);
      }
    }
    if (run.hosts.running) await converge(run);
  } catch (error) {
    const message = (error as Error).message;
    if (!report.violations.some((v) => message.includes(v))) report.violations.push(message);
    options.print(`stopped: ${message.slice(0, 2000)}`);
  }
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

async function inject(run: Run, fault: FaultKind): Promise<void> {
  const { site, prng, report } = run;
  switch (fault) {
    case 'kill-a':
      return crashA(run);
    case 'kill-b':
      return crashB(run);
    case 'cut':
    case 'stall':
    case 'slow':
      report.counts[fault] += 1;
      site.proxy.setMode(fault);
      await sleep(200 + prng.below(1800));
      site.proxy.setMode('pass');
      return;
    case 'pause':
      report.counts.pause += 1;
      await setRestorePaused(site.b, true);
      await sleep(200 + prng.below(1800));
      await setRestorePaused(site.b, false);
      return;
    case 'cut+kill-b':
      report.counts.cut += 1;
      site.proxy.setMode('cut');
      await sleep(prng.below(500));
      await crashB(run);
      await sleep(prng.below(500));
      site.proxy.setMode('pass');
      return;
    case 'pause+kill-a':
      report.counts.pause += 1;
      await setRestorePaused(site.b, true);
      await sleep(prng.below(800));
      await crashA(run);
      await setRestorePaused(site.b, false);
      return;
    case 'stall+kill-a':
      report.counts.stall += 1;
      site.proxy.setMode('stall');
      await sleep(prng.below(800));
      await crashA(run);
      site.proxy.setMode('pass');
      return;
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
  const { site, hosts, report } = run;
  const violations: string[] = [];
  const status = await display(site.a);
  const suspended = status.filter((p) => p.status !== 'PAIR');
  if (suspended.length > 0) violations.push(`${label}: pair ${suspended[0]!.pvol} is ${suspended[0]!.status} (${suspended[0]!.statusReason ?? ''})`);
  const need = run.needApplied;
  await waitFor(`B to apply up to seq ${need} (redo / re-sent regions)`, async () => (await appliedSeq(site.b)) >= need, 120_000, 100);
  const snap = await readSvols(site);
  const log = hosts.readLog();
  const result = checkWriteOrder({ log, images: snap.images, recoveries: run.recoveries, takenUs: snap.takenUs, ...(run.initial === undefined ? {} : { initial: run.initial }) });
  report.counts.checks += 1;
  if (!result.consistent) run.failedImages = snap.images;
  violations.push(...result.violations.slice(0, 5).map((v) => `${label}: ${v}`));
  const behindMs = result.instantUs === undefined ? '-' : ((snap.takenUs - result.instantUs) / 1000).toFixed(0);
  run.print(`${label}: ${result.consistent ? 'consistent' : 'VIOLATION'}; S-VOLs at applied seq ${snap.appliedSeq}, ` +
    `${result.blocksWritten} blocks hold ${result.writesHeld} writes of ${log.writes.size}; instant ${behindMs} ms before the read; lag ${status[0]!.lagRecords} records`);
  for (const v of violations) run.print(`  ${v}`);
  report.violations.push(...violations);
  return violations;
}

/** Stops the hosts, lets lag reach 0, compares every pair and checks the final volumes; returns the next write id. */
async function converge(run: Run): Promise<number> {
  const { site, hosts, report } = run;
  site.proxy.setMode('pass');
  await setRestorePaused(site.b, false);
  const nextId = await hosts.stop();
  const log = hosts.readLog();
  report.writes += log.writes.size;
  report.acknowledged += [...log.writes.values()].filter((w) => w.acked).length;
  const initial = run.initial === undefined ? {} : { initial: run.initial };
  try {
    await waitFor('lag 0 on A (pair display --json)', () => displayCli(site.a).every((p) => p.lagRecords === 0), 120_000, 500);
    const final = await readSvols(site);
    const svolCheck = checkWriteOrder({ log, images: final.images, recoveries: run.recoveries, takenUs: final.takenUs, ...initial });
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
