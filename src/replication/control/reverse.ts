// Reverse and reclaim: the old primary demoted to receiver in the peer's newer epoch (the last
// step of a planned swap, or swap.reverse with its writes past the divergence point kept for
// the resync); pair resync --swap after a takeover; pair resync --discard PEER on a fenced old
// primary (a new epoch here, the peer turned receiver). The resync itself is PairCommands'.

import crypto from 'node:crypto';
import { TwinstoreError } from '../../errors.js';
import type { Epoch } from '../../journal/index.js';
import type { MetaRecord } from '../../storage/index.js';
import { crashPoint } from '../../util/crash-at.js';
import type { MasterGroup } from '../master/group.js';
import { linkRequest, type PeerChannel, type SwapDemoteRequest, type SwapReverseRequest } from '../protocol.js';
import { bitmapSetName, formatEpoch, type GroupMeta, type PairMeta } from '../model.js';
import { divergencePoint, newer } from './epoch-watch.js';
import type { PairCommands } from './pair-commands.js';
import type { GroupRegistry } from './registry.js';

/** swap.demote, or swap.reverse (which says where the two sides parted and whose writes may go). */
export type DemoteRequest = SwapDemoteRequest & Partial<Pick<SwapReverseRequest, 'divergenceSeq' | 'discard'>>;

export class Reverse {
  constructor(private readonly groups: GroupRegistry, private readonly pairs: PairCommands) {}

  private get arrayId(): string {
    return this.groups.engine.arrayId;
  }

  /**
   * swap.demote on the old primary: the group turns receiver in the peer's newer epoch. With
   * `keepDirty` (a resync --swap after a takeover), the regions this side wrote past the
   * divergence point move into the S-VOL bitmaps, for the peer's resync to fetch.
   */
  async demote(body: DemoteRequest, keepDirty = false): Promise<void> {
    // A demotion that failed half-way (a drive error) left the group open nowhere: open it again first.
    if (!this.groups.holds(body.group)) await this.groups.reopenGroup(body.group);
    if (this.groups.isChanging(body.group)) throw new TwinstoreError('PAIR_INVALID', `group ${body.group} is changing its role on ${this.arrayId}; try again`, { field: 'group' });
    await this.groups.changingRole(body.group, () => this.demoteNow(body, keepDirty));
  }

  private async demoteNow(body: DemoteRequest, keepDirty: boolean): Promise<void> {
    const master = this.groups.master(body.group);
    if (!master) {
      const restore = this.groups.restore(body.group);
      if (restore && formatEpoch(restore.meta.epoch) === formatEpoch(body.epoch)) return; // done already
      throw new TwinstoreError('GROUP_NOT_FOUND', `no journal group ${body.group} sends from ${this.arrayId}`, { field: 'group' });
    }
    crashPoint(keepDirty ? 'resync-swap.reverse' : 'swap.demote', 'before');
    if (!newer(body.epoch, master.meta.epoch)) {
      throw new TwinstoreError('JOURNAL_EPOCH_STALE', `epoch ${formatEpoch(body.epoch)} is not newer than ${formatEpoch(master.meta.epoch)}`, { field: 'epoch' });
    }
    if (keepDirty) {
      await master.fence(formatEpoch(body.epoch), body.divergenceSeq ?? 0);
      // Both sides wrote after they parted: overwriting ours needs the operator's word.
      const divergent = await master.divergentWrites(body.divergenceSeq ?? 0);
      if (divergent > 0 && body.discard !== this.arrayId) {
        throw new TwinstoreError('PAIR_INVALID', `group ${body.group} diverged: ${this.arrayId} took ${divergent} host writes after seq ${(body.divergenceSeq ?? 0) - 1}, which the new primary never saw; ` +
          `run pair resync --group ${body.group} --swap --discard ${this.arrayId} to overwrite them`, { field: 'discard' });
      }
    }
    const dirty = keepDirty ? master.dirtyRanges() : [];
    await master.stop();
    this.groups.forget(body.group);
    const old = master.meta;
    const pairs: PairMeta[] = body.pairs.map((theirs) => {
      const ours = old.pairs.find((p) => p.pvolName === theirs.svolName);
      if (!ours) throw new TwinstoreError('PAIR_INVALID', `group ${body.group}: no pair with volume ${theirs.svolName} on ${this.arrayId}`);
      return { ...ours, pvolLun: theirs.pvolLun, pvolName: theirs.pvolName, svolName: theirs.svolName, status: keepDirty ? 'COPY' : 'PAIR', statusReason: null, svolWritable: false };
    });
    const meta: GroupMeta = { ...old, role: 'restore', epoch: body.epoch, epochs: [...old.epochs, { epoch: body.epoch, firstSeq: body.firstSeq }], pairs, splitSeq: null, demotePending: false };
    await this.groups.persist(meta);
    // In one commit: the P-VOL bitmaps (keyed by our old LUNs) cleared, their regions put in the
    // S-VOL bitmaps (keyed by the peer's LUNs, which may be the same numbers).
    const regionBytes = old.regionBytes ?? this.groups.options.defaults.regionBytes;
    const records: MetaRecord[] = old.pairs.map((pair) => ({ t: 'regions', set: bitmapSetName(body.group, pair.pvolLun), clear: true }));
    for (const entry of dirty) {
      const pair = pairs.find((p) => p.svolName === entry.pvolName);
      if (pair && entry.ranges.length > 0) records.push({ t: 'regions', set: bitmapSetName(body.group, pair.pvolLun), add: entry.ranges.map(([offset]) => offset / regionBytes) });
    }
    await this.groups.engine.persist(records);
    const journal = await this.groups.reopenJournal(meta);
    await this.groups.finishRoleChange(meta, journal);
    await this.groups.openedRestore(meta, journal);
    crashPoint(keepDirty ? 'resync-swap.reverse' : 'swap.demote', 'after');
    this.groups.log.info({ group: body.group, epoch: formatEpoch(body.epoch) }, 'demoted: this array now receives the group');
  }

  /**
   * pair resync --swap, on the array that took over (SSWS): the old primary becomes the receiver
   * (its writes past the divergence point marked for copying), then a resync copies the regions
   * either side wrote since, from here. No full copy.
   */
  async resyncSwap(name: string, discard: string | null = null): Promise<{ group: string; dirtyBytes: number }> {
    const group = this.groups.masterGroup(name);
    if (!group.meta.pairs.every((p) => p.status === 'SSWS')) {
      throw new TwinstoreError('PAIR_INVALID', `group ${name} is not SSWS on ${this.arrayId}; resync --swap follows a takeover without the primary`, { field: 'group' });
    }
    const peer = this.groups.peerOf(group);
    const divergenceSeq = group.meta.epochs[group.meta.epochs.length - 1]!.firstSeq;
    if (discard !== null && discard !== group.meta.peer) {
      throw new TwinstoreError('BAD_REQUEST', `--discard names the side whose writes are overwritten: with --swap that can only be ${group.meta.peer}`, { field: 'discard' });
    }
    return this.reverseAndResync(peer, group, divergenceSeq, discard);
  }

  /** The peer turns receiver of our epoch (swap.reverse, its writes past `divergenceSeq` marked), then the resync from here. */
  private async reverseAndResync(peer: PeerChannel, group: MasterGroup, divergenceSeq: number, discard: string | null): Promise<{ group: string; dirtyBytes: number }> {
    const name = group.meta.name;
    await linkRequest(peer, 'swap.reverse', { group: name, epoch: group.meta.epoch, firstSeq: group.journal.nextSeq, divergenceSeq, discard, pairs: this.groups.pairsForPeer(group.meta) });
    crashPoint('resync-swap.resync', 'before');
    return this.pairs.resync(name);
  }

  /**
   * pair resync --discard PEER on a fenced old primary (the other array took over, and its writes
   * since are to be dropped): this array becomes the primary again in a new epoch newer than the
   * peer's (its journal starts afresh; its own writes past the divergence point are in its bitmaps
   * since the fence), the peer turns receiver with its writes since the takeover marked, and a
   * resync copies both sets of regions from here. Re-running it goes on from the step reached.
   */
  async reclaim(name: string, discard: string | null): Promise<{ group: string; dirtyBytes: number }> {
    let group = this.groups.masterGroup(name);
    const peer = this.groups.peerOf(group);
    const theirs = (await linkRequest(peer, 'group.hello', { group: name, epoch: group.meta.epoch, epochs: group.meta.epochs })).body;
    if (theirs.role === 'restore' && theirs.epoch && formatEpoch(theirs.epoch) === formatEpoch(group.meta.epoch)) return this.pairs.resync(name); // the peer turned already
    if (theirs.role !== 'master' || !theirs.epoch) throw new TwinstoreError('PAIR_INVALID', `group ${name}: ${group.meta.peer} does not hold it as a primary; nothing to reclaim`, { field: 'group' });
    if (discard !== null && discard !== group.meta.peer) {
      throw new TwinstoreError('BAD_REQUEST', `--discard names the side whose writes are overwritten: without --swap that can only be ${group.meta.peer}`, { field: 'discard' });
    }
    // Refuse before anything changes when the peer wrote since it took over and the operator did not say to drop that.
    const theirWrites = (await linkRequest(peer, 'group.divergence', { group: name, seq: divergencePoint(group.meta.epochs, theirs.epochs) })).body.writes;
    if (theirWrites > 0 && discard !== group.meta.peer) {
      throw new TwinstoreError('PAIR_INVALID', `group ${name} diverged: ${group.meta.peer} took ${theirWrites} host writes since it took over, which ${this.arrayId} never saw; ` +
        `run pair resync --group ${name} --discard ${group.meta.peer} to overwrite them (or pair resync --swap on ${group.meta.peer} to keep them)`, { field: 'discard' });
    }
    if (group.meta.reclaiming !== true) {
      if (!group.meta.pairs.every((p) => p.status === 'FENCED') || !newer(theirs.epoch, group.meta.epoch)) {
        throw new TwinstoreError('PAIR_INVALID', `group ${name} is not fenced by a newer epoch of ${group.meta.peer} on ${this.arrayId}; pair resync --discard ${group.meta.peer} follows a takeover by ${group.meta.peer}`, { field: 'group' });
      }
      group = await this.groups.changingRole(name, () => this.reEpoch(group, theirs.epoch!));
    } else if (!newer(group.meta.epoch, theirs.epoch)) {
      throw new TwinstoreError('INTERNAL', `group ${name} is being reclaimed here but ${group.meta.peer}'s epoch is not older`);
    }
    return this.reverseAndResync(peer, group, divergencePoint(group.meta.epochs, theirs.epochs), discard);
  }

  /** Reclaim, first step: a new epoch above the peer's, persisted; the journal anew; host writes tracked (PSUE). */
  private async reEpoch(old: MasterGroup, theirs: Epoch): Promise<MasterGroup> {
    crashPoint('reclaim.epoch', 'before');
    const epoch: Epoch = { counter: Math.max(old.meta.epoch.counter, theirs.counter) + 1, arrayId: this.arrayId, nonce: crypto.randomBytes(8).toString('hex') };
    await old.stop();
    this.groups.forget(old.meta.name);
    const reason = `reclaimed from ${old.meta.peer}: waiting for it to turn receiver`;
    const meta: GroupMeta = {
      ...old.meta, epoch, epochs: [...old.meta.epochs, { epoch, firstSeq: old.journal.nextSeq }], divergence: null, reclaiming: true,
      pairs: old.meta.pairs.map((p) => ({ ...p, status: 'PSUE', statusReason: reason })),
    };
    await this.groups.persist(meta);
    const journal = await this.groups.reopenJournal(meta);
    await this.groups.finishRoleChange(meta, journal);
    crashPoint('reclaim.epoch', 'after');
    this.groups.log.warn({ group: meta.name, epoch: formatEpoch(epoch) }, 'reclaim: this array is the primary again in a new epoch');
    return this.groups.openedMaster(meta, journal);
  }
}
