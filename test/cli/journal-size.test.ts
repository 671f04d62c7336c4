// Goal: `twinstore journal size` says how big a journal must be to hold an
// outage's records, by the journal's real layout: a journal of the size it
// names holds them, one a MiB smaller does not, and each record takes what it
// says. Bad input is refused naming the option.
// Method: real Journal objects on sparse in-memory devices of the computed
// sizes (their capacity and the bytes a written record uses), and the CLI run
// as a process.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Journal } from '../../src/journal/index.js';
import { journalSizeFor, journalSizeInput, parseDurationSeconds } from '../../src/cli/journal-size.js';
import { formatted, memoryDevice, pattern, recordMeta } from '../journal/helpers.js';
import { projectRoot, run } from '../helpers/array.js';

const mib = 2 ** 20;
const cli = path.join(projectRoot, 'bin', 'twinstore.js');

test('a journal of the size named holds the outage\'s records and one a MiB smaller does not', async () => {
  for (const input of [
    { writeRateBytesPerSecond: 4 * mib, outageSeconds: 60, writeBytes: 64 * 1024 },
    { writeRateBytesPerSecond: 2 * mib, outageSeconds: 90, writeBytes: 4096 },
    { writeRateBytesPerSecond: 50 * mib, outageSeconds: 3600, writeBytes: mib },
  ]) {
    const size = journalSizeFor(input);
    const label = JSON.stringify(input);
    const fits = await formatted(memoryDevice(size.neededBytes));
    assert.ok(fits.capacityBytes >= size.records * size.recordBytes + size.recordBytes, `${label}: the ring holds every record and a record of wrap waste`);
    if (size.neededBytes - mib >= Journal.MIN_BYTES) {
      const smaller = await formatted(memoryDevice(size.neededBytes - mib));
      assert.ok(smaller.capacityBytes < size.records * size.recordBytes + size.recordBytes, `${label}: a MiB less does not hold them and a record of wrap waste`);
    }
    // What one record takes in the real journal.
    const meta = recordMeta('write', input.writeBytes);
    const before = fits.usedBytes;
    await fits.write(fits.reserve(meta, input.writeBytes), meta, pattern(1, input.writeBytes));
    assert.equal(fits.usedBytes - before, size.recordBytes, `${label}: a record takes recordBytes`);
    assert.ok(size.suggestedBytes >= size.neededBytes * 1.25 && size.suggestedBytes % mib === 0, `${label}: headroom in whole MiB`);
  }
});

test('durations and options as typed; bad ones are refused naming the option', () => {
  assert.deepEqual(['90s', '30m', '2h', '1.5h', '1d', '45'].map(parseDurationSeconds), [90, 1800, 7200, 5400, 86_400, 45]);
  assert.equal(parseDurationSeconds('soon'), undefined);
  assert.deepEqual(journalSizeInput({ writeRate: '50MiB/s', outage: '1h', writeSize: '64KiB' }), { writeRateBytesPerSecond: 50 * mib, outageSeconds: 3600, writeBytes: 65_536 });
  assert.throws(() => journalSizeInput({ writeRate: 'fast', outage: '1h', writeSize: '64KiB' }), { code: 'BAD_REQUEST', field: 'write-rate' });
  assert.throws(() => journalSizeInput({ writeRate: '1MiB', outage: '30y', writeSize: '64KiB' }), { code: 'BAD_REQUEST', field: 'outage' });
  assert.throws(() => journalSizeInput({ writeRate: '1MiB', outage: '8d', writeSize: '64KiB' }), { code: 'BAD_REQUEST', field: 'outage' });
  assert.throws(() => journalSizeInput({ writeRate: '1MiB', outage: '1h', writeSize: '64MiB' }), { code: 'BAD_REQUEST', field: 'write-size' });
});

test('twinstore journal size runs without an array: JSON, the text with the create line, and a clear error', () => {
  const json = run(process.execPath, [cli, 'journal', 'size', '--write-rate', '20MiB/s', '--outage', '10m', '--write-size', '4KiB', '--json']);
  assert.equal(json.code, 0, json.stderr);
  const parsed = JSON.parse(json.stdout) as { records: number; recordBytes: number; neededBytes: number };
  assert.deepEqual([parsed.records, parsed.recordBytes], [20 * mib * 600 / 4096, 8192], 'a 4 KiB write takes 8 KiB: header block and data');
  const text = run(process.execPath, [cli, 'journal', 'size', '--write-rate', '50MiB/s', '--outage', '1h']);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /needs a journal of at least 186\.8GiB/);
  assert.match(text.stdout, /twinstore journal create jnl --size 234GiB/);
  assert.match(text.stdout, /link\.suspendAfterMs .* at least 3600000/);
  const bad = run(process.execPath, [cli, 'journal', 'size', '--write-rate', '50MiB/s', '--outage', 'later']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /BAD_REQUEST: --outage "later" is not a duration/);
  assert.doesNotMatch(bad.stderr, /\n\s+at /, 'no stack trace');
});
