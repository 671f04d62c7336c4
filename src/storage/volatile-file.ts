// Volatile-cache drive mode (test only, docs/architecture.md §10). kill -9 on an ordinary
// file keeps the kernel's page cache, so it proves nothing about fdatasync. Here
// every write stays in this process, in 4 KiB blocks, until sync() copies it to
// the file and fdatasyncs; when the process dies, unsynced writes are gone. A
// timer also writes back a random few dirty blocks now and then, as a real page
// cache does, so a crash leaves an arbitrary torn subset of unsynced writes.

import type { BlockFile, DescriptorFile } from './block-file.js';
import { Prng } from '../util/prng.js';

const blockBytes = 4096;
const writebackIntervalMs = 50;
const writebackFraction = 0.05;

export class VolatileFile implements BlockFile {
  private dirty = new Map<number, Buffer>();
  /** Blocks being copied out by a sync in progress; still visible to reads. */
  private flushing = new Map<number, Buffer>();
  private readonly timer: NodeJS.Timeout;
  private writebackRunning = false;

  constructor(private readonly inner: DescriptorFile, private readonly prng: Prng, private readonly skipSync: boolean) {
    this.timer = setInterval(() => void this.writeBackSome(), writebackIntervalMs);
    this.timer.unref();
  }

  get path(): string {
    return this.inner.path;
  }

  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }

  async read(buffer: Buffer, position: number): Promise<void> {
    // Blocks copied out while the file read runs may land after it read their place and leave the
    // maps before it ends: overlay what was unsynced when the read began, then what is now.
    const before = this.unsynced(position, buffer.length);
    await this.inner.read(buffer, position);
    this.overlay(buffer, position, before);
    this.overlay(buffer, position, this.unsynced(position, buffer.length));
  }

  private unsynced(position: number, length: number): Map<number, Buffer> {
    const found = new Map<number, Buffer>();
    const first = Math.floor(position / blockBytes);
    const last = Math.floor((position + length - 1) / blockBytes);
    for (let block = first; block <= last; block++) {
      const data = this.dirty.get(block) ?? this.flushing.get(block);
      if (data !== undefined) found.set(block, data);
    }
    return found;
  }

  private overlay(buffer: Buffer, position: number, blocks: Map<number, Buffer>): void {
    for (const [block, data] of blocks) {
      const blockStart = block * blockBytes;
      const from = Math.max(position, blockStart);
      const to = Math.min(position + buffer.length, blockStart + blockBytes);
      data.copy(buffer, from - position, from - blockStart, to - blockStart);
    }
  }

  write(buffer: Buffer, position: number): Promise<void> {
    let offset = 0;
    while (offset < buffer.length) {
      const block = Math.floor((position + offset) / blockBytes);
      const blockStart = block * blockBytes;
      const from = position + offset - blockStart;
      const length = Math.min(blockBytes - from, buffer.length - offset);
      let data = this.dirty.get(block);
      if (data === undefined) {
        data = Buffer.alloc(blockBytes);
        if (from !== 0 || length !== blockBytes) this.fillBlock(block, data);
        this.dirty.set(block, data);
      }
      buffer.copy(data, from, offset, offset + length);
      offset += length;
    }
    return Promise.resolve();
  }

  private fillBlock(block: number, data: Buffer): void {
    const pending = this.flushing.get(block);
    if (pending !== undefined) pending.copy(data);
    else this.inner.readSync(data, block * blockBytes);
  }

  async sync(): Promise<void> {
    if (this.skipSync) return;
    while (this.flushing.size > 0 || this.writebackRunning) await new Promise((r) => setTimeout(r, 1));
    this.flushing = this.dirty;
    this.dirty = new Map();
    await this.copyOut(this.flushing);
    this.flushing = new Map();
    await this.inner.sync();
  }

  private async copyOut(blocks: Map<number, Buffer>): Promise<void> {
    for (const [block, data] of blocks) await this.inner.write(data, block * blockBytes);
  }

  /** Plays the kernel's background write-back: some unsynced blocks reach the file early. */
  private async writeBackSome(): Promise<void> {
    if (this.writebackRunning || this.flushing.size > 0 || this.dirty.size === 0) return;
    this.writebackRunning = true;
    try {
      for (const [block, data] of [...this.dirty]) {
        if (this.prng.next() >= writebackFraction) continue;
        this.dirty.delete(block);
        this.flushing.set(block, data);
        await this.inner.write(data, block * blockBytes);
        this.flushing.delete(block);
      }
    } finally {
      this.writebackRunning = false;
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.inner.close();
  }
}
