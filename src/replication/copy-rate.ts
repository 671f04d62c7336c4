// The rate and ETA of a pair's copy (initial copy or resync) as `pair display`
// shows them: measured from the bytes the copy had sent at the displays of the
// last copyRateWindowMs (each display, and the event stream's once-a-second
// look, adds a sample), so a rate needs two looks at least a moment apart. The
// samples are bounded per pair (copyRateSamplesMax) and dropped once the pair
// leaves COPY.

import type { PairDisplay } from './model.js';

/** The span the rate is measured over. */
export const copyRateWindowMs = 10_000;
/** Samples kept per pair; looks closer together than sampleSpacingMs add none. */
export const copyRateSamplesMax = 32;
/** Two samples closer than this give no rate (a burst of displays). */
const sampleSpacingMs = 200;

interface Sample {
  atMs: number;
  bytes: number;
}

export class CopyRates {
  private readonly samples = new Map<string, Sample[]>();

  /** Fills copyRateBytesPerSecond and copyEtaSeconds of each COPY row (master side: it knows the bytes left). */
  annotate(rows: PairDisplay[], nowMs: number): PairDisplay[] {
    const copying = new Set<string>();
    for (const row of rows) {
      if (row.status !== 'COPY' || row.copyRemainingBytes < 0) continue;
      const key = `${row.group}\0${row.pvol}`;
      copying.add(key);
      const rate = this.sample(key, { atMs: nowMs, bytes: row.copyBytes });
      row.copyRateBytesPerSecond = rate;
      row.copyEtaSeconds = rate === null || rate <= 0 ? null : Math.ceil(row.copyRemainingBytes / rate);
    }
    for (const key of this.samples.keys()) if (!copying.has(key) && rows.some((r) => key.startsWith(`${r.group}\0`))) this.samples.delete(key);
    return rows;
  }

  /** Adds a sample; the rate over the window, or null without two samples far enough apart. */
  private sample(key: string, sample: Sample): number | null {
    let list = this.samples.get(key);
    if (!list || (list.length > 0 && sample.bytes < list[list.length - 1]!.bytes)) {
      // A new copy (a resync starts its count again): the old samples say nothing of it.
      list = [];
      this.samples.set(key, list);
    }
    const newest = list[list.length - 1];
    if (!newest || sample.atMs - newest.atMs >= sampleSpacingMs) list.push(sample);
    while (list.length > copyRateSamplesMax || (list.length > 2 && sample.atMs - list[1]!.atMs >= copyRateWindowMs)) list.shift();
    const oldest = list[0]!;
    const spanMs = sample.atMs - oldest.atMs;
    if (spanMs < sampleSpacingMs) return null;
    return Math.round(((sample.bytes - oldest.bytes) * 1000) / spanMs);
  }
}
