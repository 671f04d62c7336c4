// Simulated drives (issue 5): each array's drive and metadata files as
// BlockFiles whose every read, write and sync completes when the kernel's
// scheduler says, after a seeded latency. Writes sit in a volatile cache until
// a sync that began after they completed; a crash decides, per 4 KiB block,
// whether an unsynced write is lost or lands whole (drives are 4Kn), and in
// metadata files whether its 512-byte sectors land or not.
// The durable image lives in a real file in the run's folder (written with
// synchronous calls, so it changes only inside a step), because the metadata
// store reads its files back with plain fs calls on open.
//
// Faults it can inject: a read or write that fails with an I/O error (an array
// must suspend, never acknowledge), and added latency.

import fs from 'node:fs';
import { TwinstoreError } from '../../src/errors.js';
import { openFileDescriptor, type BlockFile, type OpenOptions } from '../../src/storage/block-file.js';
import type { Kernel } from './kernel.js';

const blockBytes = 4096;
const sectorBytes = 512;

export interface DiskFaults {
  /** Chance that one drive read or write fails with an I/O error. */
  ioErrorRate: number;
}

export class SimDisk {
  private readonly files = new Map<string, SimFile>();
  faults: DiskFaults = { ioErrorRate: 0 };
  /** Reads and writes complete at once, in the same step (the checkers' reads between steps). */
  instant = false;
  stats = { reads: 0, writes: 0, syncs: 0, ioErrors: 0, lost: 0, landed: 0, torn: 0 };

  constructor(readonly kernel: Kernel, readonly owner: string) {}

  open(path: string, options: OpenOptions): BlockFile {
    const existing = this.files.get(path);
    if (existing !== undefined && !existing.closed) throw new Error(`sim: ${path} is open twice`);
    const file = new SimFile(this, path, options);
    this.files.set(path, file);
    return file;
  }

  /** A power cut: every unsynced block is lost, lands or tears; the open files are gone. */
  crash(): void {
    for (const file of this.files.values()) file.crash();
    this.files.clear();
  }

  closeAll(): void {
    for (const file of this.files.values()) file.closeNow();
    this.files.clear();
  }

  latencyMs(): number {
    return this.kernel.chance(0.05) ? this.kernel.int(2, 20) : this.kernel.int(0, 1);
  }
}

class SimFile implements BlockFile {
  readonly sizeBytes: number;
  private readonly fd: number;
  /** Unsynced blocks (whole 4 KiB, current content) and a version so a sync knows what it covered. */
  private readonly dirty = new Map<number, { data: Buffer; version: number }>();
  private version = 0;
  closed = false;

  constructor(private readonly disk: SimDisk, readonly path: string, private readonly options: OpenOptions) {
    const opened = openFileDescriptor(path, options);
    this.fd = opened.fd;
    this.sizeBytes = opened.sizeBytes;
  }

  private complete<T>(what: string, work: () => T): Promise<T> {
    if (this.disk.instant) {
      try {
        return Promise.resolve(work());
      } catch (error) {
        return Promise.reject(error);
      }
    }
    return new Promise((resolve, reject) => {
      this.disk.kernel.schedule(this.disk.latencyMs(), `${this.disk.owner} ${what}`, () => {
        if (this.closed) return;
        try {
          resolve(work());
        } catch (error) {
          reject(error);
        }
      }, this.disk.owner);
    });
  }

  private injectedError(op: string): void {
    const { faults, kernel } = this.disk;
    if (this.options.kind !== 'drive' || faults.ioErrorRate === 0 || this.disk.instant) return;
    if (!kernel.chance(faults.ioErrorRate)) return;
    this.disk.stats.ioErrors += 1;
    throw new TwinstoreError('IO_ERROR', `${op} failed on ${this.path}: simulated EIO`);
  }

  read(buffer: Buffer, position: number): Promise<void> {
    this.disk.stats.reads += 1;
    return this.complete('read', () => {
      this.injectedError('read');
      this.readNow(buffer, position);
    });
  }

  private readNow(buffer: Buffer, position: number): void {
    let done = 0;
    while (done < buffer.length) {
      const n = fs.readSync(this.fd, buffer, done, buffer.length - done, position + done);
      if (n === 0) {
        buffer.fill(0, done);
        break;
      }
      done += n;
    }
    const first = Math.floor(position / blockBytes);
    const last = Math.floor((position + buffer.length - 1) / blockBytes);
    for (let block = first; block <= last; block++) {
      const held = this.dirty.get(block);
      if (held === undefined) continue;
      const start = block * blockBytes;
      const from = Math.max(position, start);
      const to = Math.min(position + buffer.length, start + blockBytes);
      held.data.copy(buffer, from - position, from - start, to - start);
    }
  }

  write(buffer: Buffer, position: number): Promise<void> {
    this.disk.stats.writes += 1;
    const data = Buffer.from(buffer);
    return this.complete('write', () => {
      this.injectedError('write');
      this.writeNow(data, position);
    });
  }

  private writeNow(data: Buffer, position: number): void {
    const first = Math.floor(position / blockBytes);
    const last = Math.floor((position + data.length - 1) / blockBytes);
    for (let block = first; block <= last; block++) {
      const start = block * blockBytes;
      let held = this.dirty.get(block);
      if (held === undefined) {
        const current = Buffer.alloc(blockBytes);
        this.readNow(current, start);
        held = { data: current, version: 0 };
      }
      const from = Math.max(position, start);
      const to = Math.min(position + data.length, start + blockBytes);
      data.copy(held.data, from - start, from - position, to - position);
      held.version = ++this.version;
      this.dirty.set(block, held);
    }
  }

  sync(): Promise<void> {
    this.disk.stats.syncs += 1;
    // What completed before the call; its latency passes, then it is on the medium.
    const covered = new Map([...this.dirty].map(([block, held]) => [block, held.version]));
    return this.complete('sync', () => {
      for (const [block, version] of covered) {
        const held = this.dirty.get(block);
        if (held === undefined) continue;
        fs.writeSync(this.fd, held.data, 0, blockBytes, block * blockBytes);
        if (held.version === version) this.dirty.delete(block);
      }
    });
  }

  close(): Promise<void> {
    this.closeNow();
    return Promise.resolve();
  }

  closeNow(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }

  crash(): void {
    if (this.closed) return;
    const { kernel, stats } = this.disk;
    for (const [block, held] of [...this.dirty].sort((a, b) => a[0] - b[0])) {
      const fate = kernel.int(0, 2);
      if (fate === 0) {
        stats.lost += 1;
        continue;
      }
      if (fate === 1) {
        stats.landed += 1;
        fs.writeSync(this.fd, held.data, 0, blockBytes, block * blockBytes);
        continue;
      }
      // Drives are 4Kn (a 4 KiB block lands whole or not at all); metadata files tear at 512-byte sectors.
      if (this.options.kind === 'drive') {
        stats.lost += 1;
        continue;
      }
      stats.torn += 1;
      for (let s = 0; s < blockBytes / sectorBytes; s++) {
        if (kernel.chance(0.5)) fs.writeSync(this.fd, held.data, s * sectorBytes, sectorBytes, block * blockBytes + s * sectorBytes);
      }
    }
    this.dirty.clear();
    this.closeNow();
  }
}
