// Why this exists: issue 4's numbers for role changes, measured in one run on
// this machine with two real arrays: (1) a planned swap with an empty journal
// and the swap back (whole command and the freeze part, from the command's
// JSON), (2) a planned swap with 1 GiB of backlog (restore paused while fio
// writes 1 GiB, resumed right before the takeover: the drain applies it while
// A could still take writes, down to swap.lagBytesMax, and the freeze covers
// the rest), (3) a takeover with A killed, (4) the resync --swap that follows
// once A is back, after B wrote 512 MiB as SSWS: bytes copied and MB/s.
// Run: npm run bench:takeover

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ProcessTracker } from './lib/processes.js';
import { BenchSites, runBench, type Site } from './lib/sites.js';

const MiB = 2 ** 20;
const tracker = new ProcessTracker();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twinstore-takeoverbench-'));
const sites = new BenchSites(tracker, dir);

interface Takeover {
  kind: string;
  consistencySeq: number;
  freezeMs: number;
  ms: number;
}

function log(text: string): void {
  process.stdout.write(`[${new Date().toISOString().slice(11, 19)}] ${text}\n`);
}

async function takeover(site: Site): Promise<Takeover & { wallMs: number }> {
  const started = Date.now();
  const out = await tracker.run(process.execPath, [path.resolve(import.meta.dirname, '..', 'bin', 'twinstore.js'), '--config', site.config, 'takeover', '--group', 'bench', '--json'],
    { label: 'takeover', timeoutMs: 600_000, okCodes: [0, 3] });
  return { ...(JSON.parse(out.stdout) as Takeover), wallMs: Date.now() - started };
}

async function fioWrite(site: Site, volume: string, bytes: number, offset = 0): Promise<void> {
  await tracker.run('fio', ['--name=w', '--ioengine=nbd', `--uri=nbd://${site.nbd}/${volume}`, '--rw=write', '--bs=1M', '--iodepth=8',
    `--offset=${offset}`, `--size=${bytes}`, '--output=/dev/null'], { label: 'fio', timeoutMs: 600_000 });
}

/** pair resync --swap, sent again while B's own link to the returning A is not up yet (LINK_DOWN). */
async function resyncSwap(site: Site): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await sites.cli(site, ['pair', 'resync', '--group', 'bench', '--swap', '--json']);
    } catch (error) {
      if (attempt >= 20) throw error;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

async function main(): Promise<void> {
  log(`work folder ${dir}; ${os.cpus()[0]?.model ?? '?'} x${os.cpus().length}`);
  const [a, b] = await sites.write('takeover:\n  peerTimeoutMs: 2000\nswap:\n  freezeMsMax: 300000');
  await sites.start(a!);
  await sites.start(b!);
  for (const [site, name] of [[a!, 'vol'], [b!, 'vol']] as const) {
    await sites.cli(site, ['volume', 'create', name, '--size', '2GiB']);
    await sites.cli(site, ['journal', 'create', 'jnl', '--size', '2GiB']);
  }
  await sites.cli(a!, ['pair', 'create', '--group', 'bench', '--pvol', 'vol', '--svol', 'site-b:vol', '--journal', 'jnl', '--remote-journal', 'site-b:jnl']);
  await fioWrite(a!, 'vol', 256 * MiB);
  await sites.waitUntil(a!, (r) => r.status === 'PAIR' && r.lagRecords === 0, 600_000);
  const rows: string[][] = [['what', 'command', 'freeze (host writes held)', 'note']];

  log('planned swap, empty journal');
  const swap = await takeover(b!);
  rows.push(['swap A->B, empty journal', `${swap.ms} ms (${swap.wallMs} ms with the CLI)`, `${swap.freezeMs} ms`, swap.kind]);
  await sites.waitUntil(b!, (r) => r.status === 'PAIR' && r.lagRecords === 0, 600_000);
  const back = await takeover(a!);
  rows.push(['swap B->A, empty journal', `${back.ms} ms (${back.wallMs} ms with the CLI)`, `${back.freezeMs} ms`, back.kind]);
  await sites.waitUntil(a!, (r) => r.status === 'PAIR' && r.lagRecords === 0, 600_000);

  log('planned swap with 1 GiB of backlog');
  await sites.cli(b!, ['pair', 'restore', '--group', 'bench', '--pause']);
  await fioWrite(a!, 'vol', 1024 * MiB);
  const backlog = await sites.pairState(a!);
  await sites.cli(b!, ['pair', 'restore', '--group', 'bench', '--resume']);
  const loaded = await takeover(b!);
  rows.push(['swap A->B, 1 GiB backlog', `${loaded.ms} ms (drain, then freeze)`, `${loaded.freezeMs} ms`, `${backlog.lagRecords} records, journal ${backlog.journalUsedPercent}% before`]);
  await sites.waitUntil(b!, (r) => r.status === 'PAIR' && r.lagRecords === 0, 600_000);
  const back2 = await takeover(a!);
  await sites.waitUntil(a!, (r) => r.status === 'PAIR' && r.lagRecords === 0, 600_000);
  rows.push(['swap B->A, empty journal', `${back2.ms} ms`, `${back2.freezeMs} ms`, back2.kind]);

  log('takeover with A killed');
  a!.server!.child.kill('SIGKILL');
  await new Promise((r) => setTimeout(r, 200));
  const dead = await takeover(b!);
  rows.push(['takeover, A dead', `${dead.ms} ms (${dead.wallMs} ms with the CLI)`, '-', `${dead.kind}; takeover.peerTimeoutMs 2000`]);

  log('B writes 512 MiB as SSWS; A back (fenced); resync --swap');
  await fioWrite(b!, 'vol', 512 * MiB, 1024 * MiB);
  await sites.start(a!);
  await sites.waitUntil(a!, (r) => r.status === 'FENCED', 60_000);
  const started = Date.now();
  const resync = JSON.parse(await resyncSwap(b!)) as { dirtyBytes: number };
  await sites.waitUntil(b!, (r) => r.status === 'PAIR' && r.lagRecords === 0, 600_000);
  const seconds = (Date.now() - started) / 1000;
  const sent = (await sites.pairState(b!)).copyBytes;
  rows.push(['resync --swap', `${seconds.toFixed(1)} s`, '-', `${(sent / MiB).toFixed(0)} MiB sent for ${(resync.dirtyBytes / MiB).toFixed(0)} MiB dirty: ${(sent / MiB / seconds).toFixed(0)} MiB/s`]);

  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  process.stdout.write('\n' + rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ')).join('\n') + '\n');
}

runBench('takeover bench', tracker, dir, main);
