// The NBD server's global budget of request buffers (`nbd.bufferedBytesMax`):
// WRITE payloads being received or run, and READ buffers from the drive read
// until their reply has left the socket. Every connection draws from it, so a
// client that stalls payloads or never reads its replies cannot take the
// process's memory: once the budget is spent, a connection that needs more
// stops reading (back-pressure) and waits here until buffers come back.
// Buffers larger than `smallBytesMax` (big payloads, big READs) may fill only
// `largeBytesShare` of it: the rest is kept for small requests, so stalled big
// writes or unread big replies cannot stop other clients' 4 KiB I/O.
// Taking and giving are O(1); waiting is the rare path.

import { assert } from '../errors.js';

/** Buffers up to this size may use the whole budget. */
export const smallBytesMax = 2 ** 20;
/** The part of the budget that larger buffers may fill together. */
export const largeBytesShare = 0.75;

export interface BudgetWaiter {
  /** Called (from a fresh tick) after bytes came back; the waiter tries again. */
  budgetFreed(): void;
}

export class ByteBudget {
  private usedBytes = 0;
  private readonly waiters = new Set<BudgetWaiter>();
  private wakeScheduled = false;
  private readonly largeBytesMax: number;

  constructor(readonly bytesMax: number) {
    assert(Number.isSafeInteger(bytesMax) && bytesMax > 0, 'a byte budget is a positive whole number');
    this.largeBytesMax = Math.floor(bytesMax * largeBytesShare);
  }

  get used(): number {
    return this.usedBytes;
  }

  /** Takes `bytes` if they fit (a large buffer within the large share); false means wait(). */
  tryTake(bytes: number): boolean {
    if (this.usedBytes + bytes > (bytes > smallBytesMax ? this.largeBytesMax : this.bytesMax)) return false;
    this.usedBytes += bytes;
    return true;
  }

  give(bytes: number): void {
    this.usedBytes -= bytes;
    assert(this.usedBytes >= 0, 'a byte budget never gives back more than it lent');
    if (this.waiters.size > 0 && !this.wakeScheduled) {
      this.wakeScheduled = true;
      setImmediate(() => this.wake());
    }
  }

  wait(waiter: BudgetWaiter): void {
    this.waiters.add(waiter);
  }

  forget(waiter: BudgetWaiter): void {
    this.waiters.delete(waiter);
  }

  /** Every waiter tries again, in the order they came; one that still does not fit waits again. */
  private wake(): void {
    this.wakeScheduled = false;
    const waiting = [...this.waiters];
    this.waiters.clear();
    for (const waiter of waiting) waiter.budgetFreed();
  }
}
