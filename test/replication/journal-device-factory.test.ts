// Goal: every journal device comes from the factory the array was given
// (ReplicationOptions.journalDevice, which the seeded simulator sets to inject
// its faults), also the device of a journal opened again after a drive error
// stopped it. Before, a master group's resync after a drive error opened its
// journal on a plain VolumeJournalDevice, so the simulator saw none of that
// journal's writes again and could fault none of them.
// Method: the replication manager in this process on a real storage engine
// (files in a temporary folder), a stand-in peer; the factory wraps the real
// device, counts the devices it makes and the writes they take, and fails
// writes while told to. A host write while it fails stops the journal and
// suspends the pair (PSUE drive-error); with the drive working again a pair
// resync opens the journal again; host writes after it must reach the
// factory's device.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { StorageEngine, type Volume } from '../../src/storage/index.js';
import { ReplicationManager } from '../../src/replication/index.js';
import { VolumeJournalDevice } from '../../src/replication/journal-device.js';
import { TwinstoreError } from '../../src/errors.js';
import type { JournalDevice } from '../../src/journal/index.js';

const mib = 2 ** 20;

/** The stand-in receiver: no dirty ranges at a resync, OK to everything else. */
const peer = {
  connected: true,
  request: async (method: string) => ({ body: method === 'pair.resync-prepare' ? { dirty: [] } : { ok: true }, payload: [] }),
};

test('a journal opened again after a drive error gets its device from the factory', { timeout: 60_000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twinstore-jdev-'));
  fs.mkdirSync(path.join(dir, 'data'));
  const engine = await StorageEngine.open({ arrayId: 'site-a', dataDir: path.join(dir, 'data'), extentBytes: mib, drives: [{ path: path.join(dir, 'drive0.img'), sizeBytes: 512 * mib }] });

  const made: string[] = [];
  let writes = 0;
  let failing = false;
  const journalDevice = (volume: Volume, eng: StorageEngine): JournalDevice => {
    const inner = new VolumeJournalDevice(volume, eng);
    made.push(volume.name);
    return {
      get sizeBytes() { return inner.sizeBytes; },
      read: (offset, buffer) => inner.read(offset, buffer),
      write: (offset, data) => {
        if (failing) return Promise.reject(new TwinstoreError('IO_ERROR', 'injected journal write error'));
        writes += 1;
        return inner.write(offset, data);
      },
      flush: () => inner.flush(),
    };
  };
  const manager = new ReplicationManager({
    engine,
    journalDevice,
    log: pino({ level: 'silent' }),
    peerChannel: () => peer,
    defaults: { overflow: 'suspend', throttleMsMax: 5000, regionBytes: 65536, fence: 'never', fenceAfterMs: 30_000 },
  });
  t.after(async () => {
    await manager.stop();
    await engine.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await manager.start();
  await engine.createVolume({ name: 'pvol', sizeBytes: 4 * mib });
  await manager.createJournal('jnl', 160 * mib);
  await manager.createPair({ group: 'g1', pvol: 'pvol', svol: 'site-b:svol', journal: 'jnl', remoteJournal: 'site-b:jnl' });
  assert.deepEqual(made, ['jnl'], 'pair create formats the journal on a device from the factory');

  const writer = manager.masterOf(engine.volume('pvol')!)!;
  const block = Buffer.alloc(4096, 0x5a);
  await writer.group.write(writer.lun, 0, block);
  await writer.group.flush();
  failing = true;
  // The host sees the error (EIO); the record never was durable, so nothing acknowledged is lost.
  await assert.rejects(writer.group.write(writer.lun, 4096, block), { code: 'IO_ERROR' });
  const suspended = manager.display('g1')[0]!;
  assert.equal(suspended.status, 'PSUE', `a journal write error suspends the pair (status ${suspended.status} ${suspended.statusReason ?? ''})`);
  failing = false;

  await manager.resync('g1');
  assert.deepEqual(made, ['jnl', 'jnl'], 'the resync opens the stopped journal again on a device from the factory');
  const before = writes;
  await writer.group.write(writer.lun, 8192, block);
  await writer.group.flush();
  assert.ok(writes > before, `host writes after the reopen reach the factory's device (${writes - before} device writes)`);
});
