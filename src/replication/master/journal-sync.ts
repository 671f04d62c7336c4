// The sender's journal (docs/architecture.md §3, §5): records appended in the group's sequence
// space, the records the receiver has not applied yet (lag, folding), and when records become
// durable. FLUSH/FUA wait for a sync at once; the receiver's pull batches one sync per
// `senderSyncIntervalMs`. A failed sync is reported as a drive error (sticky-sync.ts: every
// later FLUSH fails until a restart), and the group decides the suspension.
//
// It owns the journal object: after a drive error stopped the journal, `reopen` replaces it.

import { isTwinstoreError } from '../../errors.js';
import { Journal, type Epoch, type JournalDevice, type RecordMeta, type RecoveryReport, type Reservation } from '../../journal/index.js';
import { isIoError } from '../../storage/index.js';
import { isPlanted } from '../../util/planted.js';
import { scanJournal } from '../journal-scan.js';
import { UnappliedQueue } from '../unapplied.js';
import type { PartContext } from './outcomes.js';

/** Data bytes per journal read (a fold, a scan, one journal.read answer). */
export const readBatchBytesMax = 16 * 2 ** 20;
const senderSyncIntervalMs = 10;
/** A record that is not a host write waits this long between tries for journal space. */
const spaceRetryMs = 20;

export interface SenderJournalOptions extends PartContext {
  journal: Journal;
}

/** What a FLUSH needs of the group: the P-VOLs' sync, and what stands for durable once the journal failed. */
export interface FlushOptions {
  engineFlush: () => Promise<void>;
  /** Some pair replicates (COPY or PAIR). */
  replicating: () => boolean;
  /** The suspension's fold of the unapplied records into the bitmaps. */
  folded: () => Promise<void>;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(1, ms)));
}

export class SenderJournal {
  private current: Journal;
  /** Records not yet applied by the receiver, oldest first (for lag and folding into bitmaps). */
  readonly unapplied = new UnappliedQueue();
  /** Highest seq whose journal write completed. */
  private written = -1;
  private syncing: Promise<void> | undefined;
  private syncTimer: NodeJS.Timeout | undefined;
  private lastSyncMs = 0;
  private readonly durableWaiters = new Set<() => void>();

  constructor(private readonly options: SenderJournalOptions) {
    this.current = options.journal;
  }

  get journal(): Journal {
    return this.current;
  }

  get writtenSeq(): number {
    return this.written;
  }

  /**
   * Reserves a record (seq and journal place in one synchronous step) and queues it as unapplied
   * with its region (none for a marker), so a fold from memory (the journal failed) still names it.
   */
  reserve(meta: Omit<RecordMeta, 'seq'>, dataBytes: number): Reservation {
    const reservation = this.current.reserve(meta, dataBytes);
    const region = meta.kind === 'marker' ? undefined : { lun: meta.lun, offset: meta.offset, length: meta.length };
    this.unapplied.push({ seq: reservation.seq, timestampMs: meta.timestampMs, bytes: reservation.recordBytes, region });
    return reservation;
  }

  /** Writes a reserved record; from then on it counts among the written ones. */
  async write(reservation: Reservation, meta: Omit<RecordMeta, 'seq'>, data: Buffer | undefined): Promise<void> {
    await this.current.write(reservation, meta, data);
    this.recordWritten(reservation.seq);
  }

  /**
   * Appends a record that is not a host write (base, trim, marker): waits for journal space
   * (and for `hasRoom()`) while `keepGoing()`, never overflowing; its seq, or -1 when it gave up.
   */
  async append(meta: Omit<RecordMeta, 'seq'>, data: Buffer | undefined, keepGoing: () => boolean, hasRoom: () => boolean = () => true): Promise<number> {
    for (;;) {
      if (hasRoom()) {
        try {
          const reservation = this.reserve(meta, data?.length ?? 0);
          await this.write(reservation, meta, data);
          return reservation.seq;
        } catch (error) {
          if (!isTwinstoreError(error) || error.code !== 'JOURNAL_FULL') throw error;
        }
      }
      if (this.options.stopped() || !keepGoing()) return -1;
      await sleep(spaceRetryMs);
    }
  }

  private recordWritten(seq: number): void {
    if (seq > this.written) this.written = seq;
    if (this.durableWaiters.size > 0) this.scheduleSync();
  }

  /**
   * FLUSH/FUA: every record written so far, and every earlier one, durable; P-VOLs synced too.
   * The two do not depend on each other (a record never waits for its P-VOL write), so the
   * flush round and the journal sync run side by side. A failed sync fails the FLUSH and is reported.
   */
  async flush(options: FlushOptions): Promise<void> {
    const target = this.written;
    const synced = Promise.all([
      options.engineFlush().catch((error: unknown) => this.syncFailed(error, 'P-VOL sync')),
      this.journalDurable(target, options).catch((error: unknown) => this.syncFailed(error, 'journal sync')),
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
  private journalDurable(seq: number, options: FlushOptions): Promise<void> {
    if (this.current.failed && !options.replicating()) return options.folded();
    return this.durableThrough(seq);
  }

  /**
   * A failed sync fails the FLUSH and suspends the group. After a failed P-VOL sync the drive may
   * have dropped any write since the last good flush: those lie in the activity log's regions.
   */
  private async syncFailed(error: unknown, what: 'P-VOL sync' | 'journal sync'): Promise<never> {
    if (isIoError(error)) await this.options.report({ kind: 'drive-error', what, error, activeRegionsLost: what === 'P-VOL sync' });
    throw error;
  }

  /**
   * For the receiver only (host FLUSH/FUA sync at once): one journal sync per
   * `senderSyncIntervalMs` at most. Every sync is an fdatasync of the drives, which
   * also forces out the P-VOL writes sharing them; batching keeps ingest near page-cache
   * speed while the lag stays a few milliseconds.
   */
  scheduleSync(): void {
    if (this.syncing || this.syncTimer) return;
    const wait = Math.max(0, this.lastSyncMs + senderSyncIntervalMs - this.options.now());
    this.syncTimer = setTimeout(() => {
      this.syncTimer = undefined;
      this.lastSyncMs = this.options.now();
      void this.sync().catch((error: unknown) => this.options.log.error({ err: (error as Error).message }, 'journal sync failed'));
    }, wait);
  }

  private sync(): Promise<void> {
    if (this.syncing) return this.syncing;
    const round = this.current.sync().finally(() => {
      this.syncing = undefined;
      for (const wake of [...this.durableWaiters]) wake();
      if (this.durableWaiters.size > 0 && this.current.durableSeq <= this.written && !this.current.failed) this.scheduleSync();
    });
    round.catch((error: unknown) => {
      if (isIoError(error)) void this.options.report({ kind: 'drive-error', what: 'journal sync', error }).catch((e: unknown) => this.options.log.error({ err: (e as Error).message }, 'suspend on a drive error failed'));
    });
    this.syncing = round;
    return round;
  }

  /** Waits until every record up to `seq` is durable in the journal. */
  async durableThrough(seq: number): Promise<void> {
    while (this.current.durableSeq <= seq && !this.options.stopped()) {
      await this.sync();
      if (this.current.durableSeq <= seq) await new Promise((r) => setTimeout(r, 1));
    }
  }

  /** Resolves once the record `seq` is durable, the group stopped, or after `timeoutMs`. */
  waitDurable(seq: number, timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        if (this.current.durableSeq > seq || this.options.stopped()) finish();
      };
      const finish = (): void => {
        clearTimeout(timer);
        this.durableWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(finish, timeoutMs);
      this.durableWaiters.add(done);
      if (this.written >= seq) this.scheduleSync();
    });
  }

  /** At a stop: no sync is scheduled any more, and every waiter hears of it. */
  stop(): void {
    clearTimeout(this.syncTimer);
    for (const wake of [...this.durableWaiters]) wake();
  }

  /** After a restart: the records still kept (not applied by the receiver) give lag and folding their start. */
  async loadUnapplied(): Promise<void> {
    this.unapplied.clear();
    await scanJournal({
      journal: this.current,
      fromSeq: this.current.tailSeq,
      batchBytesMax: readBatchBytesMax,
      onRecord: (r) => {
        const region = r.kind === 'marker' ? undefined : { lun: r.lun, offset: r.offset, length: r.length };
        this.unapplied.push({ seq: r.seq, timestampMs: r.timestampMs, bytes: 4096 + Math.ceil((r.data?.length ?? 0) / 4096) * 4096, region });
      },
      // A damaged record (its header intact, its data not) is kept: sending it suspends the group.
      onDamaged: (error) => {
        const region = error.region ? { lun: error.region.lun, offset: error.region.offset, length: error.region.length } : undefined;
        this.unapplied.push({ seq: error.seq, timestampMs: this.options.now(), bytes: 4096 + Math.ceil((region?.length ?? 0) / 4096) * 4096, region });
      },
    });
    this.written = this.current.nextSeq - 1;
  }

  /** The journal starts a new instance at `firstSeq` (no record kept): no seq below it is given to a write again. */
  async goOnFrom(firstSeq: number, epoch: Epoch): Promise<void> {
    await this.current.setRole('master', epoch, { keepRecords: false, firstSeq });
    this.written = firstSeq - 1;
  }

  /**
   * After a drive error stopped the journal (fail-stop): opens it again from the device; recovery
   * keeps the intact records, released up to what the receiver applied. Fails while the drive
   * fails. The caller then loads the unapplied records again (loadUnapplied).
   */
  async reopen(device: JournalDevice, receiverApplied: number): Promise<RecoveryReport> {
    const { journal, recovery } = await Journal.open(device);
    this.current = journal;
    journal.release(Math.min(receiverApplied, journal.durableSeq));
    return recovery;
  }
}
