// Goal: the byte pacer behind link.bandwidthMax lets a quarter second of its
// rate through at once, then the rate; goes into debt for a record larger than
// what is left (records are never split) and makes the next sender wait it
// off; and an idle hour gives no more than the burst.
// Method: BytePacer on a clock the test moves.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BytePacer, burstSeconds } from '../../src/util/byte-pacer.js';

test('burst, rate, debt, and no credit past the burst', () => {
  let now = 0;
  const rate = 1_000_000;
  const pacer = new BytePacer(rate, () => now);
  assert.equal(pacer.available(), rate * burstSeconds, 'a quarter second of the rate at once');
  assert.equal(pacer.waitMs(), 0);
  pacer.take(1_250_000);
  assert.equal(pacer.available(), 0, 'in debt');
  assert.equal(pacer.waitMs(), 1000, 'one second pays off 1,000,000 bytes of debt');
  now += 500;
  assert.equal(pacer.waitMs(), 500);
  now += 600;
  assert.equal(pacer.available(), 100_000, 'the rate since the debt was paid');
  now += 3_600_000;
  assert.equal(pacer.available(), rate * burstSeconds, 'an idle hour gives the burst, no more');
});
