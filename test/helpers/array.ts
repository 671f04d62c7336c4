// Test harness: runs real `twinstore serve` processes on loopback with ports
// chosen at run time, each in its own temporary folder, and the CLI against them.
// Everything started here is stopped in t.after, by PID.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import type { TestContext } from 'node:test';
import { apiFetch } from './http.js';

export const projectRoot = path.resolve(import.meta.dirname, '..', '..');
const cliEntry = path.join(projectRoot, 'bin', 'twinstore.js');

export interface ArrayOptions {
  id?: string;
  /** Drive sizes; default one 2 GiB drive. */
  drives?: string[];
  /** Extra environment (test-only switches such as TWINSTORE_TEST_VOLATILE_CACHE). */
  env?: Record<string, string>;
  /** Reuse an existing folder (for restarts). */
  dir?: string;
  extraConfig?: string;
  /** Listen for array links on a run-time port, authenticated with this PSK file. */
  pskFile?: string;
  /** link.suspendAfterMs (with pskFile). */
  suspendAfterMs?: number;
  /** link.bandwidthMax (with pskFile), e.g. '2MiB'. */
  bandwidthMax?: string;
  /** A command that execs `serve` (keeping its PID), e.g. ['prlimit', '--nofile=512:512', '--']. */
  wrapper?: string[];
}

export interface Ready {
  ready: boolean;
  array: string;
  nbd: string;
  api: string;
  link?: string;
}

export class RunningArray {
  child: ChildProcess | undefined;
  ready: Ready | undefined;
  stderr = '';

  constructor(readonly dir: string, readonly configFile: string, readonly env: Record<string, string>, readonly wrapper: string[] = []) {}

  get nbd(): string {
    return this.ready!.nbd;
  }

  uri(volume: string): string {
    return `nbd://${this.nbd}/${volume}`;
  }

  async start(): Promise<Ready> {
    const command = [...this.wrapper, process.execPath, cliEntry, 'serve', '--config', this.configFile];
    const child = spawn(command[0]!, command.slice(1), {
      env: { ...process.env, ...this.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    this.stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString();
    });
    this.ready = await new Promise<Ready>((resolve, reject) => {
      const lines = readline.createInterface({ input: child.stdout! });
      lines.once('line', (line) => resolve(JSON.parse(line) as Ready));
      child.once('exit', (code) => reject(new Error(`serve exited ${code}: ${this.stderr}`)));
    });
    return this.ready;
  }

  /** Sends a signal and waits for the process to exit; returns its exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null;
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill(signal);
    const code = await exited;
    this.child = undefined;
    return code;
  }

  kill9(): Promise<number | null> {
    return this.stop('SIGKILL');
  }

  /** Runs the CLI against this array (`--config` first); resolves with its exit code and output. */
  cli(args: string[], env: Record<string, string> = {}): CommandResult {
    return run(process.execPath, [cliEntry, '--config', this.configFile, ...args], { env });
  }

  /** Like cli, but the test process goes on meanwhile (a link proxy in it keeps forwarding). */
  cliAsync(args: string[], env: Record<string, string> = {}): Promise<CommandResult> {
    return runAsync(process.execPath, [cliEntry, '--config', this.configFile, ...args], { env });
  }

  /** Rewrites the config with the ports bound now, so a restart binds the same ones (peers keep finding it). */
  pinPorts(): void {
    const ready = this.ready!;
    let text = fs.readFileSync(this.configFile, 'utf8');
    text = text.replace('nbd: 127.0.0.1:0', `nbd: ${ready.nbd}`).replace('api: 127.0.0.1:0', `api: ${ready.api}`);
    if (ready.link) text = text.replace('link: 127.0.0.1:0', `link: ${ready.link}`);
    fs.writeFileSync(this.configFile, text);
  }

  token(): string {
    return fs.readFileSync(path.join(this.dir, 'data', 'api-token'), 'utf8').trim();
  }

  async api(method: string, route: string, body?: unknown, token = this.token()): Promise<{ status: number; json: any }> {
    // Bounded well above the longest call a test makes (a takeover's drain), so a hung array fails.
    return apiFetch(this.ready!.api, method, route, { token, ...(body === undefined ? {} : { body }), timeoutMs: 600_000 });
  }

}

/** The array's audit log lines (`component: audit`) so far, parsed. */
export function auditLines(array: RunningArray): Array<Record<string, unknown>> {
  return array.stderr.split('\n').filter((l) => l.includes('"component":"audit"')).map((l) => JSON.parse(l) as Record<string, unknown>);
}

export function writeConfig(dir: string, options: ArrayOptions): string {
  const id = options.id ?? 'site-a';
  const drives = options.drives ?? ['2GiB'];
  const config = [
    'array:',
    `  id: ${id}`,
    '  dataDir: data',
    'drives:',
    ...drives.flatMap((size, i) => [`  - path: data/drive${i}.img`, `    size: ${size}`]),
    'listen:',
    '  nbd: 127.0.0.1:0',
    '  api: 127.0.0.1:0',
    ...(options.pskFile ? ['  link: 127.0.0.1:0', 'link:', `  pskFile: ${options.pskFile}`, '  heartbeatMs: 500', ...(options.suspendAfterMs === undefined ? [] : [`  suspendAfterMs: ${options.suspendAfterMs}`]), ...(options.bandwidthMax === undefined ? [] : [`  bandwidthMax: ${options.bandwidthMax}`])] : []),
    // A takeover with the primary dead waits this long for it; the default 5 s only slows the tests.
    ...(options.pskFile && !(options.extraConfig ?? '').includes('takeover:') ? ['takeover:', '  peerTimeoutMs: 2000'] : []),
    options.extraConfig ?? '',
  ].join('\n');
  const file = path.join(dir, `${id}.yaml`);
  fs.writeFileSync(file, config);
  return file;
}

/** Starts an array in a fresh temporary folder; it is killed and removed after the test. */
export async function startArray(t: TestContext, options: ArrayOptions = {}): Promise<RunningArray> {
  const dir = options.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'twinstore-test-'));
  const configFile = writeConfig(dir, options);
  const array = new RunningArray(dir, configFile, options.env ?? {}, options.wrapper);
  t.after(async () => {
    await array.stop('SIGKILL');
    if (!options.dir) fs.rmSync(dir, { recursive: true, force: true });
  });
  await array.start();
  return array;
}

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (bounded by a timeout). Debian's python3 goes first on PATH for nbdsh. */
export function run(command: string, args: string[], options: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {}): CommandResult {
  const result = spawnSync(command, args, {
    env: { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}`, ...options.env },
    encoding: 'utf8',
    timeout: options.timeoutMs ?? 120_000,
    input: options.input,
    maxBuffer: 64 * 2 ** 20,
  });
  return { code: result.status, stdout: result.stdout ?? '', stderr: result.stderr ?? '' };
}

/**
 * Like run, but asynchronous: while it runs the test process's event loop goes on, so a LinkProxy
 * in this process keeps forwarding (a synchronous call stalls every link through it).
 */
export function runAsync(command: string, args: string[], options: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { env: { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}`, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk; });
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk; });
    const timeoutMs = options.timeoutMs ?? 120_000;
    const timer = setTimeout(() => {
      stderr += `\n(killed: no exit within ${timeoutMs} ms)`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ code: null, stdout, stderr: `${stderr}${error.message}` });
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Like run, but throws with the output when the command fails. */
export function runOk(command: string, args: string[], options: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {}): string {
  const result = run(command, args, options);
  if (result.code !== 0) throw new Error(`${command} ${args.join(' ')} exited ${result.code}\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

/** Creates a volume through the CLI and returns its NBD URI. */
export function createVolume(array: RunningArray, name: string, size: string): string {
  const out = runOk(process.execPath, [cliEntry, '--config', array.configFile, 'volume', 'create', name, '--size', size, '--json']);
  return (JSON.parse(out) as { nbdUri: string }).nbdUri;
}

/** Writes a fresh 32-byte link key (hex), as `twinstore keys` does. */
export function writePsk(dir: string): string {
  const file = path.join(dir, 'link.psk');
  fs.writeFileSync(file, crypto.randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
  return file;
}

/** Two arrays that know each other as peers, linked with one PSK. */
export async function startPairOfArrays(t: TestContext, options: { env?: Record<string, string>; drives?: string[]; extraConfig?: string } = {}): Promise<{ a: RunningArray; b: RunningArray; psk: string }> {
  const dir = tempDir(t);
  const psk = writePsk(dir);
  const a = await startArray(t, { id: 'site-a', pskFile: psk, ...options });
  const b = await startArray(t, { id: 'site-b', pskFile: psk, ...options });
  a.pinPorts();
  b.pinPorts();
  runOk(process.execPath, [cliEntry, '--config', a.configFile, 'peer', 'add', 'site-b', '--link', b.ready!.link!]);
  runOk(process.execPath, [cliEntry, '--config', b.configFile, 'peer', 'add', 'site-a', '--link', a.ready!.link!]);
  return { a, b, psk };
}

export function tempDir(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twinstore-test-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}
