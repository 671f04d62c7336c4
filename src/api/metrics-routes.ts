// GET /metrics: Prometheus text format (prom-client). Every replication metric
// is computed at scrape time from one snapshot of the array's state (pair
// display, journal numbers, peer links), so a scrape never sees half of one
// state and half of another, and nothing is counted on the write path.
// Node's process metrics come from collectDefaultMetrics. The drives' sync
// failures come from the array's status at scrape time in the same way.
//
// /metrics needs no bearer token: Prometheus scrapes without one by default,
// and the API token would let a scraper change the array. It is served only on
// the API listener, and it shows names and numbers, never a token or a key.
// docs/api.md lists the metrics.

import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { PAIR_STATUSES, type GroupStats, type PairDisplay } from '../replication/index.js';
import type { StatusJson } from './server.js';

export const METRICS_PATH = '/metrics';

export interface MetricsSource {
  listPeers(): Array<{ id: string; connected: boolean }>;
  displayPairs(group: undefined): Promise<unknown[]>;
  groupStats(): GroupStats[];
}

type GroupLabel = 'group';

class ReplicationMetrics {
  readonly registry = new Registry();
  private readonly info = this.gauge('twinstore_group_info', 'A journal group on this array (value 1); role is master (sends) or restore (receives)', ['group', 'role', 'peer']);
  private readonly lagRecords = this.gauge('twinstore_group_lag_records', 'Records written on the master and not yet applied on the receiver', ['group']);
  private readonly lagBytes = this.gauge('twinstore_group_lag_bytes', 'Journal bytes of the records not yet applied on the receiver (master only, computed on its clock)', ['group']);
  private readonly lagSeconds = this.gauge('twinstore_group_lag_seconds', 'Age of the oldest record not yet applied on the receiver (master only, computed on its clock)', ['group']);
  private readonly journalUsed = this.gauge('twinstore_journal_used_bytes', "Bytes of the group's journal ring held by records", ['group']);
  private readonly journalCapacity = this.gauge('twinstore_journal_capacity_bytes', "Bytes of the group's journal ring", ['group']);
  private readonly journaled = this.counter('twinstore_group_records_journaled_total', 'Records written to the master journal since the group was made (master only)');
  private readonly sent = this.counter('twinstore_group_records_sent_total', 'Records sent to the receiver and stored there, as it last reported (master only)');
  private readonly stored = this.counter('twinstore_group_records_stored_total', 'Records stored durably in the restore journal (receiver only)');
  private readonly applied = this.counter('twinstore_group_records_applied_total', 'Records applied to the S-VOLs (receiver only)');
  private readonly pairStatus = this.gauge('twinstore_pair_status', 'Pair status: 1 for the status the pair is in, 0 for the others', ['group', 'pvol', 'status']);
  private readonly copyPercent = this.gauge('twinstore_pair_copy_percent', 'Initial copy progress, 100 when done (master only)', ['group', 'pvol']);
  private readonly linkUp = this.gauge('twinstore_link_up', 'Link to the peer array: 1 up, 0 down', ['peer']);
  private readonly syncFailures = new Counter({
    name: 'twinstore_drive_sync_failures_total',
    help: 'Syncs (fdatasync) of a drive, or of the metadata (drive="metadata"), that failed since the array started',
    labelNames: ['drive', 'path'],
    registers: [this.registry],
  });
  private readonly syncFailed = this.gauge('twinstore_drive_sync_failed', 'A drive (or the metadata) failed a sync: 1 until the array is restarted, and every FLUSH fails meanwhile', ['drive', 'path']);

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  private gauge<L extends string>(name: string, help: string, labelNames: L[]): Gauge<L> {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }

  private counter(name: string, help: string): Counter<GroupLabel> {
    return new Counter({ name, help, labelNames: ['group'], registers: [this.registry] });
  }

  /** Replaces every replication series with the values of this snapshot (groups that are gone disappear). */
  update(groups: GroupStats[], pairs: PairDisplay[], peers: Array<{ id: string; connected: boolean }>): void {
    for (const metric of [this.info, this.lagRecords, this.lagBytes, this.lagSeconds, this.journalUsed, this.journalCapacity, this.journaled, this.sent, this.stored, this.applied, this.pairStatus, this.copyPercent, this.linkUp]) metric.reset();
    for (const g of groups) {
      const group = { group: g.group };
      this.info.set({ group: g.group, role: g.role, peer: g.peer }, 1);
      this.journalUsed.set(group, g.journalUsedBytes);
      this.journalCapacity.set(group, g.journalCapacityBytes);
      if (g.role === 'master') {
        this.journaled.inc(group, g.journaledRecords);
        this.sent.inc(group, g.storedRecords);
      } else {
        this.stored.inc(group, g.storedRecords);
        this.applied.inc(group, g.appliedRecords);
      }
    }
    const lagDone = new Set<string>();
    for (const p of pairs) {
      for (const status of PAIR_STATUSES) this.pairStatus.set({ group: p.group, pvol: p.pvol, status }, status === p.status ? 1 : 0);
      if (p.copyPercent >= 0) this.copyPercent.set({ group: p.group, pvol: p.pvol }, p.copyPercent);
      if (lagDone.has(p.group)) continue;
      lagDone.add(p.group);
      this.lagRecords.set({ group: p.group }, p.lagRecords);
      // The receiver shows -1 for what only the master's clock can tell.
      if (p.lagBytes >= 0) this.lagBytes.set({ group: p.group }, p.lagBytes);
      if (p.lagSeconds >= 0) this.lagSeconds.set({ group: p.group }, p.lagSeconds);
    }
    for (const peer of peers) this.linkUp.set({ peer: peer.id }, peer.connected ? 1 : 0);
  }

  /** Replaces the drive sync series with this status's (a drive no longer configured disappears). */
  updateDrives(status: Pick<StatusJson, 'drives' | 'metadata'>): void {
    this.syncFailures.reset();
    this.syncFailed.reset();
    for (const drive of [...status.drives, { id: 'metadata', ...status.metadata }]) {
      const labels = { drive: drive.id, path: drive.path };
      this.syncFailures.inc(labels, drive.syncFailures);
      this.syncFailed.set(labels, drive.syncFailedAt === null ? 0 : 1);
    }
  }
}

export function addMetricsRoutes(app: FastifyInstance, source: () => MetricsSource, storage: () => Pick<StatusJson, 'drives' | 'metadata'>): void {
  const metrics = new ReplicationMetrics();
  app.get(METRICS_PATH, async (_request, reply) => {
    const control = source();
    const pairs = (await control.displayPairs(undefined)) as PairDisplay[];
    metrics.update(control.groupStats(), pairs, control.listPeers());
    metrics.updateDrives(storage());
    return reply.header('content-type', metrics.registry.contentType).send(await metrics.registry.metrics());
  });
}
