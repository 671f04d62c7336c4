// Test-only crash points (issue 4; docs/architecture.md §6 "swap and takeover as persisted
// steps"): TWINSTORE_CRASH_AT=<step>.<before|after> kills this process with
// SIGKILL when it reaches that named step of a role change, so a test can show
// that running the command again from that point completes it. Never set in
// production; unset, a crash point costs one string comparison.

const crashAt = process.env.TWINSTORE_CRASH_AT;

export type CrashStep =
  /** The old primary, freezing for a planned swap (status SWAP persisted in between). */
  | 'swap.freeze'
  /** The array taking over: the new epoch, journal and volume roles. */
  | 'swap.promote'
  /** The old primary, turning receiver in the new epoch. */
  | 'swap.demote'
  /** Takeover without the primary: applying every stored record (before: nothing applied yet). */
  | 'takeover.apply'
  /** Takeover without the primary: the new epoch, journal and volume roles (SSWS). */
  | 'takeover.promote'
  /** pair resync --swap (or --discard of the array that took over), on the array turning receiver. */
  | 'resync-swap.reverse'
  /** pair resync --swap, on the new primary: between the peer turning receiver and the resync starting. */
  | 'resync-swap.resync'
  /** pair resync --discard of the array that took over, on the old primary: its new epoch. */
  | 'reclaim.epoch';

export const CRASH_STEPS: readonly CrashStep[] = [
  'swap.freeze', 'swap.promote', 'swap.demote', 'takeover.apply', 'takeover.promote', 'resync-swap.reverse', 'resync-swap.resync', 'reclaim.epoch',
];

export function crashPoint(step: CrashStep, when: 'before' | 'after'): void {
  if (crashAt === `${step}.${when}`) process.kill(process.pid, 'SIGKILL');
}
