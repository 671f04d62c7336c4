// One simulated array (issue 5): the product's own storage engine, journal,
// replication manager and link code, with the simulator's drives (disk.ts),
// network (network.ts) and journal-device faults, and no NBD or HTTP in front:
// hosts call the same VolumeExport the NBD server calls, the operator the same
// ArrayReplication methods the API routes call.

import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { parseConfig, type ArrayConfig } from '../../src/config/index.js';
import { StorageEngine, type Volume } from '../../src/storage/index.js';
import { ArrayReplication } from '../../src/array/replication-control.js';
import { VolumeExport } from '../../src/array/volume-export.js';
import { writePskFile } from '../../src/link/index.js';
import { VolumeJournalDevice } from '../../src/replication/journal-device.js';
import type { JournalDevice } from '../../src/journal/index.js';
import type { Kernel } from './kernel.js';
import { SimDisk } from './disk.js';
import type { SimNetwork } from './network.js';

/** The port of every array's link in the simulated network (network.ts): a map key, never a socket. */
const SIM_LINK_PORT = 1;

export type ArrayState = 'down' | 'starting' | 'up';

/** Wraps a journal device: every write is shown to `tap`; `fault` may flip a bit or misdirect a write. */
export interface JournalTap {
  written(array: string, offset: number, data: Buffer): void;
  /** Returns the offset to write at and the bytes to write (a fault may change either). */
  fault(array: string, device: JournalDevice, offset: number, data: Buffer): { offset: number; data: Buffer };
  /** A journal whose header was lost was started again (counted in the report). */
  headerLost(array: string): void;
}

export class SimArray {
  readonly disk: SimDisk;
  readonly config: ArrayConfig;
  state: ArrayState = 'down';
  engine: StorageEngine | undefined;
  replication: ArrayReplication | undefined;
  /** Bumped at every crash, so late completions of an earlier life are told apart. */
  life = 0;

  constructor(
    readonly id: string,
    readonly dir: string,
    private readonly kernel: Kernel,
    private readonly network: SimNetwork,
    private readonly tap: JournalTap,
    peer: { id: string; host: string },
    private readonly print: (line: string) => void,
  ) {
    this.disk = new SimDisk(kernel, id);
    fs.mkdirSync(dir, { recursive: true });
    const pskFile = path.join(path.dirname(dir), 'link.psk');
    if (!fs.existsSync(pskFile)) writePskFile(pskFile);
    const text = [
      'array:',
      `  id: ${id}`,
      `  dataDir: ${dir}/data`,
      '  extentBytes: 64KiB',
      'drives:',
      `  - path: ${dir}/drive0`,
      '    size: 256MiB',
      'listen:',
      '  nbd: 127.0.0.1:0',
      '  api: 127.0.0.1:0',
      `  link: ${id}:${SIM_LINK_PORT}`,
      'peers:',
      `  - id: ${peer.id}`,
      `    link: ${peer.host}:${SIM_LINK_PORT}`,
      'link:',
      `  pskFile: ${pskFile}`,
      '  heartbeatMs: 200',
      '  suspendAfterMs: 3000',
      'groups:',
      '  defaults:',
      '    fenceAfterMs: 3000',
      'takeover:',
      '  peerTimeoutMs: 2000',
      'swap:',
      '  freezeMsMax: 2000',
      '  drainMsMax: 10000',
      '',
    ].join('\n');
    this.config = parseConfig(text, `${id}.yaml`);
  }

  owns(file: string): boolean {
    return file.startsWith(`${this.dir}/`);
  }

  /** Opens the engine and the replication manager (the same steps as `twinstore serve`, less NBD and HTTP). */
  async start(): Promise<void> {
    this.state = 'starting';
    const life = this.life;
    const log = pino({ level: process.env.SIM_LOG_LEVEL ?? 'info', base: null, timestamp: false }, {
      write: (line: string) => {
        const { level, msg, ...fields } = JSON.parse(line) as { level: number; msg: string } & Record<string, unknown>;
        // Warnings carry their fields (the reason of a suspension, the seq of a damaged record).
        const detail = (level >= 40 || process.env.SIM_LOG_LEVEL === "debug") && Object.keys(fields).length > 0 ? ` ${JSON.stringify(fields)}` : '';
        const text = `${this.id} log ${level >= 40 ? 'WARN' : 'info'} ${msg}${detail}`;
        if (/header (was )?lost/.test(msg)) this.tap.headerLost(this.id);
        this.print(text);
      },
    });
    const engine = await StorageEngine.open({ arrayId: this.id, dataDir: this.config.dataDir, extentBytes: this.config.extentBytes, drives: this.config.drives });
    if (life !== this.life) return;
    this.engine = engine;
    const tap = this.tap;
    const id = this.id;
    const journalDevice = (volume: Volume, eng: StorageEngine): JournalDevice => {
      const inner = new VolumeJournalDevice(volume, eng);
      return {
        get sizeBytes() { return inner.sizeBytes; },
        read: (offset, buffer) => inner.read(offset, buffer),
        write: (offset, data) => {
          tap.written(id, offset, data);
          const faulted = tap.fault(id, inner, offset, data);
          return inner.write(faulted.offset, faulted.data);
        },
        flush: () => inner.flush(),
      };
    };
    const replication = new ArrayReplication(this.config, engine, log, { transport: this.network.transport(this.id), journalDevice });
    this.replication = replication;
    await replication.start();
    if (life !== this.life) return;
    this.state = 'up';
  }

  private deathWaiters: Array<() => void> = [];

  /** `work` unless this array crashes first (its events are dropped: `work` would never settle). */
  whileAlive<T>(work: Promise<T>): Promise<T> {
    return Promise.race([work, new Promise<never>((_, reject) => this.deathWaiters.push(() => reject(new Error(`${this.id} crashed`))))]);
  }

  /** A power cut: its events are dropped, unsynced blocks lost or torn, its connections silent. */
  crash(): void {
    this.life += 1;
    for (const wake of this.deathWaiters.splice(0)) wake();
    this.kernel.dropOwner(this.id);
    this.disk.crash();
    this.network.crash(this.id);
    this.state = 'down';
    this.engine = undefined;
    this.replication = undefined;
  }

  volume(name: string): Volume | undefined {
    return this.engine?.volume(name);
  }

  /** What a host connected to `name` talks to (a fresh export each time: roles change under it). */
  exportOf(name: string): VolumeExport | undefined {
    const volume = this.volume(name);
    const replication = this.replication;
    if (volume === undefined || replication === undefined || this.engine === undefined) return undefined;
    return new VolumeExport(volume, this.engine, (v) => replication.manager.writerOf(v));
  }

  /** Reads a whole volume between steps (the checkers' view: no scheduled I/O). */
  async readNow(name: string): Promise<Buffer> {
    const volume = this.volume(name);
    if (volume === undefined) throw new Error(`${this.id}: no volume ${name}`);
    const out = Buffer.alloc(volume.sizeBytes);
    this.disk.instant = true;
    try {
      await volume.read(0, out);
    } finally {
      this.disk.instant = false;
    }
    return out;
  }
}
