// The simulator's kernel (issue 5): one seeded PRNG, a simulated clock and an
// event queue that decides every ordering. Installed, it replaces the
// process's timers, Date and the randomness the arrays draw ids from, so the
// product code runs unchanged and one seed replays one run exactly.
//
// A step takes the earliest event (ties in the order they were queued), moves
// the clock to its time, runs it, and lets every promise reaction and
// nextTick it caused run out (one turn of the real event loop) before the next
// step: the code under test never sees a real timer or real I/O.
//
// Every event has an owner (an array, or 'sim'): a timer or an I/O completion
// set up while an owner's event runs belongs to it, so a crash of that array
// drops all of them at once, as a power cut stops a machine.

import crypto from 'node:crypto';
import { Prng } from '../../src/util/prng.js';

export type Owner = string;

interface SimEvent {
  at: number;
  order: number;
  owner: Owner;
  label: string;
  run: () => void;
  cancelled: boolean;
  /** A setInterval's period. */
  everyMs?: number;
}

const realSetImmediate = globalThis.setImmediate;

/** A timer handle as Node's timers hand out (ref/unref/refresh/hasRef). */
class SimTimer {
  constructor(readonly kernel: Kernel, public event: SimEvent) {}
  ref(): this { return this; }
  unref(): this { return this; }
  hasRef(): boolean { return true; }
  refresh(): this {
    this.kernel.reschedule(this);
    return this;
  }
  [Symbol.toPrimitive](): number {
    return this.event.order;
  }
}

export class Kernel {
  readonly prng: Prng;
  nowMs = 0;
  private queue: SimEvent[] = [];
  private order = 0;
  current: Owner = 'sim';
  steps = 0;
  private installed: Array<() => void> = [];
  /** A failure inside the code under test that nothing caught: the run fails with it. */
  unhandled: unknown[] = [];

  constructor(readonly seed: number) {
    this.prng = new Prng(seed);
  }

  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + this.prng.below(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.prng.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.prng.below(items.length)]!;
  }

  schedule(delayMs: number, label: string, run: () => void, owner: Owner = this.current): SimEvent {
    const event: SimEvent = { at: this.nowMs + Math.max(0, delayMs), order: this.order++, owner, label, run, cancelled: false };
    this.push(event);
    return event;
  }

  private push(event: SimEvent): void {
    // Binary insertion keeps the queue sorted by (at, order).
    let lo = 0;
    let hi = this.queue.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const m = this.queue[mid]!;
      if (m.at < event.at || (m.at === event.at && m.order < event.order)) lo = mid + 1;
      else hi = mid;
    }
    this.queue.splice(lo, 0, event);
  }

  reschedule(timer: SimTimer): void {
    const old = timer.event;
    old.cancelled = true;
    const delay = old.everyMs ?? Math.max(1, old.at - this.nowMs);
    const fresh = this.schedule(delay, old.label, old.run, old.owner);
    if (old.everyMs !== undefined) fresh.everyMs = old.everyMs;
    timer.event = fresh;
  }

  /** Drops every event of `owner` (its array crashed). */
  dropOwner(owner: Owner): number {
    let dropped = 0;
    for (const event of this.queue) {
      if (event.owner === owner && !event.cancelled) {
        event.cancelled = true;
        dropped += 1;
      }
    }
    this.queue = this.queue.filter((e) => !e.cancelled);
    return dropped;
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Runs the next event; false when none is due by `untilMs`. */
  async step(untilMs: number): Promise<SimEvent | undefined> {
    while (this.queue.length > 0 && this.queue[0]!.cancelled) this.queue.shift();
    const event = this.queue[0];
    if (event === undefined || event.at > untilMs) {
      if (untilMs > this.nowMs && Number.isFinite(untilMs)) this.nowMs = untilMs;
      return undefined;
    }
    this.queue.shift();
    this.nowMs = Math.max(this.nowMs, event.at);
    this.steps += 1;
    this.current = event.owner;
    try {
      event.run();
    } finally {
      await settle();
      this.current = 'sim';
    }
    return event;
  }

  /** Runs `fn` as `owner` (a host or admin action on an array) and lets what it started run out. */
  async act<T>(owner: Owner, fn: () => T): Promise<T> {
    this.current = owner;
    try {
      const result = fn();
      // The caller awaits it only after the turn has run out: mark it handled now.
      if (result instanceof Promise) result.catch(() => undefined);
      return result;
    } finally {
      await settle();
      this.current = 'sim';
    }
  }

  /** Replaces timers, Date and random ids with the simulation's; uninstall() puts them back. */
  install(): void {
    const g = globalThis as Record<string, unknown>;
    const saved = { setTimeout: g.setTimeout, clearTimeout: g.clearTimeout, setInterval: g.setInterval, clearInterval: g.clearInterval, setImmediate: g.setImmediate, clearImmediate: g.clearImmediate, Date: g.Date };
    const kernel = this;
    const timer = (fn: (...a: unknown[]) => void, ms: unknown, args: unknown[], every: boolean): SimTimer => {
      const delay = Math.max(1, Number(ms) || 0);
      const handle: SimTimer = new SimTimer(kernel, undefined as unknown as SimEvent);
      const run = (): void => {
        if (every) {
          const next = kernel.schedule(delay, handle.event.label, run, handle.event.owner);
          next.everyMs = delay;
          handle.event = next;
        }
        fn(...args);
      };
      handle.event = kernel.schedule(delay, every ? 'interval' : 'timeout', run);
      if (every) handle.event.everyMs = delay;
      return handle;
    };
    const clear = (handle: unknown): void => {
      if (handle instanceof SimTimer) handle.event.cancelled = true;
    };
    g.setTimeout = (fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => timer(fn, ms, args, false);
    g.setInterval = (fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => timer(fn, ms, args, true);
    g.setImmediate = (fn: (...a: unknown[]) => void, ...args: unknown[]) => {
      const handle = new SimTimer(kernel, kernel.schedule(0, 'immediate', () => fn(...args)));
      return handle;
    };
    g.clearTimeout = clear;
    g.clearInterval = clear;
    g.clearImmediate = clear;
    const RealDate = saved.Date as DateConstructor;
    class SimDate extends RealDate {
      constructor(...args: unknown[]) {
        if (args.length === 0) super(kernel.epochMs + kernel.nowMs);
        else super(...(args as [number]));
      }
      static override now(): number {
        return kernel.epochMs + kernel.nowMs;
      }
    }
    g.Date = SimDate;
    const c = crypto as unknown as Record<string, unknown>;
    const savedCrypto = { randomBytes: c.randomBytes, randomUUID: c.randomUUID };
    c.randomBytes = (size: number) => {
      const out = Buffer.alloc(size);
      for (let i = 0; i < size; i++) out[i] = kernel.prng.below(256);
      return out;
    };
    c.randomUUID = () => {
      const hex = (c.randomBytes as (n: number) => Buffer)(16).toString('hex');
      return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-a${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
    };
    this.installed.push(() => {
      Object.assign(g, saved);
      Object.assign(c, savedCrypto);
    });
    const onRejection = (reason: unknown): void => {
      this.unhandled.push(reason);
    };
    process.on('unhandledRejection', onRejection);
    this.installed.push(() => process.off('unhandledRejection', onRejection));
  }

  /** A fixed wall-clock origin, so that dates in metadata are the same every run. */
  readonly epochMs = Date.UTC(2026, 0, 1);

  uninstall(): void {
    for (const undo of this.installed.splice(0).reverse()) undo();
  }
}

/** Lets every promise reaction and nextTick queued so far (and those they queue) run. */
export function settle(): Promise<void> {
  return new Promise((resolve) => realSetImmediate(resolve));
}
