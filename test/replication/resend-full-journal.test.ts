// Goal: a re-send after an unclean stop goes on when A's journal is more than
// three quarters full. The receiver frees nothing of a re-send unit before its
// end marker, so a unit whose base records waited below the quarter an initial
// copy leaves to host writes could wait for ever once host writes inside the
// unit had filled that far (the write-order fault rounds saw B stop at the
// unit's begin marker, seq 49831 of 49832, until the journal overflowed).
// Method: two real arrays, a 132 MiB journal; restore paused on B; 100 MiB of
// flushed host writes over three 16 MiB activity regions (76% of the journal,
// all before the unit); kill -9 of A and restart. With restore still paused,
// A's journal must grow past 100 MiB + 16 MiB: the unit's base records go into
// the last quarter (the old code left it at 100 MiB). Then restore resumes:
// lag 0, and qemu-img compare finds P-VOL and S-VOL identical.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runOk } from '../helpers/array.js';
import {
  appliedSeq, compareAll, journalShow, setRestorePaused, startSite, startWithin, waitFor, waitForPairAndLag0, waitForProgress,
} from '../helpers/replication.js';

const MiB = 2 ** 20;

test('a re-send after an unclean stop uses the last quarter of the journal', { timeout: 300_000 }, async (t) => {
  const site = await startSite(t, { volumes: 1, volumeSize: '64MiB', journalSize: '132MiB' });
  await setRestorePaused(site.b, true);
  // 6 × 16 MiB + 4 MiB over the first 48 MiB (three activity regions), flushed.
  const writes = Array.from({ length: 6 }, (_, i) => ['-c', `write -P ${0x20 + i} ${16 * (i % 3)}M 16M`]).flat();
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pvol0'), ...writes, '-c', 'write -P 0x30 8M 4M', '-c', 'flush'], { timeoutMs: 120_000 });
  const before = await journalShow(site.a);
  t.diagnostic(`before the kill: ${(before.usedBytes / MiB).toFixed(1)} MiB of A's journal used, next seq ${before.cursors.nextSeq}`);
  assert.ok(before.usedBytes > 100 * MiB, `more than three quarters of the journal used (${before.usedBytes} bytes)`);
  await site.a.kill9();
  await startWithin(site.a, 'A');
  // Restore still paused: nothing is freed, so only the re-send's base records can grow the journal.
  await waitFor('A\'s journal to grow past 116 MiB with the re-send (restore paused on B)', async () => (await journalShow(site.a)).usedBytes > 116 * MiB, 60_000, 100);
  const during = await journalShow(site.a);
  t.diagnostic(`re-send under way: ${(during.usedBytes / MiB).toFixed(1)} MiB used, next seq ${during.cursors.nextSeq}`);
  await setRestorePaused(site.b, false);
  // The unit ends once B has freed the records before it; B then applies it whole.
  await waitFor('A\'s journal to stop growing (the re-send unit ended)', async () => {
    const [first, second] = [await journalShow(site.a), await new Promise((r) => setTimeout(r, 500)).then(() => journalShow(site.a))];
    return first.cursors.nextSeq === second.cursors.nextSeq && second.cursors.nextSeq > during.cursors.nextSeq;
  }, 120_000, 100);
  const end = (await journalShow(site.a)).cursors.nextSeq;
  await waitForProgress(`B to apply the re-send unit, up to seq ${end}`, () => appliedSeq(site.b), end);
  await waitForPairAndLag0(site, 120_000);
  compareAll(site);
});
