// Alerts on journal groups (issue 16): per group, from the config's thresholds
// (`alerts:` in docs/config.md), three conditions an operator is to be told of
// without watching a chart:
//   lag        the oldest record not yet applied on the receiver is older than
//              lagSecondsMax (the master's view; the receiver cannot tell lag);
//   journal    the group's journal is fuller than journalUsedPercentMax;
//   suspended  a pair of the group is PSUE or FENCED (replication stopped on
//              its own, not by an operator's split).
// An alert fires when its value passes the threshold and clears only once the
// value is back at or below clearFraction of it, so a value hovering at the
// line does not fire and clear every look. A threshold of 0 turns that alert
// off. The owner (array-events.ts) calls evaluate() once a second with the
// pairs as they stand and reports each change on the event bus; status,
// /metrics and the dashboard read firing().

import { assert } from '../errors.js';
import type { PairDisplay } from '../replication/index.js';

export const ALERT_NAMES = ['lag', 'journal', 'suspended'] as const;
export type AlertName = (typeof ALERT_NAMES)[number];

/** A firing alert clears at or below this fraction of its threshold. */
export const clearFraction = 0.9;

export interface AlertThresholds {
  /** 0: no lag alert. */
  lagSecondsMax: number;
  /** 0: no journal alert. */
  journalUsedPercentMax: number;
}

export interface AlertConfig {
  defaults: AlertThresholds;
  /** Per group, the thresholds that differ from the defaults. */
  groups: Map<string, Partial<AlertThresholds>>;
}

/** A firing alert, as status, events and the dashboard show it. */
export interface AlertJson {
  group: string;
  alert: AlertName;
  /** The value when it was last looked at: seconds, percent, or pairs suspended. */
  value: number;
  threshold: number;
  since: string;
  message: string;
}

export interface AlertChange {
  state: 'firing' | 'cleared';
  alert: AlertJson;
}

interface GroupValues {
  lagSeconds: number;
  journalUsedPercent: number;
  suspended: string[];
}

export class GroupAlerts {
  /** Firing alerts by `group\0alert`. */
  private readonly active = new Map<string, AlertJson>();

  constructor(private readonly config: AlertConfig) {
    for (const limits of [config.defaults, ...config.groups.values()]) {
      assert((limits.lagSecondsMax ?? 0) >= 0 && (limits.journalUsedPercentMax ?? 0) >= 0, 'alert thresholds are not negative');
    }
  }

  thresholds(group: string): AlertThresholds {
    return { ...this.config.defaults, ...this.config.groups.get(group) };
  }

  firing(): AlertJson[] {
    return [...this.active.values()].sort((a, b) => a.group.localeCompare(b.group) || a.alert.localeCompare(b.alert));
  }

  /** Looks at the pairs as they stand: the alerts that fired or cleared since the last look. */
  evaluate(pairs: PairDisplay[], now = new Date()): AlertChange[] {
    const changes: AlertChange[] = [];
    const groups = valuesByGroup(pairs);
    for (const [key, alert] of this.active) {
      if (groups.has(alert.group)) continue;
      this.active.delete(key);
      changes.push({ state: 'cleared', alert: { ...alert, message: `${alert.group}: ${alert.alert} alert cleared: the group is gone` } });
    }
    for (const [group, values] of groups) {
      const limits = this.thresholds(group);
      this.look(changes, now, { group, alert: 'lag', value: values.lagSeconds, threshold: limits.lagSecondsMax, message: (v, t) => `${group}: lag ${v.toFixed(1)} s is over ${t} s` });
      this.look(changes, now, { group, alert: 'journal', value: values.journalUsedPercent, threshold: limits.journalUsedPercentMax, message: (v, t) => `${group}: journal ${v.toFixed(0)}% used, over ${t}%` });
      this.look(changes, now, {
        group, alert: 'suspended', value: values.suspended.length, threshold: 0.5,
        message: () => `${group}: ${values.suspended.join(', ')} suspended (see pair display for the command that recovers it)`,
      });
    }
    return changes;
  }

  private look(changes: AlertChange[], now: Date, a: { group: string; alert: AlertName; value: number; threshold: number; message: (value: number, threshold: number) => string }): void {
    const key = `${a.group}\0${a.alert}`;
    const was = this.active.get(key);
    const off = a.threshold <= 0 || a.value < 0;
    if (was === undefined) {
      if (off || a.value <= a.threshold) return;
      const alert: AlertJson = { group: a.group, alert: a.alert, value: a.value, threshold: shownThreshold(a), since: now.toISOString(), message: a.message(a.value, shownThreshold(a)) };
      this.active.set(key, alert);
      changes.push({ state: 'firing', alert });
      return;
    }
    if (off || a.value <= a.threshold * clearFraction) {
      this.active.delete(key);
      changes.push({ state: 'cleared', alert: { ...was, value: Math.max(a.value, 0), message: `${a.group}: ${a.alert} alert cleared` } });
      return;
    }
    was.value = a.value;
  }
}

/** The suspended alert's threshold is "more than none"; it is shown as 0. */
function shownThreshold(a: { alert: AlertName; threshold: number }): number {
  return a.alert === 'suspended' ? 0 : a.threshold;
}

function valuesByGroup(pairs: PairDisplay[]): Map<string, GroupValues> {
  const groups = new Map<string, GroupValues>();
  for (const pair of pairs) {
    let values = groups.get(pair.group);
    if (!values) {
      values = { lagSeconds: -1, journalUsedPercent: -1, suspended: [] };
      groups.set(pair.group, values);
    }
    values.lagSeconds = Math.max(values.lagSeconds, pair.lagSeconds);
    values.journalUsedPercent = Math.max(values.journalUsedPercent, pair.journalUsedPercent);
    if (pair.status === 'PSUE' || pair.status === 'FENCED') values.suspended.push(pair.pvol);
  }
  return groups;
}
