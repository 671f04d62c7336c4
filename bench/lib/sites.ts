// Two Twinstore arrays on this machine for the replication benchmarks: their
// configs (a data drive and a journal drive each, a shared link key, link
// ports chosen now), starting them, running the CLI against one, and reading
// and waiting on `pair display`. Used by replication-bench.ts and
// takeover-bench.ts.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { freePort, type ProcessTracker, type Tracked } from './processes.js';
import { readReadyLine } from './targets.js';

export const cliEntry = path.resolve(import.meta.dirname, '..', '..', 'bin', 'twinstore.js');

export interface Site {
  id: string;
  config: string;
  server?: Tracked;
  nbd?: string;
  /** The management API's address, from the ready line. */
  api?: string;
}

export interface PairRow {
  status: string;
  lagRecords: number;
  lagSeconds: number;
  journalUsedPercent: number;
  copyBytes: number;
  /** On the receiver: every record up to it is on the S-VOLs. */
  consistencySeq: number;
}

/**
 * Runs a two-array bench: on its end, a failure or Ctrl-C, every child it started is stopped (by
 * PID) and its work folder removed; a failure exits 1 with `name` in the message.
 */
export function runBench(name: string, tracker: ProcessTracker, dir: string, main: () => Promise<void>): void {
  let cleaning = false;
  const cleanup = async (): Promise<void> => {
    if (cleaning) return;
    cleaning = true;
    await tracker.stopAll().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  process.on('SIGINT', () => void cleanup().then(() => process.exit(130)));
  main().then(cleanup, async (error: unknown) => {
    process.stderr.write(`${name} failed: ${(error as Error).stack ?? String(error)}\n`);
    await cleanup();
    process.exit(1);
  });
}

export class BenchSites {
  constructor(private readonly tracker: ProcessTracker, private readonly dir: string) {}

  /** Writes site-a.yaml and site-b.yaml (each names the other as its peer); `extra` is appended to both. */
  async write(extra = ''): Promise<Site[]> {
    const psk = path.join(this.dir, 'link.psk');
    fs.writeFileSync(psk, crypto.randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
    const links = [await freePort(), await freePort()];
    return ['site-a', 'site-b'].map((id, i) => {
      const config = path.join(this.dir, `${id}.yaml`);
      fs.writeFileSync(config, [
        'array:', `  id: ${id}`, `  dataDir: ${id}`,
        'drives:', `  - path: ${id}/drive0.img`, '    size: 8GiB', `  - path: ${id}/journal0.img`, '    size: 3GiB', '    use: journal',
        'listen:', '  nbd: 127.0.0.1:0', '  api: 127.0.0.1:0', `  link: 127.0.0.1:${links[i]}`,
        'link:', `  pskFile: ${psk}`,
        'peers:', `  - id: ${i === 0 ? 'site-b' : 'site-a'}`, `    link: 127.0.0.1:${links[1 - i]}`,
        extra, '',
      ].join('\n'));
      return { id, config };
    });
  }

  /**
   * Starts the array, pinned to `cpu` when given; `nodeArgs` go to node before the CLI (e.g.
   * --cpu-prof); `onLine` gets every stdout line but the ready line (e.g. --trace-gc's).
   */
  async start(site: Site, cpu?: number, nodeArgs: string[] = [], onLine?: (line: string) => void): Promise<void> {
    site.server = this.tracker.spawn(process.execPath, [...nodeArgs, cliEntry, 'serve', '--config', site.config], { label: `serve ${site.id}`, stdout: 'pipe', ...(cpu === undefined ? {} : { cpu }) });
    const ready = await readReadyLine(site.server, onLine);
    site.nbd = ready.nbd;
    if (ready.api !== undefined) site.api = ready.api;
  }

  async cli(site: Site, args: string[]): Promise<string> {
    const out = await this.tracker.run(process.execPath, [cliEntry, '--config', site.config, ...args], { label: `twinstore ${args.slice(0, 2).join(' ')}`, timeoutMs: 600_000 });
    return out.stdout;
  }

  /**
   * The first pair of `group` (or of the array) through the API, as `pair display --json` shows it:
   * a GET costs a millisecond where a CLI process costs hundreds, so lag samples come often.
   */
  async pairState(site: Site, group?: string): Promise<PairRow> {
    if (site.api === undefined) throw new Error(`${site.id}: no API address in its ready line`);
    const token = fs.readFileSync(path.join(this.dir, site.id, 'api-token'), 'utf8').trim();
    const response = await fetch(`http://${site.api}/v1/pairs${group === undefined ? '' : `?group=${encodeURIComponent(group)}`}`, {
      headers: { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(30_000),
    });
    if (response.status !== 200) throw new Error(`${site.id}: GET /v1/pairs answered ${response.status}: ${await response.text()}`);
    const out = (await response.json()) as { pairs: PairRow[] };
    if (out.pairs.length === 0) throw new Error(`${site.id}: no pair${group === undefined ? '' : ` in group ${group}`}`);
    return out.pairs[0]!;
  }

  async waitUntil(site: Site, check: (row: PairRow) => boolean, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check(await this.pairState(site))) {
      if (Date.now() > deadline) throw new Error('timed out waiting for the pair');
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
