// The last hour of what the dashboard charts (issue 16), kept in the array so a
// page opened at 3 a.m. shows how the night went, not an empty chart: every
// historyIntervalMs, one sample of each group's lag (seconds and bytes) and
// journal use, and each volume's host reads and writes per second over the
// interval (from the NBD request counts, io-stats.ts). historySamplesMax
// samples are kept (an hour), oldest dropped first; nothing is written to
// disk, so a restart starts the chart again. GET /v1/history returns them.

import type { PairDisplay } from '../replication/index.js';
import type { VolumeIoStats } from '../nbd/index.js';

export const historyIntervalMs = 5000;
/** One hour of samples. */
export const historySamplesMax = 720;

export interface GroupSample {
  /** -1 where this array cannot tell (the receiver). */
  lagSeconds: number;
  lagBytes: number;
  journalUsedPercent: number;
}

export interface VolumeSample {
  readOps: number;
  writeOps: number;
  readBytes: number;
  writeBytes: number;
}

export interface HistorySample {
  at: string;
  groups: Record<string, GroupSample>;
  volumes: Record<string, VolumeSample>;
}

export interface HistoryJson {
  intervalSeconds: number;
  samples: HistorySample[];
}

export interface HistorySources {
  pairs(): PairDisplay[];
  ioStats(): ReadonlyMap<string, VolumeIoStats>;
}

interface Totals {
  readOps: number;
  writeOps: number;
  readBytes: number;
  writeBytes: number;
}

export class History {
  private readonly samples: HistorySample[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** Each volume's counts at the last sample, and when it was taken. */
  private last = new Map<string, Totals>();
  private lastAt = Date.now();

  constructor(private readonly sources: HistorySources) {}

  start(): void {
    this.lastAt = Date.now();
    this.last = totals(this.sources.ioStats());
    this.timer = setInterval(() => this.sample(), historyIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  json(): HistoryJson {
    return { intervalSeconds: historyIntervalMs / 1000, samples: [...this.samples] };
  }

  /** Takes one sample now (the timer's tick). */
  sample(now = Date.now()): void {
    const seconds = Math.max((now - this.lastAt) / 1000, 0.001);
    const current = totals(this.sources.ioStats());
    const volumes: Record<string, VolumeSample> = {};
    for (const [name, t] of current) {
      const before = this.last.get(name) ?? { readOps: 0, writeOps: 0, readBytes: 0, writeBytes: 0 };
      const rate = (key: keyof Totals): number => Math.max(0, Math.round(((t[key] - before[key]) / seconds) * 10) / 10);
      volumes[name] = { readOps: rate('readOps'), writeOps: rate('writeOps'), readBytes: rate('readBytes'), writeBytes: rate('writeBytes') };
    }
    const groups: Record<string, GroupSample> = {};
    for (const pair of this.sources.pairs()) {
      const was = groups[pair.group];
      groups[pair.group] = {
        lagSeconds: Math.max(was?.lagSeconds ?? -1, pair.lagSeconds),
        lagBytes: Math.max(was?.lagBytes ?? -1, pair.lagBytes),
        journalUsedPercent: Math.max(was?.journalUsedPercent ?? -1, pair.journalUsedPercent),
      };
    }
    this.samples.push({ at: new Date(now).toISOString(), groups, volumes });
    if (this.samples.length > historySamplesMax) this.samples.shift();
    this.last = current;
    this.lastAt = now;
  }
}

function totals(stats: ReadonlyMap<string, VolumeIoStats>): Map<string, Totals> {
  const out = new Map<string, Totals>();
  for (const [name, s] of stats) {
    const read = s.counts('read');
    const write = s.counts('write');
    out.set(name, { readOps: read.requests, writeOps: write.requests, readBytes: read.bytes, writeBytes: write.bytes });
  }
  return out;
}
