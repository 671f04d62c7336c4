// Puts one reserved record on the journal device: its wrap marker (when the record starts
// the ring again), its header block, data and zero padding to a whole record. Small records
// go as one pooled buffer, large ones as header + the caller's data, never copied. Only
// device I/O lives here; the journal decides seq, placement and what the fields say.

import { sharedPool, zeroBuffer } from '../util/buffer-pool.js';
import { recordHeaderBytes, type RecordFields, type RecordTemplate } from './layout.js';
import type { JournalDevice } from './types.js';

/** Records of at most this size go to the device as one pooled buffer; larger ones as header + caller's data. */
const combinedWriteBytesMax = 64 * 1024;

/** Where a reserved record goes: `spanStart` differs from `position` when a wrap marker precedes it. */
export interface RecordPlacement {
  spanStart: number;
  position: number;
  recordBytes: number;
}

/** Writes the record (and marker) described by `fields`; fails with the first device error once every write has settled. */
export async function writeRecordAt(
  device: JournalDevice, template: RecordTemplate, fields: RecordFields, placement: RecordPlacement, data: Buffer | undefined,
): Promise<void> {
  const borrowed: Buffer[] = [];
  const writes: Promise<void>[] = [];
  if (placement.spanStart !== placement.position) {
    const marker = sharedPool.acquire(recordHeaderBytes);
    borrowed.push(marker);
    template.encode(marker, 0, { ...fields, kind: 'marker', wrap: true, offset: 0, length: 0, lun: 0, dataCrc: 0 });
    writes.push(device.write(placement.spanStart, marker));
  }
  const dataBytes = data?.length ?? 0;
  if (placement.recordBytes <= combinedWriteBytesMax) {
    const record = sharedPool.acquire(placement.recordBytes);
    borrowed.push(record);
    template.encode(record, 0, fields);
    data?.copy(record, recordHeaderBytes);
    record.fill(0, recordHeaderBytes + dataBytes);
    writes.push(device.write(placement.position, record));
  } else {
    const header = sharedPool.acquire(recordHeaderBytes);
    borrowed.push(header);
    template.encode(header, 0, fields);
    writes.push(device.write(placement.position, header), device.write(placement.position + recordHeaderBytes, data!));
    const paddingBytes = placement.recordBytes - recordHeaderBytes - dataBytes;
    if (paddingBytes > 0) writes.push(device.write(placement.position + recordHeaderBytes + dataBytes, zeroBuffer.subarray(0, paddingBytes)));
  }
  const results = await Promise.allSettled(writes);
  for (const buffer of borrowed) sharedPool.release(buffer);
  const failed = results.find((result) => result.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
}
