// The master's recovery after an unclean stop (docs/architecture.md §3.5): which regions may
// hold P-VOL blocks the journal does not (uncleanRegions), re-applying the records still in the
// journal to the P-VOLs (redoJournal), and re-sending those regions to the receiver as one
// atomic unit of base records (ResendState, units.ts).
//
// The re-send appends its records through the group (it owns the journal's sequence space),
// and reports its outcome: `'none'` (no region's pair replicates), `'too-large'` (the unit cannot fit in the journal: its regions are
// in the bitmaps, and the group suspends), `'sent'` (the end marker is in the journal) or
// `'cut-short'` (a suspension or a stop ended it; the group's suspension folds what is still
// pending into the bitmaps, foldPending). Until the unit's end is in the journal, its regions
// stay pending: the activity log keeps them, so a restart re-sends them again.

import { assert } from '../../errors.js';
import type { Journal } from '../../journal/index.js';
import type { StorageEngine, Volume } from '../../storage/index.js';
import type { Logger } from '../../util/log.js';
import { RangesByLun, markRanges, regionRanges, unmarkedRanges } from '../bitmap-marks.js';
import { scanJournal } from '../journal-scan.js';
import type { PairMeta } from '../model.js';
import type { DurableRegionSet } from '../region-set.js';
import { unitMarker } from '../units.js';

/** Data bytes per journal read of the redo. */
const redoBatchBytesMax = 16 * 2 ** 20;
/**
 * A re-send is one atomic unit the receiver holds whole before applying it, so it must fit
 * in the journal beside the host writes made meanwhile: larger ones suspend the group instead.
 */
const resendShareMax = 0.5;

/** What recovery needs of a P-VOL of the group. */
export interface RecoveredPvol {
  pair: PairMeta;
  volume: Volume;
  /** The activity log: every region a host write may have reached since the last clean stop. */
  activity: DurableRegionSet;
  bitmap: DurableRegionSet;
}

export interface VolumeRange {
  lun: number;
  offset: number;
  length: number;
}

/**
 * After an unclean stop: the regions the activity log names, and those of records the journal's
 * recovery cut off at a torn end (`cut`, normally inside them already), to re-send as base records.
 */
export function uncleanRegions(pvols: Iterable<RecoveredPvol>, cut: ReadonlyArray<VolumeRange>): VolumeRange[] {
  const out: VolumeRange[] = [];
  for (const pvol of pvols) {
    const regionBytes = pvol.activity.regionBytes;
    const regions = new Set(pvol.activity.values());
    for (const record of cut) {
      if (record.lun !== pvol.pair.pvolLun || record.offset >= pvol.volume.sizeBytes || record.length === 0) continue;
      for (const r of pvol.activity.regionsOf(record.offset, Math.min(record.length, pvol.volume.sizeBytes - record.offset))) regions.add(r);
    }
    for (const r of [...regions].sort((a, b) => a - b)) {
      const offset = r * regionBytes;
      if (offset < pvol.volume.sizeBytes) out.push({ lun: pvol.pair.pvolLun, offset, length: Math.min(regionBytes, pvol.volume.sizeBytes - offset) });
    }
  }
  return out;
}

/**
 * After an unclean stop: re-applies to the P-VOLs every record still in the journal, since a
 * record may be durable while its P-VOL write was lost. In order, before any host write; records
 * are idempotent, so repeating one already on disk is harmless. Except over regions marked in
 * the bitmap: a host write taken the bitmap way (the group suspended or split) may be newer than
 * every record there, and a flushed one must not be rolled back; those regions are copied to the
 * S-VOL by the next resync whatever they hold. Resolves with the number of records redone.
 */
export async function redoJournal(options: { journal: Journal; pvols: ReadonlyMap<number, RecoveredPvol>; engine: StorageEngine }): Promise<number> {
  const { journal, pvols, engine } = options;
  let count = 0;
  const damaged = new RangesByLun();
  await scanJournal({
    journal,
    fromSeq: journal.tailSeq,
    batchBytesMax: redoBatchBytesMax,
    onRecord: async (record) => {
      const pvol = pvols.get(record.lun);
      if (!pvol || record.kind === 'marker') return;
      for (const [offset, length] of unmarkedRanges(pvol.bitmap, record.offset, record.length)) {
        const at = offset - record.offset;
        if (record.kind === 'write' || record.kind === 'base') await pvol.volume.write(offset, record.data!.subarray(at, at + length));
        else await pvol.volume.writeZeroes(offset, length, false);
      }
      count += 1;
    },
    // A damaged record cannot be redone: its region goes into the bitmap (after the redo, so
    // the intact records over it are still redone) and the resync copies it.
    onDamaged: (error) => {
      if (error.region) damaged.add(error.region.lun, error.region.offset, error.region.length);
    },
  });
  await engine.flush();
  for (const [lun, ranges] of damaged.entries()) {
    const pvol = pvols.get(lun);
    if (pvol) await markRanges(pvol.bitmap, pvol.volume.sizeBytes, ranges);
  }
  return count;
}

/** How a re-send ended (see the module comment). */
export type ResendOutcome = 'none' | 'sent' | 'too-large' | 'cut-short';

/** The group's side of a re-send: its journal's records, in its sequence space. */
export interface ResendJournal {
  readonly capacityBytes: number;
  /** Bytes of one base record at most. */
  readonly chunkBytes: number;
  /** The group has stopped (demoted, deleted, shut down). */
  stopped(): boolean;
  /** The pair of this LUN still replicates (COPY or PAIR). */
  journaling(lun: number): boolean;
  /** Appends a unit marker, waiting for space while any pair replicates; its seq, or -1 when it gave up. */
  appendMarker(code: number): Promise<number>;
  /** Appends [offset, offset + length) of the P-VOL as a base (or trim) record; its seq, or -1. */
  appendChunk(lun: number, offset: number, length: number): Promise<number>;
}

/** The re-send after an unclean stop: the unit being appended and the regions still owed. */
export class ResendState {
  /** Activity regions (per LUN) whose re-send has not finished. */
  private readonly pending = new Map<number, Set<number>>();
  private running = false;

  constructor(private readonly pvols: ReadonlyMap<number, RecoveredPvol>, private readonly log: Logger) {}

  /** A re-send unit is being appended (a planned swap waits for its end marker). */
  get resending(): boolean {
    return this.running;
  }

  /** Some region's re-send has not finished (a clean stop keeps the activity log then). */
  get anyPending(): boolean {
    return this.pending.size > 0;
  }

  /** The activity regions of `lun` still to be re-sent: they may hold blocks newer than the journal. */
  pendingOf(lun: number): ReadonlySet<number> | undefined {
    return this.pending.get(lun);
  }

  /**
   * Re-sends regions as base records, in the group's sequence space, as one atomic unit
   * (units.ts): the receiver applies it whole or not at all. A unit too big for the journal, or
   * cut short by a suspension, leaves the S-VOLs at the consistency point before it.
   */
  async resend(regions: VolumeRange[], journal: ResendJournal): Promise<ResendOutcome> {
    this.running = true;
    try {
      return await this.resendUnit(regions, journal);
    } finally {
      this.running = false;
    }
  }

  private async resendUnit(regions: VolumeRange[], journal: ResendJournal): Promise<ResendOutcome> {
    const live = regions.filter((r) => journal.journaling(r.lun));
    if (live.length === 0) return 'none';
    for (const r of live) {
      const pvol = this.pvolOf(r.lun);
      const pending = this.pending.get(r.lun) ?? new Set<number>();
      for (const region of pvol.activity.regionsOf(r.offset, r.length)) pending.add(region);
      this.pending.set(r.lun, pending);
    }
    const bytes = live.reduce((n, r) => n + r.length, 0);
    if (bytes > journal.capacityBytes * resendShareMax) {
      this.log.warn({ bytes, capacity: journal.capacityBytes }, 'active regions too large to re-send as one unit; suspending');
      for (const r of live) await this.pvolOf(r.lun).bitmap.mark(r.offset, r.length);
      return 'too-large';
    }
    if ((await journal.appendMarker(unitMarker.begin)) < 0) return 'cut-short';
    for (const region of live) {
      for (let at = region.offset; at < region.offset + region.length; at += journal.chunkBytes) {
        if (journal.stopped() || !journal.journaling(region.lun)) return 'cut-short';
        await journal.appendChunk(region.lun, at, Math.min(journal.chunkBytes, region.offset + region.length - at));
      }
    }
    if (journal.stopped() || (await journal.appendMarker(unitMarker.end)) < 0) return 'cut-short';
    this.pending.clear();
    return 'sent';
  }

  /**
   * A re-send unit cut short by a suspension: the regions it had not sent yet are in no record,
   * so they go into the bitmaps for the resync to copy.
   */
  async foldPending(): Promise<void> {
    for (const [lun, pending] of this.pending) {
      const pvol = this.pvols.get(lun);
      if (pvol) await markRanges(pvol.bitmap, pvol.volume.sizeBytes, regionRanges(pvol.activity, pending));
    }
    // In the bitmaps (durably), the regions no longer need the activity log to be re-sent.
    this.pending.clear();
  }

  private pvolOf(lun: number): RecoveredPvol {
    const pvol = this.pvols.get(lun);
    assert(pvol !== undefined, `a re-sent region's LUN ${lun} is a P-VOL of the group`);
    return pvol;
  }
}
