// The replication control of one array, as the array and the API see it: a thin facade over
// the parts in control/ (the group registry that owns the groups, the pair commands, takeover
// and swap, reverse and reclaim, the epoch watch). It builds them, starts and stops them in
// order, and hands each call to the part whose job it is.

import type { Volume } from '../storage/index.js';
import type { MasterGroup } from './master/group.js';
import type { RestoreGroup } from './restore/group.js';
import type {
  GroupDivergenceRequest, GroupHelloAnswer, GroupHelloRequest, GroupRequest, JournalReadAnswer, JournalReadRequest, PairJoinRequest, PairPrepareRequest,
  ResyncPrepareAnswer, ResyncStartedRequest, SplitRwRequest, SwapDrainRequest, SwapFreezeRequest,
} from './protocol.js';
import type { GroupMeta, PairDisplay } from './model.js';
import { EpochWatch } from './control/epoch-watch.js';
import { PairCommands, type PairCreateRequest } from './control/pair-commands.js';
import { GroupRegistry, type GroupStats, type ReplicationOptions } from './control/registry.js';
import { Reverse, type DemoteRequest } from './control/reverse.js';
import { Takeover, type TakeoverOptions, type TakeoverResult } from './control/takeover.js';

export { divergencePoint, newer } from './control/epoch-watch.js';
export { splitRef, type PairCreateRequest } from './control/pair-commands.js';
export type { GroupStats, JournalDeviceFactory, ReplicationOptions } from './control/registry.js';
export type { TakeoverOptions, TakeoverResult } from './control/takeover.js';

export class ReplicationManager {
  private readonly groups: GroupRegistry;
  private readonly pairs: PairCommands;
  private readonly takeovers: Takeover;
  private readonly reverse: Reverse;
  private readonly epochs: EpochWatch;

  constructor(options: ReplicationOptions) {
    this.groups = new GroupRegistry(options);
    this.pairs = new PairCommands(this.groups);
    this.takeovers = new Takeover(this.groups);
    this.reverse = new Reverse(this.groups, this.pairs);
    this.epochs = new EpochWatch(this.groups);
  }

  /** Opens every persisted group, watches the ones frozen for a swap when the array stopped, then says hello. */
  async start(): Promise<void> {
    // Frozen for a swap when it stopped: ask the peer soon whether it promoted.
    for (const group of await this.groups.start()) if (group.frozen) this.takeovers.watchFreeze(group, 0);
    this.epochs.start();
  }

  /** Stops every group, even after one failed; then throws the first error. */
  async stop(): Promise<void> {
    this.epochs.stop();
    await this.groups.stop();
  }

  /** NBD sessions of a volume are closed (its read-only flag changed); set by the array. */
  set closeSessions(close: (volumeName: string, reason: string) => void) {
    this.groups.closeSessions = close;
  }

  /** Session counts come from the NBD layer; set by the array. */
  set openSessions(count: (volumeName: string) => number) {
    this.groups.openSessions = count;
  }

  // ---- lookups (registry.ts) ----
  masterOf(volume: Volume): { group: MasterGroup; lun: number } | undefined { return this.groups.masterOf(volume); }
  writerOf(volume: Volume): { group: MasterGroup | RestoreGroup; lun: number } | undefined { return this.groups.writerOf(volume); }
  display(groupName?: string): PairDisplay[] { return this.groups.display(groupName); }
  writesRefusedOf(volume: Volume): string | undefined { return this.groups.writesRefusedOf(volume); }
  groupStats(): GroupStats[] { return this.groups.groupStats(); }
  unready(): string[] { return this.groups.unready(); }
  groupMetas(): GroupMeta[] { return this.groups.groupMetas(); }
  groupRole(name: string): 'master' | 'restore' | undefined { return this.groups.groupRole(name); }
  peerOfGroup(name: string): string { return this.groups.peerOfGroup(name); }
  restoreGroup(name: string): RestoreGroup | undefined { return this.groups.restore(name); }
  journalInfo(name: string): Record<string, unknown> { return this.groups.journalInfo(name); }
  takeoverState(name: string): 'fenced' | 'reclaiming' | 'took-over' | undefined { return this.groups.takeoverState(name); }

  // ---- pair commands (pair-commands.ts) ----
  createJournal(name: string, sizeBytes: number): Promise<Volume> { return this.pairs.createJournal(name, sizeBytes); }
  createPair(request: PairCreateRequest): Promise<PairDisplay[]> { return this.pairs.createPair(request); }
  prepare(body: PairPrepareRequest): void { this.pairs.prepare(body); }
  join(body: PairJoinRequest): Promise<void> { return this.pairs.join(body); }
  readJournal(body: JournalReadRequest): Promise<{ body: JournalReadAnswer; payload: Buffer[] }> { return this.pairs.readJournal(body); }
  deleteGroup(name: string): Promise<void> { return this.pairs.deleteGroup(name); }
  split(name: string, rw: boolean, waitMs?: number): ReturnType<PairCommands['split']> { return this.pairs.split(name, rw, waitMs); }
  makeWritable(body: SplitRwRequest): Promise<void> { return this.pairs.makeWritable(body); }
  resync(name: string): Promise<{ group: string; dirtyBytes: number }> { return this.pairs.resync(name); }
  prepareResync(body: GroupRequest): Promise<ResyncPrepareAnswer> { return this.pairs.prepareResync(body); }
  resyncStarted(body: ResyncStartedRequest): Promise<void> { return this.pairs.resyncStarted(body); }

  // ---- takeover and swap (takeover.ts) ----
  takeover(name: string, options: TakeoverOptions): Promise<TakeoverResult> { return this.takeovers.takeover(name, options); }
  swapStatus(body: GroupRequest): { promoted: boolean } { return this.takeovers.swapStatus(body); }
  startDrain(body: SwapDrainRequest): { lagBytes: number } { return this.takeovers.startDrain(body); }
  freezeForSwap(body: SwapFreezeRequest): Promise<{ endSeq: number }> { return this.takeovers.freezeForSwap(body); }
  thawAfterSwap(body: GroupRequest): Promise<void> { return this.takeovers.thawAfterSwap(body); }

  // ---- reverse and reclaim (reverse.ts) ----
  demote(body: DemoteRequest, keepDirty = false): Promise<void> { return this.reverse.demote(body, keepDirty); }
  resyncSwap(name: string, discard: string | null = null): Promise<{ group: string; dirtyBytes: number }> { return this.reverse.resyncSwap(name, discard); }
  reclaim(name: string, discard: string | null): Promise<{ group: string; dirtyBytes: number }> { return this.reverse.reclaim(name, discard); }

  // ---- the epoch watch (epoch-watch.ts) ----
  hello(body: GroupHelloRequest): Promise<GroupHelloAnswer> { return this.epochs.hello(body); }
  divergence(body: GroupDivergenceRequest): Promise<{ writes: number }> { return this.epochs.divergence(body); }
  peerUp(peerId: string): void { this.epochs.peerUp(peerId); }
}
