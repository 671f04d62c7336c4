// `twinstore demo`: the README's main job. With nothing to configure it sets up
// two arrays on this machine under one folder (--dir, default ./twinstore-data):
// a link key, a config per array (ports bound on the first run, then kept, so a second run
// finds the same arrays and data), starts each as its own `twinstore serve`
// process, and pairs a P-VOL on site-a with an S-VOL on site-b in journal group
// "demo". It prints how to reach everything, then one JSON line for scripts.
// Ctrl-C stops both arrays cleanly.

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
  const started: Array<{ child: ChildProcess; ready: ReadyInfo }> = [];
  const stop = (): void => {
    for (const s of started) s.child.kill('SIGTERM');
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  let pvol: VolumeJson;
  let svol: VolumeJson;
  try {
    for (const site of sites) started.push(await startServe(site.config));
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
    stop(); // never leave an array running behind a demo that failed
    throw error;
  }
  const [ra, rb] = started.map((s) => s.ready);
  process.stdout.write([
    `Twinstore demo: arrays site-a (pid ${started[0]!.child.pid}) and site-b (pid ${started[1]!.child.pid}) replicate group "${group}".`,
    `  P-VOL  ${pvol.nbdUri}   (site-a, read-write)`,
    `  S-VOL  ${svol.nbdUri}   (site-b, read-only while paired)`,
    `  APIs   http://${ra!.api} (site-a), http://${rb!.api} (site-b)`,
    '',
    'Try:',
    `  qemu-io -f raw -c 'write -P 0xab 0 1M' ${pvol.nbdUri}`,
    `  node bin/twinstore.js --config ${sites[0]!.config} pair display --watch`,
    `  qemu-img compare -f raw -F raw ${pvol.nbdUri} ${svol.nbdUri}`,
    'Ctrl-C stops both arrays cleanly; running the demo again reuses everything.',
    '',
  ].join('\n'));
  const arrays = started.map((s, i) => ({ id: s.ready.array, pid: s.child.pid, config: sites[i]!.config, nbd: s.ready.nbd, api: s.ready.api, link: s.ready.link }));
  process.stdout.write(JSON.stringify({ ready: true, group, arrays, pvol: pvol.nbdUri, svol: svol.nbdUri }) + '\n');
  const codes = await Promise.all(started.map((s) => new Promise<number | null>((resolve) => s.child.once('exit', (c) => resolve(c)))));
  process.exit(codes.every((c) => c === 0) ? 0 : 1);
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
    await client.request('POST', '/v1/journals', { name: journalName, size: '256MiB' });
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

/** Starts `twinstore serve` as a child process and waits for its ready line. */
export function startServe(configFile: string): Promise<{ child: ChildProcess; ready: ReadyInfo }> {
  const entry = process.argv[1]!;
  const child = spawn(process.execPath, [entry, '--config', configFile, 'serve'], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout! });
    lines.once('line', (line) => {
      try {
        resolve({ child, ready: JSON.parse(line) as ReadyInfo });
      } catch (error) {
        reject(error);
      }
    });
    child.once('exit', (code) => reject(new TwinstoreError('INTERNAL', `twinstore serve --config ${configFile} exited with code ${code} before it was ready`)));
  });
}
