// A suspension's fold (docs/architecture.md §6): every record the receiver has not applied goes
// into the region bitmaps, read back from the journal itself (which keeps them until the
// receiver's appliedSeq), or from the unapplied queue in memory when the journal cannot be read;
// so a later resync copies those regions. Also the other ways regions go into the bitmaps
// wholesale: every region (a journal lost here or at the receiver) and the activity log's regions
// (a failed sync, a fence).

import { isIoError } from '../../storage/index.js';
import type { Logger } from '../../util/log.js';
import { RangesByLun, regionRanges } from '../bitmap-marks.js';
import { scanJournal } from '../journal-scan.js';
import { readBatchBytesMax, type SenderJournal } from './journal-sync.js';
import { markBitmap, type Pvols } from './pvols.js';

export interface FoldOptions {
  sender: SenderJournal;
  pvols: Pvols;
  log: Logger;
}

export class Fold {
  /** The latest suspension's fold of the unapplied records into the bitmaps. */
  private folding: Promise<void> = Promise.resolve();

  constructor(private readonly options: FoldOptions) {}

  /** The latest suspension's fold (it may have failed: `again` folds again). */
  get done(): Promise<void> {
    return this.folding;
  }

  /** A suspension's fold of the records from `fromSeq` on (the receiver's applied cursor). */
  start(fromSeq: number): Promise<void> {
    this.folding = this.unapplied(fromSeq);
    return this.folding;
  }

  /** A fold that failed (sim seed 51: every later resync failed on its stale rejection) is done again. */
  async again(fromSeq: () => number): Promise<void> {
    await this.folding.catch(async (error: unknown) => {
      this.options.log.warn({ err: (error as Error).message }, 'the suspension\'s fold of the unapplied records failed; folding them again');
      await this.start(fromSeq());
    });
  }

  /** Every record from `fromSeq` on goes into the bitmaps (from memory if the journal is unreadable). */
  async unapplied(fromSeq: number): Promise<void> {
    try {
      await this.fromJournal(fromSeq);
    } catch (error) {
      if (!isIoError(error)) throw error;
      // The journal cannot be read back (a drive error): the unapplied queue names the same regions.
      this.options.log.warn({ err: error.message }, 'journal unreadable; folding the unapplied records from memory');
      const folded = new RangesByLun();
      for (const { region } of this.options.sender.unapplied.from(fromSeq)) if (region) folded.add(region.lun, region.offset, region.length);
      await this.markFolded(folded);
    }
  }

  /** Every region of every P-VOL into the bitmaps: the next resync copies everything. */
  async everyRegion(): Promise<void> {
    for (const pvol of this.options.pvols.values()) await markBitmap(pvol, [[0, pvol.volume.sizeBytes]]);
  }

  /** The activity log's regions into the bitmaps: they may hold writes no record carries. */
  async activeRegions(): Promise<void> {
    for (const pvol of this.options.pvols.values()) await markBitmap(pvol, regionRanges(pvol.activity, pvol.activity.values()));
  }

  /** One byte range of a LUN into its bitmap (a LUN no longer in the group names nothing). */
  async range(lun: number, ranges: Array<readonly [number, number]>): Promise<void> {
    const pvol = this.options.pvols.get(lun);
    if (pvol) await markBitmap(pvol, ranges);
  }

  private async fromJournal(fromSeq: number): Promise<void> {
    const { sender, pvols, log } = this.options;
    const journal = sender.journal;
    const folded = new RangesByLun();
    await journal.sync();
    const seq = await scanJournal({
      journal,
      fromSeq: Math.max(fromSeq, journal.tailSeq),
      batchBytesMax: readBatchBytesMax,
      // The receiver applied them meanwhile (the journal frees only what it applied): nothing to fold there.
      skipReleased: true,
      onRecord: (record) => {
        if (record.kind !== 'marker') folded.add(record.lun, record.offset, record.length);
      },
      onDamaged: (error) => {
        // A damaged header names no region; the record as it was queued does (sim seed 226: a write
        // whose record header a bit flip hit was never re-sent, and its blocks differed at lag 0).
        const queued = error.region === undefined ? sender.unapplied.from(error.seq).find((r) => r.seq === error.seq) : undefined;
        const region = error.region ?? queued?.region;
        if (region) folded.add(region.lun, region.offset, region.length);
        else if (queued === undefined) {
          log.error({ seq: error.seq }, 'a damaged journal record names no region: every region goes into the bitmaps');
          for (const [lun, pvol] of pvols) folded.add(lun, 0, pvol.volume.sizeBytes);
        }
      },
    });
    // Records reserved but not yet durable (host writes in flight as the group suspended) lie past
    // the scan; the queue names their regions. Left out, they would be in no bitmap, and the resync's
    // skipTo passes over their records: the S-VOL would never get those blocks.
    let inFlight = 0;
    for (const { region } of sender.unapplied.from(seq)) {
      if (!region) continue;
      folded.add(region.lun, region.offset, region.length);
      inFlight += 1;
    }
    await this.markFolded(folded);
    log.info({ records: seq - fromSeq, inFlight, ranges: folded.count }, 'unapplied records folded into the bitmaps');
  }

  /** The folded ranges of each P-VOL into its bitmap (a LUN no longer in the group names nothing). */
  private async markFolded(folded: RangesByLun): Promise<void> {
    for (const [lun, ranges] of folded.entries()) await this.range(lun, ranges);
  }
}
