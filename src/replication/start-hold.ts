// The start hold of a primary (issue 12). A primary that restarts does not know
// whether its peer took over while it was down: a host write it took before
// hearing the peer's newer epoch is one the new primary discards (its resync
// --swap then needs --discard of this side, and the host that wrote it loses
// it). So at start each sending group holds its host writes (queued, not
// failed) until one group.hello exchange with the peer has settled the epochs
// (this side fenced itself if the peer's is newer), as DRBD waits for its peer
// at start (wfc-timeout).
//
// The hold is bounded (`takeover.startHoldMs`): a peer that is not reachable
// must not stop the hosts for long. Past the bound the group's fence policy
// decides: `never` lets the writes go on (journaled or tracked in the bitmaps,
// so a later fence counts them as this side's divergent writes); `data`, for a
// replicating group, refuses them (VOLUME_FENCED) until the hello settles, since
// they may be writes the other site never gets.
//
// States: holding → settled (a hello) or → expired (the bound: open, or
// refusing with `data` until a hello settles it) or → released (the group
// stopped; the held writes then meet its own refusal).

import { TwinstoreError } from '../errors.js';
import type { Logger } from '../util/log.js';
import type { GroupMeta } from './model.js';

export interface StartHoldOptions {
  group: string;
  peer: string;
  /** The bound: past it the fence policy decides. */
  holdMsMax: number;
  /** Past the bound, refuse host writes until a hello settles the epochs (fence `data` on a replicating group). */
  refuseAfterBound: boolean;
  log: Logger;
  now?: () => number;
}

type State = 'holding' | 'settled' | 'expired' | 'released';

export class StartHold {
  private state: State = 'holding';
  private readonly startedMs: number;
  private readonly now: () => number;
  private readonly timer: NodeJS.Timeout;
  private open: () => void = () => undefined;
  private readonly opened: Promise<void>;
  /** Host writes waiting here now (shown in the log when the hold ends). */
  private waiting = 0;

  constructor(private readonly options: StartHoldOptions) {
    this.now = options.now ?? Date.now;
    this.startedMs = this.now();
    this.opened = new Promise<void>((resolve) => { this.open = resolve; });
    this.timer = setTimeout(() => this.expire(), options.holdMsMax);
    this.timer.unref();
    options.log.info({ group: options.group, peer: options.peer, startHoldMs: options.holdMsMax }, `start hold: host writes wait until ${options.peer} has told its epoch`);
  }

  /** Whether host writes still wait here (or are refused with `data` past the bound). */
  get active(): boolean {
    return this.state === 'holding' || (this.state === 'expired' && this.options.refuseAfterBound);
  }

  /** Host writes wait here for the peer's epoch (neither settled, nor past the bound, nor released). */
  get holding(): boolean {
    return this.state === 'holding';
  }

  /** A host write waits here: resolves once it may go on; rejects past the bound with fence `data`. */
  async admit(): Promise<void> {
    if (this.state === 'holding') {
      this.waiting += 1;
      try {
        await this.opened;
      } finally {
        this.waiting -= 1;
      }
    }
    if (this.state === 'expired' && this.options.refuseAfterBound) {
      throw new TwinstoreError('VOLUME_FENCED', `group ${this.options.group}: ${this.options.peer} has not told its epoch within takeover.startHoldMs ` +
        `(${this.options.holdMsMax} ms) of this array's start, and its fence policy is data: host writes are refused until it does`);
    }
  }

  /** A hello with the peer settled the epochs (any fence it called for is persisted): held writes go on. */
  settle(): void {
    if (this.state === 'settled' || this.state === 'released') return;
    const ms = this.now() - this.startedMs;
    this.options.log.info({ group: this.options.group, peer: this.options.peer, ms, held: this.waiting }, 'start hold: the epochs are settled; host writes go on');
    this.finish('settled');
  }

  /** The group stopped: held writes go on to meet its refusal. */
  release(): void {
    if (this.state !== 'released') this.finish('released');
  }

  private expire(): void {
    if (this.state !== 'holding') return;
    const policy = this.options.refuseAfterBound ? 'fence data: host writes are refused until it does' : 'fence never: host writes go on';
    this.options.log.warn({ group: this.options.group, peer: this.options.peer, ms: this.now() - this.startedMs, held: this.waiting },
      `start hold: ${this.options.peer} has not told its epoch within takeover.startHoldMs; ${policy}`);
    this.state = 'expired';
    this.open();
  }

  private finish(state: 'settled' | 'released'): void {
    clearTimeout(this.timer);
    this.state = state;
    this.open();
  }
}

/**
 * The hold for a sending group just opened at start, or undefined when none is needed: a group
 * that refuses host writes already (FENCED, frozen for a swap, fence `data` tripped) has nothing
 * to hold, and a bound of 0 turns the hold off.
 */
export function startHoldFor(meta: GroupMeta, holdMsMax: number, log: Logger): StartHold | undefined {
  if (holdMsMax <= 0 || meta.writesRefused) return undefined;
  if (meta.pairs.length === 0 || meta.pairs.some((p) => p.status === 'FENCED' || p.status === 'SWAP')) return undefined;
  // As the link watch's fence: a replicating group (or one it suspended) refuses; a split or a takeover (SSWS) goes on.
  const refuseAfterBound = meta.fence === 'data' && meta.pairs.some((p) => p.status === 'PAIR' || p.status === 'COPY' || p.status === 'PSUE');
  return new StartHold({ group: meta.name, peer: meta.peer, holdMsMax, refuseAfterBound, log });
}
