// Goal: the two recovery decision tables (header slot choice, ring probe) are
// complete and unambiguous: exactly one row matches every combination of facts,
// and every row can match. Method: enumerate every combination of every fact
// (booleans both ways, the seq comparison three ways) and count matching rows;
// then check each row's label is matched by some combination. That each row is
// also reached by a real journal is shown case by case in recovery.test.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decideProbe, headerTable, matchingRows, probeTable, type HeaderFacts, type ProbeFacts } from '../../src/journal/recovery.js';

type Values<T> = { [K in keyof T]-?: readonly Exclude<T[K], undefined>[] };

function combinations<T extends object>(values: Values<T>): T[] {
  let all: Record<string, unknown>[] = [{}];
  for (const [key, options] of Object.entries(values) as [string, readonly unknown[]][]) {
    all = all.flatMap((partial) => options.map((value) => ({ ...partial, [key]: value })));
  }
  return all as T[];
}

const bool = [true, false] as const;

const probeValues: Values<ProbeFacts> = {
  first: bool, header: bool, later: bool, instance: bool, seq: ['lower', 'expected', 'higher'], session: bool, epoch: bool, wrap: bool, data: bool, next: bool, synced: bool,
};

test('probe table: exactly one row matches each of the 3072 combinations of facts', () => {
  const all = combinations<ProbeFacts>(probeValues);
  assert.equal(all.length, 2 ** 10 * 3);
  for (const facts of all) {
    const rows = matchingRows(probeTable, facts);
    assert.equal(rows.length, 1, `${JSON.stringify(facts)} matches ${rows.map((row) => row.label).join(', ') || 'no row'}`);
  }
});

test('probe table: every row is matched by some combination and labels are unique', () => {
  const all = combinations<ProbeFacts>(probeValues);
  const labels = probeTable.map((row) => row.label);
  assert.equal(new Set(labels).size, labels.length);
  for (const row of probeTable) {
    assert.ok(all.some((facts) => matchingRows(probeTable, facts)[0] === row), `row ${row.label} is reachable`);
  }
});

test('probe table: a row that needs a fact the scan has not evaluated is an assertion, not a guess', () => {
  assert.throws(() => decideProbe({ first: false, header: true, instance: true, seq: 'expected', session: true, epoch: true, wrap: false }), { code: 'INTERNAL' });
  assert.equal(decideProbe({ first: true, header: false, later: false }).label, 'empty');
});

test('header table: exactly one row matches each combination, and each row can match', () => {
  const all = combinations<HeaderFacts>({ slot0: bool, slot1: bool, newer: [0, 1] });
  for (const facts of all) assert.equal(matchingRows(headerTable, facts).length, 1, JSON.stringify(facts));
  for (const row of headerTable) assert.ok(all.some((facts) => matchingRows(headerTable, facts)[0] === row), row.label);
});
