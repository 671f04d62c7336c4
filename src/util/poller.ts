// Adaptive polling, as qemu's iothreads do (poll-max-ns): after I/O activity the
// event loop keeps polling without sleeping for a short window, so the next
// request of a queue-depth-1 client is picked up at once instead of after a
// cross-CPU wake-up, which costs tens of microseconds on virtual machines.
// The window is bounded; an idle array sleeps as usual.

export class AdaptivePoller {
  private lastActivityNs = 0n;
  private spinning = false;
  private readonly windowNs: bigint;

  constructor(windowMicros: number) {
    this.windowNs = BigInt(Math.max(0, Math.round(windowMicros * 1000)));
  }

  /** Notes activity; starts polling if it is not running. */
  kick(): void {
    if (this.windowNs === 0n) return;
    this.lastActivityNs = process.hrtime.bigint();
    if (this.spinning) return;
    this.spinning = true;
    setImmediate(() => this.spin());
  }

  private spin(): void {
    if (process.hrtime.bigint() - this.lastActivityNs < this.windowNs) setImmediate(() => this.spin());
    else this.spinning = false;
  }
}
