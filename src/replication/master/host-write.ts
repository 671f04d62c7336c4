// The P-VOL write path (docs/architecture.md §3), per host write: admitted by the group (the one
// place that decides whether a volume may be written, MasterGroup.admitHostWrite); take the range
// lock (overlapping writes then take sequence numbers in the order they reach the P-VOL); reserve
// sequence and journal place in one synchronous step; mark the region in the activity log
// (durable before any write); write the record; only then write the P-VOL. A pair that does not
// journal (suspended, split) takes the bitmap way: the region's bitmap mark is durable first.
//
// A full journal past the overflow policy's wait and a drive I/O error are reported to the group
// (`journal-full`, `drive-error`), which suspends; the write then goes the bitmap way or fails.

import { isTwinstoreError } from '../../errors.js';
import type { RecordKind, RecordMeta, Reservation } from '../../journal/index.js';
import { isIoError, type StorageEngine, type Volume } from '../../storage/index.js';
import { isPlanted } from '../../util/planted.js';
import type { GroupMeta } from '../model.js';
import type { ReportOutcome } from './outcomes.js';
import type { Pvol } from './pvols.js';
import { sleep, type SenderJournal } from './journal-sync.js';

const activityRegionsMax = 512;
/** A throttled host write tries the full journal again after this long at most. */
const throttleRetryMsMax = 50;

export interface HostWritesOptions {
  meta: Pick<GroupMeta, 'epoch' | 'overflow' | 'throttleMsMax' | 'trackedWrites'>;
  sender: SenderJournal;
  engine: Pick<StorageEngine, 'flush'>;
  pvolOf: (lun: number) => Pvol;
  /** The group's admission: waits (start hold, swap freeze), then throws if host writes are refused. */
  admit: () => Promise<void>;
  /** Whether an admitted host write to this P-VOL gets a record (else: the bitmap way). */
  journals: (pvol: Pvol) => boolean;
  /** The activity regions of a LUN still to be re-sent after an unclean stop (restart.ts). */
  resendPending: (lun: number) => ReadonlySet<number> | undefined;
  persist: () => Promise<void>;
  now: () => number;
  report: ReportOutcome;
}

export class HostWrites {
  private inFlight = 0;
  private readonly writesDrained: Array<() => void> = [];
  /** Host writes going the bitmap way right now (a resync waits for them before reading the bitmap). */
  private bitmapWrites = 0;
  private readonly bitmapDrained: Array<() => void> = [];
  /** Host writes taken the bitmap way since this process started (at least one when meta.trackedWrites). */
  private trackedWriteCount = 0;
  private trackedPersist: Promise<void> | undefined;

  constructor(private readonly options: HostWritesOptions) {}

  write(lun: number, offset: number, data: Buffer): Promise<void> {
    return this.hostWrite(lun, 'write', offset, data.length, data, (v) => v.write(offset, data));
  }

  writeZeroes(lun: number, offset: number, length: number, keepAllocated: boolean): Promise<void> {
    return this.hostWrite(lun, 'zero', offset, length, undefined, (v) => v.writeZeroes(offset, length, keepAllocated));
  }

  trim(lun: number, offset: number, length: number): Promise<void> {
    return this.hostWrite(lun, 'trim', offset, length, undefined, (v) => v.writeZeroes(offset, length, false));
  }

  /** Resolves once no admitted host write is in flight (a swap's freeze waits for them). */
  async drained(): Promise<void> {
    if (this.inFlight > 0) await new Promise<void>((resolve) => this.writesDrained.push(resolve));
  }

  /** Resolves once no host write is on its way to the bitmap (a resync reads the bitmap after them). */
  async bitmapWritesDrained(): Promise<void> {
    if (this.bitmapWrites > 0) await new Promise<void>((resolve) => this.bitmapDrained.push(resolve));
  }

  /** Host writes taken the bitmap way here since the last resync: at least one once persisted so. */
  get trackedCount(): number {
    return this.options.meta.trackedWrites === true ? Math.max(1, this.trackedWriteCount) : 0;
  }

  /** A resync: from now on the peer gets every write again (the caller clears meta.trackedWrites). */
  resetTracked(): void {
    this.trackedWriteCount = 0;
  }

  private async hostWrite(lun: number, kind: RecordKind, offset: number, length: number, data: Buffer | undefined, apply: (v: Volume) => Promise<void>): Promise<void> {
    await this.options.admit();
    this.inFlight += 1;
    try {
      await this.hostWriteOpen(lun, kind, offset, length, data, apply);
    } finally {
      this.inFlight -= 1;
      if (this.inFlight === 0) for (const wake of this.writesDrained.splice(0)) wake();
    }
  }

  private async hostWriteOpen(lun: number, kind: RecordKind, offset: number, length: number, data: Buffer | undefined, apply: (v: Volume) => Promise<void>): Promise<void> {
    const pvol = this.options.pvolOf(lun);
    const unlock = await pvol.locks.acquire(offset, length);
    const regions = pvol.activity.regionsOf(offset, length);
    for (const r of regions) pvol.activeWrites.set(r, (pvol.activeWrites.get(r) ?? 0) + 1);
    try {
      if (!this.options.journals(pvol)) return await this.bitmapWrite(pvol, offset, length, apply);
      const reserved = await this.reserveForHost(pvol, kind, offset, length);
      if (reserved === undefined) return await this.bitmapWrite(pvol, offset, length, apply);
      await this.journaledWrite(pvol, reserved.reservation, reserved.meta, data, apply);
    } finally {
      for (const r of regions) {
        const left = (pvol.activeWrites.get(r) ?? 1) - 1;
        if (left === 0) pvol.activeWrites.delete(r);
        else pvol.activeWrites.set(r, left);
      }
      unlock();
    }
  }

  /**
   * Activity mark, record, then the P-VOL write (docs/architecture.md §3). A drive I/O error on the way
   * fails this host write, and its regions go into the bitmap before the host hears of it: the
   * record may reach the S-VOL while the P-VOL write did not happen, so a resync must copy them.
   * Then the group suspends (PSUE `drive-error: …`).
   */
  private async journaledWrite(pvol: Pvol, reservation: Reservation, meta: Omit<RecordMeta, 'seq'>, data: Buffer | undefined, apply: (v: Volume) => Promise<void>): Promise<void> {
    let step = 'activity log';
    try {
      await this.markActivity(pvol, meta.offset, meta.length);
      step = 'journal write';
      if (isPlanted('pvol-before-journal')) await apply(pvol.volume);
      await this.options.sender.write(reservation, meta, data);
      step = `P-VOL ${pvol.pair.pvolName} write`;
      if (!isPlanted('pvol-before-journal')) await apply(pvol.volume);
    } catch (error) {
      if (!isIoError(error)) throw error;
      if (step === 'activity log') await this.fillReservation(reservation, meta, data);
      await pvol.bitmap.mark(meta.offset, meta.length);
      await this.options.report({ kind: 'drive-error', what: step, error });
      throw error;
    }
  }

  /**
   * A reserved record that is never written leaves a gap no later record can become durable past:
   * it is written although its host write failed (the region is in the bitmap; either content is
   * one the host may see after an error). If the journal itself failed, a resync opens it again.
   */
  private async fillReservation(reservation: Reservation, meta: Omit<RecordMeta, 'seq'>, data: Buffer | undefined): Promise<void> {
    try {
      await this.options.sender.write(reservation, meta, data);
    } catch (error) {
      if (!isIoError(error)) throw error;
    }
  }

  /** A host write while the pair is suspended or split: the bitmap mark is durable before the write. */
  private async bitmapWrite(pvol: Pvol, offset: number, length: number, apply: (v: Volume) => Promise<void>): Promise<void> {
    this.bitmapWrites += 1;
    try {
      await this.noteTrackedWrite();
      await pvol.bitmap.mark(offset, length);
      await apply(pvol.volume);
    } finally {
      this.bitmapWrites -= 1;
      if (this.bitmapWrites === 0) for (const wake of this.bitmapDrained.splice(0)) wake();
    }
  }

  /**
   * A host write the peer will not get until a resync: the first since the last resync makes
   * `trackedWrites` durable before it is written, so a demotion (resync --swap, a discard) knows
   * this side holds writes the other never saw, across restarts.
   */
  private noteTrackedWrite(): Promise<void> {
    const meta = this.options.meta;
    this.trackedWriteCount += 1;
    if (meta.trackedWrites === true && this.trackedPersist === undefined) return Promise.resolve();
    if (this.trackedPersist === undefined) {
      meta.trackedWrites = true;
      this.trackedPersist = this.options.persist().finally(() => { this.trackedPersist = undefined; });
    }
    return this.trackedPersist;
  }

  /** Reserves a record for a host write; on a full journal applies the overflow policy (undefined: suspended). */
  private async reserveForHost(pvol: Pvol, kind: RecordKind, offset: number, length: number): Promise<{ reservation: Reservation; meta: Omit<RecordMeta, 'seq'> } | undefined> {
    const { meta: group, now, report } = this.options;
    const dataBytes = kind === 'write' ? length : 0;
    const deadline = now() + (group.overflow === 'throttle' ? group.throttleMsMax : 0);
    for (;;) {
      if (!this.options.journals(pvol)) return undefined;
      const meta = { kind, epoch: group.epoch, timestampMs: now(), lun: pvol.pair.pvolLun, offset, length };
      try {
        return { reservation: this.options.sender.reserve(meta, dataBytes), meta };
      } catch (error) {
        if (isIoError(error)) {
          // The journal stopped on a drive error: suspended, this write goes the bitmap way.
          await report({ kind: 'drive-error', what: 'journal', error });
          return undefined;
        }
        if (!isTwinstoreError(error) || error.code !== 'JOURNAL_FULL') throw error;
        if (now() >= deadline) {
          await report({ kind: 'journal-full' });
          return undefined;
        }
        await sleep(Math.min(throttleRetryMsMax, deadline - now()));
      }
    }
  }

  private async markActivity(pvol: Pvol, offset: number, length: number): Promise<void> {
    if (pvol.activity.regionsOf(offset, length).every((r) => pvol.activity.has(r))) return;
    if (pvol.activity.size >= activityRegionsMax) await this.retireActivity(pvol);
    await pvol.activity.mark(offset, length);
  }

  /** Makes all completed writes durable, then drops activity regions with no write in flight. */
  private async retireActivity(pvol: Pvol): Promise<void> {
    // A region still to be re-sent stays: it may hold blocks newer than the journal.
    const pending = this.options.resendPending(pvol.pair.pvolLun);
    const retirable = (r: number): boolean => !pvol.activeWrites.has(r) && !(pending?.has(r) ?? false);
    const candidates = pvol.activity.values().filter(retirable);
    await this.options.engine.flush();
    await pvol.activity.remove(candidates.filter(retirable));
  }
}
