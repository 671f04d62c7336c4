// Why this exists: the receiver's restore loop, apart from how records arrive
// (puller.ts) and what the group decides (group.ts). It applies stored
// (durable) records to the S-VOLs in batches of up to applyBatchBytesMax: a
// batch's writes go out together (apply-writes.ts), then the batch is
// committed — S-VOLs flushed, only then the applied cursor moved, the records
// released and the journal header written — while the next batch is written;
// commits follow one another in order. An atomic unit (units.ts) is applied
// whole once its end is stored. Re-applying after a crash is harmless: every
// record past the persisted cursor is applied again, in order (redo). What it
// meets — a damaged record at the cursor, a drive error, a batch applied — it
// reports to the group, which decides.

import { assert } from '../../errors.js';
import { JournalRecordCorruptError, type Journal, type JournalRecord } from '../../journal/index.js';
import { isIoError, type StorageEngine, type Volume } from '../../storage/index.js';
import type { Logger } from '../../util/log.js';
import { isPlanted } from '../../util/planted.js';
import { scanJournal } from '../journal-scan.js';
import { isUnitBegin, isUnitEnd } from '../units.js';
import { applyInOrder } from './apply-writes.js';

/** One batch applies at most this many data bytes. */
export const applyBatchBytesMax = 8 * 2 ** 20;
/** How long restore waits before it retries after a failure, and between looks for new records. */
export const retryMs = 200;

/** What the applier needs from its group, and what it tells it. */
export interface ApplyOwner {
  /** The restore journal now (the group replaces it when it opens it again after a drive error). */
  readonly journal: Journal;
  readonly engine: StorageEngine;
  readonly log: Logger;
  svolOf(lun: number): Volume;
  /** A damaged record at the applied cursor; true when restore is to stop before it (else it was passed over). */
  damagedAtCursor(error: JournalRecordCorruptError): Promise<boolean>;
  /** A drive error while applying, at `step`. */
  applyFailed(step: string, error: Error): void;
  /** A batch committed: the S-VOLs hold every record up to `last`. */
  applied(last: JournalRecord): void;
}

export class Applier {
  private running = false;
  private loop: Promise<void> | undefined;
  private wakeUp: (() => void) | undefined;
  /** Held by the group (a skip, a takeover's drain) while it moves the cursor. */
  private heldByGroup = false;
  /** The operator's pause (setPaused): honoured only where the S-VOLs hold a consistency point. */
  private heldByOperator = false;
  /**
   * One past the highest seq whose S-VOL write was issued. Above the committed cursor after a batch
   * failed part-way: the retry writes the records from the cursor again over newer ones, so until
   * a batch commits past this, the S-VOLs hold no single instant (betweenStates).
   */
  private issuedTo = 0;
  /** The batch (or atomic unit) being applied now, if any. */
  private batch: Promise<void> | undefined;
  /**
   * The commit of the last batch applied, while it runs: the next batch's writes go out
   * meanwhile, and its commit follows this one.
   */
  private commitPending: { to: number; promise: Promise<void> } | undefined;
  /** A commit that failed, until the loop has handled it. */
  private commitFailure: { error: unknown } | undefined;
  /** The atomic unit at the applied cursor: where its end marker was looked for, and where it is. */
  private unitScan: { begin: number; scannedTo: number; end: number | undefined } | undefined;
  /** durableSeq when the unit at the applied cursor was found incomplete: wait for more records. */
  private heldAtValue: number | undefined;
  /** What the loop is doing, to name it in a drive-error report. */
  private step = 'restore journal read';
  /** The applied cursor as last persisted: what the master is told. */
  private appliedDurableValue: number;

  constructor(private readonly owner: ApplyOwner) {
    this.appliedDurableValue = owner.journal.appliedSeq;
  }

  /** The applied cursor as last persisted (the master frees its journal up to it). */
  get appliedDurable(): number {
    return this.appliedDurableValue;
  }

  /** durableSeq when restore found the atomic unit at its cursor incomplete. */
  get heldAt(): number | undefined {
    return this.heldAtValue;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.applyLoop();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.wake();
    await this.loop;
  }

  /** New records are durable (or the cursor moved): look now rather than at the next retry. */
  wake(): void {
    this.wakeUp?.();
  }

  /** The batch being applied and the commit in progress have ended, however they ended. */
  async settled(): Promise<void> {
    await this.batch?.catch(() => undefined);
    await this.commitPending?.promise.catch(() => undefined);
  }

  /**
   * Operator and test hook: hold restore. Pausing returns once the batch being applied has ended
   * and the S-VOLs hold a consistency point (after a batch that failed part-way, once a retry has
   * committed past it).
   */
  async setPaused(paused: boolean): Promise<void> {
    this.heldByOperator = paused;
    if (!paused) {
      this.wake();
      return;
    }
    await this.settled();
    while (this.betweenStates && this.heldByOperator && this.running) {
      await sleep(retryMs / 4);
      await this.settled();
    }
  }

  /** Restore is held by the operator (pair restore --pause). */
  get paused(): boolean {
    return this.heldByOperator;
  }

  /** Ends every hold (a takeover applies what it can before it stops). */
  releaseHolds(): void {
    this.heldByGroup = false;
    this.heldByOperator = false;
    this.wake();
  }

  /**
   * Runs `move` with restore held and settled (no batch or commit in flight), then starts again
   * from the applied cursor as `move` left it (restartAtCursor).
   */
  async holdWhile(move: () => Promise<void>): Promise<void> {
    const resume = !this.heldByGroup;
    this.heldByGroup = true;
    await this.settled();
    try {
      await move();
      this.restartAtCursor();
    } finally {
      if (resume) this.heldByGroup = false;
      this.wake();
    }
  }

  /**
   * The applied cursor moved without restore (a skip, a new instance) and is persisted: restore
   * starts afresh from it. What was written to the S-VOLs past it is re-copied with everything else.
   */
  restartAtCursor(): void {
    this.issuedTo = this.owner.journal.appliedSeq;
    this.appliedDurableValue = this.owner.journal.appliedSeq;
    this.unitScan = undefined;
    this.heldAtValue = undefined;
  }

  /** The journal was opened again: its persisted cursor is the one to report, and scans start over. */
  journalReopened(): void {
    this.appliedDurableValue = this.owner.journal.appliedSeq;
    this.unitScan = undefined;
    this.heldAtValue = undefined;
  }

  /**
   * Persists the applied cursor; only then is it what the master hears (journal.read's appliedSeq),
   * since the master frees its journal up to it: a cursor reported before it was durable could go
   * back at a crash here, and the master would show less lag than there is.
   */
  async persistApplied(): Promise<void> {
    const seq = this.owner.journal.appliedSeq;
    await this.owner.journal.persistHeader();
    if (seq > this.appliedDurableValue) this.appliedDurableValue = seq;
  }

  /**
   * S-VOL writes were issued past what is committed or being committed: a batch failed part-way
   * and no later one has committed past what it wrote (issuedTo).
   */
  private get betweenStates(): boolean {
    return this.issuedTo > (this.commitPending?.to ?? this.owner.journal.appliedSeq);
  }

  /** Where the next batch starts: past the batch being committed, else at the applied cursor. */
  private get applyFrom(): number {
    return this.commitPending?.to ?? this.owner.journal.appliedSeq;
  }

  private async applyLoop(): Promise<void> {
    while (this.running) {
      const journal = this.owner.journal;
      const held = this.heldByGroup || (this.heldByOperator && !this.betweenStates);
      if (held || this.applyFrom >= journal.durableSeq || this.heldAtValue === journal.durableSeq) {
        if (this.commitPending !== undefined) {
          // Nothing more to apply now: the last commit ends before restore waits (a failure is handled next round).
          await this.commitPending.promise.catch(() => undefined);
          continue;
        }
        if (this.commitFailure !== undefined) {
          try {
            this.throwCommitFailure();
          } catch (error) {
            await this.failed(error);
          }
          continue;
        }
        await new Promise<void>((resolve) => {
          this.wakeUp = resolve;
          setTimeout(resolve, retryMs);
        });
        this.wakeUp = undefined;
        continue;
      }
      try {
        this.batch = this.applyBatch();
        await this.batch;
      } catch (error) {
        await this.failed(error);
      }
    }
    await this.commitPending?.promise.catch(() => undefined);
  }

  /** A batch (or its commit) failed: a damaged record at the cursor goes to the group; else noted, and retried. */
  private async failed(error: unknown): Promise<void> {
    if (error instanceof JournalRecordCorruptError && error.seq === this.owner.journal.appliedSeq) {
      if (await this.owner.damagedAtCursor(error)) await sleep(retryMs);
      return;
    }
    if (isIoError(error)) this.owner.applyFailed(this.step, error);
    else this.owner.log.error({ err: (error as Error).message }, 'restore failed; retrying');
    await sleep(retryMs);
  }

  /**
   * One batch: the stored records past the batch being committed, from memory while the journal
   * keeps them (record-window.ts), else from the device.
   */
  private async applyBatch(): Promise<void> {
    this.throwCommitFailure();
    let read: JournalRecord[];
    try {
      this.step = 'restore journal read';
      read = await this.owner.journal.readFrom(this.applyFrom, applyBatchBytesMax);
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
    const entry = { to: last.seq + 1, promise: previous.then(() => this.commit(last)) };
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

  /** S-VOLs durable, then the applied cursor moved past `last` and persisted. */
  private async commit(last: JournalRecord): Promise<void> {
    // Its own step name: the next batch's writes rename `step` while this runs.
    let step = 'S-VOL sync';
    try {
      await this.owner.engine.flush();
      this.owner.journal.markApplied(last.seq + 1);
      this.owner.journal.release(last.seq + 1);
      step = 'restore journal header';
      await this.persistApplied();
    } catch (error) {
      this.step = step;
      throw error;
    }
    this.owner.applied(last);
  }

  /** An atomic unit (units.ts) starting at `begin`: applied whole once its end is stored, else held. */
  private async applyUnit(begin: number): Promise<void> {
    const end = await this.findUnitEnd(begin);
    if (end === undefined) {
      this.heldAtValue = this.owner.journal.durableSeq;
      return;
    }
    this.heldAtValue = undefined;
    let last: JournalRecord | undefined;
    await scanJournal({
      journal: this.owner.journal,
      fromSeq: begin,
      toSeq: end + 1,
      batchBytesMax: applyBatchBytesMax,
      onRecord: async (record) => {
        await this.apply(record);
        last = record;
      },
    });
    assert(last?.seq === end, `atomic unit ${begin}..${end} read whole`);
    this.owner.log.info({ begin, end }, 'atomic unit applied');
    await this.commit(last);
  }

  /** Where the unit's end marker is, once stored; the scan goes on from where it last stopped. */
  private async findUnitEnd(begin: number): Promise<number | undefined> {
    if (this.unitScan?.begin !== begin) this.unitScan = { begin, scannedTo: begin + 1, end: undefined };
    const scan = this.unitScan;
    if (scan.end !== undefined) return scan.end;
    await scanJournal({
      journal: this.owner.journal,
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
    const volume = this.owner.svolOf(record.lun);
    this.step = `S-VOL ${volume.name} write`;
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
}

function swapFirstTwo(records: JournalRecord[]): JournalRecord[] {
  return [records[1]!, records[0]!, ...records.slice(2)];
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
