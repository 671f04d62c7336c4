// What the array's event stream tells (issue 16), put together here: the
// snapshot a client gets first (one event per journal group, pair, peer and
// volume, as the array stands now), and the changes this layer owns besides the
// ones the groups and links report to the bus themselves: volumes made, deleted
// or given a role, a copy's progress, looked at once a second
// (copyProgressIntervalMs) and reported per pair only when it moved, and the
// group alerts (alerts.ts) that fired or cleared at that look.

import type { StorageEngine, Volume } from '../storage/index.js';
import type { VolumeJson } from '../api/index.js';
import type { ArrayEvent, EventBus } from '../events/bus.js';
import { formatEpoch, type GroupMeta, type PairDisplay } from '../replication/index.js';
import type { GroupAlerts } from './alerts.js';

/** How often the copies' progress is looked at: at most one copy-progress event per pair per this. */
export const copyProgressIntervalMs = 1000;

export interface EventSources {
  volumes(): VolumeJson[];
  peers(): Array<{ id: string; link: string; connected: boolean }>;
  groups(): GroupMeta[];
  pairs(): PairDisplay[];
}

export class ArrayEvents {
  private timer: NodeJS.Timeout | undefined;
  /** The copied bytes each COPY pair last reported, by group and P-VOL. */
  private readonly copied = new Map<string, number>();

  constructor(readonly bus: EventBus, private readonly sources: EventSources, readonly alerts: GroupAlerts) {}

  /** Starts reporting the engine's volume changes and the copies' progress. */
  start(engine: StorageEngine): void {
    engine.on('volume-created', (volume: Volume) => this.bus.publish('volume-created', { volume: volume.name, role: volume.meta.role, sizeBytes: volume.sizeBytes }));
    engine.on('volume-deleted', (volume: Volume) => this.bus.publish('volume-deleted', { volume: volume.name }));
    engine.on('volume-role', (volume: Volume) => this.bus.publish('volume-role', { volume: volume.name, role: volume.meta.role }));
    this.timer = setInterval(() => this.look(), copyProgressIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** The state now, one event per group, pair, peer and volume, each standing at the bus's newest id. */
  snapshot(): ArrayEvent[] {
    const id = this.bus.lastId;
    const at = new Date().toISOString();
    const event = (type: string, data: Record<string, unknown>): ArrayEvent => ({ id, at, type, data });
    const groups = new Map<string, GroupMeta>();
    for (const meta of this.sources.groups()) if (!groups.has(meta.name)) groups.set(meta.name, meta);
    return [
      ...[...groups.values()].map((g) => event('group', { group: g.name, role: g.role, peer: g.peer, epoch: formatEpoch(g.epoch), pairs: g.pairs.length })),
      ...this.sources.pairs().map((p) => event('pair', { ...p })),
      ...this.sources.peers().map((p) => event('peer', { peer: p.id, link: p.link, up: p.connected })),
      ...this.sources.volumes().map((v) => event('volume', { volume: v.name, lun: v.lun, role: v.role, sizeBytes: v.sizeBytes, readOnly: v.readOnly, writesRefused: v.writesRefused })),
      ...this.alerts.firing().map((a) => event('alert', { state: 'firing', ...a })),
    ];
  }

  private look(): void {
    const pairs = this.sources.pairs();
    this.lookAtCopies(pairs);
    for (const change of this.alerts.evaluate(pairs)) this.bus.publish('alert', { state: change.state, ...change.alert });
  }

  private lookAtCopies(pairs: PairDisplay[]): void {
    const seen = new Set<string>();
    for (const pair of pairs) {
      if (pair.status !== 'COPY') continue;
      const key = `${pair.group}\0${pair.pvol}`;
      seen.add(key);
      if (this.copied.get(key) === pair.copyBytes) continue;
      this.copied.set(key, pair.copyBytes);
      this.bus.publish('copy-progress', {
        group: pair.group, pvol: pair.pvol, svol: pair.svol, copyPercent: pair.copyPercent, copyBytes: pair.copyBytes,
        copyRemainingBytes: pair.copyRemainingBytes, copyRateBytesPerSecond: pair.copyRateBytesPerSecond, copyEtaSeconds: pair.copyEtaSeconds,
      });
    }
    for (const key of this.copied.keys()) if (!seen.has(key)) this.copied.delete(key);
  }
}
