// Recovery on open, as two decision tables (TigerBeetle style): one picks the
// header slot, the other classifies each probe of the ring scan. A table row
// lists the facts it requires; a fact a row does not list is "don't care".
// Exactly one row matches every combination of facts (test/journal/
// decision-table.test.ts enumerates them all), and decide() asserts it at run
// time too. The scan starts at the persisted tail and follows the chain of
// records: each probe reads the header block where the next record must begin,
// evaluates the facts (the expensive ones only when a row needs them), and
// acts on the one matching row: accept, accept as damaged, wrap, stop or fail.

import { crc32c } from '@node-rs/crc32';
import { TwinstoreError, assert } from '../errors.js';
import { epochNotOlder } from './epoch.js';
import {
  blockBytes, kindHasData, ownerOf, parseRecordHeader, recordBytesFor, recordBytesMax, recordHeaderBytes, ringStartBytes,
  type HeaderState, type InstanceEntry, type RecordHeader,
} from './layout.js';
import type { SeqIndex } from './seq-index.js';
import type { DamagedRecord, Epoch, JournalDevice, RecoveryCase } from './types.js';

type Pattern<Facts> = { readonly [K in keyof Facts]?: Facts[K] };

export interface TableRow<Facts, Action> {
  readonly label: string;
  readonly when: Pattern<Facts>;
  readonly action: Action;
}

/** The rows whose every listed fact equals the given fact (an unknown fact matches nothing). */
export function matchingRows<Facts extends object, Row extends TableRow<Facts, unknown>>(table: readonly Row[], facts: Facts): Row[] {
  return table.filter((row) => (Object.keys(row.when) as (keyof Facts)[]).every((key) => row.when[key] === facts[key]));
}

function decide<Facts extends object, Row extends TableRow<Facts, unknown>>(table: readonly Row[], facts: Facts): Row {
  const rows = matchingRows(table, facts);
  assert(rows.length === 1, `exactly one decision-table row matches ${JSON.stringify(facts)} (matched ${rows.map((r) => r.label).join(', ') || 'none'})`);
  return rows[0]!;
}

// ---- header slots -----------------------------------------------------------

export interface HeaderFacts {
  /** Slot 0 has the magic, the version, a matching CRC32C and valid fields. */
  slot0: boolean;
  slot1: boolean;
  /** The slot with the higher generation (only consulted when both are valid). */
  newer: 0 | 1;
}

export type HeaderAction = 0 | 1 | 'newer' | 'fail';

export const headerTable: readonly TableRow<HeaderFacts, HeaderAction>[] = [
  { label: 'both_valid', when: { slot0: true, slot1: true }, action: 'newer' },
  { label: 'slot1_torn_or_damaged', when: { slot0: true, slot1: false }, action: 0 },
  { label: 'slot0_torn_or_damaged', when: { slot0: false, slot1: true }, action: 1 },
  { label: 'no_valid_slot', when: { slot0: false, slot1: false }, action: 'fail' },
];

/** Picks the header slot to open from; throws JOURNAL_CORRUPT when neither is valid. */
export function chooseHeader(slots: readonly [HeaderState | undefined, HeaderState | undefined]): { state: HeaderState; slot: 0 | 1; label: string } {
  const [slot0, slot1] = slots;
  const newer: 0 | 1 = slot0 !== undefined && slot1 !== undefined && slot1.generation > slot0.generation ? 1 : 0;
  const row = decide(headerTable, { slot0: slot0 !== undefined, slot1: slot1 !== undefined, newer });
  if (row.action === 'fail') {
    throw new TwinstoreError('JOURNAL_CORRUPT', 'neither journal header slot is valid (torn, damaged, or not a Twinstore journal)');
  }
  const slot = row.action === 'newer' ? newer : row.action;
  const state = slots[slot];
  assert(state !== undefined, 'the chosen header slot is valid');
  return { state, slot, label: row.label };
}

// ---- ring probes --------------------------------------------------------------

export interface ProbeFacts {
  /** No record has been accepted yet in this scan. */
  first: boolean;
  /** The block holds a valid record header (magic, version, CRC32C, fields) whose record fits the ring here. */
  header: boolean;
  /** header = false: a record of the last session with a higher seq lies within one record's reach after here. */
  later?: boolean;
  /** The record belongs to this group and to the journal instance that owns the expected seq. */
  instance?: boolean;
  seq?: 'lower' | 'expected' | 'higher';
  /** Its session is not older than the previous record's nor newer than the header's. */
  session?: boolean;
  /** Its epoch is not older than its instance's epoch nor than the previous record's. */
  epoch?: boolean;
  /** It is a wrap marker: the record with this seq continues at the ring start. */
  wrap?: boolean;
  /** Its data matches the data CRC32C. */
  data?: boolean;
  /** data = false: the record after it is acceptable (so this one sits in the middle). */
  next?: boolean;
  /**
   * next = true: a later record of the chain was written after this one was synced (its
   * `unsyncedBefore` says so). Then the damage came after the sync (bit rot, a misdirected
   * write); otherwise this record was never synced and a crash tore it.
   */
  synced?: boolean;
}

export type ProbeAction = 'accept' | 'damaged' | 'wrap' | 'stop' | 'fail';

interface ProbeRow extends TableRow<ProbeFacts, ProbeAction> {
  readonly label: RecoveryCase;
}

const chained = { header: true, instance: true, seq: 'expected', session: true, epoch: true } as const;

export const probeTable: readonly ProbeRow[] = [
  { label: 'empty', when: { header: false, later: false, first: true }, action: 'stop' },
  { label: 'end', when: { header: false, later: false, first: false }, action: 'stop' },
  { label: 'gap', when: { header: false, later: true }, action: 'stop' },
  { label: 'foreign_instance', when: { header: true, instance: false }, action: 'stop' },
  { label: 'stale_lap', when: { header: true, instance: true, seq: 'lower' }, action: 'stop' },
  { label: 'header_behind_ring', when: { header: true, instance: true, seq: 'higher', first: true }, action: 'fail' },
  { label: 'seq_ahead', when: { header: true, instance: true, seq: 'higher', first: false }, action: 'stop' },
  { label: 'stale_session', when: { header: true, instance: true, seq: 'expected', session: false }, action: 'stop' },
  { label: 'stale_epoch', when: { header: true, instance: true, seq: 'expected', session: true, epoch: false }, action: 'stop' },
  { label: 'wrap', when: { ...chained, wrap: true }, action: 'wrap' },
  { label: 'record', when: { ...chained, wrap: false, data: true }, action: 'accept' },
  { label: 'damaged', when: { ...chained, wrap: false, data: false, next: true, synced: true }, action: 'damaged' },
  { label: 'torn_unsynced', when: { ...chained, wrap: false, data: false, next: true, synced: false }, action: 'stop' },
  { label: 'torn_data_end', when: { ...chained, wrap: false, data: false, next: false }, action: 'stop' },
];

export function decideProbe(facts: ProbeFacts): ProbeRow {
  return decide(probeTable, facts);
}

// ---- the scan -------------------------------------------------------------------

const windowBytes = 4 * 2 ** 20;

/** Reads the ring through one reusable window, so the scan issues few large reads. */
class RingReader {
  private buffer = Buffer.alloc(0);
  private window = Buffer.alloc(0);
  private windowAt = -1;

  constructor(private readonly device: JournalDevice, private readonly ringEnd: number) {}

  /** `length` bytes at `position`, valid until the next call. */
  async view(position: number, length: number): Promise<Buffer> {
    assert(position + length <= this.ringEnd && length <= recordBytesMax, 'views stay inside the ring and are bounded');
    const offset = position - this.windowAt;
    if (this.windowAt >= 0 && offset >= 0 && offset + length <= this.window.length) return this.window.subarray(offset, offset + length);
    const size = Math.min(Math.max(length, windowBytes), this.ringEnd - position);
    if (this.buffer.length < size) this.buffer = Buffer.allocUnsafe(Math.max(size, windowBytes));
    this.window = this.buffer.subarray(0, size);
    this.windowAt = -1;
    await this.device.read(position, this.window);
    this.windowAt = position;
    return this.window.subarray(0, length);
  }
}

interface ScanContext {
  reader: RingReader;
  header: HeaderState;
  ringEnd: number;
}

interface ScanCursor {
  position: number;
  /** Where the span of the expected record starts: its wrap marker, or the record itself. */
  spanStart: number;
  expected: number;
  previous: RecordHeader | undefined;
}

export interface ScanResult {
  label: RecoveryCase;
  nextSeq: number;
  head: number;
  keptBytes: number;
  lastEpoch: Epoch | undefined;
  damaged: DamagedRecord[];
  /** Records cut off at a torn end (torn_unsynced, torn_data_end): their writes may have reached the volumes. */
  cut: DamagedRecord[];
  /** The scan stopped at damage, not at the end: records from this seq on had been synced (syncedPastStop). */
  lostFrom: number | null;
  /** header_behind_ring: the seq of the record found at the persisted tail. */
  aheadSeq?: number;
  steps: Partial<Record<RecoveryCase, number>>;
}

/** Scans the ring from the header's tail and fills `index` with the records it accepts. */
export async function scanRing(device: JournalDevice, header: HeaderState, index: SeqIndex): Promise<ScanResult> {
  const ringEnd = ringStartBytes + header.ringBytes;
  const context: ScanContext = { reader: new RingReader(device, ringEnd), header, ringEnd };
  const cursor: ScanCursor = { position: header.tailPosition, spanStart: header.tailPosition, expected: header.tailSeq, previous: undefined };
  const result: ScanResult = { label: 'empty', nextSeq: header.tailSeq, head: header.tailPosition, keptBytes: 0, lastEpoch: undefined, damaged: [], cut: [], lostFrom: null, steps: {} };
  const probesMax = header.ringBytes / blockBytes + 3;
  for (let probe = 0; probe < probesMax; probe += 1) {
    const { facts, record } = await probeAt(context, cursor, result.cut);
    const row = decideProbe(facts);
    result.steps[row.label] = (result.steps[row.label] ?? 0) + 1;
    if (row.action === 'fail') {
      // The header in use is not the newest durable one: the caller treats the header as lost.
      return { ...result, label: row.label, nextSeq: cursor.expected, head: cursor.spanStart, lostFrom: null, ...(record === undefined ? {} : { aheadSeq: record.seq }) };
    }
    if (row.action === 'stop') {
      if (row.label === 'torn_data_end' && record !== undefined) result.cut.push(regionOf(record));
      if (row.label !== 'torn_unsynced' && row.label !== 'torn_data_end') result.cut.length = 0;
      const lostFrom = row.label !== 'empty' && (await syncedPastStop(context, cursor)) ? cursor.expected : null;
      return { ...result, label: row.label, nextSeq: cursor.expected, head: cursor.spanStart, lastEpoch: cursor.previous?.epoch, lostFrom };
    }
    if (row.action === 'wrap') {
      cursor.position = ringStartBytes;
      continue;
    }
    assert(record !== undefined, 'an accepted record was decoded');
    result.keptBytes += accept(context, cursor, record, index);
    if (row.action === 'damaged') result.damaged.push({ seq: record.seq, lun: record.lun, offset: record.offset, length: record.length });
  }
  assert(false, 'the scan ends within one lap of the ring');
}

/** Indexes the record at the cursor and moves on; returns its span in bytes. */
function accept(context: ScanContext, cursor: ScanCursor, record: RecordHeader, index: SeqIndex): number {
  const recordBytes = recordBytesFor(record.kind, record.length);
  const wasteBytes = cursor.spanStart === cursor.position ? 0 : context.ringEnd - cursor.spanStart;
  assert(wasteBytes === 0 || cursor.position === ringStartBytes, 'only a wrap separates a span from its record');
  index.push(cursor.position, wasteBytes + recordBytes, recordBytes, true);
  cursor.expected += 1;
  cursor.previous = record;
  cursor.position += recordBytes;
  if (cursor.position === context.ringEnd) cursor.position = ringStartBytes;
  cursor.spanStart = cursor.position;
  return wasteBytes + recordBytes;
}

async function probeAt(context: ScanContext, cursor: ScanCursor, cut: DamagedRecord[]): Promise<{ facts: ProbeFacts; record: RecordHeader | undefined }> {
  const { header } = context;
  const record = parseRecordHeader(await context.reader.view(cursor.position, blockBytes));
  const facts: ProbeFacts = { first: cursor.previous === undefined, header: record !== undefined && fitsAt(context, record, cursor.position) };
  if (record === undefined || !facts.header) {
    facts.later = await laterRecordExists(context, cursor);
    return { facts, record: undefined };
  }
  const owner = ownerOf(header.instances, cursor.expected);
  facts.instance = owner !== undefined && record.instanceId === owner.id && record.groupId === header.groupId;
  if (owner === undefined || !facts.instance) return { facts, record };
  facts.seq = record.seq < cursor.expected ? 'lower' : record.seq > cursor.expected ? 'higher' : 'expected';
  if (facts.seq !== 'expected') return { facts, record };
  const chain = chainsOn(record, cursor.previous, owner, header);
  facts.session = chain.session;
  if (!facts.session) return { facts, record };
  facts.epoch = chain.epoch;
  if (!facts.epoch) return { facts, record };
  facts.wrap = record.wrap;
  if (facts.wrap) return { facts, record };
  facts.data = await dataIntact(context, cursor.position, record);
  if (facts.data) return { facts, record };
  facts.next = await nextAcceptable(context, cursor, record);
  if (facts.next) facts.synced = record.seq < header.appliedSeq || (await syncedLater(context, cursor, record, cut));
  return { facts, record };
}

/** A record header is usable at `position` only when the whole record lies inside the ring. */
function fitsAt(context: ScanContext, record: RecordHeader, position: number): boolean {
  if (record.wrap) return position !== ringStartBytes;
  return position + recordBytesFor(record.kind, record.length) <= context.ringEnd;
}

function chainsOn(record: RecordHeader, previous: RecordHeader | undefined, owner: InstanceEntry, header: HeaderState): { session: boolean; epoch: boolean } {
  const session = record.session <= header.session && record.session >= (previous?.session ?? 1);
  const epoch = epochNotOlder(record.epoch, owner.epoch) && (previous === undefined || epochNotOlder(record.epoch, previous.epoch));
  return { session, epoch };
}

async function dataIntact(context: ScanContext, position: number, record: RecordHeader): Promise<boolean> {
  if (!kindHasData(record.kind) || record.length === 0) return true;
  const data = await context.reader.view(position + recordHeaderBytes, record.length);
  return crc32c(data) === record.dataCrc;
}

/** Whether the record after `record` (damaged data) continues the chain: then the damage is in the middle. */
async function nextAcceptable(context: ScanContext, cursor: ScanCursor, record: RecordHeader): Promise<boolean> {
  let position = cursor.position + recordBytesFor(record.kind, record.length);
  if (position === context.ringEnd) position = ringStartBytes;
  const next = parseRecordHeader(await context.reader.view(position, blockBytes));
  const owner = ownerOf(context.header.instances, cursor.expected + 1);
  if (next === undefined || owner === undefined || !fitsAt(context, next, position)) return false;
  const chain = chainsOn(next, record, owner, context.header);
  return next.instanceId === owner.id && next.groupId === context.header.groupId && next.seq === cursor.expected + 1 && chain.session && chain.epoch;
}

/**
 * Follows the chain of records after `record` (at `position`, seq `seq`) by headers only, until it
 * breaks or one lap is done, calling `visit` for each record (not wrap markers); stops early when
 * `visit` returns true, and then returns true.
 */
async function followChain(context: ScanContext, position: number, record: RecordHeader, seq: number, visit: (next: RecordHeader) => boolean): Promise<boolean> {
  let previous = record;
  for (let steps = 0; steps < context.header.ringBytes / blockBytes; steps += 1) {
    position += recordBytesFor(previous.kind, previous.length);
    if (position === context.ringEnd) position = ringStartBytes;
    const next = parseRecordHeader(await context.reader.view(position, blockBytes));
    const owner = ownerOf(context.header.instances, seq + 1);
    if (next === undefined || owner === undefined || !fitsAt(context, next, position)) return false;
    const chained = chainsOn(next, previous, owner, context.header);
    if (next.instanceId !== owner.id || next.groupId !== context.header.groupId || next.seq !== seq + 1 || !chained.session || !chained.epoch) return false;
    if (next.wrap) {
      position = ringStartBytes - recordBytesFor(next.kind, next.length);
      previous = next;
      continue;
    }
    seq += 1;
    if (visit(next)) return true;
    previous = next;
  }
  return false;
}

/** A record written once every record below `seq` had been synced (its unsyncedBefore says so). */
function provesSynced(record: RecordHeader, seq: number): boolean {
  return record.seq - record.unsyncedBefore > seq;
}

/**
 * Whether a record of the chain after `record` (damaged data) was written once `record` had been
 * synced. A record damaged after its sync is kept and reported; one no later record knew as
 * synced was torn by a crash and ends the records (the writes it and its followers carried were
 * never promised durable, and their regions are still in the activity log): those go to `cut`.
 */
async function syncedLater(context: ScanContext, cursor: ScanCursor, record: RecordHeader, cut: DamagedRecord[]): Promise<boolean> {
  const chain: DamagedRecord[] = [regionOf(record)];
  const proven = await followChain(context, cursor.position, record, cursor.expected, (next) => {
    if (provesSynced(next, cursor.expected)) return true;
    if (next.kind !== 'marker') chain.push(regionOf(next));
    return false;
  });
  if (!proven) cut.push(...chain);
  return proven;
}

/**
 * Where the scan stopped, whether the expected record had been synced all the same: a record of
 * the last session with a higher seq, within one record's reach (or on the chain after it), was
 * written after that sync. Then the stop is damage in the middle (a misdirected write over a
 * record, a destroyed header), not the end, and synced records past it cannot be read back.
 */
async function syncedPastStop(context: ScanContext, cursor: ScanCursor): Promise<boolean> {
  const { header } = context;
  const end = Math.min(context.ringEnd, cursor.position + recordBytesMax + blockBytes);
  for (let position = cursor.position; position < end; position += blockBytes) {
    const record = parseRecordHeader(await context.reader.view(position, blockBytes));
    if (record === undefined || record.wrap || record.seq <= cursor.expected || record.session !== header.session || record.groupId !== header.groupId) continue;
    if (ownerOf(header.instances, record.seq)?.id !== record.instanceId || !fitsAt(context, record, position)) continue;
    if (provesSynced(record, cursor.expected)) return true;
    if (await followChain(context, position, record, record.seq, (next) => provesSynced(next, cursor.expected))) return true;
  }
  return false;
}

function regionOf(record: RecordHeader): DamagedRecord {
  return { seq: record.seq, lun: record.lun, offset: record.offset, length: record.length };
}

/**
 * Whether a record of the last session with a seq above the expected one lies
 * within one record's reach after an invalid header: then the expected record
 * is missing from a batch whose later records landed (a gap), not the end.
 * Only the label depends on it; the scan stops either way.
 */
async function laterRecordExists(context: ScanContext, cursor: ScanCursor): Promise<boolean> {
  const end = Math.min(context.ringEnd, cursor.position + recordBytesMax + blockBytes);
  for (let position = cursor.position + blockBytes; position < end; position += blockBytes) {
    const record = parseRecordHeader(await context.reader.view(position, blockBytes));
    if (record === undefined || record.seq <= cursor.expected || record.session !== context.header.session) continue;
    if (ownerOf(context.header.instances, record.seq)?.id !== record.instanceId || record.groupId !== context.header.groupId) continue;
    if (fitsAt(context, record, position)) return true;
  }
  return false;
}

export interface SweepResult {
  /** The highest seq of this group's records (wrap markers included) anywhere on the ring. */
  maxSeq: number | null;
  /** The highest session stamped on them. */
  maxSession: number;
}

/**
 * Reads every block of the ring and notes the highest seq and session of this group's record
 * headers. Run only when the newest header may be lost (one slot invalid, or the ring ahead of
 * the header): a record of a session the header in use does not know proves a newer header was
 * durable, because every session (an open, a role change) is persisted before its first record.
 */
export async function sweepRing(device: JournalDevice, header: HeaderState): Promise<SweepResult> {
  const ringEnd = ringStartBytes + header.ringBytes;
  const result: SweepResult = { maxSeq: null, maxSession: 0 };
  const buffer = Buffer.allocUnsafe(Math.min(windowBytes, header.ringBytes));
  for (let at = ringStartBytes; at < ringEnd; at += buffer.length) {
    const window = buffer.subarray(0, Math.min(buffer.length, ringEnd - at));
    await device.read(at, window);
    for (let offset = 0; offset < window.length; offset += blockBytes) {
      const record = parseRecordHeader(window.subarray(offset, offset + blockBytes));
      if (record === undefined || record.groupId !== header.groupId) continue;
      result.maxSeq = Math.max(result.maxSeq ?? record.seq, record.seq);
      result.maxSession = Math.max(result.maxSession, record.session);
    }
  }
  return result;
}
