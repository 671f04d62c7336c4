// The receiving side of a journal group (docs/architecture.md §5): pull durable records
// from the master over the link (each request carries our storedSeq and
// appliedSeq), append them to the restore journal and make them durable, then
// apply them to the S-VOLs strictly in sequence order, make the S-VOLs durable,
// and only then advance (and persist) `applied`. Re-applying after a crash is
// harmless: records are idempotent writes applied in order (redo).

import { EventEmitter } from 'node:events';
import { TwinstoreError, assert, isTwinstoreError } from '../errors.js';
import { Journal, JournalRecordCorruptError, type JournalRecord, type RecordMeta } from '../journal/index.js';
import { isIoError, type StorageEngine, type Volume } from '../storage/index.js';
import { VolumeJournalDevice } from './journal-device.js';
import { AnswerRefusedError, linkRequest, type DamagedRecord, type DirtyRanges, type JournalReadAnswer, type PeerChannel, type ReceiverDriveError } from './protocol.js';
import type { Logger } from '../util/log.js';
import { isPlanted } from '../util/planted.js';
import { formatEpoch, type GroupMeta, type PairDisplay, type PairMeta } from './model.js';
import { isUnitBegin, isUnitEnd } from './units.js';
import { scanJournal } from './journal-scan.js';
import { DurableRegionSet } from './region-set.js';
import { bitmapSetName } from './model.js';
import { applyInOrder } from './restore/apply-writes.js';

const pullBytesMax = 8 * 2 ** 20;
const applyBatchBytesMax = 8 * 2 ** 20;
const retryMs = 200;

export interface RestoreGroupOptions {
  meta: GroupMeta;
  journal: Journal;
  engine: StorageEngine;
  peer: PeerChannel;
  persist: (meta: GroupMeta) => Promise<void>;
  log: Logger;
  /** Region size of the S-VOL bitmaps (the group's, else the array default). */
  regionBytes: number;
}

export class RestoreGroup extends EventEmitter {
  readonly meta: GroupMeta;
  /** Replaced only when it is opened again after a drive error stopped it (reopenJournal). */
  journal: Journal;
  private readonly engine: StorageEngine;
  private readonly peer: PeerChannel;
  private readonly log: Logger;
  private readonly persistMeta: (meta: GroupMeta) => Promise<void>;
  private running = false;
  private applyWake: (() => void) | undefined;
  private pulling: Promise<void> | undefined;
  private applying: Promise<void> | undefined;
  private lastApplied: { seq: number; timestampMs: number } | undefined;
  private masterNextSeq = 0;
  /** The applied cursor as last persisted: what the master is told. */
  private appliedDurable: number;
  private pausedApply = false;
  /** The operator's pause (setApplyPaused): honoured only where the S-VOLs hold a consistency point. */
  private heldByOperator = false;
  /**
   * One past the highest seq whose S-VOL write was issued. Above the applied cursor after a batch
   * failed part-way: the retry writes the records from the cursor again over newer ones, so until
   * a batch commits past this, the S-VOLs hold no single instant (betweenStates).
   */
  private issuedTo = 0;
  /** The batch (or atomic unit) being applied now, if any. */
  private batch: Promise<void> | undefined;
  /**
   * The commit (S-VOLs flushed, applied cursor moved and persisted) of the last batch applied,
   * while it runs: the next batch's writes go out meanwhile, and its commit follows this one.
   */
  private commitPending: { to: number; promise: Promise<void> } | undefined;
  /** A commit that failed, until the apply loop has handled it (applyFailed). */
  private commitFailure: { error: unknown } | undefined;
  /** The atomic unit at the applied cursor: where its end marker was looked for, and where it is. */
  private unitScan: { begin: number; scannedTo: number; end: number | undefined } | undefined;
  /** durableSeq when the unit at the applied cursor was found incomplete: wait for more records. */
  private heldAt: number | undefined;

  constructor(options: RestoreGroupOptions) {
    super();
    this.meta = options.meta;
    this.journal = options.journal;
    this.appliedDurable = options.journal.appliedSeq;
    this.engine = options.engine;
    this.peer = options.peer;
    this.persistMeta = options.persist;
    this.log = options.log.child({ group: options.meta.name });
    this.regionBytes = options.meta.regionBytes ?? options.regionBytes;
  }

  private readonly regionBytes: number;
  private readonly bitmaps = new Map<number, DurableRegionSet>();

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
    this.applyWake?.();
    if (this.damaged !== undefined && this.damaged.seq < resyncFromSeq) {
      this.damaged = undefined;
      this.applyWake?.();
    }
  }

  /** A stored record that fails its checksum: restore stops before it and the master hears of it. */
  private damaged: DamagedRecord | undefined;

  /** Restore met a damaged record at the applied cursor: skip it (resync covers it) or stop and report. */
  private async onDamaged(error: JournalRecordCorruptError): Promise<void> {
    if (error.seq < (this.meta.skipDamagedBefore ?? 0)) {
      this.log.warn({ seq: error.seq }, 'damaged restore record skipped: the resync in progress re-copies its region');
      this.journal.markApplied(error.seq + 1);
      this.journal.release(error.seq + 1);
      await this.persistApplied();
      return;
    }
    if (this.damaged?.seq !== error.seq) this.log.error({ seq: error.seq, region: error.region }, 'a stored record fails its checksum; restore stops before it and the master is told');
    this.damaged = { seq: error.seq, lun: error.region?.lun ?? -1, offset: error.region?.offset ?? 0, length: error.region?.length ?? 0 };
  }

  /** Drive I/O errors storing (pull) and applying records; cleared when that side works again. */
  private driveErrors: { store?: string; apply?: string } = {};
  /** Where the pull failed: an IO_ERROR from the request is the master's drive, not ours. */
  private pullStage: 'request' | 'store' = 'request';
  /** What the apply loop is doing, to name it in a drive-error report. */
  private applyStep = 'restore journal read';

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

  /** Set by a failed sync of this array's engine; reported with every journal.read until a restart. */
  private engineSyncError: string | undefined;

  private driveErrorReport(): ReceiverDriveError | undefined {
    const message = this.driveErrors.apply ?? this.driveErrors.store ?? this.engineSyncError;
    return message === undefined ? undefined : { seq: this.journal.appliedSeq, message, resyncFromSeq: this.meta.skipDamagedBefore ?? 0 };
  }

  /**
   * A drive error stopped the restore journal (fail-stop): open it again from the device once the
   * drive works. Recovery keeps the stored records that are intact; records lost are pulled again
   * (the master keeps them until they are applied here), and re-applying is harmless (redo).
   */
  private async reopenJournal(): Promise<void> {
    await this.applySettled();
    const volume = this.engine.volumeById(this.meta.journalVolumeId);
    if (!volume) throw new TwinstoreError('VOLUME_NOT_FOUND', `journal of group ${this.meta.name} is missing`);
    const { journal, recovery } = await Journal.open(new VolumeJournalDevice(volume, this.engine));
    this.journal = journal;
    this.appliedDurable = journal.appliedSeq;
    this.unitScan = undefined;
    this.heldAt = undefined;
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
    if (this.running) return;
    this.running = true;
    this.pulling = this.pullLoop();
    this.applying = this.applyLoop();
  }

  /** Resolves true once every record before `seq` is applied (it must arrive and be stored first), false after `timeoutMs`. */
  async waitApplied(seq: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.journal.appliedSeq < seq) {
      if (Date.now() >= deadline || !this.running) return false;
      await sleep(5);
    }
    return true;
  }

  /**
   * Takeover with the master gone: stop pulling, apply everything stored that can be applied
   * (an atomic unit whose end never came, or a damaged record, stays out), then stop.
   * Returns the applied cursor: the consistency point the S-VOLs now hold.
   */
  async drainAndStop(): Promise<number> {
    this.pullingStopped = true;
    this.pausedApply = false;
    this.heldByOperator = false;
    this.applyWake?.();
    await this.pulling;
    for (;;) {
      const applied = this.journal.appliedSeq;
      if (applied >= this.journal.durableSeq || this.heldAt === this.journal.durableSeq || this.damaged?.seq === applied) break;
      await sleep(5);
    }
    await this.applySettled();
    const applied = this.journal.appliedSeq;
    await this.stop();
    return applied;
  }

  private pullingStopped = false;
  /** The last malformed answer logged at warn. */
  private answerRefused: string | undefined;

  async stop(): Promise<void> {
    this.running = false;
    this.applyWake?.();
    await Promise.allSettled([this.pulling, this.applying]);
    await this.journal.close().catch(() => undefined);
  }

  /**
   * Operator and test hook: hold restore (records keep arriving and are stored). Pausing
   * returns once the batch being applied has ended and the S-VOLs hold a consistency point (after
   * a batch that failed part-way, once a retry has committed past it), so they then sit at the
   * consistency point `pair display` shows.
   */
  async setApplyPaused(paused: boolean): Promise<void> {
    this.heldByOperator = paused;
    if (!paused) {
      this.applyWake?.();
      return;
    }
    await this.applySettled();
    // After a batch that failed part-way, restore goes on (retrying) until the S-VOLs are at a
    // consistency point again; only then does the pause hold.
    while (this.betweenStates && this.heldByOperator && this.running) {
      await sleep(retryMs / 4);
      await this.applySettled();
    }
  }

  /** The batch being applied and the commit in progress have ended, however they ended. */
  private async applySettled(): Promise<void> {
    await this.batch?.catch(() => undefined);
    await this.commitPending?.promise.catch(() => undefined);
  }

  /**
   * S-VOL writes were issued past what is committed or being committed: a batch failed part-way
   * and no later one has committed past what it wrote (issuedTo).
   */
  private get betweenStates(): boolean {
    return this.issuedTo > (this.commitPending?.to ?? this.journal.appliedSeq);
  }

  /** Where the next batch starts: past the batch being committed, else at the applied cursor. */
  private get applyFrom(): number {
    return this.commitPending?.to ?? this.journal.appliedSeq;
  }

  /**
   * Pipelined: the next batch is asked for while the previous one is still being written
   * and made durable (its sequence numbers are reserved at once, so the next request
   * knows where to start); at most two batches are being stored at a time.
   */
  private async pullLoop(): Promise<void> {
    let storing: Promise<void> = Promise.resolve();
    // Damage lost records this side had applied already (the journal's applied cursor is past its
    // records): they are not needed again, and the master may have freed them. Go on from there.
    if (this.journal.appliedSeq > this.journal.nextSeq) await this.skipTo(this.journal.appliedSeq).catch((error: unknown) => this.log.error({ err: (error as Error).message }, 'restore journal: skipping to the applied cursor failed'));
    while (this.running && !this.pullingStopped) {
      if (!this.peer.connected) {
        await storing.catch(() => undefined);
        await sleep(retryMs);
        continue;
      }
      try {
        if (this.journal.failed) {
          await storing.catch(() => undefined);
          // While the drive still fails, pull anyway: the request carries the report to the master.
          await this.reopenJournal().catch((error: unknown) => {
            if (!isIoError(error)) throw error;
            this.noteDriveError('store', 'restore journal', error);
          });
        }
        const batch = await this.pullOnce();
        await storing;
        storing = batch.durable;
        if (batch.skipTo !== undefined) {
          await storing;
          storing = Promise.resolve();
          await this.skipTo(batch.skipTo);
        }
      } catch (error) {
        await storing.catch(() => undefined);
        storing = Promise.resolve();
        if (isIoError(error) && this.pullStage === 'store') this.noteDriveError('store', 'restore journal', error);
        else if (this.running && error instanceof AnswerRefusedError && error.message !== this.answerRefused) {
          // An answer protocol.ts refused: said once (a master that keeps sending it is not logged every pull).
          this.answerRefused = error.message;
          this.log.warn({ code: error.code, err: error.message }, 'journal pull: the master\'s answer is malformed and was refused; retrying');
        } else if (this.running) this.log.debug({ err: (error as Error).message }, 'journal pull failed; retrying');
        await sleep(retryMs);
      }
    }
    await storing.catch(() => undefined);
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
    const resumeApply = !this.pausedApply;
    this.pausedApply = true;
    await this.applySettled();
    const from = this.journal.appliedSeq;
    if (seq <= this.journal.durableSeq) {
      // Stored already (an atomic unit cut short may hold restore below it): passed over, not applied.
      this.journal.markApplied(seq);
      this.journal.release(seq);
      await this.persistApplied();
    } else {
      await this.journalAt(seq);
    }
    this.applyFromCursor();
    if (resumeApply) this.pausedApply = false;
    this.applyWake?.();
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
    this.appliedDurable = this.journal.appliedSeq;
  }

  /**
   * The applied cursor moved without restore (a skip, a new instance): restore starts afresh from it.
   * What was written to the S-VOLs past it is re-copied with everything else (COPY until PAIR).
   */
  private applyFromCursor(): void {
    this.issuedTo = this.journal.appliedSeq;
    this.unitScan = undefined;
    this.heldAt = undefined;
    this.damaged = undefined;
  }

  /** The master marked every region for us (its answer to a `journalLost` pull): go on at its seq. */
  private async fullCopyMarked(skipTo: number): Promise<void> {
    await this.journalAt(skipTo);
    this.applyFromCursor();
    this.meta.fullCopyNeeded = false;
    await this.persistMeta(this.meta);
    this.log.warn({ seq: skipTo }, 'the master marked every region for a full copy; the restore journal goes on at its seq');
  }

  /** Asks for the next batch and reserves it; resolves with the promise of its being durable. */
  private async pullOnce(): Promise<{ durable: Promise<void>; skipTo?: number }> {
    this.pullStage = 'request';
    const driveError = this.driveErrorReport();
    const lost = this.meta.fullCopyNeeded === true;
    const response = await linkRequest(this.peer, 'journal.read', {
      group: this.meta.name,
      fromSeq: this.journal.nextSeq,
      maxBytes: pullBytesMax,
      storedSeq: this.journal.durableSeq,
      appliedSeq: this.appliedDurable,
      ...(this.damaged === undefined ? {} : { damaged: this.damaged }),
      ...(driveError === undefined ? {} : { driveError }),
      ...(lost ? { journalLost: true } : {}),
    });
    this.pullStage = 'store';
    const reply = response.body;
    this.masterNextSeq = Math.max(this.masterNextSeq, reply.masterNextSeq);
    await this.adoptStatuses(reply.pairs);
    if (lost) {
      if (reply.fullCopyMarked === true) await this.fullCopyMarked(reply.skipTo);
      return { durable: Promise.resolve() };
    }
    const skipTo = reply.skipTo;
    if (skipTo !== undefined && reply.records.length === 0) return { durable: Promise.resolve(), skipTo };
    let payloadIndex = 0;
    const writes: Promise<void>[] = [];
    for (const record of reply.records) {
      // protocol.ts checked that each record with data has its segment.
      const data = record.dataBytes > 0 ? response.payload[payloadIndex++] : undefined;
      if (record.seq !== this.journal.nextSeq) {
        throw new TwinstoreError('LINK_PROTOCOL', `record ${record.seq} arrived where ${this.journal.nextSeq} was expected`);
      }
      const meta = { kind: record.kind, epoch: record.epoch, timestampMs: record.timestampMs, lun: record.lun, offset: record.offset, length: record.length };
      let reservation;
      try {
        reservation = this.journal.reserve({ ...meta, seq: record.seq }, record.dataBytes);
      } catch (error) {
        // Our journal is full (restore is behind): store what fitted, ask again from there later.
        if (isTwinstoreError(error) && error.code === 'JOURNAL_FULL' && writes.length > 0) break;
        throw error;
      }
      // The payload buffer is the journal's from here (it keeps it to apply from: record-window.ts).
      writes.push(this.journal.write(reservation, meta, data, true));
    }
    if (writes.length === 0) return { durable: Promise.resolve(), ...(skipTo === undefined ? {} : { skipTo }) };
    const durable = Promise.all(writes)
      .then(() => this.journal.sync())
      .then(() => {
        delete this.driveErrors.store;
        this.applyWake?.();
      });
    durable.catch(() => undefined);
    return { durable, ...(skipTo === undefined ? {} : { skipTo }) };
  }

  private async applyLoop(): Promise<void> {
    while (this.running) {
      const held = this.pausedApply || (this.heldByOperator && !this.betweenStates);
      if (held || this.applyFrom >= this.journal.durableSeq || this.heldAt === this.journal.durableSeq) {
        if (this.commitPending !== undefined) {
          // Nothing more to apply now: the last commit ends before restore waits (a failure is handled next round).
          await this.commitPending.promise.catch(() => undefined);
          continue;
        }
        if (this.commitFailure !== undefined) {
          try {
            this.throwCommitFailure();
          } catch (error) {
            await this.applyFailed(error);
          }
          continue;
        }
        await new Promise<void>((resolve) => {
          this.applyWake = resolve;
          setTimeout(resolve, retryMs);
        });
        this.applyWake = undefined;
        continue;
      }
      try {
        this.batch = this.applyBatch();
        await this.batch;
      } catch (error) {
        await this.applyFailed(error);
      }
    }
    await this.commitPending?.promise.catch(() => undefined);
  }

  /** A batch (or its commit) failed: a damaged record at the cursor is handled; else noted, and retried. */
  private async applyFailed(error: unknown): Promise<void> {
    if (error instanceof JournalRecordCorruptError && error.seq === this.journal.appliedSeq) {
      await this.onDamaged(error);
      if (this.damaged !== undefined) await sleep(retryMs);
      return;
    }
    if (isIoError(error)) this.noteDriveError('apply', this.applyStep, error);
    else this.log.error({ err: (error as Error).message }, 'restore failed; retrying');
    await sleep(retryMs);
  }

  /**
   * One batch: the stored records past the batch being committed. Its writes go out together
   * (restore/apply-writes.ts); its commit follows the previous batch's, and runs while the next
   * batch is written.
   */
  private async applyBatch(): Promise<void> {
    this.throwCommitFailure();
    let read: JournalRecord[];
    try {
      // From memory while the journal keeps the records (record-window.ts), else from the device.
      read = await this.journal.readFrom(this.applyFrom, applyBatchBytesMax);
    } catch (error) {
      // Once the commit before it ends, a damaged record here is the one at the applied cursor.
      await this.commitEnded();
      throw error;
    }
    if (read.length === 0) return;
    const unitAt = read.findIndex(isUnitBegin);
    if (unitAt === 0) {
      await this.commitEnded();
      return this.applyUnit(read[0]!.seq);
    }
    const records = unitAt > 0 ? read.slice(0, unitAt) : read;
    const ordered = isPlanted('restore-out-of-order') && records.length >= 2 ? swapFirstTwo(records) : records;
    await applyInOrder(ordered, (record) => this.apply(record));
    this.chainCommit(records[records.length - 1]!);
  }

  /** The commit in progress has ended; throws its failure, once. */
  private async commitEnded(): Promise<void> {
    await this.commitPending?.promise.catch(() => undefined);
    this.throwCommitFailure();
  }

  private throwCommitFailure(): void {
    const failure = this.commitFailure;
    this.commitFailure = undefined;
    if (failure !== undefined) throw failure.error;
  }

  /** Commits the batch ending at `last` once the one before it has committed; a failure clears the chain. */
  private chainCommit(last: JournalRecord): void {
    const previous = this.commitPending?.promise ?? Promise.resolve();
    const entry = { to: last.seq + 1, promise: previous.then(() => this.commitApplied(last)) };
    this.commitPending = entry;
    entry.promise.then(
      () => {
        if (this.commitPending === entry) this.commitPending = undefined;
      },
      (error: unknown) => {
        // The next batch starts again at the applied cursor (redo: the writes past it are issued again, in order).
        if (this.commitPending === entry) this.commitPending = undefined;
        this.commitFailure ??= { error };
      },
    );
  }

  /**
   * Persists the applied cursor; only then is it what the master hears (journal.read's appliedSeq),
   * since the master frees its journal up to it: a cursor reported before it was durable could go
   * back at a crash here, and the master would show less lag than there is.
   */
  private async persistApplied(): Promise<void> {
    const seq = this.journal.appliedSeq;
    await this.journal.persistHeader();
    if (seq > this.appliedDurable) this.appliedDurable = seq;
  }

  /** S-VOLs durable, then the applied cursor moved past `last` and persisted. */
  private async commitApplied(last: JournalRecord): Promise<void> {
    // Its own step name: the next batch's writes rename applyStep while this runs.
    let step = 'S-VOL sync';
    try {
      await this.engine.flush();
      this.journal.markApplied(last.seq + 1);
      this.journal.release(last.seq + 1);
      step = 'restore journal header';
      await this.persistApplied();
    } catch (error) {
      this.applyStep = step;
      throw error;
    }
    delete this.driveErrors.apply;
    this.lastApplied = { seq: last.seq, timestampMs: last.timestampMs };
    this.emit('applied', last.seq);
  }

  /** An atomic unit (units.ts) starting at `begin`: applied whole once its end is stored, else held. */
  private async applyUnit(begin: number): Promise<void> {
    const end = await this.findUnitEnd(begin);
    if (end === undefined) {
      this.heldAt = this.journal.durableSeq;
      return;
    }
    this.heldAt = undefined;
    let last: JournalRecord | undefined;
    await scanJournal({
      journal: this.journal,
      fromSeq: begin,
      toSeq: end + 1,
      batchBytesMax: applyBatchBytesMax,
      onRecord: async (record) => {
        await this.apply(record);
        last = record;
      },
    });
    assert(last?.seq === end, `atomic unit ${begin}..${end} read whole`);
    this.log.info({ begin, end }, 'atomic unit applied');
    await this.commitApplied(last);
  }

  /** Where the unit's end marker is, once stored; the scan goes on from where it last stopped. */
  private async findUnitEnd(begin: number): Promise<number | undefined> {
    if (this.unitScan?.begin !== begin) this.unitScan = { begin, scannedTo: begin + 1, end: undefined };
    const scan = this.unitScan;
    if (scan.end !== undefined) return scan.end;
    await scanJournal({
      journal: this.journal,
      fromSeq: scan.scannedTo,
      batchBytesMax: applyBatchBytesMax,
      onRecord: (record) => {
        scan.scannedTo = record.seq + 1;
        if (!isUnitEnd(record)) return;
        scan.end = record.seq;
        return 'stop';
      },
    });
    return scan.end;
  }

  private async apply(record: JournalRecord): Promise<void> {
    if (record.kind === 'marker') return;
    const volume = this.svolOf(record.lun);
    this.applyStep = `S-VOL ${volume.name} write`;
    this.issuedTo = Math.max(this.issuedTo, record.seq + 1);
    switch (record.kind) {
      case 'write':
      case 'base':
        await volume.write(record.offset, record.data!);
        return;
      case 'zero':
      case 'trim':
        await volume.writeZeroes(record.offset, record.length, false);
        return;
    }
  }

  private svolOf(lun: number): Volume {
    const pair = this.meta.pairs.find((p) => p.pvolLun === lun);
    const volume = pair ? this.engine.volumeById(pair.localVolumeId) : undefined;
    if (!volume) throw new TwinstoreError('VOLUME_NOT_FOUND', `group ${this.meta.name} has no S-VOL for LUN ${lun}`);
    return volume;
  }

  display(): PairDisplay[] {
    const applied = this.journal.appliedSeq;
    return this.meta.pairs.map((pair) => ({
      group: this.meta.name,
      direction: `${this.meta.peer}->${this.engine.arrayId}`,
      epoch: formatEpoch(this.meta.epoch),
      pvol: `${this.meta.peer}:${pair.pvolName}`,
      svol: `${this.engine.arrayId}:${pair.svolName}`,
      status: pair.status,
      statusReason: pair.statusReason ?? (this.peer.connected ? null : 'link-down'),
      copyPercent: pair.status === 'COPY' ? -1 : 100,
      journalUsedPercent: Math.round((1000 * this.journal.usedBytes) / Math.max(1, this.journal.capacityBytes)) / 10,
      lagRecords: Math.max(0, this.masterNextSeq - applied),
      lagBytes: -1,
      lagSeconds: -1,
      consistencySeq: applied - 1,
      consistencyTime: this.lastApplied ? new Date(this.lastApplied.timestampMs).toISOString() : null,
      restoring: this.journal.appliedSeq < this.journal.durableSeq,
      copyBytes: pair.copyDoneBytes ?? 0,
    }));
  }
}

function swapFirstTwo(records: JournalRecord[]): JournalRecord[] {
  return [records[1]!, records[0]!, ...records.slice(2)];
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
