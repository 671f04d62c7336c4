// The volumes' NBD request counts (src/nbd/io-stats.ts) as Prometheus series:
// per volume and kind of request, requests, bytes and errors as counters and
// the latency as a histogram (`_bucket` with cumulative `le`, `_sum`,
// `_count`). prom-client's own Histogram observes one value at a time; the
// counts are kept on the data path already bucketed, so these are metrics
// of our own that prom-client's registry writes out (it calls get() at each
// scrape). Reads and writes are shown for every volume that had a session;
// the other kinds once they were asked for.

import type { Registry } from 'prom-client';
import { IO_OPS, latencyBucketsSeconds, type IoOp, type IoOpCounts, type VolumeIoStats } from '../nbd/index.js';

interface MetricValue {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

type Pick = (counts: IoOpCounts) => number;

const alwaysShown: ReadonlySet<IoOp> = new Set(['read', 'write']);

export class VolumeIoMetrics {
  private stats: ReadonlyMap<string, VolumeIoStats> = new Map();

  constructor(registry: Registry) {
    const counter = (name: string, help: string, pick: Pick): void => {
      registry.registerMetric({ name, help, type: 'counter', get: async () => ({ name, help, type: 'counter', values: this.values((c) => [{ value: pick(c) }]), aggregator: 'sum' }) } as never);
    };
    counter('twinstore_volume_requests_total', 'NBD requests answered on a volume, by kind (op)', (c) => c.requests);
    counter('twinstore_volume_bytes_total', 'Payload bytes of the NBD reads and writes answered on a volume', (c) => c.bytes);
    counter('twinstore_volume_errors_total', 'NBD requests on a volume answered with an error, by kind (op)', (c) => c.errors);
    const name = 'twinstore_volume_request_seconds';
    const help = 'Time from an NBD request starting to run to its reply being queued, by volume and kind (op)';
    registry.registerMetric({ name, help, type: 'histogram', get: async () => ({ name, help, type: 'histogram', values: this.values(histogram(name)), aggregator: 'sum' }) } as never);
  }

  /** The counts to show at the next scrape. */
  update(stats: ReadonlyMap<string, VolumeIoStats>): void {
    this.stats = stats;
  }

  private values(lines: (counts: IoOpCounts) => Array<Omit<MetricValue, 'labels'> & { labels?: Record<string, string | number> }>): MetricValue[] {
    const values: MetricValue[] = [];
    for (const [volume, stats] of [...this.stats].sort(([a], [b]) => a.localeCompare(b))) {
      for (const op of IO_OPS) {
        const counts = stats.counts(op);
        if (counts.requests === 0 && !alwaysShown.has(op)) continue;
        for (const line of lines(counts)) values.push({ ...line, labels: { volume, op, ...line.labels } });
      }
    }
    return values;
  }
}

function histogram(name: string): (counts: IoOpCounts) => MetricValue[] {
  return (counts) => {
    const lines: MetricValue[] = [];
    let cumulative = 0;
    latencyBucketsSeconds.forEach((le, i) => {
      cumulative += counts.buckets[i]!;
      lines.push({ metricName: `${name}_bucket`, labels: { le }, value: cumulative });
    });
    lines.push({ metricName: `${name}_bucket`, labels: { le: '+Inf' }, value: counts.requests });
    lines.push({ metricName: `${name}_sum`, labels: {}, value: counts.latencySecondsSum });
    lines.push({ metricName: `${name}_count`, labels: {}, value: counts.requests });
    return lines;
  };
}
