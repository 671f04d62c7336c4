// The write-order checker of docs/architecture.md §10, built from what the hosts saw (the
// log of test/helpers/write-order-hosts.py), never from our sequence numbers.
//
// Every 4 KiB block the hosts write carries a stamp naming its volume, block
// and write id under a CRC-32, so each block of an image names the write it
// holds (or holds the initial zeros). The question for an image of the S-VOLs
// of one journal group: is there one instant T at which the hosts could have
// read exactly these blocks? A block holding write w allows
//   issue(w) < T < min { ack(x) : x writes the block, x was acknowledged, x was issued after w ended }
// (after w ended, any write issued to the block comes after w in every order
// the array may choose; once such a write is acknowledged, w is gone). A write
// still in flight or failed never bounds anything from above, so a torn
// in-flight write is allowed, block by block. The initial content is allowed
// until the first acknowledgement of a write to the block.
//
// A crash of the primary array is an event the hosts see too: when it comes
// back, each P-VOL block holds whatever survived (for unflushed writes, old or
// new). A Recovery is that content, read from the P-VOL before the hosts write
// again; it counts as one more write to every block, issued and acknowledged at
// the moment it was read, whose content is what was read.
//
// With one interval per block, the image is consistent iff the largest lower
// bound is below the smallest upper bound. A block may match several events
// (a recovery holding the same write as before the crash), so each block gives
// a union of intervals and a sweep over all their ends finds a point that every
// block covers. Violations name the blocks and writes that rule T out.

import { crc32 } from '@node-rs/crc32';

export const blockBytes = 4096;
const stampMagic = 0x54574f43;
const fillBytes = blockBytes - 24 - 4;

export interface HostWrite {
  id: number;
  volume: number;
  firstBlock: number;
  blocks: number;
  conn: number;
  issueUs: number;
  /** When the hosts saw the ack or the failure; undefined while in flight. */
  endUs: number | undefined;
  acked: boolean;
}

export interface HostFlush {
  id: number;
  volume: number;
  conn: number;
  issueUs: number;
  endUs: number | undefined;
  acked: boolean;
}

export interface HostLog {
  writes: Map<number, HostWrite>;
  flushes: HostFlush[];
}

/** What a P-VOL held when the primary array came back from a crash, read before the hosts wrote again. */
export interface Recovery {
  atUs: number;
  /** One image per volume, in volume order. */
  images: Buffer[];
}

// ---- stamps -------------------------------------------------------------------

/** The block a host write puts at `block` of `volume` (the same bytes the Python hosts make). */
export function stampBlock(volume: number, writeId: number, block: number): Buffer {
  const out = Buffer.alloc(blockBytes);
  out.writeUInt32LE(stampMagic, 0);
  out.writeUInt32LE(volume, 4);
  out.writeBigUInt64LE(BigInt(writeId), 8);
  out.writeBigUInt64LE(BigInt(block), 16);
  const unit = Buffer.alloc(16);
  unit.writeBigUInt64LE(BigInt(writeId), 0);
  unit.writeBigUInt64LE((BigInt(volume) << 48n) | BigInt(block), 8);
  for (let at = 0; at < fillBytes; at += 16) unit.copy(out, 24 + at, 0, Math.min(16, fillBytes - at));
  out.writeUInt32LE(crc32(out.subarray(0, blockBytes - 4)) >>> 0, blockBytes - 4);
  return out;
}

export type BlockContent = { kind: 'initial' } | { kind: 'write'; id: number } | { kind: 'corrupt'; reason: string };

/**
 * Which write a block holds; `corrupt` for anything no host wrote there. The initial content is
 * zeros, or the block of `initial` (the volume's image before the hosts started) when given.
 */
export function decodeBlock(data: Buffer, volume: number, block: number, initial?: Buffer): BlockContent {
  if (data.length !== blockBytes) return { kind: 'corrupt', reason: `a block of ${data.length} bytes` };
  const before = initial?.subarray(block * blockBytes, (block + 1) * blockBytes);
  if (before !== undefined && before.length === blockBytes ? data.equals(before) : isZero(data)) return { kind: 'initial' };
  if (data.readUInt32LE(0) !== stampMagic) {
    return { kind: 'corrupt', reason: before === undefined ? 'neither zeros nor a stamp' : 'neither its initial content nor a stamp' };
  }
  if ((crc32(data.subarray(0, blockBytes - 4)) >>> 0) !== data.readUInt32LE(blockBytes - 4)) return { kind: 'corrupt', reason: 'stamp checksum mismatch (torn or damaged block)' };
  const id = Number(data.readBigUInt64LE(8));
  const stampVolume = data.readUInt32LE(4);
  const stampBlockNumber = Number(data.readBigUInt64LE(16));
  if (stampVolume !== volume || stampBlockNumber !== block) {
    return { kind: 'corrupt', reason: `holds write ${id}'s block for volume ${stampVolume} block ${stampBlockNumber}` };
  }
  return { kind: 'write', id };
}

/** Every 4 KiB-aligned block of `data` that holds a valid stamp (wherever it sits: a journal ring, a drive). */
export function findStamps(data: Buffer): Array<{ volume: number; id: number; block: number }> {
  const found: Array<{ volume: number; id: number; block: number }> = [];
  for (let at = 0; at + blockBytes <= data.length; at += blockBytes) {
    if (data.readUInt32LE(at) !== stampMagic) continue;
    const block = data.subarray(at, at + blockBytes);
    if ((crc32(block.subarray(0, blockBytes - 4)) >>> 0) !== block.readUInt32LE(blockBytes - 4)) continue;
    found.push({ volume: block.readUInt32LE(4), id: Number(block.readBigUInt64LE(8)), block: Number(block.readBigUInt64LE(16)) });
  }
  return found;
}

function isZero(data: Buffer): boolean {
  for (let i = 0; i < data.length; i += 8) if (data.readBigUInt64LE(i) !== 0n) return false;
  return true;
}

// ---- the hosts' log -------------------------------------------------------------

interface LogLine {
  t: 'w' | 'f' | 'a' | 'e';
  id: number;
  v?: number;
  b?: number;
  n?: number;
  c?: number;
  i?: number;
  a?: number;
  e?: number;
}

/** Parses the hosts' JSON-lines log; a torn last line (the writer was mid-line) is ignored. */
export function parseHostLog(text: string): HostLog {
  const writes = new Map<number, HostWrite>();
  const flushes = new Map<number, HostFlush>();
  for (const raw of text.split('\n')) {
    if (raw === '') continue;
    let line: LogLine;
    try {
      line = JSON.parse(raw) as LogLine;
    } catch {
      continue;
    }
    if (line.t === 'w') {
      writes.set(line.id, { id: line.id, volume: line.v!, firstBlock: line.b!, blocks: line.n!, conn: line.c!, issueUs: line.i!, endUs: undefined, acked: false });
    } else if (line.t === 'f') {
      flushes.set(line.id, { id: line.id, volume: line.v!, conn: line.c!, issueUs: line.i!, endUs: undefined, acked: false });
    } else {
      const entry = writes.get(line.id) ?? flushes.get(line.id);
      if (!entry) throw new Error(`host log: completion of request ${line.id}, which was never issued`);
      entry.endUs = line.t === 'a' ? line.a! : line.e!;
      entry.acked = line.t === 'a';
    }
  }
  return { writes, flushes: [...flushes.values()] };
}

// ---- per-block histories ---------------------------------------------------------------

/** One thing that set a block's content: a host write, or a recovery after a crash. */
interface BlockEvent {
  /** The content it leaves: a write id, or 0 for the initial zeros. */
  content: number;
  issueUs: number;
  endUs: number;
  acked: boolean;
  label: string;
}

interface BlockHistory {
  /** Sorted by issue time. */
  events: BlockEvent[];
  /** suffixAckMin[i]: the earliest ack among acknowledged events[i..]. */
  suffixAckMin: number[];
}

const infinity = Number.POSITIVE_INFINITY;

function blockKey(volume: number, block: number): number {
  return volume * 2 ** 32 + block;
}

function buildHistories(log: HostLog, recoveries: readonly Recovery[], initial: readonly Buffer[] | undefined): Map<number, BlockHistory> {
  const lists = new Map<number, BlockEvent[]>();
  const push = (key: number, event: BlockEvent): void => {
    const list = lists.get(key);
    if (list) list.push(event);
    else lists.set(key, [event]);
  };
  for (const w of log.writes.values()) {
    const event: BlockEvent = { content: w.id, issueUs: w.issueUs, endUs: w.endUs ?? infinity, acked: w.acked, label: `write ${w.id}` };
    for (let b = w.firstBlock; b < w.firstBlock + w.blocks; b++) push(blockKey(w.volume, b), event);
  }
  recoveries.forEach((recovery, r) => {
    recovery.images.forEach((image, volume) => {
      for (let b = 0; b < image.length / blockBytes; b++) {
        const content = decodeBlock(image.subarray(b * blockBytes, (b + 1) * blockBytes), volume, b, initial?.[volume]);
        if (content.kind === 'corrupt') continue; // reported by checkFlushed
        const id = content.kind === 'write' ? content.id : 0;
        if (id === 0 && !lists.has(blockKey(volume, b))) continue; // never written: nothing changes
        push(blockKey(volume, b), { content: id, issueUs: recovery.atUs, endUs: recovery.atUs, acked: true, label: `recovery ${r + 1} (after a crash of the primary)` });
      }
    });
  });
  const histories = new Map<number, BlockHistory>();
  for (const [key, events] of lists) {
    events.sort((x, y) => x.issueUs - y.issueUs);
    const suffixAckMin = new Array<number>(events.length + 1).fill(infinity);
    for (let i = events.length - 1; i >= 0; i--) {
      const e = events[i]!;
      suffixAckMin[i] = Math.min(suffixAckMin[i + 1]!, e.acked ? e.endUs : infinity);
    }
    histories.set(key, { events, suffixAckMin });
  }
  return histories;
}

/** The earliest ack of an event to the block issued after `afterUs` (infinity if none). */
function supersededAt(history: BlockHistory, afterUs: number): number {
  let lo = 0;
  let hi = history.events.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (history.events[mid]!.issueUs > afterUs) hi = mid;
    else lo = mid + 1;
  }
  return history.suffixAckMin[lo]!;
}

// ---- the check -------------------------------------------------------------------------

interface Interval {
  lowUs: number;
  highUs: number;
  why: string;
}

export interface CheckInput {
  log: HostLog;
  /** The images to check (S-VOLs, or P-VOLs), one per volume, in volume order. */
  images: Buffer[];
  /** Crashes of the primary, oldest first. */
  recoveries?: readonly Recovery[];
  /** When the images had been read: T is before it. */
  takenUs?: number;
  /** T must be after this too (a P-VOL must hold every write acknowledged before it). */
  afterUs?: number;
  /** The volumes' content before the hosts wrote (default: zeros). */
  initial?: Buffer[];
}

export interface CheckResult {
  consistent: boolean;
  /** An instant that fits every block (µs on CLOCK_MONOTONIC). */
  instantUs: number | undefined;
  violations: string[];
  blocksChecked: number;
  /** Blocks that hold a host write (not the initial zeros). */
  blocksWritten: number;
  /** Distinct host writes the image holds. */
  writesHeld: number;
}

/** Is there one instant T at which the hosts could have read every block of the images? */
export function checkWriteOrder(input: CheckInput): CheckResult {
  const histories = buildHistories(input.log, input.recoveries ?? [], input.initial);
  const violations: string[] = [];
  const perBlock: Array<{ where: string; intervals: Interval[] }> = [];
  const held = new Set<number>();
  let blocksWritten = 0;
  input.images.forEach((image, volume) => {
    for (let b = 0; b < image.length / blockBytes; b++) {
      const where = `volume ${volume} block ${b}`;
      const content = decodeBlock(image.subarray(b * blockBytes, (b + 1) * blockBytes), volume, b, input.initial?.[volume]);
      if (content.kind === 'corrupt') {
        violations.push(`${where}: ${content.reason}`);
        continue;
      }
      const history = histories.get(blockKey(volume, b));
      if (content.kind === 'write') {
        blocksWritten += 1;
        held.add(content.id);
      }
      if (!history) {
        if (content.kind === 'write') violations.push(`${where} holds write ${content.id}, which the hosts never wrote there`);
        continue; // initial content of a block nobody wrote: allowed at any instant
      }
      const all = allowedIntervals(history, content.kind === 'write' ? content.id : 0);
      const afterUs = input.afterUs;
      const intervals = afterUs === undefined ? all : all.map((iv) => ({ ...iv, lowUs: Math.max(iv.lowUs, afterUs) })).filter((iv) => iv.lowUs < iv.highUs);
      if (intervals.length === 0 && all.length > 0) {
        violations.push(`${where} holds ${content.kind === 'write' ? `write ${content.id}` : 'the initial zeros'}, which an acknowledged write had replaced by ${fmt(afterUs ?? 0)}: an acknowledged write is lost`);
        continue;
      }
      if (intervals.length === 0) {
        violations.push(`${where} holds ${content.kind === 'write' ? `write ${content.id}` : 'the initial zeros'}, which the hosts never wrote there`);
        continue;
      }
      perBlock.push({ where, intervals });
    }
  });
  const takenUs = input.takenUs ?? infinity;
  const instantUs = violations.length === 0 ? findInstant(perBlock, takenUs) : undefined;
  if (violations.length === 0 && instantUs === undefined) violations.push(...explain(perBlock, takenUs));
  return { consistent: violations.length === 0, instantUs, violations, blocksChecked: input.images.reduce((n, i) => n + i.length / blockBytes, 0), blocksWritten, writesHeld: held.size };
}

function allowedIntervals(history: BlockHistory, content: number): Interval[] {
  const intervals: Interval[] = [];
  if (content === 0) intervals.push({ lowUs: -infinity, highUs: history.suffixAckMin[0]!, why: 'the initial zeros' });
  for (const event of history.events) {
    if (event.content !== content) continue;
    const highUs = supersededAt(history, event.endUs);
    if (event.issueUs < highUs) intervals.push({ lowUs: event.issueUs, highUs, why: event.label });
  }
  return intervals;
}

/** A point inside one interval of every block and before `beforeUs`; undefined if there is none. Intervals are open. */
function findInstant(perBlock: Array<{ intervals: Interval[] }>, beforeUs: number): number | undefined {
  if (perBlock.length === 0) return Number.isFinite(beforeUs) ? beforeUs - 1 : 0;
  const points: Array<{ at: number; delta: number }> = [];
  for (const block of perBlock) {
    const clipped = block.intervals.map((iv) => ({ ...iv, highUs: Math.min(iv.highUs, beforeUs) }));
    for (const iv of mergeIntervals(clipped)) points.push({ at: iv.lowUs, delta: +1 }, { at: iv.highUs, delta: -1 });
  }
  points.sort((x, y) => x.at - y.at || x.delta - y.delta); // at a shared end, close before opening: open intervals
  let covered = 0;
  for (let i = 0; i < points.length; i++) {
    covered += points[i]!.delta;
    const next = points[i + 1];
    if (covered === perBlock.length && next !== undefined && next.at > points[i]!.at) {
      const low = points[i]!.at;
      return Number.isFinite(low) ? low + Math.min(1, (next.at - low) / 2) : next.at - 1;
    }
  }
  return undefined;
}

function mergeIntervals(intervals: Interval[]): Interval[] {
  const sorted = intervals.filter((iv) => iv.lowUs < iv.highUs).sort((x, y) => x.lowUs - y.lowUs);
  const out: Interval[] = [];
  for (const iv of sorted) {
    const last = out[out.length - 1];
    if (last && iv.lowUs < last.highUs) last.highUs = Math.max(last.highUs, iv.highUs);
    else out.push({ ...iv });
  }
  return out;
}

/** Names the blocks that rule every instant out: the one that must be latest against the one that must be earliest. */
function explain(perBlock: Array<{ where: string; intervals: Interval[] }>, beforeUs: number): string[] {
  let late: { where: string; iv: Interval } | undefined;
  let early: { where: string; iv: Interval } | undefined;
  for (const block of perBlock) {
    const lowest = block.intervals.reduce((a, b) => (b.lowUs < a.lowUs ? b : a));
    const highest = block.intervals.reduce((a, b) => (b.highUs > a.highUs ? b : a));
    if (!late || lowest.lowUs > late.iv.lowUs) late = { where: block.where, iv: lowest };
    if (!early || highest.highUs < early.iv.highUs) early = { where: block.where, iv: highest };
  }
  if (late && early && late.iv.lowUs >= Math.min(early.iv.highUs, beforeUs)) {
    if (late.iv.lowUs >= beforeUs) return [`${late.where} holds ${late.iv.why}, issued at ${fmt(late.iv.lowUs)}, after the image was read (${fmt(beforeUs)})`];
    return [
      `no single instant fits: ${late.where} holds ${late.iv.why}, issued at ${fmt(late.iv.lowUs)}, ` +
        `but ${early.where} holds ${early.iv.why}, which a later write to it had replaced by ${fmt(early.iv.highUs)} (acknowledged by then)`,
    ];
  }
  return [`no single instant fits every block (each block allows several intervals; none is shared by all ${perBlock.length} blocks)`];
}

function fmt(us: number): string {
  return Number.isFinite(us) ? `t=${(us / 1e6).toFixed(6)}s` : String(us);
}

// ---- durability ----------------------------------------------------------------------------

/**
 * Nothing flushed is lost: after a crash at `crashUs`, every block must hold a write not older
 * than the newest write to it that a completed FLUSH covered (acknowledged, then a FLUSH to the
 * same volume issued after that and acknowledged before the crash; Twinstore advertises
 * multi-conn, so a FLUSH on any connection counts). Only writes and FLUSHes after `sinceUs`
 * count: a FLUSH after an earlier crash does not bring back what that crash lost.
 */
export function checkFlushed(log: HostLog, images: Buffer[], window: { crashUs: number; sinceUs: number; initial?: Buffer[] }): { violations: string[]; flushedWrites: number } {
  const { crashUs, sinceUs } = window;
  const flushesByVolume = new Map<number, HostFlush[]>();
  for (const f of log.flushes) {
    if (!f.acked || f.endUs === undefined || f.endUs >= crashUs || f.issueUs <= sinceUs) continue;
    const list = flushesByVolume.get(f.volume) ?? [];
    list.push(f);
    flushesByVolume.set(f.volume, list);
  }
  const durable = new Map<number, HostWrite[]>();
  const coveredBy = new Map<number, HostFlush>();
  let flushedWrites = 0;
  for (const w of log.writes.values()) {
    if (!w.acked || w.endUs === undefined || w.endUs <= sinceUs) continue;
    const covered = (flushesByVolume.get(w.volume) ?? []).find((f) => f.issueUs > w.endUs!);
    if (!covered) continue;
    coveredBy.set(w.id, covered);
    flushedWrites += 1;
    for (let b = w.firstBlock; b < w.firstBlock + w.blocks; b++) {
      const key = blockKey(w.volume, b);
      const list = durable.get(key) ?? [];
      list.push(w);
      durable.set(key, list);
    }
  }
  const violations: string[] = [];
  images.forEach((image, volume) => {
    for (let b = 0; b < image.length / blockBytes; b++) {
      const flushed = durable.get(blockKey(volume, b));
      if (!flushed) continue;
      const content = decodeBlock(image.subarray(b * blockBytes, (b + 1) * blockBytes), volume, b, window.initial?.[volume]);
      const where = `volume ${volume} block ${b}`;
      if (content.kind === 'corrupt') {
        violations.push(`${where}: ${content.reason}`);
        continue;
      }
      const holder = content.kind === 'write' ? log.writes.get(content.id) : undefined;
      const holderEndUs = content.kind === 'initial' ? -infinity : holder?.endUs ?? infinity;
      const newer = flushed.find((w) => w.issueUs > holderEndUs);
      if (newer) {
        const flush = coveredBy.get(newer.id)!;
        violations.push(`${where} holds ${content.kind === 'write' ? `write ${content.id}` : 'the initial zeros'}, older than write ${newer.id} ` +
          `(acknowledged at ${fmt(newer.endUs!)}; FLUSH ${flush.id} issued at ${fmt(flush.issueUs)}, acknowledged at ${fmt(flush.endUs!)}; crash at ${fmt(crashUs)})`);
      }
    }
  });
  return { violations, flushedWrites };
}
