// Why this exists: the benchmark starts servers (Twinstore, qemu-nbd, nbdkit)
// and tools (fio, nbdcopy, the CLI) that must never outlive it. Every child is
// spawned through one ProcessTracker, which knows each PID, keeps a bounded
// tail of its stderr for error messages, and stops them all by PID (SIGTERM,
// then SIGKILL) on success, on failure and on Ctrl-C. Never by name.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';

/** Bytes of stderr (and stdout for short-lived tools) kept per child for error messages. */
const outputTailBytesMax = 64 * 1024;
/** Bytes of stdout kept for a tool whose stdout we parse (the CLI's JSON). */
const outputBytesMax = 4 * 2 ** 20;
const stopGraceMsDefault = 5_000;

export interface Tracked {
  readonly label: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** The last outputTailBytesMax bytes the child wrote on stderr. */
  stderrTail(): string;
  /** Resolves with the exit code (or the signal) once the child has exited. */
  readonly exited: Promise<string>;
  hasExited(): boolean;
}

export interface SpawnOptions {
  label: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** 'pipe' when the caller reads stdout itself; otherwise it is drained and dropped. */
  stdout?: 'pipe' | 'drain';
  /** Pin the child to this CPU (`taskset -c`, which execs it: the PID is the child's own). */
  cpu?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

export class ProcessTracker {
  private readonly running = new Map<number, Tracked>();
  private stopping = false;

  /** Starts a long-running child; it stays tracked until it exits. Refused once stopAll has begun. */
  spawn(command: string, args: string[], options: SpawnOptions): Tracked {
    if (this.stopping) throw new Error(`${options.label}: not started, the benchmark is stopping`);
    const [file, argv] = options.cpu === undefined ? [command, args] : ['taskset', ['-c', String(options.cpu), command, ...args]];
    const child = spawn(file, argv, {
      env: options.env ?? process.env,
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    if (child.pid === undefined) throw new Error(`${options.label}: cannot start ${command}`);
    const pid = child.pid;
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-outputTailBytesMax);
    });
    if (options.stdout !== 'pipe') child.stdout!.resume();
    let done = false;
    const exited = new Promise<string>((resolve) => {
      child.once('error', (error) => {
        done = true;
        this.running.delete(pid);
        resolve(`error ${error.message}`);
      });
      child.once('exit', (code, signal) => {
        done = true;
        this.running.delete(pid);
        resolve(code === null ? `signal ${signal}` : `code ${code}`);
      });
    });
    const tracked: Tracked = { label: options.label, child, pid, stderrTail: () => stderr, exited, hasExited: () => done };
    this.running.set(pid, tracked);
    return tracked;
  }

  /** Runs a tool to completion within timeoutMs; throws with its stderr when it fails. */
  /** Runs a tool to its end; an exit code outside `okCodes` (default [0]) is an error. */
  async run(command: string, args: string[], options: SpawnOptions & { timeoutMs: number; okCodes?: number[] }): Promise<RunResult> {
    const tracked = this.spawn(command, args, { ...options, stdout: 'pipe' });
    let stdout = '';
    tracked.child.stdout!.setEncoding('utf8');
    tracked.child.stdout!.on('data', (chunk: string) => {
      stdout = (stdout + chunk).slice(-outputBytesMax);
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      void this.stop(tracked);
    }, options.timeoutMs);
    const status = await tracked.exited;
    clearTimeout(timer);
    if (timedOut) throw new Error(`${options.label}: timed out after ${options.timeoutMs} ms\n${tracked.stderrTail()}`);
    if (!(options.okCodes ?? [0]).some((code) => status === `code ${code}`)) throw new Error(`${options.label}: ${command} exited with ${status}\n${tracked.stderrTail()}`);
    return { stdout, stderr: tracked.stderrTail() };
  }

  /** SIGTERM, then SIGKILL after graceMs; resolves once the child has exited. */
  async stop(tracked: Tracked, graceMs = stopGraceMsDefault): Promise<void> {
    if (tracked.hasExited()) return;
    tracked.child.kill('SIGTERM');
    const timer = setTimeout(() => {
      if (!tracked.hasExited()) tracked.child.kill('SIGKILL');
    }, graceMs);
    await tracked.exited;
    clearTimeout(timer);
  }

  /** Stops every child still running, each by its own PID; no child starts after this. */
  async stopAll(): Promise<void> {
    this.stopping = true;
    await Promise.all([...this.running.values()].map((tracked) => this.stop(tracked)));
    if (this.running.size !== 0) throw new Error(`children still running: ${[...this.running.keys()].join(', ')}`);
  }
}

/** Clock ticks per second of /proc/PID/stat's times (USER_HZ: 100 on Linux, whatever the kernel's HZ). */
const userHz = 100;

/** CPU seconds (user + system) a running process has used so far, from /proc/PID/stat. */
export function cpuSeconds(pid: number): number {
  const times = cpuTimes(pid);
  return times.user + times.system;
}

/** User and system (kernel, e.g. page-cache copies and writeback in fdatasync) CPU seconds so far. */
export function cpuTimes(pid: number): { user: number; system: number } {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces, in parentheses): state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(fields[11]) / userHz, system: Number(fields[12]) / userHz };
}

/** A port that was free a moment ago on 127.0.0.1 (bind port 0, read it, close). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port from a TCP listener');
  return address.port;
}

/** Waits until something accepts TCP connections on 127.0.0.1:port, or the server dies. */
export async function waitForPort(port: number, server: Tracked, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (server.hasExited()) throw new Error(`${server.label} exited before listening:\n${server.stderrTail()}`);
    const connected = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (connected) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${server.label} did not listen on port ${port} within ${timeoutMs} ms`);
}
