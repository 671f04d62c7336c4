// The sending side of a journal group (docs/architecture.md §3, §5, §6): the owner of the group's
// state and the one place that decides a pair status. Its parts each do one job and report
// outcomes here (outcomes.ts): host-write.ts (the write path), journal-sync.ts (the sender's
// journal, FLUSH and syncs), fold.ts (a suspension's fold into the bitmaps), copy.ts (initial
// copy, resync), serve.ts (the receiver's pull and reports), swap-steps.ts (drain and freeze
// gate), restart.ts (redo and re-send after an unclean stop), divergence.ts, display.ts.
//
// Every pair-status change is a step of status.ts, taken here only. Whether a volume may be
// written is decided in one place: admitHostWrite (status.ts writeRefusal: FENCED, SWAP, demoted,
// fence data), then status.ts journalsHostWrite (journaled, or the bitmap way).

import { EventEmitter } from 'node:events';
import { TwinstoreError } from '../../errors.js';
import type { Journal, JournalDevice, JournalRecord } from '../../journal/index.js';
import type { StorageEngine, Volume } from '../../storage/index.js';
import type { Logger } from '../../util/log.js';
import type { GroupMeta, PairDisplay, PairMeta } from '../model.js';
import type { DirtyRanges, JournalReadRequest } from '../protocol.js';
import type { StartHold } from '../start-hold.js';
import { Copier, markResync, resyncTotals } from './copy.js';
import { divergentWrites } from './divergence.js';
import { pairDisplay } from './display.js';
import { Fold } from './fold.js';
import { HostWrites } from './host-write.js';
import { JournalSkip } from './journal-skip.js';
import { SenderJournal } from './journal-sync.js';
import { LinkWatch } from './link-watch.js';
import type { MasterOutcome } from './outcomes.js';
import { dirtyRanges, openPvol, pvolOf, type Pvol } from './pvols.js';
import { ResendState, redoJournal, uncleanRegions, type VolumeRange } from './restart.js';
import { ReceiverService, type ReceiverCursors } from './serve.js';
import {
  checkResyncable, drainEnd, journals, journalsHostWrite, replicating, resendingRefusal, silenceStep, swapRefusal, thawedRefusal, toCopied, toFenced, toFrozen,
  toResync, toSplit, toSuspended, toThawed, toWritesRefused, writeRefusal,
} from './status.js';
import { SwapSteps } from './swap-steps.js';
import type { BytePacer } from '../../util/byte-pacer.js';

export interface MasterGroupOptions {
  meta: GroupMeta;
  journal: Journal;
  engine: StorageEngine;
  persist: (meta: GroupMeta) => Promise<void>;
  regionBytes: number;
  log: Logger;
  now?: () => number;
  /** The device of the journal volume when it is opened again after a drive error (the factory the simulator sets). */
  journalDevice: (volume: Volume) => JournalDevice;
  /** link.bandwidthMax: the array's pacer of journal answers, shared by its sending groups. */
  pacer?: BytePacer | undefined;
}

export class MasterGroup extends EventEmitter {
  readonly meta: GroupMeta;
  private readonly engine: StorageEngine;
  private readonly persistMeta: (meta: GroupMeta) => Promise<void>;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly pvols = new Map<number, Pvol>();
  private readonly sender: SenderJournal;
  private readonly hostWrites: HostWrites;
  private readonly fold: Fold;
  private readonly copier: Copier;
  private readonly receiver: ReceiverService;
  private readonly swap: SwapSteps;
  /** The re-send after an unclean stop (restart.ts). */
  private readonly resendState: ResendState;
  private readonly linkWatch = new LinkWatch();
  private readonly skip: JournalSkip;
  private stopped = false;
  private fencing: Promise<void> | undefined;
  /** Set by the manager at start: host writes wait there until the peer's epoch is known (start-hold.ts). */
  startHold: StartHold | undefined;

  constructor(options: MasterGroupOptions) {
    super();
    this.meta = options.meta;
    this.engine = options.engine;
    // Once stopped (demoted, deleted, shut down), the group document belongs to whoever replaced
    // this group: a late persist of ours would put the old epoch back (sim seed 28, flush-before-
    // durable hunt: a fence still running when the demotion persisted the new epoch).
    this.persistMeta = (meta) => (this.stopped ? Promise.resolve() : options.persist(meta));
    this.log = options.log.child({ group: options.meta.name });
    this.now = options.now ?? Date.now;
    const persist = (): Promise<void> => this.persistMeta(this.meta);
    const stopped = (): boolean => this.stopped;
    const report = (outcome: MasterOutcome): Promise<void> => this.decide(outcome);
    const common = { now: this.now, log: this.log, stopped, report };
    this.sender = new SenderJournal({ journal: options.journal, ...common });
    this.fold = new Fold({ sender: this.sender, pvols: this.pvols, log: this.log });
    this.copier = new Copier({ meta: this.meta, sender: this.sender, pvolOf: (lun) => this.pvolOf(lun), persist, ...common });
    this.receiver = new ReceiverService({ meta: this.meta, sender: this.sender, fold: this.fold, persist, pacer: options.pacer, ...common });
    this.swap = new SwapSteps(this.now);
    this.skip = new JournalSkip({ meta: this.meta, engine: this.engine, sender: this.sender, receiver: this.receiver, fold: this.fold, persist, now: this.now, log: this.log, report, journalDevice: options.journalDevice });
    this.resendState = new ResendState(this.pvols, this.log);
    this.hostWrites = new HostWrites({
      meta: this.meta, sender: this.sender, engine: this.engine, persist, now: this.now, report,
      pvolOf: (lun) => this.pvolOf(lun),
      admit: () => this.admitHostWrite(),
      journals: (pvol) => journalsHostWrite(pvol.pair),
      resendPending: (lun) => this.resendState.pendingOf(lun),
    });
    for (const pair of this.meta.pairs) this.addPair(pair, options.regionBytes);
  }

  /** Replaced only when a resync or a fence opens it again after a drive error stopped it (journal-skip.ts). */
  get journal(): Journal {
    return this.sender.journal;
  }

  addPair(pair: PairMeta, regionBytes: number): void {
    this.pvols.set(pair.pvolLun, openPvol({ engine: this.engine, groupName: this.meta.name, pair, regionBytes }));
  }

  hasPvol(volumeId: number): boolean {
    return this.pvolByVolume(volumeId) !== undefined;
  }

  pvolByVolume(volumeId: number): Pvol | undefined {
    return [...this.pvols.values()].find((p) => p.volume.meta.id === volumeId);
  }

  private pvolOf(lun: number): Pvol {
    return pvolOf(this.pvols, this.meta.name, lun);
  }

  // ---- host writes: admission and the way they take -------------------------------------

  write(lun: number, offset: number, data: Buffer): Promise<void> {
    return this.hostWrites.write(lun, offset, data);
  }

  writeZeroes(lun: number, offset: number, length: number, keepAllocated: boolean): Promise<void> {
    return this.hostWrites.writeZeroes(lun, offset, length, keepAllocated);
  }

  trim(lun: number, offset: number, length: number): Promise<void> {
    return this.hostWrites.trim(lun, offset, length);
  }

  /**
   * Whether a host write may be written at all: it waits for the start hold and a swap's freeze,
   * then is refused (status.ts writeRefusal). The one place that decides it; whether it gets a
   * record is status.ts journalsHostWrite.
   */
  private async admitHostWrite(): Promise<void> {
    if (this.startHold?.active) await this.startHold.admit();
    await this.swap.holdAtGate();
    const refusal = writeRefusal(this.meta, this.stopped);
    if (refusal) throw refusal;
  }

  /** FLUSH/FUA: every record written so far durable, P-VOLs synced (journal-sync.ts). */
  flush(): Promise<void> {
    return this.sender.flush({ engineFlush: () => this.engine.flush(), replicating: () => replicating(this.meta), folded: () => this.fold.done });
  }

  /**
   * A sync of the engine failed (a drive or the metadata; sticky-sync.ts): every later FLUSH fails
   * until a restart, so the group suspends now, the regions written since the last good flush in
   * the bitmaps (a drive may have dropped them), and does not wait for a FLUSH to find out.
   */
  engineSyncFailed(error: Error, what: string): Promise<void> {
    return this.decide({ kind: 'drive-error', what, error, activeRegionsLost: true });
  }

  // ---- what the parts report: every suspension decided here -----------------------------------

  private async decide(outcome: MasterOutcome): Promise<void> {
    const peer = this.meta.peer;
    switch (outcome.kind) {
      case 'journal-full':
        return this.suspend('journal-full');
      case 'drive-error': {
        // A drive I/O error on this array's write path (docs/architecture.md §6).
        if (outcome.activeRegionsLost === true) await this.fold.activeRegions();
        const { error, what } = outcome;
        return this.suspendReplicating(`drive-error: ${what}: ${error.message}`, [{ err: error.message, what }, 'drive I/O error; suspending']);
      }
      case 'journal-lost':
        return this.suspendReplicating(`journal-damaged: ${outcome.reason}`);
      case 'copy-error':
        this.log.error({ err: outcome.error.message, lun: outcome.lun }, 'initial copy failed');
        return this.suspend(`copy-error: ${outcome.error.message}`);
      case 'copy-progress':
        this.checkCopyDone();
        return;
      case 'bad-record':
        if (outcome.on === undefined) return this.suspend(`bad-record: seq ${outcome.seq}`);
        return this.suspendReplicating(`bad-record: seq ${outcome.seq} on ${outcome.on}`, [{ seq: outcome.seq, peer }, 'the receiver holds a damaged record; suspending']);
      case 'receiver-journal-lost':
        return this.suspendReplicating(`journal-damaged on ${peer}: its restore journal was lost; the resync copies every region`);
      case 'receiver-ahead':
        return this.suspendReplicating(`receiver-ahead: seq ${outcome.storedSeq - 1} on ${peer}`, [{ storedSeq: outcome.storedSeq, servedTo: outcome.servedTo }, `${outcome.message}; suspending`]);
      case 'receiver-drive-error':
        return this.suspendReplicating(`drive-error on ${peer}: ${outcome.message}`, [{ seq: outcome.seq, peer, err: outcome.message }, 'the receiver hit a drive error; suspending']);
    }
  }

  /** A replicating group suspends, `logged` as an error first; a suspended or split one stays as it is. */
  private async suspendReplicating(reason: string, logged?: [Record<string, unknown>, string]): Promise<void> {
    if (!replicating(this.meta)) return;
    if (logged) this.log.error(...logged);
    await this.suspend(reason);
  }

  /** PSUE for the whole group: every unapplied record goes into the bitmaps; host writes go on, tracked. */
  async suspend(reason: string): Promise<void> {
    if (!toSuspended(this.meta, reason)) return;
    this.log.warn({ reason }, 'suspending journal group');
    await this.persistMeta(this.meta);
    await this.resendState.foldPending();
    await this.fold.start(this.receiver.receiverApplied);
    this.emit('changed');
  }

  /** After a restart: the records still kept (not applied by the receiver) give lag and folding their start. */
  loadUnapplied(): Promise<void> {
    return this.sender.loadUnapplied();
  }

  // ---- initial copy and resync (copy.ts) ------------------------------------------------------

  /** Queues base records for the whole P-VOL (or what is left of it after a restart). */
  startCopy(lun: number): void {
    this.copier.start(lun);
  }

  /** A COPY pair the receiver has applied through its copy's last record turns PAIR. */
  private checkCopyDone(): void {
    const done = toCopied(this.meta, this.receiver.receiverApplied);
    for (const pvol of done) this.log.info({ pvol }, 'initial copy done: PAIR');
    if (done.length > 0) void this.persistMeta(this.meta).then(() => this.emit('changed'));
  }

  // ---- split and resync (docs/architecture.md §6) ----------------------------------------

  /**
   * pair split: from now on host writes are not journaled but marked in the bitmaps (PSUS);
   * the records before go on to the receiver, which stops at `splitSeq - 1`: the S-VOLs'
   * consistency point. Returns that splitSeq.
   */
  async split(): Promise<number> {
    const splitSeq = this.journal.nextSeq;
    toSplit(this.meta, splitSeq);
    await this.persistMeta(this.meta);
    this.emit('changed');
    this.log.info({ splitSeq }, 'pair split');
    return splitSeq;
  }

  /** Resolves true once the receiver has applied every record before `seq`, false after `timeoutMs`. */
  waitApplied(seq: number, timeoutMs: number): Promise<boolean> {
    return this.receiver.waitApplied(seq, timeoutMs);
  }

  /**
   * pair resync: the peer's dirty ranges join the bitmaps (durably), every pair goes COPY and
   * host writes are journaled again; then each marked region is copied (copy.ts). The
   * caller has made the S-VOLs read-only again and holds the peer's ranges.
   */
  async resync(peerDirty: DirtyRanges[]): Promise<{ dirtyBytes: number; resyncFromSeq: number }> {
    const wasSuspended = checkResyncable(this.meta);
    await this.fold.again(() => this.receiver.receiverApplied);
    if (this.journal.failed) await this.skip.reopen();
    await markResync(this.pvols, peerDirty);
    toResync(this.meta);
    this.hostWrites.resetTracked();
    // The silence that suspended (or fenced) the group is not this replication's: the receiver gets
    // a whole suspendAfterMs (fenceAfterMs) from now to be heard, or the next watch tick would
    // suspend a resync whose link came back a moment before its first pull.
    this.receiver.heardNow();
    if (this.receiver.receiverStored > this.journal.nextSeq) await this.skip.pastReceiver();
    const resyncFromSeq = this.journal.nextSeq;
    this.receiver.resyncStarted(resyncFromSeq);
    // After a suspension every record the receiver had not applied is in the bitmaps (folded then;
    // host writes since went the bitmap way): it skips them. After a split they still go on.
    if (wasSuspended) {
      this.meta.skipTo = resyncFromSeq;
      this.receiver.servedAtLeast(resyncFromSeq);
    }
    // Writes that chose the bitmap way before the switch mark it before they write: wait for them.
    await this.hostWrites.bitmapWritesDrained();
    const dirtyBytes = resyncTotals(this.pvols);
    await this.persistMeta(this.meta);
    this.emit('changed');
    this.log.info({ dirtyBytes }, 'resync started');
    for (const pvol of this.pvols.values()) this.startCopy(pvol.pair.pvolLun);
    return { dirtyBytes, resyncFromSeq };
  }

  // ---- planned swap and fencing (docs/architecture.md §6) ------------------------------------

  /**
   * The first step of a planned swap, on the old primary: the group shows SWAP (persisted, so
   * a restart keeps refusing writes), new host writes wait at a gate, writes in flight finish,
   * and every record is made durable. Returns the seq the receiver must apply up to.
   */
  async freeze(freezeMsMax: number): Promise<number> {
    this.swap.endDrain();
    this.swap.closeGate(freezeMsMax);
    const refused = swapRefusal(this.meta, true) ?? resendingRefusal(this.meta, this.resendState.resending);
    if (refused) return this.refuseFreeze(refused);
    toFrozen(this.meta);
    await this.persistMeta(this.meta);
    await this.hostWrites.drained();
    // A write in flight may have suspended the group (journal full, drive error) and gone to the
    // bitmap: the end seq would not cover it. The swap is refused; a resync copies those regions.
    const left = thawedRefusal(this.meta);
    if (left) return this.refuseFreeze(left);
    await this.flush();
    this.emit('changed');
    return this.journal.nextSeq;
  }

  private refuseFreeze(error: TwinstoreError): never {
    this.swap.openGate();
    throw error;
  }

  /** Step 1 of a planned swap (swap.drain): shown as SWAP/draining until the freeze or `drainMsMax`; writes go on. */
  startDrain(drainMsMax: number): number {
    const refused = swapRefusal(this.meta, false);
    if (refused) throw refused;
    this.swap.startDrain(drainMsMax);
    this.emit('changed');
    return this.sender.unapplied.bytes;
  }

  /** The drain: waits while host writes flow until the receiver is at most `lagBytesMax` behind. */
  drainTo(lagBytesMax: number, drainMsMax: number): Promise<void> {
    return this.swap.drainTo({
      groupName: this.meta.name,
      lagBytesMax,
      drainMsMax,
      lagBytes: () => this.sender.unapplied.bytes,
      left: () => drainEnd(this.meta, this.stopped),
    });
  }

  /** Frozen for a planned swap (SWAP persisted): host writes are held, then refused. */
  get frozen(): boolean {
    return this.meta.pairs.some((p) => p.status === 'SWAP');
  }

  /** An aborted swap: PAIR again and the held host writes go on. */
  async thaw(): Promise<void> {
    this.swap.endDrain();
    if (toThawed(this.meta)) await this.persistMeta(this.meta);
    this.swap.openGate();
    this.emit('changed');
  }

  /**
   * The other array holds a newer epoch (it took over): refuse host writes from now on, and fold
   * every record the receiver has not applied into the bitmaps — those are this side's writes
   * past the divergence point, which a resync --swap must overwrite.
   */
  async fence(newer: string, divergenceSeq: number): Promise<void> {
    // One fence at a time (the peer's hello and a demotion may both ask): a second waits for the first.
    while (this.fencing !== undefined) await this.fencing.catch(() => undefined);
    if (this.meta.pairs.every((p) => p.status === 'FENCED')) return;
    this.fencing = this.fenceNow(newer, divergenceSeq).finally(() => { this.fencing = undefined; });
    return this.fencing;
  }

  private async fenceNow(newer: string, divergenceSeq: number): Promise<void> {
    this.log.warn({ newer, divergenceSeq }, 'the peer holds a newer epoch: fencing this group');
    // The fence must hold whatever the drives do: a journal stopped by a drive error is opened again
    // (the error may be over; sim seed 246 never fenced, so resync --swap failed forever), and one
    // that still cannot be read counts the writes queued in memory.
    if (this.journal.failed) await this.skip.reopen().catch((error: unknown) => this.log.warn({ err: (error as Error).message }, 'fencing: the journal cannot be opened again yet'));
    const writes = await this.divergentWrites(divergenceSeq, true);
    toFenced(this.meta, newer, { seq: divergenceSeq, writes });
    await this.persistMeta(this.meta);
    // Our records from the divergence point on are writes the peer never applied; the active
    // regions may hold writes whose records were lost (an unclean stop, a re-send cut short).
    await this.fold.unapplied(divergenceSeq);
    await this.fold.activeRegions();
    this.emit('changed');
  }

  /**
   * Host writes here that the peer never got, past the divergence point `seq`: those journaled
   * from `seq` on (divergence.ts), plus those taken the bitmap way since the last resync.
   * `fromMemory`: a journal that cannot be read counts the records queued in memory.
   */
  divergentWrites(seq: number, fromMemory = false): Promise<number> {
    const unappliedFrom = fromMemory ? (from: number) => this.sender.unapplied.from(from).length : undefined;
    return divergentWrites({ journal: this.journal, seq, tracked: () => this.hostWrites.trackedCount, unappliedFrom });
  }

  /** Every bitmap region of every pair, as byte ranges keyed by P-VOL name (for a reverse resync). */
  dirtyRanges(): Array<{ pvolName: string; ranges: Array<[number, number]> }> {
    return dirtyRanges(this.pvols);
  }

  /**
   * PSUE link-down: with the receiver silent for `suspendAfterMs` (no journal.read heard), the
   * group suspends, so the journal stops filling and host writes go on, tracked in the bitmaps.
   */
  watchLink(suspendAfterMs: number): void {
    this.receiver.heardNow();
    const fenceAfterMs = this.meta.fence === 'data' ? this.meta.fenceAfterMs ?? 30_000 : Infinity;
    const silent = (silentMs: number): void => {
      const step = this.stopped ? undefined : silenceStep(this.meta, silentMs, { suspendAfterMs, fenceAfterMs });
      if (step === 'refuse-writes') void this.refuseWrites(`link down ${silentMs} ms (fence data)`).catch((error: unknown) => this.log.error({ err: (error as Error).message }, 'fence on link down failed'));
      if (step === 'suspend') void this.suspend('link-down').catch((error: unknown) => this.log.error({ err: (error as Error).message }, 'suspend on link down failed'));
    };
    this.linkWatch.start({ suspendAfterMs, fenceAfterMs, silentMs: () => this.now() - this.receiver.silentSinceMs, silent });
  }

  /**
   * Fence `data` (docs/architecture.md §6): the link has been down fenceAfterMs, so the P-VOLs refuse host
   * writes from now on (none is accepted that the other site cannot get) until a resync; the
   * group suspends (PSUE) so the unapplied records are folded into the bitmaps.
   */
  private async refuseWrites(reason: string): Promise<void> {
    const wasReplicating = replicating(this.meta);
    toWritesRefused(this.meta, reason);
    this.log.warn({ reason }, 'fence data: host writes refused');
    if (wasReplicating) await this.suspend(`link-down; ${reason}: host writes refused`);
    else {
      await this.persistMeta(this.meta);
      this.emit('changed');
    }
  }

  // ---- serving the receiver (serve.ts) ------------------------------------------------------

  /** The receiver's pull (docs/architecture.md §5): durable records from `fromSeq`, and its cursors. */
  readJournal(request: JournalReadRequest): Promise<JournalRecord[]> {
    return this.receiver.readJournal(request);
  }

  get receiverCursors(): ReceiverCursors {
    return this.receiver.cursors;
  }

  display(peerConnected: boolean): PairDisplay[] {
    const { meta, journal, receiver } = this;
    return pairDisplay({
      meta, arrayId: this.engine.arrayId, journal, unapplied: this.sender.unapplied, receiver: receiver.cursors,
      consistencyTimeMs: receiver.consistencyTimeMs, draining: this.swap.draining, peerConnected, nowMs: this.now(), pvols: this.pvols,
    });
  }

  /** Clean stop: make everything durable, clear the activity logs (no unclean-stop resend needed). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.startHold?.release();
    this.swap.openGate();
    this.linkWatch.stop();
    this.sender.stop();
    await this.engine.flush();
    // A journal stopped by a drive error keeps its activity logs: the next start redoes and re-sends.
    if (this.journal.failed) return;
    await this.journal.sync();
    await this.journal.persistHeader();
    // An unfinished re-send keeps the activity log, so the next start re-sends (and ends the unit) again.
    if (!this.resendState.anyPending) for (const pvol of this.pvols.values()) if (pvol.activeWrites.size === 0) await pvol.activity.clear();
    await this.journal.close();
  }

  // ---- the journal's damage and its reopening --------------------------------------------------

  /**
   * The journal lost synced records from `fromSeq` on (damage in the middle, JournalRecovery
   * lostFrom): every region goes into the bitmaps, the journal goes on past them (journal-skip.ts),
   * and a replicating group suspends (PSUE journal-damaged); its resync copies it all.
   */
  journalLost(fromSeq: number, reason = `records from seq ${fromSeq} on were lost`): Promise<void> {
    return this.skip.lost(fromSeq, reason);
  }

  /** After a journal was opened: if it started again after its header was lost, as journalLost. */
  journalStartedAgain(): Promise<boolean> {
    return this.skip.startedAgain();
  }

  // ---- restart after an unclean stop (restart.ts) -------------------------------------------

  /** After an unclean stop: the regions to re-send. */
  uncleanRegions(cut: ReadonlyArray<VolumeRange> = []): VolumeRange[] {
    return uncleanRegions(this.pvols.values(), cut);
  }

  /** After an unclean stop, before any host write: the journal's records re-applied to the P-VOLs. */
  redo(): Promise<number> {
    return redoJournal({ journal: this.journal, pvols: this.pvols, engine: this.engine });
  }

  /**
   * After an unclean stop: the regions re-sent as one atomic unit of base records.
   * Too large for the journal, its regions are in the bitmaps and the group suspends.
   */
  async resend(regions: VolumeRange[]): Promise<void> {
    const journaling = (lun: number): boolean => journals(this.pvolOf(lun).pair);
    const outcome = await this.resendState.resend(regions, this.copier.resendJournal({ journaling, going: () => replicating(this.meta) }));
    if (outcome === 'too-large') await this.suspend('resend-too-large');
    if (outcome === 'sent') this.sender.scheduleSync();
  }
}
