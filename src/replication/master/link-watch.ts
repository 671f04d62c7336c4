// The master's watch on the receiver's pulls: a tick every quarter of the shorter of
// `suspendAfterMs` and `fenceAfterMs` (between 50 ms and 1 s) reports how long the receiver has
// been silent once that passes one of them; the group decides (PSUE link-down, or fence data).

/** Bounds of the watch's tick. */
const tickMsMin = 50;
const tickMsMax = 1000;

export class LinkWatch {
  private timer: NodeJS.Timeout | undefined;

  /** Starts (or restarts) the watch; `silent` hears the silence in ms once past a threshold. */
  start(options: { suspendAfterMs: number; fenceAfterMs: number; silentMs: () => number; silent: (silentMs: number) => void }): void {
    this.stop();
    const thresholdMs = Math.min(options.suspendAfterMs, options.fenceAfterMs);
    this.timer = setInterval(() => {
      const silentMs = options.silentMs();
      if (silentMs >= thresholdMs) options.silent(silentMs);
    }, Math.min(tickMsMax, Math.max(tickMsMin, thresholdMs / 4)));
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
