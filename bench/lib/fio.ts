// Why this exists: one place that says which fio jobs the benchmark runs, how
// each is passed to fio's nbd engine, and which numbers are read back from
// fio's JSON. The job names match the rows of the baseline measurements
// (bench/baseline.md), so results can be set beside that table.

import fs from 'node:fs';
import type { ProcessTracker } from './processes.js';

export type JobMetric = 'bandwidth' | 'iops' | 'flush';

export interface FioJob {
  name: string;
  description: string;
  rw: 'write' | 'read' | 'randwrite' | 'randread';
  blockSize: '1M' | '4k';
  iodepth: number;
  /** fsync=1: a flush (NBD_CMD_FLUSH) after every write. */
  fsync: boolean;
  metric: JobMetric;
}

export const fioJobs: readonly FioJob[] = [
  { name: 'sw1m_qd1', description: 'seq write 1 MiB QD1', rw: 'write', blockSize: '1M', iodepth: 1, fsync: false, metric: 'bandwidth' },
  { name: 'sw1m_qd16', description: 'seq write 1 MiB QD16', rw: 'write', blockSize: '1M', iodepth: 16, fsync: false, metric: 'bandwidth' },
  { name: 'sr1m_qd1', description: 'seq read 1 MiB QD1', rw: 'read', blockSize: '1M', iodepth: 1, fsync: false, metric: 'bandwidth' },
  { name: 'sr1m_qd16', description: 'seq read 1 MiB QD16', rw: 'read', blockSize: '1M', iodepth: 16, fsync: false, metric: 'bandwidth' },
  { name: 'rw4k_qd1', description: 'rand write 4 KiB QD1', rw: 'randwrite', blockSize: '4k', iodepth: 1, fsync: false, metric: 'iops' },
  { name: 'rw4k_qd16', description: 'rand write 4 KiB QD16', rw: 'randwrite', blockSize: '4k', iodepth: 16, fsync: false, metric: 'iops' },
  { name: 'rr4k_qd1', description: 'rand read 4 KiB QD1', rw: 'randread', blockSize: '4k', iodepth: 1, fsync: false, metric: 'iops' },
  { name: 'rr4k_qd16', description: 'rand read 4 KiB QD16', rw: 'randread', blockSize: '4k', iodepth: 16, fsync: false, metric: 'iops' },
  { name: 'flush4k', description: 'rand write 4 KiB + flush QD1', rw: 'randwrite', blockSize: '4k', iodepth: 1, fsync: true, metric: 'flush' },
];

/** What one fio run measured. Latencies are submit-to-complete, in µs. */
export interface Measurement {
  /** MB/s (10^6 B/s) for bandwidth jobs; IOPS for iops jobs; write+flush pairs per second for flush. */
  value: number;
  latencyMeanUs: number;
  latencyP99Us: number | undefined;
  /** Flush jobs only: the flush's own latency. */
  flushMeanUs: number | undefined;
  flushP99Us: number | undefined;
  totalIos: number;
}

export interface FioRun {
  job: FioJob;
  uri: string;
  seconds: number;
  imageBytes: number;
  outputFile: string;
  /** Pin fio to this CPU. */
  cpu?: number;
  /** fio's environment (a TLS target's HOME with the CA). */
  env?: NodeJS.ProcessEnv | undefined;
}

/** Beyond the runtime, how long fio may take to connect, start and finish before it is killed. */
const fioOverheadMsMax = 60_000;

export function fioArgs(run: FioRun): string[] {
  return [
    `--name=${run.job.name}`,
    '--ioengine=nbd',
    `--uri=${run.uri}`,
    `--rw=${run.job.rw}`,
    `--bs=${run.job.blockSize}`,
    `--iodepth=${run.job.iodepth}`,
    ...(run.job.fsync ? ['--fsync=1'] : []),
    '--time_based',
    `--runtime=${run.seconds}`,
    `--size=${run.imageBytes}`,
    '--lat_percentiles=1',
    '--output-format=json',
    `--output=${run.outputFile}`,
  ];
}

export async function runFio(tracker: ProcessTracker, run: FioRun): Promise<Measurement> {
  await tracker.run('fio', fioArgs(run), { label: `fio ${run.job.name}`, timeoutMs: run.seconds * 1000 + fioOverheadMsMax, ...(run.cpu === undefined ? {} : { cpu: run.cpu }), ...(run.env === undefined ? {} : { env: run.env }) });
  return parseFioOutput(run.job, await fs.promises.readFile(run.outputFile, 'utf8'));
}

interface FioLatency {
  mean: number;
  percentile?: Record<string, number>;
}

interface FioDirection {
  bw_bytes: number;
  iops: number;
  total_ios: number;
  lat_ns: FioLatency;
}

interface FioJobJson {
  error: number;
  read: FioDirection;
  write: FioDirection;
  sync: { total_ios: number; lat_ns: FioLatency };
}

const p99Key = '99.000000';

/** Reads the one job of a fio JSON report (text before the first '{' is skipped). */
export function parseFioOutput(job: FioJob, text: string): Measurement {
  const start = text.indexOf('{');
  if (start < 0) throw new Error(`fio ${job.name}: no JSON in the output file`);
  const report = JSON.parse(text.slice(start)) as { jobs?: FioJobJson[] };
  const jobs = report.jobs ?? [];
  if (jobs.length !== 1) throw new Error(`fio ${job.name}: expected one job in the report, found ${jobs.length}`);
  const result = jobs[0]!;
  if (result.error !== 0) throw new Error(`fio ${job.name}: job error ${result.error}`);
  const direction = job.rw === 'read' || job.rw === 'randread' ? result.read : result.write;
  if (direction.total_ios <= 0) throw new Error(`fio ${job.name}: no I/O completed`);
  const flush = job.fsync ? result.sync : undefined;
  if (flush !== undefined && flush.total_ios <= 0) throw new Error(`fio ${job.name}: no flush completed`);
  return {
    value: job.metric === 'bandwidth' ? direction.bw_bytes / 1e6 : direction.iops,
    latencyMeanUs: direction.lat_ns.mean / 1000,
    latencyP99Us: percentileUs(direction.lat_ns),
    flushMeanUs: flush === undefined ? undefined : flush.lat_ns.mean / 1000,
    flushP99Us: flush === undefined ? undefined : percentileUs(flush.lat_ns),
    totalIos: direction.total_ios,
  };
}

function percentileUs(latency: FioLatency): number | undefined {
  const ns = latency.percentile?.[p99Key];
  return ns === undefined ? undefined : ns / 1000;
}
