// The journal's on-disk layout (docs/journal-format.md): two 4 KiB header
// slots, then a ring of records. A record is a 4 KiB header block (fixed fields
// under a CRC32C) followed by its data padded with zeros to 4 KiB. This file
// encodes and decodes both blocks; a decoder returns undefined for anything that
// is not exactly what an encoder would have written, and never throws on input.

import { crc32c } from '@node-rs/crc32';
import { assert } from '../errors.js';
import { textFieldBytesMax } from './epoch.js';
import type { Epoch, JournalRole, RecordKind } from './types.js';

export const blockBytes = 4096;
export const headerSlotBytes = blockBytes;
export const ringStartBytes = 2 * headerSlotBytes;
export const recordHeaderBytes = blockBytes;
export const recordDataBytesMax = 32 * 2 ** 20;
export const recordBytesMax = recordHeaderBytes + recordDataBytesMax;
/** A journal must hold four of the largest records (docs/architecture.md §3). */
export const journalBytesMin = ringStartBytes + 4 * recordBytesMax;
export const journalBytesMax = 2 ** 50;
/** Header slots list the current instance and the older ones whose records are still kept. */
export const instancesMax = 8;
/** Length fields are 32-bit: zero and trim records cover at most this many bytes. */
export const recordLengthMax = 2 ** 32 - 1;
export const formatVersion = 1;

const recordMagic = 0x54574a52; // "TWJR"
const headerMagic = 0x54574a48; // "TWJH"
const recordFieldsBytes = 320;
const textFieldBytes = 1 + textFieldBytesMax;
const flagWrap = 1;
const unsyncedBeforeMax = 2 ** 32 - 1;
const flagClean = 1;
/** The journal was started again after its newest header was lost, and its owner has not acted on it yet. */
const flagStartedAgain = 2;

const kindCodes: Record<RecordKind, number> = { write: 1, zero: 2, trim: 3, base: 4, marker: 5 };
const kindsByCode: readonly (RecordKind | undefined)[] = [undefined, 'write', 'zero', 'trim', 'base', 'marker'];
const roleCodes: Record<JournalRole, number> = { free: 0, master: 1, restore: 2 };
const rolesByCode: readonly JournalRole[] = ['free', 'master', 'restore'];

export function kindHasData(kind: RecordKind): boolean {
  return kind === 'write' || kind === 'base';
}

export function roundUpToBlock(bytes: number): number {
  return Math.ceil(bytes / blockBytes) * blockBytes;
}

export function recordBytesFor(kind: RecordKind, length: number): number {
  return recordHeaderBytes + (kindHasData(kind) ? roundUpToBlock(length) : 0);
}

// ---- primitive fields -------------------------------------------------------

function writeU64(buffer: Buffer, value: number, at: number): void {
  buffer.writeUInt32BE(Math.floor(value / 2 ** 32), at);
  buffer.writeUInt32BE(value >>> 0, at + 4);
}

/** A safe integer, or -1 when the stored value is beyond 2^53. */
function readU64(buffer: Buffer, at: number): number {
  const high = buffer.readUInt32BE(at);
  return high >= 2 ** 21 ? -1 : high * 2 ** 32 + buffer.readUInt32BE(at + 4);
}

function writeText(buffer: Buffer, text: string, at: number): void {
  const bytes = buffer.write(text, at + 1, textFieldBytesMax, 'utf8');
  assert(bytes === Buffer.byteLength(text, 'utf8') && bytes > 0, 'text fields are checked before they are encoded');
  buffer[at] = bytes;
}

function readText(buffer: Buffer, at: number): string | undefined {
  const bytes = buffer[at] ?? 0;
  if (bytes === 0 || bytes > textFieldBytesMax) return undefined;
  const text = buffer.toString('utf8', at + 1, at + 1 + bytes);
  return Buffer.byteLength(text, 'utf8') === bytes ? text : undefined;
}

function writeEpoch(buffer: Buffer, epoch: Epoch, at: number): void {
  writeU64(buffer, epoch.counter, at);
  buffer.write(epoch.nonce, at + 8, 8, 'hex');
  writeText(buffer, epoch.arrayId, at + 16);
}

const epochFieldBytes = 16 + textFieldBytes;

function readEpoch(buffer: Buffer, at: number): Epoch | undefined {
  const counter = readU64(buffer, at);
  const arrayId = readText(buffer, at + 16);
  if (counter < 0 || arrayId === undefined) return undefined;
  return { counter, arrayId, nonce: buffer.toString('hex', at + 8, at + 16) };
}

// ---- record header block ------------------------------------------------------
//   0 u32 magic "TWJR"     4 u16 version     6 u8 kind     7 u8 flags (1 = wrap)
//   8 u32 header CRC32C of bytes 12..320     12 u32 data CRC32C (0 without data)
//  16 u64 seq   24 u64 timestampMs   32 u64 offset   40 u32 length   44 u32 lun
//  48 u32 session   52 u32 unsyncedBefore   56 epoch (u64 counter, 8-byte nonce, text arrayId)
// 136 text instance id   200 text group id   264..4096 zeros
const recordEpochAt = 56;
const recordInstanceAt = recordEpochAt + epochFieldBytes;
const recordGroupAt = recordInstanceAt + textFieldBytes;
assert(recordGroupAt + textFieldBytes <= recordFieldsBytes, 'record fields fit their checksummed range');

export interface RecordHeader {
  kind: RecordKind;
  /** A wrap marker: the record with this seq continues at the ring start. */
  wrap: boolean;
  seq: number;
  timestampMs: number;
  offset: number;
  length: number;
  lun: number;
  /** The open count of the journal when the record was written. */
  session: number;
  /**
   * How many records just below this one were not yet known durable when it was written
   * (seq − durableSeq then, capped at 2^32 − 1): every record below seq − unsyncedBefore had
   * been synced. Recovery uses it to tell a torn unsynced record from a synced one damaged later.
   */
  unsyncedBefore: number;
  epoch: Epoch;
  instanceId: string;
  groupId: string;
  dataCrc: number;
}

export type RecordFields = Omit<RecordHeader, 'epoch' | 'instanceId' | 'groupId'>;

/** The constant part of the record headers of one instance and epoch, encoded once. */
export class RecordTemplate {
  private readonly block = Buffer.alloc(recordHeaderBytes);

  constructor(readonly instanceId: string, readonly groupId: string, readonly epoch: Epoch) {
    this.block.writeUInt32BE(recordMagic, 0);
    this.block.writeUInt16BE(formatVersion, 4);
    writeEpoch(this.block, epoch, recordEpochAt);
    writeText(this.block, instanceId, recordInstanceAt);
    writeText(this.block, groupId, recordGroupAt);
  }

  /** Writes a whole header block (zeros past the fields) into `target` at `at`. */
  encode(target: Buffer, at: number, fields: RecordFields): void {
    assert(Number.isSafeInteger(fields.seq) && fields.seq >= 0, 'seq is a whole number');
    assert(!fields.wrap || fields.kind === 'marker', 'only markers wrap');
    this.block.copy(target, at, 0, recordHeaderBytes);
    target[at + 6] = kindCodes[fields.kind];
    target[at + 7] = fields.wrap ? flagWrap : 0;
    target.writeUInt32BE(fields.dataCrc >>> 0, at + 12);
    writeU64(target, fields.seq, at + 16);
    writeU64(target, fields.timestampMs, at + 24);
    writeU64(target, fields.offset, at + 32);
    target.writeUInt32BE(fields.length, at + 40);
    target.writeUInt32BE(fields.lun, at + 44);
    target.writeUInt32BE(fields.session, at + 48);
    target.writeUInt32BE(Math.min(fields.unsyncedBefore, unsyncedBeforeMax), at + 52);
    target.writeUInt32BE(crc32c(target.subarray(at + 12, at + recordFieldsBytes)), at + 8);
  }
}

/** Decodes a record header block; undefined unless magic, version, checksum and every field are valid. */
export function parseRecordHeader(block: Buffer): RecordHeader | undefined {
  if (block.length < recordHeaderBytes || block.readUInt32BE(0) !== recordMagic) return undefined;
  if (block.readUInt16BE(4) !== formatVersion) return undefined;
  if (crc32c(block.subarray(12, recordFieldsBytes)) !== block.readUInt32BE(8)) return undefined;
  const kind = kindsByCode[block[6] ?? 0];
  const flags = block[7] ?? 0;
  if (kind === undefined || (flags & ~flagWrap) !== 0 || (flags === flagWrap && kind !== 'marker')) return undefined;
  const header = {
    kind,
    wrap: flags === flagWrap,
    seq: readU64(block, 16),
    timestampMs: readU64(block, 24),
    offset: readU64(block, 32),
    length: block.readUInt32BE(40),
    lun: block.readUInt32BE(44),
    session: block.readUInt32BE(48),
    unsyncedBefore: block.readUInt32BE(52),
    dataCrc: block.readUInt32BE(12),
  };
  const epoch = readEpoch(block, recordEpochAt);
  const instanceId = readText(block, recordInstanceAt);
  const groupId = readText(block, recordGroupAt);
  if (epoch === undefined || instanceId === undefined || groupId === undefined) return undefined;
  if (header.seq < 0 || header.timestampMs < 0 || header.offset < 0) return undefined;
  if (!Number.isSafeInteger(header.offset + header.length)) return undefined;
  if (kindHasData(kind) ? header.length > recordDataBytesMax : header.dataCrc !== 0) return undefined;
  return { ...header, epoch, instanceId, groupId };
}

/** The data CRC of a record: CRC32C of its data, 0 when it has none. */
export function dataCrcOf(data: Buffer | undefined): number {
  return data === undefined || data.length === 0 ? 0 : crc32c(data);
}

// ---- header slot ------------------------------------------------------------
//   0 u32 magic "TWJH"   4 u16 version   6 u8 role   7 u8 flags (1 = clean shutdown, 2 = started again)
//   8 u32 CRC32C of bytes 12..4096   12 u32 session   16 u64 generation
//  24 u64 ring start   32 u64 ring bytes   40 u64 tail seq   48 u64 tail position
//  56 u64 applied seq   64 u8 instance count (1..8)   72 text group id
// 136 instances, newest first, 152 bytes each: text id, u64 first seq, epoch
const slotGroupAt = 72;
const slotInstancesAt = slotGroupAt + textFieldBytes;
const instanceEntryBytes = textFieldBytes + 8 + epochFieldBytes;
assert(slotInstancesAt + instancesMax * instanceEntryBytes <= headerSlotBytes, 'a header slot holds every instance entry');

export interface InstanceEntry {
  id: string;
  /** The first seq written by this instance; records below it belong to older entries. */
  firstSeq: number;
  /** The epoch the instance started in: its records are never older. */
  epoch: Epoch;
}

export interface HeaderState {
  generation: number;
  session: number;
  role: JournalRole;
  clean: boolean;
  /** Started again after a lost header (Journal.startAgain) until the owner acknowledges it. */
  startedAgain?: boolean;
  ringBytes: number;
  tailSeq: number;
  tailPosition: number;
  appliedSeq: number;
  groupId: string;
  /** Newest first; entry 0 is the journal's current instance and epoch. */
  instances: InstanceEntry[];
}

/** The slot a generation is written to: generations alternate between the two slots. */
export function slotOfGeneration(generation: number): 0 | 1 {
  return generation % 2 === 0 ? 0 : 1;
}

export function encodeHeaderSlot(state: HeaderState): Buffer {
  assert(state.instances.length >= 1 && state.instances.length <= instancesMax, 'instance entries are bounded');
  const block = Buffer.alloc(headerSlotBytes);
  block.writeUInt32BE(headerMagic, 0);
  block.writeUInt16BE(formatVersion, 4);
  block[6] = roleCodes[state.role];
  block[7] = (state.clean ? flagClean : 0) | (state.startedAgain === true ? flagStartedAgain : 0);
  block.writeUInt32BE(state.session, 12);
  writeU64(block, state.generation, 16);
  writeU64(block, ringStartBytes, 24);
  writeU64(block, state.ringBytes, 32);
  writeU64(block, state.tailSeq, 40);
  writeU64(block, state.tailPosition, 48);
  writeU64(block, state.appliedSeq, 56);
  block[64] = state.instances.length;
  writeText(block, state.groupId, slotGroupAt);
  state.instances.forEach((entry, i) => {
    const at = slotInstancesAt + i * instanceEntryBytes;
    writeText(block, entry.id, at);
    writeU64(block, entry.firstSeq, at + textFieldBytes);
    writeEpoch(block, entry.epoch, at + textFieldBytes + 8);
  });
  block.writeUInt32BE(crc32c(block.subarray(12)), 8);
  return block;
}

/** Decodes the header slot found at `slot`; undefined unless it is whole, valid and belongs there. */
export function parseHeaderSlot(block: Buffer, slot: 0 | 1): HeaderState | undefined {
  if (block.length !== headerSlotBytes || block.readUInt32BE(0) !== headerMagic) return undefined;
  if (block.readUInt16BE(4) !== formatVersion || crc32c(block.subarray(12)) !== block.readUInt32BE(8)) return undefined;
  const role = rolesByCode[block[6] ?? 255];
  const flags = block[7] ?? 0;
  const generation = readU64(block, 16);
  const ringBytes = readU64(block, 32);
  const count = block[64] ?? 0;
  const groupId = readText(block, slotGroupAt);
  if (role === undefined || (flags & ~(flagClean | flagStartedAgain)) !== 0 || generation < 1 || slotOfGeneration(generation) !== slot) return undefined;
  if (readU64(block, 24) !== ringStartBytes || ringBytes < 4 * recordBytesMax || ringBytes % blockBytes !== 0) return undefined;
  if (count < 1 || count > instancesMax || groupId === undefined) return undefined;
  const instances = parseInstances(block, count);
  const state: HeaderState = {
    generation, session: block.readUInt32BE(12), role, clean: (flags & flagClean) !== 0, startedAgain: (flags & flagStartedAgain) !== 0, ringBytes,
    tailSeq: readU64(block, 40), tailPosition: readU64(block, 48), appliedSeq: readU64(block, 56), groupId,
    instances: instances ?? [],
  };
  if (instances === undefined || state.session < 1 || state.tailSeq < 0 || state.appliedSeq < 0) return undefined;
  const ringEnd = ringStartBytes + ringBytes;
  if (state.tailPosition < ringStartBytes || state.tailPosition >= ringEnd || state.tailPosition % blockBytes !== 0) return undefined;
  return state;
}

function parseInstances(block: Buffer, count: number): InstanceEntry[] | undefined {
  const instances: InstanceEntry[] = [];
  for (let i = 0; i < count; i += 1) {
    const at = slotInstancesAt + i * instanceEntryBytes;
    const id = readText(block, at);
    const firstSeq = readU64(block, at + textFieldBytes);
    const epoch = readEpoch(block, at + textFieldBytes + 8);
    if (id === undefined || firstSeq < 0 || epoch === undefined) return undefined;
    const newer = instances[i - 1];
    if (newer !== undefined && newer.firstSeq < firstSeq) return undefined;
    instances.push({ id, firstSeq, epoch });
  }
  return instances;
}

/** The instance entry that owns `seq`: the newest one that started at or before it. */
export function ownerOf(instances: readonly InstanceEntry[], seq: number): InstanceEntry | undefined {
  return instances.find((entry) => entry.firstSeq <= seq);
}
