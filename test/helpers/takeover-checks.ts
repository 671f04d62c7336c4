// What the hosts saw across a swap or a takeover, for the scenario tests of
// issue 4 (test/replication/swap-under-load.test.ts, write-order-takeover.test.ts):
//
// - the outage: from the hosts' log (write-order-hosts.py with alternates),
//   the acknowledged writes in ack order, cut where the array that acked them
//   changes; the gap at each cut is the time from the last write the old
//   primary acked to the first the new one acked;
// - nothing acknowledged lost: every block holds its newest acknowledged
//   write or a write issued after that one ended (stronger than the
//   write-order check, which allows any past instant; right after a planned
//   swap, or once lag is 0, nothing acknowledged may be missing);
// - the controls that show a check can fail on these very images: one block
//   set back to a write that a later acknowledged write had replaced long
//   before the newest write the images hold was issued (the write-order
//   checker must then find no instant), and one block's acknowledged write
//   removed (the "nothing acknowledged lost" check must name it).
// Also the verbs both tests use: takeover through the API and a volume's role.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { RunningArray } from './array.js';
import type { TakeoverResult } from '../../src/replication/index.js';
import { blockBytes, decodeBlock, stampBlock, type HostLog, type HostWrite, type Recovery } from './write-order.js';

/** What `twinstore takeover --json` prints (the API's contract, src/replication/manager.ts). */
export type TakeoverAnswer = TakeoverResult;

/** POST /v1/takeover {group} on `array` (what `twinstore takeover --json` prints); asserts it succeeded. */
export async function takeover(array: RunningArray, group = 'g1'): Promise<TakeoverAnswer> {
  const response = await array.api('POST', '/v1/takeover', { group, force: false });
  assert.equal(response.status, 200, JSON.stringify(response.json));
  return response.json as TakeoverAnswer;
}

/** A volume's role from `volume list` on its array. */
export async function volumeRole(array: RunningArray, name: string): Promise<string> {
  const response = await array.api('GET', '/v1/volumes');
  assert.equal(response.status, 200, JSON.stringify(response.json));
  const volume = (response.json as { volumes: Array<{ name: string; role: string }> }).volumes.find((v) => v.name === name);
  assert.ok(volume, `no volume ${name} on ${array.ready!.array}`);
  return volume.role;
}

// ---- the outage ---------------------------------------------------------------------------

export interface AckedWrite {
  id: number;
  conn: number;
  /** Index of the URI the write went to: 0 the first array, 1 its alternate. */
  site: number;
  issueUs: number;
  ackUs: number;
}

/** The acknowledged writes of a hosts' log (with alternates, so each write line names its site), in ack order. */
export function ackedWrites(logFile: string): AckedWrite[] {
  const issued = new Map<number, { conn: number; site: number; issueUs: number }>();
  const acked: AckedWrite[] = [];
  for (const raw of fs.readFileSync(logFile, 'utf8').split('\n')) {
    let line: { t: string; id: number; c?: number; s?: number; i?: number; a?: number };
    try {
      line = JSON.parse(raw) as typeof line;
    } catch {
      continue; // empty or torn last line
    }
    if (line.t === 'w') issued.set(line.id, { conn: line.c!, site: line.s ?? 0, issueUs: line.i! });
    if (line.t === 'a' && issued.has(line.id)) acked.push({ id: line.id, ...issued.get(line.id)!, ackUs: line.a! });
  }
  return acked.sort((x, y) => x.ackUs - y.ackUs);
}

export interface Switch {
  from: number;
  to: number;
  /** The last write the old site acknowledged, and the first the new one did (µs, CLOCK_MONOTONIC). */
  lastAckUs: number;
  firstAckUs: number;
  outageMs: number;
  /** The longest time one connection went from its last ack on the old site to its first on the new one. */
  connectionOutageMsMax: number;
}

export interface Outages {
  /** Runs of acks from one site, in order: [site, acks]. */
  runs: Array<[number, number]>;
  switches: Switch[];
  /** The longest gap between two consecutive acks anywhere in the log. */
  gapMsMax: number;
}

export function outages(acked: readonly AckedWrite[]): Outages {
  const runs: Array<[number, number]> = [];
  const switches: Switch[] = [];
  let gapMsMax = 0;
  acked.forEach((w, i) => {
    const previous = acked[i - 1];
    if (previous) gapMsMax = Math.max(gapMsMax, (w.ackUs - previous.ackUs) / 1000);
    const run = runs[runs.length - 1];
    if (run && run[0] === w.site) {
      run[1] += 1;
      return;
    }
    runs.push([w.site, 1]);
    if (previous) switches.push(switchAt(acked, i));
  });
  return { runs, switches, gapMsMax };
}

function switchAt(acked: readonly AckedWrite[], first: number): Switch {
  const before = acked[first - 1]!;
  const after = acked[first]!;
  const lastByConn = new Map<number, number>();
  const firstByConn = new Map<number, number>();
  for (let i = first - 1; i >= 0 && acked[i]!.site === before.site; i--) if (!lastByConn.has(acked[i]!.conn)) lastByConn.set(acked[i]!.conn, acked[i]!.ackUs);
  for (let i = first; i < acked.length && acked[i]!.site === after.site; i++) if (!firstByConn.has(acked[i]!.conn)) firstByConn.set(acked[i]!.conn, acked[i]!.ackUs);
  let connectionOutageMsMax = 0;
  for (const [conn, lastUs] of lastByConn) {
    const firstUs = firstByConn.get(conn);
    if (firstUs !== undefined) connectionOutageMsMax = Math.max(connectionOutageMsMax, (firstUs - lastUs) / 1000);
  }
  return { from: before.site, to: after.site, lastAckUs: before.ackUs, firstAckUs: after.ackUs, outageMs: (after.ackUs - before.ackUs) / 1000, connectionOutageMsMax };
}

// ---- nothing acknowledged lost -----------------------------------------------------------------

function blockWrites(log: HostLog): Map<string, HostWrite[]> {
  const byBlock = new Map<string, HostWrite[]>();
  for (const w of log.writes.values()) {
    for (let b = w.firstBlock; b < w.firstBlock + w.blocks; b++) {
      const key = `${w.volume}:${b}`;
      const list = byBlock.get(key);
      if (list) list.push(w);
      else byBlock.set(key, [w]);
    }
  }
  return byBlock;
}

/**
 * Every block holds a write not older than any acknowledged write to it: no acknowledged write
 * x was issued after the held write had ended (then x comes after it in every order). Returns
 * the violations, naming the block, what it holds and the acknowledged write it lost.
 */
export function checkNothingAckedLost(log: HostLog, images: readonly Buffer[], initial?: readonly Buffer[]): string[] {
  const byBlock = blockWrites(log);
  const violations: string[] = [];
  images.forEach((image, volume) => {
    for (let b = 0; b < image.length / blockBytes; b++) {
      const writes = byBlock.get(`${volume}:${b}`);
      if (!writes) continue;
      const content = decodeBlock(image.subarray(b * blockBytes, (b + 1) * blockBytes), volume, b, initial?.[volume]);
      if (content.kind === 'corrupt') {
        violations.push(`volume ${volume} block ${b}: ${content.reason}`);
        continue;
      }
      const held = content.kind === 'write' ? log.writes.get(content.id) : undefined;
      if (content.kind === 'write' && (!held || b < held.firstBlock || b >= held.firstBlock + held.blocks)) {
        violations.push(`volume ${volume} block ${b} holds write ${content.id}, which the hosts never wrote there`);
        continue;
      }
      const heldEndUs = held === undefined ? Number.NEGATIVE_INFINITY : held.endUs ?? Number.POSITIVE_INFINITY;
      const lost = writes.find((w) => w.acked && w.issueUs > heldEndUs);
      if (lost) {
        violations.push(`volume ${volume} block ${b} holds ${held ? `write ${held.id}` : 'its initial content'}, but write ${lost.id} (issued after that ended) was acknowledged`);
      }
    }
  });
  return violations;
}

/** The ids of the host writes the images hold. */
export function heldWrites(images: readonly Buffer[], initial?: readonly Buffer[]): Set<number> {
  const held = new Set<number>();
  for (const [volume, image] of images.entries()) {
    for (let b = 0; b < image.length / blockBytes; b++) {
      const id = heldAt(images, volume, b, initial);
      if (id !== undefined) held.add(id);
    }
  }
  return held;
}

// ---- controls -------------------------------------------------------------------------------

/** The write a block of `images` holds, if it holds one. */
function heldAt(images: readonly Buffer[], volume: number, block: number, initial?: readonly Buffer[]): number | undefined {
  const content = decodeBlock(images[volume]!.subarray(block * blockBytes, (block + 1) * blockBytes), volume, block, initial?.[volume]);
  return content.kind === 'write' ? content.id : undefined;
}

/**
 * The images with one block set back to an older write w that an acknowledged write x had
 * replaced (x issued after w ended) before the newest write the images hold was issued, and
 * that no recovery holds there: the write-order checker must then find no instant.
 */
export function staleBlockControl(log: HostLog, images: readonly Buffer[], options: { initial?: readonly Buffer[]; recoveries?: readonly Recovery[] } = {}): { images: Buffer[]; what: string } | undefined {
  let newest: { volume: number; block: number; w: HostWrite } | undefined;
  for (const [volume, image] of images.entries()) {
    for (let b = 0; b < image.length / blockBytes; b++) {
      const id = heldAt(images, volume, b, options.initial);
      const w = id === undefined ? undefined : log.writes.get(id);
      if (w && (!newest || w.issueUs > newest.w.issueUs)) newest = { volume, block: b, w };
    }
  }
  if (!newest) return undefined;
  const { volume: newestVolume, block: newestBlock, w: newestWrite } = newest;
  const limitUs = newestWrite.issueUs;
  for (const [key, writes] of blockWrites(log)) {
    const [volume, block] = key.split(':').map(Number) as [number, number];
    if (volume >= images.length || (volume === newestVolume && block === newestBlock)) continue;
    const inRecovery = (id: number): boolean => (options.recoveries ?? []).some((r) => heldAt(r.images, volume, block, options.initial) === id);
    for (const x of writes) {
      if (!x.acked || x.endUs === undefined || x.endUs >= limitUs) continue;
      const w = writes.find((old) => old.endUs !== undefined && old.endUs < x.issueUs && !inRecovery(old.id));
      if (!w) continue;
      const mutated = images.map((image) => Buffer.from(image));
      stampBlock(volume, w.id, block).copy(mutated[volume]!, block * blockBytes);
      return { images: mutated, what: `volume ${volume} block ${block} set back to write ${w.id} (replaced by acknowledged write ${x.id} before write ${newestWrite.id} was issued)` };
    }
  }
  return undefined;
}

/** The images with the block holding the most recently acknowledged write set to its initial content. */
export function lostAckControl(log: HostLog, images: readonly Buffer[], initial?: readonly Buffer[]): { images: Buffer[]; what: string } | undefined {
  let best: { volume: number; block: number; w: HostWrite } | undefined;
  for (const [volume, image] of images.entries()) {
    for (let b = 0; b < image.length / blockBytes; b++) {
      const id = heldAt(images, volume, b, initial);
      const w = id === undefined ? undefined : log.writes.get(id);
      if (w?.acked && (!best || w.endUs! > best.w.endUs!)) best = { volume, block: b, w };
    }
  }
  if (!best) return undefined;
  const { volume, block, w } = best;
  const mutated = images.map((image) => Buffer.from(image));
  const original = initial?.[volume]?.subarray(block * blockBytes, (block + 1) * blockBytes) ?? Buffer.alloc(blockBytes);
  original.copy(mutated[volume]!, block * blockBytes);
  return { images: mutated, what: `volume ${volume} block ${block}: acknowledged write ${w.id} removed` };
}
