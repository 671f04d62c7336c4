// A volume: a thin address space of `sizeBytes`, split into chunks of one extent
// each. A chunk with no extent is a hole and reads as zeros. Writes allocate (and,
// where needed, zero) an extent first; whole-chunk zero/trim requests unmap it.
// Every map change is queued as a metadata record and becomes durable with the
// next flush round, after the data it points at (see engine.ts).

import { assert } from '../errors.js';
import { zeroBuffer } from '../util/buffer-pool.js';
import type { ExtentRef, VolumeMeta, VolumeState } from './meta-model.js';

export interface VolumeHost {
  readonly extentBytes: number;
  /** Journal volumes ask for the `journal` pool (journal drives first), others for `data`. */
  allocateExtent(pool: 'data' | 'journal'): Promise<{ ref: ExtentRef; needsZeroing: boolean }>;
  readExtent(ref: ExtentRef, buffer: Buffer, offsetInExtent: number): Promise<void>;
  writeExtent(ref: ExtentRef, buffer: Buffer, offsetInExtent: number): Promise<void>;
  pin(ref: ExtentRef): void;
  unpin(ref: ExtentRef): void;
  /** Queues a map change for the next flush round; `ref` undefined unmaps (and releases `old`). */
  mapChanged(volumeId: number, chunk: number, ref: ExtentRef | undefined, old: ExtentRef | undefined): void;
}

export interface Extent {
  lengthBytes: number;
  hole: boolean;
}

interface Piece {
  chunk: number;
  offsetInChunk: number;
  length: number;
  /** Offset of this piece within the request. */
  at: number;
}

export class Volume {
  private readonly preparing = new Map<number, Promise<ExtentRef>>();

  constructor(private readonly host: VolumeHost, private readonly state: VolumeState) {}

  get meta(): VolumeMeta {
    return this.state.meta;
  }

  get name(): string {
    return this.state.meta.name;
  }

  get sizeBytes(): number {
    return this.state.meta.sizeBytes;
  }

  allocatedBytes(): number {
    return this.state.map.size * this.host.extentBytes;
  }

  /** The extents the volume holds (for placement checks and reports). */
  extentRefs(): ExtentRef[] {
    return [...this.state.map.values()];
  }

  private *pieces(offset: number, length: number): Generator<Piece> {
    assert(offset >= 0 && length >= 0 && offset + length <= this.sizeBytes, 'request lies within the volume');
    const size = this.host.extentBytes;
    let at = 0;
    while (at < length) {
      const position = offset + at;
      const chunk = Math.floor(position / size);
      const offsetInChunk = position - chunk * size;
      const pieceLength = Math.min(size - offsetInChunk, length - at);
      yield { chunk, offsetInChunk, length: pieceLength, at };
      at += pieceLength;
    }
  }

  /** Fills `buffer` with the bytes at `offset`; holes read as zeros. */
  async read(offset: number, buffer: Buffer): Promise<void> {
    const reads: Promise<void>[] = [];
    for (const piece of this.pieces(offset, buffer.length)) {
      const target = buffer.subarray(piece.at, piece.at + piece.length);
      const ref = this.state.map.get(piece.chunk);
      if (ref === undefined) target.fill(0);
      else reads.push(this.pinned(ref, () => this.host.readExtent(ref, target, piece.offsetInChunk)));
    }
    await Promise.all(reads);
  }

  async write(offset: number, data: Buffer): Promise<void> {
    const writes: Promise<void>[] = [];
    for (const piece of this.pieces(offset, data.length)) {
      const source = data.subarray(piece.at, piece.at + piece.length);
      writes.push(this.writePiece(piece, source));
    }
    await Promise.all(writes);
  }

  private async writePiece(piece: Piece, source: Buffer): Promise<void> {
    const ref = this.state.map.get(piece.chunk) ?? (await this.ensureExtent(piece.chunk));
    await this.pinned(ref, () => this.host.writeExtent(ref, source, piece.offsetInChunk));
  }

  /** The chunk's extent, allocating and zeroing one if it has none; concurrent callers share it. */
  private ensureExtent(chunk: number): Promise<ExtentRef> {
    const mapped = this.state.map.get(chunk);
    if (mapped !== undefined) return Promise.resolve(mapped);
    let pending = this.preparing.get(chunk);
    if (pending === undefined) {
      pending = this.prepareExtent(chunk).finally(() => this.preparing.delete(chunk));
      this.preparing.set(chunk, pending);
    }
    return pending;
  }

  private async prepareExtent(chunk: number): Promise<ExtentRef> {
    const { ref, needsZeroing } = await this.host.allocateExtent(this.meta.role.startsWith('journal') ? 'journal' : 'data');
    if (needsZeroing) await this.pinned(ref, () => this.zeroRange(ref, 0, this.host.extentBytes));
    const raced = this.state.map.get(chunk);
    assert(raced === undefined, 'only one allocation runs per chunk');
    this.state.map.set(chunk, ref);
    this.host.mapChanged(this.meta.id, chunk, ref, undefined);
    return ref;
  }

  private async zeroRange(ref: ExtentRef, offsetInExtent: number, length: number): Promise<void> {
    for (let done = 0; done < length; done += zeroBuffer.length) {
      const step = Math.min(zeroBuffer.length, length - done);
      await this.host.writeExtent(ref, zeroBuffer.subarray(0, step), offsetInExtent + done);
    }
  }

  /**
   * Makes the range read as zeros. Whole chunks are unmapped unless `keepAllocated`
   * (NBD_CMD_FLAG_NO_HOLE), in which case holes are allocated and data zeroed.
   */
  async writeZeroes(offset: number, length: number, keepAllocated: boolean): Promise<void> {
    const work: Promise<void>[] = [];
    for (const piece of this.pieces(offset, length)) {
      const whole = piece.length === this.host.extentBytes;
      const ref = this.state.map.get(piece.chunk);
      if (whole && !keepAllocated) {
        if (ref !== undefined) this.unmap(piece.chunk, ref);
      } else if (ref !== undefined) {
        work.push(this.pinned(ref, () => this.zeroRange(ref, piece.offsetInChunk, piece.length)));
      } else if (keepAllocated) {
        work.push(this.ensureExtent(piece.chunk).then(() => undefined));
      }
    }
    await Promise.all(work);
  }

  /** True when zeroing the range needs no data writes (only unmapping or nothing). */
  zeroIsFast(offset: number, length: number): boolean {
    for (const piece of this.pieces(offset, length)) {
      if (piece.length !== this.host.extentBytes && this.state.map.has(piece.chunk)) return false;
    }
    return true;
  }

  private unmap(chunk: number, ref: ExtentRef): void {
    this.state.map.delete(chunk);
    this.host.mapChanged(this.meta.id, chunk, undefined, ref);
  }

  /** Runs of allocated data and holes from `offset`, at most `extentsMax` runs, not past `length`. */
  blockStatus(offset: number, length: number, extentsMax: number): Extent[] {
    const extents: Extent[] = [];
    for (const piece of this.pieces(offset, length)) {
      const hole = !this.state.map.has(piece.chunk);
      const last = extents[extents.length - 1];
      if (last !== undefined && last.hole === hole) last.lengthBytes += piece.length;
      else if (extents.length === extentsMax) break;
      else extents.push({ lengthBytes: piece.length, hole });
    }
    return extents;
  }

  /** Every chunk's extent, for deleting the volume. */
  mappedExtents(): Array<[number, ExtentRef]> {
    return [...this.state.map];
  }

  private async pinned<T>(ref: ExtentRef, io: () => Promise<T>): Promise<T> {
    this.host.pin(ref);
    try {
      return await io();
    } finally {
      this.host.unpin(ref);
    }
  }
}
