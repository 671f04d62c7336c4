// The sender's list of records the receiver has not applied yet, oldest first:
// it gives lag (records, bytes, age of the oldest) in O(1). A head index stands
// in for Array.shift(), which copies the whole array once it is large, so
// dropping applied records stays cheap with a hundred thousand in the queue.
// Each entry also names the region its record covers, so a suspension can
// fold the records into the bitmaps even when the journal itself has failed.

export interface UnappliedRecord {
  seq: number;
  timestampMs: number;
  bytes: number;
  /** The bytes the record changes (none for a marker). */
  region?: { lun: number; offset: number; length: number } | undefined;
}

const compactAfter = 4096;

export class UnappliedQueue {
  private items: UnappliedRecord[] = [];
  private head = 0;
  private bytesTotal = 0;

  push(record: UnappliedRecord): void {
    this.items.push(record);
    this.bytesTotal += record.bytes;
  }

  /** Drops records with seq < `seq`; returns the timestamp of the newest one dropped. */
  dropBelow(seq: number): number | undefined {
    let newest: number | undefined;
    while (this.head < this.items.length && this.items[this.head]!.seq < seq) {
      const record = this.items[this.head]!;
      this.bytesTotal -= record.bytes;
      newest = record.timestampMs;
      this.head += 1;
    }
    if (this.head >= compactAfter && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return newest;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
    this.bytesTotal = 0;
  }

  /** The records from `seq` on, oldest first. */
  from(seq: number): UnappliedRecord[] {
    return this.items.slice(this.head).filter((record) => record.seq >= seq);
  }

  get oldest(): UnappliedRecord | undefined {
    return this.items[this.head];
  }

  get bytes(): number {
    return this.bytesTotal;
  }
}
