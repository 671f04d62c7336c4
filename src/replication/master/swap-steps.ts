// A planned swap's steps on the old primary (docs/architecture.md §6), the part that is not a
// pair status: the drain (step 1: host writes flow while the receiver catches up to at most
// `swap.lagBytesMax` behind, shown as SWAP/draining until the freeze or `drainMsMax`) and the
// freeze's gate (new host writes wait at it at most `holdMsMax`, then fail if still frozen, or go
// on if the swap was aborted). The group turns the pairs to SWAP and back (group.ts).

import { TwinstoreError } from '../../errors.js';

/** How often a drain looks at the lag. */
const drainPollMs = 20;

interface Gate {
  promise: Promise<void>;
  open: () => void;
  holdMsMax: number;
}

export class SwapSteps {
  private gate: Gate | undefined;
  /** The drain is shown until this time (our clock); 0: none. */
  private drainUntilMs = 0;

  constructor(private readonly now: () => number) {}

  /** Shown as SWAP/draining (display). */
  get draining(): boolean {
    return this.drainUntilMs > this.now();
  }

  /** The drain is over (a freeze, a thaw, an abort). */
  endDrain(): void {
    this.drainUntilMs = 0;
  }

  /** Step 1 of a planned swap: shown as draining for `drainMsMax` at most. */
  startDrain(drainMsMax: number): void {
    this.drainUntilMs = this.now() + drainMsMax;
  }

  /**
   * The drain: waits while host writes flow until `lagBytes()` is at most `lagBytesMax`. `left()`
   * names the status (or 'stopped') that ends a swap here: an answer, not a silence, so the
   * receiver aborts the swap rather than take over without this array.
   */
  async drainTo(options: { groupName: string; lagBytesMax: number; drainMsMax: number; lagBytes: () => number; left: () => string | undefined }): Promise<void> {
    const { groupName, lagBytesMax, drainMsMax } = options;
    const deadline = this.now() + drainMsMax;
    this.drainUntilMs = Math.max(this.drainUntilMs, deadline);
    while (options.lagBytes() > lagBytesMax) {
      const left = options.left();
      if (left !== undefined || this.now() >= deadline) this.drainUntilMs = 0;
      if (left !== undefined) throw new TwinstoreError('PAIR_INVALID', `swap of ${groupName} aborted: the group is ${left} here, a planned swap needs PAIR`, { field: 'group' });
      if (this.now() >= deadline) throw new TwinstoreError('SWAP_DRAIN_TIMEOUT', `swap of ${groupName} aborted: the lag is still ${options.lagBytes()} bytes (swap.lagBytesMax ${lagBytesMax}) after ${drainMsMax} ms of drain (swap.drainMsMax); nothing changed`);
      await new Promise((r) => setTimeout(r, drainPollMs));
    }
  }

  /** The freeze: new host writes wait at the gate from now on (a gate already closed stays). */
  closeGate(holdMsMax: number): void {
    if (this.gate) return;
    let open = (): void => undefined;
    const promise = new Promise<void>((resolve) => { open = resolve; });
    this.gate = { promise, open, holdMsMax };
  }

  /** The held host writes go on (to be admitted or refused by the group). */
  openGate(): void {
    const gate = this.gate;
    this.gate = undefined;
    gate?.open();
  }

  /** A host write during a freeze waits for the thaw, or `holdMsMax` at most: an error, not a hang. */
  async holdAtGate(): Promise<void> {
    const gate = this.gate;
    if (!gate) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => { timer = setTimeout(resolve, gate.holdMsMax); });
    await Promise.race([gate.promise, timeout]);
    clearTimeout(timer);
  }
}
