// What the master's region bitmaps still owe beside the journal: the parts of a
// record the bitmap leaves to the redo after an unclean stop (a marked region
// may hold a newer bitmap-way write, so the redo leaves it to the resync), and
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
  // In metadata records of a bounded size: a large volume's remainder is millions of regions.
  const stepBytes = markRegionsPerRecordMax * bitmap.regionBytes;
  for (let at = pair.copyOffset; at < sizeBytes; at += stepBytes) await bitmap.addAll(bitmap.regionsOf(at, Math.min(stepBytes, sizeBytes - at)));
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
