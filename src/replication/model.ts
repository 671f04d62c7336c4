// The persisted shape of journal groups and pairs (DESIGN.md §6, §8), kept in
// the array metadata as one document per group so that a group's state always
// changes in one atomic record. Both arrays keep their own copy: the master
// (sending) side and the restore (receiving) side.

import type { Epoch } from '../journal/index.js';

export const PAIR_STATUSES = ['SMPL', 'COPY', 'PAIR', 'PSUS', 'PSUE', 'SSWS', 'SWAP', 'FENCED'] as const;
export type PairStatus = (typeof PAIR_STATUSES)[number];

export type GroupRole = 'master' | 'restore';
export type OverflowPolicy = 'suspend' | 'throttle';

export interface PairMeta {
  /** LUN of the P-VOL on the master array; records carry it. */
  pvolLun: number;
  pvolName: string;
  svolName: string;
  /** Local volume id: the P-VOL on the master, the S-VOL on the restore side. */
  localVolumeId: number;
  sizeBytes: number;
  status: PairStatus;
  statusReason: string | null;
  /** Initial copy: next byte to copy, and the seq of the last base record once all are queued. */
  copyOffset: number;
  copyLastSeq: number | null;
}

export interface GroupMeta {
  name: string;
  role: GroupRole;
  /** The other array. */
  peer: string;
  journalVolumeId: number;
  remoteJournal: string;
  overflow: OverflowPolicy;
  throttleMsMax: number;
  copyPaceBytesPerSecond: number;
  /** Region size of the group's bitmaps, fixed when the group is made (marks are region numbers). */
  regionBytes?: number;
  epoch: Epoch;
  /** Epoch chain: each epoch with the first sequence number written in it. */
  epochs: Array<{ epoch: Epoch; firstSeq: number }>;
  pairs: PairMeta[];
  createdAt: string;
}

export const GROUP_DOCUMENT = 'group';
export const PEER_DOCUMENT = 'peer';

export interface PeerMeta {
  id: string;
  link: string;
}

/** What `pair display --json` prints per pair (DESIGN.md §8): a stable contract for scripts. */
export interface PairDisplay {
  group: string;
  direction: string;
  epoch: string;
  pvol: string;
  svol: string;
  status: PairStatus;
  statusReason: string | null;
  copyPercent: number;
  journalUsedPercent: number;
  lagRecords: number;
  lagBytes: number;
  lagSeconds: number;
  consistencySeq: number;
  consistencyTime: string | null;
  restoring: boolean;
}

export function formatEpoch(epoch: Epoch): string {
  return `${epoch.counter}@${epoch.arrayId}#${epoch.nonce}`;
}

export function bitmapSetName(group: string, lun: number): string {
  return `bitmap:${group}:${lun}`;
}
