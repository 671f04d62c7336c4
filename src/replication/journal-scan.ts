// The one loop that walks a journal's durable records in order (fold into the bitmaps, redo,
// counting host writes, loading the unapplied queue, finding and applying an atomic unit).
//
// It reads from a seq in batches of at most `batchBytesMax` data bytes (each caller's named
// bound) up to an end: the journal's durableSeq, read again before every batch, or an earlier
// `toSeq`. Each record goes to `onRecord`, which may end the scan early. A record that fails
// its checksum makes readFrom throw a JournalRecordCorruptError once it is at the cursor (a
// read stops before a damaged record that is not its first): the scan hands that to
// `onDamaged`, which decides (count it, mark its region, remember it) and the scan goes on past
// it; without `onDamaged`, or for any other error, the error goes to the caller.

import { assert, isTwinstoreError } from '../errors.js';
import { JournalRecordCorruptError, type JournalRecord } from '../journal/index.js';

/** The part of a Journal the scan reads. */
export interface ScannedJournal {
  readonly tailSeq: number;
  readonly durableSeq: number;
  readFrom(seq: number, maxBytes: number): Promise<JournalRecord[]>;
}

/** What `onRecord` may answer: nothing to go on, `'stop'` to end the scan after this record. */
export type ScanStep = void | 'stop';

export interface JournalScan {
  journal: ScannedJournal;
  fromSeq: number;
  /** Records from this seq on are not handed over (default: none, the scan ends at durableSeq). */
  toSeq?: number;
  /** Data bytes one readFrom may return. */
  batchBytesMax: number;
  onRecord: (record: JournalRecord) => ScanStep | Promise<ScanStep>;
  /** A record at the cursor that fails its checksum; on its return the scan goes on past it. */
  onDamaged?: (error: JournalRecordCorruptError) => void | Promise<void>;
  /**
   * Records released while the scan ran (JOURNAL_RECORD_GONE, the tail moved past the cursor)
   * are passed over: the scan goes on at the tail. Otherwise that error goes to the caller.
   */
  skipReleased?: boolean;
}

/** Walks the records of `scan`; resolves with the seq it stopped at (one past the last record read or skipped). */
export async function scanJournal(scan: JournalScan): Promise<number> {
  const { journal, batchBytesMax } = scan;
  assert(Number.isSafeInteger(batchBytesMax) && batchBytesMax > 0, `scan batchBytesMax ${batchBytesMax} is a positive whole number`);
  assert(Number.isSafeInteger(scan.fromSeq) && scan.fromSeq >= 0, `scan fromSeq ${scan.fromSeq} is a whole number`);
  const toSeq = scan.toSeq ?? Infinity;
  let seq = scan.fromSeq;
  while (seq < Math.min(toSeq, journal.durableSeq)) {
    let records: JournalRecord[];
    try {
      records = await journal.readFrom(seq, batchBytesMax);
    } catch (error) {
      if (scan.skipReleased === true && isTwinstoreError(error) && error.code === 'JOURNAL_RECORD_GONE' && journal.tailSeq > seq) {
        seq = journal.tailSeq;
        continue;
      }
      if (scan.onDamaged === undefined || !(error instanceof JournalRecordCorruptError) || error.seq !== seq) throw error;
      await scan.onDamaged(error);
      seq += 1;
      continue;
    }
    if (records.length === 0) break;
    for (const record of records) {
      assert(record.seq === seq, `journal record ${record.seq} read where ${seq} was next`);
      if (record.seq >= toSeq) return seq;
      seq = record.seq + 1;
      if ((await scan.onRecord(record)) === 'stop') return seq;
    }
  }
  return seq;
}
