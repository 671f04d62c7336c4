// Goal: a primary array that restarts after an unclean stop comes back even
// when the receiver, already linked again, reports its applied cursor while
// the journal is still being loaded and redone. Regression test for a bug the
// write-order fault rounds found (seed 1: after a kill -9 of A, A's start
// failed with JOURNAL_RECORD_GONE "released while it was read" and A never
// became ready): the group answered journal.read, and so freed its journal at
// the receiver's appliedSeq, before loadUnapplied()/redo() had read the
// records from the persisted tail.
// Method: the replication manager in this process on a real storage engine
// (files in a temporary folder), a stand-in peer for pair create; journal
// ~3000 host writes, close the engine without a clean group stop (the
// activity log stays, so the next start redoes the journal), open it again and
// start the manager while a receiver asks for records with appliedSeq at the
// end of the journal, from the first moment the group answers.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { StorageEngine, type EngineOptions } from '../../src/storage/index.js';
import { ReplicationManager } from '../../src/replication/index.js';
import { isTwinstoreError } from '../../src/errors.js';

const mib = 2 ** 20;

function options(dir: string): EngineOptions {
  return { arrayId: 'site-a', dataDir: path.join(dir, 'data'), extentBytes: mib, drives: [{ path: path.join(dir, 'drive0.img'), sizeBytes: 512 * mib }] };
}

function manager(engine: StorageEngine): ReplicationManager {
  const peer = { connected: true, request: async () => ({ body: { ok: true }, payload: [] }) };
  return new ReplicationManager({
    engine,
    log: pino({ level: 'silent' }),
    peerChannel: () => peer,
    defaults: { overflow: 'suspend', throttleMsMax: 5000, regionBytes: 65536, fence: 'never', fenceAfterMs: 30_000 },
  });
}

test('a restarting primary serves the receiver only once its journal is loaded and redone', { timeout: 60_000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twinstore-race-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(dir, 'data'));

  const first = await StorageEngine.open(options(dir));
  const before = manager(first);
  await before.start();
  await first.createVolume({ name: 'pvol', sizeBytes: 16 * mib });
  await first.createVolume({ name: 'svol-stand-in', sizeBytes: 16 * mib });
  await before.createJournal('jnl', 160 * mib);
  await before.createPair({ group: 'g1', pvol: 'pvol', svol: 'site-b:svol', journal: 'jnl', remoteJournal: 'site-b:jnl' });
  const writer = before.masterOf(first.volume('pvol')!)!;
  const block = Buffer.alloc(4096, 0x5a);
  for (let i = 0; i < 3000; i++) await writer.group.write(writer.lun, (i % 4096) * 4096, block);
  await writer.group.flush();
  const end = before.display('g1')[0]!.lagRecords;
  assert.ok(end >= 3000, `the journal holds the writes (${end} records)`);
  await first.close(); // no group stop: an unclean stop, as far as replication can tell

  const second = await StorageEngine.open(options(dir));
  t.after(() => second.close());
  const after = manager(second);
  let answered = 0;
  let stop = false;
  const receiver = (async () => {
    while (!stop) {
      try {
        await after.readJournal({ group: 'g1', fromSeq: end, maxBytes: mib, storedSeq: end, appliedSeq: end });
        answered += 1;
      } catch (error) {
        if (!isTwinstoreError(error) || (error.code !== 'PAIR_INVALID' && error.code !== 'JOURNAL_SEQ_MISMATCH')) throw error;
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
  })();
  try {
    await after.start();
  } finally {
    await new Promise((resolve) => setTimeout(resolve, 300));
    stop = true;
    await receiver;
  }
  assert.ok(answered > 0, 'the receiver is served once the group is up');
  assert.equal(after.display('g1')[0]!.consistencySeq, end - 1, 'the receiver\'s applied cursor was taken once the group was up');
});
