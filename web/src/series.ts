// Turns GET /v1/history (one sample per interval, the last hour) and the live
// points the page takes from each GET /v1/pairs poll into the columns uPlot
// draws: time in seconds, then one column per series. Live points fill the time
// since the newest history sample, so a rise in lag shows within a poll and not
// only at the next history interval. -1 (unknown, the receiver) is a gap.

import type { GroupSample, HistorySample, Pair } from './model.js';

/** Live points kept at most (an hour at one per poll is far fewer). */
export const livePointsMax = 3_600;

export interface LivePoint {
  at: number;
  groups: Record<string, GroupSample>;
}

export type Column = Array<number | null>;

export interface ChartData {
  /** Seconds since the epoch, oldest first. */
  times: number[];
  lagSeconds: Record<string, Column>;
  lagBytes: Record<string, Column>;
  journalPercent: Record<string, Column>;
  /** Host I/O summed over the volumes: operations and bytes per second. */
  readOps: Column;
  writeOps: Column;
  readBytes: Column;
  writeBytes: Column;
}

/** One group's numbers from its pair rows: the worst lag among the pairs. */
export function livePoint(pairs: Pair[], at: number): LivePoint {
  const groups: Record<string, GroupSample> = {};
  for (const pair of pairs) {
    const seen = groups[pair.group];
    groups[pair.group] = {
      lagSeconds: Math.max(seen?.lagSeconds ?? -1, pair.lagSeconds),
      lagBytes: Math.max(seen?.lagBytes ?? -1, pair.lagBytes),
      journalUsedPercent: Math.max(seen?.journalUsedPercent ?? -1, pair.journalUsedPercent),
    };
  }
  return { at, groups };
}

function known(value: number | undefined): number | null {
  return value === undefined || value < 0 ? null : value;
}

/** A history sample without a volume's numbers had no I/O on it: 0, not a gap. */
function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

export function chartData(samples: HistorySample[], live: LivePoint[], groups: string[]): ChartData {
  const newest = samples.length === 0 ? 0 : Date.parse(samples[samples.length - 1]!.at);
  const points = [
    ...samples.map((s) => ({ at: Date.parse(s.at), groups: s.groups, volumes: Object.values(s.volumes) })),
    ...live.filter((p) => p.at > newest).map((p) => ({ ...p, volumes: undefined })),
  ];
  const perGroup = (field: keyof GroupSample): Record<string, Column> =>
    Object.fromEntries(groups.map((g) => [g, points.map((p) => known(p.groups[g]?.[field]))]));
  const volumeSum = (field: 'readOps' | 'writeOps' | 'readBytes' | 'writeBytes'): Column =>
    points.map((p) => (p.volumes === undefined ? null : sum(p.volumes.map((v) => v[field]))));
  return {
    times: points.map((p) => p.at / 1000),
    lagSeconds: perGroup('lagSeconds'),
    lagBytes: perGroup('lagBytes'),
    journalPercent: perGroup('journalUsedPercent'),
    readOps: volumeSum('readOps'),
    writeOps: volumeSum('writeOps'),
    readBytes: volumeSum('readBytes'),
    writeBytes: volumeSum('writeBytes'),
  };
}
