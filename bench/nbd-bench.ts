// Why this exists: to see how Twinstore's NBD data path compares with the two
// servers people would otherwise use (qemu-nbd, nbdkit) on this machine, under
// the same fio jobs as the project's baseline. One run starts all three on
// 127.0.0.1 over images filled with the same random bytes, runs every job
// against each in turn (so drift in the machine hits all three alike), prints
// the table, writes it to bench/results/, and stops everything it started.
// Two more columns measure TLS on the data path: Twinstore with `nbd.tls:
// require` and nbdkit with `--tls=require` (X.509 from `twinstore tls`), the
// same fio jobs over nbds://, and their ratio.
//
// Usage: npm run bench -- [--seconds N] [--quick]   (BENCH_SECONDS also sets N)

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ProcessTracker } from './lib/processes.js';
import { fioJobs, runFio, type FioJob } from './lib/fio.js';
import { makeTlsFiles, startNbdkit, startNbdkitTls, startQemuNbd, startTwinstore, startTwinstoreTls, targetNames, writeRandomFile, type Target, type TargetName, type TargetOptions } from './lib/targets.js';
import { failureLines, formatCell, jsonReport, legend, markdownReport, textTable, type Cell, type JobResult, type RunInfo } from './lib/report.js';

interface Options {
  seconds: number;
  quick: boolean;
  imageBytes: number;
}

const fullImageBytes = 2 * 2 ** 30;
const quickImageBytes = 256 * 2 ** 20;
const fullSecondsDefault = 10;
const quickSecondsDefault = 2;
const secondsMax = 3600;
const resultsDir = path.join(import.meta.dirname, 'results');

const usage = `usage: npm run bench -- [--seconds N] [--quick]
  --seconds N  fio runtime per job and target (default ${fullSecondsDefault}, or BENCH_SECONDS)
  --quick      smoke run: ${quickImageBytes / 2 ** 20} MiB images, ${quickSecondsDefault} s per job unless --seconds is given
`;

function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: { seconds: { type: 'string' }, quick: { type: 'boolean', default: false }, help: { type: 'boolean', default: false } },
    strict: true,
  });
  if (values.help === true) return undefined;
  const quick = values.quick === true;
  const text = values.seconds ?? process.env.BENCH_SECONDS;
  const seconds = text === undefined ? (quick ? quickSecondsDefault : fullSecondsDefault) : Number(text);
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > secondsMax) {
    throw new Error(`--seconds / BENCH_SECONDS must be a whole number from 1 to ${secondsMax}, got "${text}"`);
  }
  return { seconds, quick, imageBytes: quick ? quickImageBytes : fullImageBytes };
}

function progress(message: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

async function toolVersions(tracker: ProcessTracker): Promise<Record<string, string>> {
  const versions: Record<string, string> = {};
  for (const tool of ['fio', 'qemu-nbd', 'nbdkit', 'nbdcopy']) {
    const { stdout } = await tracker.run(tool, ['--version'], { label: `${tool} --version`, timeoutMs: 10_000 });
    versions[tool] = (stdout.split('\n')[0] ?? '').replace(/^(fio-|qemu-nbd |nbdkit |nbdcopy )/, '').trim();
  }
  return versions;
}

function runInfo(options: Options, tools: Record<string, string>): RunInfo {
  return {
    startedAt: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    cpus: os.availableParallelism(),
    kernel: os.release(),
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    tools,
    seconds: options.seconds,
    imageBytes: options.imageBytes,
    quick: options.quick,
  };
}

async function startTargets(tracker: ProcessTracker, workDir: string, imageBytes: number): Promise<Target[]> {
  const sourceFile = path.join(workDir, 'random.img');
  progress(`writing ${imageBytes / 2 ** 20} MiB of random data`);
  await writeRandomFile(sourceFile, imageBytes);
  const starters = { Twinstore: startTwinstore, 'qemu-nbd': startQemuNbd, nbdkit: startNbdkit, 'Twinstore TLS': startTwinstoreTls, 'nbdkit TLS': startNbdkitTls } as const;
  const tlsDir = path.join(workDir, 'tls');
  await fs.promises.mkdir(tlsDir);
  const tls = await makeTlsFiles(tracker, tlsDir);
  const targets: Target[] = [];
  for (const name of targetNames) {
    const dir = path.join(workDir, name.replace(' ', '-'));
    await fs.promises.mkdir(dir);
    progress(`starting and filling ${name}`);
    const options: TargetOptions = { tracker, dir, imageBytes, sourceFile, tls };
    const target = await starters[name](options);
    progress(`${name} serving ${target.uri} (pid ${target.server.pid})`);
    targets.push(target);
  }
  await fs.promises.rm(sourceFile);
  return targets;
}

/** What every step of one run shares. */
interface Run {
  tracker: ProcessTracker;
  options: Options;
  workDir: string;
  /** Aborted on SIGINT/SIGTERM: no further step starts. */
  abort: AbortSignal;
}

async function runJob(run: Run, job: FioJob, targets: Target[]): Promise<JobResult> {
  const { tracker, options, workDir, abort } = run;
  const cells = {} as Record<TargetName, Cell>;
  for (const target of targets) {
    abort.throwIfAborted();
    if (target.server.hasExited()) {
      cells[target.name] = { ok: false, error: `server exited earlier: ${target.server.stderrTail().slice(-2000)}` };
      continue;
    }
    const outputFile = path.join(workDir, `${job.name}-${target.name.replace(' ', '-')}.json`);
    try {
      const measurement = await runFio(tracker, { job, uri: target.uri, seconds: options.seconds, imageBytes: options.imageBytes, outputFile, env: target.clientEnv });
      cells[target.name] = { ok: true, measurement };
    } catch (error) {
      abort.throwIfAborted();
      cells[target.name] = { ok: false, error: (error as Error).message };
    }
    progress(`${job.name} ${target.name}: ${formatCell(job, cells[target.name])}`);
  }
  return { job, cells };
}

async function writeResults(info: RunInfo, results: JobResult[]): Promise<string> {
  await fs.promises.mkdir(resultsDir, { recursive: true });
  const stem = path.join(resultsDir, `nbd-bench-${info.startedAt.replace(/:/g, '-')}`);
  await fs.promises.writeFile(`${stem}.md`, markdownReport(info, results));
  await fs.promises.writeFile(`${stem}.json`, JSON.stringify(jsonReport(info, results), null, 2) + '\n');
  return stem;
}

async function bench(run: Run): Promise<void> {
  const { tracker, options, workDir, abort } = run;
  const info = runInfo(options, await toolVersions(tracker));
  process.stdout.write(`CPU: ${info.cpuModel}; nproc ${info.cpus}; kernel ${info.kernel}; ${info.memoryGiB} GiB RAM; Node ${info.node}\n`);
  process.stdout.write(`fio ${info.tools.fio}, qemu-nbd ${info.tools['qemu-nbd']}, nbdkit ${info.tools.nbdkit}, nbdcopy ${info.tools.nbdcopy}\n`);
  process.stdout.write(`${options.seconds} s per job, image ${options.imageBytes / 2 ** 20} MiB${options.quick ? ' (quick)' : ''}, work folder ${workDir}\n\n`);
  const targets = await startTargets(tracker, workDir, options.imageBytes);
  const results: JobResult[] = [];
  for (const job of fioJobs) results.push(await runJob(run, job, targets));
  abort.throwIfAborted();
  process.stdout.write(`\n${textTable(results)}\n\n${legend.join('\n')}\n`);
  const failed = failureLines(results);
  if (failed.length > 0) process.stdout.write(`\nFailures:\n${failed.join('\n')}\n`);
  const stem = await writeResults(info, results);
  process.stdout.write(`\nresults: ${path.relative(process.cwd(), stem)}.{md,json}\n`);
  if (failed.length > 0) process.exitCode = 1;
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  if (options === undefined) {
    process.stdout.write(usage);
    return;
  }
  const tracker = new ProcessTracker();
  const workDir = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'twinstore-bench-'));
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> => {
    cleaning ??= tracker.stopAll().finally(() => fs.promises.rm(workDir, { recursive: true, force: true }));
    return cleaning;
  };
  const abort = new AbortController();
  const interrupt = (signal: NodeJS.Signals, exitCode: number): void => {
    progress(`${signal}: stopping everything this run started`);
    abort.abort(new Error(`interrupted by ${signal}`));
    cleanup().finally(() => process.exit(exitCode));
  };
  process.once('SIGINT', () => interrupt('SIGINT', 130));
  process.once('SIGTERM', () => interrupt('SIGTERM', 143));
  try {
    await bench({ tracker, options, workDir, abort: abort.signal });
  } finally {
    await cleanup();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`nbd-bench: ${(error as Error).stack ?? String(error)}\n`);
  process.exitCode = 1;
});
