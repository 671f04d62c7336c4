// Why this exists: the benchmark compares Twinstore with two reference NBD
// servers on the same kind of backing file. This module starts each server on
// 127.0.0.1 (through the ProcessTracker, so cleanup can find it) and fills its
// image with the same random bytes, so every read hits allocated data. The TLS
// rows run Twinstore with `nbd.tls: require` and nbdkit with `--tls=require`
// on X.509 files from `twinstore tls`. fio's nbd engine may not name local
// files in its URI (no `?tls-certificates=`), so its clients find the CA where
// libnbd looks by default, `$HOME/.pki/libnbd/ca-cert.pem`, under a HOME of
// the benchmark's own (Target.clientEnv).

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { freePort, waitForPort, type ProcessTracker, type Tracked } from './processes.js';

export const targetNames = ['Twinstore', 'qemu-nbd', 'nbdkit', 'Twinstore TLS', 'nbdkit TLS'] as const;
export type TargetName = (typeof targetNames)[number];

export interface Target {
  name: TargetName;
  uri: string;
  server: Tracked;
  /** The environment a client of this target runs with (the TLS targets: a HOME holding the CA). */
  clientEnv?: NodeJS.ProcessEnv;
}

/** X.509 files for the TLS targets: `twinstore tls server` output, and a HOME whose .pki/libnbd holds the CA. */
export interface TlsFiles {
  serverDir: string;
  clientHome: string;
}

export interface TargetOptions {
  tracker: ProcessTracker;
  /** A folder of its own under the benchmark's temp folder. */
  dir: string;
  imageBytes: number;
  /** The random image every target starts from. */
  sourceFile: string;
  /** The TLS targets' files. */
  tls: TlsFiles;
}

const exportName = 'vol';
const serverStartMsMax = 30_000;
const cliRunMsMax = 30_000;
const randomChunkBytes = 16 * 2 ** 20;
/** Twinstore's drive holds the volume plus room for metadata; the file is sparse. */
const driveSlackBytes = 2 ** 30;
/** qemu-nbd allocates a bounce buffer per request; these glibc settings stop it faulting in fresh pages each time (bench/baseline.md). */
const qemuGlibcTunables = 'glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456';

const projectRoot = path.resolve(import.meta.dirname, '..', '..');
const cliEntry = path.join(projectRoot, 'bin', 'twinstore.js');

/** Writes imageBytes of random data to file, in bounded chunks. */
export async function writeRandomFile(file: string, imageBytes: number): Promise<void> {
  if (imageBytes % randomChunkBytes !== 0) throw new Error(`image size ${imageBytes} is not a multiple of ${randomChunkBytes}`);
  const chunk = Buffer.alloc(randomChunkBytes);
  const handle = await fs.promises.open(file, 'w');
  try {
    for (let offset = 0; offset < imageBytes; offset += chunk.length) {
      crypto.randomFillSync(chunk);
      await handle.write(chunk, 0, chunk.length, offset);
    }
  } finally {
    await handle.close();
  }
  const written = (await fs.promises.stat(file)).size;
  if (written !== imageBytes) throw new Error(`random image is ${written} bytes, expected ${imageBytes}`);
}

/** A CA and a server certificate for 127.0.0.1 (`twinstore tls`), and the clients' HOME with the CA where libnbd looks. */
export async function makeTlsFiles(tracker: ProcessTracker, dir: string): Promise<TlsFiles> {
  const ca = path.join(dir, 'ca');
  const serverDir = path.join(dir, 'server');
  await tracker.run(process.execPath, [cliEntry, 'tls', 'ca', '--out', ca], { label: 'twinstore tls ca', timeoutMs: cliRunMsMax });
  await tracker.run(process.execPath, [cliEntry, 'tls', 'server', '--ca', ca, '--name', '127.0.0.1', '--out', serverDir], { label: 'twinstore tls server', timeoutMs: cliRunMsMax });
  const clientHome = path.join(dir, 'client-home');
  await fs.promises.mkdir(path.join(clientHome, '.pki', 'libnbd'), { recursive: true });
  await fs.promises.copyFile(path.join(ca, 'ca-cert.pem'), path.join(clientHome, '.pki', 'libnbd', 'ca-cert.pem'));
  return { serverDir, clientHome };
}

function clientEnv(tls: TlsFiles): NodeJS.ProcessEnv {
  return { ...process.env, HOME: tls.clientHome };
}

function twinstoreConfig(driveBytes: number, tls: TlsFiles | undefined): string {
  return [
    'array:',
    '  id: bench',
    '  dataDir: data',
    'drives:',
    '  - path: data/drive0.img',
    `    size: ${driveBytes}`,
    'listen:',
    '  nbd: 127.0.0.1:0',
    '  api: 127.0.0.1:0',
    ...(tls === undefined ? [] : [
      'nbd:',
      '  tls: require',
      `  certFile: ${path.join(tls.serverDir, 'server-cert.pem')}`,
      `  keyFile: ${path.join(tls.serverDir, 'server-key.pem')}`,
    ]),
    '',
  ].join('\n');
}

/**
 * The server's ready line: its first stdout line that starts with `{` (node's own
 * `--trace-gc` lines may come first). Every other line, before and after it, goes
 * to `onLine` when given.
 */
export async function readReadyLine(server: Tracked, onLine?: (line: string) => void): Promise<{ nbd: string; api: string | undefined }> {
  const lines = readline.createInterface({ input: server.child.stdout! });
  let ready = false;
  const line = await Promise.race([
    new Promise<string>((resolve) => {
      lines.on('line', (text) => {
        if (!ready && text.startsWith('{')) {
          ready = true;
          resolve(text);
        } else {
          onLine?.(text);
        }
      });
    }),
    server.exited.then((status) => Promise.reject(new Error(`twinstore serve exited (${status}) before ready:\n${server.stderrTail()}`))),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error('twinstore serve: no ready line')), serverStartMsMax).unref()),
  ]);
  // The 'line' listener above keeps draining stdout, so the server can never block on a full pipe.
  const parsed = JSON.parse(line) as { ready?: boolean; nbd?: string; api?: string };
  if (parsed.ready !== true || typeof parsed.nbd !== 'string') throw new Error(`twinstore serve: unexpected ready line ${line}`);
  return { nbd: parsed.nbd, api: typeof parsed.api === 'string' ? parsed.api : undefined };
}

/** Starts `twinstore serve`, creates the volume, and fills it from sourceFile with nbdcopy. */
export function startTwinstore(options: TargetOptions): Promise<Target> {
  return startTwinstoreWith(options, undefined);
}

/** Twinstore with `nbd.tls: require`. */
export function startTwinstoreTls(options: TargetOptions): Promise<Target> {
  return startTwinstoreWith(options, options.tls);
}

async function startTwinstoreWith(options: TargetOptions, tls: TlsFiles | undefined): Promise<Target> {
  const configFile = path.join(options.dir, 'bench.yaml');
  await fs.promises.writeFile(configFile, twinstoreConfig(options.imageBytes + driveSlackBytes, tls));
  const server = options.tracker.spawn(process.execPath, [cliEntry, 'serve', '--config', configFile], {
    label: 'twinstore serve',
    stdout: 'pipe',
  });
  const ready = await readReadyLine(server);
  const created = await options.tracker.run(
    process.execPath,
    [cliEntry, '--config', configFile, 'volume', 'create', exportName, '--size', String(options.imageBytes), '--json'],
    { label: 'twinstore volume create', timeoutMs: cliRunMsMax },
  );
  const listed = (JSON.parse(created.stdout) as { nbdUri?: string }).nbdUri;
  if (listed !== `nbd://${ready.nbd}/${exportName}`) throw new Error(`volume create gave ${listed}, expected nbd://${ready.nbd}/${exportName}`);
  const uri = tls === undefined ? listed : `nbds://${ready.nbd}/${exportName}`;
  const env = tls === undefined ? undefined : clientEnv(tls);
  await options.tracker.run('nbdcopy', ['--flush', options.sourceFile, uri], { label: 'nbdcopy prefill', timeoutMs: 600_000, ...(env === undefined ? {} : { env }) });
  return tls === undefined ? { name: 'Twinstore', uri, server } : { name: 'Twinstore TLS', uri, server, clientEnv: clientEnv(tls) };
}

/** Copies sourceFile and serves the copy with qemu-nbd (tuned glibc, as in bench/baseline.md). */
export async function startQemuNbd(options: TargetOptions): Promise<Target> {
  const image = path.join(options.dir, 'qemu.img');
  await fs.promises.copyFile(options.sourceFile, image);
  const port = await freePort();
  const args = ['-f', 'raw', '-t', '-e', '4', '--cache=writeback', '--aio=threads', '-b', '127.0.0.1', '-p', String(port), '-x', exportName, image];
  const server = options.tracker.spawn('qemu-nbd', args, {
    label: 'qemu-nbd',
    env: { ...process.env, GLIBC_TUNABLES: qemuGlibcTunables },
  });
  await waitForPort(port, server, serverStartMsMax);
  return { name: 'qemu-nbd', uri: `nbd://127.0.0.1:${port}/${exportName}`, server };
}

/**
 * Copies sourceFile and serves the copy with nbdkit's file plugin. The file
 * plugin serves the same file under any export name; `-e` only matters with
 * --run, so it is passed for symmetry with the URI and nothing more.
 */
export function startNbdkit(options: TargetOptions): Promise<Target> {
  return startNbdkitWith(options, undefined);
}

/** nbdkit with `--tls=require` and the same certificate as Twinstore TLS. */
export function startNbdkitTls(options: TargetOptions): Promise<Target> {
  return startNbdkitWith(options, options.tls);
}

async function startNbdkitWith(options: TargetOptions, tls: TlsFiles | undefined): Promise<Target> {
  const image = path.join(options.dir, 'nbdkit.img');
  await fs.promises.copyFile(options.sourceFile, image);
  const port = await freePort();
  const tlsArgs = tls === undefined ? [] : ['--tls=require', `--tls-certificates=${tls.serverDir}`];
  const args = ['-f', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(port), ...tlsArgs, '-e', exportName, 'file', `file=${image}`];
  const server = options.tracker.spawn('nbdkit', args, { label: tls === undefined ? 'nbdkit' : 'nbdkit tls' });
  await waitForPort(port, server, serverStartMsMax);
  if (tls === undefined) return { name: 'nbdkit', uri: `nbd://127.0.0.1:${port}/${exportName}`, server };
  return { name: 'nbdkit TLS', uri: `nbds://127.0.0.1:${port}/${exportName}`, server, clientEnv: clientEnv(tls) };
}
