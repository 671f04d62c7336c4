// When the sender's journal must go on past seqs it can no longer vouch for (docs/architecture.md
// §6): the receiver stored records past this journal's end (a resync skips past them), the journal
// lost synced records (damage in the middle, a lost header), or a drive error stopped it and a
// resync or a fence opens it again. No seq a receiver may hold is ever given to another write.
// A loss is reported (`journal-lost`): the group decides the suspension that goes with it.

import { TwinstoreError } from '../../errors.js';
import type { StorageEngine } from '../../storage/index.js';
import type { Logger } from '../../util/log.js';
import type { JournalDevice } from '../../journal/index.js';
import type { Volume } from '../../storage/index.js';
import type { GroupMeta } from '../model.js';
import type { Fold } from './fold.js';
import type { SenderJournal } from './journal-sync.js';
import type { ReportOutcome } from './outcomes.js';
import type { ReceiverService } from './serve.js';

/** Bytes of the smallest record (its header block, no data): a skipped seq counts this in the lag, and a journal holds at most capacity / this records. */
const recordBytesMin = 4096;

export interface JournalSkipOptions {
  meta: Pick<GroupMeta, 'name' | 'epoch' | 'skipTo' | 'journalVolumeId'>;
  engine: StorageEngine;
  sender: SenderJournal;
  receiver: Pick<ReceiverService, 'receiverApplied' | 'receiverStored' | 'servedAtLeast' | 'servedFrom'>;
  fold: Pick<Fold, 'everyRegion'>;
  persist: () => Promise<void>;
  now: () => number;
  log: Logger;
  report: ReportOutcome;
  /** The device of the journal volume when it is opened again (the factory the simulator sets). */
  journalDevice: (volume: Volume) => JournalDevice;
}

export class JournalSkip {
  private reopening: Promise<void> | undefined;

  constructor(private readonly options: JournalSkipOptions) {}

  /**
   * Before a resync, when the receiver holds records past this journal's end (receiverAhead): the
   * journal starts a new instance at the receiver's next seq, so no seq it holds is given to
   * another write. Every record it had not applied went into the bitmaps at the suspension.
   */
  async pastReceiver(): Promise<void> {
    const { meta, sender, receiver } = this.options;
    const from = sender.journal.nextSeq;
    const to = receiver.receiverStored;
    this.options.log.warn({ from, to }, 'the receiver holds records past this journal: the journal goes on from its next seq');
    meta.skipTo = to;
    await sender.goOnFrom(to, meta.epoch);
    // The receiver still applies what it stored: those records stay in the lag until it has.
    for (let seq = Math.max(from, receiver.receiverApplied); seq < to; seq += 1) sender.unapplied.push({ seq, timestampMs: this.options.now(), bytes: recordBytesMin, region: undefined });
    receiver.servedFrom(to);
  }

  /**
   * The journal lost synced records from `fromSeq` on (damage in the middle, JournalRecovery
   * lostFrom): which regions they wrote is unknown, so every region of every P-VOL goes into the
   * bitmaps. The lost records may have reached the receiver, so their seqs are never given to
   * other writes: no seq past twice the journal's capacity in records was ever written (the
   * persisted tail lags the real one by less than a lap); the journal goes on past that, and the
   * receiver skips to it (its next pull is told). Then reported: the group suspends.
   */
  async lost(fromSeq: number, reason: string): Promise<void> {
    const { meta, sender } = this.options;
    this.options.log.error({ fromSeq, reason }, 'journal damaged: synced records cannot be read back; every region goes into the bitmaps');
    await this.options.fold.everyRegion();
    const skipTo = Math.max(fromSeq + 2 * Math.ceil(sender.journal.capacityBytes / recordBytesMin), sender.journal.nextSeq);
    meta.skipTo = skipTo;
    await sender.goOnFrom(skipTo, meta.epoch);
    sender.unapplied.clear();
    this.options.receiver.servedAtLeast(skipTo);
    await this.options.persist();
    await this.options.report({ kind: 'journal-lost', reason });
    await sender.journal.acknowledgeStartedAgain();
  }

  /**
   * The journal was started again after its newest header was lost (Journal.open, headerLost): its
   * records are gone like those past a lostFrom. Called wherever a journal is opened; the journal
   * keeps saying so until this has been done. True when it had.
   */
  async startedAgain(): Promise<boolean> {
    const journal = this.options.sender.journal;
    if (!journal.startedAgainPending) return false;
    this.options.log.error({ nextSeq: journal.nextSeq }, 'journal header lost: the journal started again, empty, past every seq on its ring');
    await this.lost(journal.nextSeq, 'its header was lost: the journal started again, empty, past every seq on its ring');
    return true;
  }

  /** A journal a drive error stopped, opened again; it may have started again empty (startedAgain). */
  reopen(): Promise<void> {
    // A resync and a fence may both find the journal stopped: one reopen, the other waits for it.
    if (this.reopening === undefined) this.reopening = this.reopenNow().then(() => this.startedAgain()).then(() => undefined).finally(() => { this.reopening = undefined; });
    return this.reopening;
  }

  /**
   * After a drive error stopped the journal (fail-stop), a resync or a fence opens it again from
   * the device: recovery keeps the intact records, which the receiver may still need; every record
   * it has not applied went into the bitmaps at the suspension. Fails while the drive still fails.
   */
  private async reopenNow(): Promise<void> {
    const { meta, engine, sender, receiver } = this.options;
    const volume = engine.volumeById(meta.journalVolumeId);
    if (!volume) throw new TwinstoreError('VOLUME_NOT_FOUND', `journal of group ${meta.name} is missing`);
    const recovery = await sender.reopen(this.options.journalDevice(volume), receiver.receiverApplied);
    // Ending below what the receiver stored, the resync that called this skips past it (pastReceiver).
    receiver.servedAtLeast(sender.journal.nextSeq);
    await sender.loadUnapplied();
    sender.unapplied.dropBelow(receiver.receiverApplied);
    this.options.log.warn({ case: recovery.case, nextSeq: sender.journal.nextSeq }, 'journal opened again after a drive error');
  }
}
