// A journal volume (docs/architecture.md §4): a ring of checksummed records behind two
// alternating header slots. reserve() assigns seq and ring space in one
// synchronous step; write() puts the record on the device (record-write.ts);
// sync() group-commits (rounds.ts: one flush for every record whose write
// completed before the round began) and moves durableSeq over the contiguous
// prefix; readFrom() serves durable records from memory while it keeps them
// (record-window.ts), else from the device through an in-memory seq -> position
// index.
//
// Space: release() moves the tail at once, but the bytes it frees are reused
// only after a header naming the new tail is durable. Otherwise a crash would
// leave the persisted tail pointing at overwritten records. Three byte counts
// keep this straight: `keptBytes` (tail..head, what reserve() checks),
// `releasedBytes` (freed, not yet in a header) and `pinnedBytes` (durable
// header's tail..head). A record whose span would pass the durable tail waits
// in write() for the header round that reserve() started for it.
//
// Fail-stop: after any device error the journal refuses every further call.

import { TwinstoreError, assert, isTwinstoreError } from '../errors.js';
import { checkData, checkRecordMeta, checkRole, checkWholeNumber, type FormatInit } from './checks.js';
import { checkEpoch, epochNotOlder, formatEpoch, sameEpoch } from './epoch.js';
import {
  dataCrcOf, encodeHeaderSlot, headerSlotBytes, instancesMax, journalBytesMin,
  recordBytesFor, recordDataBytesMax, ringStartBytes, slotOfGeneration, RecordTemplate,
  type InstanceEntry, type RecordFields,
} from './layout.js';
import { formatParts, freezeEpoch, newInstanceId, openParts, sessionMax, type JournalParts } from './open.js';
import type { SeqIndex } from './seq-index.js';
import { sharedPool } from '../util/buffer-pool.js';
import { RecordWindow } from './record-window.js';
import { writeRecordAt } from './record-write.js';
import { RoundQueue } from './rounds.js';
import { decodeRun, planRead, readBytesMax, readRecordsMax } from './read-runs.js';
import type { Epoch, JournalDevice, JournalRecord, JournalRole, RecordMeta, RecoveryReport, Reservation } from './types.js';

/** release() starts a header round once this share of the ring is freed but not yet reusable. */
const releasedShareForHeader = 1 / 8;

type WriteMeta = Omit<RecordMeta, 'seq'>;

export interface WriteOptions {
  /** The caller gives `data` to the journal (see write()). */
  handedOver?: boolean;
  /** CRC32C of `data`, checked by the caller against these bytes. */
  dataCrc?: number;
}

interface PendingRecord {
  meta: WriteMeta;
  spanStart: number;
  position: number;
  recordBytes: number;
  /** Bytes by which the span reaches past the durable header's tail; the write waits while > 0. */
  overBytes: number;
  writing: boolean;
  spaceReady: (() => void) | undefined;
  spaceFailed: ((error: unknown) => void) | undefined;
}

interface HeaderCapture {
  bytes: Buffer;
  slot: 0 | 1;
  releasedBytes: number;
}

interface Cursors {
  tailSeq: number;
  nextSeq: number;
  /** Every record below it has completed its write (contiguous). */
  writtenSeq: number;
  durableSeq: number;
  appliedSeq: number;
}


export class Journal {
  /** 4 records of the largest size (header block + 32 MiB) plus the two header slots. */
  static readonly MIN_BYTES: number = journalBytesMin;
  static readonly RECORD_DATA_BYTES_MAX: number = recordDataBytesMax;

  private readonly device: JournalDevice;
  private readonly ringEnd: number;
  private readonly ringBytes: number;
  readonly groupId: string;
  private roleNow: JournalRole;
  private instances: InstanceEntry[];
  private session: number;
  private generation: number;
  private readonly cursor: Cursors;
  private head: number;
  private keptBytes: number;
  private pinnedBytes: number;
  private releasedBytes = 0;
  private lastEpoch: Epoch;
  private readonly index: SeqIndex;
  private readonly pending = new Map<number, PendingRecord>();
  /** Records written in this session, to be read back without the device. */
  private readonly recent = new RecordWindow();
  private template: RecordTemplate;
  private readonly rounds = new RoundQueue((header) => this.runRound(header), (error) => this.fail(error));
  /** writtenSeq as the running round began: that round makes every record below it durable. */
  private roundWrittenSeq = 0;
  /** Bumped when records are discarded, so work that spans an await can tell. */
  private discards = 0;
  private failure: TwinstoreError | undefined;
  private closing = false;
  private closed = false;
  /** Persisted in every header until acknowledgeStartedAgain(): a crash before the owner acts keeps the report. */
  private startedAgain: boolean;

  private constructor(parts: JournalParts) {
    const { header } = parts;
    this.device = parts.device;
    this.ringBytes = header.ringBytes;
    this.ringEnd = ringStartBytes + header.ringBytes;
    this.groupId = header.groupId;
    this.roleNow = header.role;
    this.instances = header.instances;
    this.session = header.session;
    this.startedAgain = header.startedAgain === true;
    this.generation = header.generation;
    this.cursor = { tailSeq: header.tailSeq, nextSeq: parts.nextSeq, writtenSeq: parts.nextSeq, durableSeq: parts.nextSeq, appliedSeq: header.appliedSeq };
    this.head = parts.head;
    this.keptBytes = parts.keptBytes;
    this.pinnedBytes = parts.keptBytes;
    this.lastEpoch = parts.lastEpoch;
    this.index = parts.index;
    this.template = new RecordTemplate(this.instanceId, this.groupId, this.lastEpoch);
    assert(this.index.headSeq === this.cursor.tailSeq && this.index.endSeq === this.cursor.nextSeq, 'the index covers tail..next');
  }

  /** Writes a new, empty journal on `device` (both header slots, then a flush). */
  static async format(device: JournalDevice, init: FormatInit): Promise<Journal> {
    return new Journal(await formatParts(device, init));
  }

  /** Opens a journal: picks the header slot, scans the ring (the recovery decision table), persists a new session. */
  static async open(device: JournalDevice): Promise<{ journal: Journal; recovery: RecoveryReport }> {
    const opened = await openParts(device);
    const journal = new Journal(opened.parts);
    // A journal started again has both header slots written already; otherwise the new session is persisted now.
    if (!opened.startedAgain) await journal.persistHeader();
    return { journal, recovery: opened.recovery };
  }

  /**
   * The owner has acted on a lost header (a master marked every region, a receiver asked for a full
   * copy, durably): later opens no longer report it.
   */
  async acknowledgeStartedAgain(): Promise<void> {
    if (!this.startedAgain) return;
    this.checkUsable();
    this.startedAgain = false;
    await this.rounds.request(true);
  }

  /** Started again after a lost header (Journal.open reported headerLost) and not yet acknowledged. */
  get startedAgainPending(): boolean {
    return this.startedAgain;
  }

  get instanceId(): string {
    return this.instances[0]!.id;
  }

  get role(): JournalRole {
    return this.roleNow;
  }

  get epoch(): Epoch {
    return this.instances[0]!.epoch;
  }

  get tailSeq(): number {
    return this.cursor.tailSeq;
  }

  get nextSeq(): number {
    return this.cursor.nextSeq;
  }

  get durableSeq(): number {
    return this.cursor.durableSeq;
  }

  get appliedSeq(): number {
    return this.cursor.appliedSeq;
  }

  /** Ring bytes held by records from the tail on, wrap waste included. */
  get usedBytes(): number {
    return this.keptBytes;
  }

  /** A device error stopped this journal (fail-stop): every call fails; open it again from the device to go on. */
  get failed(): boolean {
    return this.failure !== undefined;
  }

  get capacityBytes(): number {
    return this.ringBytes;
  }

  /** Synchronous: assigns the seq (or checks a given one is nextSeq) and ring space; JOURNAL_FULL when it does not fit. */
  reserve(meta: Omit<RecordMeta, 'seq'> & { seq?: number }, dataBytes: number): Reservation {
    this.checkUsable();
    checkRecordMeta(meta, dataBytes, this.lastEpoch);
    const seq = this.cursor.nextSeq;
    if (meta.seq !== undefined && meta.seq !== seq) {
      throw new TwinstoreError('JOURNAL_SEQ_MISMATCH', `record seq ${meta.seq} is not the journal's next seq ${seq}`, { field: 'seq' });
    }
    if (!epochNotOlder(meta.epoch, this.lastEpoch)) {
      throw new TwinstoreError('JOURNAL_EPOCH_STALE', `record epoch ${formatEpoch(meta.epoch)} is older than the journal's ${formatEpoch(this.lastEpoch)}`, { field: 'epoch' });
    }
    const recordBytes = recordBytesFor(meta.kind, meta.length);
    const wasteBytes = this.head + recordBytes > this.ringEnd ? this.ringEnd - this.head : 0;
    const spanBytes = wasteBytes + recordBytes;
    if (this.keptBytes + spanBytes > this.ringBytes) {
      throw new TwinstoreError('JOURNAL_FULL', `journal of group ${this.groupId} is full: ${this.keptBytes} of ${this.ringBytes} bytes used, record needs ${spanBytes}`);
    }
    const spanStart = this.head;
    const position = wasteBytes > 0 ? ringStartBytes : this.head;
    this.head = position + recordBytes === this.ringEnd ? ringStartBytes : position + recordBytes;
    this.keptBytes += spanBytes;
    this.pinnedBytes += spanBytes;
    const overBytes = this.pinnedBytes - this.ringBytes;
    this.index.push(position, spanBytes, recordBytes, false);
    this.pending.set(seq, { meta, spanStart, position, recordBytes, overBytes, writing: false, spaceReady: undefined, spaceFailed: undefined });
    this.cursor.nextSeq = seq + 1;
    this.lastEpoch = meta.epoch;
    if (overBytes > 0) this.rounds.soon();
    return { seq, position, recordBytes };
  }

  /**
   * Writes a reserved record: header block + data + zero padding to 4 KiB (and its wrap marker, if
   * any). With `handedOver` the caller gives `data` to the journal and never uses it again, and
   * readFrom() serves the record from memory (a receiver applying what it stored); a pooled buffer
   * goes back to the pool once written (not kept) or released (kept). Otherwise it is
   * read back from the device and checked: a master sends only records whose device copy reads
   * back intact, since a crash would lose a damaged one and give its seq to another write.
   * `dataCrc`: the CRC32C of `data` when the caller holds one it checked against these very bytes
   * (the link decoder does, per segment); the journal records it instead of computing another.
   */
  async write(reservation: Reservation, meta: WriteMeta, data: Buffer | undefined, options: WriteOptions = {}): Promise<void> {
    const handedOver = options.handedOver === true;
    this.checkUsable();
    const pending = this.pending.get(reservation.seq);
    assert(pending !== undefined && !pending.writing && pending.position === reservation.position, `seq ${reservation.seq} is reserved and written once`);
    assert(sameMeta(pending.meta, meta), `the record written as seq ${reservation.seq} is the one reserved`);
    checkData(meta, data);
    pending.writing = true;
    if (pending.overBytes > 0) await this.waitForSpace(pending);
    this.checkUsable();
    const dataCrc = options.dataCrc ?? dataCrcOf(data);
    try {
      await this.writeRecord(reservation.seq, pending, meta, data, dataCrc);
    } catch (error) {
      throw this.fail(error);
    }
    this.pending.delete(reservation.seq);
    this.index.markWritten(reservation.seq);
    // Handed over and not kept: written, so its buffer can go back to the pool (if it came from there).
    if (handedOver && !this.recent.keep({ ...meta, seq: reservation.seq, data, dataCrc }) && data !== undefined) sharedPool.release(data);
    while (this.cursor.writtenSeq < this.cursor.nextSeq && this.index.isWritten(this.cursor.writtenSeq)) this.cursor.writtenSeq += 1;
  }

  /** Group commit: one flush for every record whose write completed before the call; durableSeq moves over the contiguous prefix. */
  async sync(): Promise<void> {
    this.checkUsable();
    if (this.cursor.writtenSeq <= this.cursor.durableSeq) return;
    const running = this.rounds.current;
    if (running !== undefined && this.roundWrittenSeq >= this.cursor.writtenSeq) return running;
    return this.rounds.request(false);
  }

  /** Durable records from `seq` on, in order, up to `maxBytes` of data (at least one record if there is one). */
  async readFrom(seq: number, maxBytes: number): Promise<JournalRecord[]> {
    this.checkUsable();
    checkWholeNumber(seq, 'seq');
    checkWholeNumber(maxBytes, 'maxBytes');
    this.checkReadable(seq);
    const kept = this.recent.take(seq, this.cursor.durableSeq, readRecordsMax, Math.min(maxBytes, readBytesMax));
    if (kept.length > 0) return kept;
    const runs = planRead(this.index, seq, this.cursor.durableSeq, Math.min(maxBytes, readBytesMax));
    const discards = this.discards;
    const records: JournalRecord[] = [];
    for (const run of runs) {
      const buffer = Buffer.allocUnsafe(run.bytes);
      await this.device.read(run.position, buffer);
      if (this.discards !== discards || run.firstSeq < this.cursor.tailSeq) {
        throw new TwinstoreError('JOURNAL_RECORD_GONE', `journal record seq ${run.firstSeq} was released while it was read`, { field: 'seq' });
      }
      if (!decodeRun(buffer, run, records)) break;
    }
    return records;
  }

  /**
   * Frees the ring space of records below `uptoSeq`; it is reused once a header with the new tail is
   * durable. The caller is done with every record below `uptoSeq` that readFrom() gave it: the data
   * of handed-over ones goes back to the buffer pool.
   */
  release(uptoSeq: number): void {
    this.checkUsable();
    this.checkDurableCursor(uptoSeq, 'uptoSeq');
    if (uptoSeq <= this.cursor.tailSeq) return;
    const bytes = this.index.dropBelow(uptoSeq);
    this.recent.dropBelow(uptoSeq);
    this.keptBytes -= bytes;
    this.releasedBytes += bytes;
    this.cursor.tailSeq = uptoSeq;
    if (this.releasedBytes >= this.ringBytes * releasedShareForHeader) this.rounds.soon();
  }

  /** Receiver cursor: every record below `uptoSeq` is applied. Persisted with the next header. */
  markApplied(uptoSeq: number): void {
    this.checkUsable();
    this.checkDurableCursor(uptoSeq, 'uptoSeq');
    this.cursor.appliedSeq = Math.max(this.cursor.appliedSeq, uptoSeq);
  }

  /** Writes the next header slot (alternating, generation + CRC32C) with the cursors, then flushes. */
  async persistHeader(): Promise<void> {
    this.checkUsable();
    return this.rounds.request(true);
  }

  /** Role change: a new instance id and epoch, persisted; records are kept or discarded as asked. */
  async setRole(role: JournalRole, epoch: Epoch, options: { keepRecords: boolean; firstSeq?: number }): Promise<void> {
    this.checkUsable();
    checkRole(role);
    checkEpoch(epoch, 'epoch');
    if (!epochNotOlder(epoch, this.lastEpoch)) {
      throw new TwinstoreError('JOURNAL_EPOCH_STALE', `epoch ${formatEpoch(epoch)} is older than the journal's ${formatEpoch(this.lastEpoch)}`, { field: 'epoch' });
    }
    if (this.pending.size > 0) {
      throw new TwinstoreError('BAD_REQUEST', `${this.pending.size} reserved records are not written yet; a role change waits for them`);
    }
    const entry: InstanceEntry = { id: newInstanceId(), firstSeq: this.cursor.nextSeq, epoch: freezeEpoch(epoch) };
    if (options.keepRecords) {
      if (options.firstSeq !== undefined && options.firstSeq !== this.cursor.nextSeq) {
        throw new TwinstoreError('BAD_REQUEST', `records are kept, so the next seq stays ${this.cursor.nextSeq}`, { field: 'firstSeq' });
      }
      const older = this.liveInstances();
      if (older.length >= instancesMax) {
        throw new TwinstoreError('BAD_REQUEST', `records of ${older.length} instances are kept; release some before another role change keeps records`);
      }
      this.instances = [entry, ...older];
    } else {
      entry.firstSeq = options.firstSeq ?? this.cursor.nextSeq;
      checkWholeNumber(entry.firstSeq, 'firstSeq');
      this.discardRecords(entry.firstSeq);
      this.instances = [entry];
    }
    this.roleNow = role;
    this.lastEpoch = entry.epoch;
    // A new session with the new instance: its records then prove that a header naming it was
    // durable, so an open that finds them but only an older header knows that header was lost.
    assert(this.session + 1 < sessionMax, 'the session counter does not wrap');
    this.session += 1;
    return this.rounds.request(true);
  }

  /** Persists the header with the clean-shutdown flag; every later call fails with SHUTTING_DOWN. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.checkUsable();
    if (this.pending.size > 0) {
      throw new TwinstoreError('BAD_REQUEST', `${this.pending.size} reserved records are not written yet; close() waits for them`);
    }
    this.closing = true;
    await this.rounds.request(true);
    this.closed = true;
  }

  // ---- space ------------------------------------------------------------------

  private discardRecords(firstSeq: number): void {
    this.releasedBytes += this.keptBytes;
    this.keptBytes = 0;
    this.index.reset(firstSeq);
    this.recent.clear();
    this.cursor.tailSeq = firstSeq;
    this.cursor.nextSeq = firstSeq;
    this.cursor.writtenSeq = firstSeq;
    this.cursor.durableSeq = firstSeq;
    this.cursor.appliedSeq = firstSeq;
    this.discards += 1;
  }

  private waitForSpace(pending: PendingRecord): Promise<void> {
    return new Promise((resolve, reject) => {
      pending.spaceReady = resolve;
      pending.spaceFailed = reject;
    });
  }

  /** A header naming a newer tail is durable: the bytes it freed may be overwritten now. */
  private reclaim(releasedBytes: number): void {
    this.pinnedBytes -= releasedBytes;
    let overBytesMax = 0;
    for (const pending of this.pending.values()) {
      pending.overBytes -= releasedBytes;
      overBytesMax = Math.max(overBytesMax, pending.overBytes);
      if (pending.overBytes <= 0 && pending.spaceReady !== undefined) {
        const ready = pending.spaceReady;
        pending.spaceReady = undefined;
        pending.spaceFailed = undefined;
        ready();
      }
    }
    assert(this.pinnedBytes >= this.keptBytes, 'the durable tail is never ahead of the kept records');
    assert(this.pinnedBytes - this.ringBytes <= overBytesMax, 'only records still waiting reach past the durable tail');
  }

  /** Where the chain to the tail record starts: its wrap marker, the record, or the head when none is kept. */
  private tailPosition(): number {
    const seq = this.cursor.tailSeq;
    if (seq === this.cursor.nextSeq) return this.head;
    const wasteBytes = this.index.spanBytes(seq) - this.index.recordBytes(seq);
    return wasteBytes === 0 ? this.index.position(seq) : this.ringEnd - wasteBytes;
  }

  /** The instance entries that still own kept records (entry 0 always). */
  private liveInstances(): InstanceEntry[] {
    return this.instances.filter((entry, i) => {
      const newer = this.instances[i - 1];
      return newer === undefined || newer.firstSeq > Math.max(entry.firstSeq, this.cursor.tailSeq);
    });
  }

  // ---- writes -------------------------------------------------------------------

  private writeRecord(seq: number, pending: PendingRecord, meta: WriteMeta, data: Buffer | undefined, dataCrc: number): Promise<void> {
    const fields: RecordFields = {
      kind: meta.kind, wrap: false, seq, timestampMs: meta.timestampMs, offset: meta.offset, length: meta.length, lun: meta.lun,
      session: this.session, dataCrc, unsyncedBefore: Math.max(0, seq - this.cursor.durableSeq),
    };
    return writeRecordAt(this.device, this.templateFor(meta.epoch), fields, pending, data);
  }

  private templateFor(epoch: Epoch): RecordTemplate {
    const template = this.template;
    if (template.instanceId === this.instanceId && sameEpoch(template.epoch, epoch)) return template;
    this.template = new RecordTemplate(this.instanceId, this.groupId, epoch);
    return this.template;
  }

  // ---- flush and header rounds ---------------------------------------------------

  /** One round's device work, for the RoundQueue: the header slot when asked, then the flush. */
  private async runRound(header: boolean): Promise<void> {
    if (this.failure !== undefined) throw this.failure;
    const writtenSeq = this.cursor.writtenSeq;
    const discards = this.discards;
    this.roundWrittenSeq = writtenSeq;
    const capture = header ? this.captureHeader() : undefined;
    if (capture !== undefined) await this.device.write(capture.slot * headerSlotBytes, capture.bytes);
    await this.device.flush();
    if (discards === this.discards) this.cursor.durableSeq = Math.max(this.cursor.durableSeq, writtenSeq);
    if (capture !== undefined) this.reclaim(capture.releasedBytes);
  }

  private captureHeader(): HeaderCapture {
    this.instances = this.liveInstances();
    this.generation += 1;
    const bytes = encodeHeaderSlot({
      generation: this.generation, session: this.session, role: this.roleNow, clean: this.closing, startedAgain: this.startedAgain, ringBytes: this.ringBytes,
      tailSeq: this.cursor.tailSeq, tailPosition: this.tailPosition(), appliedSeq: this.cursor.appliedSeq, groupId: this.groupId,
      instances: this.instances,
    });
    const releasedBytes = this.releasedBytes;
    this.releasedBytes = 0;
    return { bytes, slot: slotOfGeneration(this.generation), releasedBytes };
  }

  // ---- reads ----------------------------------------------------------------------

  private checkReadable(seq: number): void {
    if (seq < this.cursor.tailSeq) {
      throw new TwinstoreError('JOURNAL_RECORD_GONE', `journal record seq ${seq} was released (the tail is at ${this.cursor.tailSeq})`, { field: 'seq' });
    }
    if (seq > this.cursor.nextSeq) {
      throw new TwinstoreError('JOURNAL_SEQ_MISMATCH', `journal has no seq ${seq} yet (next is ${this.cursor.nextSeq})`, { field: 'seq' });
    }
  }

  private checkDurableCursor(seq: number, field: string): void {
    checkWholeNumber(seq, field);
    if (seq > this.cursor.durableSeq) {
      throw new TwinstoreError('BAD_REQUEST', `${field} ${seq} is past the durable records (durableSeq ${this.cursor.durableSeq})`, { field });
    }
  }

  // ---- failure ----------------------------------------------------------------------

  private checkUsable(): void {
    if (this.failure !== undefined) throw this.failure;
    if (this.closed) throw new TwinstoreError('SHUTTING_DOWN', `journal of group ${this.groupId} is closed`);
  }

  /** Fail-stop: the first device error stops the journal; waiting writes fail with it. */
  private fail(error: unknown): TwinstoreError {
    if (this.failure === undefined) {
      const message = error instanceof Error ? error.message : String(error);
      this.failure = isTwinstoreError(error) ? error : new TwinstoreError('IO_ERROR', `journal device failed: ${message}`, { cause: error });
      this.recent.clear();
      for (const pending of this.pending.values()) pending.spaceFailed?.(this.failure);
    }
    return this.failure;
  }
}

function sameMeta(a: WriteMeta, b: WriteMeta): boolean {
  return a.kind === b.kind && a.lun === b.lun && a.offset === b.offset && a.length === b.length && a.timestampMs === b.timestampMs && sameEpoch(a.epoch, b.epoch);
}
