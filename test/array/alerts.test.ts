// Goal: the group alerts (src/array/alerts.ts) fire when a value passes its
// threshold, clear only at or below 90% of it (no flapping at the line), take
// a group's own thresholds over the defaults, treat 0 as off, fire `suspended`
// for PSUE and FENCED pairs (not for an operator's PSUS), ignore the lag the
// receiver cannot tell (-1), and clear what a deleted group had.
// Method: GroupAlerts fed pair displays as the array makes them; what real
// arrays show in status, metrics and events is in test/api/metrics.test.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GroupAlerts } from '../../src/array/alerts.js';
import type { PairDisplay, PairStatus } from '../../src/replication/index.js';

function pair(group: string, values: { lagSeconds?: number; journalUsedPercent?: number; status?: PairStatus; pvol?: string }): PairDisplay {
  return {
    group, direction: 'site-a -> site-b', epoch: '1@site-a#x', pvol: values.pvol ?? `site-a:${group}-p`, svol: `site-b:${group}-s`,
    status: values.status ?? 'PAIR', statusReason: null, copyPercent: 100, journalUsedPercent: values.journalUsedPercent ?? 0,
    lagRecords: 0, lagBytes: 0, lagSeconds: values.lagSeconds ?? 0, consistencySeq: 1, consistencyTime: null, restoring: false,
    copyBytes: 0, copyRemainingBytes: 0, copyRateBytesPerSecond: null, copyEtaSeconds: null, pendingRegions: 0, pendingBytes: 0,
    restorePaused: false, recovery: null, svolConsistent: true,
  };
}

const at = (s: number): Date => new Date(Date.UTC(2026, 11, 8, 3, 0, s));

test('fires past the threshold, stays firing down to 90% of it, clears below', () => {
  const alerts = new GroupAlerts({ defaults: { lagSecondsMax: 10, journalUsedPercentMax: 80 }, groups: new Map() });
  assert.deepEqual(alerts.evaluate([pair('g1', { lagSeconds: 10 })], at(0)), [], 'at the line: not over it');
  const fired = alerts.evaluate([pair('g1', { lagSeconds: 12.5 })], at(1));
  assert.deepEqual(fired.map((c) => [c.state, c.alert.alert, c.alert.value, c.alert.threshold, c.alert.since]), [['firing', 'lag', 12.5, 10, at(1).toISOString()]]);
  assert.equal(fired[0]!.alert.message, 'g1: lag 12.5 s is over 10 s');
  assert.deepEqual(alerts.evaluate([pair('g1', { lagSeconds: 9.5 })], at(2)), [], 'between 90% and the line: still firing, no new event');
  assert.equal(alerts.firing()[0]!.value, 9.5, 'the value shown follows');
  const cleared = alerts.evaluate([pair('g1', { lagSeconds: 9 })], at(3));
  assert.deepEqual(cleared.map((c) => [c.state, c.alert.alert, c.alert.since]), [['cleared', 'lag', at(1).toISOString()]]);
  assert.deepEqual(alerts.firing(), []);
});

test('a group\'s own thresholds win, 0 turns an alert off, and the receiver\'s -1 lag is no value', () => {
  const alerts = new GroupAlerts({ defaults: { lagSecondsMax: 60, journalUsedPercentMax: 80 }, groups: new Map([['db', { lagSecondsMax: 5 }], ['bulk', { journalUsedPercentMax: 0 }]]) });
  const changes = alerts.evaluate([
    pair('db', { lagSeconds: 6, journalUsedPercent: 81 }),
    pair('bulk', { lagSeconds: 6, journalUsedPercent: 99 }),
    pair('web', { lagSeconds: -1, journalUsedPercent: 85 }),
  ], at(0));
  assert.deepEqual(changes.map((c) => `${c.alert.group}/${c.alert.alert}@${c.alert.threshold}`).sort(), ['db/journal@80', 'db/lag@5', 'web/journal@80']);
  assert.deepEqual(alerts.thresholds('bulk'), { lagSecondsMax: 60, journalUsedPercentMax: 0 });
});

test('suspended fires for PSUE and FENCED pairs, naming them, not for PSUS; a deleted group\'s alerts clear', () => {
  const alerts = new GroupAlerts({ defaults: { lagSecondsMax: 60, journalUsedPercentMax: 80 }, groups: new Map() });
  assert.deepEqual(alerts.evaluate([pair('g1', { status: 'PSUS' })], at(0)), [], 'an operator\'s split is no alert');
  const fired = alerts.evaluate([pair('g1', { status: 'PSUE', pvol: 'site-a:v1' }), pair('g1', { status: 'FENCED', pvol: 'site-a:v2' })], at(1));
  assert.deepEqual(fired.map((c) => [c.state, c.alert.alert, c.alert.value, c.alert.threshold]), [['firing', 'suspended', 2, 0]]);
  assert.match(fired[0]!.alert.message, /^g1: site-a:v1, site-a:v2 suspended/);
  const gone = alerts.evaluate([], at(2));
  assert.deepEqual(gone.map((c) => [c.state, c.alert.alert]), [['cleared', 'suspended']]);
  assert.match(gone[0]!.alert.message, /the group is gone/);
});
