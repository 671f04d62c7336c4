// The epoch watch: every second (and when a link comes up) each primary tells its peer its
// epoch (group.hello), and the side with the older one fences itself; the newer primary
// notes a divergence the fenced side reports. Also the two rules on epoch chains that the
// watch and the reverse commands share: where two chains part, and which epoch is newer.

import { TwinstoreError } from '../../errors.js';
import { compareEpochs, type Epoch } from '../../journal/index.js';
import type { MasterGroup } from '../master/group.js';
import { linkRequest, type GroupDivergenceRequest, type GroupHelloAnswer, type GroupHelloRequest } from '../protocol.js';
import { formatEpoch, type GroupMeta } from '../model.js';
import type { GroupRegistry } from './registry.js';

/** How often each primary tells its peer its epoch. */
const helloEveryMs = 1000;

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

export class EpochWatch {
  /** Every second, each primary tells its peer its epoch (and fences itself if the peer's is newer). */
  private helloTimer: NodeJS.Timeout | undefined;

  constructor(private readonly groups: GroupRegistry) {}

  /** group.hello: a primary tells its peer its epoch; the side with the older one fences itself. */
  async hello(body: GroupHelloRequest): Promise<GroupHelloAnswer> {
    // Not every group is open yet: an answer without one would tell a restarting primary it holds the newest epoch.
    if (!this.groups.opened) throw new TwinstoreError('ARRAY_STARTING', `${this.groups.engine.arrayId} is still opening its journal groups; the next hello asks again`);
    if (!this.groups.holds(body.group)) {
      await this.groups.reopenGroup(body.group).catch((error: unknown) => this.groups.log.warn({ group: body.group, err: (error as Error).message }, 'opening the group again failed; the next hello tries again'));
    }
    const ours = this.groups.master(body.group);
    if (ours && newer(body.epoch, ours.meta.epoch)) await ours.fence(formatEpoch(body.epoch), divergencePoint(ours.meta.epochs, body.epochs));
    // The peer's epoch is known here now (and any fence it called for persisted).
    ours?.startHold?.settle();
    const group = ours ?? this.groups.restore(body.group);
    return { epoch: group?.meta.epoch ?? null, role: group?.meta.role ?? null, epochs: group?.meta.epochs ?? [], divergence: group?.meta.divergence ?? null };
  }

  /** group.divergence: how many host writes this side holds past `seq` that the peer never saw. */
  async divergence(body: GroupDivergenceRequest): Promise<{ writes: number }> {
    const master = this.groups.master(body.group);
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
      `pair resync --swap --discard ${peer} keeps this side, pair resync --discard ${this.groups.engine.arrayId} keeps ${peer}'s`;
    const changed = group.meta.pairs.filter((p) => p.status === 'SSWS' && p.statusReason !== reason);
    if (changed.length === 0) return;
    for (const pair of changed) pair.statusReason = reason;
    await this.groups.persist(group.meta);
  }

  start(): void {
    // At once too, not only on the first tick: a start hold waits for the answer.
    this.sayHellos();
    this.helloTimer = setInterval(() => this.sayHellos(), helloEveryMs);
    this.helloTimer.unref();
  }

  stop(): void {
    clearInterval(this.helloTimer);
  }

  /** The link to `peerId` came up: its groups say hello now (a restarted primary's held writes wait for it). */
  peerUp(peerId: string): void {
    if (this.groups.opened) this.sayHellos(peerId);
  }

  private sayHellos(peerId?: string): void {
    for (const group of this.groups.masterGroups()) {
      if (peerId !== undefined && group.meta.peer !== peerId) continue;
      const peer = this.groups.options.peerChannel(group.meta.peer);
      if (!peer?.connected || group.meta.pairs.every((p) => p.status === 'FENCED')) continue;
      void linkRequest(peer, 'group.hello', { group: group.meta.name, epoch: group.meta.epoch, epochs: group.meta.epochs })
        .then(async (response) => {
          const theirs = response.body;
          if (this.groups.master(group.meta.name) !== group) return;
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
}
