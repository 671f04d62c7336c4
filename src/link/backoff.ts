// Reconnect delays: capped exponential back-off with "equal jitter". Attempt n
// (from 0) has the ceiling min(maxMs, minMs · 2^n); the delay is half the
// ceiling plus a random part of the other half, and never below minMs. The
// randomness comes from a seeded PRNG, so a seed replays the same delays, and
// two arrays with different seeds do not retry in lockstep.

import { assert } from '../errors.js';
import { Prng } from '../util/prng.js';

export class Backoff {
  private attempt = 0;
  private readonly prng: Prng;

  constructor(private readonly options: { minMs: number; maxMs: number; seed: number }) {
    assert(options.minMs >= 1 && options.maxMs >= options.minMs, 'back-off bounds: 1 <= minMs <= maxMs');
    this.prng = new Prng(options.seed);
  }

  /** The ceiling of the next delay. */
  get ceilingMs(): number {
    return Math.min(this.options.maxMs, this.options.minMs * 2 ** this.attempt);
  }

  /** The delay before the next attempt; each call counts one more failed attempt. */
  next(): number {
    const ceiling = this.ceilingMs;
    if (ceiling < this.options.maxMs) this.attempt += 1;
    const delay = Math.round(ceiling / 2 + (this.prng.next() * ceiling) / 2);
    const bounded = Math.max(this.options.minMs, Math.min(ceiling, delay));
    assert(bounded >= this.options.minMs && bounded <= this.options.maxMs, 'back-off delay within its bounds');
    return bounded;
  }

  /** After a connection came up: the next failure starts again from minMs. */
  reset(): void {
    this.attempt = 0;
  }
}
