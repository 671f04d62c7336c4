// Runs and steers the write-order hosts (write-order-hosts.py, libnbd) from a
// test: start them on a set of NBD URIs, hold and release them, wait until
// every connection has seen the primary die, stop them, and read their log.
// The process is killed by PID in t.after.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import type { TestContext } from 'node:test';
import { parseHostLog, type HostLog } from './write-order.js';

export interface HostsOptions {
  /** One NBD URI per volume, in volume order. */
  volumes: string[];
  /** Writes land in blocks [0, hotBlocks) of each volume. */
  hotBlocks: number;
  dir: string;
  seed: number;
  connectionsPerVolume?: number;
  queueDepth?: number;
  writesPerSecondPerConnection?: number;
  blocksMin?: number;
  blocksMax?: number;
  /** Share of requests that are FLUSH. */
  flushShare?: number;
  /** Stop by themselves after this long. */
  seconds?: number;
  /** Write ids start here (so several runs can share one log). */
  firstId?: number;
  /** Instead of random writes: these requests in order, each acknowledged before the next, then exit. */
  script?: ScriptStep[];
  /** Per volume, more URIs of the same volume (on the other array), tried in turn after a failure. */
  alternates?: string[][];
  /** A failed connection reconnects by itself (every 10 ms, next URI, skipping read-only exports) instead of waiting for go(). */
  autoReconnect?: boolean;
}

/** [volume, firstBlock, blocks] writes a stamped range; ['flush', volume] flushes. */
export type ScriptStep = [number, number, number] | ['flush', number];

interface HostsEvent {
  event: 'up' | 'down' | 'held' | 'stopped' | 'connect-failed';
  conn?: number;
  reason?: string;
  nextId?: number;
}

const script = path.join(import.meta.dirname, 'write-order-hosts.py');

/** CLOCK_MONOTONIC in microseconds: the clock of the hosts' log. */
export function nowUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

export class Hosts {
  readonly logFile: string;
  private readonly child: ChildProcess;
  private readonly states = new Map<number, 'up' | 'down'>();
  private readonly waiters = new Set<() => void>();
  private heldCount = 0;
  private stoppedEvent: HostsEvent | undefined;
  private exited = false;
  stderr = '';
  downs = 0;

  private constructor(t: TestContext | undefined, readonly options: HostsOptions) {
    this.logFile = path.join(options.dir, `hosts-${options.seed}-${process.hrtime.bigint()}.jsonl`);
    const configFile = `${this.logFile}.config.json`;
    fs.writeFileSync(configFile, JSON.stringify({
      volumes: options.volumes,
      hotBlocks: options.hotBlocks,
      log: this.logFile,
      seed: options.seed,
      connectionsPerVolume: options.connectionsPerVolume ?? 2,
      queueDepth: options.queueDepth ?? 16,
      writesPerSecondPerConnection: options.writesPerSecondPerConnection ?? 150,
      blocksMin: options.blocksMin ?? 1,
      blocksMax: options.blocksMax ?? 16,
      flushShare: options.flushShare ?? 0.02,
      firstId: options.firstId ?? 1,
      ...(options.seconds === undefined ? {} : { seconds: options.seconds }),
      ...(options.script === undefined ? {} : { script: options.script }),
      ...(options.alternates === undefined ? {} : { alternates: options.alternates }),
      ...(options.autoReconnect === undefined ? {} : { autoReconnect: options.autoReconnect }),
    }));
    this.child = spawn('/usr/bin/python3', [script, configFile], {
      env: { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    t?.after(() => this.kill());
    this.child.stderr!.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString();
    });
    this.child.once('close', () => {
      this.exited = true;
      this.wake();
    });
    readline.createInterface({ input: this.child.stdout! }).on('line', (line) => this.onEvent(JSON.parse(line) as HostsEvent));
  }

  /** Runs a script of requests to completion and returns the hosts (for their log). */
  static async runScript(t: TestContext | undefined, options: HostsOptions & { script: ScriptStep[] }): Promise<Hosts> {
    const hosts = new Hosts(t, { connectionsPerVolume: 1, ...options });
    await hosts.until('the script done', () => hosts.stoppedEvent !== undefined, 120_000);
    return hosts;
  }

  /** Starts the hosts and waits until every connection is up. */
  static async start(t: TestContext | undefined, options: HostsOptions): Promise<Hosts> {
    const hosts = new Hosts(t, options);
    await hosts.until('every connection up', () => hosts.states.size === hosts.connections && [...hosts.states.values()].every((s) => s === 'up'), 30_000);
    return hosts;
  }

  /** Started and not yet stopped. */
  get running(): boolean {
    return !this.exited && this.stoppedEvent === undefined;
  }

  get connections(): number {
    return this.options.volumes.length * (this.options.connectionsPerVolume ?? 2);
  }

  private onEvent(event: HostsEvent): void {
    if (event.event === 'up') this.states.set(event.conn!, 'up');
    if (event.event === 'down') {
      this.states.set(event.conn!, 'down');
      this.downs += 1;
    }
    if (event.event === 'held') this.heldCount += 1;
    if (event.event === 'stopped') this.stoppedEvent = event;
    this.wake();
  }

  private wake(): void {
    for (const waiter of [...this.waiters]) waiter();
  }

  private until(what: string, check: () => boolean, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = (): void => {
        if (check()) finish(undefined);
        else if (this.exited) finish(new Error(`the hosts exited while waiting for ${what}: ${this.stderr}`));
      };
      const finish = (error: Error | undefined): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        if (error) reject(error);
        else resolve();
      };
      const timer = setTimeout(() => finish(new Error(`timed out after ${timeoutMs} ms waiting for the hosts: ${what}; ${this.stderr}`)), timeoutMs);
      this.waiters.add(done);
      done();
    });
  }

  private send(word: string): void {
    if (!this.exited) this.child.stdin!.write(`${word}\n`);
  }

  /** Sends nothing new; resolves once nothing is in flight. */
  async hold(): Promise<void> {
    const before = this.heldCount;
    this.send('hold');
    await this.until('held', () => this.heldCount > before, 30_000);
  }

  /** Sends again; connections that went down reconnect. */
  go(): void {
    this.send('go');
  }

  /** Resolves once every connection has gone down (the primary array died). */
  async allDown(timeoutMs = 30_000): Promise<void> {
    await this.until('every connection down', () => [...this.states.values()].every((s) => s === 'down'), timeoutMs);
  }

  async allUp(timeoutMs = 30_000): Promise<void> {
    await this.until('every connection up', () => [...this.states.values()].every((s) => s === 'up'), timeoutMs);
  }

  /** Drains and exits; returns the next unused write id. */
  async stop(): Promise<number> {
    this.send('stop');
    await this.until('stopped', () => this.stoppedEvent !== undefined, 30_000);
    return this.stoppedEvent!.nextId!;
  }

  kill(): void {
    if (!this.exited) this.child.kill('SIGKILL');
  }

  readLog(): HostLog {
    return parseHostLog(fs.readFileSync(this.logFile, 'utf8'));
  }
}
