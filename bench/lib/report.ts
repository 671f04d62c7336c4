// Why this exists: turns the benchmark's measurements into what people and
// scripts read: an aligned table on the terminal, the same table in markdown,
// and JSON, with Twinstore's ratio to the better of the two peer servers, and
// over TLS its ratio to nbdkit over TLS.

import { table } from '../../src/cli/table.js';
import type { FioJob, Measurement } from './fio.js';
import { targetNames, type TargetName } from './targets.js';

/** Ratios of Twinstore to the best peer below this are marked. */
export const ratioWarnBelow = 0.9;
const peerNames: readonly TargetName[] = ['qemu-nbd', 'nbdkit'];

export type Cell = { ok: true; measurement: Measurement } | { ok: false; error: string };

export interface JobResult {
  job: FioJob;
  cells: Record<TargetName, Cell>;
}

export interface RunInfo {
  startedAt: string;
  cpuModel: string;
  cpus: number;
  kernel: string;
  memoryGiB: number;
  node: string;
  tools: Record<string, string>;
  seconds: number;
  imageBytes: number;
  quick: boolean;
}

/** Twinstore's value over the best peer's; undefined when a cell failed. */
export function ratioToBestPeer(result: JobResult): number | undefined {
  const own = result.cells.Twinstore;
  const peers = peerNames.map((name) => result.cells[name]);
  if (!own.ok || peers.some((cell) => !cell.ok)) return undefined;
  const best = Math.max(...peers.map((cell) => (cell.ok ? cell.measurement.value : 0)));
  return best > 0 ? own.measurement.value / best : undefined;
}

/** Twinstore over TLS to nbdkit over TLS; undefined when a cell failed. */
export function tlsRatio(result: JobResult): number | undefined {
  const own = result.cells['Twinstore TLS'];
  const peer = result.cells['nbdkit TLS'];
  if (!own.ok || !peer.ok || peer.measurement.value <= 0) return undefined;
  return own.measurement.value / peer.measurement.value;
}

function formatLatency(us: number): string {
  return us < 100 ? us.toFixed(1) : us.toFixed(0);
}

function formatIops(iops: number): string {
  return iops >= 10_000 ? `${(iops / 1000).toFixed(1)}k` : iops.toFixed(0);
}

export function formatCell(job: FioJob, cell: Cell): string {
  if (!cell.ok) return 'failed';
  const m = cell.measurement;
  switch (job.metric) {
    case 'bandwidth':
      return `${m.value.toFixed(0)} MB/s (${formatLatency(m.latencyMeanUs)} µs)`;
    case 'iops':
      return `${formatIops(m.value)} IOPS (${formatLatency(m.latencyMeanUs)} µs)`;
    case 'flush':
      return `${m.value.toFixed(0)}/s (w ${formatLatency(m.latencyMeanUs)}, flush ${formatLatency(m.flushMeanUs ?? Number.NaN)} µs)`;
  }
}

function formatRatio(ratio: number | undefined): string {
  if (ratio === undefined) return '-';
  return ratio < ratioWarnBelow ? `${ratio.toFixed(2)} !` : ratio.toFixed(2);
}

function rows(results: readonly JobResult[]): string[][] {
  return results.map((result) => [
    result.job.name,
    ...targetNames.map((name) => formatCell(result.job, result.cells[name])),
    formatRatio(ratioToBestPeer(result)),
    formatRatio(tlsRatio(result)),
  ]);
}

const headers = ['job', ...targetNames, 'ratio', 'TLS ratio'];

export const legend = [
  '1M jobs: MB/s (10^6 B/s) and mean latency per request. 4k jobs: IOPS and mean latency.',
  'flush4k: 4 KiB write + flush pairs per second, with mean write and flush latency.',
  `ratio: Twinstore / best of qemu-nbd and nbdkit; "!" marks ratios below ${ratioWarnBelow}.`,
  'TLS columns: nbd.tls require and nbdkit --tls=require (X.509, TLS 1.3); TLS ratio: Twinstore TLS / nbdkit TLS.',
];

export function textTable(results: readonly JobResult[]): string {
  return table(headers, rows(results));
}

export function failureLines(results: readonly JobResult[]): string[] {
  return results.flatMap((result) =>
    targetNames.flatMap((name) => {
      const cell = result.cells[name];
      return cell.ok ? [] : [`${result.job.name} on ${name}: ${cell.error}`];
    }),
  );
}

export function markdownReport(info: RunInfo, results: readonly JobResult[]): string {
  const escape = (cell: string): string => cell.replace(/\|/g, '\\|');
  const line = (cells: string[]): string => `| ${cells.map(escape).join(' | ')} |`;
  const failed = failureLines(results);
  return [
    `# NBD benchmark ${info.startedAt}`,
    '',
    `- CPU: ${info.cpuModel}, ${info.cpus} CPUs; kernel ${info.kernel}; ${info.memoryGiB} GiB RAM; Node ${info.node}`,
    `- Tools: ${Object.entries(info.tools).map(([name, version]) => `${name} ${version}`).join(', ')}`,
    `- ${info.seconds} s per job, image ${info.imageBytes / 2 ** 20} MiB${info.quick ? ' (quick run)' : ''}`,
    '',
    line(headers),
    line(headers.map(() => '---')),
    ...rows(results).map(line),
    '',
    ...legend.map((text) => `- ${text}`),
    ...(failed.length === 0 ? [] : ['', '## Failures', '', ...failed.map((text) => `- ${text.split('\n')[0]}`)]),
    '',
  ].join('\n');
}

export function jsonReport(info: RunInfo, results: readonly JobResult[]): unknown {
  return {
    ...info,
    ratioWarnBelow,
    jobs: results.map((result) => ({
      name: result.job.name,
      description: result.job.description,
      metric: result.job.metric,
      unit: result.job.metric === 'bandwidth' ? 'MB/s' : result.job.metric === 'iops' ? 'IOPS' : 'ops/s',
      ratioToBestPeer: ratioToBestPeer(result) ?? null,
      tlsRatio: tlsRatio(result) ?? null,
      targets: Object.fromEntries(targetNames.map((name) => [name, result.cells[name]])),
    })),
  };
}
