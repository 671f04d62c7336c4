// Test-only planted bugs (DESIGN.md §10, issue 3): each switch breaks one rule
// of the replication protocol so that a test can show the checks catch it.
// Set TWINSTORE_TEST_PLANT to a comma-separated list; never in production.

const planted = new Set((process.env.TWINSTORE_TEST_PLANT ?? '').split(',').map((s) => s.trim()).filter(Boolean));

export type PlantedBug =
  /** (a) the P-VOL write is issued before its journal record is written. */
  | 'pvol-before-journal'
  /** (b) the master journal is freed at the receiver's storedSeq instead of appliedSeq. */
  | 'free-at-stored'
  /** (c) restore applies one record out of order. */
  | 'restore-out-of-order';

export function isPlanted(bug: PlantedBug): boolean {
  return planted.has(bug);
}
