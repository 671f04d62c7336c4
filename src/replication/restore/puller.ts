// Why this exists: how records reach the receiver, apart from applying them
// (applier.ts) and deciding what they mean (group.ts). The puller asks the
// master for durable records from its journal's next seq (`journal.read`, one
// request in flight; each request carries this side's stored and applied
// cursors and any report), stores the answer's records in the restore journal
// and makes them durable. The next request goes out while the previous batch
// is still being stored, so at most two batches are being stored at a time.
// What the answer says beyond records — statuses, a skip point, a full copy
// marked — goes to the group, which decides.

import { TwinstoreError, isTwinstoreError } from '../../errors.js';
import type { Journal } from '../../journal/index.js';
import { isIoError } from '../../storage/index.js';
import type { Logger } from '../../util/log.js';
import { AnswerRefusedError, linkRequest, type DamagedRecord, type JournalReadAnswer, type PeerChannel, type ReceiverDriveError } from '../protocol.js';
import { retryMs, sleep } from './applier.js';

/** One pull asks for at most this many data bytes. */
export const pullBytesMax = 8 * 2 ** 20;

/** What the puller needs from its group, and what it tells it. */
export interface PullOwner {
  readonly journal: Journal;
  readonly peer: PeerChannel;
  readonly log: Logger;
  readonly groupName: string;
  /** What this side reports with the next pull. */
  reports(): { appliedSeq: number; damaged?: DamagedRecord; driveError?: ReceiverDriveError; journalLost: boolean; restorePaused: boolean };
  /** The answer's statuses and the master's newest seq. */
  answered(answer: JournalReadAnswer): Promise<void>;
  /** The master marked every region for a full copy (the answer to journalLost): go on at `skipTo`. */
  fullCopyMarked(skipTo: number): Promise<void>;
  /** The master's resync re-copies every record below `seq`: pass over them. */
  skipTo(seq: number): Promise<void>;
  /** The restore journal stopped on a drive error: open it again. */
  reopenJournal(): Promise<void>;
  /** Storing records failed on this array's drive, or works again. */
  storeFailed(error: Error): void;
  stored(): void;
}

export class Puller {
  private running = false;
  private stopped = false;
  private loop: Promise<void> | undefined;
  /** The last malformed answer logged at warn. */
  private answerRefused: string | undefined;
  /** Where the pull failed: an IO_ERROR from the request is the master's drive, not ours. */
  private stage: 'request' | 'store' = 'request';

  constructor(private readonly owner: PullOwner) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.pullLoop();
  }

  /** No pull after the one in flight; resolves once the loop has ended. */
  async stopPulling(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  private async pullLoop(): Promise<void> {
    let storing: Promise<void> = Promise.resolve();
    const journal = (): Journal => this.owner.journal;
    // Damage lost records this side had applied already (the journal's applied cursor is past its
    // records): they are not needed again, and the master may have freed them. Go on from there.
    if (journal().appliedSeq > journal().nextSeq) {
      await this.owner.skipTo(journal().appliedSeq).catch((error: unknown) => this.owner.log.error({ err: (error as Error).message }, 'restore journal: skipping to the applied cursor failed'));
    }
    while (this.running && !this.stopped) {
      if (!this.owner.peer.connected) {
        await storing.catch(() => undefined);
        await sleep(retryMs);
        continue;
      }
      try {
        if (journal().failed) {
          await storing.catch(() => undefined);
          // While the drive still fails, pull anyway: the request carries the report to the master.
          await this.owner.reopenJournal().catch((error: unknown) => {
            if (!isIoError(error)) throw error;
            this.owner.storeFailed(error);
          });
        }
        const batch = await this.pullOnce();
        await storing;
        storing = batch.durable;
        if (batch.skipTo !== undefined) {
          await storing;
          storing = Promise.resolve();
          await this.owner.skipTo(batch.skipTo);
        }
      } catch (error) {
        await storing.catch(() => undefined);
        storing = Promise.resolve();
        if (isIoError(error) && this.stage === 'store') this.owner.storeFailed(error);
        else if (this.running && error instanceof AnswerRefusedError && error.message !== this.answerRefused) {
          // An answer protocol.ts refused: said once (a master that keeps sending it is not logged every pull).
          this.answerRefused = error.message;
          this.owner.log.warn({ code: error.code, err: error.message }, 'journal pull: the master\'s answer is malformed and was refused; retrying');
        } else if (this.running) this.owner.log.debug({ err: (error as Error).message }, 'journal pull failed; retrying');
        await sleep(retryMs);
      }
    }
    await storing.catch(() => undefined);
  }

  /** Asks for the next batch and reserves it; resolves with the promise of its being durable. */
  private async pullOnce(): Promise<{ durable: Promise<void>; skipTo?: number }> {
    this.stage = 'request';
    const journal = this.owner.journal;
    const { appliedSeq, damaged, driveError, journalLost, restorePaused } = this.owner.reports();
    const response = await linkRequest(this.owner.peer, 'journal.read', {
      group: this.owner.groupName,
      fromSeq: journal.nextSeq,
      maxBytes: pullBytesMax,
      storedSeq: journal.durableSeq,
      appliedSeq,
      ...(damaged === undefined ? {} : { damaged }),
      ...(driveError === undefined ? {} : { driveError }),
      ...(journalLost ? { journalLost: true } : {}),
      ...(restorePaused ? { restorePaused: true } : {}),
    });
    this.stage = 'store';
    const reply = response.body;
    await this.owner.answered(reply);
    if (journalLost) {
      if (reply.fullCopyMarked === true) await this.owner.fullCopyMarked(reply.skipTo);
      return { durable: Promise.resolve() };
    }
    const skipTo = reply.skipTo;
    if (skipTo !== undefined && reply.records.length === 0) return { durable: Promise.resolve(), skipTo };
    let payloadIndex = 0;
    const writes: Promise<void>[] = [];
    for (const record of reply.records) {
      // protocol.ts checked that each record with data has its segment; the link checked the segment's CRC.
      const index = record.dataBytes > 0 ? payloadIndex++ : undefined;
      const data = index === undefined ? undefined : response.payload[index];
      const dataCrc = index === undefined ? undefined : response.payloadCrcs?.[index];
      if (record.seq !== journal.nextSeq) {
        throw new TwinstoreError('LINK_PROTOCOL', `record ${record.seq} arrived where ${journal.nextSeq} was expected`);
      }
      const meta = { kind: record.kind, epoch: record.epoch, timestampMs: record.timestampMs, lun: record.lun, offset: record.offset, length: record.length };
      let reservation;
      try {
        reservation = journal.reserve({ ...meta, seq: record.seq }, record.dataBytes);
      } catch (error) {
        // Our journal is full (restore is behind): store what fitted, ask again from there later.
        if (isTwinstoreError(error) && error.code === 'JOURNAL_FULL' && writes.length > 0) break;
        throw error;
      }
      // The payload buffer is the journal's from here (it keeps it to apply from: record-window.ts).
      writes.push(journal.write(reservation, meta, data, { handedOver: true, ...(dataCrc === undefined ? {} : { dataCrc }) }));
    }
    if (writes.length === 0) return { durable: Promise.resolve(), ...(skipTo === undefined ? {} : { skipTo }) };
    const durable = Promise.all(writes)
      .then(() => journal.sync())
      .then(() => this.owner.stored());
    durable.catch(() => undefined);
    return { durable, ...(skipTo === undefined ? {} : { skipTo }) };
  }
}
