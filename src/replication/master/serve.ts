// Serving the receiver (docs/architecture.md §5): its pull (`journal.read`) gets durable records
// from its `fromSeq` and tells this side its cursors (stored, applied). The journal is freed only
// up to the applied cursor. The pull also carries the receiver's reports: a lost restore journal,
// records it stored past any this journal holds, a damaged record, a drive error. Each marks what
// it must into the bitmaps here and is reported to the group (outcomes.ts), which suspends.
//
// It owns the receiver's cursors as this side knows them, when it was last heard, and how far
// records have been served.

import { TwinstoreError } from '../../errors.js';
import { JournalRecordCorruptError, type JournalRecord } from '../../journal/index.js';
import { isIoError } from '../../storage/index.js';
import { isPlanted } from '../../util/planted.js';
import type { GroupMeta } from '../model.js';
import type { DamagedRecord, JournalReadRequest, ReceiverDriveError } from '../protocol.js';
import type { Fold } from './fold.js';
import { readBatchBytesMax, type SenderJournal } from './journal-sync.js';
import type { PartContext } from './outcomes.js';
import type { BytePacer } from '../../util/byte-pacer.js';

/** An empty pull waits this long for a record to become durable before it answers. */
const longPollMs = 250;
/** How often waitApplied looks at the receiver's applied cursor. */
const appliedPollMs = 20;

export interface ReceiverServiceOptions extends PartContext {
  meta: Pick<GroupMeta, 'name' | 'peer' | 'skipTo'>;
  sender: SenderJournal;
  fold: Pick<Fold, 'everyRegion' | 'range'>;
  persist: () => Promise<void>;
  /** link.bandwidthMax: the array's cap on the bytes its pulls are answered with, shared by every group it sends. */
  pacer?: BytePacer | undefined;
}

export interface ReceiverCursors {
  storedSeq: number;
  appliedSeq: number;
  lastHeardMs: number;
  /** The receiver's last pull said its restore is paused. */
  restorePaused: boolean;
}

export class ReceiverService {
  private applied: number;
  private stored = 0;
  /** Seqs below this were in the journal when it was opened or have been served since: all a receiver may hold. */
  private servedTo: number;
  private lastHeardMs = 0;
  private restorePaused = false;
  /** Timestamp (our clock) of the newest record the receiver applied: the consistency point's time. */
  private consistencyMs: number | undefined;
  /** The seq the latest resync started at: a receiver's drive-error report from before it is stale. */
  private resyncFromSeq = 0;

  constructor(private readonly options: ReceiverServiceOptions) {
    this.applied = options.sender.journal.tailSeq;
    this.servedTo = options.sender.journal.nextSeq;
  }

  get receiverApplied(): number {
    return this.applied;
  }

  get receiverStored(): number {
    return this.stored;
  }

  get cursors(): ReceiverCursors {
    return { storedSeq: this.stored, appliedSeq: this.applied, lastHeardMs: this.lastHeardMs, restorePaused: this.restorePaused };
  }

  get consistencyTimeMs(): number | undefined {
    return this.consistencyMs;
  }

  /** Since when the receiver has been silent (our clock). */
  get silentSinceMs(): number {
    return this.lastHeardMs;
  }

  /** The receiver gets a whole watch period from now to be heard (a link watch starts, a resync). */
  heardNow(): void {
    this.lastHeardMs = Math.max(this.lastHeardMs, this.options.now());
  }

  /** Records below `seq` count as served: a receiver may hold them (a new journal instance, a skip). */
  servedAtLeast(seq: number): void {
    this.servedTo = Math.max(this.servedTo, seq);
  }

  /** The journal went on from `seq` (a new instance): records below it are all a receiver may hold. */
  servedFrom(seq: number): void {
    this.servedTo = seq;
  }

  /** A resync starts at `seq`: a receiver's drive-error report from before it is stale. */
  resyncStarted(seq: number): void {
    this.resyncFromSeq = seq;
  }

  /** Resolves true once the receiver has applied every record before `seq`, false after `timeoutMs`. */
  async waitApplied(seq: number, timeoutMs: number): Promise<boolean> {
    const deadline = this.options.now() + timeoutMs;
    while (this.applied < seq) {
      if (this.options.now() >= deadline || this.options.stopped()) return false;
      await new Promise((r) => setTimeout(r, appliedPollMs));
    }
    return true;
  }

  /** The receiver's pull (docs/architecture.md §5): durable records from `fromSeq`, and its cursors. */
  async readJournal(request: JournalReadRequest): Promise<JournalRecord[]> {
    const { sender, meta } = this.options;
    this.lastHeardMs = this.options.now();
    this.restorePaused = request.restorePaused === true;
    // Before the cursors: a receiver that lost its journal no longer knows them.
    if (request.journalLost === true) return this.receiverJournalLost();
    if (request.storedSeq > this.servedTo) return this.receiverAhead(request.storedSeq);
    this.noteReceiver(request.storedSeq, request.appliedSeq);
    if (request.damaged !== undefined) await this.receiverDamaged(request.damaged);
    if (request.driveError !== undefined) await this.receiverDriveError(request.driveError);
    const journal = sender.journal;
    if (journal.failed) {
      // Nothing can be read until a resync opens the journal again; the answer still carries the statuses.
      await new Promise((r) => setTimeout(r, longPollMs));
      return [];
    }
    if (request.fromSeq < (meta.skipTo ?? 0)) {
      // The receiver is to skip to meta.skipTo (the answer says so): nothing below is served.
      return [];
    }
    if (request.fromSeq < journal.tailSeq) {
      throw new TwinstoreError('JOURNAL_RECORD_GONE', `group ${meta.name}: records before ${journal.tailSeq} are gone; receiver asked from ${request.fromSeq}`);
    }
    if (journal.durableSeq <= request.fromSeq) {
      if (sender.writtenSeq >= request.fromSeq) sender.scheduleSync();
      await sender.waitDurable(request.fromSeq, longPollMs);
    }
    if (journal.durableSeq <= request.fromSeq) return [];
    const allowed = await this.paced();
    if (allowed === 0) return [];
    try {
      const records = await journal.readFrom(request.fromSeq, Math.min(request.maxBytes, readBatchBytesMax, allowed));
      const last = records[records.length - 1];
      if (last !== undefined && last.seq >= this.servedTo) this.servedTo = last.seq + 1;
      this.options.pacer?.take(records.reduce((sum, r) => sum + (r.data?.length ?? 0), 0));
      return records;
    } catch (error) {
      if (error instanceof JournalRecordCorruptError) await this.recordDamaged(error);
      if (isIoError(error)) await this.options.report({ kind: 'drive-error', what: 'journal read', error });
      throw error;
    }
  }

  /**
   * The bytes this answer may carry under link.bandwidthMax (at least one record's worth is sent
   * whole: the bucket may go into debt): waits for the bucket to fill, at most longPollMs, and
   * answers 0 (an empty answer: the receiver pulls again) if it has not.
   */
  private async paced(): Promise<number> {
    const pacer = this.options.pacer;
    if (pacer === undefined) return readBatchBytesMax;
    const waitMs = pacer.waitMs();
    if (waitMs > 0) await new Promise((r) => setTimeout(r, Math.min(waitMs, longPollMs)));
    return pacer.waitMs() > 0 ? 0 : Math.max(1, pacer.available());
  }

  /**
   * The receiver's restore journal was started again after its header was lost: what it applied
   * is unknown, so every region of every P-VOL goes into the bitmaps (durably, before the answer
   * says so), a replicating group suspends, and the receiver's journal goes on at this journal's
   * next seq (skipTo), passing over every record before it. The next resync copies everything.
   */
  private async receiverJournalLost(): Promise<JournalRecord[]> {
    const { meta, sender } = this.options;
    this.options.log.error({ peer: meta.peer }, 'the receiver lost its restore journal: every region goes into the bitmaps for a full copy');
    await this.options.fold.everyRegion();
    await this.options.report({ kind: 'receiver-journal-lost' });
    meta.skipTo = Math.max(meta.skipTo ?? 0, sender.journal.nextSeq);
    this.servedAtLeast(meta.skipTo);
    await this.options.persist();
    return [];
  }

  /**
   * The receiver stored records past any this journal holds or served since it was opened: a
   * crash cut them here (a synced record damaged with nothing after it to prove it synced, or a
   * drive that lost synced writes). Serving on would give those seqs to new writes, so a seq would
   * mean two writes: the group suspends instead, and its resync starts past the receiver's records.
   */
  private async receiverAhead(storedSeq: number): Promise<never> {
    this.stored = Math.max(this.stored, storedSeq);
    const message = `the receiver stored records up to seq ${storedSeq - 1}, but this journal holds and served only up to ${this.servedTo - 1}`;
    // Which regions those records wrote is known to no journal here (and the receiver may have
    // applied and freed some): every region goes into the bitmaps, durably, so the resync copies
    // everything and the S-VOLs end equal to the P-VOLs whatever those records held.
    await this.options.fold.everyRegion();
    await this.options.report({ kind: 'receiver-ahead', storedSeq, servedTo: this.servedTo, message });
    throw new TwinstoreError('JOURNAL_CORRUPT', `group ${this.options.meta.name}: ${message}; pair resync starts past them`);
  }

  /**
   * The receiver holds a record it stored that now fails its checksum (its disk damaged it):
   * it cannot apply past it. The group suspends (every unapplied record, this one included,
   * goes into the bitmaps) and a resync re-copies the regions.
   */
  private async receiverDamaged(damaged: DamagedRecord): Promise<void> {
    if (damaged.length > 0) await this.options.fold.range(damaged.lun, [[damaged.offset, damaged.length]]);
    await this.options.report({ kind: 'bad-record', seq: damaged.seq, on: this.options.meta.peer });
  }

  /**
   * The receiver's drive failed storing or applying records: its restore stopped before the
   * record at its applied cursor and retries. The group suspends (every unapplied record goes
   * into the bitmaps) and a resync re-copies. A report sent before the receiver heard of the
   * latest resync is stale.
   */
  private async receiverDriveError(report: ReceiverDriveError): Promise<void> {
    if (report.resyncFromSeq < this.resyncFromSeq) return;
    await this.options.report({ kind: 'receiver-drive-error', seq: report.seq, message: report.message });
  }

  /** A record that fails its checksum is never sent: its region goes into the bitmap and the group suspends. */
  private async recordDamaged(error: JournalRecordCorruptError): Promise<void> {
    this.options.log.error({ seq: error.seq, region: error.region }, 'journal record fails its checksum; suspending');
    const region = error.region;
    if (region) await this.options.fold.range(region.lun, [[region.offset, region.length]]);
    await this.options.report({ kind: 'bad-record', seq: error.seq });
  }

  private noteReceiver(storedSeq: number, appliedSeq: number): void {
    this.stored = Math.max(this.stored, storedSeq);
    if (appliedSeq > this.applied) {
      this.applied = appliedSeq;
      const journal = this.options.sender.journal;
      // A journal stopped by a drive error is released when a resync opens it again.
      if (!journal.failed) journal.release(isPlanted('free-at-stored') ? Math.max(appliedSeq, storedSeq) : appliedSeq);
      this.consistencyMs = this.options.sender.unapplied.dropBelow(appliedSeq) ?? this.consistencyMs;
      void this.options.report({ kind: 'copy-progress' });
    }
  }
}
