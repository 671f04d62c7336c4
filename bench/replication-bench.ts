// Why this exists: issue 3's and issue 13's numbers for replication. In one run,
// on this machine, it measures (1) the same fio jobs against a Twinstore P-VOL in
// PAIR (its S-VOL on a second array on this machine), an unreplicated Twinstore
// volume on the same array, and nbdkit `file`, with A's and B's CPU seconds per
// GiB written; (2) replication lag p50/p99 while fio writes at half the P-VOL's
// measured maximum rate; (3) the largest journal use seen under full-speed
// ingest; (4) initial-copy and resync MiB/s of a 2 GiB half-allocated volume
// against `nbdcopy --flush` of the same file to nbdkit; (5) with --sustained S, a
// full-speed 1 MiB QD16 stream for S seconds on a pair like the demo's (1 GiB
// volume, 256 MiB journal, overflow throttle): B's apply rate, the journal's
// peak and every status the pair showed.
// --pin puts A, fio and nbdkit on CPU 0 and B on CPU 1 (for the unreplicated runs
// too), so a ratio shows what replication costs A, not B's share of two cores.
// --repeat N runs each job N times per target and shows medians.
// Run: npm run bench:replication [-- --seconds N] [--pin] [--repeat N] [--sustained S]

import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ProcessTracker, cpuSeconds, freePort, type Tracked } from './lib/processes.js';
import { fioJobs, runFio, type FioJob, type Measurement } from './lib/fio.js';
import { BenchSites, runBench, type PairRow, type Site } from './lib/sites.js';

const MiB = 2 ** 20;
const volumeBytes = 2048 * MiB;
function argValue(name: string): string | undefined {
  const at = process.argv.indexOf(name);
  return at < 0 ? undefined : process.argv[at + 1];
}
const seconds = Number(argValue('--seconds') || process.env.BENCH_SECONDS || 10);
const pin = process.argv.includes('--pin');
const repeat = Math.max(1, Math.floor(Number(argValue('--repeat') ?? 1)));
const sustainedSeconds = Math.max(0, Number(argValue('--sustained') ?? 0));
/** Where A (and fio, nbdkit) and B run when pinned. */
const cpuA = pin ? 0 : undefined;
const cpuB = pin ? 1 : undefined;
const GiB = 2 ** 30;
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

function median(values: number[]): number {
  const sorted = [...values].sort((x, y) => x - y);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** A's and B's CPU seconds so far. */
function cpuNow(a: Site, b: Site): { a: number; b: number } {
  return { a: cpuSeconds(a.server!.pid), b: cpuSeconds(b.server!.pid) };
}

function bytesOf(job: FioJob, m: Measurement): number {
  return m.totalIos * (job.blockSize === '1M' ? MiB : 4096);
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ')).join('\n');
}

async function main(): Promise<void> {
  log(`work folder ${dir}; ${seconds} s per job, ${repeat} run(s) each; ${pin ? 'pinned: A, fio and nbdkit on CPU 0, B on CPU 1' : 'unpinned'}; ${os.cpus()[0]?.model ?? '?'} x${os.cpus().length}`);
  const [a, b] = await sites.write();
  await sites.start(a!, cpuA);
  await sites.start(b!, cpuB);
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
  // throttle: a write burst that fills the journal waits instead of suspending the pair mid-bench.
  await cli(a!, ['pair', 'create', '--group', 'bench', '--pvol', 'rep', '--svol', 'site-b:rep', '--journal', 'jnl', '--remote-journal', 'site-b:jnl', '--overflow', 'throttle']);
  await waitUntil(a!, (r) => r.status === 'PAIR' && r.lagRecords === 0, 600_000);
  const copySeconds = (Date.now() - copyStart) / 1000;

  log('resync of the same 2 GiB after a split and a rewrite of all of it');
  await cli(a!, ['pair', 'split', '--group', 'bench']);
  await waitUntil(a!, (r) => r.status === 'PSUS', 60_000);
  await tracker.run('nbdcopy', ['--flush', source, `nbd://${a!.nbd}/rep`], { label: 'rewrite while split', timeoutMs: 600_000 });
  const resyncStart = Date.now();
  await cli(a!, ['pair', 'resync', '--group', 'bench']);
  await waitUntil(a!, (r) => r.status === 'PAIR' && r.lagRecords === 0, 600_000);
  const resyncSeconds = (Date.now() - resyncStart) / 1000;

  const nbdkitFile = path.join(dir, 'nbdkit.raw');
  fs.writeFileSync(nbdkitFile, '');
  fs.truncateSync(nbdkitFile, volumeBytes);
  const port = await freePort();
  tracker.spawn('nbdkit', ['-f', '-i', '127.0.0.1', '-p', String(port), '--exit-with-parent', 'file', `file=${nbdkitFile}`], { label: 'nbdkit', ...(cpuA === undefined ? {} : { cpu: cpuA }) });
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
  const cpuRows: string[][] = [];
  let journalPeak = 0;
  let rw4kMax = 0;
  let sw1mUnreplicated = 0;
  for (const job of fioJobs) {
    const cells: Measurement[] = [];
    const writes = job.rw !== 'read' && job.rw !== 'randread';
    const cpuPerGiB: Record<string, { a: number[]; b: number[] }> = {};
    for (const target of targets) {
      const runs: Measurement[] = [];
      for (let r = 0; r < repeat; r++) {
        const run = () => runFio(tracker, { job, uri: target.uri, seconds, imageBytes: volumeBytes, outputFile: path.join(dir, `${job.name}.json`), ...(cpuA === undefined ? {} : { cpu: cpuA }) });
        const before = cpuNow(a!, b!);
        let m: Measurement;
        if (target.name === 'P-VOL in PAIR' && writes) {
          const { result, samples } = await sampling(a!, 200, run);
          journalPeak = Math.max(journalPeak, ...samples.map((s) => s.journalUsedPercent));
          m = result;
          // The replicated write is done once B has applied it: A's sending counts too.
          await waitUntil(a!, (row) => row.lagRecords === 0, 300_000);
        } else m = await run();
        const after = cpuNow(a!, b!);
        if (writes && target.name !== 'nbdkit') {
          const gib = bytesOf(job, m) / GiB;
          const entry = (cpuPerGiB[target.name] ??= { a: [], b: [] });
          entry.a.push((after.a - before.a) / gib);
          entry.b.push((after.b - before.b) / gib);
        }
        runs.push(m);
      }
      const value = median(runs.map((m) => m.value));
      cells.push({ ...runs[0]!, value });
      log(`${job.name} ${target.name}: ${show(job, cells[cells.length - 1]!)}${repeat > 1 ? ` (median of ${repeat}: ${runs.map((m) => show(job, m)).join(', ')})` : ''}`);
    }
    if (job.name === 'rw4k_qd16') rw4kMax = cells[0]!.value;
    if (job.name === 'sw1m_qd16') sw1mUnreplicated = cells[1]!.value;
    rows.push([job.name, ...cells.map((c) => show(job, c)), (cells[0]!.value / cells[1]!.value).toFixed(2), (cells[0]!.value / cells[2]!.value).toFixed(2)]);
    const rep = cpuPerGiB['P-VOL in PAIR'];
    const plain = cpuPerGiB.unreplicated;
    if (rep && plain) {
      const [ra, pa] = [median(rep.a), median(plain.a)];
      cpuRows.push([job.name, ra.toFixed(1), pa.toFixed(1), (ra / pa).toFixed(2), median(rep.b).toFixed(1)]);
    }
  }

  log(`lag at 50% of the P-VOL's 4 KiB QD16 write rate (${Math.round(rw4kMax / 2)} IOPS)`);
  const { samples } = await sampling(a!, 50, () => tracker.run('fio', [
    '--name=lag', '--ioengine=nbd', `--uri=${targets[0]!.uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=16',
    `--rate_iops=${Math.max(1, Math.round(rw4kMax / 2))}`, '--time_based', `--runtime=${Math.max(10, seconds * 2)}`, `--size=${volumeBytes}`, `--output=${path.join(dir, 'lag.txt')}`,
  ], { label: 'fio lag', timeoutMs: 600_000, ...(cpuA === undefined ? {} : { cpu: cpuA }) }));
  const lags = samples.map((s) => s.lagSeconds * 1000);

  const sustained = sustainedSeconds > 0 ? await sustainedStream(a!, b!, sw1mUnreplicated) : undefined;

  process.stdout.write(`\n${pin ? 'pinned (A, fio, nbdkit on CPU 0; B on CPU 1)' : 'unpinned'}; ${seconds} s per job; ${repeat > 1 ? `medians of ${repeat}` : 'one run each'}\n\n`);
  process.stdout.write(table([['job', ...targets.map((t) => t.name), 'PAIR/unrepl', 'PAIR/nbdkit'], ...rows]) + '\n\n');
  process.stdout.write('CPU seconds per GiB written (A, to lag 0 for the pair; B meanwhile):\n');
  process.stdout.write(table([['job', 'A, PAIR', 'A, unreplicated', 'PAIR/unrepl', 'B, PAIR'], ...cpuRows]) + '\n\n');
  process.stdout.write(`lag at 50% load: p50 ${percentile(lags, 50).toFixed(0)} ms, p99 ${percentile(lags, 99).toFixed(0)} ms (${lags.length} samples)\n`);
  process.stdout.write(`journal use peak under full-speed ingest: ${journalPeak}% of 1 GiB\n`);
  const nbdcopyRate = volumeBytes / MiB / nbdcopySeconds;
  process.stdout.write(`initial copy, 2 GiB half allocated: ${(volumeBytes / MiB / copySeconds).toFixed(0)} MiB/s (${copySeconds.toFixed(1)} s, ${(volumeBytes / MiB / copySeconds / nbdcopyRate).toFixed(2)}x nbdcopy); ` +
    `resync of all of it: ${(volumeBytes / MiB / resyncSeconds).toFixed(0)} MiB/s (${resyncSeconds.toFixed(1)} s, ${(volumeBytes / MiB / resyncSeconds / nbdcopyRate).toFixed(2)}x); ` +
    `nbdcopy --flush file->nbdkit: ${nbdcopyRate.toFixed(0)} MiB/s (${nbdcopySeconds.toFixed(1)} s)\n`);
  if (sustained) process.stdout.write(`${sustained}\n`);
}

/**
 * A full-speed 1 MiB QD16 sequential stream for sustainedSeconds on a pair like the demo's (1 GiB
 * volume, 256 MiB journal) with overflow throttle: A's ingest, B's apply rate (records of 1 MiB a
 * second, from B's consistency seq), the journal's peak and every status the pair showed.
 */
async function sustainedStream(a: Site, b: Site, unreplicatedMBs: number): Promise<string> {
  const volume = 1024 * MiB;
  for (const site of [a, b]) {
    await cli(site, ['volume', 'create', 'dvol', '--size', String(volume)]);
    await cli(site, ['journal', 'create', 'djnl', '--size', '256MiB']);
  }
  await cli(a, ['pair', 'create', '--group', 'demo', '--pvol', 'dvol', '--svol', 'site-b:dvol', '--journal', 'djnl', '--remote-journal', 'site-b:djnl', '--overflow', 'throttle']);
  const groupState = (site: Site): Promise<PairRow> => sites.pairState(site, 'demo');
  const deadline = Date.now() + 600_000;
  while (!((row) => row.status === 'PAIR' && row.lagRecords === 0)(await groupState(a))) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the demo-like pair');
    await new Promise((r) => setTimeout(r, 100));
  }
  log(`sustained: 1 MiB QD16 sequential write for ${sustainedSeconds} s on a 1 GiB P-VOL with a 256 MiB journal (overflow throttle)`);
  const statuses = new Set<string>();
  let peak = 0;
  const startSeq = (await groupState(b)).consistencySeq;
  let running = true;
  const sampler = (async () => {
    while (running) {
      const row = await groupState(a);
      statuses.add(row.status);
      peak = Math.max(peak, row.journalUsedPercent);
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  const started = Date.now();
  const job: FioJob = { name: 'sustained', description: 'seq write 1 MiB QD16', rw: 'write', blockSize: '1M', iodepth: 16, fsync: false, metric: 'bandwidth' };
  let m: Measurement;
  try {
    m = await runFio(tracker, { job, uri: `nbd://${a.nbd}/dvol`, seconds: sustainedSeconds, imageBytes: volume, outputFile: path.join(dir, 'sustained.json'), ...(cpuA === undefined ? {} : { cpu: cpuA }) });
  } finally {
    running = false;
    await sampler;
  }
  const elapsed = (Date.now() - started) / 1000;
  const applied = (await groupState(b)).consistencySeq - startSeq;
  const applyMBs = (applied * MiB) / 1e6 / elapsed;
  return `sustained ${sustainedSeconds} s, 1 MiB QD16 on the demo-like pair: A took ${m.value.toFixed(0)} MB/s; B applied ${applyMBs.toFixed(0)} MB/s during it ` +
    `(${(applyMBs / unreplicatedMBs).toFixed(2)}x the unreplicated sw1m_qd16 ${unreplicatedMBs.toFixed(0)} MB/s); journal peak ${peak}% of 256 MiB; statuses seen: ${[...statuses].join(', ')}`;
}

runBench('replication bench', tracker, dir, main);
