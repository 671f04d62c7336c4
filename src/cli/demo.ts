// `twinstore demo`: the README's main job. With nothing to configure it writes
// a config under a local folder (--dir, default ./twinstore-data), starts the
// array as its own `twinstore serve` process, makes sure a demo volume exists,
// and prints how to reach it. Ctrl-C stops the array cleanly; a second run
// reuses the data.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { TwinstoreError } from '../errors.js';
import type { ReadyInfo } from '../array/array.js';
import type { VolumeJson } from '../api/index.js';
import { connect } from './client.js';

const demoVolume = 'vol0';

function demoConfig(id: string): string {
  return [
    '# Written by `twinstore demo`; edit freely. Reference: docs/config.md',
    'array:',
    `  id: ${id}`,
    `  dataDir: ${id}`,
    'drives:',
    `  - path: ${id}/drive0.img`,
    '    size: 8GiB',
    `  - path: ${id}/drive1.img`,
    '    size: 8GiB',
    'listen:',
    '  nbd: 127.0.0.1:0',
    '  api: 127.0.0.1:0',
    '',
  ].join('\n');
}

export async function demo(dir: string): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const configFile = path.resolve(dir, 'site-a.yaml');
  if (!fs.existsSync(configFile)) fs.writeFileSync(configFile, demoConfig('site-a'));
  const { child, ready } = await startServe(configFile);
  const stop = (): void => {
    child.kill('SIGTERM');
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  const client = connect({ config: configFile });
  const volume = await ensureVolume(client);
  process.stdout.write([
    `Twinstore demo: array ${ready.array} is running (pid ${child.pid}).`,
    `  config:  ${configFile}`,
    `  NBD:     ${ready.nbd}    API: http://${ready.api}`,
    `  volume:  ${volume.name}, ${volume.sizeBytes} bytes, ${volume.nbdUri}`,
    '',
    'Try:',
    `  qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' ${volume.nbdUri}`,
    `  nbdinfo --map ${volume.nbdUri}`,
    `  node bin/twinstore.js --config ${configFile} volume list`,
    'Ctrl-C stops the array cleanly.',
    '',
  ].join('\n'));
  process.stdout.write(JSON.stringify({ ...ready, pid: child.pid, config: configFile, volume: volume.nbdUri }) + '\n');
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  process.exit(code ?? 1);
}

async function ensureVolume(client: ReturnType<typeof connect>): Promise<VolumeJson> {
  try {
    return await client.request<VolumeJson>('GET', `/v1/volumes/${demoVolume}`);
  } catch (error) {
    if (!(error instanceof TwinstoreError) || error.code !== 'VOLUME_NOT_FOUND') throw error;
    return client.request<VolumeJson>('POST', '/v1/volumes', { name: demoVolume, size: '1GiB' });
  }
}

/** Starts `twinstore serve` as a child process and waits for its ready line. */
export function startServe(configFile: string): Promise<{ child: ChildProcess; ready: ReadyInfo }> {
  const entry = process.argv[1]!;
  const child = spawn(process.execPath, [entry, 'serve', '--config', configFile], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout! });
    lines.once('line', (line) => {
      try {
        resolve({ child, ready: JSON.parse(line) as ReadyInfo });
      } catch (error) {
        reject(error);
      }
    });
    child.once('exit', (code) => reject(new TwinstoreError('INTERNAL', `twinstore serve exited with code ${code} before it was ready`)));
  });
}
