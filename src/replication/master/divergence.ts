// How many host writes this side holds that the peer never got, past a divergence point: after
// a takeover, what the old primary's fence reports and what a resync --swap would overwrite.
// The group adds the writes taken the bitmap way since the last resync (host-write.ts).

import type { Journal } from '../../journal/index.js';
import { isIoError } from '../../storage/index.js';
import { scanJournal } from '../journal-scan.js';
import { isUnitBegin, isUnitEnd } from '../units.js';
import { readBatchBytesMax } from './journal-sync.js';

/**
 * Host writes journaled here from `seq` on: after a takeover, the writes this side made that the
 * new primary never saw. Write and zero records are always host writes; base records never are
 * (copies, re-sends). A trim record is a host TRIM or a copied hole: inside a re-send unit it is
 * taken for the latter (a host TRIM there is not counted; it un-writes, it loses no data).
 */
export async function hostRecordsFrom(journal: Journal, seq: number): Promise<number> {
  let count = 0;
  let inUnit = false;
  await scanJournal({
    journal,
    fromSeq: Math.max(seq, journal.tailSeq),
    batchBytesMax: readBatchBytesMax,
    onRecord: (r) => {
      if (isUnitBegin(r)) inUnit = true;
      else if (isUnitEnd(r)) inUnit = false;
      else if (r.kind === 'write' || r.kind === 'zero' || (r.kind === 'trim' && !inUnit)) count += 1;
    },
    onDamaged: () => {
      count += 1; // unreadable: count it as a write, to be safe
    },
  });
  return count;
}

/**
 * Host writes here that the peer never got, past the divergence point `seq`: those journaled
 * from `seq` on, plus `tracked()` (taken the bitmap way since the last resync: suspended, split,
 * SSWS). With `unappliedFrom`, a journal that cannot be read counts the records queued in memory.
 */
export async function divergentWrites(options: { journal: Journal; seq: number; tracked: () => number; unappliedFrom?: ((seq: number) => number) | undefined }): Promise<number> {
  const tracked = options.tracked();
  try {
    return (await hostRecordsFrom(options.journal, options.seq)) + tracked;
  } catch (error) {
    if (!isIoError(error) || options.unappliedFrom === undefined) throw error;
    return options.unappliedFrom(options.seq) + options.tracked();
  }
}
