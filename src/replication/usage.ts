// Which journal group holds a volume or a peer. The refusals of volume delete,
// journal delete and peer remove ask here, so a group never loses its journal,
// a P-VOL or S-VOL, or its peer under it (the next start would fail opening it).
// The manager hands over every group it knows: the open ones and the persisted
// documents, so a group half made or not yet opened counts too.

import type { GroupMeta } from './model.js';

export interface VolumeUse {
  group: string;
  as: 'journal' | 'P-VOL' | 'S-VOL';
}

/** The first group that uses volume `volumeId`, and how. */
export function volumeUse(groups: readonly GroupMeta[], volumeId: number): VolumeUse | undefined {
  for (const meta of groups) {
    if (meta.journalVolumeId === volumeId) return { group: meta.name, as: 'journal' };
    if (meta.pairs.some((pair) => pair.localVolumeId === volumeId)) return { group: meta.name, as: meta.role === 'master' ? 'P-VOL' : 'S-VOL' };
  }
  return undefined;
}

/** The names of the groups paired with array `peer`, each once, sorted. */
export function groupsOfPeer(groups: readonly GroupMeta[], peer: string): string[] {
  return [...new Set(groups.filter((meta) => meta.peer === peer).map((meta) => meta.name))].sort();
}
