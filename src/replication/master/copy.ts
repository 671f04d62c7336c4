// The initial copy and the resync (docs/architecture.md §6): base records for the whole P-VOL, or
// for every region marked in its bitmap, appended in the group's sequence space under the range
// lock, several chunks side by side, paced by `copyPaceBytesPerSecond`. Base records leave the
// journal's last `copyReserveFraction` to host writes. Progress is in the pair's copy fields;
// once the last record is queued (copyLastSeq) the copy reports `copy-progress`, and the group
// turns the pair to PAIR when the receiver has applied it. A failure is reported (`copy-error`).

import type { RecordKind } from '../../journal/index.js';
import { markCopyRemainder } from '../bitmap-marks.js';
import type { GroupMeta } from '../model.js';
import type { DirtyRanges } from '../protocol.js';
import type { SenderJournal } from './journal-sync.js';
import type { PartContext } from './outcomes.js';
import { markBitmap, type Pvol, type Pvols } from './pvols.js';
import type { ResendJournal } from './restart.js';

export const copyChunkBytes = 2 ** 20;
/** Copy chunks (initial copy, resync) read and journaled side by side. */
const copyChunksInFlightMax = 8;
/** Base records leave this share of the journal to host writes. */
const copyReserveFraction = 0.25;
/** The initial copy persists its offset every this many chunks. */
const copyPersistChunks = 64;
/** A resync persists its bitmap every this many regions copied. */
const resyncCommitRegions = 1024;

export interface CopierOptions extends PartContext {
  meta: Pick<GroupMeta, 'epoch' | 'copyPaceBytesPerSecond'>;
  sender: SenderJournal;
  pvolOf: (lun: number) => Pvol;
  persist: () => Promise<void>;
}

export class Copier {
  private readonly copying = new Set<number>();

  constructor(private readonly options: CopierOptions) {}

  /** Queues base records for the whole P-VOL (or what is left of it after a restart), or its bitmap's regions. */
  start(lun: number): void {
    if (this.copying.has(lun)) return;
    const pvol = this.options.pvolOf(lun);
    if (pvol.pair.status !== 'COPY' || pvol.pair.copyLastSeq !== null) return;
    this.copying.add(lun);
    void (pvol.pair.copyKind === 'resync' ? this.resyncVolume(pvol) : this.copyVolume(pvol))
      .catch((error: unknown) => this.options.report({ kind: 'copy-error', lun, error: error as Error }))
      .finally(() => {
        this.copying.delete(lun);
        // A resync that began while this copy was ending (start above returned) starts its own.
        if (!this.options.stopped()) this.start(lun);
      });
  }

  private async copyVolume(pvol: Pvol): Promise<void> {
    const { sender, now, stopped } = this.options;
    const size = pvol.volume.sizeBytes;
    let lastSeq = -1;
    let paced = now();
    while (pvol.pair.copyOffset < size && !stopped() && pvol.pair.status === 'COPY') {
      const offset = pvol.pair.copyOffset;
      const chunks: Array<[number, number]> = [];
      for (let at = offset; at < size && chunks.length < copyChunksInFlightMax; at += copyChunkBytes) chunks.push([at, Math.min(copyChunkBytes, size - at)]);
      const seq = await this.copyChunks(pvol, chunks);
      // Suspended meanwhile: a record may have missed the fold, so [offset, end) stays owed (resync marks it).
      if (seq < 0 || pvol.pair.status !== 'COPY' || pvol.pair.copyKind === 'resync') return;
      lastSeq = seq;
      const length = chunks.reduce((n, [, l]) => n + l, 0);
      pvol.pair.copyOffset = offset + length;
      pvol.pair.copyDoneBytes = (pvol.pair.copyDoneBytes ?? 0) + length;
      if (pvol.pair.copyOffset % (copyPersistChunks * copyChunkBytes) === 0) {
        // The persisted offset says "copied below here": the base records below it must be durable first,
        // or a crash loses them while a restart resumes past them.
        await sender.durableThrough(lastSeq);
        await this.options.persist();
      }
      paced = await this.pace(paced, length);
    }
    if (pvol.pair.copyOffset >= size && pvol.pair.status === 'COPY') {
      pvol.pair.copyLastSeq = lastSeq;
      await sender.durableThrough(lastSeq);
      await this.queued();
    }
  }

  /**
   * A resync (pair resync): every region marked in the P-VOL's bitmap — host writes while split or
   * suspended, the peer's S-VOL writes, folded records — goes as base (or trim) records, adjacent
   * regions merged up to 1 MiB, under the range lock, in the group's sequence space. A region
   * leaves the bitmap only once its record is durable in the journal (from there the journal
   * carries it), so a restart goes on with what is left.
   */
  private async resyncVolume(pvol: Pvol): Promise<void> {
    const { sender, stopped, now } = this.options;
    let paced = now();
    const regionBytes = pvol.bitmap.regionBytes;
    const size = pvol.volume.sizeBytes;
    const regions = pvol.bitmap.values().sort((a, b) => a - b);
    let lastSeq = -1;
    let done: number[] = [];
    const commit = async (): Promise<void> => {
      if (lastSeq >= 0) await sender.durableThrough(lastSeq);
      await pvol.bitmap.remove(done);
      done = [];
      await this.options.persist();
    };
    for (let i = 0; i < regions.length && !stopped() && pvol.pair.status === 'COPY';) {
      const chunks: Array<[number, number]> = [];
      const first = i;
      while (i < regions.length && chunks.length < copyChunksInFlightMax) {
        let j = i;
        while (j + 1 < regions.length && regions[j + 1] === regions[j]! + 1 && (j + 2 - i) * regionBytes <= copyChunkBytes) j++;
        const offset = regions[i]! * regionBytes;
        chunks.push([offset, Math.min((j - i + 1) * regionBytes, size - offset)]);
        i = j + 1;
      }
      const seq = await this.copyChunks(pvol, chunks);
      if (seq < 0) return;
      lastSeq = seq;
      done.push(...regions.slice(first, i));
      const length = chunks.reduce((n, [, l]) => n + l, 0);
      pvol.pair.copyDoneBytes = (pvol.pair.copyDoneBytes ?? 0) + length;
      if (done.length >= resyncCommitRegions) await commit();
      paced = await this.pace(paced, length);
    }
    if (stopped() || pvol.pair.status !== 'COPY') return;
    await commit();
    // Nothing to copy still needs a point B must reach: everything journaled so far.
    pvol.pair.copyLastSeq = lastSeq >= 0 ? lastSeq : sender.journal.nextSeq - 1;
    this.options.log.info({ pvol: pvol.pair.pvolName, bytes: pvol.pair.copyDoneBytes }, 'resync: every marked region queued');
    await this.queued();
  }

  /**
   * `copyPaceBytesPerSecond` (pair create --copy-pace), for the initial copy and a resync alike:
   * `length` more bytes were queued; waits until the pace allows them. Returns the paced clock.
   */
  private async pace(paced: number, length: number): Promise<number> {
    const { meta, now } = this.options;
    if (meta.copyPaceBytesPerSecond <= 0) return paced;
    const next = paced + (length / meta.copyPaceBytesPerSecond) * 1000;
    const wait = next - now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    return next;
  }

  /** The copy's last record is queued (copyLastSeq, durable): persisted; the pair is done once B applied it. */
  private async queued(): Promise<void> {
    await this.options.persist();
    this.options.sender.scheduleSync();
    await this.options.report({ kind: 'copy-progress' });
  }

  /**
   * Copies chunks side by side (a read of one overlaps the journal write of another; each takes
   * its own range lock and sequence number). The highest seq, or -1 when one gave up.
   */
  private async copyChunks(pvol: Pvol, chunks: Array<[number, number]>): Promise<number> {
    const keepGoing = (): boolean => pvol.pair.status === 'COPY';
    const seqs = await Promise.all(chunks.map(([offset, length]) => this.copyChunk(pvol, offset, length, keepGoing)));
    return seqs.some((seq) => seq < 0) ? -1 : Math.max(-1, ...seqs);
  }

  /**
   * One chunk under the range lock: a base record with its data, or a trim record for a hole.
   * Waits for journal space while `keepGoing()` holds; -1 when it gave up. A copy leaves the
   * journal's last copyReserveFraction to host writes; a re-send unit's chunks (`leaveReserve`
   * false) do not: the receiver frees nothing of the unit before its end, so a unit waiting below
   * the reserve while host writes inside it filled the journal past it would wait for ever.
   */
  async copyChunk(pvol: Pvol, offset: number, length: number, keepGoing: () => boolean, leaveReserve = true): Promise<number> {
    const { sender } = this.options;
    const unlock = await pvol.locks.acquire(offset, length);
    try {
      const hole = pvol.volume.blockStatus(offset, length, 2).every((e) => e.hole);
      const kind: RecordKind = hole ? 'trim' : 'base';
      const data = hole ? undefined : Buffer.alloc(length);
      if (data) await pvol.volume.read(offset, data);
      const meta = { kind, epoch: this.options.meta.epoch, timestampMs: this.options.now(), lun: pvol.pair.pvolLun, offset, length };
      // Base records leave room for host writes: they wait below the reserve.
      const hasRoom = (): boolean => !leaveReserve || sender.journal.usedBytes + length <= sender.journal.capacityBytes * (1 - copyReserveFraction);
      return await sender.append(meta, data, keepGoing, hasRoom);
    } finally {
      unlock();
    }
  }

  /**
   * What a re-send after an unclean stop appends through (restart.ts): base records of the P-VOLs
   * in this journal's sequence space, not leaving the reserve; markers while `going()`.
   */
  resendJournal(options: { journaling: (lun: number) => boolean; going: () => boolean }): ResendJournal {
    const { sender, meta, now, pvolOf } = this.options;
    const { journaling, going } = options;
    return {
      capacityBytes: sender.journal.capacityBytes,
      chunkBytes: copyChunkBytes,
      stopped: this.options.stopped,
      journaling,
      appendMarker: (code) => sender.append({ kind: 'marker', epoch: meta.epoch, timestampMs: now(), lun: 0, offset: code, length: 0 }, undefined, going),
      appendChunk: (lun, offset, length) => this.copyChunk(pvolOf(lun), offset, length, () => journaling(lun), false),
    };
  }
}

/**
 * Before a resync: the peer's dirty ranges join the bitmaps (durably), and an initial copy
 * suspended part-way marks what it never reached (bitmap-marks.ts); the resync copies the bitmap.
 */
export async function markResync(pvols: Pvols, peerDirty: DirtyRanges[]): Promise<void> {
  for (const entry of peerDirty) {
    const pvol = pvols.get(entry.lun);
    if (!pvol) continue;
    // The peer's word: ranges outside the volume name nothing here (protocol.ts left out those that are not whole numbers).
    await markBitmap(pvol, entry.ranges.filter(([offset, length]) => length > 0 && offset < pvol.volume.sizeBytes));
  }
  for (const pvol of pvols.values()) await markCopyRemainder(pvol.pair, pvol.volume.sizeBytes, pvol.bitmap);
}

/** A resync's total per pair (copyTotalBytes): what its bitmap marks; the sum over the group. */
export function resyncTotals(pvols: Pvols): number {
  let dirtyBytes = 0;
  for (const pvol of pvols.values()) {
    pvol.pair.copyTotalBytes = Math.min(pvol.bitmap.size * pvol.bitmap.regionBytes, pvol.volume.sizeBytes);
    dirtyBytes += pvol.pair.copyTotalBytes;
  }
  return dirtyBytes;
}
