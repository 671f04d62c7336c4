// Takeover and the planned swap (docs/architecture.md §6), both sides' steps: on the receiving
// array the takeover command (drain and freeze the primary, promote here, demote it; or, with
// the primary silent, apply what is stored and promote as SSWS); on the primary the drain, the
// freeze with its watchdog, and the thaw. Groups change hands through the registry.

import crypto from 'node:crypto';
import { TwinstoreError, isTwinstoreError } from '../../errors.js';
import type { Epoch } from '../../journal/index.js';
import { crashPoint } from '../../util/crash-at.js';
import { isPlanted } from '../../util/planted.js';
import type { MasterGroup } from '../master/group.js';
import type { RestoreGroup } from '../restore/group.js';
import { linkRequest, type GroupRequest, type PeerChannel, type SwapDrainRequest, type SwapFreezeRequest } from '../protocol.js';
import { formatEpoch, type GroupMeta, type PairMeta } from '../model.js';
import type { GroupRegistry } from './registry.js';

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

export interface TakeoverOptions {
  force: boolean;
  /** No answer from the primary within this: take over without it. */
  peerTimeoutMs: number;
  swap: { lagBytesMax: number; drainMsMax: number; freezeMsMax: number };
}

/** How many times a planned swap sends one step to a primary whose link drops under it. */
const swapAttemptsMax = 3;

/** How often a frozen primary asks its peer, once the freeze has lasted too long, whether it promoted. */
const freezeCheckMs = 1000;

/** Resolves true once the peer's link is up, false after `timeoutMs`. */
async function waitConnected(peer: PeerChannel, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!peer.connected) {
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

export class Takeover {
  /**
   * This array's decision on a planned swap it asked for, by group: while `pending` a frozen
   * primary that asks (swap.status) makes it `aborted`, and it will not promote; once
   * `promoting` the primary stays frozen until it is demoted. In memory: a restart ends any swap.
   */
  private readonly swapDecisions = new Map<string, 'pending' | 'aborted' | 'promoting'>();

  constructor(private readonly groups: GroupRegistry) {}

  private get arrayId(): string {
    return this.groups.engine.arrayId;
  }

  /**
   * takeover, run on the receiving array. With the primary reachable: a planned swap (freeze
   * and drain the primary, promote here with a new epoch, demote the primary; replication then
   * runs the other way with no copy). Without it (no answer within `peerTimeoutMs`): apply what
   * is stored and promote here (SSWS: host writes tracked until `pair resync --swap`).
   * Re-running it finishes a swap that stopped half-way.
   */
  async takeover(name: string, options: TakeoverOptions): Promise<TakeoverResult> {
    const started = Date.now();
    const master = this.groups.master(name);
    if (master) {
      if (master.meta.demotePending === true) {
        await this.demotePeer(master);
        return { group: name, kind: 'swap', consistencySeq: master.journal.nextSeq - 1, epoch: formatEpoch(master.meta.epoch), freezeMs: 0, ms: Date.now() - started, resumed: true };
      }
      if (master.meta.pairs.every((p) => p.status === 'SSWS') && master.meta.epoch.arrayId === this.arrayId) {
        // Taken over already (the answer was lost, or the array died right after): done.
        const firstSeq = master.meta.epochs[master.meta.epochs.length - 1]!.firstSeq;
        return { group: name, kind: 'takeover', consistencySeq: firstSeq - 1, epoch: formatEpoch(master.meta.epoch), freezeMs: 0, ms: Date.now() - started, resumed: true };
      }
      throw new TwinstoreError('PAIR_INVALID', `group ${name} already sends from ${this.arrayId}; run takeover on the other array`, { field: 'group' });
    }
    const restore = this.groups.restoreGroupOrThrow(name);
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
    this.groups.forget(name);
    crashPoint('swap.promote', 'before');
    const group = await this.promote(restore.meta, endSeq, 'PAIR', true);
    this.swapDecisions.delete(name);
    crashPoint('swap.promote', 'after');
    await this.demotePeer(group);
    const freezeMs = Date.now() - frozenAt;
    this.groups.log.info({ group: name, consistencySeq: endSeq - 1, freezeMs }, 'planned swap done: this array is the primary');
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
    const peer = this.groups.options.peerChannel(restore.meta.peer);
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
    const peer = this.groups.options.peerChannel(restore.meta.peer);
    if (peer) await linkRequest(peer, 'swap.thaw', { group: restore.meta.name }).catch(() => undefined);
  }

  private peerSilent(name: string, why: string): undefined {
    this.groups.log.warn({ group: name, why }, 'takeover: the primary did not answer the swap; taking over without it');
    return undefined;
  }

  /** Takeover without the primary (docs/architecture.md §6): apply every stored record, then promote (SSWS). */
  private async takeoverWithoutPeer(restore: RestoreGroup, started: number): Promise<TakeoverResult> {
    const name = restore.meta.name;
    this.swapDecisions.set(name, 'promoting');
    crashPoint('takeover.apply', 'before');
    const applied = await restore.drainAndStop();
    this.groups.forget(name);
    crashPoint('takeover.promote', 'before');
    const group = await this.promote(restore.meta, applied, 'SSWS', false);
    this.swapDecisions.delete(name);
    crashPoint('takeover.promote', 'after');
    this.groups.log.warn({ group: name, consistencySeq: applied - 1 }, 'takeover without the primary: SSWS');
    return { group: name, kind: 'takeover', consistencySeq: applied - 1, epoch: formatEpoch(group.meta.epoch), freezeMs: 0, ms: Date.now() - started, resumed: false };
  }

  /** swap.status, asked by a primary frozen longer than it should be: did we promote (or are we promoting)? */
  swapStatus(body: GroupRequest): { promoted: boolean } {
    const name = body.group;
    if (this.groups.master(name)) return { promoted: true };
    if (this.swapDecisions.get(name) === 'promoting') return { promoted: true };
    if (this.groups.restore(name)) this.swapDecisions.set(name, 'aborted');
    return { promoted: false };
  }

  /**
   * This array becomes the primary of the group: a new epoch in the persisted chain (before any
   * write can happen: the volumes are still S-VOLs), then the journal (new instance id, empty,
   * from `firstSeq`), then the volumes (S-VOL -> P-VOL; their sessions close and reopen writable).
   */
  private promote(old: GroupMeta, firstSeq: number, status: 'PAIR' | 'SSWS', demotePending: boolean): Promise<MasterGroup> {
    return this.groups.changingRole(old.name, () => this.promoteNow(old, firstSeq, status, demotePending));
  }

  private async promoteNow(old: GroupMeta, firstSeq: number, status: 'PAIR' | 'SSWS', demotePending: boolean): Promise<MasterGroup> {
    const epoch: Epoch = { counter: old.epoch.counter + 1, arrayId: this.arrayId, nonce: crypto.randomBytes(8).toString('hex') };
    const pairs: PairMeta[] = old.pairs.map((pair) => {
      const volume = this.groups.engine.volumeById(pair.localVolumeId)!;
      return {
        ...pair, pvolLun: volume.meta.lun, pvolName: pair.svolName, svolName: pair.pvolName,
        status, statusReason: status === 'SSWS' ? 'takeover without the primary' : null,
        copyKind: 'initial', copyOffset: pair.sizeBytes, copyLastSeq: null, svolWritable: false,
      };
    });
    const meta: GroupMeta = {
      ...old, role: 'master', epoch, epochs: [...old.epochs, { epoch, firstSeq }], pairs, splitSeq: null, demotePending,
      regionBytes: old.regionBytes ?? this.groups.options.defaults.regionBytes,
    };
    delete meta.skipDamagedBefore;
    if (isPlanted('epoch-after-promote')) {
      // The planted bug: volumes writable and the group sending before its epoch is durable.
      const journal = await this.groups.reopenJournal(meta);
      await this.groups.finishRoleChange(meta, journal);
      const group = await this.groups.openedMaster(meta, journal);
      await this.groups.persist(meta);
      return group;
    }
    await this.groups.persist(meta);
    const journal = await this.groups.reopenJournal(meta);
    await this.groups.finishRoleChange(meta, journal);
    return this.groups.openedMaster(meta, journal);
  }

  /** The last step of a planned swap: the old primary becomes the receiver of our new epoch. */
  private async demotePeer(group: MasterGroup): Promise<void> {
    const peer = this.groups.peerOf(group);
    const firstSeq = group.meta.epochs[group.meta.epochs.length - 1]!.firstSeq;
    await linkRequest(peer, 'swap.demote', { group: group.meta.name, epoch: group.meta.epoch, firstSeq, pairs: this.groups.pairsForPeer(group.meta) });
    group.meta.demotePending = false;
    await this.groups.persist(group.meta);
  }

  // ---- on the primary --------------------------------------------------------------------------

  /** swap.drain on the primary: step 1 starts (shown as SWAP/draining; host writes go on). */
  startDrain(body: SwapDrainRequest): { lagBytes: number } {
    const group = this.groups.masterGroup(body.group);
    return { lagBytes: group.startDrain(body.drainMsMax) };
  }

  /**
   * swap.freeze on the primary: the drain runs until the lag is small, then the freeze (SWAP
   * persisted, host writes held). A watchdog asks the peer, once the freeze has lasted longer
   * than it may, whether it promoted: if not, the swap is over and this array thaws.
   */
  async freezeForSwap(body: SwapFreezeRequest): Promise<{ endSeq: number }> {
    const group = this.groups.masterGroup(body.group);
    const freezeMsMax = body.freezeMsMax;
    await group.drainTo(body.lagBytesMax, body.drainMsMax);
    crashPoint('swap.freeze', 'before');
    const endSeq = await group.freeze(freezeMsMax);
    crashPoint('swap.freeze', 'after');
    this.watchFreeze(group, freezeMsMax);
    return { endSeq };
  }

  /** Until the group is no longer frozen here: past `freezeMsMax`, ask the peer (every second) whether it promoted. */
  watchFreeze(group: MasterGroup, freezeMsMax: number): void {
    const check = async (): Promise<void> => {
      if (this.groups.master(group.meta.name) !== group || !group.frozen) return;
      const peer = this.groups.options.peerChannel(group.meta.peer);
      try {
        if (!peer?.connected) throw new TwinstoreError('LINK_DOWN', `peer ${group.meta.peer} is not reachable`);
        const { promoted } = (await linkRequest(peer, 'swap.status', { group: group.meta.name })).body;
        if (!promoted) {
          this.groups.log.warn({ group: group.meta.name }, 'the array that froze this group for a swap did not promote: thawing');
          await group.thaw();
          return;
        }
      } catch (error) {
        this.groups.log.warn({ group: group.meta.name, err: (error as Error).message }, 'frozen for a swap and the peer cannot say whether it promoted: host writes stay refused');
      }
      setTimeout(() => void check(), freezeCheckMs).unref();
    };
    setTimeout(() => void check(), freezeMsMax + freezeCheckMs).unref();
  }

  async thawAfterSwap(body: GroupRequest): Promise<void> {
    await this.groups.master(body.group)?.thaw();
  }
}
