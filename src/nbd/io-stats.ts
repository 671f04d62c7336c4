// What each volume's hosts did over NBD, for /metrics (issue 16): per export
// and per kind of request (read, write, flush, trim, zero, other), the
// requests answered, their payload bytes, the errors, and a latency histogram
// from the moment a request starts to run to the moment its reply is queued.
//
// It sits on the data path, so a request costs two clock reads and a few
// integer adds: fixed buckets in a flat Float64Array, no allocation, no
// labels built. The metrics route turns the counts into Prometheus series
// at scrape time. Counts live as long as the process (Prometheus counters
// start again at a restart, which rate() handles); a volume deleted drops
// its counts, and a volume made again under its name starts from zero.

import { CMD } from './protocol.js';

/** The kinds of request counted, in this order (labels `op`). */
export const IO_OPS = ['read', 'write', 'flush', 'trim', 'zero', 'other'] as const;
export type IoOp = (typeof IO_OPS)[number];

/** Upper bounds of the latency buckets in seconds (Prometheus `le`); a last bucket, +Inf, holds the rest. */
export const latencyBucketsSeconds = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10] as const;

const bucketCount = latencyBucketsSeconds.length + 1;
const bucketsMs = latencyBucketsSeconds.map((s) => s * 1000);

export interface IoOpCounts {
  requests: number;
  bytes: number;
  errors: number;
  latencySecondsSum: number;
  /** Requests per latency bucket, not cumulative; the last is past the largest bound. */
  buckets: number[];
}

function opOf(type: number): number {
  switch (type) {
    case CMD.READ: return 0;
    case CMD.WRITE: return 1;
    case CMD.FLUSH: return 2;
    case CMD.TRIM: return 3;
    case CMD.WRITE_ZEROES: return 4;
    default: return 5;
  }
}

export class VolumeIoStats {
  private readonly requests = new Float64Array(IO_OPS.length);
  private readonly bytes = new Float64Array(IO_OPS.length);
  private readonly errors = new Float64Array(IO_OPS.length);
  private readonly latencyMsSum = new Float64Array(IO_OPS.length);
  private readonly buckets = new Float64Array(IO_OPS.length * bucketCount);

  /** One request answered: its NBD command type, payload bytes (READ, WRITE), time taken and whether it failed. */
  record(type: number, bytes: number, elapsedMs: number, failed: boolean): void {
    const op = opOf(type);
    this.requests[op]! += 1;
    this.bytes[op]! += bytes;
    if (failed) this.errors[op]! += 1;
    this.latencyMsSum[op]! += elapsedMs;
    let bucket = 0;
    while (bucket < bucketsMs.length && elapsedMs > bucketsMs[bucket]!) bucket += 1;
    this.buckets[op * bucketCount + bucket]! += 1;
  }

  counts(op: IoOp): IoOpCounts {
    const i = IO_OPS.indexOf(op);
    return {
      requests: this.requests[i]!,
      bytes: this.bytes[i]!,
      errors: this.errors[i]!,
      latencySecondsSum: this.latencyMsSum[i]! / 1000,
      buckets: [...this.buckets.subarray(i * bucketCount, (i + 1) * bucketCount)],
    };
  }
}
