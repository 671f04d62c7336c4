// The in-memory index of the records kept in the ring: for each seq from the
// tail on, its position, its record size, its span (record plus the wrap
// waste before it) and whether its write has completed. A circular buffer of
// typed arrays that grows by doubling up to one entry per ring block, the most
// records a ring can hold; no per-record objects.

import { assert } from '../errors.js';

const capacityMin = 64;

export class SeqIndex {
  private positions: Float64Array;
  private spans: Uint32Array;
  private sizes: Uint32Array;
  private written: Uint8Array;
  private start = 0;
  private count = 0;

  constructor(private readonly capacityMax: number, private firstSeq: number) {
    assert(capacityMax >= 1, 'the index holds at least one record');
    const capacity = Math.min(capacityMin, capacityMax);
    this.positions = new Float64Array(capacity);
    this.spans = new Uint32Array(capacity);
    this.sizes = new Uint32Array(capacity);
    this.written = new Uint8Array(capacity);
  }

  get headSeq(): number {
    return this.firstSeq;
  }

  get endSeq(): number {
    return this.firstSeq + this.count;
  }

  push(position: number, spanBytes: number, recordBytes: number, written: boolean): void {
    assert(this.count < this.capacityMax, 'the ring holds at most one record per block');
    assert(spanBytes >= recordBytes && recordBytes > 0, 'a span covers its record');
    if (this.count === this.positions.length) this.grow();
    const slot = (this.start + this.count) % this.positions.length;
    this.positions[slot] = position;
    this.spans[slot] = spanBytes;
    this.sizes[slot] = recordBytes;
    this.written[slot] = written ? 1 : 0;
    this.count += 1;
  }

  position(seq: number): number {
    return this.positions[this.slotOf(seq)] ?? 0;
  }

  recordBytes(seq: number): number {
    return this.sizes[this.slotOf(seq)] ?? 0;
  }

  spanBytes(seq: number): number {
    return this.spans[this.slotOf(seq)] ?? 0;
  }

  isWritten(seq: number): boolean {
    return this.written[this.slotOf(seq)] === 1;
  }

  markWritten(seq: number): void {
    this.written[this.slotOf(seq)] = 1;
  }

  /** Drops the records below `uptoSeq`; returns the bytes their spans covered. */
  dropBelow(uptoSeq: number): number {
    assert(uptoSeq >= this.firstSeq && uptoSeq <= this.endSeq, 'drops only indexed records');
    let bytes = 0;
    for (let seq = this.firstSeq; seq < uptoSeq; seq += 1) bytes += this.spanBytes(seq);
    const dropped = uptoSeq - this.firstSeq;
    this.start = (this.start + dropped) % this.positions.length;
    this.count -= dropped;
    this.firstSeq = uptoSeq;
    return bytes;
  }

  /** Forgets every record; the next one pushed gets `firstSeq`. */
  reset(firstSeq: number): void {
    this.start = 0;
    this.count = 0;
    this.firstSeq = firstSeq;
  }

  private slotOf(seq: number): number {
    assert(seq >= this.firstSeq && seq < this.endSeq, `seq ${seq} is indexed`);
    return (this.start + seq - this.firstSeq) % this.positions.length;
  }

  private grow(): void {
    const capacity = Math.min(this.capacityMax, this.positions.length * 2);
    const positions = new Float64Array(capacity);
    const spans = new Uint32Array(capacity);
    const sizes = new Uint32Array(capacity);
    const written = new Uint8Array(capacity);
    for (let i = 0; i < this.count; i += 1) {
      const slot = (this.start + i) % this.positions.length;
      positions[i] = this.positions[slot] ?? 0;
      spans[i] = this.spans[slot] ?? 0;
      sizes[i] = this.sizes[slot] ?? 0;
      written[i] = this.written[slot] ?? 0;
    }
    this.positions = positions;
    this.spans = spans;
    this.sizes = sizes;
    this.written = written;
    this.start = 0;
  }
}
