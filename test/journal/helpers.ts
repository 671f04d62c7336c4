// Shared pieces of the journal tests: epochs, record metadata and data made
// from a seed (so a test can check the bytes it reads back), an append helper,
// and a JournalDevice on a real file (positional I/O + fdatasync).

import fs from 'node:fs/promises';
import { Journal, MemoryJournalDevice, type Epoch, type JournalDevice, type RecordKind, type RecordMeta, type Reservation } from '../../src/journal/index.js';

export const epochA: Epoch = { counter: 1, arrayId: 'site-a', nonce: '0123456789abcdef' };
export const epochB: Epoch = { counter: 2, arrayId: 'site-b', nonce: 'fedcba9876543210' };

export const kinds: readonly RecordKind[] = ['write', 'zero', 'trim', 'base', 'marker'];

export function hasData(kind: RecordKind): boolean {
  return kind === 'write' || kind === 'base';
}

export type Meta = Omit<RecordMeta, 'seq'>;

export function recordMeta(kind: RecordKind, length: number, options: { lun?: number; offset?: number; epoch?: Epoch; timestampMs?: number } = {}): Meta {
  return {
    kind, length, lun: options.lun ?? 3, offset: options.offset ?? 4096 * 7, epoch: options.epoch ?? epochA, timestampMs: options.timestampMs ?? 1_700_000_000_000,
  };
}

/** `length` bytes that depend on `seed`: what a record of that seed must read back as. */
export function pattern(seed: number, length: number): Buffer {
  const block = Buffer.alloc(4096);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < block.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    block.writeUInt32LE(x >>> 0, i);
  }
  const data = Buffer.alloc(length, block);
  for (let at = 0; at + 4 <= length; at += 4096) data.writeUInt32LE(at / 4096, at); // every block differs
  return data;
}

/** Reserves and writes one record whose data is pattern(seed); returns the reservation. */
export async function append(journal: Journal, meta: Meta, seed: number): Promise<Reservation> {
  const data = hasData(meta.kind) ? pattern(seed, meta.length) : undefined;
  const reservation = journal.reserve(meta, data?.length ?? 0);
  await journal.write(reservation, meta, data);
  return reservation;
}

export function memoryDevice(sizeBytes = Journal.MIN_BYTES): MemoryJournalDevice {
  return new MemoryJournalDevice(sizeBytes);
}

export async function formatted(device: JournalDevice = memoryDevice(), firstSeq = 1): Promise<Journal> {
  return Journal.format(device, { groupId: 'group-1', role: 'master', epoch: epochA, firstSeq, instanceId: 'instance-1' });
}

/** Reads every durable record from `seq` on, in as many calls as it takes. */
export async function readAll(journal: Journal, seq: number = journal.tailSeq): Promise<Awaited<ReturnType<Journal['readFrom']>>> {
  const all: Awaited<ReturnType<Journal['readFrom']>> = [];
  for (let next = seq; next < journal.durableSeq;) {
    const batch = await journal.readFrom(next, 64 * 2 ** 20);
    if (batch.length === 0) break;
    all.push(...batch);
    next = batch[batch.length - 1]!.seq + 1;
  }
  return all;
}

/** Like readAll, but steps over damaged records (JOURNAL_RECORD_CORRUPT) and lists their seqs. */
export async function readAllOrDamaged(journal: Journal): Promise<{ records: Awaited<ReturnType<Journal['readFrom']>>; damaged: number[] }> {
  const records: Awaited<ReturnType<Journal['readFrom']>> = [];
  const damaged: number[] = [];
  for (let next = journal.tailSeq; next < journal.durableSeq;) {
    try {
      const batch = await journal.readFrom(next, 64 * 2 ** 20);
      records.push(...batch);
      next = batch[batch.length - 1]!.seq + 1;
    } catch (error) {
      if ((error as { code?: string }).code !== 'JOURNAL_RECORD_CORRUPT') throw error;
      damaged.push(next);
      next += 1;
    }
  }
  return { records, damaged };
}

/** A JournalDevice on a real file: pread/pwrite through a FileHandle, flush = fdatasync. */
export class FileJournalDevice implements JournalDevice {
  private constructor(private readonly handle: fs.FileHandle, readonly sizeBytes: number) {}

  static async create(path: string, sizeBytes: number): Promise<FileJournalDevice> {
    const handle = await fs.open(path, 'w+');
    await handle.truncate(sizeBytes);
    return new FileJournalDevice(handle, sizeBytes);
  }

  static async open(path: string): Promise<FileJournalDevice> {
    const handle = await fs.open(path, 'r+');
    return new FileJournalDevice(handle, (await handle.stat()).size);
  }

  async read(offset: number, buffer: Buffer): Promise<void> {
    let done = 0;
    while (done < buffer.length) {
      const { bytesRead } = await this.handle.read(buffer, done, buffer.length - done, offset + done);
      if (bytesRead === 0) {
        buffer.fill(0, done);
        return;
      }
      done += bytesRead;
    }
  }

  async write(offset: number, data: Buffer): Promise<void> {
    let done = 0;
    while (done < data.length) done += (await this.handle.write(data, done, data.length - done, offset + done)).bytesWritten;
  }

  flush(): Promise<void> {
    return this.handle.datasync();
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}
