// Atomic units: a run of records the receiver applies all or nothing.
//
// After an unclean stop the primary re-sends its active regions as base records
// (docs/architecture.md §3): a power cut can leave P-VOL blocks newer than the journal, and
// the re-send is what carries them over. Applied region by region, those base
// records would show the S-VOLs a mix of the state before the crash and after it
// — a state no host ever saw — for as long as the re-send takes. So the primary
// brackets the re-send with two marker records (journal-format.md: markers
// without the wrap flag are for the replication layer; `offset` says which),
// and the receiver applies nothing from a unit's begin marker on until it holds
// the unit's end marker durably, then applies the whole unit and only then moves
// its applied cursor past it. A crash inside a unit re-applies it from its begin.
// A begin with no end before the next begin (the primary crashed again during
// its re-send) simply extends the unit to the next end.

import type { RecordMeta } from '../journal/index.js';

export const unitMarker = { begin: 1, end: 2 } as const;

export function isUnitBegin(record: RecordMeta): boolean {
  return record.kind === 'marker' && record.offset === unitMarker.begin;
}

export function isUnitEnd(record: RecordMeta): boolean {
  return record.kind === 'marker' && record.offset === unitMarker.end;
}
