// A token bucket for bytes: what `link.bandwidthMax` caps (issue 17). The
// master answers each journal pull with at most what the bucket holds, and a
// pull that finds it empty waits for it to fill (bounded by the pull's own
// long-poll wait). The bucket holds at most burstSeconds of the rate, so a
// link idle for an hour cannot then send an hour's worth at once. One bucket
// is shared by every group the array sends, so the cap is the array's, over
// all of them; the journal carries host writes and copies alike (base
// records), so copies are paced by it too. Debt is allowed: a record larger
// than what is left is still sent whole (a record is never split), and the
// next pulls wait until the debt is paid.

import { assert } from '../errors.js';

/** The bucket holds at most this many seconds of the rate. */
export const burstSeconds = 0.25;

export class BytePacer {
  private tokens: number;
  private at: number;

  constructor(readonly bytesPerSecond: number, private readonly now: () => number = Date.now) {
    assert(bytesPerSecond > 0, 'a pacer has a rate');
    this.tokens = this.capacity;
    this.at = now();
  }

  private get capacity(): number {
    return this.bytesPerSecond * burstSeconds;
  }

  private refill(): void {
    const now = this.now();
    this.tokens = Math.min(this.capacity, this.tokens + ((now - this.at) / 1000) * this.bytesPerSecond);
    this.at = now;
  }

  /** Bytes that may be sent now (0 while in debt). */
  available(): number {
    this.refill();
    return Math.max(0, Math.floor(this.tokens));
  }

  /** Milliseconds until some bytes may be sent (0: now). */
  waitMs(): number {
    this.refill();
    return this.tokens > 0 ? 0 : Math.max(1, Math.ceil((-this.tokens / this.bytesPerSecond) * 1000));
  }

  /** Counts bytes sent (the bucket may go into debt). */
  take(bytes: number): void {
    assert(bytes >= 0, 'bytes taken are not negative');
    this.refill();
    this.tokens -= bytes;
  }
}
