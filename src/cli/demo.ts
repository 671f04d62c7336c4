// `twinstore demo`: the README's main job. With nothing to configure it sets up
// two arrays on this machine under one folder (--dir, default ./twinstore-data):
// a link key, a config per array (ports bound on the first run, then kept, so a second run
// finds the same arrays and data), starts each as its own `twinstore serve`
// process, and pairs a P-VOL on site-a with an S-VOL on site-b in journal group
// "demo". It prints how to reach everything, then one JSON line for scripts.
// Ctrl-C stops both arrays whatever state they are in (starting, hung: killed
// after a bound), and an array that dies under it is named on stderr; the
// demo then stops the other and exits 1.

import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { TwinstoreError } from '../errors.js';
import type { ReadyInfo } from '../array/array.js';
import type { VolumeJson } from '../api/index.js';
import { connect } from './client.js';

const group = 'demo';
const volumeName = 'vol0';
const journalName = 'jnl0';

interface Site {
  id: string;
  config: string;
}

/** The demo's config of one array; `ports` null: every listener on port 0 (the first run). */
function configText(id: string, ports: { nbd: string; api: string; link: string } | null): string {
  return [
    '# Written by `twinstore demo`; edit freely. Reference: docs/config.md',
    'array:',
    `  id: ${id}`,
    `  dataDir: ${id}`,
    'drives:',
    `  - path: ${id}/drive0.img`,
    '    size: 8GiB',
    `  - path: ${id}/journal0.img`,
    '    size: 1GiB',
    '    use: journal',
    'listen:',
    `  nbd: ${ports?.nbd ?? '127.0.0.1:0'}`,
    `  api: ${ports?.api ?? '127.0.0.1:0'}`,
    `  link: ${ports?.link ?? '127.0.0.1:0'}`,
    'link:',
    '  pskFile: link.psk',
    '',
  ].join('\n');
}

/**
 * A link key and a config per array. On the first run every listener takes port 0 (nothing to
 * collide with); once the arrays are up, their configs are rewritten with the bound addresses,
 * so a second run brings them back at the same ones. Each array learns the other with peer add.
 */
function writeConfigs(dir: string): { sites: Site[]; firstRun: boolean } {
  const psk = path.join(dir, 'link.psk');
  if (!fs.existsSync(psk)) fs.writeFileSync(psk, crypto.randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
  const sites = ['site-a', 'site-b'].map((id) => ({ id, config: path.resolve(dir, `${id}.yaml`) }));
  if (sites.every((s) => fs.existsSync(s.config))) return { sites, firstRun: false };
  for (const site of sites) fs.writeFileSync(site.config, configText(site.id, null));
  return { sites, firstRun: true };
}

export async function demo(dir: string): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const { sites, firstRun } = writeConfigs(dir);
  const arrays = new DemoArrays();
  const stopOn = (signal: NodeJS.Signals): void => {
    if (arrays.stopping) return;
    say(`${signal}: stopping ${arrays.list() || 'nothing started yet'}`);
    void arrays.stopAll().then((clean) => process.exit(clean ? 0 : 1));
  };
  process.on('SIGINT', () => stopOn('SIGINT'));
  process.on('SIGTERM', () => stopOn('SIGTERM'));
  const started: Array<{ child: ChildProcess; ready: ReadyInfo }> = [];
  let pvol: VolumeJson;
  let svol: VolumeJson;
  try {
    for (const site of sites) {
      if (arrays.stopping) break;
      started.push(await arrays.start(site));
    }
    if (arrays.stopping) return await forever();
    if (firstRun) {
      for (const [i, site] of sites.entries()) {
        const ready = started[i]!.ready;
        fs.writeFileSync(site.config, configText(site.id, { nbd: ready.nbd, api: ready.api, link: ready.link! }));
      }
    }
    const [a, b] = sites.map((s) => connect({ config: s.config }));
    await a!.request('POST', '/v1/peers', { id: 'site-b', link: started[1]!.ready.link });
    await b!.request('POST', '/v1/peers', { id: 'site-a', link: started[0]!.ready.link });
    pvol = await ensureVolume(a!, volumeName);
    svol = await ensureVolume(b!, volumeName);
    await ensureJournal(a!);
    await ensureJournal(b!);
    await ensurePair(a!);
  } catch (error) {
    // A signal's stop is under way (it exits when done), or the setup failed: never leave an array running.
    if (arrays.stopping) return await forever();
    await arrays.stopAll();
    throw error;
  }
  const [ra, rb] = started.map((s) => s.ready);
  process.stdout.write([
    `Twinstore demo: arrays site-a (pid ${started[0]!.child.pid}) and site-b (pid ${started[1]!.child.pid}) replicate group "${group}".`,
    `  P-VOL  ${pvol.nbdUri}   (site-a, read-write)`,
    `  S-VOL  ${svol.nbdUri}   (site-b, read-only while paired)`,
    `  APIs   http://${ra!.api} (site-a), http://${rb!.api} (site-b)`,
    `  Dashboard http://${ra!.api}/ui/ (site-a; its token: cat ${path.resolve(dir, 'site-a', 'api-token')})`,
    '',
    'Try:',
    `  qemu-io -f raw -c 'write -P 0xab 0 1M' ${pvol.nbdUri}`,
    `  node bin/twinstore.js --config ${sites[0]!.config} pair display --watch`,
    `  qemu-img compare -f raw -F raw ${pvol.nbdUri} ${svol.nbdUri}`,
    'Ctrl-C stops both arrays cleanly; running the demo again reuses everything.',
    '',
  ].join('\n'));
  const json = started.map((s, i) => ({ id: s.ready.array, pid: s.child.pid, config: sites[i]!.config, nbd: s.ready.nbd, api: s.ready.api, link: s.ready.link }));
  process.stdout.write(JSON.stringify({ ready: true, group, arrays: json, pvol: pvol.nbdUri, svol: svol.nbdUri }) + '\n');
  const died = await arrays.firstExit();
  if (arrays.stopping) return await forever();
  // An array died under the demo: say so, stop the other, and exit non-zero.
  say(`${died.id} (pid ${died.pid}) died (${describeExit(died.exit)}); stopping ${arrays.list() || 'the other array'}`);
  await arrays.stopAll();
  process.exit(1);
}

/** The demo's lines for the person at the terminal (stderr: stdout carries the ready text and JSON line). */
function say(text: string): void {
  process.stderr.write(`twinstore demo: ${text}\n`);
}

/** Until the signal handler's stop exits the process. */
function forever(): Promise<never> {
  return new Promise<never>(() => undefined);
}

interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

function describeExit(exit: ChildExit): string {
  return exit.signal !== null ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
}

/** How long the demo waits for its arrays to stop after SIGTERM before it kills them with SIGKILL. */
const stopMsMax = 20_000;

/**
 * Every `twinstore serve` the demo spawned, from the moment it is spawned (a Ctrl-C while one is
 * starting stops it too). stopAll sends SIGTERM to each array still running, SIGKILL to any still
 * running `stopMsMax` later (a hung array), and resolves once every one has exited.
 */
class DemoArrays {
  private readonly arrays: Array<{ id: string; child: ChildProcess; exit: Promise<ChildExit> }> = [];
  stopping = false;

  async start(site: Site): Promise<{ child: ChildProcess; ready: ReadyInfo }> {
    const { child, ready } = startServe(site.config);
    const exit = new Promise<ChildExit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    this.arrays.push({ id: site.id, child, exit });
    say(`starting ${site.id} (pid ${child.pid})`);
    return { child, ready: await ready };
  }

  /** The arrays still running, for a message: `site-a (pid N), site-b (pid M)`. */
  list(): string {
    return this.running().map((a) => `${a.id} (pid ${a.child.pid})`).join(', ');
  }

  /** The first array to exit, and how. */
  firstExit(): Promise<{ id: string; pid: number | undefined; exit: ChildExit }> {
    return Promise.race(this.arrays.map((a) => a.exit.then((exit) => ({ id: a.id, pid: a.child.pid, exit }))));
  }

  /** True when every array stopped by itself (exit 0) or by the SIGTERM sent to it. */
  async stopAll(): Promise<boolean> {
    this.stopping = true;
    for (const a of this.running()) a.child.kill('SIGTERM');
    const timer = setTimeout(() => {
      for (const a of this.running()) {
        say(`${a.id} (pid ${a.child.pid}) did not stop within ${stopMsMax} ms of SIGTERM: killing it (SIGKILL)`);
        a.child.kill('SIGKILL');
      }
    }, stopMsMax);
    const exits = await Promise.all(this.arrays.map((a) => a.exit));
    clearTimeout(timer);
    return exits.every((e) => e.code === 0 || e.signal === 'SIGTERM');
  }

  private running(): Array<{ id: string; child: ChildProcess }> {
    return this.arrays.filter((a) => a.child.exitCode === null && a.child.signalCode === null);
  }
}

async function ensureVolume(client: ReturnType<typeof connect>, name: string): Promise<VolumeJson> {
  try {
    return await client.request<VolumeJson>('GET', `/v1/volumes/${name}`);
  } catch (error) {
    if (!(error instanceof TwinstoreError) || error.code !== 'VOLUME_NOT_FOUND') throw error;
    return client.request<VolumeJson>('POST', '/v1/volumes', { name, size: '1GiB' });
  }
}

async function ensureJournal(client: ReturnType<typeof connect>): Promise<void> {
  try {
    await client.request('GET', `/v1/journals/${journalName}`);
  } catch (error) {
    if (!(error instanceof TwinstoreError) || error.code !== 'VOLUME_NOT_FOUND') throw error;
    await client.request('POST', '/v1/journals', { name: journalName, size: '512MiB' });
  }
}

async function ensurePair(client: ReturnType<typeof connect>): Promise<void> {
  const { pairs } = await client.request<{ pairs: unknown[] }>('GET', '/v1/pairs');
  if (pairs.length > 0) return;
  for (let attempt = 0; ; attempt++) {
    try {
      await client.request('POST', '/v1/pairs', { group, pvol: volumeName, svol: `site-b:${volumeName}`, journal: journalName, remoteJournal: `site-b:${journalName}` });
      return;
    } catch (error) {
      // The link may still be coming up right after both arrays started.
      if (!(error instanceof TwinstoreError) || !error.code.startsWith('LINK_') || attempt >= 50) throw error;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** Starts `twinstore serve` as a child process; `ready` resolves with its ready line. */
function startServe(configFile: string): { child: ChildProcess; ready: Promise<ReadyInfo> } {
  const entry = process.argv[1]!;
  const child = spawn(process.execPath, [entry, '--config', configFile, 'serve'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ready = new Promise<ReadyInfo>((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout! });
    lines.once('line', (line) => {
      try {
        resolve(JSON.parse(line) as ReadyInfo);
      } catch (error) {
        reject(error);
      }
    });
    child.once('exit', (code, signal) => reject(new TwinstoreError('INTERNAL', `twinstore serve --config ${configFile} exited (${describeExit({ code, signal })}) before it was ready`)));
  });
  return { child, ready };
}
