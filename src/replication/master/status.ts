// The pair statuses of a master group and every change between them (docs/architecture.md §6),
// as synchronous steps on the group document: the group (group.ts) decides when to take one and
// persists it; nothing else writes a pair's status. Also the two questions every host write asks:
// may the volume be written at all (writeRefusal), and does the write get a record
// (journalsHostWrite) or go the bitmap way.

import { TwinstoreError } from '../../errors.js';
import type { GroupMeta, PairMeta } from '../model.js';

/** Some pair replicates (COPY or PAIR): its host writes are journaled and sent. */
export function replicating(meta: GroupMeta): boolean {
  return meta.pairs.some((p) => p.status === 'PAIR' || p.status === 'COPY');
}

/** The pair replicates: its host writes and re-sent regions get records. */
export function journals(pair: PairMeta): boolean {
  return pair.status === 'COPY' || pair.status === 'PAIR';
}

/**
 * Whether a host write, already admitted, gets a record. SWAP counts: a write that passed the
 * gate before a freeze began (it may have waited on a range lock meanwhile) is one the freeze
 * waits for, so its record falls below the swap's end seq. Sent to the bitmap instead, it was
 * acknowledged and never reached the new primary (simulator seeds 52, 72, 87).
 */
export function journalsHostWrite(pair: PairMeta): boolean {
  return journals(pair) || pair.status === 'SWAP';
}

/**
 * Why host writes are refused here (VOLUME_FENCED), or undefined: the group is demoted
 * (`stopped`), FENCED, held by a swap (SWAP), or refuses writes (fence data) until a resync.
 */
export function writeRefusal(meta: GroupMeta, stopped: boolean): TwinstoreError | undefined {
  if (stopped) return new TwinstoreError('VOLUME_FENCED', `group ${meta.name} no longer takes host writes here (its role changed)`);
  const held = meta.pairs.find((p) => p.status === 'FENCED' || p.status === 'SWAP');
  if (held) return new TwinstoreError('VOLUME_FENCED', `group ${meta.name} is ${held.status}${held.statusReason ? ` (${held.statusReason})` : ''}: host writes are refused`);
  if (meta.writesRefused) return new TwinstoreError('VOLUME_FENCED', `group ${meta.name}: ${meta.writesRefused}; host writes are refused until pair resync`);
  return undefined;
}

/** PSUE for every pair; false (nothing changed) when every pair is suspended or split already. */
export function toSuspended(meta: GroupMeta, reason: string): boolean {
  if (meta.pairs.every((p) => p.status === 'PSUE' || p.status === 'PSUS')) return false;
  for (const pair of meta.pairs) {
    pair.status = 'PSUE';
    pair.statusReason = reason;
  }
  return true;
}

/** A COPY pair whose copy the receiver has applied through its last record turns PAIR; the names of those that did. */
export function toCopied(meta: GroupMeta, receiverApplied: number): string[] {
  const done: string[] = [];
  for (const pair of meta.pairs) {
    if (pair.status === 'COPY' && pair.copyLastSeq !== null && receiverApplied > pair.copyLastSeq) {
      pair.status = 'PAIR';
      pair.statusReason = null;
      done.push(pair.pvolName);
    }
  }
  return done;
}

/** pair split: every pair PSUS, and `splitSeq` (the journal's next seq) in the same step: no record comes after it. */
export function toSplit(meta: GroupMeta, splitSeq: number): void {
  const notPair = meta.pairs.find((p) => p.status !== 'PAIR');
  if (notPair) throw new TwinstoreError('PAIR_INVALID', `group ${meta.name}: ${notPair.pvolName} is ${notPair.status}; only PAIR can be split`, { field: 'group' });
  for (const pair of meta.pairs) {
    pair.status = 'PSUS';
    pair.statusReason = 'split';
  }
  meta.splitSeq = splitSeq;
}

/** A resync may start (PSUS, PSUE or SSWS); true when every pair was suspended (PSUE). */
export function checkResyncable(meta: GroupMeta): boolean {
  const wrong = meta.pairs.find((p) => p.status !== 'PSUS' && p.status !== 'PSUE' && p.status !== 'SSWS');
  if (wrong) throw new TwinstoreError('PAIR_INVALID', `group ${meta.name}: ${wrong.pvolName} is ${wrong.status}; resync needs PSUS, PSUE or SSWS`, { field: 'group' });
  return meta.pairs.every((p) => p.status === 'PSUE');
}

/** pair resync: every pair COPY (a resync copy, from nothing done), and what the split, fence and divergence left is cleared. */
export function toResync(meta: GroupMeta): void {
  for (const pair of meta.pairs) {
    pair.status = 'COPY';
    pair.statusReason = null;
    pair.copyKind = 'resync';
    pair.copyLastSeq = null;
    pair.copyDoneBytes = 0;
  }
  meta.splitSeq = null;
  meta.writesRefused = null;
  meta.trackedWrites = false;
  meta.reclaiming = false;
  meta.divergence = null;
}

/** Why a planned swap cannot start (it needs every pair PAIR; `orSwap`: or SWAP already, a freeze asked again), or undefined. */
export function swapRefusal(meta: GroupMeta, orSwap: boolean): TwinstoreError | undefined {
  const bad = meta.pairs.find((p) => p.status !== 'PAIR' && !(orSwap && p.status === 'SWAP'));
  return bad ? new TwinstoreError('PAIR_INVALID', `group ${meta.name}: ${bad.pvolName} is ${bad.status}; a planned swap needs PAIR`, { field: 'group' }) : undefined;
}

/** A re-send unit being appended refuses a freeze: its end marker would fall past the end seq, which the receiver could never apply up to. */
export function resendingRefusal(meta: GroupMeta, resending: boolean): TwinstoreError | undefined {
  return resending ? new TwinstoreError('PAIR_INVALID', `group ${meta.name} is still re-sending its active regions after an unclean stop; retry the swap once it is done`, { field: 'group' }) : undefined;
}

/** The freeze: every pair SWAP (host writes held, then refused). */
export function toFrozen(meta: GroupMeta): void {
  for (const pair of meta.pairs) {
    pair.status = 'SWAP';
    pair.statusReason = 'swap: frozen';
  }
}

/** A write in flight during the freeze suspended the group: why the swap is refused, or undefined. */
export function thawedRefusal(meta: GroupMeta): TwinstoreError | undefined {
  const left = meta.pairs.find((p) => p.status !== 'SWAP');
  return left ? new TwinstoreError('PAIR_INVALID', `group ${meta.name}: ${left.pvolName} became ${left.status} during the freeze; the swap is refused`, { field: 'group' }) : undefined;
}

/** Why a drain ends here ('stopped', or a status that is neither PAIR nor SWAP), or undefined. */
export function drainEnd(meta: GroupMeta, stopped: boolean): string | undefined {
  return stopped ? 'stopped' : meta.pairs.find((p) => p.status !== 'PAIR' && p.status !== 'SWAP')?.status;
}

/** An aborted swap: every SWAP pair PAIR again; false when none was. */
export function toThawed(meta: GroupMeta): boolean {
  let changed = false;
  for (const pair of meta.pairs) {
    if (pair.status !== 'SWAP') continue;
    pair.status = 'PAIR';
    pair.statusReason = null;
    changed = true;
  }
  return changed;
}

/** The peer took over with epoch `newer`: every pair FENCED, the divergence noted, a reclaim here overtaken. */
export function toFenced(meta: GroupMeta, newer: string, divergence: { seq: number; writes: number }): void {
  for (const pair of meta.pairs) {
    pair.status = 'FENCED';
    pair.statusReason = `newer epoch ${newer}` + (divergence.writes > 0 ? `; ${divergence.writes} host writes here past seq ${divergence.seq - 1} (diverged)` : '');
  }
  meta.divergence = divergence;
  // A reclaim under way here (resync --discard of the peer) is overtaken by the newer epoch:
  // this side is fenced now, and a resync --discard starts it afresh (sim seed 163 ran it
  // forever against the stale flag).
  meta.reclaiming = false;
}

/**
 * The receiver has been silent `silentMs`: past fenceAfterMs (fence data) a replicating or
 * suspended group refuses host writes ('refuse-writes', once); past suspendAfterMs a replicating
 * group suspends link-down ('suspend'); else nothing yet.
 */
export function silenceStep(meta: GroupMeta, silentMs: number, after: { suspendAfterMs: number; fenceAfterMs: number }): 'refuse-writes' | 'suspend' | undefined {
  const replicates = replicating(meta);
  if (silentMs >= after.fenceAfterMs && !meta.writesRefused && (replicates || meta.pairs.some((p) => p.status === 'PSUE'))) return 'refuse-writes';
  if (replicates && silentMs >= after.suspendAfterMs) return 'suspend';
  return undefined;
}

/** Fence data: host writes refused from now on; a suspended group's reason says so too. */
export function toWritesRefused(meta: GroupMeta, reason: string): void {
  meta.writesRefused = reason;
  if (replicating(meta)) return;
  for (const pair of meta.pairs) if (pair.status === 'PSUE') pair.statusReason = `${pair.statusReason ?? 'link-down'}; ${reason}: host writes refused`;
}
