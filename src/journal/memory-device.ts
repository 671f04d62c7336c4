// An in-memory JournalDevice for tests and the seeded simulator, with a
// volatile write cache as docs/architecture.md §10 asks of crash tests: a write is visible
// at once but durable only after a flush that follows its completion. crash()
// returns the device a power cut would leave: every write not yet flushed is
// dropped, lands whole, or tears at 512-byte sectors, as a seeded PRNG decides.
// holdWrites() parks new writes without completing them, so a test can choose
// the order in which they complete. Storage is sparse (64 KiB pages).

import { assert } from '../errors.js';
import type { Prng } from '../util/prng.js';
import type { JournalDevice } from './types.js';

const pageBytes = 64 * 1024;
const sectorBytes = 512;

export interface CrashOptions {
  /** Chooses each unflushed write's fate; without one, every unflushed write is dropped. */
  prng?: Prng;
  /** Chance that an unflushed write lands whole (default 1/3). */
  landShare?: number;
  /** Chance that it tears, each sector landing or not (default 1/3); the rest are dropped. */
  tearShare?: number;
}

interface DeviceWrite {
  offset: number;
  data: Buffer;
}

interface HeldWrite extends DeviceWrite {
  complete: () => void;
}

type Pages = Map<number, Buffer>;

export class MemoryJournalDevice implements JournalDevice {
  private readonly current: Pages;
  private unflushed: DeviceWrite[] = [];
  private held: HeldWrite[] | undefined;
  private crashed = false;
  writeCount = 0;
  flushCount = 0;

  constructor(readonly sizeBytes: number, private readonly durable: Pages = new Map()) {
    assert(Number.isSafeInteger(sizeBytes) && sizeBytes % 4096 === 0, 'a device is a whole number of 4 KiB blocks');
    this.current = new Map();
    for (const [page, bytes] of durable) {
      const copy = Buffer.allocUnsafe(pageBytes);
      bytes.copy(copy);
      this.current.set(page, copy);
    }
  }

  read(offset: number, buffer: Buffer): Promise<void> {
    this.checkRange(offset, buffer.length);
    if (this.crashed) return new Promise(() => undefined);
    copyOut(this.current, offset, buffer);
    return Promise.resolve();
  }

  write(offset: number, data: Buffer): Promise<void> {
    this.checkRange(offset, data.length);
    if (this.crashed) return new Promise(() => undefined);
    const write = { offset, data: Buffer.from(data) };
    this.writeCount += 1;
    if (this.held !== undefined) {
      const held = this.held;
      return new Promise((resolve) => held.push({ ...write, complete: () => this.complete(write, resolve) }));
    }
    this.complete(write, () => undefined);
    return Promise.resolve();
  }

  flush(): Promise<void> {
    if (this.crashed) return new Promise(() => undefined);
    this.flushCount += 1;
    for (const write of this.unflushed) copyIn(this.durable, write.offset, write.data);
    this.unflushed = [];
    return Promise.resolve();
  }

  /** New writes wait, not completed, until completeHeld() or stopHolding(). */
  holdWrites(): void {
    this.held ??= [];
  }

  get heldCount(): number {
    return this.held?.length ?? 0;
  }

  /** Completes the held writes at the given indexes (in that order); the others stay held. */
  completeHeld(indexes: readonly number[]): void {
    const held = this.held ?? [];
    const chosen = indexes.map((i) => held[i]);
    this.held = held.filter((_, i) => !indexes.includes(i));
    for (const write of chosen) write?.complete();
  }

  /** Completes every held write, in issue order, and stops holding. */
  stopHolding(): void {
    const held = this.held ?? [];
    this.held = undefined;
    for (const write of held) write.complete();
  }

  /** The device as a power cut leaves it. This one stops answering (its calls never settle). */
  crash(options: CrashOptions = {}): MemoryJournalDevice {
    this.crashed = true;
    const image = this.durable;
    const landShare = options.landShare ?? 1 / 3;
    const tearShare = options.tearShare ?? 1 / 3;
    for (const write of [...this.unflushed, ...(this.held ?? [])]) {
      const roll = options.prng?.next() ?? 1;
      if (roll < landShare) copyIn(image, write.offset, write.data);
      else if (roll < landShare + tearShare && options.prng !== undefined) tear(image, write, options.prng);
    }
    this.unflushed = [];
    this.held = undefined;
    return new MemoryJournalDevice(this.sizeBytes, image);
  }

  /** Test helper: writes bytes straight to the durable image (bit rot, a planted record). */
  async plant(offset: number, data: Buffer): Promise<void> {
    await this.write(offset, data);
    await this.flush();
  }

  private complete(write: DeviceWrite, resolve: () => void): void {
    if (this.crashed) return;
    copyIn(this.current, write.offset, write.data);
    this.unflushed.push(write);
    resolve();
  }

  private checkRange(offset: number, length: number): void {
    assert(Number.isSafeInteger(offset) && offset >= 0 && offset + length <= this.sizeBytes, `I/O at ${offset}+${length} stays on the device`);
  }
}

function tear(image: Pages, write: DeviceWrite, prng: Prng): void {
  for (let at = 0; at < write.data.length; at += sectorBytes) {
    if (prng.below(2) === 0) copyIn(image, write.offset + at, write.data.subarray(at, Math.min(at + sectorBytes, write.data.length)));
  }
}

function copyIn(pages: Pages, offset: number, data: Buffer): void {
  let done = 0;
  while (done < data.length) {
    const position = offset + done;
    const pageIndex = Math.floor(position / pageBytes);
    const within = position - pageIndex * pageBytes;
    const bytes = Math.min(pageBytes - within, data.length - done);
    let page = pages.get(pageIndex);
    if (page === undefined) {
      page = Buffer.alloc(pageBytes);
      pages.set(pageIndex, page);
    }
    data.copy(page, within, done, done + bytes);
    done += bytes;
  }
}

function copyOut(pages: Pages, offset: number, buffer: Buffer): void {
  let done = 0;
  while (done < buffer.length) {
    const position = offset + done;
    const pageIndex = Math.floor(position / pageBytes);
    const within = position - pageIndex * pageBytes;
    const bytes = Math.min(pageBytes - within, buffer.length - done);
    const page = pages.get(pageIndex);
    if (page === undefined) buffer.fill(0, done, done + bytes);
    else page.copy(buffer, done, within, within + bytes);
    done += bytes;
  }
}
