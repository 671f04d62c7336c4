// The command that brings a pair out of a suspended state, as `pair display`
// names it (issue 16): an operator woken at night reads what to run, on which
// array, instead of looking it up. One decision per status (and, for PSUE,
// per reason), from the pair's state on the array that answers.

import type { PairStatus } from './model.js';

export interface HintContext {
  group: string;
  status: PairStatus;
  statusReason: string | null;
  /** The array answering, and its peer in the group. */
  arrayId: string;
  peer: string;
  /** Fenced side: host writes it holds past the divergence point (the new primary's resync must discard them). */
  divergentWrites: number;
}

/** The recovering command for a suspended pair (PSUS, PSUE, SSWS, FENCED), else null. */
export function recoveryHint(context: HintContext): string | null {
  const { group, status, arrayId, peer } = context;
  const resync = `twinstore pair resync --group ${group}`;
  switch (status) {
    case 'PSUS':
      return `resync: ${resync}`;
    case 'PSUE':
      return `${psueFirst(context.statusReason ?? '', peer)}resync: ${resync}`;
    case 'SSWS':
      return `when ${peer} is back: ${resync} --swap (on ${arrayId}: it stays the primary, ${peer} receives)`;
    case 'FENCED':
      return context.divergentWrites > 0
        ? `on ${peer} (the primary now): ${resync} --swap --discard ${arrayId} (overwrites the ${context.divergentWrites} host writes here past the divergence)`
        : `on ${peer} (the primary now): ${resync} --swap`;
    default:
      return null;
  }
}

/** What to see to before a resync, by the suspension's reason. */
function psueFirst(reason: string, peer: string): string {
  if (/link-down/.test(reason)) return `once the link to ${peer} is up, `;
  if (/journal-full/.test(reason)) return 'journal full (a larger journal or --overflow throttle avoids it); ';
  if (/drive|sync|IO_ERROR/i.test(reason)) return 'after the drive is fixed and the array restarted, ';
  return '';
}
