// GET /metrics: Prometheus text format (prom-client). Every replication metric
// is computed at scrape time from one snapshot of the array's state (pair
// display, journal numbers, peer links), so a scrape never sees half of one
// state and half of another, and nothing is counted on the write path.
// Node's process metrics come from collectDefaultMetrics. The drives' sync
// failures and capacity, the pool's, the volumes' sizes and NBD sessions and
// the firing alerts come from the array's status and volume list at scrape
// time in the same way. The one thing counted on the data path is each
// volume's NBD requests (src/nbd/io-stats.ts: a few adds per request); its
// latency histograms are written out here from those counts
// (volume-io-metrics.ts).
//
// /metrics needs no bearer token: Prometheus scrapes without one by default,
// and the API token would let a scraper change the array. It is served only on
// the API listener, and it shows names and numbers, never a token or a key.
// docs/api.md lists the metrics.

import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { PAIR_STATUSES, type GroupStats, type PairDisplay } from '../replication/index.js';
import type { ArrayControl, StatusJson, VolumeJson } from './server.js';
import { ALERT_NAMES, type AlertJson } from '../array/alerts.js';
import { VolumeIoMetrics } from './volume-io-metrics.js';

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
  private readonly driveCapacity = this.gauge('twinstore_drive_capacity_bytes', "A drive's extents, in bytes (its size less the label extent)", ['drive', 'path', 'use']);
  private readonly driveFree = this.gauge('twinstore_drive_free_bytes', "A drive's extents not allocated, in bytes", ['drive', 'path', 'use']);
  private readonly poolCapacity = this.gauge('twinstore_pool_capacity_bytes', 'All drives\' extents, in bytes', []);
  private readonly poolFree = this.gauge('twinstore_pool_free_bytes', 'Extents that can be handed out now, in bytes', []);
  private readonly poolProvisioned = this.gauge('twinstore_pool_provisioned_bytes', 'The sum of the volume sizes (thin: may exceed capacity)', []);
  private readonly volumeSize = this.gauge('twinstore_volume_size_bytes', "A volume's size", ['volume', 'role']);
  private readonly volumeAllocated = this.gauge('twinstore_volume_allocated_bytes', "A volume's allocated extents, in bytes", ['volume', 'role']);
  private readonly volumeSessions = this.gauge('twinstore_nbd_sessions', 'NBD connections in transmission on a volume', ['volume']);
  private readonly dataAge = this.gauge('twinstore_group_data_age_seconds', "How old the S-VOLs' data is: now less the time of the newest record applied (the consistency point), on this array's clock", ['group']);
  private readonly alertFiring = this.gauge('twinstore_alert_firing', 'A group alert (lag, journal, suspended): 1 while it fires, else 0', ['group', 'alert']);
  readonly volumeIo = new VolumeIoMetrics(this.registry);

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
      if (p.consistencyTime !== null) this.dataAge.set({ group: p.group }, Math.max(0, (Date.now() - Date.parse(p.consistencyTime)) / 1000));
    }
    for (const peer of peers) this.linkUp.set({ peer: peer.id }, peer.connected ? 1 : 0);
  }

  /** Replaces the drive, pool and alert series with this status's (a drive no longer configured disappears). */
  updateStatus(status: StatusJson, groups: GroupStats[]): void {
    for (const metric of [this.syncFailures, this.syncFailed, this.driveCapacity, this.driveFree, this.alertFiring]) metric.reset();
    for (const drive of [...status.drives, { id: 'metadata', ...status.metadata }]) {
      const labels = { drive: drive.id, path: drive.path };
      this.syncFailures.inc(labels, drive.syncFailures);
      this.syncFailed.set(labels, drive.syncFailedAt === null ? 0 : 1);
    }
    for (const drive of status.drives) {
      const labels = { drive: drive.id, path: drive.path, use: drive.use };
      this.driveCapacity.set(labels, drive.capacityBytes);
      this.driveFree.set(labels, drive.freeBytes);
    }
    this.poolCapacity.set(status.capacityBytes);
    this.poolFree.set(status.freeBytes);
    this.poolProvisioned.set(status.provisionedBytes);
    const firing = new Set(status.alerts.map((a: AlertJson) => `${a.group}\0${a.alert}`));
    for (const group of new Set(groups.map((g) => g.group))) {
      for (const alert of ALERT_NAMES) this.alertFiring.set({ group, alert }, firing.has(`${group}\0${alert}`) ? 1 : 0);
    }
  }

  /** Replaces the volume series with this list's (a deleted volume disappears). */
  updateVolumes(volumes: VolumeJson[]): void {
    for (const metric of [this.volumeSize, this.volumeAllocated, this.volumeSessions]) metric.reset();
    for (const v of volumes) {
      this.volumeSize.set({ volume: v.name, role: v.role }, v.sizeBytes);
      this.volumeAllocated.set({ volume: v.name, role: v.role }, v.allocatedBytes);
      if (v.exported) this.volumeSessions.set({ volume: v.name }, v.sessions);
    }
  }
}

export function addMetricsRoutes(app: FastifyInstance, source: () => MetricsSource, array: () => Pick<ArrayControl, 'status' | 'listVolumes' | 'ioStats'>): void {
  const metrics = new ReplicationMetrics();
  app.get(METRICS_PATH, { config: { access: 'public' } }, async (_request, reply) => {
    const control = source();
    const pairs = (await control.displayPairs(undefined)) as PairDisplay[];
    const groups = control.groupStats();
    metrics.update(groups, pairs, control.listPeers());
    metrics.updateStatus(array().status(), groups);
    metrics.updateVolumes(array().listVolumes());
    metrics.volumeIo.update(array().ioStats());
    return reply.header('content-type', metrics.registry.contentType).send(await metrics.registry.metrics());
  });
}
