// What the master's region bitmaps still owe beside the journal: marking byte ranges of a
// P-VOL (a suspension's fold, a damaged record, a lost journal, the peer's dirty ranges),
// clamped to the volume and in metadata records of a bounded size; the parts of a
// record the bitmap leaves to the redo after an unclean stop (a marked region
// may hold a newer bitmap-way write, so the redo leaves it to the resync); and
// the part of the P-VOL an initial copy never reached when it was suspended,
// which goes into the bitmap before the pair turns to a resync.

import type { DurableRegionSet } from './region-set.js';
import type { PairMeta } from './model.js';

/** Regions added in one metadata record (about 8 MiB of it; a record holds at most 64 MiB). */
const markRegionsPerRecordMax = 2 ** 20;

/**
 * An initial copy suspended part-way (link-down, journal-full, a drive error) never queued
 * [copyOffset, end): before its pair turns to a resync, which copies only the bitmap, that part
 * goes into the bitmap, durably. The group document still says `initial` until then, so a crash
 * before it marks again at the next resync.
 */
export async function markCopyRemainder(pair: PairMeta, sizeBytes: number, bitmap: DurableRegionSet): Promise<void> {
  if (pair.copyKind === 'resync' || pair.copyOffset >= sizeBytes) return;
  await markRanges(bitmap, sizeBytes, [[pair.copyOffset, sizeBytes - pair.copyOffset]]);
}

/**
 * Every bitmap region of the byte ranges [offset, offset + length) goes into the bitmap of a
 * P-VOL of `sizeBytes`, durably. Each range is clamped to the volume: one that starts past its
 * end names nothing there (an empty range inside it names the region at its offset, as
 * regionsOf does). In metadata records of a bounded size: a whole large volume is millions of
 * regions.
 */
export async function markRanges(bitmap: DurableRegionSet, sizeBytes: number, ranges: Iterable<readonly [number, number]>): Promise<void> {
  const stepBytes = markRegionsPerRecordMax * bitmap.regionBytes;
  const pending = new Set<number>();
  const commit = async (): Promise<void> => {
    if (pending.size > 0) await bitmap.addAll([...pending]);
    pending.clear();
  };
  for (const [offset, length] of ranges) {
    if (offset < 0 || offset >= sizeBytes) continue;
    const end = offset + Math.min(length, sizeBytes - offset);
    for (let at = offset; at === offset || at < end; at += stepBytes) {
      const regions = bitmap.regionsOf(at, Math.min(stepBytes, end - at));
      if (pending.size + regions.length > markRegionsPerRecordMax) await commit();
      for (const region of regions) pending.add(region);
    }
  }
  await commit();
}

/** The parts of [offset, offset + length) whose bitmap regions are not marked, as [offset, length] ranges. */
export function unmarkedRanges(bitmap: DurableRegionSet, offset: number, length: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  const end = offset + length;
  for (const region of bitmap.regionsOf(offset, length)) {
    if (bitmap.has(region)) continue;
    const from = Math.max(offset, region * bitmap.regionBytes);
    const to = Math.min(end, (region + 1) * bitmap.regionBytes);
    if (to <= from) continue;
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === from) last[1] += to - from;
    else out.push([from, to - from]);
  }
  return out;
}

/** Regions of a set (an activity log's, a bitmap's) as the byte ranges they stand for. */
export function regionRanges(set: DurableRegionSet, regions: Iterable<number>): Array<[number, number]> {
  return [...regions].map((r): [number, number] => [r * set.regionBytes, set.regionBytes]);
}

/** Byte ranges gathered per LUN (a fold, a redo's damaged records) before they go into the bitmaps. */
export class RangesByLun {
  private readonly byLun = new Map<number, Array<[number, number]>>();
  /** How many ranges were added. */
  count = 0;

  add(lun: number, offset: number, length: number): void {
    let ranges = this.byLun.get(lun);
    if (ranges === undefined) {
      ranges = [];
      this.byLun.set(lun, ranges);
    }
    ranges.push([offset, length]);
    this.count += 1;
  }

  entries(): IterableIterator<[number, Array<[number, number]>]> {
    return this.byLun.entries();
  }
}
