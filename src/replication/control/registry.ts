// The journal groups of this array and their owner: boots them from the metadata, opens a
// group on a journal (every journal device from the one factory), persists group documents,
// and answers lookups (who writes a volume, display, stats, journal info). The command parts
// (pair-commands, takeover, reverse, epoch-watch) act through it; it calls none of them.

import { TwinstoreError } from '../../errors.js';
import { Journal, type JournalDevice } from '../../journal/index.js';
import type { EngineSyncFailure, StorageEngine, Volume } from '../../storage/index.js';
import type { Logger } from '../../util/log.js';
import { VolumeJournalDevice } from '../journal-device.js';
import { MasterGroup } from '../master/group.js';
import { startHoldFor } from '../start-hold.js';
import { writeRefusal } from '../master/status.js';
import { CopyRates } from '../copy-rate.js';
import { RestoreGroup } from '../restore/group.js';
import type { PeerChannel, PeerPair } from '../protocol.js';
import { GROUP_DOCUMENT, formatEpoch, type FencePolicy, type GroupMeta, type GroupRole, type OverflowPolicy, type PairDisplay } from '../model.js';
import { noEvents, type EventSink } from '../../events/bus.js';
import type { BytePacer } from '../../util/byte-pacer.js';
import { StatusReports } from './status-reports.js';

/** Makes the journal device of a journal volume; the simulator wraps the real one to inject faults. */
export type JournalDeviceFactory = (volume: Volume, engine: StorageEngine) => JournalDevice;

export interface ReplicationOptions {
  /** Default: the volume itself (VolumeJournalDevice). */
  journalDevice?: JournalDeviceFactory;
  engine: StorageEngine;
  log: Logger;
  peerChannel: (peerId: string) => PeerChannel | undefined;
  defaults: { overflow: OverflowPolicy; throttleMsMax: number; regionBytes: number; fence: FencePolicy; fenceAfterMs: number };
  /** A sending group whose receiver is silent this long suspends (PSUE link-down); default 30 s. */
  suspendAfterMs?: number;
  /** At start, host writes of a sending group wait at most this long for the peer's epoch (start-hold.ts); default 10 s, 0: no hold. */
  startHoldMs?: number;
  /** Where changes are reported (the array's event bus); default: nowhere. */
  events?: EventSink;
  /** link.bandwidthMax: paces the journal answers of every sending group; default: no cap. */
  pacer?: BytePacer;
}

/**
 * One group's journal numbers, read at scrape time for /metrics. Sequence
 * numbers start at 0 when a group is made, so a seq is also a count of records.
 */
export interface GroupStats {
  group: string;
  role: GroupRole;
  peer: string;
  journalUsedBytes: number;
  journalCapacityBytes: number;
  /** Master: records written to the master journal. Restore: records received. */
  journaledRecords: number;
  /** Records the receiver holds durably (on the master: as the receiver last said). */
  storedRecords: number;
  /** Records applied to the S-VOLs (on the master: as the receiver last said). */
  appliedRecords: number;
  /** The oldest seq the journal still keeps (its tail): below it nothing is left to send or apply. */
  tailRecords: number;
  /** Master: the seq the receiver is to skip to (a resync after a suspension, a journal that lost records); 0 if none. */
  skipToRecords: number;
}

export class GroupRegistry {
  readonly engine: StorageEngine;
  readonly log: Logger;
  private readonly masters = new Map<string, MasterGroup>();
  private readonly restores = new Map<string, RestoreGroup>();
  /** Groups in the middle of a role change here (demote, promote, reclaim): not to be opened again meanwhile. */
  private readonly changing = new Set<string>();
  /** start() has opened every group. */
  private openedAll = false;
  /** The copies' rates, from what the displays saw. */
  private readonly copyRates = new CopyRates();
  /** The pair-status events of the persisted group documents. */
  private readonly reports: StatusReports;

  constructor(readonly options: ReplicationOptions) {
    this.engine = options.engine;
    this.log = options.log;
    this.reports = new StatusReports(options.events ?? noEvents, this.engine.arrayId);
    this.engine.on('sync-failed', (failure: EngineSyncFailure) => this.syncFailed(failure));
  }

  /** NBD sessions of a volume are closed (its read-only flag changed); set by the array. */
  closeSessions: (volumeName: string, reason: string) => void = () => undefined;
  /** Session counts come from the NBD layer; set by the array. */
  openSessions: (volumeName: string) => number = () => 0;

  get opened(): boolean {
    return this.openedAll;
  }

  /**
   * A drive or the metadata failed a sync: every later flush of the array fails until a restart,
   * so every group suspends now (PSUE drive-error), not at its next FLUSH or apply.
   */
  private syncFailed(failure: EngineSyncFailure): void {
    const what = failure.drive === 'metadata' ? 'metadata sync' : 'drive sync';
    const error = new TwinstoreError('IO_ERROR', failure.message, { cause: failure.error });
    for (const group of this.masters.values()) {
      void group.engineSyncFailed(error, what).catch((error: unknown) => this.log.error({ group: group.meta.name, err: (error as Error).message }, 'suspend on a failed sync failed'));
    }
    for (const group of this.restores.values()) group.engineSyncFailed(error, what);
  }

  /** The one place a journal device is made: the simulator's factory when it sets one. */
  journalDevice(volume: Volume): JournalDevice {
    return this.options.journalDevice?.(volume, this.engine) ?? new VolumeJournalDevice(volume, this.engine);
  }

  /**
   * Opens every persisted group; resumes copies; after an unclean stop re-sends active regions.
   * Returns the sending groups resumed in full (neither started again nor lost records): a frozen
   * one among them asks its peer soon whether it promoted (Takeover.watchFreeze).
   */
  async start(): Promise<MasterGroup[]> {
    const resumed: MasterGroup[] = [];
    for (const meta of this.engine.documents<GroupMeta>(GROUP_DOCUMENT).values()) this.reports.seed(meta);
    for (const meta of this.engine.documents<GroupMeta>(GROUP_DOCUMENT).values()) {
      const { journal, recovery } = await Journal.open(this.journalDevice(this.journalVolume(meta)));
      this.log.info({ group: meta.name, role: meta.role, recovery }, 'journal group opened');
      await this.finishRoleChange(meta, journal);
      if (meta.role === 'master') {
        // Registered (so the receiver's journal.read reaches it, and may free the journal) only once
        // the records from the persisted tail are loaded and redone: a release under those reads fails them.
        const group = this.newMaster(meta, journal, false);
        await group.loadUnapplied();
        if (await group.journalStartedAgain()) {
          // Its header was lost (recovery.headerLost): no record is left to redo or send.
          this.masters.set(meta.name, group);
          continue;
        }
        if (recovery.lostFrom !== null) {
          // Damage in the middle of the journal: synced records past it are gone. Redoing the part
          // before it could roll back newer data on the P-VOLs; the resync copies every region.
          await group.journalLost(recovery.lostFrom);
          this.masters.set(meta.name, group);
          continue;
        }
        const unclean = group.uncleanRegions(recovery.cut);
        if (unclean.length > 0) {
          const redone = await group.redo();
          this.log.warn({ group: meta.name, records: redone }, 'unclean stop: journal records re-applied to the P-VOLs');
        }
        this.masters.set(meta.name, group);
        if (unclean.length > 0) {
          // Not awaited: the resend may wait for journal space, which only the peer can free.
          this.log.warn({ group: meta.name, regions: unclean.length }, 'unclean stop: re-sending active regions as base records');
          void group.resend(unclean).catch((error: unknown) => this.log.error({ group: meta.name, err: (error as Error).message }, 'resend after unclean stop failed'));
        }
        for (const pair of meta.pairs) group.startCopy(pair.pvolLun);
        resumed.push(group);
      } else {
        await this.openedRestore(meta, journal);
      }
    }
    // No host can write before start() returns (the NBD server listens after it): the hold is on in time.
    for (const group of this.masters.values()) group.startHold = startHoldFor(group.meta, this.options.startHoldMs ?? 10_000, this.log);
    this.openedAll = true;
    return resumed;
  }

  /**
   * A role change (swap, takeover, demotion) persists the group document first, then turns the
   * journal and the volumes. After a crash between those steps the document wins: the journal
   * takes the document's role and epoch (empty, from the chain's last first seq) and the volumes
   * their roles.
   */
  async finishRoleChange(meta: GroupMeta, journal: Journal): Promise<void> {
    const last = meta.epochs[meta.epochs.length - 1]!;
    if (journal.role !== meta.role || formatEpoch(journal.epoch) !== formatEpoch(meta.epoch)) {
      this.log.warn({ group: meta.name, journal: journal.role, group_role: meta.role }, 'finishing a role change: the journal takes the group\'s role and epoch');
      // A journal started again after a lost header may have written seqs of this epoch past its
      // first seq before (the lost header named them): it goes on past every seq on its ring.
      const firstSeq = journal.startedAgainPending ? Math.max(last.firstSeq, journal.nextSeq) : last.firstSeq;
      await journal.setRole(meta.role, meta.epoch, { keepRecords: false, firstSeq });
      await this.engine.setRole(this.journalName(meta), meta.role === 'master' ? 'journal-master' : 'journal-restore');
    }
    for (const pair of meta.pairs) {
      const volume = this.engine.volumeById(pair.localVolumeId);
      const role = meta.role === 'master' ? 'pvol' : 'svol';
      if (volume && volume.meta.role !== role) await this.engine.setRole(volume.name, role);
    }
  }

  /** A sending group on `journal`, registered unless `register` is false (start() registers it once redone). */
  newMaster(meta: GroupMeta, journal: Journal, register = true): MasterGroup {
    const regionBytes = meta.regionBytes ?? this.options.defaults.regionBytes;
    const group = new MasterGroup({ meta, journal, engine: this.engine, persist: (m) => this.persist(m), regionBytes, log: this.log, journalDevice: (volume) => this.journalDevice(volume), pacer: this.options.pacer });
    if (register) this.masters.set(meta.name, group);
    group.watchLink(this.options.suspendAfterMs ?? 30_000);
    return group;
  }

  /** A master on a journal just opened: a journal started again after a lost header is acted on first. */
  async openedMaster(meta: GroupMeta, journal: Journal): Promise<MasterGroup> {
    const group = this.newMaster(meta, journal);
    await group.journalStartedAgain();
    return group;
  }

  /** A receiver on a journal just opened, started (after acting on a lost header, as openedMaster). */
  async openedRestore(meta: GroupMeta, journal: Journal): Promise<RestoreGroup> {
    const group = this.newRestore(meta, journal);
    await group.journalStartedAgain();
    group.start();
    return group;
  }

  /** A receiving group on `journal`, registered, not started. */
  newRestore(meta: GroupMeta, journal: Journal): RestoreGroup {
    const peer = this.options.peerChannel(meta.peer);
    if (!peer) throw new TwinstoreError('PEER_UNKNOWN', `group ${meta.name} names peer ${meta.peer}, which is not configured`);
    const group = new RestoreGroup({
      meta, journal, engine: this.engine, peer, persist: (m) => this.persist(m), log: this.log, regionBytes: this.options.defaults.regionBytes,
      journalDevice: (volume) => this.journalDevice(volume),
    });
    this.restores.set(meta.name, group);
    return group;
  }

  /** Every change of a group document is persisted here, and then each pair whose role, status or reason changed is reported. */
  async persist(meta: GroupMeta): Promise<void> {
    await this.engine.persist([{ t: 'doc', kind: GROUP_DOCUMENT, key: meta.name, value: meta }]);
    this.reports.persisted(meta);
  }

  /** A group is deleted here: reported. */
  reportDeleted(name: string): void {
    this.reports.deleted(name);
  }

  /** The group is no longer open here (stopped by the caller: deleted, or changing its role). */
  forget(name: string): void {
    this.masters.delete(name);
    this.restores.delete(name);
  }

  /** Runs a role change of group `name`: meanwhile reopenGroup leaves the group alone. */
  async changingRole<T>(name: string, change: () => Promise<T>): Promise<T> {
    this.changing.add(name);
    try {
      return await change();
    } finally {
      this.changing.delete(name);
    }
  }

  isChanging(name: string): boolean {
    return this.changing.has(name);
  }

  /**
   * A role change that failed half-way (a drive error after the group document was persisted)
   * leaves the group open neither as a master nor as a receiver until a restart. This opens it
   * again from its document, as start() does; called by the next request that needs it (the
   * peer's hello every second, a demotion run again). False when there is nothing to open.
   */
  async reopenGroup(name: string): Promise<boolean> {
    // Before start() has opened every group, a missing one is simply not opened yet.
    if (!this.openedAll || this.changing.has(name) || this.holds(name)) return false;
    const meta = this.engine.documents<GroupMeta>(GROUP_DOCUMENT).get(name);
    if (!meta) return false;
    return this.changingRole(name, async () => {
      const journal = await this.reopenJournal(meta);
      await this.finishRoleChange(meta, journal);
      if (meta.role === 'master') await this.openedMaster(meta, journal);
      else await this.openedRestore(meta, journal);
      this.log.warn({ group: name, role: meta.role }, 'a role change that stopped half-way is finished: the group is open again');
      return true;
    });
  }

  async reopenJournal(meta: GroupMeta): Promise<Journal> {
    return (await Journal.open(this.journalDevice(this.journalVolume(meta)))).journal;
  }

  private journalVolume(meta: GroupMeta): Volume {
    const volume = this.engine.volumeById(meta.journalVolumeId);
    if (!volume) throw new TwinstoreError('VOLUME_NOT_FOUND', `journal of group ${meta.name} is missing`);
    return volume;
  }

  journalName(meta: GroupMeta): string {
    return this.engine.volumeById(meta.journalVolumeId)?.name ?? `#${meta.journalVolumeId}`;
  }

  // ---- lookups ------------------------------------------------------------------

  master(name: string): MasterGroup | undefined {
    return this.masters.get(name);
  }

  restore(name: string): RestoreGroup | undefined {
    return this.restores.get(name);
  }

  /** Is group `name` open here (sending or receiving)? */
  holds(name: string): boolean {
    return this.masters.has(name) || this.restores.has(name);
  }

  masterGroups(): MasterGroup[] {
    return [...this.masters.values()];
  }

  masterGroup(name: string): MasterGroup {
    const group = this.masters.get(name);
    if (!group) throw new TwinstoreError('GROUP_NOT_FOUND', `no journal group ${name} sends from ${this.engine.arrayId}`, { field: 'group' });
    return group;
  }

  restoreGroupOrThrow(name: string): RestoreGroup {
    const group = this.restores.get(name);
    if (!group) throw new TwinstoreError('GROUP_NOT_FOUND', `no journal group ${name} receives on ${this.engine.arrayId}`, { field: 'group' });
    return group;
  }

  /** The link to the group's peer, which must be up. */
  peerOf(group: MasterGroup): PeerChannel {
    const peer = this.options.peerChannel(group.meta.peer);
    if (!peer?.connected) throw new TwinstoreError('LINK_DOWN', `peer ${group.meta.peer} of group ${group.meta.name} is not reachable`);
    return peer;
  }

  peerOfGroup(name: string): string {
    const group = this.masters.get(name) ?? this.restores.get(name);
    if (!group) throw new TwinstoreError('GROUP_NOT_FOUND', `no journal group ${name} on ${this.engine.arrayId}`, { field: 'group' });
    return group.meta.peer;
  }

  /** Our pairs as the peer must hold them (its local volume ids are its own business). */
  pairsForPeer(meta: GroupMeta): PeerPair[] {
    return meta.pairs.map((p) => ({ pvolLun: p.pvolLun, pvolName: p.pvolName, svolName: p.svolName }));
  }

  /** The journaled writer for a volume that is a P-VOL, if it is one. */
  masterOf(volume: Volume): { group: MasterGroup; lun: number } | undefined {
    for (const group of this.masters.values()) {
      const pvol = group.pvolByVolume(volume.meta.id);
      if (pvol) return { group, lun: pvol.pair.pvolLun };
    }
    return undefined;
  }

  /** Who takes host writes for a volume: the journaled path of a P-VOL, or the tracked path of an S-VOL split --rw. */
  writerOf(volume: Volume): { group: MasterGroup | RestoreGroup; lun: number } | undefined {
    const master = this.masterOf(volume);
    if (master) return master;
    for (const group of this.restores.values()) {
      const pair = group.writablePair(volume.meta.id);
      if (pair) return { group, lun: pair.pvolLun };
    }
    return undefined;
  }

  /** Why hosts cannot write a P-VOL here now (FENCED, frozen for a swap, fence data), or undefined (volume list shows it). */
  writesRefusedOf(volume: Volume): string | undefined {
    const master = this.masterOf(volume);
    return master === undefined ? undefined : writeRefusal(master.group.meta, false)?.message;
  }

  /**
   * Where a group stands after a takeover, on this array: `fenced` (the other array took over),
   * `reclaiming` (a resync --discard of the other is under way here) or `took-over` (this array
   * took over without the other: SSWS).
   */
  takeoverState(name: string): 'fenced' | 'reclaiming' | 'took-over' | undefined {
    const group = this.masters.get(name);
    if (!group) return undefined;
    if (group.meta.reclaiming === true) return 'reclaiming';
    if (group.meta.pairs.every((p) => p.status === 'FENCED')) return 'fenced';
    if (group.meta.pairs.every((p) => p.status === 'SSWS')) return 'took-over';
    return undefined;
  }

  /** Every group this array holds: the open ones, then the persisted documents (what a start opens). */
  groupMetas(): GroupMeta[] {
    const open = [...this.masters.values(), ...this.restores.values()].map((group) => group.meta);
    return [...open, ...this.engine.documents<GroupMeta>(GROUP_DOCUMENT).values()];
  }

  /** Whether this array sends (master), receives (restore) or does not hold the group. */
  groupRole(name: string): 'master' | 'restore' | undefined {
    return this.masters.has(name) ? 'master' : this.restores.has(name) ? 'restore' : undefined;
  }

  display(groupName?: string): PairDisplay[] {
    const out: PairDisplay[] = [];
    for (const group of this.masters.values()) {
      if (groupName === undefined || group.meta.name === groupName) out.push(...group.display(this.options.peerChannel(group.meta.peer)?.connected ?? false));
    }
    for (const group of this.restores.values()) {
      if (groupName === undefined || group.meta.name === groupName) out.push(...group.display());
    }
    if (groupName !== undefined && out.length === 0) throw new TwinstoreError('GROUP_NOT_FOUND', `no journal group ${groupName} on ${this.engine.arrayId}`);
    return this.copyRates.annotate(out, Date.now());
  }

  /**
   * Why this array is not ready (GET /readyz), one reason per group; empty once every persisted
   * group is open here and no sending group still holds host writes for its peer's epoch at start.
   */
  unready(): string[] {
    if (!this.openedAll) return ['the journal groups are still being opened'];
    const reasons: string[] = [];
    for (const name of this.engine.documents<GroupMeta>(GROUP_DOCUMENT).keys()) {
      if (this.changing.has(name)) reasons.push(`group ${name}: its role is changing`);
      else if (!this.holds(name)) reasons.push(`group ${name}: not open (a role change stopped half-way; the next hello from the peer opens it again)`);
    }
    for (const group of this.masters.values()) {
      if (group.startHold?.holding) reasons.push(`group ${group.meta.name}: start hold, host writes wait until ${group.meta.peer} has told its epoch`);
    }
    return reasons;
  }

  /** Read-only: every group's journal numbers (for /metrics). */
  groupStats(): GroupStats[] {
    const out: GroupStats[] = [];
    for (const group of this.masters.values()) {
      const receiver = group.receiverCursors;
      out.push({
        ...statsBase(group.meta, group.journal),
        journaledRecords: group.journal.nextSeq,
        storedRecords: Math.max(receiver.storedSeq, receiver.appliedSeq),
        appliedRecords: receiver.appliedSeq,
        tailRecords: group.journal.tailSeq,
        skipToRecords: group.meta.skipTo ?? 0,
      });
    }
    for (const group of this.restores.values()) {
      const journal = group.journal;
      out.push({ ...statsBase(group.meta, journal), journaledRecords: journal.nextSeq, storedRecords: journal.durableSeq, appliedRecords: journal.appliedSeq, tailRecords: journal.tailSeq, skipToRecords: 0 });
    }
    return out;
  }

  journalInfo(name: string): Record<string, unknown> {
    const volume = this.engine.volume(name);
    if (!volume || !volume.meta.role.startsWith('journal')) throw new TwinstoreError('VOLUME_NOT_FOUND', `no journal named ${name}`);
    const group = [...this.masters.values(), ...this.restores.values()].find((g) => g.meta.journalVolumeId === volume.meta.id);
    const base = { name, role: volume.meta.role, sizeBytes: volume.sizeBytes, group: group?.meta.name ?? null };
    if (!group) return base;
    const j = group.journal;
    return {
      ...base,
      instanceId: j.instanceId,
      epoch: group.meta.epoch,
      cursors: { tailSeq: j.tailSeq, nextSeq: j.nextSeq, durableSeq: j.durableSeq, appliedSeq: j.appliedSeq },
      usedBytes: j.usedBytes,
      capacityBytes: j.capacityBytes,
      usedPercent: Math.round((1000 * j.usedBytes) / Math.max(1, j.capacityBytes)) / 10,
    };
  }

  /** Stops every group, even after one failed (a failed sync fails each one's flush); then throws the first error. */
  async stop(): Promise<void> {
    let failure: { error: unknown } | undefined;
    for (const group of [...this.restores.values(), ...this.masters.values()]) {
      await group.stop().catch((error: unknown) => {
        failure ??= { error };
      });
    }
    if (failure !== undefined) throw failure.error;
  }
}

function statsBase(meta: GroupMeta, journal: Journal): Pick<GroupStats, 'group' | 'role' | 'peer' | 'journalUsedBytes' | 'journalCapacityBytes'> {
  return { group: meta.name, role: meta.role, peer: meta.peer, journalUsedBytes: journal.usedBytes, journalCapacityBytes: journal.capacityBytes };
}
