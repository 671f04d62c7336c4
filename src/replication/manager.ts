// Journal groups of one array: boots them from the metadata, creates journals
// and pairs (coordinating with the peer over the link), answers the peer's
// link requests, and routes P-VOL host writes into the journaled write path.

import crypto from 'node:crypto';
import { TwinstoreError, isTwinstoreError } from '../errors.js';
import { Journal, compareEpochs, type Epoch, type JournalDevice } from '../journal/index.js';
import type { EngineSyncFailure, MetaRecord, StorageEngine, Volume } from '../storage/index.js';
import type { Logger } from '../util/log.js';
import { crashPoint } from '../util/crash-at.js';
import { isPlanted } from '../util/planted.js';
import { VolumeJournalDevice } from './journal-device.js';
import { MasterGroup } from './master/group.js';
import { startHoldFor } from './start-hold.js';
import { RestoreGroup } from './restore/group.js';
import {
  linkRequest, wireRecords, type GroupDivergenceRequest, type GroupHelloAnswer, type GroupHelloRequest, type GroupRequest, type JournalReadAnswer, type JournalReadRequest,
  type PairJoinRequest, type PairPrepareRequest, type PeerChannel, type PeerPair, type ResyncPrepareAnswer, type ResyncStartedRequest, type SplitRwRequest,
  type SwapDemoteRequest, type SwapDrainRequest, type SwapFreezeRequest, type SwapReverseRequest,
} from './protocol.js';
import { GROUP_DOCUMENT, bitmapSetName, formatEpoch, type FencePolicy, type GroupMeta, type GroupRole, type OverflowPolicy, type PairDisplay, type PairMeta } from './model.js';

export interface PairCreateRequest {
  group: string;
  pvol: string;
  svol: string;
  journal: string;
  remoteJournal: string;
  overflow?: OverflowPolicy | undefined;
  copyPaceBytesPerSecond?: number | undefined;
  fence?: FencePolicy | undefined;
  fenceAfterMs?: number | undefined;
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

export interface TakeoverResult {
  group: string;
  /** `swap`: planned, the old primary now receives; `takeover`: without it (SSWS). */
  kind: 'swap' | 'takeover';
  /** The S-VOLs (now P-VOLs) hold their old P-VOLs as of this seq. */
  consistencySeq: number;
  epoch: string;
  /** How long the old primary's host writes were held (planned swap). */
  freezeMs: number;
  ms: number;
  /** A swap that an earlier run left half-done was finished. */
  resumed: boolean;
}

/**
 * Where two epoch chains part: past their common prefix, the lower first seq of the next epoch
 * in either chain (records from there on were written by one side without the other). 0 when
 * nothing is shared; MAX_SAFE_INTEGER when the chains are the same.
 */
export function divergencePoint(ours: GroupMeta['epochs'], theirs: GroupMeta['epochs']): number {
  let i = 0;
  while (i < ours.length && i < theirs.length && formatEpoch(ours[i]!.epoch) === formatEpoch(theirs[i]!.epoch)) i++;
  if (i === 0) return 0;
  return Math.min(ours[i]?.firstSeq ?? Number.MAX_SAFE_INTEGER, theirs[i]?.firstSeq ?? Number.MAX_SAFE_INTEGER);
}

/**
 * Is epoch `a` newer than `b`? Counters first. Equal counters from different promotions (two
 * arrays that each took over while cut off from each other) still get a total order, by array
 * id and then nonce, so that exactly one of the two fences itself when they meet.
 */
export function newer(a: Epoch, b: Epoch): boolean {
  const order = compareEpochs(a, b);
  if (order !== 'conflict') return order === 'newer';
  return a.arrayId !== b.arrayId ? a.arrayId > b.arrayId : a.nonce > b.nonce;
}

export interface TakeoverOptions {
  force: boolean;
  /** No answer from the primary within this: take over without it. */
  peerTimeoutMs: number;
  swap: { lagBytesMax: number; drainMsMax: number; freezeMsMax: number };
}

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
}

/** How many times a planned swap sends one step to a primary whose link drops under it. */
const swapAttemptsMax = 3;

/** Resolves true once the peer's link is up, false after `timeoutMs`. */
async function waitConnected(peer: PeerChannel, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!peer.connected) {
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

/** Parses ARRAY:NAME; a bare NAME belongs to `localId`. */
export function splitRef(ref: string, localId: string): { array: string; name: string } {
  const at = ref.indexOf(':');
  return at < 0 ? { array: localId, name: ref } : { array: ref.slice(0, at), name: ref.slice(at + 1) };
}

export class ReplicationManager {
  private readonly engine: StorageEngine;
  private readonly log: Logger;
  private readonly masters = new Map<string, MasterGroup>();
  private readonly restores = new Map<string, RestoreGroup>();

  constructor(private readonly options: ReplicationOptions) {
    this.engine = options.engine;
    this.log = options.log;
    this.engine.on('sync-failed', (failure: EngineSyncFailure) => this.syncFailed(failure));
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

  private journalDevice(volume: Volume): JournalDevice {
    return this.options.journalDevice?.(volume, this.engine) ?? new VolumeJournalDevice(volume, this.engine);
  }

  /** Opens every persisted group; resumes copies; after an unclean stop re-sends active regions. */
  async start(): Promise<void> {
    for (const meta of this.engine.documents<GroupMeta>(GROUP_DOCUMENT).values()) {
      const journalVolume = this.engine.volumeById(meta.journalVolumeId);
      if (!journalVolume) throw new TwinstoreError('VOLUME_NOT_FOUND', `journal of group ${meta.name} is missing`);
      const { journal, recovery } = await Journal.open(this.journalDevice(journalVolume));
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
        // Frozen for a swap when it stopped: ask the peer soon whether it promoted.
        if (group.frozen) this.watchFreeze(group, 0);
      } else {
        await this.openedRestore(meta, journal);
      }
    }
    // No host can write before start() returns (the NBD server listens after it): the hold is on in time.
    for (const group of this.masters.values()) group.startHold = startHoldFor(group.meta, this.options.startHoldMs ?? 10_000, this.log);
    this.opened = true;
    this.startHellos();
  }

  /**
   * A role change (swap, takeover, demotion) persists the group document first, then turns the
   * journal and the volumes. After a crash between those steps the document wins: the journal
   * takes the document's role and epoch (empty, from the chain's last first seq) and the volumes
   * their roles.
   */
  private async finishRoleChange(meta: GroupMeta, journal: Journal): Promise<void> {
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

  private newMaster(meta: GroupMeta, journal: Journal, register = true): MasterGroup {
    const regionBytes = meta.regionBytes ?? this.options.defaults.regionBytes;
    const group = new MasterGroup({ meta, journal, engine: this.engine, persist: (m) => this.persist(m), regionBytes, log: this.log });
    if (register) this.masters.set(meta.name, group);
    group.watchLink(this.options.suspendAfterMs ?? 30_000);
    return group;
  }

  /** A master on a journal just opened: a journal started again after a lost header is acted on first. */
  private async openedMaster(meta: GroupMeta, journal: Journal): Promise<MasterGroup> {
    const group = this.newMaster(meta, journal);
    await group.journalStartedAgain();
    return group;
  }

  /** A receiver on a journal just opened, started (after acting on a lost header, as openedMaster). */
  private async openedRestore(meta: GroupMeta, journal: Journal): Promise<RestoreGroup> {
    const group = this.newRestore(meta, journal);
    await group.journalStartedAgain();
    group.start();
    return group;
  }

  private newRestore(meta: GroupMeta, journal: Journal): RestoreGroup {
    const peer = this.options.peerChannel(meta.peer);
    if (!peer) throw new TwinstoreError('PEER_UNKNOWN', `group ${meta.name} names peer ${meta.peer}, which is not configured`);
    const group = new RestoreGroup({
      meta, journal, engine: this.engine, peer, persist: (m) => this.persist(m), log: this.log, regionBytes: this.options.defaults.regionBytes,
      journalDevice: (volume) => this.journalDevice(volume),
    });
    this.restores.set(meta.name, group);
    return group;
  }

  private persist(meta: GroupMeta): Promise<void> {
    return this.engine.persist([{ t: 'doc', kind: GROUP_DOCUMENT, key: meta.name, value: meta }]);
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

  /** NBD sessions of a volume are closed (its read-only flag changed); set by the array. */
  closeSessions: (volumeName: string, reason: string) => void = () => undefined;

  // ---- split and resync (docs/architecture.md §6) ------------------------------------------------

  /**
   * pair split on the master: PSUS from a split point; waits (up to `waitMs`) until the
   * receiver has applied up to it; with `rw` then makes the S-VOLs writable. Re-running it
   * on a split group goes on from where it stopped.
   */
  async split(name: string, rw: boolean, waitMs = 30_000): Promise<{ group: string; splitSeq: number; consistencySeq: number; atSplitPoint: boolean; svolWritable: boolean }> {
    const group = this.masterGroup(name);
    const splitSeq = group.meta.splitSeq !== undefined && group.meta.splitSeq !== null && group.meta.pairs.every((p) => p.status === 'PSUS')
      ? group.meta.splitSeq
      : await group.split();
    const atSplitPoint = await group.waitApplied(splitSeq, waitMs);
    if (rw) {
      if (!atSplitPoint) {
        throw new TwinstoreError('LINK_TIMEOUT', `group ${name} is split, but ${group.meta.peer} has not applied up to the split point (seq ${splitSeq - 1}) yet; run pair split --rw again`);
      }
      await linkRequest(this.peerOf(group), 'pair.split-rw', { group: name, splitSeq });
    }
    return { group: name, splitSeq, consistencySeq: splitSeq - 1, atSplitPoint, svolWritable: rw };
  }

  /** The S-VOL side of split --rw. */
  async makeWritable(body: SplitRwRequest): Promise<void> {
    const group = this.restoreGroupOrThrow(body.group);
    for (const pair of await group.makeWritable(body.splitSeq)) this.closeSessions(pair.svolName, `S-VOL ${pair.svolName} is writable (pair split --rw)`);
  }

  /**
   * pair resync on the master: the S-VOLs read-only again and their bitmaps fetched, merged
   * into ours durably, then cleared there; every marked region is copied (COPY), then PAIR.
   */
  async resync(name: string): Promise<{ group: string; dirtyBytes: number }> {
    const group = this.masterGroup(name);
    // After a failed sync nothing the copy writes could be made durable: restart the array first.
    this.engine.checkSynced();
    const peer = this.peerOf(group);
    const prepared = (await linkRequest(peer, 'pair.resync-prepare', { group: name })).body;
    const { dirtyBytes, resyncFromSeq } = await group.resync(prepared.dirty);
    await linkRequest(peer, 'pair.resync-started', { group: name, resyncFromSeq });
    return { group: name, dirtyBytes };
  }

  async prepareResync(body: GroupRequest): Promise<ResyncPrepareAnswer> {
    const group = this.restoreGroupOrThrow(body.group);
    this.engine.checkSynced();
    const { closed, dirty } = await group.prepareResync();
    for (const pair of closed) this.closeSessions(pair.svolName, `S-VOL ${pair.svolName} is read-only again (pair resync)`);
    return { dirty };
  }

  async resyncStarted(body: ResyncStartedRequest): Promise<void> {
    await this.restoreGroupOrThrow(body.group).resyncStarted(body.resyncFromSeq);
  }

  // ---- swap and takeover (docs/architecture.md §6) ---------------------------------------------------

  /**
   * takeover, run on the receiving array. With the primary reachable: a planned swap (freeze
   * and drain the primary, promote here with a new epoch, demote the primary; replication then
   * runs the other way with no copy). Without it (no answer within `peerTimeoutMs`): apply what
   * is stored and promote here (SSWS: host writes tracked until `pair resync --swap`).
   * Re-running it finishes a swap that stopped half-way.
   */
  async takeover(name: string, options: TakeoverOptions): Promise<TakeoverResult> {
    const started = Date.now();
    const master = this.masters.get(name);
    if (master) {
      if (master.meta.demotePending === true) {
        await this.demotePeer(master);
        return { group: name, kind: 'swap', consistencySeq: master.journal.nextSeq - 1, epoch: formatEpoch(master.meta.epoch), freezeMs: 0, ms: Date.now() - started, resumed: true };
      }
      if (master.meta.pairs.every((p) => p.status === 'SSWS') && master.meta.epoch.arrayId === this.engine.arrayId) {
        // Taken over already (the answer was lost, or the array died right after): done.
        const firstSeq = master.meta.epochs[master.meta.epochs.length - 1]!.firstSeq;
        return { group: name, kind: 'takeover', consistencySeq: firstSeq - 1, epoch: formatEpoch(master.meta.epoch), freezeMs: 0, ms: Date.now() - started, resumed: true };
      }
      throw new TwinstoreError('PAIR_INVALID', `group ${name} already sends from ${this.engine.arrayId}; run takeover on the other array`, { field: 'group' });
    }
    const restore = this.restoreGroupOrThrow(name);
    const copying = restore.meta.pairs.find((p) => p.status === 'COPY' || p.svolInconsistent === true);
    if (copying && !options.force) {
      const why = copying.status === 'COPY' ? 'is in COPY' : `is ${copying.status} in the middle of a copy`;
      throw new TwinstoreError('PAIR_INVALID', `group ${name}: ${copying.svolName} ${why}, so its S-VOL is not consistent; use --force to take over anyway`, { field: 'group' });
    }
    const endSeq = await this.drainAndFreezePeer(restore, options);
    if (endSeq === undefined) return this.takeoverWithoutPeer(restore, started);
    const frozenAt = Date.now();
    const drained = await restore.waitApplied(endSeq, options.swap.freezeMsMax);
    if (!drained || this.swapDecisions.get(name) === 'aborted') {
      this.swapDecisions.set(name, 'aborted');
      await this.thawPeer(restore);
      throw new TwinstoreError('LINK_TIMEOUT', `swap of ${name} aborted: the S-VOLs did not reach seq ${endSeq - 1} within ${options.swap.freezeMsMax} ms; the primary writes again`);
    }
    // From here on this array promotes: a primary asking (swap.status) is told so and stays frozen.
    this.swapDecisions.set(name, 'promoting');
    await restore.stop();
    this.restores.delete(name);
    crashPoint('swap.promote', 'before');
    const group = await this.promote(restore.meta, endSeq, 'PAIR', true);
    this.swapDecisions.delete(name);
    crashPoint('swap.promote', 'after');
    await this.demotePeer(group);
    const freezeMs = Date.now() - frozenAt;
    this.log.info({ group: name, consistencySeq: endSeq - 1, freezeMs }, 'planned swap done: this array is the primary');
    return { group: name, kind: 'swap', consistencySeq: endSeq - 1, epoch: formatEpoch(group.meta.epoch), freezeMs, ms: Date.now() - started, resumed: false };
  }

  /**
   * Steps 1 and 2 of a planned swap, asked of the primary: drain (replication goes on while host
   * writes flow, until the lag is at most `lagBytesMax`), then freeze; returns the seq to apply
   * up to. Undefined when the primary does not answer (or stops answering): take over without it.
   * A primary that answers with an error (not PAIR, a drain that never got there) aborts the swap.
   */
  private async drainAndFreezePeer(restore: RestoreGroup, options: TakeoverOptions): Promise<number | undefined> {
    const name = restore.meta.name;
    this.swapDecisions.set(name, 'pending');
    const { lagBytesMax, drainMsMax, freezeMsMax } = options.swap;
    const drained = await this.swapStep(restore, options, (peer) => linkRequest(peer, 'swap.drain', { group: name, drainMsMax }, { timeoutMs: options.peerTimeoutMs }));
    if (drained === undefined) return undefined;
    const freeze = { group: name, lagBytesMax, drainMsMax, freezeMsMax };
    const frozen = await this.swapStep(restore, options, (peer) => linkRequest(peer, 'swap.freeze', freeze, { timeoutMs: drainMsMax + freezeMsMax + options.peerTimeoutMs }));
    return frozen?.body.endSeq;
  }

  /**
   * One step of a planned swap. It may be sent again (both steps are idempotent on the primary):
   * a link that drops and comes back within peerTimeoutMs does not turn a planned swap into a
   * takeover without it. Undefined when the primary does not answer; an error answer aborts.
   */
  private async swapStep<T>(restore: RestoreGroup, options: TakeoverOptions, send: (peer: PeerChannel) => Promise<T>): Promise<T | undefined> {
    const name = restore.meta.name;
    const peer = this.options.peerChannel(restore.meta.peer);
    for (let attempt = 1; ; attempt++) {
      if (!peer || !(await waitConnected(peer, options.peerTimeoutMs))) return this.peerSilent(name, `no link to ${restore.meta.peer} within ${options.peerTimeoutMs} ms`);
      try {
        return await send(peer);
      } catch (error) {
        // No answer came (the primary never answers a swap step with these): an answer such as
        // SWAP_DRAIN_TIMEOUT means it is alive, and the swap aborts.
        const unreachable = isTwinstoreError(error) && (error.code === 'LINK_DOWN' || error.code === 'LINK_TIMEOUT');
        if (unreachable && attempt < swapAttemptsMax) continue;
        if (unreachable) return this.peerSilent(name, (error as Error).message);
        this.swapDecisions.set(name, 'aborted');
        await this.thawPeer(restore);
        throw error;
      }
    }
  }

  /** An aborted swap: the primary takes host writes again (best effort; it also thaws by itself, swap.status). */
  private async thawPeer(restore: RestoreGroup): Promise<void> {
    const peer = this.options.peerChannel(restore.meta.peer);
    if (peer) await linkRequest(peer, 'swap.thaw', { group: restore.meta.name }).catch(() => undefined);
  }

  private peerSilent(name: string, why: string): undefined {
    this.log.warn({ group: name, why }, 'takeover: the primary did not answer the swap; taking over without it');
    return undefined;
  }

  /** Takeover without the primary (docs/architecture.md §6): apply every stored record, then promote (SSWS). */
  private async takeoverWithoutPeer(restore: RestoreGroup, started: number): Promise<TakeoverResult> {
    const name = restore.meta.name;
    this.swapDecisions.set(name, 'promoting');
    crashPoint('takeover.apply', 'before');
    const applied = await restore.drainAndStop();
    this.restores.delete(name);
    crashPoint('takeover.promote', 'before');
    const group = await this.promote(restore.meta, applied, 'SSWS', false);
    this.swapDecisions.delete(name);
    crashPoint('takeover.promote', 'after');
    this.log.warn({ group: name, consistencySeq: applied - 1 }, 'takeover without the primary: SSWS');
    return { group: name, kind: 'takeover', consistencySeq: applied - 1, epoch: formatEpoch(group.meta.epoch), freezeMs: 0, ms: Date.now() - started, resumed: false };
  }

  /**
   * This array's decision on a planned swap it asked for, by group: while `pending` a frozen
   * primary that asks (swap.status) makes it `aborted`, and it will not promote; once
   * `promoting` the primary stays frozen until it is demoted. In memory: a restart ends any swap.
   */
  private readonly swapDecisions = new Map<string, 'pending' | 'aborted' | 'promoting'>();

  /** swap.status, asked by a primary frozen longer than it should be: did we promote (or are we promoting)? */
  swapStatus(body: GroupRequest): { promoted: boolean } {
    const name = body.group;
    if (this.masters.has(name)) return { promoted: true };
    if (this.swapDecisions.get(name) === 'promoting') return { promoted: true };
    if (this.restores.has(name)) this.swapDecisions.set(name, 'aborted');
    return { promoted: false };
  }

  /**
   * This array becomes the primary of the group: a new epoch in the persisted chain (before any
   * write can happen: the volumes are still S-VOLs), then the journal (new instance id, empty,
   * from `firstSeq`), then the volumes (S-VOL -> P-VOL; their sessions close and reopen writable).
   */
  private async promote(old: GroupMeta, firstSeq: number, status: 'PAIR' | 'SSWS', demotePending: boolean): Promise<MasterGroup> {
    this.changing.add(old.name);
    try {
      return await this.promoteNow(old, firstSeq, status, demotePending);
    } finally {
      this.changing.delete(old.name);
    }
  }

  private async promoteNow(old: GroupMeta, firstSeq: number, status: 'PAIR' | 'SSWS', demotePending: boolean): Promise<MasterGroup> {
    const epoch: Epoch = { counter: old.epoch.counter + 1, arrayId: this.engine.arrayId, nonce: crypto.randomBytes(8).toString('hex') };
    const pairs: PairMeta[] = old.pairs.map((pair) => {
      const volume = this.engine.volumeById(pair.localVolumeId)!;
      return {
        ...pair, pvolLun: volume.meta.lun, pvolName: pair.svolName, svolName: pair.pvolName,
        status, statusReason: status === 'SSWS' ? 'takeover without the primary' : null,
        copyKind: 'initial', copyOffset: pair.sizeBytes, copyLastSeq: null, svolWritable: false,
      };
    });
    const meta: GroupMeta = {
      ...old, role: 'master', epoch, epochs: [...old.epochs, { epoch, firstSeq }], pairs, splitSeq: null, demotePending,
      regionBytes: old.regionBytes ?? this.options.defaults.regionBytes,
    };
    delete meta.skipDamagedBefore;
    if (isPlanted('epoch-after-promote')) {
      // The planted bug: volumes writable and the group sending before its epoch is durable.
      const journal = await this.reopenJournal(meta);
      await this.finishRoleChange(meta, journal);
      const group = await this.openedMaster(meta, journal);
      await this.persist(meta);
      return group;
    }
    await this.persist(meta);
    const journal = await this.reopenJournal(meta);
    await this.finishRoleChange(meta, journal);
    return this.openedMaster(meta, journal);
  }

  /** Groups in the middle of a role change here (demote, promote, reclaim): not to be opened again meanwhile. */
  private readonly changing = new Set<string>();
  /** start() has opened every group. */
  private opened = false;

  /**
   * A role change that failed half-way (a drive error after the group document was persisted)
   * leaves the group open neither as a master nor as a receiver until a restart. This opens it
   * again from its document, as start() does; called by the next request that needs it (the
   * peer's hello every second, a demotion run again). False when there is nothing to open.
   */
  private async reopenGroup(name: string): Promise<boolean> {
    // Before start() has opened every group, a missing one is simply not opened yet.
    if (!this.opened || this.changing.has(name) || this.masters.has(name) || this.restores.has(name)) return false;
    const meta = this.engine.documents<GroupMeta>(GROUP_DOCUMENT).get(name);
    if (!meta) return false;
    this.changing.add(name);
    try {
      const journal = await this.reopenJournal(meta);
      await this.finishRoleChange(meta, journal);
      if (meta.role === 'master') await this.openedMaster(meta, journal);
      else await this.openedRestore(meta, journal);
      this.log.warn({ group: name, role: meta.role }, 'a role change that stopped half-way is finished: the group is open again');
      return true;
    } finally {
      this.changing.delete(name);
    }
  }

  private async reopenJournal(meta: GroupMeta): Promise<Journal> {
    const volume = this.engine.volumeById(meta.journalVolumeId);
    if (!volume) throw new TwinstoreError('VOLUME_NOT_FOUND', `journal of group ${meta.name} is missing`);
    return (await Journal.open(this.journalDevice(volume))).journal;
  }

  /** The last step of a planned swap: the old primary becomes the receiver of our new epoch. */
  private async demotePeer(group: MasterGroup): Promise<void> {
    const peer = this.peerOf(group);
    const firstSeq = group.meta.epochs[group.meta.epochs.length - 1]!.firstSeq;
    await linkRequest(peer, 'swap.demote', { group: group.meta.name, epoch: group.meta.epoch, firstSeq, pairs: this.pairsForPeer(group.meta) });
    group.meta.demotePending = false;
    await this.persist(group.meta);
  }

  /** Our pairs as the peer must hold them (its local volume ids are its own business). */
  private pairsForPeer(meta: GroupMeta): PeerPair[] {
    return meta.pairs.map((p) => ({ pvolLun: p.pvolLun, pvolName: p.pvolName, svolName: p.svolName }));
  }

  /** swap.drain on the primary: step 1 starts (shown as SWAP/draining; host writes go on). */
  startDrain(body: SwapDrainRequest): { lagBytes: number } {
    const group = this.masterGroup(body.group);
    return { lagBytes: group.startDrain(body.drainMsMax) };
  }

  /**
   * swap.freeze on the primary: the drain runs until the lag is small, then the freeze (SWAP
   * persisted, host writes held). A watchdog asks the peer, once the freeze has lasted longer
   * than it may, whether it promoted: if not, the swap is over and this array thaws.
   */
  async freezeForSwap(body: SwapFreezeRequest): Promise<{ endSeq: number }> {
    const group = this.masterGroup(body.group);
    const freezeMsMax = body.freezeMsMax;
    await group.drainTo(body.lagBytesMax, body.drainMsMax);
    crashPoint('swap.freeze', 'before');
    const endSeq = await group.freeze(freezeMsMax);
    crashPoint('swap.freeze', 'after');
    this.watchFreeze(group, freezeMsMax);
    return { endSeq };
  }

  /** Until the group is no longer frozen here: past `freezeMsMax`, ask the peer (every second) whether it promoted. */
  private watchFreeze(group: MasterGroup, freezeMsMax: number): void {
    const check = async (): Promise<void> => {
      if (this.masters.get(group.meta.name) !== group || !group.frozen) return;
      const peer = this.options.peerChannel(group.meta.peer);
      try {
        if (!peer?.connected) throw new TwinstoreError('LINK_DOWN', `peer ${group.meta.peer} is not reachable`);
        const { promoted } = (await linkRequest(peer, 'swap.status', { group: group.meta.name })).body;
        if (!promoted) {
          this.log.warn({ group: group.meta.name }, 'the array that froze this group for a swap did not promote: thawing');
          await group.thaw();
          return;
        }
      } catch (error) {
        this.log.warn({ group: group.meta.name, err: (error as Error).message }, 'frozen for a swap and the peer cannot say whether it promoted: host writes stay refused');
      }
      setTimeout(() => void check(), 1000).unref();
    };
    setTimeout(() => void check(), freezeMsMax + 1000).unref();
  }

  async thawAfterSwap(body: GroupRequest): Promise<void> {
    await this.masters.get(body.group)?.thaw();
  }

  /**
   * swap.demote on the old primary: the group turns receiver in the peer's newer epoch. With
   * `keepDirty` (a resync --swap after a takeover), the regions this side wrote past the
   * divergence point move into the S-VOL bitmaps, for the peer's resync to fetch.
   */
  async demote(body: SwapDemoteRequest & Partial<Pick<SwapReverseRequest, 'divergenceSeq' | 'discard'>>, keepDirty = false): Promise<void> {
    // A demotion that failed half-way (a drive error) left the group open nowhere: open it again first.
    if (!this.masters.has(body.group) && !this.restores.has(body.group)) await this.reopenGroup(body.group);
    if (this.changing.has(body.group)) throw new TwinstoreError('PAIR_INVALID', `group ${body.group} is changing its role on ${this.engine.arrayId}; try again`, { field: 'group' });
    this.changing.add(body.group);
    try {
      await this.demoteNow(body, keepDirty);
    } finally {
      this.changing.delete(body.group);
    }
  }

  private async demoteNow(body: Parameters<ReplicationManager['demote']>[0], keepDirty: boolean): Promise<void> {
    const master = this.masters.get(body.group);
    if (!master) {
      const restore = this.restores.get(body.group);
      if (restore && formatEpoch(restore.meta.epoch) === formatEpoch(body.epoch)) return; // done already
      throw new TwinstoreError('GROUP_NOT_FOUND', `no journal group ${body.group} sends from ${this.engine.arrayId}`, { field: 'group' });
    }
    crashPoint(keepDirty ? 'resync-swap.reverse' : 'swap.demote', 'before');
    if (!newer(body.epoch, master.meta.epoch)) {
      throw new TwinstoreError('JOURNAL_EPOCH_STALE', `epoch ${formatEpoch(body.epoch)} is not newer than ${formatEpoch(master.meta.epoch)}`, { field: 'epoch' });
    }
    if (keepDirty) {
      await master.fence(formatEpoch(body.epoch), body.divergenceSeq ?? 0);
      // Both sides wrote after they parted: overwriting ours needs the operator's word.
      const divergent = await master.divergentWrites(body.divergenceSeq ?? 0);
      if (divergent > 0 && body.discard !== this.engine.arrayId) {
        throw new TwinstoreError('PAIR_INVALID', `group ${body.group} diverged: ${this.engine.arrayId} took ${divergent} host writes after seq ${(body.divergenceSeq ?? 0) - 1}, which the new primary never saw; ` +
          `run pair resync --group ${body.group} --swap --discard ${this.engine.arrayId} to overwrite them`, { field: 'discard' });
      }
    }
    const dirty = keepDirty ? master.dirtyRanges() : [];
    await master.stop();
    this.masters.delete(body.group);
    const old = master.meta;
    const pairs: PairMeta[] = body.pairs.map((theirs) => {
      const ours = old.pairs.find((p) => p.pvolName === theirs.svolName);
      if (!ours) throw new TwinstoreError('PAIR_INVALID', `group ${body.group}: no pair with volume ${theirs.svolName} on ${this.engine.arrayId}`);
      return { ...ours, pvolLun: theirs.pvolLun, pvolName: theirs.pvolName, svolName: theirs.svolName, status: keepDirty ? 'COPY' : 'PAIR', statusReason: null, svolWritable: false };
    });
    const meta: GroupMeta = { ...old, role: 'restore', epoch: body.epoch, epochs: [...old.epochs, { epoch: body.epoch, firstSeq: body.firstSeq }], pairs, splitSeq: null, demotePending: false };
    await this.persist(meta);
    // In one commit: the P-VOL bitmaps (keyed by our old LUNs) cleared, their regions put in the
    // S-VOL bitmaps (keyed by the peer's LUNs, which may be the same numbers).
    const regionBytes = old.regionBytes ?? this.options.defaults.regionBytes;
    const records: MetaRecord[] = old.pairs.map((pair) => ({ t: 'regions', set: bitmapSetName(body.group, pair.pvolLun), clear: true }));
    for (const entry of dirty) {
      const pair = pairs.find((p) => p.svolName === entry.pvolName);
      if (pair && entry.ranges.length > 0) records.push({ t: 'regions', set: bitmapSetName(body.group, pair.pvolLun), add: entry.ranges.map(([offset]) => offset / regionBytes) });
    }
    await this.engine.persist(records);
    const journal = await this.reopenJournal(meta);
    await this.finishRoleChange(meta, journal);
    await this.openedRestore(meta, journal);
    crashPoint(keepDirty ? 'resync-swap.reverse' : 'swap.demote', 'after');
    this.log.info({ group: body.group, epoch: formatEpoch(body.epoch) }, 'demoted: this array now receives the group');
  }

  /**
   * pair resync --swap, on the array that took over (SSWS): the old primary becomes the receiver
   * (its writes past the divergence point marked for copying), then a resync copies the regions
   * either side wrote since, from here. No full copy.
   */
  async resyncSwap(name: string, discard: string | null = null): Promise<{ group: string; dirtyBytes: number }> {
    const group = this.masterGroup(name);
    if (!group.meta.pairs.every((p) => p.status === 'SSWS')) {
      throw new TwinstoreError('PAIR_INVALID', `group ${name} is not SSWS on ${this.engine.arrayId}; resync --swap follows a takeover without the primary`, { field: 'group' });
    }
    const peer = this.peerOf(group);
    const divergenceSeq = group.meta.epochs[group.meta.epochs.length - 1]!.firstSeq;
    if (discard !== null && discard !== group.meta.peer) {
      throw new TwinstoreError('BAD_REQUEST', `--discard names the side whose writes are overwritten: with --swap that can only be ${group.meta.peer}`, { field: 'discard' });
    }
    await linkRequest(peer, 'swap.reverse', { group: name, epoch: group.meta.epoch, firstSeq: group.journal.nextSeq, divergenceSeq, discard, pairs: this.pairsForPeer(group.meta) });
    crashPoint('resync-swap.resync', 'before');
    return this.resync(name);
  }

  /**
   * pair resync --discard PEER on a fenced old primary (the other array took over, and its writes
   * since are to be dropped): this array becomes the primary again in a new epoch newer than the
   * peer's (its journal starts afresh; its own writes past the divergence point are in its bitmaps
   * since the fence), the peer turns receiver with its writes since the takeover marked, and a
   * resync copies both sets of regions from here. Re-running it goes on from the step reached.
   */
  async reclaim(name: string, discard: string | null): Promise<{ group: string; dirtyBytes: number }> {
    let group = this.masterGroup(name);
    const peer = this.peerOf(group);
    const theirs = (await linkRequest(peer, 'group.hello', { group: name, epoch: group.meta.epoch, epochs: group.meta.epochs })).body;
    if (theirs.role === 'restore' && theirs.epoch && formatEpoch(theirs.epoch) === formatEpoch(group.meta.epoch)) return this.resync(name); // the peer turned already
    if (theirs.role !== 'master' || !theirs.epoch) throw new TwinstoreError('PAIR_INVALID', `group ${name}: ${group.meta.peer} does not hold it as a primary; nothing to reclaim`, { field: 'group' });
    if (discard !== null && discard !== group.meta.peer) {
      throw new TwinstoreError('BAD_REQUEST', `--discard names the side whose writes are overwritten: without --swap that can only be ${group.meta.peer}`, { field: 'discard' });
    }
    // Refuse before anything changes when the peer wrote since it took over and the operator did not say to drop that.
    const theirWrites = (await linkRequest(peer, 'group.divergence', { group: name, seq: divergencePoint(group.meta.epochs, theirs.epochs) })).body.writes;
    if (theirWrites > 0 && discard !== group.meta.peer) {
      throw new TwinstoreError('PAIR_INVALID', `group ${name} diverged: ${group.meta.peer} took ${theirWrites} host writes since it took over, which ${this.engine.arrayId} never saw; ` +
        `run pair resync --group ${name} --discard ${group.meta.peer} to overwrite them (or pair resync --swap on ${group.meta.peer} to keep them)`, { field: 'discard' });
    }
    if (group.meta.reclaiming !== true) {
      if (!group.meta.pairs.every((p) => p.status === 'FENCED') || !newer(theirs.epoch, group.meta.epoch)) {
        throw new TwinstoreError('PAIR_INVALID', `group ${name} is not fenced by a newer epoch of ${group.meta.peer} on ${this.engine.arrayId}; pair resync --discard ${group.meta.peer} follows a takeover by ${group.meta.peer}`, { field: 'group' });
      }
      group = await this.reEpoch(group, theirs.epoch);
    } else if (!newer(group.meta.epoch, theirs.epoch)) {
      throw new TwinstoreError('INTERNAL', `group ${name} is being reclaimed here but ${group.meta.peer}'s epoch is not older`);
    }
    const divergenceSeq = divergencePoint(group.meta.epochs, theirs.epochs);
    await linkRequest(peer, 'swap.reverse', { group: name, epoch: group.meta.epoch, firstSeq: group.journal.nextSeq, divergenceSeq, discard, pairs: this.pairsForPeer(group.meta) });
    crashPoint('resync-swap.resync', 'before');
    return this.resync(name);
  }

  /** Reclaim, first step: a new epoch above the peer's, persisted; the journal anew; host writes tracked (PSUE). */
  private async reEpoch(old: MasterGroup, theirs: Epoch): Promise<MasterGroup> {
    this.changing.add(old.meta.name);
    try {
      return await this.reEpochNow(old, theirs);
    } finally {
      this.changing.delete(old.meta.name);
    }
  }

  private async reEpochNow(old: MasterGroup, theirs: Epoch): Promise<MasterGroup> {
    crashPoint('reclaim.epoch', 'before');
    const epoch: Epoch = { counter: Math.max(old.meta.epoch.counter, theirs.counter) + 1, arrayId: this.engine.arrayId, nonce: crypto.randomBytes(8).toString('hex') };
    await old.stop();
    this.masters.delete(old.meta.name);
    const reason = `reclaimed from ${old.meta.peer}: waiting for it to turn receiver`;
    const meta: GroupMeta = {
      ...old.meta, epoch, epochs: [...old.meta.epochs, { epoch, firstSeq: old.journal.nextSeq }], divergence: null, reclaiming: true,
      pairs: old.meta.pairs.map((p) => ({ ...p, status: 'PSUE', statusReason: reason })),
    };
    await this.persist(meta);
    const journal = await this.reopenJournal(meta);
    await this.finishRoleChange(meta, journal);
    crashPoint('reclaim.epoch', 'after');
    this.log.warn({ group: meta.name, epoch: formatEpoch(epoch) }, 'reclaim: this array is the primary again in a new epoch');
    return this.openedMaster(meta, journal);
  }

  /** group.hello: a primary tells its peer its epoch; the side with the older one fences itself. */
  async hello(body: GroupHelloRequest): Promise<GroupHelloAnswer> {
    // Not every group is open yet: an answer without one would tell a restarting primary it holds the newest epoch.
    if (!this.opened) throw new TwinstoreError('ARRAY_STARTING', `${this.engine.arrayId} is still opening its journal groups; the next hello asks again`);
    if (!this.masters.has(body.group) && !this.restores.has(body.group)) {
      await this.reopenGroup(body.group).catch((error: unknown) => this.log.warn({ group: body.group, err: (error as Error).message }, 'opening the group again failed; the next hello tries again'));
    }
    const ours = this.masters.get(body.group);
    if (ours && newer(body.epoch, ours.meta.epoch)) await ours.fence(formatEpoch(body.epoch), divergencePoint(ours.meta.epochs, body.epochs));
    // The peer's epoch is known here now (and any fence it called for persisted).
    ours?.startHold?.settle();
    const group = ours ?? this.restores.get(body.group);
    return { epoch: group?.meta.epoch ?? null, role: group?.meta.role ?? null, epochs: group?.meta.epochs ?? [], divergence: group?.meta.divergence ?? null };
  }

  /** group.divergence: how many host writes this side holds past `seq` that the peer never saw. */
  async divergence(body: GroupDivergenceRequest): Promise<{ writes: number }> {
    const master = this.masters.get(body.group);
    return { writes: master ? await master.divergentWrites(body.seq) : 0 };
  }

  /**
   * The newer primary learns that the fenced side holds writes it never saw: its pairs show it,
   * so the operator sees the divergence on both arrays before choosing the side to discard.
   */
  private async noteDivergence(group: MasterGroup, theirs: GroupHelloAnswer): Promise<void> {
    const writes = theirs.divergence?.writes ?? 0;
    if (writes <= 0 || theirs.role !== 'master' || !theirs.epoch || !newer(group.meta.epoch, theirs.epoch)) return;
    const peer = group.meta.peer;
    const reason = `diverged: ${peer} took ${writes} host writes after seq ${theirs.divergence!.seq - 1} that this array never saw; ` +
      `pair resync --swap --discard ${peer} keeps this side, pair resync --discard ${this.engine.arrayId} keeps ${peer}'s`;
    const changed = group.meta.pairs.filter((p) => p.status === 'SSWS' && p.statusReason !== reason);
    if (changed.length === 0) return;
    for (const pair of changed) pair.statusReason = reason;
    await this.persist(group.meta);
  }

  /** Every second, each primary tells its peer its epoch (and fences itself if the peer's is newer). */
  private helloTimer: NodeJS.Timeout | undefined;

  private startHellos(): void {
    // At once too, not only on the first tick: a start hold waits for the answer.
    this.sayHellos();
    this.helloTimer = setInterval(() => this.sayHellos(), 1000);
    this.helloTimer.unref();
  }

  /** The link to `peerId` came up: its groups say hello now (a restarted primary's held writes wait for it). */
  peerUp(peerId: string): void {
    if (this.opened) this.sayHellos(peerId);
  }

  private sayHellos(peerId?: string): void {
    for (const group of this.masters.values()) {
      if (peerId !== undefined && group.meta.peer !== peerId) continue;
      const peer = this.options.peerChannel(group.meta.peer);
      if (!peer?.connected || group.meta.pairs.every((p) => p.status === 'FENCED')) continue;
      void linkRequest(peer, 'group.hello', { group: group.meta.name, epoch: group.meta.epoch, epochs: group.meta.epochs })
        .then(async (response) => {
          const theirs = response.body;
          if (this.masters.get(group.meta.name) !== group) return;
          if (theirs.role === 'master' && theirs.epoch && newer(theirs.epoch, group.meta.epoch)) {
            await group.fence(formatEpoch(theirs.epoch), divergencePoint(group.meta.epochs, theirs.epochs));
          } else {
            await this.noteDivergence(group, theirs);
          }
          group.startHold?.settle();
        })
        .catch(() => undefined);
    }
  }

  private masterGroup(name: string): MasterGroup {
    const group = this.masters.get(name);
    if (!group) throw new TwinstoreError('GROUP_NOT_FOUND', `no journal group ${name} sends from ${this.engine.arrayId}`, { field: 'group' });
    return group;
  }

  private restoreGroupOrThrow(name: string): RestoreGroup {
    const group = this.restores.get(name);
    if (!group) throw new TwinstoreError('GROUP_NOT_FOUND', `no journal group ${name} receives on ${this.engine.arrayId}`, { field: 'group' });
    return group;
  }

  private peerOf(group: MasterGroup): PeerChannel {
    const peer = this.options.peerChannel(group.meta.peer);
    if (!peer?.connected) throw new TwinstoreError('LINK_DOWN', `peer ${group.meta.peer} of group ${group.meta.name} is not reachable`);
    return peer;
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

  // ---- journals ---------------------------------------------------------------

  async createJournal(name: string, sizeBytes: number): Promise<Volume> {
    if (sizeBytes < Journal.MIN_BYTES) {
      throw new TwinstoreError('BAD_REQUEST', `a journal must hold at least 4x the largest write: ${Journal.MIN_BYTES} bytes`, { field: 'size' });
    }
    const volume = await this.engine.createVolume({ name, sizeBytes, role: 'journal-free' });
    await volume.writeZeroes(0, sizeBytes, true);
    await this.engine.flush();
    return volume;
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

  // ---- pairs --------------------------------------------------------------------

  /** pair create, run on the master (P-VOL) array. */
  async createPair(request: PairCreateRequest): Promise<PairDisplay[]> {
    const local = this.engine.arrayId;
    const pvolRef = splitRef(request.pvol, local);
    const svolRef = splitRef(request.svol, local);
    const journalRef = splitRef(request.journal, local);
    const remoteJournalRef = splitRef(request.remoteJournal, svolRef.array);
    if (pvolRef.array !== local || journalRef.array !== local) {
      throw new TwinstoreError('BAD_REQUEST', `run pair create on the P-VOL's array or name it ${local}:NAME`, { field: 'pvol' });
    }
    if (svolRef.array === local || remoteJournalRef.array !== svolRef.array) {
      throw new TwinstoreError('BAD_REQUEST', 'the S-VOL and the remote journal must be on the peer array (PEER:NAME)', { field: 'svol' });
    }
    const peer = this.options.peerChannel(svolRef.array);
    if (!peer) throw new TwinstoreError('PEER_UNKNOWN', `no peer ${svolRef.array}; add it with peer add`);
    const pvol = this.engine.volume(pvolRef.name);
    if (!pvol) throw new TwinstoreError('VOLUME_NOT_FOUND', `no volume ${pvolRef.name}`, { field: 'pvol' });
    if (pvol.meta.role !== 'simplex') throw new TwinstoreError('PAIR_INVALID', `${pvolRef.name} is ${pvol.meta.role}, not simplex`, { field: 'pvol' });
    const existing = this.masters.get(request.group);
    const journalVolume = this.engine.volume(journalRef.name);
    if (!journalVolume) throw new TwinstoreError('VOLUME_NOT_FOUND', `no journal ${journalRef.name}`, { field: 'journal' });
    if (existing && existing.meta.journalVolumeId !== journalVolume.meta.id) {
      throw new TwinstoreError('PAIR_INVALID', `group ${request.group} already uses journal ${this.journalName(existing.meta)}; name that one`, { field: 'journal' });
    }
    if (!existing && journalVolume.meta.role !== 'journal-free') {
      throw new TwinstoreError('PAIR_INVALID', `journal ${journalRef.name} is ${journalVolume.meta.role}; a new group needs a journal-free journal`, { field: 'journal' });
    }
    if (this.restores.has(request.group)) throw new TwinstoreError('PAIR_INVALID', `group ${request.group} receives on this array`, { field: 'group' });
    await linkRequest(peer, 'pair.prepare', { group: request.group, svol: svolRef.name, journal: remoteJournalRef.name, sizeBytes: pvol.sizeBytes, master: local });

    const epoch: Epoch = existing?.meta.epoch ?? { counter: 1, arrayId: local, nonce: crypto.randomBytes(8).toString('hex') };
    const pair: PairMeta = {
      pvolLun: pvol.meta.lun,
      pvolName: pvol.name,
      svolName: svolRef.name,
      localVolumeId: pvol.meta.id,
      sizeBytes: pvol.sizeBytes,
      status: 'COPY',
      statusReason: null,
      copyOffset: 0,
      copyLastSeq: null,
    };
    let group = existing;
    if (!group) {
      const journal = await Journal.format(this.journalDevice(journalVolume), { groupId: request.group, role: 'master', epoch, firstSeq: 0 });
      await this.engine.setRole(journalVolume.name, 'journal-master');
      const meta: GroupMeta = {
        name: request.group,
        role: 'master',
        peer: svolRef.array,
        journalVolumeId: journalVolume.meta.id,
        remoteJournal: remoteJournalRef.name,
        overflow: request.overflow ?? this.options.defaults.overflow,
        throttleMsMax: this.options.defaults.throttleMsMax,
        copyPaceBytesPerSecond: request.copyPaceBytesPerSecond ?? 0,
        fence: request.fence ?? this.options.defaults.fence,
        fenceAfterMs: request.fenceAfterMs ?? this.options.defaults.fenceAfterMs,
        regionBytes: this.options.defaults.regionBytes,
        epoch,
        epochs: [{ epoch, firstSeq: 0 }],
        pairs: [],
        createdAt: new Date().toISOString(),
      };
      group = this.newMaster(meta, journal);
    }
    try {
      await linkRequest(peer, 'pair.join', {
        group: request.group, master: local, epoch, journal: remoteJournalRef.name, remoteJournal: journalRef.name, pair: { ...pair, localVolumeId: -1 },
        ...(group.meta.fence === undefined ? {} : { fence: group.meta.fence }), ...(group.meta.fenceAfterMs === undefined ? {} : { fenceAfterMs: group.meta.fenceAfterMs }),
      });
    } catch (error) {
      if (!existing) {
        // The peer did not join: give the journal back, as if the group had never been made.
        this.masters.delete(request.group);
        await group.journal.close().catch(() => undefined);
        await this.engine.setRole(journalVolume.name, 'journal-free');
      }
      throw error;
    }
    group.meta.pairs.push(pair);
    group.addPair(pair, group.meta.regionBytes ?? this.options.defaults.regionBytes);
    await this.persist(group.meta);
    await this.engine.setRole(pvol.name, 'pvol');
    group.startCopy(pair.pvolLun);
    this.log.info({ group: request.group, pvol: pvol.name, svol: request.svol }, 'pair created');
    return this.display(request.group);
  }

  /** On the restore side: can this S-VOL and journal join group `group`? */
  prepare(body: PairPrepareRequest): void {
    const svol = this.engine.volume(body.svol);
    if (!svol) throw new TwinstoreError('VOLUME_NOT_FOUND', `no S-VOL ${body.svol} on ${this.engine.arrayId}`, { field: 'svol' });
    if (svol.meta.role !== 'simplex') throw new TwinstoreError('PAIR_INVALID', `S-VOL ${body.svol} is ${svol.meta.role}, not SMPL`, { field: 'svol' });
    if (svol.sizeBytes !== body.sizeBytes) {
      throw new TwinstoreError('PAIR_INVALID', `S-VOL ${body.svol} holds ${svol.sizeBytes} bytes, the P-VOL ${body.sizeBytes}`, { field: 'svol' });
    }
    if (this.openSessions(svol.name) > 0) throw new TwinstoreError('VOLUME_BUSY', `S-VOL ${body.svol} is open by a host; close it first`, { field: 'svol' });
    const journal = this.engine.volume(body.journal);
    if (!journal) throw new TwinstoreError('VOLUME_NOT_FOUND', `no journal ${body.journal} on ${this.engine.arrayId}`, { field: 'remoteJournal' });
    const existing = this.restores.get(body.group);
    if (existing && existing.meta.journalVolumeId !== journal.meta.id) {
      throw new TwinstoreError('PAIR_INVALID', `group ${body.group} already uses journal ${this.journalName(existing.meta)} on ${this.engine.arrayId}`, { field: 'remoteJournal' });
    }
    if (!existing && journal.meta.role !== 'journal-free') {
      throw new TwinstoreError('PAIR_INVALID', `journal ${body.journal} is ${journal.meta.role}; a new group needs a journal-free journal`, { field: 'remoteJournal' });
    }
    if (this.masters.has(body.group)) throw new TwinstoreError('PAIR_INVALID', `group ${body.group} sends from this array`, { field: 'group' });
  }

  private journalName(meta: GroupMeta): string {
    return this.engine.volumeById(meta.journalVolumeId)?.name ?? `#${meta.journalVolumeId}`;
  }

  /** Session counts come from the NBD layer; set by the array. */
  openSessions: (volumeName: string) => number = () => 0;

  async join(body: PairJoinRequest): Promise<void> {
    this.prepare({ group: body.group, svol: body.pair.svolName, journal: body.journal, sizeBytes: body.pair.sizeBytes, master: body.master });
    const svol = this.engine.volume(body.pair.svolName)!;
    let group = this.restores.get(body.group);
    if (!group) {
      const journalVolume = this.engine.volume(body.journal)!;
      const journal = await Journal.format(this.journalDevice(journalVolume), { groupId: body.group, role: 'restore', epoch: body.epoch, firstSeq: 0 });
      await this.engine.setRole(journalVolume.name, 'journal-restore');
      const meta: GroupMeta = {
        name: body.group,
        role: 'restore',
        peer: body.master,
        journalVolumeId: journalVolume.meta.id,
        remoteJournal: body.remoteJournal,
        overflow: this.options.defaults.overflow,
        throttleMsMax: this.options.defaults.throttleMsMax,
        copyPaceBytesPerSecond: 0,
        // The group's link-down policy, for when this array becomes its primary (swap, takeover).
        fence: body.fence ?? this.options.defaults.fence,
        fenceAfterMs: body.fenceAfterMs ?? this.options.defaults.fenceAfterMs,
        regionBytes: this.options.defaults.regionBytes,
        epoch: body.epoch,
        epochs: [{ epoch: body.epoch, firstSeq: 0 }],
        pairs: [],
        createdAt: new Date().toISOString(),
      };
      group = this.newRestore(meta, journal);
      group.start();
    }
    group.meta.pairs.push({ ...body.pair, localVolumeId: svol.meta.id });
    await this.persist(group.meta);
    await this.engine.setRole(svol.name, 'svol');
  }

  /** The master side of `journal.read`. */
  async readJournal(body: JournalReadRequest): Promise<{ body: JournalReadAnswer; payload: Buffer[] }> {
    const group = this.masters.get(body.group);
    if (!group) throw new TwinstoreError('PAIR_INVALID', `no group ${body.group} sends from ${this.engine.arrayId}`);
    const { records, payload } = wireRecords(await group.readJournal(body));
    const pairs = group.meta.pairs.map((p) => ({ pvolLun: p.pvolLun, status: p.status, statusReason: p.statusReason }));
    const skipTo = group.meta.skipTo ?? 0;
    // Until the receiver has applied past the skip point (records it stored below it may be held
    // by an atomic unit that never ends), each answer says it.
    const skip = body.fromSeq < skipTo || body.appliedSeq < skipTo;
    // A receiver that lost its journal: every region is marked now (readJournal did it), and its journal goes on at skipTo.
    if (body.journalLost === true) return { body: { records: [], masterNextSeq: group.journal.nextSeq, pairs, skipTo, fullCopyMarked: true }, payload: [] };
    return { body: { records, masterNextSeq: group.journal.nextSeq, pairs, ...(skip ? { skipTo } : {}) }, payload };
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
    return out;
  }

  peerOfGroup(name: string): string {
    const group = this.masters.get(name) ?? this.restores.get(name);
    if (!group) throw new TwinstoreError('GROUP_NOT_FOUND', `no journal group ${name} on ${this.engine.arrayId}`, { field: 'group' });
    return group.meta.peer;
  }

  /** Ends every pair of the group on this array: volumes back to simplex, the journal free again. */
  async deleteGroup(name: string): Promise<void> {
    const master = this.masters.get(name);
    const restore = this.restores.get(name);
    const group = master ?? restore;
    if (!group) throw new TwinstoreError('GROUP_NOT_FOUND', `no journal group ${name} on ${this.engine.arrayId}`, { field: 'group' });
    await (master ?? restore)!.stop();
    this.masters.delete(name);
    this.restores.delete(name);
    for (const pair of group.meta.pairs) {
      const volume = this.engine.volumeById(pair.localVolumeId);
      if (volume) await this.engine.setRole(volume.name, 'simplex');
      await this.engine.persist([{ t: 'regions', set: `bitmap:${name}:${pair.pvolLun}`, clear: true }]);
    }
    const journal = this.engine.volumeById(group.meta.journalVolumeId);
    if (journal) await this.engine.setRole(journal.name, 'journal-free');
    await this.engine.persist([{ t: 'doc', kind: GROUP_DOCUMENT, key: name }]);
    this.log.info({ group: name }, 'journal group deleted');
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

  restoreGroup(name: string): RestoreGroup | undefined {
    return this.restores.get(name);
  }

  /** Stops every group, even after one failed (a failed sync fails each one's flush); then throws the first error. */
  async stop(): Promise<void> {
    clearInterval(this.helloTimer);
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
