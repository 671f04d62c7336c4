// Test-only planted bugs (docs/architecture.md §10, issues 3 and 5): each switch breaks one
// rule of the replication protocol so that a test, or the seeded simulator, can
// show the checks catch it. Set TWINSTORE_TEST_PLANT to a comma-separated list
// (or, in the simulator's own process, call setPlanted); never in production.

let planted = new Set((process.env.TWINSTORE_TEST_PLANT ?? '').split(',').map((s) => s.trim()).filter(Boolean));

export type PlantedBug =
  /** (a) the P-VOL write is issued before its journal record is written. */
  | 'pvol-before-journal'
  /** (b) the master journal is freed at the receiver's storedSeq instead of appliedSeq. */
  | 'free-at-stored'
  /** (c) restore applies one record out of order. */
  | 'restore-out-of-order'
  /** (d) a promotion's new epoch is persisted only after the volumes became writable. */
  | 'epoch-after-promote'
  /** (e) a host FLUSH is acknowledged once the syncs are started, before earlier records are durable. */
  | 'flush-before-durable';

export const PLANTED_BUGS: readonly PlantedBug[] = ['pvol-before-journal', 'free-at-stored', 'restore-out-of-order', 'epoch-after-promote', 'flush-before-durable'];

export function isPlanted(bug: PlantedBug): boolean {
  return planted.has(bug);
}

/** The simulator's switch: runs in one process one after another, each with its own plant. */
export function setPlanted(bugs: readonly PlantedBug[]): void {
  planted = new Set(bugs);
}
