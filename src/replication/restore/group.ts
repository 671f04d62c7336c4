// The receiving side of a journal group (docs/architecture.md §5): what the
// group holds and decides. Records arrive through the puller (puller.ts) and
// are applied by the applier (applier.ts); both report here, and this decides:
// the statuses the master sends are adopted, a damaged stored record stops
// restore (or is passed over inside a resync), drive errors and lost journals
// are reported to the master with the next pull, a skip point or a full copy
// moves the journal on. It also owns the S-VOL side of split --rw and resync
// (the S-VOL bitmaps) and the receiver's takeover drain.

import { EventEmitter } from 'node:events';
import { TwinstoreError } from '../../errors.js';
import { Journal, type JournalDevice, type JournalRecord, type JournalRecordCorruptError } from '../../journal/index.js';
import type { StorageEngine, Volume } from '../../storage/index.js';
import type { Logger } from '../../util/log.js';
import { bitmapSetName, formatEpoch, type GroupMeta, type PairDisplay, type PairMeta } from '../model.js';
import type { DamagedRecord, DirtyRanges, JournalReadAnswer, PeerChannel, ReceiverDriveError } from '../protocol.js';
import { DurableRegionSet } from '../region-set.js';
import { recoveryHint } from '../recovery-hint.js';
import { Applier, sleep } from './applier.js';
import { Puller } from './puller.js';

export interface RestoreGroupOptions {
  meta: GroupMeta;
  journal: Journal;
  engine: StorageEngine;
  peer: PeerChannel;
  persist: (meta: GroupMeta) => Promise<void>;
  log: Logger;
  /** Region size of the S-VOL bitmaps (the group's, else the array default). */
  regionBytes: number;
  /** The device of the journal volume when it is opened again (the factory the simulator sets). */
  journalDevice: (volume: Volume) => JournalDevice;
}

export class RestoreGroup extends EventEmitter {
  readonly meta: GroupMeta;
  /** Replaced only when it is opened again after a drive error stopped it (reopenJournal). */
  journal: Journal;
  readonly engine: StorageEngine;
  readonly peer: PeerChannel;
  readonly log: Logger;
  private readonly persistMeta: (meta: GroupMeta) => Promise<void>;
  private readonly journalDevice: (volume: Volume) => JournalDevice;
  private readonly applier: Applier;
  private readonly puller: Puller;
  private lastApplied: { seq: number; timestampMs: number } | undefined;
  private masterNextSeq = 0;
  private readonly regionBytes: number;
  private readonly bitmaps = new Map<number, DurableRegionSet>();
  /** A stored record that fails its checksum: restore stops before it and the master hears of it. */
  private damaged: DamagedRecord | undefined;
  /** Drive I/O errors storing (pull) and applying records; cleared when that side works again. */
  private driveErrors: { store?: string; apply?: string } = {};
  /** Set by a failed sync of this array's engine; reported with every journal.read until a restart. */
  private engineSyncError: string | undefined;

  constructor(options: RestoreGroupOptions) {
    super();
    this.meta = options.meta;
    this.journal = options.journal;
    this.engine = options.engine;
    this.peer = options.peer;
    this.persistMeta = options.persist;
    this.journalDevice = options.journalDevice;
    this.log = options.log.child({ group: options.meta.name });
    this.regionBytes = options.meta.regionBytes ?? options.regionBytes;
    const group = this;
    this.applier = new Applier({
      get journal() { return group.journal; },
      engine: this.engine,
      log: this.log,
      svolOf: (lun) => this.svolOf(lun),
      damagedAtCursor: (error) => this.onDamaged(error),
      applyFailed: (step, error) => this.noteDriveError('apply', step, error),
      applied: (last) => this.onApplied(last),
    });
    this.puller = new Puller({
      get journal() { return group.journal; },
      peer: this.peer,
      log: this.log,
      groupName: this.meta.name,
      reports: () => this.reports(),
      answered: (answer) => this.answered(answer),
      fullCopyMarked: (skipTo) => this.fullCopyMarked(skipTo),
      skipTo: (seq) => this.skipTo(seq),
      reopenJournal: () => this.reopenJournal(),
      storeFailed: (error) => this.noteDriveError('store', 'restore journal', error),
      stored: () => {
        delete this.driveErrors.store;
        this.applier.wake();
      },
    });
  }

  /** The S-VOL bitmap of a pair: S-VOL writes while split --rw (docs/architecture.md §6). */
  private bitmapOf(lun: number): DurableRegionSet {
    let set = this.bitmaps.get(lun);
    if (!set) {
      set = new DurableRegionSet(this.engine, bitmapSetName(this.meta.name, lun), this.regionBytes);
      this.bitmaps.set(lun, set);
    }
    return set;
  }

  /** The pair whose S-VOL is `volumeId`, when it takes host writes (split --rw). */
  writablePair(volumeId: number): PairMeta | undefined {
    return this.meta.pairs.find((p) => p.localVolumeId === volumeId && p.svolWritable === true);
  }

  // The host write path of a writable S-VOL (split --rw): what VolumeExport calls.
  write(lun: number, offset: number, data: Buffer): Promise<void> {
    return this.svolWrite(lun, offset, data.length, (v) => v.write(offset, data));
  }

  writeZeroes(lun: number, offset: number, length: number, keepAllocated: boolean): Promise<void> {
    return this.svolWrite(lun, offset, length, (v) => v.writeZeroes(offset, length, keepAllocated));
  }

  trim(lun: number, offset: number, length: number): Promise<void> {
    return this.svolWrite(lun, offset, length, (v) => v.writeZeroes(offset, length, false));
  }

  flush(): Promise<void> {
    return this.engine.flush();
  }

  /** A host write on a writable S-VOL: its regions marked durably first, then the write. */
  async svolWrite(lun: number, offset: number, length: number, apply: (volume: Volume) => Promise<void>): Promise<void> {
    const pair = this.meta.pairs.find((p) => p.pvolLun === lun && p.svolWritable === true);
    if (!pair) throw new TwinstoreError('PAIR_INVALID', `the S-VOL of LUN ${lun} in group ${this.meta.name} is read-only`);
    await this.bitmapOf(lun).mark(offset, length);
    await apply(this.svolOf(lun));
  }

  /**
   * split --rw, on the S-VOL side: once every record before `splitSeq` is applied, the S-VOLs
   * take host writes (tracked). Returns the pairs made writable.
   */
  async makeWritable(splitSeq: number): Promise<PairMeta[]> {
    if (this.journal.appliedSeq < splitSeq) {
      throw new TwinstoreError('PAIR_INVALID', `group ${this.meta.name}: the S-VOLs are at seq ${this.journal.appliedSeq - 1}, not yet at the split point ${splitSeq - 1}`);
    }
    const changed = this.meta.pairs.filter((p) => p.svolWritable !== true);
    for (const pair of changed) {
      pair.svolWritable = true;
      this.bitmapOf(pair.pvolLun);
    }
    await this.persistMeta(this.meta);
    return changed;
  }

  /**
   * Resync, step 1 on the S-VOL side: the S-VOLs read-only again (returned, so their sessions
   * are closed), and the ranges their bitmaps hold. The bitmaps stay until resyncStarted().
   */
  async prepareResync(): Promise<{ closed: PairMeta[]; dirty: DirtyRanges[] }> {
    const closed = this.meta.pairs.filter((p) => p.svolWritable === true);
    for (const pair of closed) pair.svolWritable = false;
    if (closed.length > 0) await this.persistMeta(this.meta);
    const dirty = this.meta.pairs.map((pair) => ({
      lun: pair.pvolLun,
      ranges: this.bitmapOf(pair.pvolLun).values().sort((a, b) => a - b).map((r): [number, number] => [r * this.regionBytes, this.regionBytes]),
    }));
    return { closed, dirty };
  }

  /**
   * Resync, step 2: the master holds our ranges durably in its own bitmaps; ours can go. Its
   * resync copies from `resyncFromSeq` on every region not applied here, so a damaged record
   * below that seq may be skipped.
   */
  async resyncStarted(resyncFromSeq: number): Promise<void> {
    for (const pair of this.meta.pairs) await this.bitmapOf(pair.pvolLun).clear();
    // The copy's records may all have been applied before this message came (the master copies as
    // soon as the resync starts): a pair that shows PAIR already is past it.
    for (const pair of this.meta.pairs) if (pair.status !== 'PAIR') pair.svolInconsistent = true;
    this.meta.skipDamagedBefore = resyncFromSeq;
    await this.persistMeta(this.meta);
    // A drive error reported before this resync is covered by it; a new one is reported anew.
    this.driveErrors = {};
    this.applier.wake();
    if (this.damaged !== undefined && this.damaged.seq < resyncFromSeq) {
      this.damaged = undefined;
      this.applier.wake();
    }
  }

  /** Restore met a damaged record at the applied cursor: skip it (resync covers it) or stop and report. True: restore stops. */
  private async onDamaged(error: JournalRecordCorruptError): Promise<boolean> {
    if (error.seq < (this.meta.skipDamagedBefore ?? 0)) {
      this.log.warn({ seq: error.seq }, 'damaged restore record skipped: the resync in progress re-copies its region');
      this.journal.markApplied(error.seq + 1);
      this.journal.release(error.seq + 1);
      await this.applier.persistApplied();
      return false;
    }
    if (this.damaged?.seq !== error.seq) this.log.error({ seq: error.seq, region: error.region }, 'a stored record fails its checksum; restore stops before it and the master is told');
    this.damaged = { seq: error.seq, lun: error.region?.lun ?? -1, offset: error.region?.offset ?? 0, length: error.region?.length ?? 0 };
    return true;
  }

  /** A batch committed: the S-VOLs hold every record up to `last`. */
  private onApplied(last: JournalRecord): void {
    delete this.driveErrors.apply;
    this.lastApplied = { seq: last.seq, timestampMs: last.timestampMs };
    this.emit('applied', last.seq);
  }

  /**
   * A drive I/O error (docs/architecture.md §6): restore stops before the record at the applied cursor (the
   * cursor moves only after a whole batch is applied and synced) and retries; the master hears of
   * it with the next journal.read and suspends the group.
   */
  private noteDriveError(side: 'store' | 'apply', what: string, error: Error): void {
    const message = `${what}: ${error.message}`;
    if (this.driveErrors[side] !== message) this.log.error({ seq: this.journal.appliedSeq, err: message }, 'drive I/O error: restore stops here, retries, and the master is told');
    this.driveErrors[side] = message;
  }

  /**
   * A sync of the engine failed (sticky-sync.ts): no apply can be made durable until a restart, so
   * the master hears of it with the next journal.read now, not after the next record.
   */
  engineSyncFailed(error: Error, what: string): void {
    this.log.error({ err: error.message, what }, 'drive sync failed: restore cannot make an apply durable until the array is restarted; the master is told');
    // Kept past a resync (which clears driveErrors): the failure lasts until the restart.
    this.engineSyncError ??= `${what}: ${error.message}`;
  }

  private driveErrorReport(): ReceiverDriveError | undefined {
    const message = this.driveErrors.apply ?? this.driveErrors.store ?? this.engineSyncError;
    return message === undefined ? undefined : { seq: this.journal.appliedSeq, message, resyncFromSeq: this.meta.skipDamagedBefore ?? 0 };
  }

  /** What the next pull tells the master. */
  private reports(): { appliedSeq: number; damaged?: DamagedRecord; driveError?: ReceiverDriveError; journalLost: boolean; restorePaused: boolean } {
    const driveError = this.driveErrorReport();
    return {
      appliedSeq: this.applier.appliedDurable,
      ...(this.damaged === undefined ? {} : { damaged: this.damaged }),
      ...(driveError === undefined ? {} : { driveError }),
      journalLost: this.meta.fullCopyNeeded === true,
      restorePaused: this.applier.paused,
    };
  }

  /** The master's answer: its newest seq, and the statuses it decided. */
  private async answered(answer: JournalReadAnswer): Promise<void> {
    this.masterNextSeq = Math.max(this.masterNextSeq, answer.masterNextSeq);
    await this.adoptStatuses(answer.pairs);
  }

  /**
   * A drive error stopped the restore journal (fail-stop): open it again from the device once the
   * drive works. Recovery keeps the stored records that are intact; records lost are pulled again
   * (the master keeps them until they are applied here), and re-applying is harmless (redo).
   */
  private async reopenJournal(): Promise<void> {
    await this.applier.settled();
    const volume = this.engine.volumeById(this.meta.journalVolumeId);
    if (!volume) throw new TwinstoreError('VOLUME_NOT_FOUND', `journal of group ${this.meta.name} is missing`);
    const { journal, recovery } = await Journal.open(this.journalDevice(volume));
    this.journal = journal;
    this.applier.journalReopened();
    delete this.driveErrors.store;
    this.log.warn({ case: recovery.case, nextSeq: journal.nextSeq, appliedSeq: journal.appliedSeq }, 'restore journal opened again after a drive error');
    await this.journalStartedAgain();
  }

  /** Follows the master's view of each pair's status. */
  private async adoptStatuses(pairs: JournalReadAnswer['pairs']): Promise<void> {
    let changed = false;
    for (const theirs of pairs) {
      const ours = this.meta.pairs.find((p) => p.pvolLun === theirs.pvolLun);
      if (!ours) continue;
      // COPY makes the S-VOL inconsistent until PAIR: a suspension in between does not end that.
      const inconsistent = this.meta.fullCopyNeeded === true || (theirs.status === 'COPY' ? true : theirs.status === 'PAIR' ? false : ours.svolInconsistent === true);
      if (ours.status === theirs.status && ours.statusReason === theirs.statusReason && (ours.svolInconsistent === true) === inconsistent) continue;
      ours.status = theirs.status;
      ours.statusReason = theirs.statusReason;
      ours.svolInconsistent = inconsistent;
      changed = true;
    }
    if (changed) await this.persistMeta(this.meta);
  }

  start(): void {
    this.puller.start();
    this.applier.start();
  }

  /** Resolves true once every record before `seq` is applied (it must arrive and be stored first), false after `timeoutMs`. */
  async waitApplied(seq: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.journal.appliedSeq < seq) {
      if (Date.now() >= deadline || this.stopped) return false;
      await sleep(5);
    }
    return true;
  }

  private stopped = false;

  /**
   * Takeover with the master gone: stop pulling, apply everything stored that can be applied
   * (an atomic unit whose end never came, or a damaged record, stays out), then stop.
   * Returns the applied cursor: the consistency point the S-VOLs now hold.
   */
  async drainAndStop(): Promise<number> {
    this.applier.releaseHolds();
    await this.puller.stopPulling();
    for (;;) {
      const applied = this.journal.appliedSeq;
      if (applied >= this.journal.durableSeq || this.applier.heldAt === this.journal.durableSeq || this.damaged?.seq === applied) break;
      await sleep(5);
    }
    await this.applier.settled();
    const applied = this.journal.appliedSeq;
    await this.stop();
    return applied;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.allSettled([this.puller.stop(), this.applier.stop()]);
    await this.journal.close().catch(() => undefined);
  }

  /**
   * Operator and test hook: hold restore (records keep arriving and are stored). Pausing
   * returns once the batch being applied has ended and the S-VOLs hold a consistency point (after
   * a batch that failed part-way, once a retry has committed past it), so they then sit at the
   * consistency point `pair display` shows.
   */
  setApplyPaused(paused: boolean): Promise<void> {
    return this.applier.setPaused(paused);
  }

  /**
   * The master's resync after a suspension (or its journal losing records) re-copies every region
   * of the records below `seq`: those stored here and not applied are passed over (marked applied,
   * never written to the S-VOLs: an atomic unit cut short cannot hold restore), and with none
   * stored up to `seq` the journal goes on there (a new instance). The S-VOLs are mid-copy (COPY)
   * and reach a consistency point again when the copy ends.
   */
  private async skipTo(seq: number): Promise<void> {
    if (seq <= this.journal.appliedSeq && seq <= this.journal.nextSeq) return;
    const from = this.journal.appliedSeq;
    await this.applier.holdWhile(async () => {
      if (seq <= this.journal.durableSeq) {
        // Stored already (an atomic unit cut short may hold restore below it): passed over, not applied.
        this.journal.markApplied(seq);
        this.journal.release(seq);
        await this.applier.persistApplied();
      } else {
        await this.journalAt(seq);
      }
      this.damaged = undefined;
    });
    this.log.warn({ from, to: seq }, 'resync: records not applied here are re-copied; the restore journal skips to the resync point');
  }

  /**
   * The restore journal was started again after its header was lost (Journal.open, headerLost):
   * the records stored here and the applied cursor are gone, so the S-VOLs are at no known
   * consistency point. They are marked inconsistent (takeover refuses them without --force) and
   * the master is asked, durably, for a full copy. Called wherever the journal is opened.
   */
  async journalStartedAgain(): Promise<boolean> {
    if (!this.journal.startedAgainPending) return false;
    this.log.error({}, 'restore journal header lost: the journal started again, empty; the S-VOLs are at no known consistency point and the master is asked for a full copy');
    for (const pair of this.meta.pairs) pair.svolInconsistent = true;
    this.meta.fullCopyNeeded = true;
    await this.persistMeta(this.meta);
    await this.journal.acknowledgeStartedAgain();
    return true;
  }

  /** The restore journal goes on at `seq` as a new instance, keeping nothing stored before it. */
  private async journalAt(seq: number): Promise<void> {
    await this.journal.setRole('restore', this.journal.epoch, { keepRecords: false, firstSeq: seq });
  }

  /** The master marked every region for us (its answer to a `journalLost` pull): go on at its seq. */
  private async fullCopyMarked(skipTo: number): Promise<void> {
    await this.journalAt(skipTo);
    this.applier.restartAtCursor();
    this.damaged = undefined;
    this.meta.fullCopyNeeded = false;
    await this.persistMeta(this.meta);
    this.log.warn({ seq: skipTo }, 'the master marked every region for a full copy; the restore journal goes on at its seq');
  }

  /** The S-VOL of `lun` in this group. */
  svolOf(lun: number): Volume {
    const pair = this.meta.pairs.find((p) => p.pvolLun === lun);
    const volume = pair ? this.engine.volumeById(pair.localVolumeId) : undefined;
    if (!volume) throw new TwinstoreError('VOLUME_NOT_FOUND', `group ${this.meta.name} has no S-VOL for LUN ${lun}`);
    return volume;
  }

  display(): PairDisplay[] {
    const applied = this.journal.appliedSeq;
    const paused = this.applier.paused;
    return this.meta.pairs.map((pair) => {
      const statusReason = pair.statusReason ?? (this.peer.connected ? (paused ? 'restore paused' : null) : 'link-down');
      // The S-VOL's bitmap holds host writes of a split --rw (a resync copies them back from the P-VOL).
      const pendingRegions = this.bitmapOf(pair.pvolLun).size;
      return {
        group: this.meta.name,
        direction: `${this.meta.peer}->${this.engine.arrayId}`,
        epoch: formatEpoch(this.meta.epoch),
        pvol: `${this.meta.peer}:${pair.pvolName}`,
        svol: `${this.engine.arrayId}:${pair.svolName}`,
        status: pair.status,
        statusReason,
        copyPercent: pair.status === 'COPY' ? -1 : 100,
        journalUsedPercent: Math.round((1000 * this.journal.usedBytes) / Math.max(1, this.journal.capacityBytes)) / 10,
        lagRecords: Math.max(0, this.masterNextSeq - applied),
        lagBytes: -1,
        lagSeconds: -1,
        consistencySeq: applied - 1,
        consistencyTime: this.lastApplied ? new Date(this.lastApplied.timestampMs).toISOString() : null,
        restoring: this.journal.appliedSeq < this.journal.durableSeq,
        copyBytes: pair.copyDoneBytes ?? 0,
        copyRemainingBytes: pair.status === 'COPY' ? -1 : 0,
        copyRateBytesPerSecond: null,
        copyEtaSeconds: null,
        pendingRegions,
        pendingBytes: Math.min(pendingRegions * this.regionBytes, pair.sizeBytes),
        restorePaused: paused,
        svolConsistent: pair.status !== 'COPY' && pair.svolInconsistent !== true,
        recovery: recoveryHint({ group: this.meta.name, status: pair.status, statusReason, arrayId: this.engine.arrayId, peer: this.meta.peer, divergentWrites: 0 }),
      };
    });
  }
}
