// Why this exists: the receiver used to read every record it had just stored
// back from its restore journal to apply it (a device round trip and a checksum
// of every byte). The journal keeps the records handed over to it in this
// session (Journal.write's `handedOver`) here, in memory, within a byte bound,
// and readFrom() serves durable records from here when it holds the one asked
// for, from the device otherwise (after a restart, past the bound). The master
// does not hand its records over: it sends only what reads back intact from its
// device (the simulator's seed 115 showed why: a record sent from memory whose
// device copy was damaged was lost at the master's crash, and its seq went to
// another write). Records arrive as their writes complete, so in any order; the
// oldest are the ones read next, so past the bound new records are not kept
// (nothing kept is pushed out), and keeping starts again as reads release the
// old ones. A released record's data goes back to the buffer pool (the link
// decoder borrowed it there): the reader that released it is done with it, and
// nobody else was given it. Records forgotten by clear() are left to the GC, as
// a reader may still hold them when the journal fails.

import { sharedPool, type BufferPool } from '../util/buffer-pool.js';
import type { JournalRecord } from './types.js';

/** A journal keeps at most this many data bytes of recent records in memory, and this many records. */
export const recentBytesMax = 32 * 2 ** 20;
export const recentRecordsMax = 16_384;

export class RecordWindow {
  private readonly records = new Map<number, JournalRecord>();
  private bytes = 0;

  constructor(private readonly bytesMax: number = recentBytesMax, private readonly pool: BufferPool = sharedPool) {}

  /** Keeps `record` (its data is not copied: the caller hands it over) unless that would pass the bound; true when kept. */
  keep(record: JournalRecord): boolean {
    const size = record.data?.length ?? 0;
    if (this.bytes + size > this.bytesMax || this.records.size >= recentRecordsMax || this.records.has(record.seq)) return false;
    this.records.set(record.seq, record);
    this.bytes += size;
    return true;
  }

  /**
   * Kept records from `fromSeq` on, below `belowSeq`, in order, up to `recordsMax` records and
   * `maxBytes` of data (at least one record if there is one); empty when `fromSeq` is not kept.
   */
  take(fromSeq: number, belowSeq: number, recordsMax: number, maxBytes: number): JournalRecord[] {
    const out: JournalRecord[] = [];
    let bytes = 0;
    for (let seq = fromSeq; seq < belowSeq && out.length < recordsMax; seq += 1) {
      const record = this.records.get(seq);
      if (record === undefined) break;
      const size = record.data?.length ?? 0;
      if (out.length > 0 && bytes + size > maxBytes) break;
      out.push(record);
      bytes += size;
    }
    return out;
  }

  /** Forgets every record below `seq` (released: whoever read them is done) and gives their data back to the pool. */
  dropBelow(seq: number): void {
    if (this.records.size === 0) return;
    for (const [at, record] of this.records) {
      if (at >= seq) continue;
      this.records.delete(at);
      this.bytes -= record.data?.length ?? 0;
      if (record.data !== undefined) this.pool.release(record.data);
    }
  }

  /** Forgets everything (records discarded, the journal failed). */
  clear(): void {
    this.records.clear();
    this.bytes = 0;
  }
}
