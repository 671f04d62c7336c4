// Extent allocation across drives, with two safety rules (issue 2):
// - an extent that may hold old data is zeroed before a volume uses it. Extents
//   at or above a drive's durable `cleanFrom` mark were never written and need no
//   zeroing; the mark is advanced (durably, in batches) before such an extent is
//   handed out, so a crash can never make a written extent look clean.
// - a released extent is reused only once its release is durable (the flush round
//   that carried it has committed) and no I/O that started before still pins it,
//   so a crash or a slow read never shows one volume's old data in another.

import { TwinstoreError, assert } from '../errors.js';
import type { DriveUse } from './drives.js';
import { extentRef, refDrive, refExtent, type ExtentRef, type MetaRecord, type MetaState } from './meta-model.js';

const cleanMarkBatchExtents = 256;

interface DriveSpace {
  index: number;
  use: DriveUse;
  extentCount: number;
  /** First never-used extent (in memory). */
  cleanNext: number;
  /** The durable cleanFrom: extents below may hold data. */
  cleanMarked: number;
  marking: Promise<void> | undefined;
  /** Free extents that may hold old data: zero before use. */
  dirtyFree: number[];
}

export interface Allocation {
  ref: ExtentRef;
  needsZeroing: boolean;
}

export class ExtentAllocator {
  private readonly spaces: DriveSpace[] = [];
  private nextDrive = 0;
  private readonly pins = new Map<ExtentRef, number>();
  /** Released since the last flush round drained its records. */
  private releasedUndrained: ExtentRef[] = [];
  /** Released durably, waiting for their pins to drop. */
  private readonly releasedDurable = new Set<ExtentRef>();

  constructor(
    state: MetaState,
    openDrives: Array<{ index: number; use: DriveUse }>,
    private readonly commitNow: (records: MetaRecord[]) => Promise<void>,
  ) {
    const used = new Set<ExtentRef>();
    for (const volume of state.volumes.values()) for (const ref of volume.map.values()) used.add(ref);
    for (const { index, use } of openDrives) {
      const meta = state.drives[index]!;
      const space: DriveSpace = {
        index,
        use,
        extentCount: meta.extentCount,
        cleanNext: Math.min(meta.cleanFrom, meta.extentCount),
        cleanMarked: meta.cleanFrom,
        marking: undefined,
        dirtyFree: [],
      };
      for (let e = space.cleanNext - 1; e >= 0; e--) if (!used.has(extentRef(index, e))) space.dirtyFree.push(e);
      this.spaces.push(space);
    }
  }

  /**
   * Reserves an extent now (synchronously); resolves once it is safe to write. Round-robin over
   * the drives of the pool: `journal` takes journal drives first and data drives when none has
   * room (or none exists); `data` never takes a journal drive.
   */
  allocate(pool: DriveUse = 'data'): Promise<Allocation> {
    const tiers = pool === 'journal' ? [this.spaces.filter((s) => s.use === 'journal'), this.spaces.filter((s) => s.use === 'data')] : [this.spaces.filter((s) => s.use === 'data')];
    for (const spaces of tiers) {
      for (let tries = 0; tries < spaces.length; tries++) {
        const space = spaces[this.nextDrive++ % spaces.length]!;
        if (space.cleanNext < space.extentCount) {
          const extent = space.cleanNext++;
          return this.markClean(space, extent).then(() => ({ ref: extentRef(space.index, extent), needsZeroing: false }));
        }
        const extent = space.dirtyFree.pop();
        if (extent !== undefined) return Promise.resolve({ ref: extentRef(space.index, extent), needsZeroing: true });
      }
    }
    return Promise.reject(new TwinstoreError('NO_SPACE', `no free extent left on any ${pool} drive`));
  }

  /** Makes sure `extent` lies below the durable clean mark before anything writes it. */
  private async markClean(space: DriveSpace, extent: number): Promise<void> {
    while (extent >= space.cleanMarked) {
      if (space.marking === undefined) {
        const from = Math.min(space.extentCount, extent + cleanMarkBatchExtents);
        space.marking = this.commitNow([{ t: 'clean', drive: space.index, from }])
          .then(() => {
            space.cleanMarked = Math.max(space.cleanMarked, from);
          })
          .finally(() => {
            space.marking = undefined;
          });
      }
      await space.marking;
    }
  }

  pin(ref: ExtentRef): void {
    this.pins.set(ref, (this.pins.get(ref) ?? 0) + 1);
  }

  unpin(ref: ExtentRef): void {
    const count = this.pins.get(ref);
    assert(count !== undefined && count > 0, 'unpin matches a pin');
    if (count > 1) return void this.pins.set(ref, count - 1);
    this.pins.delete(ref);
    if (this.releasedDurable.delete(ref)) this.makeFree(ref);
  }

  /** The extent left its volume's map; it becomes reusable after the next durable flush round. */
  release(ref: ExtentRef): void {
    this.releasedUndrained.push(ref);
  }

  /** Called when a flush round takes its records: the releases it carries. */
  drainReleases(): ExtentRef[] {
    const drained = this.releasedUndrained;
    this.releasedUndrained = [];
    return drained;
  }

  /** Called once the round that carried these releases is durable. */
  releasesDurable(refs: ExtentRef[]): void {
    for (const ref of refs) {
      if (this.pins.has(ref)) this.releasedDurable.add(ref);
      else this.makeFree(ref);
    }
  }

  private makeFree(ref: ExtentRef): void {
    const space = this.spaces.find((s) => s.index === refDrive(ref));
    if (space !== undefined) space.dirtyFree.push(refExtent(ref));
  }

  freeExtents(): number {
    let free = 0;
    for (const space of this.spaces) free += space.extentCount - space.cleanNext + space.dirtyFree.length;
    return free;
  }

  /** One drive's extents: all it holds and those free (the drive's index in the live table). */
  driveExtents(index: number): { total: number; free: number } {
    const space = this.spaces.find((s) => s.index === index);
    if (space === undefined) return { total: 0, free: 0 };
    return { total: space.extentCount, free: space.extentCount - space.cleanNext + space.dirtyFree.length };
  }

  totalExtents(): number {
    return this.spaces.reduce((sum, space) => sum + space.extentCount, 0);
  }
}
