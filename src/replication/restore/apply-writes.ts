// Why this exists: a batch of records used to be applied to the S-VOLs one
// write at a time, each waiting for the one before, so B's apply rate was one
// write's latency per record. Records of a batch only have to land in order
// where they overlap: the batch is committed (S-VOLs flushed, applied cursor
// moved) only after every write of it has completed, and a crash before that
// re-applies the whole batch in order from the cursor. So this issues the
// writes of a batch together, a bounded number at a time, and holds a record
// back only while an earlier record of the batch that overlaps it (same LUN,
// crossing byte ranges) is still in flight.

import type { JournalRecord } from '../../journal/index.js';

/** At most this many S-VOL writes of one batch are in flight at a time. */
export const applyWritesInFlightMax = 16;

/** Applies `records` (in the order given) with `apply`; resolves once all have completed, rejects with the first failure. */
export async function applyInOrder(records: readonly JournalRecord[], apply: (record: JournalRecord) => Promise<void>): Promise<void> {
  const inFlight = new Set<{ record: JournalRecord; done: Promise<void> }>();
  let failure: { error: unknown } | undefined;
  for (const record of records) {
    if (failure !== undefined) break;
    if (record.kind === 'marker') continue;
    for (;;) {
      const blocker = [...inFlight].find((w) => overlaps(w.record, record));
      if (blocker === undefined && inFlight.size < applyWritesInFlightMax) break;
      await Promise.race(blocker === undefined ? [...inFlight].map((w) => w.done) : [blocker.done]);
    }
    if (failure !== undefined) break;
    const entry = { record, done: Promise.resolve() };
    entry.done = apply(record).then(
      () => {
        inFlight.delete(entry);
      },
      (error: unknown) => {
        inFlight.delete(entry);
        failure ??= { error };
      },
    );
    inFlight.add(entry);
  }
  await Promise.all([...inFlight].map((w) => w.done));
  if (failure !== undefined) throw failure.error;
}

function overlaps(a: JournalRecord, b: JournalRecord): boolean {
  return a.lun === b.lun && a.offset < b.offset + b.length && b.offset < a.offset + a.length;
}
