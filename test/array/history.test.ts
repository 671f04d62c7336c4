// Goal: the dashboard's history (src/array/history.ts) gives each volume's
// host reads and writes as per-second rates over the interval, each group's
// lag and journal use (the worst pair's; -1 where the array cannot tell),
// and keeps one hour of samples, dropping the oldest.
// Method: History fed the real NBD request counts (VolumeIoStats) and pair
// displays, sampled at chosen instants; the array's GET /v1/history is seen
// in test/api/metrics.test.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { History, historySamplesMax } from '../../src/array/history.js';
import { VolumeIoStats } from '../../src/nbd/index.js';
import { CMD } from '../../src/nbd/protocol.js';
import type { PairDisplay } from '../../src/replication/index.js';

test('rates per second over the interval, the worst pair per group, one hour kept', () => {
  const stats = new VolumeIoStats();
  const pairs: Array<Pick<PairDisplay, 'group' | 'lagSeconds' | 'lagBytes' | 'journalUsedPercent'>> = [
    { group: 'g1', lagSeconds: 2, lagBytes: 4096, journalUsedPercent: 10 },
    { group: 'g1', lagSeconds: 3, lagBytes: 8192, journalUsedPercent: 12 },
    { group: 'g2', lagSeconds: -1, lagBytes: -1, journalUsedPercent: 5 },
  ];
  const history = new History({ pairs: () => pairs as PairDisplay[], ioStats: () => new Map([['v1', stats]]) });
  history.sample(1_000);
  for (let i = 0; i < 50; i++) stats.record(CMD.WRITE, 4096, 0.2, false);
  for (let i = 0; i < 10; i++) stats.record(CMD.READ, 65536, 0.1, false);
  stats.record(CMD.FLUSH, 0, 1, false);
  history.sample(6_000);
  const [, second] = history.json().samples;
  assert.deepEqual(second!.volumes.v1, { readOps: 2, writeOps: 10, readBytes: 131072, writeBytes: 40960 }, 'per second over 5 s; the flush is neither');
  assert.deepEqual(second!.groups, { g1: { lagSeconds: 3, lagBytes: 8192, journalUsedPercent: 12 }, g2: { lagSeconds: -1, lagBytes: -1, journalUsedPercent: 5 } });
  assert.equal(second!.at, new Date(6_000).toISOString());
  for (let i = 0; i < historySamplesMax + 5; i++) history.sample(11_000 + i * 5000);
  const kept = history.json().samples;
  assert.equal(kept.length, historySamplesMax, 'an hour of samples, no more');
  assert.equal(kept.at(-1)!.at, new Date(11_000 + (historySamplesMax + 4) * 5000).toISOString(), 'newest last');
  assert.deepEqual(kept.at(-1)!.volumes.v1, { readOps: 0, writeOps: 0, readBytes: 0, writeBytes: 0 });
});
