// Why this exists: reading durable records back from the journal device, the
// path readFrom() takes for records it no longer keeps in memory (after a
// restart, past record-window.ts's bound): the records from a seq are grouped
// into physically contiguous runs read with one device read each, and each
// record of a run is decoded and checked (header, seq, size, data checksum).

import { JournalRecordCorruptError } from './errors.js';
import { dataCrcOf, kindHasData, parseRecordHeader, recordBytesFor, recordHeaderBytes } from './layout.js';
import type { SeqIndex } from './seq-index.js';
import type { JournalRecord } from './types.js';

/** readFrom() returns at most this many records and this many data bytes per call. */
export const readRecordsMax = 1024;
export const readBytesMax = 64 * 2 ** 20;
/** One device read covers at most this many bytes of contiguous records. */
const readRunBytesMax = 8 * 2 ** 20;

/** Groups the durable records from `seq` (below `durableSeq`) into physically contiguous runs, within the read bounds. */
export function planRead(index: SeqIndex, seq: number, durableSeq: number, budgetBytes: number): ReadRun[] {
  const runs: ReadRun[] = [];
  let dataBytes = 0;
  for (let next = seq; next < durableSeq && next - seq < readRecordsMax; next += 1) {
    const recordBytes = index.recordBytes(next);
    if (next > seq && dataBytes + recordBytes - recordHeaderBytes > budgetBytes) break;
    dataBytes += recordBytes - recordHeaderBytes;
    const position = index.position(next);
    const last = runs[runs.length - 1];
    if (last !== undefined && last.position + last.bytes === position && last.bytes + recordBytes <= readRunBytesMax) {
      last.bytes += recordBytes;
      last.sizes.push(recordBytes);
    } else {
      runs.push({ firstSeq: next, position, bytes: recordBytes, sizes: [recordBytes] });
    }
  }
  return runs;
}

export interface ReadRun {
  firstSeq: number;
  position: number;
  bytes: number;
  sizes: number[];
}

/** Decodes the records of one run into `records`; false when it stopped at a damaged record (after at least one good one). */
export function decodeRun(buffer: Buffer, run: ReadRun, records: JournalRecord[]): boolean {
  let at = 0;
  for (let i = 0; i < run.sizes.length; i += 1) {
    const seq = run.firstSeq + i;
    const recordBytes = run.sizes[i]!;
    const header = parseRecordHeader(buffer.subarray(at, at + recordHeaderBytes));
    if (header === undefined || header.seq !== seq || header.wrap || recordBytesFor(header.kind, header.length) !== recordBytes) {
      if (records.length > 0) return false;
      throw new JournalRecordCorruptError(seq, undefined, 'has a damaged header');
    }
    const data = kindHasData(header.kind) ? buffer.subarray(at + recordHeaderBytes, at + recordHeaderBytes + header.length) : undefined;
    if (data !== undefined && dataCrcOf(data) !== header.dataCrc) {
      if (records.length > 0) return false;
      const region = { seq, lun: header.lun, offset: header.offset, length: header.length };
      throw new JournalRecordCorruptError(seq, region, `(lun ${header.lun}, offset ${header.offset}, length ${header.length}) fails its data checksum`);
    }
    records.push({
      kind: header.kind, seq, epoch: header.epoch, timestampMs: header.timestampMs, lun: header.lun, offset: header.offset, length: header.length, data,
      dataCrc: header.dataCrc,
    });
    at += recordBytes;
  }
  return true;
}
