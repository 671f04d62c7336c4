// What `pair display` shows of a master group: per pair its status (SWAP/draining during a
// planned swap's drain), copy progress and what is left of it, journal use, lag (records,
// bytes, age of the oldest unapplied record), the regions its bitmap holds for a resync, the
// S-VOLs' consistency point and the command that recovers a suspended pair, from the parts'
// state as it is now. A FENCED group is shown the way its peer (the primary now) shows it:
// the direction, P-VOL and S-VOL from there, so both sites name the same primary.

import type { Journal } from '../../journal/index.js';
import { formatEpoch, type GroupMeta, type PairDisplay } from '../model.js';
import { recoveryHint } from '../recovery-hint.js';
import type { UnappliedQueue } from '../unapplied.js';
import type { Pvols } from './pvols.js';
import type { ReceiverCursors } from './serve.js';

export interface DisplayState {
  meta: GroupMeta;
  arrayId: string;
  journal: Journal;
  unapplied: UnappliedQueue;
  receiver: ReceiverCursors;
  consistencyTimeMs: number | undefined;
  draining: boolean;
  peerConnected: boolean;
  nowMs: number;
  /** Each pair's P-VOL with its bitmap (the regions a resync copies). */
  pvols: Pvols;
}

export function pairDisplay(state: DisplayState): PairDisplay[] {
  const { meta, journal, unapplied, receiver, draining, peerConnected } = state;
  const lagRecords = Math.max(0, journal.nextSeq - receiver.appliedSeq);
  const lagBytes = unapplied.bytes;
  const oldest = unapplied.oldest;
  const lagSeconds = oldest ? Math.max(0, (state.nowMs - oldest.timestampMs) / 1000) : 0;
  const consistencySeq = receiver.appliedSeq - 1;
  const fenced = meta.pairs.every((p) => p.status === 'FENCED');
  return meta.pairs.map((pair) => {
    const bitmap = state.pvols.get(pair.pvolLun)?.bitmap;
    const pendingRegions = bitmap?.size ?? 0;
    const local = `${state.arrayId}:${pair.pvolName}`;
    const remote = `${meta.peer}:${pair.svolName}`;
    const statusReason = draining && pair.status === 'PAIR' ? 'swap: draining' : pair.statusReason ?? (peerConnected ? null : 'link-down');
    return {
      group: meta.name,
      direction: fenced ? `${meta.peer}->${state.arrayId}` : `${state.arrayId}->${meta.peer}`,
      epoch: formatEpoch(meta.epoch),
      pvol: fenced ? remote : local,
      svol: fenced ? local : remote,
      status: draining && pair.status === 'PAIR' ? 'SWAP' : pair.status,
      statusReason,
      copyPercent: pair.status !== 'COPY' ? 100
        : pair.copyKind === 'resync' ? Math.min(99, Math.floor((100 * (pair.copyDoneBytes ?? 0)) / Math.max(1, pair.copyTotalBytes ?? 0)))
          : Math.floor((100 * pair.copyOffset) / Math.max(1, pair.sizeBytes)),
      journalUsedPercent: Math.round((1000 * journal.usedBytes) / Math.max(1, journal.capacityBytes)) / 10,
      lagRecords,
      lagBytes,
      lagSeconds: Math.round(lagSeconds * 1000) / 1000,
      consistencySeq,
      consistencyTime: state.consistencyTimeMs === undefined ? null : new Date(state.consistencyTimeMs).toISOString(),
      restoring: receiver.storedSeq > receiver.appliedSeq,
      copyBytes: pair.copyDoneBytes ?? 0,
      copyRemainingBytes: pair.status !== 'COPY' ? 0
        : pair.copyKind === 'resync' ? Math.max(0, (pair.copyTotalBytes ?? 0) - (pair.copyDoneBytes ?? 0)) : Math.max(0, pair.sizeBytes - pair.copyOffset),
      copyRateBytesPerSecond: null,
      copyEtaSeconds: null,
      pendingRegions,
      pendingBytes: bitmap === undefined ? 0 : Math.min(pendingRegions * bitmap.regionBytes, pair.sizeBytes),
      restorePaused: receiver.restorePaused,
      svolConsistent: pair.status === 'COPY' ? false : null,
      recovery: recoveryHint({ group: meta.name, status: pair.status, statusReason, arrayId: state.arrayId, peer: meta.peer, divergentWrites: meta.divergence?.writes ?? 0 }),
    };
  });
}
