// The pair-status events of this array's journal groups: the registry persists
// every change of a group document, and hands the document here after the
// persist; each pair whose role, status or reason changed since it was last
// reported is published (with the status it came from), once, in the order of
// the persists. At start the persisted documents are noted without an event:
// a client's snapshot shows them.

import type { EventSink } from '../../events/bus.js';
import type { GroupMeta, GroupRole, PairMeta } from '../model.js';

interface Reported {
  key: string;
  status: string;
}

export class StatusReports {
  /** Each group's pairs as last reported, by local volume id. */
  private readonly reported = new Map<string, Map<number, Reported>>();

  constructor(private readonly events: EventSink, private readonly arrayId: string) {}

  /** Notes the group's pairs without reporting them (at start). */
  seed(meta: GroupMeta): void {
    this.changes(meta);
  }

  /** The group document was persisted: reports each pair that changed. */
  persisted(meta: GroupMeta): void {
    for (const change of this.changes(meta)) this.events.publish('pair-status', change);
  }

  /** The group is deleted here. */
  deleted(name: string): void {
    this.reported.delete(name);
    this.events.publish('group-deleted', { group: name });
  }

  private changes(meta: GroupMeta): Array<Record<string, unknown>> {
    const before = this.reported.get(meta.name) ?? new Map<number, Reported>();
    const now = new Map<number, Reported>();
    const changes: Array<Record<string, unknown>> = [];
    for (const pair of meta.pairs) {
      const key = `${meta.role} ${pair.status} ${pair.statusReason ?? ''}`;
      now.set(pair.localVolumeId, { key, status: pair.status });
      const last = before.get(pair.localVolumeId);
      if (last?.key === key) continue;
      changes.push({ ...pairNames(meta, pair, this.arrayId), status: pair.status, statusReason: pair.statusReason, from: last?.status ?? null });
    }
    this.reported.set(meta.name, now);
    return changes;
  }
}

/** How a pair is named in events: as pair display names it (a FENCED group from its primary's side). */
export function pairNames(meta: GroupMeta, pair: PairMeta, arrayId: string): { group: string; role: GroupRole; direction: string; pvol: string; svol: string } {
  const primaryHere = meta.role === 'master' && !meta.pairs.every((p) => p.status === 'FENCED');
  const here = meta.role === 'master' ? pair.pvolName : pair.svolName;
  const there = meta.role === 'master' ? pair.svolName : pair.pvolName;
  return primaryHere
    ? { group: meta.name, role: meta.role, direction: `${arrayId}->${meta.peer}`, pvol: `${arrayId}:${here}`, svol: `${meta.peer}:${there}` }
    : { group: meta.name, role: meta.role, direction: `${meta.peer}->${arrayId}`, pvol: `${meta.peer}:${there}`, svol: `${arrayId}:${here}` };
}
