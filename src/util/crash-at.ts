// Test-only crash points (issue 4; DESIGN.md §6 "swap and takeover as persisted
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
  | 'swap.demote';

export const CRASH_STEPS: readonly CrashStep[] = ['swap.freeze', 'swap.promote', 'swap.demote'];

export function crashPoint(step: CrashStep, when: 'before' | 'after'): void {
  if (crashAt === `${step}.${when}`) process.kill(process.pid, 'SIGKILL');
}
