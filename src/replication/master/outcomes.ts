// What the parts of a master group report to it (group.ts), and what every part is handed. A
// part does its own work (records, syncs, bitmap marks, copies) and, where the pair status might
// change, reports what happened: the group alone decides a status or a suspension. So no part
// calls back into its owner, and a reader finds every status decision in one file.

import type { Logger } from '../../util/log.js';

export type MasterOutcome =
  /** A host write found the journal full past its overflow policy's wait. */
  | { kind: 'journal-full' }
  /**
   * A drive I/O error on this array's write path (`what` failed); the range concerned is in its
   * bitmap already. `activeRegionsLost`: a sync failed, so the regions written since the last good
   * flush may have been dropped by the drive.
   */
  | { kind: 'drive-error'; what: string; error: Error; activeRegionsLost?: boolean }
  /** This journal lost synced records (`reason`); every region is marked and the journal goes on past them. */
  | { kind: 'journal-lost'; reason: string }
  /** An initial copy or resync failed on a non-drive error. */
  | { kind: 'copy-error'; lun: number; error: Error }
  /** A copy queued its last record, or the receiver applied more: a COPY pair may be done. */
  | { kind: 'copy-progress' }
  /** A record fails its checksum, here (`on` undefined) or in the receiver's journal; its range is marked. */
  | { kind: 'bad-record'; seq: number; on?: string }
  /** The receiver lost its restore journal; every region is marked. */
  | { kind: 'receiver-journal-lost' }
  /** The receiver stored records past any this journal holds or served; every region is marked. */
  | { kind: 'receiver-ahead'; storedSeq: number; servedTo: number; message: string }
  /** The receiver's drive failed storing or applying records (a current report, not a stale one). */
  | { kind: 'receiver-drive-error'; seq: number; message: string };

/** How a part reports an outcome; resolved once the group has acted on it. */
export type ReportOutcome = (outcome: MasterOutcome) => Promise<void>;

/** What the group hands each of its parts: its clock, log, whether it stopped, and where to report. */
export interface PartContext {
  now: () => number;
  log: Logger;
  /** The group stopped (demoted, deleted, shut down): nothing waits for it any more. */
  stopped: () => boolean;
  report: ReportOutcome;
}
