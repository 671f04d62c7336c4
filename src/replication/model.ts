// The persisted shape of journal groups and pairs (docs/architecture.md §6, §8), kept in
// the array metadata as one document per group so that a group's state always
// changes in one atomic record. Both arrays keep their own copy: the master
// (sending) side and the restore (receiving) side.

import type { Epoch } from '../journal/index.js';

export const PAIR_STATUSES = ['SMPL', 'COPY', 'PAIR', 'PSUS', 'PSUE', 'SSWS', 'SWAP', 'FENCED'] as const;
export type PairStatus = (typeof PAIR_STATUSES)[number];

export type GroupRole = 'master' | 'restore';
export type OverflowPolicy = 'suspend' | 'throttle';
/** docs/architecture.md §6: with the link down, the P-VOL keeps taking writes (`never`) or refuses them after fenceAfterMs (`data`). */
export type FencePolicy = 'never' | 'data';

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
  /** What COPY is doing: the initial copy (by copyOffset) or a resync (the bitmap's regions). Default initial. */
  copyKind?: 'initial' | 'resync';
  /** Bytes the current (or last) copy has to send and has sent as base or trim records. */
  copyTotalBytes?: number;
  copyDoneBytes?: number;
  /** Restore side: the S-VOL takes host writes (pair split --rw), tracked in its bitmap. */
  svolWritable?: boolean;
  /**
   * Restore side: a copy (initial or resync) began and has not reached PAIR, so the S-VOL holds
   * regions copied out of order: no consistency point, even once the group shows PSUE or PSUS.
   */
  svolInconsistent?: boolean;
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
  /** Link-down policy of the P-VOLs (default `never`) and how long the link must be down first. */
  fence?: FencePolicy;
  fenceAfterMs?: number;
  /**
   * Master side, fence `data`: why the P-VOLs refuse host writes (the link was down fenceAfterMs),
   * until a resync; null or absent while they take writes.
   */
  writesRefused?: string | null;
  /** Region size of the group's bitmaps, fixed when the group is made (marks are region numbers). */
  regionBytes?: number;
  epoch: Epoch;
  /** Epoch chain: each epoch with the first sequence number written in it. */
  epochs: Array<{ epoch: Epoch; firstSeq: number }>;
  pairs: PairMeta[];
  createdAt: string;
  /** Master side, after pair split: the first seq not journaled; the S-VOLs stop at splitSeq - 1. */
  splitSeq?: number | null;
  /**
   * Restore side: a stored record below this seq that fails its checksum is skipped (a resync
   * that began at this seq re-copies its region); at or above it, restore stops and reports it.
   */
  skipDamagedBefore?: number;
  /** Master side: host writes were taken the bitmap way (suspended, split, SSWS) since the last resync. */
  trackedWrites?: boolean;
  /**
   * Master side, fenced: where its epoch chain parted from the newer one's, and how many host
   * writes this side holds past it that the other never saw (0: nothing to discard).
   */
  divergence?: { seq: number; writes: number } | null;
  /** Master side: a reclaim (pair resync --discard PEER) gave this array a new epoch; the peer has yet to turn receiver. */
  reclaiming?: boolean;
  /** Master side, after a planned swap promoted this array: the old primary still has to be demoted. */
  demotePending?: boolean;
  /**
   * Master side: a resync after a suspension folded every record the receiver had not applied
   * into the bitmaps, so the receiver skips to this seq (it drops what it stored below) instead
   * of pulling records it no longer needs, a damaged one among them.
   */
  skipTo?: number | null;
  /**
   * Restore side: the restore journal was started again after its header was lost, so what was
   * applied to the S-VOLs is unknown; each pull asks the master for a full copy (journal.read
   * `journalLost`) until it answers that every region is marked.
   */
  fullCopyNeeded?: boolean;
}

export const GROUP_DOCUMENT = 'group';
export const PEER_DOCUMENT = 'peer';

export interface PeerMeta {
  id: string;
  link: string;
}

/** What `pair display --json` prints per pair (docs/architecture.md §8): a stable contract for scripts. */
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
  /** Bytes sent as base and trim records by the current or last copy (initial copy or resync). */
  copyBytes: number;
  /** COPY on the master: bytes the copy has still to send; 0 when not copying, -1 where unknown (the S-VOL array). */
  copyRemainingBytes: number;
  /** COPY on the master: bytes per second over the last displays (copy-rate.ts), and the seconds left at that rate; else null. */
  copyRateBytesPerSecond: number | null;
  copyEtaSeconds: number | null;
  /** Regions marked in this side's bitmap (changes a resync copies) and their bytes: what PSUS, PSUE and SSWS owe beside the journal. */
  pendingRegions: number;
  pendingBytes: number;
  /** Restore is paused on the S-VOL array (pair restore --pause): records arrive and are stored, not applied. The master shows what the receiver's last pull said. */
  restorePaused: boolean;
  /** The command that brings a suspended pair back (PSUS, PSUE, SSWS, FENCED), naming where to run it; else null. */
  recovery: string | null;
  /**
   * Whether the S-VOL holds a state the hosts saw (a takeover may serve it): on the S-VOL array,
   * false in COPY and after a copy that was cut short (until PAIR); on the master false in COPY,
   * else null (only the S-VOL array knows whether a suspended copy was finished).
   */
  svolConsistent: boolean | null;
}

export function formatEpoch(epoch: Epoch): string {
  return `${epoch.counter}@${epoch.arrayId}#${epoch.nonce}`;
}

export function bitmapSetName(group: string, lun: number): string {
  return `bitmap:${group}:${lun}`;
}
