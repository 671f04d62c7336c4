// What `pair display` shows of a master group: per pair its status (SWAP/draining during a
// planned swap's drain), copy progress, journal use, lag (records, bytes, age of the oldest
// unapplied record) and the S-VOLs' consistency point, from the parts' state as it is now.

import type { Journal } from '../../journal/index.js';
import { formatEpoch, type GroupMeta, type PairDisplay } from '../model.js';
import type { UnappliedQueue } from '../unapplied.js';
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
}

export function pairDisplay(state: DisplayState): PairDisplay[] {
  const { meta, journal, unapplied, receiver, draining, peerConnected } = state;
  const lagRecords = Math.max(0, journal.nextSeq - receiver.appliedSeq);
  const lagBytes = unapplied.bytes;
  const oldest = unapplied.oldest;
  const lagSeconds = oldest ? Math.max(0, (state.nowMs - oldest.timestampMs) / 1000) : 0;
  const consistencySeq = receiver.appliedSeq - 1;
  return meta.pairs.map((pair) => ({
    group: meta.name,
    direction: `${state.arrayId}->${meta.peer}`,
    epoch: formatEpoch(meta.epoch),
    pvol: `${state.arrayId}:${pair.pvolName}`,
    svol: `${meta.peer}:${pair.svolName}`,
    status: draining && pair.status === 'PAIR' ? 'SWAP' : pair.status,
    statusReason: draining && pair.status === 'PAIR' ? 'swap: draining' : pair.statusReason ?? (peerConnected ? null : 'link-down'),
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
  }));
}
