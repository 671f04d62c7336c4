// The sending side of a journal group (docs/architecture.md §3, §5, §6): the P-VOL write
// path, the initial copy, and serving the receiver's journal reads. The redo and re-send after
// an unclean stop are in master/restart.ts, which reports how a re-send ended.
//
// Write path, per host write: take the range lock (overlapping writes then
// take sequence numbers in the order they reach the P-VOL); reserve sequence
// and journal place in one synchronous step; mark the region in the activity
// log (durable before any write); write the record; only then write the P-VOL.
// FUA and FLUSH wait until every record up to the last completed one is
// durable. Only durable records are ever sent, and the journal is freed only
// up to what the receiver says it has applied.

import { EventEmitter } from 'node:events';
import { TwinstoreError, isTwinstoreError } from '../errors.js';
import { Journal, JournalRecordCorruptError, type JournalRecord, type RecordKind, type RecordMeta, type Reservation } from '../journal/index.js';
import { RangeLock } from '../storage/range-lock.js';
import { isIoError, type StorageEngine, type Volume } from '../storage/index.js';
import type { Logger } from '../util/log.js';
import { isPlanted } from '../util/planted.js';
import { RangesByLun, markCopyRemainder, markRanges, regionRanges } from './bitmap-marks.js';
import { scanJournal } from './journal-scan.js';
import { DurableRegionSet } from './region-set.js';
import { UnappliedQueue } from './unapplied.js';
import type { StartHold } from './start-hold.js';
import { VolumeJournalDevice } from './journal-device.js';
import { isUnitBegin, isUnitEnd } from './units.js';
import { ResendState, redoJournal, uncleanRegions, type RecoveredPvol, type ResendJournal, type VolumeRange } from './master/restart.js';
import { bitmapSetName, formatEpoch, type GroupMeta, type PairDisplay, type PairMeta } from './model.js';
import type { DamagedRecord, DirtyRanges, JournalReadRequest, ReceiverDriveError } from './protocol.js';

const copyChunkBytes = 2 ** 20;
/** Copy chunks (initial copy, resync) read and journaled side by side. */
const copyChunksInFlightMax = 8;
const readBatchBytesMax = 16 * 2 ** 20;
const longPollMs = 250;
const senderSyncIntervalMs = 10;
const activityRegionBytes = 16 * 2 ** 20;
const activityRegionsMax = 512;
/** Base records leave this share of the journal to host writes. */
const copyReserveFraction = 0.25;

interface Pvol extends RecoveredPvol {
  locks: RangeLock;
  /** Host writes in flight per activity region. */
  activeWrites: Map<number, number>;
}


export interface MasterGroupOptions {
  meta: GroupMeta;
  journal: Journal;
  engine: StorageEngine;
  persist: (meta: GroupMeta) => Promise<void>;
  regionBytes: number;
  log: Logger;
  now?: () => number;
}

export class MasterGroup extends EventEmitter {
  readonly meta: GroupMeta;
  /** Replaced only when a resync opens it again after a drive error stopped it (reopenJournal). */
  journal: Journal;
  private readonly engine: StorageEngine;
  private readonly persistMeta: (meta: GroupMeta) => Promise<void>;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly pvols = new Map<number, Pvol>();
  /** Records not yet applied by the receiver, oldest first (for lag and folding into bitmaps). */
  private readonly unapplied = new UnappliedQueue();
  /** Highest seq whose journal write completed. */
  private writtenSeq = -1;
  private syncing: Promise<void> | undefined;
  private syncTimer: NodeJS.Timeout | undefined;
  private lastSyncMs = 0;
  private readonly durableWaiters = new Set<() => void>();
  private receiverApplied = 0;
  private receiverStored = 0;
  /** Seqs below this were in the journal when it was opened or have been served since: all a receiver may hold. */
  private servedTo: number;
  private lastHeardMs = 0;
  /** Timestamp (our clock) of the newest record the receiver applied: the consistency point's time. */
  private consistencyTimeMs: number | undefined;
  private copying = new Set<number>();
  /** A planned swap's freeze: new host writes wait here at most `holdMsMax` (then fail if still frozen, or the swap went through). */
  private gate: { promise: Promise<void>; open: () => void; holdMsMax: number } | undefined;
  /** A planned swap's drain (step 1) is shown until this time (our clock); 0: none. */
  private drainUntilMs = 0;
  private hostWritesInFlight = 0;
  private readonly writesDrained: Array<() => void> = [];
  /** Host writes going the bitmap way right now (a resync waits for them before reading the bitmap). */
  private bitmapWrites = 0;
  private readonly bitmapDrained: Array<() => void> = [];
  /** Host writes taken the bitmap way since this process started (at least one when meta.trackedWrites). */
  private trackedWriteCount = 0;
  private trackedPersist: Promise<void> | undefined;
  private linkWatch: NodeJS.Timeout | undefined;
  /** The re-send after an unclean stop (master/restart.ts). */
  private readonly resendState: ResendState;
  private stopped = false;
  /** The latest suspension's folding of the unapplied records into the bitmaps. */
  private folding: Promise<void> = Promise.resolve();
  /** The seq the latest resync started at: a receiver's drive-error report from before it is stale. */
  private resyncFromSeq = 0;
  /** Set by the manager at start: host writes wait there until the peer's epoch is known (start-hold.ts). */
  startHold: StartHold | undefined;

  constructor(options: MasterGroupOptions) {
    super();
    this.meta = options.meta;
    this.journal = options.journal;
    this.servedTo = options.journal.nextSeq;
    this.engine = options.engine;
    // Once stopped (demoted, deleted, shut down), the group document belongs to whoever replaced
    // this group: a late persist of ours would put the old epoch back (sim seed 28, flush-before-
    // durable hunt: a fence still running when the demotion persisted the new epoch).
    this.persistMeta = (meta) => (this.stopped ? Promise.resolve() : options.persist(meta));
    this.log = options.log.child({ group: options.meta.name });
    this.now = options.now ?? Date.now;
    this.receiverApplied = this.journal.tailSeq;
    this.resendState = new ResendState(this.pvols, this.log);
    for (const pair of this.meta.pairs) this.attachPair(pair, options.regionBytes);
  }

  private attachPair(pair: PairMeta, regionBytes: number): void {
    const volume = this.engine.volumeById(pair.localVolumeId);
    if (!volume) throw new TwinstoreError('VOLUME_NOT_FOUND', `P-VOL ${pair.pvolName} of group ${this.meta.name} is missing`);
    this.pvols.set(pair.pvolLun, {
      pair,
      volume,
      locks: new RangeLock(),
      activity: new DurableRegionSet(this.engine, `al:${volume.meta.id}`, activityRegionBytes),
      bitmap: new DurableRegionSet(this.engine, bitmapSetName(this.meta.name, pair.pvolLun), regionBytes),
      activeWrites: new Map(),
    });
  }

  addPair(pair: PairMeta, regionBytes: number): void {
    this.attachPair(pair, regionBytes);
  }

  hasPvol(volumeId: number): boolean {
    return [...this.pvols.values()].some((p) => p.volume.meta.id === volumeId);
  }

  pvolByVolume(volumeId: number): Pvol | undefined {
    return [...this.pvols.values()].find((p) => p.volume.meta.id === volumeId);
  }

  // ---- host write path ----------------------------------------------------

  write(lun: number, offset: number, data: Buffer): Promise<void> {
    return this.hostWrite(lun, 'write', offset, data.length, data, (v) => v.write(offset, data));
  }

  writeZeroes(lun: number, offset: number, length: number, keepAllocated: boolean): Promise<void> {
    return this.hostWrite(lun, 'zero', offset, length, undefined, (v) => v.writeZeroes(offset, length, keepAllocated));
  }

  trim(lun: number, offset: number, length: number): Promise<void> {
    return this.hostWrite(lun, 'trim', offset, length, undefined, (v) => v.writeZeroes(offset, length, false));
  }

  private async hostWrite(lun: number, kind: RecordKind, offset: number, length: number, data: Buffer | undefined, apply: (v: Volume) => Promise<void>): Promise<void> {
    if (this.startHold?.active) await this.startHold.admit();
    if (this.gate) await this.holdAtGate(this.gate);
    this.checkWritable();
    this.hostWritesInFlight += 1;
    try {
      await this.hostWriteOpen(lun, kind, offset, length, data, apply);
    } finally {
      this.hostWritesInFlight -= 1;
      if (this.hostWritesInFlight === 0) for (const wake of this.writesDrained.splice(0)) wake();
    }
  }

  /** A host write during a swap's freeze waits for the thaw, or `holdMsMax` at most: an error, not a hang. */
  private async holdAtGate(gate: { promise: Promise<void>; holdMsMax: number }): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => { timer = setTimeout(resolve, gate.holdMsMax); });
    await Promise.race([gate.promise, timeout]);
    clearTimeout(timer);
  }

  /** FENCED, or a swap (SWAP) holding the group, or demoted: host writes are refused. */
  private checkWritable(): void {
    if (this.stopped) throw new TwinstoreError('VOLUME_FENCED', `group ${this.meta.name} no longer takes host writes here (its role changed)`);
    const held = this.meta.pairs.find((p) => p.status === 'FENCED' || p.status === 'SWAP');
    if (held) throw new TwinstoreError('VOLUME_FENCED', `group ${this.meta.name} is ${held.status}${held.statusReason ? ` (${held.statusReason})` : ''}: host writes are refused`);
    if (this.meta.writesRefused) throw new TwinstoreError('VOLUME_FENCED', `group ${this.meta.name}: ${this.meta.writesRefused}; host writes are refused until pair resync`);
  }

  private async hostWriteOpen(lun: number, kind: RecordKind, offset: number, length: number, data: Buffer | undefined, apply: (v: Volume) => Promise<void>): Promise<void> {
    const pvol = this.pvolOf(lun);
    const unlock = await pvol.locks.acquire(offset, length);
    const regions = pvol.activity.regionsOf(offset, length);
    for (const r of regions) pvol.activeWrites.set(r, (pvol.activeWrites.get(r) ?? 0) + 1);
    try {
      if (!this.journalingHostWrite(pvol)) return await this.bitmapWrite(pvol, offset, length, apply);
      const reservation = await this.reserveForHost(pvol, kind, offset, length);
      if (reservation === undefined) return await this.bitmapWrite(pvol, offset, length, apply);
      const meta = { kind, epoch: this.meta.epoch, timestampMs: reservation.timestampMs, lun, offset, length };
      await this.journaledWrite(pvol, reservation.reservation, meta, data, apply);
    } finally {
      for (const r of regions) {
        const left = (pvol.activeWrites.get(r) ?? 1) - 1;
        if (left === 0) pvol.activeWrites.delete(r);
        else pvol.activeWrites.set(r, left);
      }
      unlock();
    }
  }

  /**
   * Activity mark, record, then the P-VOL write (docs/architecture.md §3). A drive I/O error on the way
   * fails this host write, and its regions go into the bitmap before the host hears of it: the
   * record may reach the S-VOL while the P-VOL write did not happen, so a resync must copy them.
   * Then the group suspends (PSUE `drive-error: …`).
   */
  private async journaledWrite(pvol: Pvol, reservation: Reservation, meta: Omit<RecordMeta, 'seq'>, data: Buffer | undefined, apply: (v: Volume) => Promise<void>): Promise<void> {
    let step = 'activity log';
    try {
      await this.markActivity(pvol, meta.offset, meta.length);
      step = 'journal write';
      if (isPlanted('pvol-before-journal')) await apply(pvol.volume);
      await this.journal.write(reservation, meta, data);
      this.recordWritten(reservation.seq);
      step = `P-VOL ${pvol.pair.pvolName} write`;
      if (!isPlanted('pvol-before-journal')) await apply(pvol.volume);
    } catch (error) {
      if (!isIoError(error)) throw error;
      if (step === 'activity log') await this.fillReservation(reservation, meta, data);
      await this.driveError(error, step, { pvol, offset: meta.offset, length: meta.length });
      throw error;
    }
  }

  /**
   * A reserved record that is never written leaves a gap no later record can become durable past:
   * it is written although its host write failed (the region is in the bitmap; either content is
   * one the host may see after an error). If the journal itself failed, a resync opens it again.
   */
  private async fillReservation(reservation: Reservation, meta: Omit<RecordMeta, 'seq'>, data: Buffer | undefined): Promise<void> {
    try {
      await this.journal.write(reservation, meta, data);
      this.recordWritten(reservation.seq);
    } catch (error) {
      if (!isIoError(error)) throw error;
    }
  }

  /**
   * A drive I/O error on this array's write path (docs/architecture.md §6): the range concerned goes into its
   * bitmap durably, then a replicating group goes PSUE with reason `drive-error: <what failed>`.
   */
  private async driveError(error: Error, what: string, range?: { pvol: Pvol; offset: number; length: number }): Promise<void> {
    if (range) await range.pvol.bitmap.mark(range.offset, range.length);
    if (!this.meta.pairs.some((p) => p.status === 'PAIR' || p.status === 'COPY')) return;
    this.log.error({ err: error.message, what }, 'drive I/O error; suspending');
    await this.suspend(`drive-error: ${what}: ${error.message}`);
  }

  /** Every bitmap region of the byte ranges, clamped to the P-VOL, goes into its bitmap (durably). */
  private markBitmap(pvol: Pvol, ranges: Iterable<readonly [number, number]>): Promise<void> {
    return markRanges(pvol.bitmap, pvol.volume.sizeBytes, ranges);
  }

  /** A host write while the pair is suspended or split: the bitmap mark is durable before the write. */
  private async bitmapWrite(pvol: Pvol, offset: number, length: number, apply: (v: Volume) => Promise<void>): Promise<void> {
    this.bitmapWrites += 1;
    try {
      await this.noteTrackedWrite();
      await pvol.bitmap.mark(offset, length);
      await apply(pvol.volume);
    } finally {
      this.bitmapWrites -= 1;
      if (this.bitmapWrites === 0) for (const wake of this.bitmapDrained.splice(0)) wake();
    }
  }

  /**
   * A host write the peer will not get until a resync: the first since the last resync makes
   * `trackedWrites` durable before it is written, so a demotion (resync --swap, a discard) knows
   * this side holds writes the other never saw, across restarts.
   */
  private noteTrackedWrite(): Promise<void> {
    this.trackedWriteCount += 1;
    if (this.meta.trackedWrites === true && this.trackedPersist === undefined) return Promise.resolve();
    if (this.trackedPersist === undefined) {
      this.meta.trackedWrites = true;
      this.trackedPersist = this.persistMeta(this.meta).finally(() => { this.trackedPersist = undefined; });
    }
    return this.trackedPersist;
  }

  private journaling(pvol: Pvol): boolean {
    return pvol.pair.status === 'COPY' || pvol.pair.status === 'PAIR';
  }

  /**
   * Whether a host write, already admitted, gets a record. SWAP counts: a write that passed the
   * gate before a freeze began (it may have waited on a range lock meanwhile) is one the freeze
   * waits for, so its record falls below the swap's end seq. Sent to the bitmap instead, it was
   * acknowledged and never reached the new primary (simulator seeds 52, 72, 87).
   */
  private journalingHostWrite(pvol: Pvol): boolean {
    return this.journaling(pvol) || pvol.pair.status === 'SWAP';
  }

  /** Reserves a record for a host write; on a full journal applies the overflow policy (undefined: suspended). */
  private async reserveForHost(pvol: Pvol, kind: RecordKind, offset: number, length: number) {
    const dataBytes = kind === 'write' ? length : 0;
    const deadline = this.now() + (this.meta.overflow === 'throttle' ? this.meta.throttleMsMax : 0);
    for (;;) {
      if (!this.journalingHostWrite(pvol)) return undefined;
      const timestampMs = this.now();
      try {
        const reservation = this.journal.reserve({ kind, epoch: this.meta.epoch, timestampMs, lun: pvol.pair.pvolLun, offset, length }, dataBytes);
        this.unapplied.push({ seq: reservation.seq, timestampMs, bytes: reservation.recordBytes, region: { lun: pvol.pair.pvolLun, offset, length } });
        return { reservation, timestampMs };
      } catch (error) {
        if (isIoError(error)) {
          // The journal stopped on a drive error: suspended, this write goes the bitmap way.
          await this.driveError(error, 'journal');
          return undefined;
        }
        if (!isTwinstoreError(error) || error.code !== 'JOURNAL_FULL') throw error;
        if (this.now() >= deadline) {
          await this.suspend('journal-full');
          return undefined;
        }
        await this.waitForSpace(Math.min(50, deadline - this.now()));
      }
    }
  }

  private async markActivity(pvol: Pvol, offset: number, length: number): Promise<void> {
    if (pvol.activity.regionsOf(offset, length).every((r) => pvol.activity.has(r))) return;
    if (pvol.activity.size >= activityRegionsMax) await this.retireActivity(pvol);
    await pvol.activity.mark(offset, length);
  }

  /** Makes all completed writes durable, then drops activity regions with no write in flight. */
  private async retireActivity(pvol: Pvol): Promise<void> {
    // A region still to be re-sent stays: it may hold blocks newer than the journal.
    const pending = this.resendState.pendingOf(pvol.pair.pvolLun);
    const retirable = (r: number): boolean => !pvol.activeWrites.has(r) && !(pending?.has(r) ?? false);
    const candidates = pvol.activity.values().filter(retirable);
    await this.engine.flush();
    await pvol.activity.remove(candidates.filter(retirable));
  }

  private recordWritten(seq: number): void {
    if (seq > this.writtenSeq) this.writtenSeq = seq;
    if (this.durableWaiters.size > 0) this.scheduleSync();
  }

  /**
   * FLUSH/FUA: every record written so far, and every earlier one, durable; P-VOLs synced too.
   * The two do not depend on each other (a record never waits for its P-VOL write), so the
   * flush round and the journal sync run side by side.
   */
  async flush(): Promise<void> {
    const target = this.writtenSeq;
    const synced = Promise.all([
      this.engine.flush().catch((error: unknown) => this.syncFailed(error, 'P-VOL sync')),
      this.journalDurable(target).catch((error: unknown) => this.syncFailed(error, 'journal sync')),
    ]);
    if (isPlanted('flush-before-durable')) {
      synced.catch(() => undefined);
      return;
    }
    await synced;
  }

  /**
   * Records through `seq` durable; or, once a drive error stopped the journal and the group is
   * suspended, every unapplied record folded into the bitmaps (durable there), so a FLUSH on the
   * bitmap way does not fail until the resync.
   */
  private journalDurable(seq: number): Promise<void> {
    if (this.journal.failed && !this.meta.pairs.some((p) => p.status === 'PAIR' || p.status === 'COPY')) return this.folding;
    return this.durableThrough(seq);
  }

  /**
   * A failed sync fails the FLUSH and suspends the group. After a failed P-VOL sync the drive may
   * have dropped any write since the last good flush: those lie in the activity log's regions.
   */
  private async syncFailed(error: unknown, what: 'P-VOL sync' | 'journal sync'): Promise<never> {
    if (isIoError(error)) await this.noteSyncFailure(error, what, what === 'P-VOL sync');
    throw error;
  }

  /**
   * A sync of the engine failed (a drive or the metadata; sticky-sync.ts): every later FLUSH fails
   * until a restart, so the group suspends now, the regions written since the last good flush in
   * the bitmaps (a drive may have dropped them), and does not wait for a FLUSH to find out.
   */
  engineSyncFailed(error: Error, what: string): Promise<void> {
    return this.noteSyncFailure(error, what, true);
  }

  private async noteSyncFailure(error: Error, what: string, activeRegionsLost: boolean): Promise<void> {
    if (activeRegionsLost) for (const pvol of this.pvols.values()) await this.markBitmap(pvol, regionRanges(pvol.activity, pvol.activity.values()));
    await this.driveError(error, what);
  }

  /**
   * For the receiver only (host FLUSH/FUA sync at once): one journal sync per
   * `senderSyncIntervalMs` at most. Every sync is an fdatasync of the drives, which
   * also forces out the P-VOL writes sharing them; batching keeps ingest near page-cache
   * speed while the lag stays a few milliseconds.
   */
  private scheduleSync(): void {
    if (this.syncing || this.syncTimer) return;
    const wait = Math.max(0, this.lastSyncMs + senderSyncIntervalMs - this.now());
    this.syncTimer = setTimeout(() => {
      this.syncTimer = undefined;
      this.lastSyncMs = this.now();
      void this.syncJournal().catch((error: unknown) => this.log.error({ err: (error as Error).message }, 'journal sync failed'));
    }, wait);
  }

  private syncJournal(): Promise<void> {
    if (this.syncing) return this.syncing;
    const round = this.journal.sync().finally(() => {
      this.syncing = undefined;
      for (const wake of [...this.durableWaiters]) wake();
      if (this.durableWaiters.size > 0 && this.journal.durableSeq <= this.writtenSeq && !this.journal.failed) this.scheduleSync();
    });
    round.catch((error: unknown) => {
      if (isIoError(error)) void this.driveError(error, 'journal sync').catch((e: unknown) => this.log.error({ err: (e as Error).message }, 'suspend on a drive error failed'));
    });
    this.syncing = round;
    return round;
  }

  private waitForSpace(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, Math.max(1, ms)));
  }

  // ---- suspension -----------------------------------------------------------

  /** PSUE for the whole group: every unapplied record goes into the bitmaps; host writes go on, tracked. */
  async suspend(reason: string): Promise<void> {
    if (this.meta.pairs.every((p) => p.status === 'PSUE' || p.status === 'PSUS')) return;
    this.log.warn({ reason }, 'suspending journal group');
    for (const pair of this.meta.pairs) {
      pair.status = 'PSUE';
      pair.statusReason = reason;
    }
    await this.persistMeta(this.meta);
    await this.resendState.foldPending();
    this.folding = this.foldUnapplied();
    await this.folding;
    this.emit('changed');
  }

  /**
   * Every record the receiver has not applied goes into the region bitmaps, read back
   * from the journal itself (which keeps them until the receiver's appliedSeq), so a
   * later resync copies those regions.
   */
  private async foldUnapplied(fromSeq = this.receiverApplied): Promise<void> {
    try {
      await this.foldFromJournal(fromSeq);
    } catch (error) {
      if (!isIoError(error)) throw error;
      // The journal cannot be read back (a drive error): the unapplied queue names the same regions.
      this.log.warn({ err: error.message }, 'journal unreadable; folding the unapplied records from memory');
      const folded = new RangesByLun();
      for (const { region } of this.unapplied.from(fromSeq)) if (region) folded.add(region.lun, region.offset, region.length);
      await this.markFolded(folded);
    }
  }

  private async foldFromJournal(fromSeq: number): Promise<void> {
    const folded = new RangesByLun();
    await this.journal.sync();
    const seq = await scanJournal({
      journal: this.journal,
      fromSeq: Math.max(fromSeq, this.journal.tailSeq),
      batchBytesMax: readBatchBytesMax,
      // The receiver applied them meanwhile (the journal frees only what it applied): nothing to fold there.
      skipReleased: true,
      onRecord: (record) => {
        if (record.kind !== 'marker') folded.add(record.lun, record.offset, record.length);
      },
      onDamaged: (error) => {
        // A damaged header names no region; the record as it was queued does (sim seed 226: a write
        // whose record header a bit flip hit was never re-sent, and its blocks differed at lag 0).
        const queued = error.region === undefined ? this.unapplied.from(error.seq).find((r) => r.seq === error.seq) : undefined;
        const region = error.region ?? queued?.region;
        if (region) folded.add(region.lun, region.offset, region.length);
        else if (queued === undefined) {
          this.log.error({ seq: error.seq }, 'a damaged journal record names no region: every region goes into the bitmaps');
          for (const [lun, pvol] of this.pvols) folded.add(lun, 0, pvol.volume.sizeBytes);
        }
      },
    });
    // Records reserved but not yet durable (host writes in flight as the group suspended) lie past
    // the scan; the queue names their regions. Left out, they would be in no bitmap, and the resync's
    // skipTo passes over their records: the S-VOL would never get those blocks.
    let inFlight = 0;
    for (const { region } of this.unapplied.from(seq)) {
      if (!region) continue;
      folded.add(region.lun, region.offset, region.length);
      inFlight += 1;
    }
    await this.markFolded(folded);
    this.log.info({ records: seq - fromSeq, inFlight, ranges: folded.count }, 'unapplied records folded into the bitmaps');
  }

  /** The folded ranges of each P-VOL into its bitmap (a LUN no longer in the group names nothing). */
  private async markFolded(folded: RangesByLun): Promise<void> {
    for (const [lun, ranges] of folded.entries()) {
      const pvol = this.pvols.get(lun);
      if (pvol) await this.markBitmap(pvol, ranges);
    }
  }

  /** After a restart: the records still kept (not applied by the receiver) give lag and folding their start. */
  async loadUnapplied(): Promise<void> {
    this.unapplied.clear();
    await scanJournal({
      journal: this.journal,
      fromSeq: this.journal.tailSeq,
      batchBytesMax: readBatchBytesMax,
      onRecord: (r) => {
        const region = r.kind === 'marker' ? undefined : { lun: r.lun, offset: r.offset, length: r.length };
        this.unapplied.push({ seq: r.seq, timestampMs: r.timestampMs, bytes: 4096 + Math.ceil((r.data?.length ?? 0) / 4096) * 4096, region });
      },
      // A damaged record (its header intact, its data not) is kept: sending it suspends the group.
      onDamaged: (error) => {
        const region = error.region ? { lun: error.region.lun, offset: error.region.offset, length: error.region.length } : undefined;
        this.unapplied.push({ seq: error.seq, timestampMs: this.now(), bytes: 4096 + Math.ceil((region?.length ?? 0) / 4096) * 4096, region });
      },
    });
    this.writtenSeq = this.journal.nextSeq - 1;
  }

  // ---- initial copy --------------------------------------------------------

  /** Queues base records for the whole P-VOL (or what is left of it after a restart). */
  startCopy(lun: number): void {
    if (this.copying.has(lun)) return;
    const pvol = this.pvolOf(lun);
    if (pvol.pair.status !== 'COPY' || pvol.pair.copyLastSeq !== null) return;
    this.copying.add(lun);
    void (pvol.pair.copyKind === 'resync' ? this.resyncVolume(pvol) : this.copyVolume(pvol))
      .catch((error: unknown) => {
        this.log.error({ err: (error as Error).message, lun }, 'initial copy failed');
        return this.suspend(`copy-error: ${(error as Error).message}`);
      })
      .finally(() => {
        this.copying.delete(lun);
        // A resync that began while this copy was ending (startCopy above returned) starts its own.
        if (!this.stopped) this.startCopy(lun);
      });
  }

  private async copyVolume(pvol: Pvol): Promise<void> {
    const size = pvol.volume.sizeBytes;
    let lastSeq = -1;
    let paced = this.now();
    while (pvol.pair.copyOffset < size && !this.stopped && pvol.pair.status === 'COPY') {
      const offset = pvol.pair.copyOffset;
      const chunks: Array<[number, number]> = [];
      for (let at = offset; at < size && chunks.length < copyChunksInFlightMax; at += copyChunkBytes) chunks.push([at, Math.min(copyChunkBytes, size - at)]);
      const seq = await this.copyChunks(pvol, chunks);
      // Suspended meanwhile: a record may have missed the fold, so [offset, end) stays owed (resync marks it).
      if (seq < 0 || pvol.pair.status !== 'COPY' || pvol.pair.copyKind === 'resync') return;
      lastSeq = seq;
      const length = chunks.reduce((n, [, l]) => n + l, 0);
      pvol.pair.copyOffset = offset + length;
      pvol.pair.copyDoneBytes = (pvol.pair.copyDoneBytes ?? 0) + length;
      if (pvol.pair.copyOffset % (64 * copyChunkBytes) === 0) {
        // The persisted offset says "copied below here": the base records below it must be durable first,
        // or a crash loses them while a restart resumes past them.
        await this.durableThrough(lastSeq);
        await this.persistMeta(this.meta);
      }
      if (this.meta.copyPaceBytesPerSecond > 0) {
        paced += (length / this.meta.copyPaceBytesPerSecond) * 1000;
        const wait = paced - this.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
    }
    if (pvol.pair.copyOffset >= size && pvol.pair.status === 'COPY') {
      pvol.pair.copyLastSeq = lastSeq;
      await this.durableThrough(lastSeq);
      await this.persistMeta(this.meta);
      this.scheduleSync();
      this.checkCopyDone();
    }
  }

  /**
   * A resync (pair resync): every region marked in the P-VOL's bitmap — host writes while split or
   * suspended, the peer's S-VOL writes, folded records — goes as base (or trim) records, adjacent
   * regions merged up to 1 MiB, under the range lock, in the group's sequence space. A region
   * leaves the bitmap only once its record is durable in the journal (from there the journal
   * carries it), so a restart goes on with what is left.
   */
  private async resyncVolume(pvol: Pvol): Promise<void> {
    const regionBytes = pvol.bitmap.regionBytes;
    const size = pvol.volume.sizeBytes;
    const regions = pvol.bitmap.values().sort((a, b) => a - b);
    let lastSeq = -1;
    let done: number[] = [];
    const commit = async (): Promise<void> => {
      if (lastSeq >= 0) await this.durableThrough(lastSeq);
      await pvol.bitmap.remove(done);
      done = [];
      await this.persistMeta(this.meta);
    };
    for (let i = 0; i < regions.length && !this.stopped && pvol.pair.status === 'COPY';) {
      const chunks: Array<[number, number]> = [];
      const first = i;
      while (i < regions.length && chunks.length < copyChunksInFlightMax) {
        let j = i;
        while (j + 1 < regions.length && regions[j + 1] === regions[j]! + 1 && (j + 2 - i) * regionBytes <= copyChunkBytes) j++;
        const offset = regions[i]! * regionBytes;
        chunks.push([offset, Math.min((j - i + 1) * regionBytes, size - offset)]);
        i = j + 1;
      }
      const seq = await this.copyChunks(pvol, chunks);
      if (seq < 0) return;
      lastSeq = seq;
      done.push(...regions.slice(first, i));
      pvol.pair.copyDoneBytes = (pvol.pair.copyDoneBytes ?? 0) + chunks.reduce((n, [, l]) => n + l, 0);
      if (done.length >= 1024) await commit();
    }
    if (this.stopped || pvol.pair.status !== 'COPY') return;
    await commit();
    // Nothing to copy still needs a point B must reach: everything journaled so far.
    pvol.pair.copyLastSeq = lastSeq >= 0 ? lastSeq : this.journal.nextSeq - 1;
    await this.persistMeta(this.meta);
    this.log.info({ pvol: pvol.pair.pvolName, bytes: pvol.pair.copyDoneBytes }, 'resync: every marked region queued');
    this.scheduleSync();
    this.checkCopyDone();
  }

  // ---- split and resync (docs/architecture.md §6) ----------------------------------------

  /**
   * pair split: from now on host writes are not journaled but marked in the bitmaps (PSUS);
   * the records before go on to the receiver, which stops at `splitSeq - 1`: the S-VOLs'
   * consistency point. Returns that splitSeq.
   */
  async split(): Promise<number> {
    const notPair = this.meta.pairs.find((p) => p.status !== 'PAIR');
    if (notPair) throw new TwinstoreError('PAIR_INVALID', `group ${this.meta.name}: ${notPair.pvolName} is ${notPair.status}; only PAIR can be split`, { field: 'group' });
    for (const pair of this.meta.pairs) {
      pair.status = 'PSUS';
      pair.statusReason = 'split';
    }
    this.meta.splitSeq = this.journal.nextSeq; // in the same step as the status: no record comes after it
    await this.persistMeta(this.meta);
    this.emit('changed');
    this.log.info({ splitSeq: this.meta.splitSeq }, 'pair split');
    return this.meta.splitSeq;
  }

  /** Resolves true once the receiver has applied every record before `seq`, false after `timeoutMs`. */
  async waitApplied(seq: number, timeoutMs: number): Promise<boolean> {
    const deadline = this.now() + timeoutMs;
    while (this.receiverApplied < seq) {
      if (this.now() >= deadline || this.stopped) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
    return true;
  }

  /**
   * pair resync: the peer's dirty ranges join the bitmaps (durably), every pair goes COPY and
   * host writes are journaled again; then each marked region is copied (resyncVolume). The
   * caller has made the S-VOLs read-only again and holds the peer's ranges.
   */
  async resync(peerDirty: DirtyRanges[]): Promise<{ dirtyBytes: number; resyncFromSeq: number }> {
    const wrong = this.meta.pairs.find((p) => p.status !== 'PSUS' && p.status !== 'PSUE' && p.status !== 'SSWS');
    if (wrong) throw new TwinstoreError('PAIR_INVALID', `group ${this.meta.name}: ${wrong.pvolName} is ${wrong.status}; resync needs PSUS, PSUE or SSWS`, { field: 'group' });
    const wasSuspended = this.meta.pairs.every((p) => p.status === 'PSUE');
    // A fold that failed (sim seed 51: every later resync failed on its stale rejection) is done again.
    await this.folding.catch(async (error: unknown) => {
      this.log.warn({ err: (error as Error).message }, 'the suspension\'s fold of the unapplied records failed; folding them again');
      this.folding = this.foldUnapplied();
      await this.folding;
    });
    if (this.journal.failed) await this.reopenJournal();
    for (const entry of peerDirty) {
      const pvol = this.pvols.get(entry.lun);
      if (!pvol) continue;
      // The peer's word: ranges outside the volume name nothing here (protocol.ts left out those that are not whole numbers).
      await this.markBitmap(pvol, entry.ranges.filter(([offset, length]) => length > 0 && offset < pvol.volume.sizeBytes));
    }
    for (const pvol of this.pvols.values()) await markCopyRemainder(pvol.pair, pvol.volume.sizeBytes, pvol.bitmap);
    for (const pair of this.meta.pairs) {
      pair.status = 'COPY';
      pair.statusReason = null;
      pair.copyKind = 'resync';
      pair.copyLastSeq = null;
      pair.copyDoneBytes = 0;
    }
    this.meta.splitSeq = null;
    this.meta.writesRefused = null;
    // The silence that suspended (or fenced) the group is not this replication's: the receiver gets
    // a whole suspendAfterMs (fenceAfterMs) from now to be heard, or the next watch tick would
    // suspend a resync whose link came back a moment before its first pull.
    this.lastHeardMs = Math.max(this.lastHeardMs, this.now());
    this.meta.trackedWrites = false;
    this.meta.reclaiming = false;
    this.trackedWriteCount = 0;
    this.meta.divergence = null;
    if (this.receiverStored > this.journal.nextSeq) await this.skipPastReceiver();
    const resyncFromSeq = this.journal.nextSeq;
    this.resyncFromSeq = resyncFromSeq;
    // After a suspension every record the receiver had not applied is in the bitmaps (folded then;
    // host writes since went the bitmap way): it skips them. After a split they still go on.
    if (wasSuspended) {
      this.meta.skipTo = resyncFromSeq;
      this.servedTo = Math.max(this.servedTo, resyncFromSeq);
    }
    // Writes that chose the bitmap way before the switch mark it before they write: wait for them.
    if (this.bitmapWrites > 0) await new Promise<void>((resolve) => this.bitmapDrained.push(resolve));
    let dirtyBytes = 0;
    for (const pvol of this.pvols.values()) {
      pvol.pair.copyTotalBytes = Math.min(pvol.bitmap.size * pvol.bitmap.regionBytes, pvol.volume.sizeBytes);
      dirtyBytes += pvol.pair.copyTotalBytes;
    }
    await this.persistMeta(this.meta);
    this.emit('changed');
    this.log.info({ dirtyBytes }, 'resync started');
    for (const pvol of this.pvols.values()) this.startCopy(pvol.pair.pvolLun);
    return { dirtyBytes, resyncFromSeq };
  }

  /**
   * Before a resync, when the receiver holds records past this journal's end (receiverAhead): the
   * journal starts a new instance at the receiver's next seq, so no seq it holds is given to
   * another write. Every record it had not applied went into the bitmaps at the suspension.
   */
  private async skipPastReceiver(): Promise<void> {
    const from = this.journal.nextSeq;
    const to = this.receiverStored;
    this.log.warn({ from, to }, 'the receiver holds records past this journal: the journal goes on from its next seq');
    this.meta.skipTo = to;
    await this.journal.setRole('master', this.meta.epoch, { keepRecords: false, firstSeq: to });
    // The receiver still applies what it stored: those records stay in the lag until it has.
    for (let seq = Math.max(from, this.receiverApplied); seq < to; seq += 1) this.unapplied.push({ seq, timestampMs: this.now(), bytes: 4096, region: undefined });
    this.writtenSeq = to - 1;
    this.servedTo = to;
  }

  // ---- planned swap and fencing (docs/architecture.md §6) ------------------------------------

  /**
   * The first step of a planned swap, on the old primary: the group shows SWAP (persisted, so
   * a restart keeps refusing writes), new host writes wait at a gate, writes in flight finish,
   * and every record is made durable. Returns the seq the receiver must apply up to.
   */
  async freeze(freezeMsMax: number): Promise<number> {
    this.drainUntilMs = 0;
    if (!this.gate) {
      let open = (): void => undefined;
      const promise = new Promise<void>((resolve) => { open = resolve; });
      this.gate = { promise, open, holdMsMax: freezeMsMax };
    }
    const bad = this.meta.pairs.find((p) => p.status !== 'PAIR' && p.status !== 'SWAP');
    if (bad) {
      this.thawGate();
      throw new TwinstoreError('PAIR_INVALID', `group ${this.meta.name}: ${bad.pvolName} is ${bad.status}; a planned swap needs PAIR`, { field: 'group' });
    }
    if (this.resendState.resending) {
      // The unit's end marker would fall past the end seq: the receiver could never apply up to it.
      this.thawGate();
      throw new TwinstoreError('PAIR_INVALID', `group ${this.meta.name} is still re-sending its active regions after an unclean stop; retry the swap once it is done`, { field: 'group' });
    }
    for (const pair of this.meta.pairs) {
      pair.status = 'SWAP';
      pair.statusReason = 'swap: frozen';
    }
    await this.persistMeta(this.meta);
    if (this.hostWritesInFlight > 0) await new Promise<void>((resolve) => this.writesDrained.push(resolve));
    // A write in flight may have suspended the group (journal full, drive error) and gone to the
    // bitmap: the end seq would not cover it. The swap is refused; a resync copies those regions.
    const left = this.meta.pairs.find((p) => p.status !== 'SWAP');
    if (left) {
      this.thawGate();
      throw new TwinstoreError('PAIR_INVALID', `group ${this.meta.name}: ${left.pvolName} became ${left.status} during the freeze; the swap is refused`, { field: 'group' });
    }
    await this.flush();
    this.emit('changed');
    return this.journal.nextSeq;
  }

  /** Step 1 of a planned swap (swap.drain): shown as SWAP/draining until the freeze or `drainMsMax`; writes go on. */
  startDrain(drainMsMax: number): number {
    const bad = this.meta.pairs.find((p) => p.status !== 'PAIR');
    if (bad) throw new TwinstoreError('PAIR_INVALID', `group ${this.meta.name}: ${bad.pvolName} is ${bad.status}; a planned swap needs PAIR`, { field: 'group' });
    this.drainUntilMs = this.now() + drainMsMax;
    this.emit('changed');
    return this.unapplied.bytes;
  }

  /** The drain: waits while host writes flow until the receiver is at most `lagBytesMax` behind. */
  async drainTo(lagBytesMax: number, drainMsMax: number): Promise<void> {
    const deadline = this.now() + drainMsMax;
    this.drainUntilMs = Math.max(this.drainUntilMs, deadline);
    while (this.unapplied.bytes > lagBytesMax) {
      // An answer, not a silence: the receiver must abort the swap, not take over without this array.
      const left = this.stopped ? 'stopped' : this.meta.pairs.find((p) => p.status !== 'PAIR' && p.status !== 'SWAP')?.status;
      if (left !== undefined || this.now() >= deadline) this.drainUntilMs = 0;
      if (left !== undefined) throw new TwinstoreError('PAIR_INVALID', `swap of ${this.meta.name} aborted: the group is ${left} here, a planned swap needs PAIR`, { field: 'group' });
      if (this.now() >= deadline) throw new TwinstoreError('SWAP_DRAIN_TIMEOUT', `swap of ${this.meta.name} aborted: the lag is still ${this.unapplied.bytes} bytes (swap.lagBytesMax ${lagBytesMax}) after ${drainMsMax} ms of drain (swap.drainMsMax); nothing changed`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Frozen for a planned swap (SWAP persisted): host writes are held, then refused. */
  get frozen(): boolean {
    return this.meta.pairs.some((p) => p.status === 'SWAP');
  }

  /** An aborted swap: PAIR again and the held host writes go on. */
  async thaw(): Promise<void> {
    this.drainUntilMs = 0;
    let changed = false;
    for (const pair of this.meta.pairs) {
      if (pair.status !== 'SWAP') continue;
      pair.status = 'PAIR';
      pair.statusReason = null;
      changed = true;
    }
    if (changed) await this.persistMeta(this.meta);
    this.thawGate();
    this.emit('changed');
  }

  private thawGate(): void {
    const gate = this.gate;
    this.gate = undefined;
    gate?.open();
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

  private fencing: Promise<void> | undefined;

  private async fenceNow(newer: string, divergenceSeq: number): Promise<void> {
    this.log.warn({ newer, divergenceSeq }, 'the peer holds a newer epoch: fencing this group');
    // The fence must hold whatever the drives do: a journal stopped by a drive error is opened again
    // (the error may be over; sim seed 246 never fenced, so resync --swap failed forever), and one
    // that still cannot be read counts the writes queued in memory.
    if (this.journal.failed) await this.reopenJournal().catch((error: unknown) => this.log.warn({ err: (error as Error).message }, 'fencing: the journal cannot be opened again yet'));
    let divergent: number;
    try {
      divergent = await this.divergentWrites(divergenceSeq);
    } catch (error) {
      if (!isIoError(error)) throw error;
      divergent = this.unapplied.from(divergenceSeq).length + (this.meta.trackedWrites === true ? Math.max(1, this.trackedWriteCount) : 0);
    }
    for (const pair of this.meta.pairs) {
      pair.status = 'FENCED';
      pair.statusReason = `newer epoch ${newer}` + (divergent > 0 ? `; ${divergent} host writes here past seq ${divergenceSeq - 1} (diverged)` : '');
    }
    this.meta.divergence = { seq: divergenceSeq, writes: divergent };
    // A reclaim under way here (resync --discard of the peer) is overtaken by the newer epoch:
    // this side is fenced now, and a resync --discard starts it afresh (sim seed 163 ran it
    // forever against the stale flag).
    this.meta.reclaiming = false;
    await this.persistMeta(this.meta);
    // Our records from the divergence point on are writes the peer never applied; the active
    // regions may hold writes whose records were lost (an unclean stop, a re-send cut short).
    await this.foldUnapplied(divergenceSeq);
    for (const pvol of this.pvols.values()) await this.markBitmap(pvol, regionRanges(pvol.activity, pvol.activity.values()));
    this.emit('changed');
  }

  /**
   * Host writes here that the peer never got, past the divergence point `seq`: those journaled
   * from `seq` on, plus those taken the bitmap way since the last resync (suspended, split, SSWS).
   */
  async divergentWrites(seq: number): Promise<number> {
    const tracked = this.meta.trackedWrites === true ? Math.max(1, this.trackedWriteCount) : 0;
    return (await this.hostRecordsFrom(seq)) + tracked;
  }

  /**
   * Host writes journaled here from `seq` on: after a takeover, the writes this side made that the
   * new primary never saw. Write and zero records are always host writes; base records never are
   * (copies, re-sends). A trim record is a host TRIM or a copied hole: inside a re-send unit it is
   * taken for the latter (a host TRIM there is not counted; it un-writes, it loses no data).
   */
  async hostRecordsFrom(seq: number): Promise<number> {
    let count = 0;
    let inUnit = false;
    await scanJournal({
      journal: this.journal,
      fromSeq: Math.max(seq, this.journal.tailSeq),
      batchBytesMax: readBatchBytesMax,
      onRecord: (r) => {
        if (isUnitBegin(r)) inUnit = true;
        else if (isUnitEnd(r)) inUnit = false;
        else if (r.kind === 'write' || r.kind === 'zero' || (r.kind === 'trim' && !inUnit)) count += 1;
      },
      onDamaged: () => {
        count += 1; // unreadable: count it as a write, to be safe
      },
    });
    return count;
  }

  /** Every bitmap region of every pair, as byte ranges keyed by P-VOL name (for a reverse resync). */
  dirtyRanges(): Array<{ pvolName: string; ranges: Array<[number, number]> }> {
    return [...this.pvols.values()].map((pvol) => ({
      pvolName: pvol.pair.pvolName,
      ranges: pvol.bitmap.values().sort((a, b) => a - b).map((r): [number, number] => [r * pvol.bitmap.regionBytes, pvol.bitmap.regionBytes]),
    }));
  }

  /**
   * PSUE link-down: with the receiver silent for `suspendAfterMs` (no journal.read heard), the
   * group suspends, so the journal stops filling and host writes go on, tracked in the bitmaps.
   */
  watchLink(suspendAfterMs: number): void {
    clearInterval(this.linkWatch);
    this.lastHeardMs = Math.max(this.lastHeardMs, this.now());
    const fenceAfterMs = this.meta.fence === 'data' ? this.meta.fenceAfterMs ?? 30_000 : Infinity;
    this.linkWatch = setInterval(() => {
      const silentMs = this.now() - this.lastHeardMs;
      if (this.stopped || silentMs < Math.min(suspendAfterMs, fenceAfterMs)) return;
      const replicating = this.meta.pairs.some((p) => p.status === 'PAIR' || p.status === 'COPY');
      if (silentMs >= fenceAfterMs && !this.meta.writesRefused && (replicating || this.meta.pairs.some((p) => p.status === 'PSUE'))) {
        void this.refuseWrites(`link down ${silentMs} ms (fence data)`).catch((error: unknown) => this.log.error({ err: (error as Error).message }, 'fence on link down failed'));
      } else if (replicating && silentMs >= suspendAfterMs) {
        void this.suspend('link-down').catch((error: unknown) => this.log.error({ err: (error as Error).message }, 'suspend on link down failed'));
      }
    }, Math.min(1000, Math.max(50, Math.min(suspendAfterMs, fenceAfterMs) / 4)));
    this.linkWatch.unref();
  }

  /**
   * Fence `data` (docs/architecture.md §6): the link has been down fenceAfterMs, so the P-VOLs refuse host
   * writes from now on (none is accepted that the other site cannot get) until a resync; the
   * group suspends (PSUE) so the unapplied records are folded into the bitmaps.
   */
  private async refuseWrites(reason: string): Promise<void> {
    this.meta.writesRefused = reason;
    this.log.warn({ reason }, 'fence data: host writes refused');
    if (this.meta.pairs.some((p) => p.status === 'PAIR' || p.status === 'COPY')) await this.suspend(`link-down; ${reason}: host writes refused`);
    else {
      for (const pair of this.meta.pairs) if (pair.status === 'PSUE') pair.statusReason = `${pair.statusReason ?? 'link-down'}; ${reason}: host writes refused`;
      await this.persistMeta(this.meta);
      this.emit('changed');
    }
  }

  /** Waits until every record up to `seq` is durable in the journal. */
  private async durableThrough(seq: number): Promise<void> {
    while (this.journal.durableSeq <= seq && !this.stopped) {
      await this.syncJournal();
      if (this.journal.durableSeq <= seq) await new Promise((r) => setTimeout(r, 1));
    }
  }

  /**
   * Copies chunks side by side (a read of one overlaps the journal write of another; each takes
   * its own range lock and sequence number). The highest seq, or -1 when one gave up.
   */
  private async copyChunks(pvol: Pvol, chunks: Array<[number, number]>): Promise<number> {
    const keepGoing = (): boolean => pvol.pair.status === 'COPY';
    const seqs = await Promise.all(chunks.map(([offset, length]) => this.copyChunk(pvol, offset, length, keepGoing)));
    return seqs.some((seq) => seq < 0) ? -1 : Math.max(-1, ...seqs);
  }

  /**
   * One chunk under the range lock: a base record with its data, or a trim record for a hole.
   * Waits for journal space while `keepGoing()` holds; -1 when it gave up. A copy leaves the
   * journal's last copyReserveFraction to host writes; a re-send unit's chunks (`leaveReserve`
   * false) do not: the receiver frees nothing of the unit before its end, so a unit waiting below
   * the reserve while host writes inside it filled the journal past it would wait for ever.
   */
  private async copyChunk(pvol: Pvol, offset: number, length: number, keepGoing: () => boolean, leaveReserve = true): Promise<number> {
    const unlock = await pvol.locks.acquire(offset, length);
    try {
      const hole = pvol.volume.blockStatus(offset, length, 2).every((e) => e.hole);
      const kind: RecordKind = hole ? 'trim' : 'base';
      const data = hole ? undefined : Buffer.alloc(length);
      if (data) await pvol.volume.read(offset, data);
      const meta = { kind, epoch: this.meta.epoch, timestampMs: this.now(), lun: pvol.pair.pvolLun, offset, length };
      // Base records leave room for host writes: they wait below the reserve.
      const hasRoom = (): boolean => !leaveReserve || this.journal.usedBytes + length <= this.journal.capacityBytes * (1 - copyReserveFraction);
      return await this.appendRecord(meta, data, keepGoing, hasRoom);
    } finally {
      unlock();
    }
  }

  private checkCopyDone(): void {
    let changed = false;
    for (const pair of this.meta.pairs) {
      if (pair.status === 'COPY' && pair.copyLastSeq !== null && this.receiverApplied > pair.copyLastSeq) {
        pair.status = 'PAIR';
        pair.statusReason = null;
        changed = true;
        this.log.info({ pvol: pair.pvolName }, 'initial copy done: PAIR');
      }
    }
    if (changed) {
      void this.persistMeta(this.meta).then(() => this.emit('changed'));
    }
  }

  // ---- serving the receiver ------------------------------------------------

  /** The receiver's pull (docs/architecture.md §5): durable records from `fromSeq`, and its cursors. */
  async readJournal(request: JournalReadRequest): Promise<JournalRecord[]> {
    this.lastHeardMs = this.now();
    // Before the cursors: a receiver that lost its journal no longer knows them.
    if (request.journalLost === true) return this.receiverJournalLost();
    if (request.storedSeq > this.servedTo) return this.receiverAhead(request.storedSeq);
    this.noteReceiver(request.storedSeq, request.appliedSeq);
    if (request.damaged !== undefined) await this.receiverDamaged(request.damaged);
    if (request.driveError !== undefined) await this.receiverDriveError(request.driveError);
    if (this.journal.failed) {
      // Nothing can be read until a resync opens the journal again; the answer still carries the statuses.
      await new Promise((r) => setTimeout(r, longPollMs));
      return [];
    }
    if (request.fromSeq < (this.meta.skipTo ?? 0)) {
      // The receiver is to skip to meta.skipTo (the answer says so): nothing below is served.
      return [];
    }
    if (request.fromSeq < this.journal.tailSeq) {
      throw new TwinstoreError('JOURNAL_RECORD_GONE', `group ${this.meta.name}: records before ${this.journal.tailSeq} are gone; receiver asked from ${request.fromSeq}`);
    }
    if (this.journal.durableSeq <= request.fromSeq) {
      if (this.writtenSeq >= request.fromSeq) this.scheduleSync();
      await this.waitDurable(request.fromSeq, longPollMs);
    }
    if (this.journal.durableSeq <= request.fromSeq) return [];
    try {
      const records = await this.journal.readFrom(request.fromSeq, Math.min(request.maxBytes, readBatchBytesMax));
      const last = records[records.length - 1];
      if (last !== undefined && last.seq >= this.servedTo) this.servedTo = last.seq + 1;
      return records;
    } catch (error) {
      if (error instanceof JournalRecordCorruptError) await this.suspendForDamage(error);
      if (isIoError(error)) await this.driveError(error, 'journal read');
      throw error;
    }
  }

  /**
   * The receiver's restore journal was started again after its header was lost: what it applied
   * is unknown, so every region of every P-VOL goes into the bitmaps (durably, before the answer
   * says so), a replicating group suspends, and the receiver's journal goes on at this journal's
   * next seq (skipTo), passing over every record before it. The next resync copies everything.
   */
  private async receiverJournalLost(): Promise<JournalRecord[]> {
    this.log.error({ peer: this.meta.peer }, 'the receiver lost its restore journal: every region goes into the bitmaps for a full copy');
    for (const pvol of this.pvols.values()) await this.markBitmap(pvol, [[0, pvol.volume.sizeBytes]]);
    if (this.meta.pairs.some((p) => p.status === 'PAIR' || p.status === 'COPY')) await this.suspend(`journal-damaged on ${this.meta.peer}: its restore journal was lost; the resync copies every region`);
    this.meta.skipTo = Math.max(this.meta.skipTo ?? 0, this.journal.nextSeq);
    this.servedTo = Math.max(this.servedTo, this.meta.skipTo);
    await this.persistMeta(this.meta);
    return [];
  }

  /**
   * The receiver stored records past any this journal holds or served since it was opened: a
   * crash cut them here (a synced record damaged with nothing after it to prove it synced, or a
   * drive that lost synced writes). Serving on would give those seqs to new writes, so a seq would
   * mean two writes: the group suspends instead, and its resync starts past the receiver's records.
   */
  private async receiverAhead(storedSeq: number): Promise<never> {
    this.receiverStored = Math.max(this.receiverStored, storedSeq);
    const message = `the receiver stored records up to seq ${storedSeq - 1}, but this journal holds and served only up to ${this.servedTo - 1}`;
    // Which regions those records wrote is known to no journal here (and the receiver may have
    // applied and freed some): every region goes into the bitmaps, durably, so the resync copies
    // everything and the S-VOLs end equal to the P-VOLs whatever those records held.
    for (const pvol of this.pvols.values()) await this.markBitmap(pvol, [[0, pvol.volume.sizeBytes]]);
    if (this.meta.pairs.some((p) => p.status === 'PAIR' || p.status === 'COPY')) {
      this.log.error({ storedSeq, servedTo: this.servedTo }, `${message}; suspending`);
      await this.suspend(`receiver-ahead: seq ${storedSeq - 1} on ${this.meta.peer}`);
    }
    throw new TwinstoreError('JOURNAL_CORRUPT', `group ${this.meta.name}: ${message}; pair resync starts past them`);
  }

  /**
   * The receiver holds a record it stored that now fails its checksum (its disk damaged it):
   * it cannot apply past it. The group suspends (every unapplied record, this one included,
   * goes into the bitmaps) and a resync re-copies the regions.
   */
  private async receiverDamaged(damaged: DamagedRecord): Promise<void> {
    const pvol = this.pvols.get(damaged.lun);
    if (pvol && damaged.length > 0) await this.markBitmap(pvol, [[damaged.offset, damaged.length]]);
    if (this.meta.pairs.some((p) => p.status === 'PAIR' || p.status === 'COPY')) {
      this.log.error({ seq: damaged.seq, peer: this.meta.peer }, 'the receiver holds a damaged record; suspending');
      await this.suspend(`bad-record: seq ${damaged.seq} on ${this.meta.peer}`);
    }
  }

  /**
   * The receiver's drive failed storing or applying records: its restore stopped before the
   * record at its applied cursor and retries. The group suspends (every unapplied record goes
   * into the bitmaps) and a resync re-copies. A report sent before the receiver heard of the
   * latest resync is stale.
   */
  private async receiverDriveError(report: ReceiverDriveError): Promise<void> {
    if (report.resyncFromSeq < this.resyncFromSeq) return;
    if (!this.meta.pairs.some((p) => p.status === 'PAIR' || p.status === 'COPY')) return;
    this.log.error({ seq: report.seq, peer: this.meta.peer, err: report.message }, 'the receiver hit a drive error; suspending');
    await this.suspend(`drive-error on ${this.meta.peer}: ${report.message}`);
  }

  /**
   * After a drive error stopped the journal (fail-stop), a resync opens it again from the device:
   * recovery keeps the intact records, which the receiver may still need; every record it has not
   * applied went into the bitmaps at the suspension. Fails while the drive still fails.
   */
  private async reopenJournal(): Promise<void> {
    // A resync and a fence may both find the journal stopped: one reopen, the other waits for it.
    if (this.reopening === undefined) this.reopening = this.reopenJournalNow().finally(() => { this.reopening = undefined; });
    return this.reopening;
  }

  private reopening: Promise<void> | undefined;

  private async reopenJournalNow(): Promise<void> {
    const volume = this.engine.volumeById(this.meta.journalVolumeId);
    if (!volume) throw new TwinstoreError('VOLUME_NOT_FOUND', `journal of group ${this.meta.name} is missing`);
    const { journal, recovery } = await Journal.open(new VolumeJournalDevice(volume, this.engine));
    // Ending below what the receiver stored, the resync that called this skips past it (skipPastReceiver).
    this.journal = journal;
    this.servedTo = Math.max(this.servedTo, journal.nextSeq);
    journal.release(Math.min(this.receiverApplied, journal.durableSeq));
    await this.loadUnapplied();
    this.unapplied.dropBelow(this.receiverApplied);
    this.log.warn({ case: recovery.case, nextSeq: journal.nextSeq }, 'journal opened again after a drive error');
    await this.journalStartedAgain();
  }

  /** A record that fails its checksum is never sent: the group suspends and its region goes into the bitmap. */
  private async suspendForDamage(error: JournalRecordCorruptError): Promise<void> {
    this.log.error({ seq: error.seq, region: error.region }, 'journal record fails its checksum; suspending');
    const region = error.region;
    const pvol = region ? this.pvols.get(region.lun) : undefined;
    if (pvol && region) await this.markBitmap(pvol, [[region.offset, region.length]]);
    await this.suspend(`bad-record: seq ${error.seq}`);
  }

  private waitDurable(seq: number, timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        if (this.journal.durableSeq > seq || this.stopped) finish();
      };
      const finish = (): void => {
        clearTimeout(timer);
        this.durableWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(finish, timeoutMs);
      this.durableWaiters.add(done);
      if (this.writtenSeq >= seq) this.scheduleSync();
    });
  }

  private noteReceiver(storedSeq: number, appliedSeq: number): void {
    this.receiverStored = Math.max(this.receiverStored, storedSeq);
    if (appliedSeq > this.receiverApplied) {
      this.receiverApplied = appliedSeq;
      // A journal stopped by a drive error is released when a resync opens it again.
      if (!this.journal.failed) this.journal.release(isPlanted('free-at-stored') ? Math.max(appliedSeq, storedSeq) : appliedSeq);
      this.consistencyTimeMs = this.unapplied.dropBelow(appliedSeq) ?? this.consistencyTimeMs;
      this.checkCopyDone();
    }
  }

  // ---- display --------------------------------------------------------------

  display(peerConnected: boolean): PairDisplay[] {
    const lagRecords = Math.max(0, this.journal.nextSeq - this.receiverApplied);
    const lagBytes = this.unapplied.bytes;
    const oldest = this.unapplied.oldest;
    const lagSeconds = oldest ? Math.max(0, (this.now() - oldest.timestampMs) / 1000) : 0;
    const consistencySeq = this.receiverApplied - 1;
    const draining = this.drainUntilMs > this.now();
    return this.meta.pairs.map((pair) => ({
      group: this.meta.name,
      direction: `${this.engine.arrayId}->${this.meta.peer}`,
      epoch: formatEpoch(this.meta.epoch),
      pvol: `${this.engine.arrayId}:${pair.pvolName}`,
      svol: `${this.meta.peer}:${pair.svolName}`,
      status: draining && pair.status === 'PAIR' ? 'SWAP' : pair.status,
      statusReason: draining && pair.status === 'PAIR' ? 'swap: draining' : pair.statusReason ?? (peerConnected ? null : 'link-down'),
      copyPercent: pair.status !== 'COPY' ? 100
        : pair.copyKind === 'resync' ? Math.min(99, Math.floor((100 * (pair.copyDoneBytes ?? 0)) / Math.max(1, pair.copyTotalBytes ?? 0)))
          : Math.floor((100 * pair.copyOffset) / Math.max(1, pair.sizeBytes)),
      journalUsedPercent: Math.round((1000 * this.journal.usedBytes) / Math.max(1, this.journal.capacityBytes)) / 10,
      lagRecords,
      lagBytes,
      lagSeconds: Math.round(lagSeconds * 1000) / 1000,
      consistencySeq,
      consistencyTime: this.consistencyTimeMs === undefined ? null : new Date(this.consistencyTimeMs).toISOString(),
      restoring: this.receiverStored > this.receiverApplied,
      copyBytes: pair.copyDoneBytes ?? 0,
    }));
  }

  get receiverCursors(): { storedSeq: number; appliedSeq: number; lastHeardMs: number } {
    return { storedSeq: this.receiverStored, appliedSeq: this.receiverApplied, lastHeardMs: this.lastHeardMs };
  }

  private pvolOf(lun: number): Pvol {
    const pvol = this.pvols.get(lun);
    if (!pvol) throw new TwinstoreError('VOLUME_NOT_FOUND', `group ${this.meta.name} has no P-VOL with LUN ${lun}`);
    return pvol;
  }

  /** Clean stop: make everything durable, clear the activity logs (no unclean-stop resend needed). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.startHold?.release();
    this.thawGate();
    clearTimeout(this.syncTimer);
    clearInterval(this.linkWatch);
    for (const wake of [...this.durableWaiters]) wake();
    await this.engine.flush();
    // A journal stopped by a drive error keeps its activity logs: the next start redoes and re-sends.
    if (this.journal.failed) return;
    await this.journal.sync();
    await this.journal.persistHeader();
    // An unfinished re-send keeps the activity log, so the next start re-sends (and ends the unit) again.
    if (!this.resendState.anyPending) for (const pvol of this.pvols.values()) if (pvol.activeWrites.size === 0) await pvol.activity.clear();
    await this.journal.close();
  }

  /**
   * The journal lost synced records from `fromSeq` on (damage in the middle, JournalRecovery
   * lostFrom): which regions they wrote is unknown, so every region of every P-VOL goes into the
   * bitmaps, and a replicating group suspends (PSUE journal-damaged); its resync copies it all.
   */
  async journalLost(fromSeq: number, reason = `records from seq ${fromSeq} on were lost`): Promise<void> {
    this.log.error({ fromSeq, reason }, 'journal damaged: synced records cannot be read back; every region goes into the bitmaps');
    for (const pvol of this.pvols.values()) await this.markBitmap(pvol, [[0, pvol.volume.sizeBytes]]);
    // The lost records may have reached the receiver: their seqs are never given to other writes.
    // No seq past twice the journal's capacity in records was ever written (the persisted tail lags
    // the real one by less than a lap); the journal goes on past that, and the resync skips to it.
    const skipTo = Math.max(fromSeq + 2 * Math.ceil(this.journal.capacityBytes / 4096), this.journal.nextSeq);
    this.meta.skipTo = skipTo;
    await this.journal.setRole('master', this.meta.epoch, { keepRecords: false, firstSeq: skipTo });
    this.unapplied.clear();
    this.writtenSeq = skipTo - 1;
    this.servedTo = Math.max(this.servedTo, skipTo);
    // Nothing below is left to send: the receiver skips to it (its next pull is told).
    await this.persistMeta(this.meta);
    if (this.meta.pairs.some((p) => p.status === 'PAIR' || p.status === 'COPY')) await this.suspend(`journal-damaged: ${reason}`);
    await this.journal.acknowledgeStartedAgain();
  }

  /**
   * The journal was started again after its newest header was lost (Journal.open, headerLost): its
   * records are gone like those past a lostFrom, so every region is marked and the group suspends.
   * Called wherever a journal is opened; the journal keeps saying so until this has been done.
   */
  async journalStartedAgain(): Promise<boolean> {
    if (!this.journal.startedAgainPending) return false;
    this.log.error({ nextSeq: this.journal.nextSeq }, 'journal header lost: the journal started again, empty, past every seq on its ring');
    await this.journalLost(this.journal.nextSeq, 'its header was lost: the journal started again, empty, past every seq on its ring');
    return true;
  }

  /** After an unclean stop: the regions to re-send (master/restart.ts). */
  uncleanRegions(cut: ReadonlyArray<VolumeRange> = []): VolumeRange[] {
    return uncleanRegions(this.pvols.values(), cut);
  }

  /** After an unclean stop, before any host write: the journal's records re-applied to the P-VOLs (master/restart.ts). */
  redo(): Promise<number> {
    return redoJournal({ journal: this.journal, pvols: this.pvols, engine: this.engine });
  }

  /**
   * After an unclean stop: the regions re-sent as one atomic unit of base records (master/restart.ts).
   * Too large for the journal, its regions are in the bitmaps and the group suspends.
   */
  async resend(regions: VolumeRange[]): Promise<void> {
    const outcome = await this.resendState.resend(regions, this.resendJournal());
    if (outcome === 'too-large') await this.suspend('resend-too-large');
    if (outcome === 'sent') this.scheduleSync();
  }

  /** What a re-send appends through: this group's journal and sequence space. */
  private resendJournal(): ResendJournal {
    const going = (): boolean => this.meta.pairs.some((p) => p.status === 'COPY' || p.status === 'PAIR');
    const journaling = (lun: number): boolean => this.journaling(this.pvolOf(lun));
    return {
      capacityBytes: this.journal.capacityBytes,
      chunkBytes: copyChunkBytes,
      stopped: () => this.stopped,
      journaling,
      appendMarker: (code) => this.appendMarker(code, going),
      appendChunk: (lun, offset, length) => this.copyChunk(this.pvolOf(lun), offset, length, () => journaling(lun), false),
    };
  }

  /** Appends a marker record (units.ts), waiting for journal space while `keepGoing()`; its seq, or -1. */
  private appendMarker(code: number, keepGoing: () => boolean): Promise<number> {
    return this.appendRecord({ kind: 'marker', epoch: this.meta.epoch, timestampMs: this.now(), lun: 0, offset: code, length: 0 }, undefined, keepGoing);
  }

  /**
   * Appends a record that is not a host write (base, trim, marker): waits for journal space
   * (and for `hasRoom()`) while `keepGoing()`, never overflowing; its seq, or -1 when it gave up.
   */
  private async appendRecord(meta: Omit<RecordMeta, 'seq'>, data: Buffer | undefined, keepGoing: () => boolean, hasRoom: () => boolean = () => true): Promise<number> {
    for (;;) {
      if (hasRoom()) {
        try {
          const reservation = this.journal.reserve(meta, data?.length ?? 0);
          // Its region too (none for a marker): a fold from memory (the journal failed) must re-copy a base record's.
          const region = meta.kind === 'marker' ? undefined : { lun: meta.lun, offset: meta.offset, length: meta.length };
          this.unapplied.push({ seq: reservation.seq, timestampMs: meta.timestampMs, bytes: reservation.recordBytes, region });
          await this.journal.write(reservation, meta, data);
          this.recordWritten(reservation.seq);
          return reservation.seq;
        } catch (error) {
          if (!isTwinstoreError(error) || error.code !== 'JOURNAL_FULL') throw error;
        }
      }
      if (this.stopped || !keepGoing()) return -1;
      await this.waitForSpace(20);
    }
  }
}
