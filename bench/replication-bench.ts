// Why this exists: issue 3's numbers for replication. In one run, on this
// machine, it measures (1) the same fio jobs against a Twinstore P-VOL in PAIR
// (its S-VOL on a second array on this machine), an unreplicated Twinstore
// volume on the same array, and nbdkit `file`; (2) replication lag p50/p99
// while fio writes at half the P-VOL's measured maximum rate; (3) the largest
// journal use seen under full-speed ingest; (4) initial-copy MB/s of a 2 GiB
// half-allocated volume against `nbdcopy --flush` of the same file to nbdkit.
// Run: npm run bench:replication [-- --seconds N]

import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ProcessTracker, freePort, type Tracked } from './lib/processes.js';
import { fioJobs, runFio, type FioJob, type Measurement } from './lib/fio.js';
import { BenchSites, runBench, type PairRow, type Site } from './lib/sites.js';

const MiB = 2 ** 20;
const volumeBytes = 2048 * MiB;
const seconds = Number(process.argv[process.argv.indexOf('--seconds') + 1] || process.env.BENCH_SECONDS || 10);
const tracker = new ProcessTracker();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twinstore-repbench-'));
const sites = new BenchSites(tracker, dir);
const cli = (site: Site, args: string[]): Promise<string> => sites.cli(site, args);
const pairState = (site: Site): Promise<PairRow> => sites.pairState(site);
const waitUntil = (site: Site, check: (row: PairRow) => boolean, timeoutMs: number): Promise<void> => sites.waitUntil(site, check, timeoutMs);

function log(text: string): void {
  process.stdout.write(`[${new Date().toISOString().slice(11, 19)}] ${text}\n`);
}

/** Runs `work` while sampling the pair every `everyMs`; returns the samples. */
async function sampling<T>(site: Site, everyMs: number, work: () => Promise<T>): Promise<{ result: T; samples: PairRow[] }> {
  const samples: PairRow[] = [];
  let running = true;
  const sampler = (async () => {
    while (running) {
      samples.push(await pairState(site));
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  try {
    return { result: await work(), samples };
  } finally {
    running = false;
    await sampler;
  }
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

function show(job: FioJob, m: Measurement): string {
  return job.metric === 'bandwidth' ? `${m.value.toFixed(0)} MB/s` : job.metric === 'iops' ? `${(m.value / 1000).toFixed(1)}k IOPS` : `${m.value.toFixed(0)}/s`;
}

async function main(): Promise<void> {
  log(`work folder ${dir}; ${seconds} s per job; ${os.cpus()[0]?.model ?? '?'} x${os.cpus().length}`);
  const [a, b] = await sites.write();
  await sites.start(a!);
  await sites.start(b!);
  const source = path.join(dir, 'half.raw');
  const half = Buffer.alloc(MiB);
  const fd = fs.openSync(source, 'w');
  for (let at = 0; at < volumeBytes; at += 2 * MiB) fs.writeSync(fd, crypto.randomFillSync(half), 0, MiB, at);
  fs.ftruncateSync(fd, volumeBytes);
  fs.closeSync(fd);

  for (const [site, names] of [[a!, ['rep', 'plain']], [b!, ['rep']]] as const) {
    for (const name of names) await cli(site, ['volume', 'create', name, '--size', String(volumeBytes)]);
    await cli(site, ['journal', 'create', 'jnl', '--size', '1GiB']);
  }
  await tracker.run('nbdcopy', ['--flush', source, `nbd://${a!.nbd}/rep`], { label: 'prefill', timeoutMs: 600_000 });
  await tracker.run('nbdcopy', ['--flush', source, `nbd://${a!.nbd}/plain`], { label: 'prefill', timeoutMs: 600_000 });

  log('initial copy of a 2 GiB half-allocated volume');
  const copyStart = Date.now();
  await cli(a!, ['pair', 'create', '--group', 'bench', '--pvol', 'rep', '--svol', 'site-b:rep', '--journal', 'jnl', '--remote-journal', 'site-b:jnl']);
  await waitUntil(a!, (r) => r.status === 'PAIR' && r.lagRecords === 0, 600_000);
  const copySeconds = (Date.now() - copyStart) / 1000;

  const nbdkitFile = path.join(dir, 'nbdkit.raw');
  fs.writeFileSync(nbdkitFile, '');
  fs.truncateSync(nbdkitFile, volumeBytes);
  const port = await freePort();
  tracker.spawn('nbdkit', ['-f', '-i', '127.0.0.1', '-p', String(port), '--exit-with-parent', 'file', `file=${nbdkitFile}`], { label: 'nbdkit' });
  await new Promise((r) => setTimeout(r, 500));
  const nbdcopyStart = Date.now();
  await tracker.run('nbdcopy', ['--flush', source, `nbd://127.0.0.1:${port}/`], { label: 'nbdcopy to nbdkit', timeoutMs: 600_000 });
  const nbdcopySeconds = (Date.now() - nbdcopyStart) / 1000;

  const targets = [
    { name: 'P-VOL in PAIR', uri: `nbd://${a!.nbd}/rep` },
    { name: 'unreplicated', uri: `nbd://${a!.nbd}/plain` },
    { name: 'nbdkit', uri: `nbd://127.0.0.1:${port}/` },
  ];
  const rows: string[][] = [];
  let journalPeak = 0;
  let rw4kMax = 0;
  for (const job of fioJobs) {
    const cells: Measurement[] = [];
    for (const target of targets) {
      const run = () => runFio(tracker, { job, uri: target.uri, seconds, imageBytes: volumeBytes, outputFile: path.join(dir, `${job.name}.json`) });
      if (target.name === 'P-VOL in PAIR' && job.rw !== 'read' && job.rw !== 'randread') {
        const { result, samples } = await sampling(a!, 200, run);
        journalPeak = Math.max(journalPeak, ...samples.map((s) => s.journalUsedPercent));
        cells.push(result);
        await waitUntil(a!, (r) => r.lagRecords === 0, 300_000);
      } else cells.push(await run());
      log(`${job.name} ${target.name}: ${show(job, cells[cells.length - 1]!)}`);
    }
    if (job.name === 'rw4k_qd16') rw4kMax = cells[0]!.value;
    rows.push([job.name, ...cells.map((c) => show(job, c)), (cells[0]!.value / cells[1]!.value).toFixed(2), (cells[0]!.value / cells[2]!.value).toFixed(2)]);
  }

  log(`lag at 50% of the P-VOL's 4 KiB QD16 write rate (${Math.round(rw4kMax / 2)} IOPS)`);
  const { samples } = await sampling(a!, 50, () => tracker.run('fio', [
    '--name=lag', '--ioengine=nbd', `--uri=${targets[0]!.uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=16',
    `--rate_iops=${Math.max(1, Math.round(rw4kMax / 2))}`, '--time_based', `--runtime=${Math.max(10, seconds * 2)}`, `--size=${volumeBytes}`, `--output=${path.join(dir, 'lag.txt')}`,
  ], { label: 'fio lag', timeoutMs: 600_000 }));
  const lags = samples.map((s) => s.lagSeconds * 1000);

  const table = [
    ['job', ...targets.map((t) => t.name), 'PAIR/unrepl', 'PAIR/nbdkit'],
    ...rows,
  ];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
  process.stdout.write('\n' + table.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ')).join('\n') + '\n\n');
  process.stdout.write(`lag at 50% load: p50 ${percentile(lags, 50).toFixed(0)} ms, p99 ${percentile(lags, 99).toFixed(0)} ms (${lags.length} samples)\n`);
  process.stdout.write(`journal use peak under full-speed ingest: ${journalPeak}% of 1 GiB\n`);
  process.stdout.write(`initial copy, 2 GiB half allocated: ${(volumeBytes / MiB / copySeconds).toFixed(0)} MiB/s (${copySeconds.toFixed(1)} s); nbdcopy --flush file->nbdkit: ${(volumeBytes / MiB / nbdcopySeconds).toFixed(0)} MiB/s (${nbdcopySeconds.toFixed(1)} s)\n`);
}

runBench('replication bench', tracker, dir, main);
