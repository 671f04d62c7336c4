// The P-VOLs of a master group, as every part of the group sees them: the volume, its range lock
// (overlapping writes and copies take it), its activity log and its region bitmap, and the
// marking of byte ranges into the bitmap. The group attaches them; the parts read the map.

import { TwinstoreError } from '../../errors.js';
import { RangeLock } from '../../storage/range-lock.js';
import type { StorageEngine } from '../../storage/index.js';
import { markRanges } from '../bitmap-marks.js';
import { bitmapSetName, type PairMeta } from '../model.js';
import { DurableRegionSet } from '../region-set.js';
import type { RecoveredPvol } from './restart.js';

const activityRegionBytes = 16 * 2 ** 20;

export interface Pvol extends RecoveredPvol {
  locks: RangeLock;
  /** Host writes in flight per activity region. */
  activeWrites: Map<number, number>;
}

export type Pvols = ReadonlyMap<number, Pvol>;

/** A pair's P-VOL with its range lock, activity log and bitmap (metadata sets of the engine). */
export function openPvol(options: { engine: StorageEngine; groupName: string; pair: PairMeta; regionBytes: number }): Pvol {
  const { engine, groupName, pair } = options;
  const volume = engine.volumeById(pair.localVolumeId);
  if (!volume) throw new TwinstoreError('VOLUME_NOT_FOUND', `P-VOL ${pair.pvolName} of group ${groupName} is missing`);
  return {
    pair,
    volume,
    locks: new RangeLock(),
    activity: new DurableRegionSet(engine, `al:${volume.meta.id}`, activityRegionBytes),
    bitmap: new DurableRegionSet(engine, bitmapSetName(groupName, pair.pvolLun), options.regionBytes),
    activeWrites: new Map(),
  };
}

/** The P-VOL of `lun`, or VOLUME_NOT_FOUND. */
export function pvolOf(pvols: Pvols, groupName: string, lun: number): Pvol {
  const pvol = pvols.get(lun);
  if (!pvol) throw new TwinstoreError('VOLUME_NOT_FOUND', `group ${groupName} has no P-VOL with LUN ${lun}`);
  return pvol;
}

/** Every bitmap region of the byte ranges, clamped to the P-VOL, goes into its bitmap (durably). */
export function markBitmap(pvol: Pvol, ranges: Iterable<readonly [number, number]>): Promise<void> {
  return markRanges(pvol.bitmap, pvol.volume.sizeBytes, ranges);
}

/** Every bitmap region of every pair, as byte ranges keyed by P-VOL name (for a reverse resync). */
export function dirtyRanges(pvols: Pvols): Array<{ pvolName: string; ranges: Array<[number, number]> }> {
  return [...pvols.values()].map((pvol) => ({
    pvolName: pvol.pair.pvolName,
    ranges: pvol.bitmap.values().sort((a, b) => a - b).map((r): [number, number] => [r * pvol.bitmap.regionBytes, pvol.bitmap.regionBytes]),
  }));
}
