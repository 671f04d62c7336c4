// One simulated run (issue 5): two arrays, the hosts, an operator issuing
// admin commands, the fault injector and the checkers, all driven by one
// seeded kernel. simulate(seed) sets up a pair of two volumes in one journal
// group, runs a fault phase (crashes, link faults, drive errors, journal
// corruption, admin commands at random), then heals everything, lets the
// operator bring the pair back to PAIR, and checks liveness: lag 0 and both
// sides byte-identical. Checkers run after every step and at the end; each
// violation is one line naming what broke.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc32c } from '@node-rs/crc32';
import { setBlockFileOpener } from '../../src/storage/open-file.js';
import { setPlanted, type PlantedBug } from '../../src/util/planted.js';
import { parseHeaderSlot, parseRecordHeader } from '../../src/journal/layout.js';
import { formatEpoch, GROUP_DOCUMENT, type GroupMeta } from '../../src/replication/model.js';
import type { PairDisplay } from '../../src/replication/index.js';
import type { TakeoverResult } from '../../src/replication/index.js';
import type { JournalDevice } from '../../src/journal/index.js';
import { checkFlushed, checkWriteOrder, blockBytes } from '../helpers/write-order.js';
import { Kernel, settle } from './kernel.js';
import { SimNetwork } from './network.js';
import { SimArray, type JournalTap } from './array.js';
import { Hosts, VOLUMES, VOLUME_BLOCKS } from './hosts.js';

export interface SimOptions {
  seed: number;
  plant?: readonly PlantedBug[];
  /** One line per event (--seed N); undefined: quiet. */
  print?: (line: string) => void;
  /** Sim time of the fault phase (default 20 s). */
  faultMs?: number;
  /** Fault kinds left out (FAULT_KINDS). */
  without?: readonly string[];
}

export const FAULT_KINDS = ['crash', 'partition', 'clog', 'delay', 'reset', 'packets', 'drive-errors', 'journal-corruption'] as const;

export interface SimReport {
  seed: number;
  violations: string[];
  steps: number;
  simMs: number;
  /** A digest of every event: the same seed gives the same digest. */
  digest: string;
  faults: Record<string, number>;
  ops: Record<string, number>;
  hosts: { writes: number; acked: number; failed: number; flushes: number };
  checks: Record<string, number>;
}

const GROUP = 'g';
const A = 'site-a';
const B = 'site-b';
const JOURNAL_BYTES = 136 * 2 ** 20;

export async function simulate(options: SimOptions): Promise<SimReport> {
  const world = new World(options);
  try {
    return await world.run();
  } finally {
    world.close();
  }
}

class World {
  readonly kernel: Kernel;
  readonly network: SimNetwork;
  readonly arrays: Record<string, SimArray>;
  readonly hosts: Hosts;
  readonly dir: string;
  readonly violations: string[] = [];
  private digest = 0;
  private readonly faults: Record<string, number> = {};
  private readonly ops: Record<string, number> = {};
  private readonly checks: Record<string, number> = { 'write-order S-VOL': 0, 'write-order P-VOL': 0, 'flushed after crash': 0, lag: 0, 'takeover state': 0, 'record meaning': 0, 'epoch durable': 0, 'byte-identical': 0 };
  /** Where the hosts' application runs. */
  primary = A;
  private adminBusy = false;
  /** The S-VOLs hold a consistency point (false from a resync or copy start until PAIR is seen). */
  private svolConsistent = false;
  /** ... and the receiver must have applied up to here (a master's re-send after its restart). */
  private consistentFrom = 0;
  private readonly crashedAtUs = new Map<string, number>();
  /** (epoch/seq) -> what it means, as stored by a receiving journal. */
  private readonly meaning = new Map<string, string>();
  private journalFaultRate = 0;
  private stopped = false;

  constructor(private readonly options: SimOptions) {
    this.kernel = new Kernel(options.seed);
    this.network = new SimNetwork(this.kernel);
    const base = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
    this.dir = fs.mkdtempSync(path.join(base, `twinstore-sim-${options.seed}-`));
    const tap: JournalTap = {
      written: (array, offset, data) => this.tapWrite(array, offset, data),
      fault: (array, device, offset, data) => this.journalFault(array, device, offset, data),
      headerLost: () => this.count(this.faults, 'journal header lost'),
    };
    const print = (line: string): void => this.line(line);
    this.arrays = {
      [A]: new SimArray(A, path.join(this.dir, A), this.kernel, this.network, tap, { id: B, host: B }, print),
      [B]: new SimArray(B, path.join(this.dir, B), this.kernel, this.network, tap, { id: A, host: A }, print),
    };
    this.hosts = new Hosts(this.kernel, print);
  }

  line(text: string): void {
    // The run's directory has a random name (mkdtemp): shown as <sim>, so a replay prints the same lines.
    const out = `${(this.kernel.nowMs / 1000).toFixed(3).padStart(8)} ${text.replaceAll(this.dir, '<sim>')}`;
    this.digest = crc32c(out, this.digest);
    this.options.print?.(out);
  }

  violation(text: string): void {
    this.violations.push(`t=${(this.kernel.nowMs / 1000).toFixed(3)}s ${text.replaceAll(this.dir, '<sim>')}`);
    this.line(`!! VIOLATION ${text}`);
  }

  count(table: Record<string, number>, key: string): void {
    table[key] = (table[key] ?? 0) + 1;
  }

  close(): void {
    for (const array of Object.values(this.arrays)) array.disk.closeAll();
    setBlockFileOpener(undefined);
    setPlanted([]);
    this.kernel.uninstall();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  // ---- driving the kernel ---------------------------------------------------------------------

  /** Steps the kernel until `done` settles (or `limitMs` of sim time pass: undefined). */
  async until<T>(done: Promise<T>, limitMs: number): Promise<{ value?: T; error?: unknown; settled: boolean }> {
    let outcome: { value?: T; error?: unknown; settled: boolean } = { settled: false };
    done.then((value) => { outcome = { value, settled: true }; }, (error: unknown) => { outcome = { error, settled: true }; });
    await settle();
    const deadline = this.kernel.nowMs + limitMs;
    while (!outcome.settled && this.kernel.nowMs < deadline) await this.step(deadline);
    return outcome;
  }

  private async step(untilMs: number): Promise<void> {
    const event = await this.kernel.step(untilMs);
    if (event !== undefined && this.options.print !== undefined && !event.label.startsWith('interval')) this.line(`${event.owner} ${event.label}`);
    else if (event !== undefined) this.digest = crc32c(`${event.at}:${event.owner}:${event.label}`, this.digest);
    for (const error of this.kernel.unhandled.splice(0)) this.violation(`unhandled rejection in the product: ${(error as Error)?.stack ?? String(error)}`);
    this.checkLag();
  }

  /** Steps for `ms` of sim time. */
  async runFor(ms: number): Promise<void> {
    const deadline = this.kernel.nowMs + ms;
    while (this.kernel.nowMs < deadline && !this.stopped) await this.step(deadline);
  }

  // ---- the run ---------------------------------------------------------------------------------

  async run(): Promise<SimReport> {
    this.kernel.install();
    setPlanted(this.options.plant ?? []);
    setBlockFileOpener((file, opts) => (this.arrays[A]!.owns(file) ? this.arrays[A]! : this.arrays[B]!).disk.open(file, opts));
    this.line(`sim seed ${this.options.seed}${this.options.plant?.length ? ` plant ${this.options.plant.join(',')}` : ''}`);
    await this.setup();
    if (this.violations.length === 0) await this.faultPhase(this.options.faultMs ?? 20_000);
    if (this.violations.length === 0) await this.healPhase();
    return {
      seed: this.options.seed,
      violations: this.violations,
      steps: this.kernel.steps,
      simMs: this.kernel.nowMs,
      digest: (this.digest >>> 0).toString(16).padStart(8, '0'),
      faults: { ...this.faults, ...prefixed('disk ', this.diskStats()), ...prefixed('net ', this.network.stats) },
      ops: this.ops,
      hosts: { ...this.hosts.stats },
      checks: this.checks,
    };
  }

  private diskStats(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const array of Object.values(this.arrays)) for (const [k, v] of Object.entries(array.disk.stats)) if (k === 'ioErrors' || k === 'lost' || k === 'torn' || k === 'landed') out[k] = (out[k] ?? 0) + v;
    return out;
  }

  private async setup(): Promise<void> {
    const a = this.arrays[A]!;
    const b = this.arrays[B]!;
    const started = await this.until(Promise.all([this.kernel.act(A, () => a.start()), this.kernel.act(B, () => b.start())]), 10_000);
    if (!started.settled || started.error) throw new Error(`sim setup: arrays did not start: ${String(started.error)}`);
    const make = async (array: SimArray): Promise<void> => {
      for (const name of VOLUMES) await array.engine!.createVolume({ name, sizeBytes: VOLUME_BLOCKS * blockBytes });
      await array.replication!.createJournal('jnl', JOURNAL_BYTES);
    };
    const made = await this.until(Promise.all([this.kernel.act(A, () => make(a)), this.kernel.act(B, () => make(b))]), 10_000);
    if (!made.settled || made.error) throw new Error(`sim setup: volumes: ${String(made.error)}`);
    // Both links up before the pair is made.
    await this.runFor(1000);
    for (const name of VOLUMES) {
      const paired = await this.until(this.kernel.act(A, () => a.replication!.createPair({ group: GROUP, pvol: name, svol: `${B}:${name}`, journal: 'jnl', remoteJournal: 'jnl' })), 10_000);
      if (!paired.settled || paired.error) throw new Error(`sim setup: pair create ${name}: ${String(paired.error)}`);
    }
    if (!(await this.waitPair(20_000))) throw new Error('sim setup: the pairs did not reach PAIR');
    this.svolConsistent = true;
    this.line('sim setup done: vol0, vol1 paired in group g, PAIR');
  }

  private display(id: string): PairDisplay[] {
    const array = this.arrays[id]!;
    if (array.state !== 'up') return [];
    try {
      return array.replication!.manager.display(GROUP);
    } catch {
      return [];
    }
  }

  private async waitPair(limitMs: number): Promise<boolean> {
    const deadline = this.kernel.nowMs + limitMs;
    while (this.kernel.nowMs < deadline) {
      const both = [...this.display(A), ...this.display(B)];
      if (both.length === 2 * VOLUMES.length && both.every((p) => p.status === 'PAIR')) return true;
      await this.runFor(50);
    }
    return false;
  }

  // ---- fault phase -------------------------------------------------------------------------------

  private async faultPhase(ms: number): Promise<void> {
    const end = this.kernel.nowMs + ms;
    let nextFault = this.kernel.nowMs + this.kernel.int(200, 1500);
    let nextAdmin = this.kernel.nowMs + this.kernel.int(500, 3000);
    let nextCheck = this.kernel.nowMs + 300;
    while (this.kernel.nowMs < end && this.violations.length === 0) {
      this.hostTick();
      if (this.kernel.nowMs >= nextFault) {
        this.injectFault();
        nextFault = this.kernel.nowMs + this.kernel.int(200, 2000);
      }
      if (this.kernel.nowMs >= nextAdmin && !this.adminBusy) {
        void this.adminOp();
        nextAdmin = this.kernel.nowMs + this.kernel.int(500, 4000);
      }
      if (this.kernel.nowMs >= nextCheck && !this.adminBusy) {
        await this.checkNow();
        nextCheck = this.kernel.nowMs + this.kernel.int(200, 800);
      }
      await this.runFor(this.kernel.int(1, 5));
    }
  }

  private hostTick(): void {
    const primary = this.arrays[this.primary]!;
    if (primary.state === 'up' && !this.stopped) this.hosts.tick(primary);
  }

  private other(id: string): string {
    return id === A ? B : A;
  }

  private injectFault(): void {
    const k = this.kernel;
    const a = A;
    const b = B;
    const roll = k.int(0, 99);
    const pair = k.chance(0.5) ? [a, b] : [b, a];
    const kind = roll < 22 ? 'crash' : roll < 34 ? 'partition' : roll < 44 ? 'clog' : roll < 54 ? 'delay' : roll < 62 ? 'reset' : roll < 72 ? 'packets' : roll < 80 ? 'drive-errors' : 'journal-corruption';
    if (this.options.without?.includes(kind)) return;
    if (roll < 22) {
      const victim = k.pick([a, b]);
      if (this.arrays[victim]!.state === 'down') return;
      this.crash(victim);
      return;
    }
    if (roll < 34) {
      const both = k.chance(0.5);
      const lossy = k.chance(0.25);
      this.count(this.faults, both ? 'partition both ways' : 'partition one way');
      if (lossy) this.count(this.faults, 'partition lossy');
      this.network.setPartitioned(this.network.direction(pair[0]!, pair[1]!), true, lossy);
      if (both) this.network.setPartitioned(this.network.direction(pair[1]!, pair[0]!), true, lossy);
      this.line(`sim F partition ${pair[0]} -> ${pair[1]}${both ? ' both ways' : ''}${lossy ? ' (lossy: open connections lose bytes)' : ''}`);
      k.schedule(k.int(200, 6000), 'sim F heal partition', () => {
        this.network.setPartitioned(this.network.direction(pair[0]!, pair[1]!), false);
        this.network.setPartitioned(this.network.direction(pair[1]!, pair[0]!), false);
      }, 'sim');
      return;
    }
    if (roll < 44) {
      this.count(this.faults, 'clog');
      const untilMs = k.nowMs + k.int(100, 3000);
      this.network.direction(pair[0]!, pair[1]!).clogUntilMs = untilMs;
      this.line(`sim F clog ${pair[0]} -> ${pair[1]} until ${(untilMs / 1000).toFixed(3)}`);
      return;
    }
    if (roll < 54) {
      this.count(this.faults, 'delay');
      this.network.direction(pair[0]!, pair[1]!).delayed = true;
      this.line(`sim F delay ${pair[0]} -> ${pair[1]}`);
      k.schedule(k.int(500, 5000), 'sim F end delay', () => { this.network.direction(pair[0]!, pair[1]!).delayed = false; }, 'sim');
      return;
    }
    if (roll < 62) {
      this.count(this.faults, 'reset');
      this.line('sim F reset the connections');
      this.network.reset(a, b);
      return;
    }
    if (roll < 72) {
      this.count(this.faults, 'packet faults');
      this.network.packetFaults = { drop: k.chance(0.5) ? 0.02 : 0, duplicate: k.chance(0.5) ? 0.02 : 0, reorder: k.chance(0.5) ? 0.02 : 0 };
      this.line(`sim F packets ${JSON.stringify(this.network.packetFaults)}`);
      k.schedule(k.int(200, 3000), 'sim F end packet faults', () => { this.network.packetFaults = { drop: 0, duplicate: 0, reorder: 0 }; }, 'sim');
      return;
    }
    if (roll < 80) {
      this.count(this.faults, 'drive errors');
      const victim = this.arrays[k.pick([a, b])]!;
      victim.disk.faults.ioErrorRate = 0.01;
      this.line(`sim F drive errors on ${victim.id}`);
      k.schedule(k.int(100, 1000), 'sim F end drive errors', () => { victim.disk.faults.ioErrorRate = 0; }, 'sim');
      return;
    }
    if (roll < 86) {
      this.count(this.faults, 'journal corruption');
      this.journalFaultRate = 0.05;
      this.line('sim F journal corruption (bit flips, misdirected writes)');
      k.schedule(k.int(100, 1000), 'sim F end journal corruption', () => { this.journalFaultRate = 0; }, 'sim');
    }
  }

  private crash(id: string): void {
    const array = this.arrays[id]!;
    this.count(this.faults, `crash ${id}`);
    this.line(`${id} X crash (power cut)`);
    array.crash();
    this.crashedAtUs.set(id, this.hosts.stamp());
    if (id === this.primary) this.hosts.abandon(`${id} crashed`);
    this.kernel.schedule(this.kernel.int(50, 3000), `sim restart ${id}`, () => void this.restart(id), 'sim');
  }

  private async restart(id: string): Promise<void> {
    const array = this.arrays[id]!;
    if (array.state !== 'down') return;
    this.line(`${id} X restart`);
    const life = array.life;
    const started = array.whileAlive(this.kernel.act(id, () => array.start()));
    try {
      await started;
    } catch (error) {
      if (life !== array.life || array.state === 'down') return;
      if (array.disk.faults.ioErrorRate > 0 && (error as { code?: string }).code === 'IO_ERROR') {
        // Its drive fails reads right now: the start stops with the error, as it should; the
        // operator powers it off and tries again once the drive is back (at the latest, the heal).
        this.line(`${id} X restart failed on an injected drive error (${(error as Error).message}); powered off, trying again later`);
        array.crash();
        this.kernel.schedule(this.kernel.int(500, 3000), `sim restart ${id}`, () => void this.restart(id), 'sim');
        return;
      }
      this.violation(`${id} did not restart after a crash: ${(error as Error).message}`);
      return;
    }
    if (life !== array.life || (array.state as string) !== 'up') return;
    this.line(`${id} X restarted`);
    if (this.role(id) === 'master') {
      // After an unclean stop the master re-sends its active regions as base records: until the
      // receiver applied them, the S-VOLs are between states (docs/replication.md, resend window).
      const stats = array.replication!.manager.groupStats().find((g) => g.group === GROUP);
      this.svolConsistent = false;
      this.consistentFrom = stats?.journaledRecords ?? 0;
    }
    await this.settleDiscard();
    if (id === this.primary) await this.afterPrimaryRestart(id);
  }

  /** The primary is back: nothing flushed may be missing; what it holds is the hosts' new starting point. */
  private async afterPrimaryRestart(id: string): Promise<void> {
    const images = await this.images(id);
    if (images === undefined) return;
    if (this.discardInDoubt?.other === id) {
      // The operator is discarding this side's writes (resync --discard on the other, not answered yet).
      this.line(`sim ${id} restarted while a resync --discard of its writes is under way: no flushed-write check`);
      this.hosts.recover(images, `${id} restarted`);
      return;
    }
    const crashUs = this.crashedAtUs.get(id)!;
    const sinceUs = this.hosts.recoveries.at(-1)?.atUs ?? 0;
    this.checks['flushed after crash']! += 1;
    const flushed = checkFlushed(this.hosts.log, images, { crashUs, sinceUs });
    for (const v of flushed.violations) this.violation(`${id} lost a flushed write in a crash: ${v}`);
    // Unflushed writes may survive in any mix (a drive cache keeps no order): only flushed ones must.
    this.hosts.recover(images, `${id} restarted`);
  }

  private async images(id: string): Promise<Buffer[] | undefined> {
    const array = this.arrays[id]!;
    if (array.state !== 'up') return undefined;
    const out: Buffer[] = [];
    for (const name of VOLUMES) out.push(await array.readNow(name));
    return out;
  }

  // ---- the operator --------------------------------------------------------------------------

  private async adminOp(): Promise<void> {
    const k = this.kernel;
    const p = this.primary;
    const s = this.other(p);
    const pa = this.arrays[p]!;
    const sa = this.arrays[s]!;
    const roles = { [p]: this.role(p), [s]: this.role(s) };
    const choices: string[] = [];
    if (pa.state === 'up' && roles[p] === 'master') choices.push('split', 'resync');
    if (sa.state === 'up' && roles[s] === 'restore') choices.push('takeover');
    if (pa.state === 'up' && roles[p] === 'master' && roles[s] === 'master' && sa.state === 'up') choices.push('resync --swap', 'resync --discard');
    if (choices.length === 0) return;
    const op = k.pick(choices);
    this.adminBusy = true;
    try {
      if (op === 'takeover') await this.runAdmin(op, s, p);
      else if (op === 'resync --discard') await this.runAdmin(op, s, p);
      else await this.runAdmin(op, p, s);
    } finally {
      this.adminBusy = false;
    }
  }

  private takeoverState(id: string): string | undefined {
    const array = this.arrays[id]!;
    return array.state === 'up' ? array.replication!.manager.takeoverState(GROUP) : undefined;
  }

  private role(id: string): 'master' | 'restore' | undefined {
    const array = this.arrays[id]!;
    return array.state === 'up' ? array.replication!.manager.groupRole(GROUP) : undefined;
  }

  /**
   * Runs one admin command on `target`; `other` is the other array. resync --discard runs on the
   * array to be primary again and discards `other`'s writes since the takeover.
   */
  private async runAdmin(op: string, target: string, other: string): Promise<void> {
    this.count(this.ops, op);
    const array = this.arrays[target]!;
    const life = array.life;
    this.line(`${target} A ${op}`);
    if (op === 'resync' || op === 'resync --swap' || op === 'resync --discard') this.svolConsistent = false;
    // Until it answers, a discard may have gone through: the hosts' side may lose its writes any time.
    if (op === 'resync --discard' && this.primary !== target) this.discardInDoubt = { target, other };
    let result: unknown;
    const deadline = this.kernel.nowMs + 60_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error('no answer within 60 s')), 60_000); });
    try {
      result = await Promise.race([late, array.whileAlive(this.kernel.act(target, () => {
        const r = array.replication!;
        switch (op) {
          case 'split': return r.splitPair(GROUP, false);
          case 'resync': return r.resyncPair(GROUP, false);
          case 'takeover': return r.takeover(GROUP, false);
          case 'resync --swap': return r.resyncPair(GROUP, true, this.kernel.chance(0.5) ? other : null);
          default: return r.resyncPair(GROUP, false, other);
        }
      }))]);
    } catch (error) {
      this.line(`${target} A ${op} failed: ${(error as Error).message}`);
      if (this.kernel.nowMs >= deadline) this.violation(`${target}: ${op} did not answer within 60 s`);
      // A discard whose answer was lost may have gone through (the other side turned receiver):
      // the operator looks, and takes it as done once it shows.
      await this.settleDiscard();
      return;
    } finally {
      clearTimeout(timer);
    }
    if (life !== array.life) return;
    this.line(`${target} A ${op} done: ${JSON.stringify(result)}`);
    if (this.healing && op.startsWith('resync')) this.healResynced = true;
    if (op === 'takeover') await this.afterTakeover(target, other, result as TakeoverResult);
    if (op === 'resync --discard' && this.primary !== target) await this.discarded(target, other);
    if (op === 'resync --discard') this.discardInDoubt = undefined;
    if (op !== 'split' && op !== 'takeover') await this.checkPrimary('after ' + op);
  }

  /** In the heal phase (the network whole, no faults), and once a resync there answered. */
  private healing = false;
  private healResynced = false;

  /**
   * Once the faults stopped and a resync answered (the link carried it), nothing may suspend the
   * group for link-down: the receiver is up and pulling. A watch that counts the silence from before
   * the resync suspends it at once (CI, fence.test.ts: PSUE link-down right after the resync).
   */
  private checkNoLinkDownAfterHeal(): void {
    if (!this.healResynced) return;
    // The sending side's own status (a receiver shows the master's as of its last pull).
    for (const array of [this.primary, this.other(this.primary)].filter((x) => this.role(x) === 'master')) {
      const down = this.display(array).find((p) => p.status === 'PSUE' && /link-down/.test(p.statusReason ?? ''));
      if (down) this.violation(`${array} suspended link-down after the heal and a resync, with the link whole: ${down.statusReason}`);
    }
  }

  /** A resync --discard that failed on the way, until it shows as done or the hosts' side writes again. */
  private discardInDoubt: { target: string; other: string } | undefined;

  /** The discard in doubt went through when its target sends and the hosts' side receives. */
  private async settleDiscard(): Promise<void> {
    const doubt = this.discardInDoubt;
    if (doubt === undefined) return;
    if (this.primary !== doubt.other) {
      this.discardInDoubt = undefined;
      return;
    }
    if (this.role(doubt.target) === 'master' && this.role(doubt.other) === 'restore') {
      this.discardInDoubt = undefined;
      this.line(`sim the resync --discard on ${doubt.target} went through although its answer was lost`);
      await this.discarded(doubt.target, doubt.other);
    }
  }

  /** The operator threw away what the hosts wrote at `other` since the takeover: they start again from `target`. */
  private async discarded(target: string, other: string): Promise<void> {
    this.hosts.abandon('the operator discarded their side');
    this.primary = target;
    const images = await this.images(target);
    if (images) this.hosts.recover(images, `${target} primary again, ${other}'s writes discarded`);
  }

  /** `s` took over from `p`: the hosts move there; what it holds must be a state `p`'s hosts could have seen. */
  private async afterTakeover(s: string, p: string, result: TakeoverResult): Promise<void> {
    this.hosts.abandon(`the application moves to ${s}`);
    const before = this.hosts.lastSettledUs;
    this.primary = s;
    const images = await this.images(s);
    if (images === undefined) return;
    this.checks['takeover state']! += 1;
    if (result.kind === 'swap') {
      const order = checkWriteOrder({ log: this.hosts.log, images, recoveries: this.hosts.recoveries, afterUs: before, takenUs: this.hosts.stamp() });
      for (const v of order.violations) this.violation(`planned swap ${p} -> ${s} lost acknowledged writes: ${v}`);
      this.svolConsistent = true;
    } else {
      const order = checkWriteOrder({ log: this.hosts.log, images, recoveries: this.hosts.recoveries, takenUs: this.hosts.stamp() });
      for (const v of order.violations) this.violation(`takeover by ${s}: its volumes hold no state ${p}'s hosts could have seen: ${v}`);
      this.hosts.recover(images, `takeover by ${s}`);
    }
  }

  // ---- checkers ------------------------------------------------------------------------------

  /** Arrays whose journal header slot write (the first 8 KiB) a bit flip or a misdirection damaged. */
  private readonly headerDamaged = new Set<string>();
  /** The highest applied cursor each receiver showed, per epoch. */
  private readonly appliedHigh = new Map<string, number>();

  /** Reported lag is never below the true lag (both arrays up, same epoch, one sending, one receiving). */
  private checkLag(): void {
    const master = [A, B].find((id) => this.role(id) === 'master');
    const restore = [A, B].find((id) => this.role(id) === 'restore');
    if (master === undefined || restore === undefined) return;
    const ms = this.arrays[master]!.replication!.manager.groupStats().find((g) => g.group === GROUP);
    const rs = this.arrays[restore]!.replication!.manager.groupStats().find((g) => g.group === GROUP);
    const md = this.display(master)[0];
    const rd = this.display(restore)[0];
    if (!ms || !rs || !md || !rd || md.epoch !== rd.epoch) return;
    if (md.status !== 'PAIR' && md.status !== 'PSUS' && md.status !== 'PSUE') return;
    this.checks.lag! += 1;
    // Records that exist: a journal that lost records went on past every seq it may have given out
    // (journalLost, a resync past the receiver), and the receiver skips to that point: no records.
    // What the receiver once showed applied stays on its S-VOLs (it persists the cursor after their
    // flush), even when damage to its newest header slot (a bit flip, a misdirected write) takes the cursor back at its restart
    // (it then applies those records again from its own journal): for such a receiver the highest
    // cursor it showed counts. Otherwise its cursor as it is, so a cursor reported before it was
    // persisted (the fix of seed 113) still shows.
    const key = `${restore}/${md.epoch}`;
    const appliedHigh = Math.max(this.appliedHigh.get(key) ?? 0, rs.appliedRecords);
    this.appliedHigh.set(key, appliedHigh);
    const applied = this.headerDamaged.has(restore) ? appliedHigh : rs.appliedRecords;
    const skipped = Math.max(applied, ms.skipToRecords);
    const trueLag = Math.max(0, ms.journaledRecords - skipped);
    // The master frees its journal only up to what the receiver applied (docs/architecture.md §5), or a skip point.
    if (ms.tailRecords > skipped) this.violation(`${master} freed its journal up to seq ${ms.tailRecords - 1} but ${restore} has applied only up to ${applied - 1}`);
    if (md.lagRecords < trueLag) this.violation(`${master} reports a lag of ${md.lagRecords} records but ${restore} has applied ${applied} of ${ms.journaledRecords} (true lag ${trueLag})`);
  }

  /** The primary's P-VOLs hold every acknowledged write (no resync or role change overwrote them). */
  private async checkPrimary(why: string): Promise<void> {
    // Taken before the read: a write in flight during it (the read makes the disk instant, so its
    // I/O completes meanwhile) may be acknowledged after its blocks were read, before the check.
    const afterUs = this.hosts.lastSettledUs;
    const images = await this.images(this.primary);
    if (images === undefined || this.role(this.primary) !== 'master') return;
    this.checks['write-order P-VOL']! += 1;
    const order = checkWriteOrder({ log: this.hosts.log, images, recoveries: this.hosts.recoveries, afterUs, takenUs: this.hosts.stamp() });
    for (const v of order.violations) this.violation(`${this.primary} P-VOLs (${why}): ${v}`);
  }

  /** The S-VOLs (restore paused between batches) are one instant of the hosts' history. */
  private async checkSecondary(): Promise<void> {
    const s = [A, B].find((id) => this.role(id) === 'restore');
    if (s === undefined || !this.svolConsistent) return;
    const array = this.arrays[s]!;
    const restore = array.replication!.manager.restoreGroup(GROUP);
    const status = this.display(s)[0]?.status;
    if (!restore || status === 'COPY') return;
    const life = array.life;
    const paused = await this.until(this.kernel.act(s, () => restore.setApplyPaused(true)), 5000);
    if (life !== array.life || !paused.settled) return;
    const images = await this.images(s);
    if (images !== undefined && this.display(s)[0]?.status !== 'COPY') {
      this.checks['write-order S-VOL']! += 1;
      const order = checkWriteOrder({ log: this.hosts.log, images, recoveries: this.hosts.recoveries, takenUs: this.hosts.stamp() });
      for (const v of order.violations) this.violation(`${s} S-VOLs are no state the hosts could have seen: ${v}`);
    }
    if (life === array.life) await this.kernel.act(s, () => restore.setApplyPaused(false));
  }

  private async checkNow(): Promise<void> {
    const both = [...this.display(A), ...this.display(B)];
    const receiver = [A, B].find((id) => this.role(id) === 'restore');
    const applied = receiver === undefined ? 0 : this.arrays[receiver]!.replication!.manager.groupStats().find((g) => g.group === GROUP)?.appliedRecords ?? 0;
    if (both.length === 2 * VOLUMES.length && both.every((p) => p.status === 'PAIR') && applied >= this.consistentFrom) this.svolConsistent = true;
    if (both.some((p) => p.status === 'COPY')) this.svolConsistent = false;
    await this.checkPrimary('periodic');
    await this.checkSecondary();
  }

  /**
   * Every journal write is tapped: a record stored by a receiver fixes what its (epoch, seq) means;
   * a header slot that names an epoch must name one the group's durable document holds (a role
   * change persists the document, with its epoch, before the journal turns: docs/architecture.md §6).
   */
  private tapWrite(array: string, offset: number, data: Buffer): void {
    if (offset < 8192) return this.tapHeader(array, offset, data);
    const receiving = this.role(array) === 'restore';
    for (let at = 0; at + 4096 <= data.length; at += 4096) {
      const header = parseRecordHeader(data.subarray(at, at + 4096));
      if (header === undefined || header.kind === 'marker') continue;
      const key = `${formatEpoch(header.epoch)}/${header.seq}`;
      const means = `${header.kind} lun ${header.lun} at ${header.offset}+${header.length} crc ${header.dataCrc}`;
      const known = this.meaning.get(key);
      this.checks['record meaning']! += 1;
      if (known !== undefined && known !== means) this.violation(`seq ${header.seq} of epoch ${formatEpoch(header.epoch)} means two writes: ${known} (stored by the receiver) and ${means} (written by ${array})`);
      if (receiving && known === undefined) this.meaning.set(key, means);
    }
  }

  private tapHeader(array: string, offset: number, data: Buffer): void {
    if (offset % 4096 !== 0 || data.length !== 4096) return;
    const header = parseHeaderSlot(data, offset === 0 ? 0 : 1);
    const doc = header === undefined ? undefined : this.arrays[array]!.engine?.documents<GroupMeta>(GROUP_DOCUMENT).get(header.groupId);
    if (header === undefined || doc === undefined) return; // a group being made has no document yet
    this.checks['epoch durable']! += 1;
    const epoch = formatEpoch(header.instances[0]!.epoch);
    if (!doc.epochs.some((e) => formatEpoch(e.epoch) === epoch)) this.violation(`${array}'s journal turned to epoch ${epoch} before its group document held it (durable chain: ${doc.epochs.map((e) => formatEpoch(e.epoch)).join(', ')})`);
  }

  private journalFault(array: string, device: JournalDevice, offset: number, data: Buffer): { offset: number; data: Buffer } {
    if (this.journalFaultRate === 0 || !this.kernel.chance(this.journalFaultRate)) return { offset, data };
    if (this.kernel.chance(0.5) || data.length >= device.sizeBytes / 2) {
      const flipped = Buffer.from(data);
      const byte = this.kernel.int(0, flipped.length - 1);
      flipped[byte]! ^= 1 << this.kernel.int(0, 7);
      this.count(this.faults, 'journal bit flip');
      if (offset < 8192) this.headerDamaged.add(array);
      this.line(`${array} F journal bit flip at byte ${offset + byte}`);
      return { offset, data: flipped };
    }
    const blocks = Math.floor((device.sizeBytes - data.length) / 4096);
    const to = this.kernel.int(2, Math.max(2, Math.min(blocks, 2 + 64))) * 4096;
    this.count(this.faults, 'journal misdirected write');
    if (offset < 8192) this.headerDamaged.add(array);
    this.line(`${array} F journal write of ${data.length}B at ${offset} misdirected to ${to}`);
    return { offset: to, data };
  }

  // ---- heal and converge -----------------------------------------------------------------------

  private async healPhase(): Promise<void> {
    this.line('sim heal: faults stop');
    this.healing = true;
    this.network.heal();
    this.journalFaultRate = 0;
    for (const array of Object.values(this.arrays)) array.disk.faults.ioErrorRate = 0;
    // Let pending restarts and admin commands finish.
    for (let i = 0; i < 200 && (this.adminBusy || Object.values(this.arrays).some((x) => x.state !== 'up')); i++) {
      for (const array of Object.values(this.arrays)) if (array.state === 'down') void this.restart(array.id);
      await this.runFor(100);
    }
    if (Object.values(this.arrays).some((x) => (x.state as string) !== 'up')) return this.violation('liveness: an array is still not up 20 s after the faults stopped');
    // Damage injected before the heal may only show when its record is read (a journal record
    // that fails its checksum suspends the group then): the operator resyncs again, twice at most.
    let lagZero = false;
    for (let round = 0; round < 3 && !lagZero; round++) {
      if (round > 0) this.line(`sim the group left PAIR after the heal (${JSON.stringify(this.display(this.primary).map((p) => [p.status, p.statusReason]))}): the operator resyncs again`);
      const converged = await this.converge();
      if (!converged) return;
      // Stop the hosts, wait for lag 0, then both sides must be byte-identical and the hosts' last state.
      this.stopped = true;
      await this.until(this.waitHostsIdle(), 10_000);
      this.stopped = false;
      lagZero = await this.lagZero();
      if (!lagZero && this.display(this.primary).every((p) => p.status === 'PAIR')) break;
    }
    const master = this.primary;
    const restore = this.other(master);
    if (!lagZero) return this.violation(`liveness: lag did not reach 0 within 20 s (${JSON.stringify(this.display(master).map((p) => [p.status, p.lagRecords]))})`);
    const pImages = await this.images(master);
    const sImages = await this.images(restore);
    this.checks['byte-identical']! += 1;
    pImages!.forEach((image, i) => {
      if (!image.equals(sImages![i]!)) {
        let block = 0;
        while (image.subarray(block * blockBytes, (block + 1) * blockBytes).equals(sImages![i]!.subarray(block * blockBytes, (block + 1) * blockBytes))) block += 1;
        this.violation(`liveness: ${VOLUMES[i]} differs between ${master} and ${restore} at lag 0 (first at block ${block})`);
      }
    });
    await this.checkPrimary('final');
    this.checks['write-order S-VOL']! += 1;
    const order = checkWriteOrder({ log: this.hosts.log, images: sImages!, recoveries: this.hosts.recoveries, afterUs: this.hosts.lastSettledUs, takenUs: this.hosts.stamp() });
    for (const v of order.violations) this.violation(`final S-VOLs on ${restore}: ${v}`);
    this.line(`sim end: PAIR, lag 0, ${VOLUMES.length} volumes byte-identical`);
  }

  /** Lag 0 within 20 s: the receiver applied every record and the primary shows no lag. */
  private async lagZero(): Promise<boolean> {
    const master = this.primary;
    const restore = this.other(master);
    const deadline = this.kernel.nowMs + 20_000;
    while (this.kernel.nowMs < deadline) {
      const ms = this.arrays[master]!.replication!.manager.groupStats().find((g) => g.group === GROUP);
      const rs = this.arrays[restore]!.replication!.manager.groupStats().find((g) => g.group === GROUP);
      if (ms && rs && rs.appliedRecords >= ms.journaledRecords && this.display(master).every((p) => p.lagRecords === 0)) return true;
      this.checkNoLinkDownAfterHeal();
      if (this.display(master).some((p) => p.status === 'PSUE' || p.status === 'PSUS')) return false;
      await this.runFor(50);
    }
    return false;
  }

  private async waitHostsIdle(): Promise<void> {
    while (!this.hosts.idle) await new Promise((r) => setTimeout(r, 10));
  }

  /** The operator brings the group back to PAIR with the hosts' side as primary. */
  private async converge(): Promise<boolean> {
    const deadline = this.kernel.nowMs + 60_000;
    while (this.kernel.nowMs < deadline) {
      this.hostTick();
      await this.settleDiscard();
      this.checkNoLinkDownAfterHeal();
      if (this.violations.length > 0) return false;
      const p = this.primary;
      const s = this.other(p);
      const pd = this.display(p);
      const sd = this.display(s);
      if (pd.length === VOLUMES.length && sd.length === VOLUMES.length && [...pd, ...sd].every((x) => x.status === 'PAIR') && this.role(p) === 'master') {
        this.line('sim converged: PAIR on both');
        return true;
      }
      const status = pd[0]?.status;
      let op: string | undefined;
      let target = p;
      const state = this.takeoverState(p);
      if (state === 'fenced' || state === 'reclaiming') op = 'resync --discard';
      // A resync --discard run on the other array failed on the way (its answer lost) but went
      // part of the way: the operator runs it again there, and the hosts move to that side.
      else if (this.takeoverState(s) === 'reclaiming') [op, target] = ['resync --discard', s];
      else if (this.role(p) === 'master' && this.role(s) === 'master') op = 'resync --swap';
      // On the sending side: the simulated arrays have no HTTP API to forward a command through.
      else if (status === 'PSUS' || status === 'PSUE') [op, target] = ['resync', this.role(p) === 'restore' ? s : p];
      // The hosts' side receives (a swap whose answer was lost): once PAIR, a takeover there swaps back.
      else if (this.role(p) === 'restore' && this.role(s) === 'master' && status === 'PAIR') op = 'takeover';
      else if (status === 'SSWS') op = 'resync --swap';
      if (op !== undefined && !this.adminBusy) {
        this.adminBusy = true;
        try {
          await this.until(this.runAdmin(op, target, this.other(target)), 70_000);
        } finally {
          this.adminBusy = false;
        }
      }
      await this.runFor(200);
    }
    this.violation(`liveness: the group did not return to PAIR within 60 s of healing (${this.primary}: ${JSON.stringify(this.display(this.primary).map((x) => [x.status, x.statusReason]))}; ${this.other(this.primary)}: ${JSON.stringify(this.display(this.other(this.primary)).map((x) => [x.status, x.statusReason]))})`);
    return false;
  }
}

function prefixed(prefix: string, table: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(table).map(([k, v]) => [prefix + k, v]));
}
