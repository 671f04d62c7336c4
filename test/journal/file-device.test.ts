// Goal: the journal works on a real file as it does in memory, and its bytes
// on disk are laid out as docs/journal-format.md says. Method: a sparse file of
// MIN_BYTES in a temporary folder behind a JournalDevice of positional reads and
// writes plus fdatasync; records of every kind, a wrap, a close and reopen from
// a new file handle; a few fields read straight from the file.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { crc32c } from '@node-rs/crc32';
import { Journal } from '../../src/journal/index.js';
import { tempDir } from '../helpers/array.js';
import { FileJournalDevice, append, formatted, hasData, kinds, pattern, readAll, recordMeta } from './helpers.js';

test('records survive close and reopen on a real file, through a wrap of the ring', async (t) => {
  const file = path.join(tempDir(t), 'journal.img');
  const device = await FileJournalDevice.create(file, Journal.MIN_BYTES);
  const journal = await formatted(device);
  for (let i = 0; i < 45; i += 1) {
    const kind = kinds[i % kinds.length]!;
    await append(journal, recordMeta(kind, hasData(kind) ? 8 * 2 ** 20 + i : 4096 * i), journal.nextSeq);
    await journal.sync();
    if (i >= 30) journal.release(journal.durableSeq - 20);
  }
  await journal.close();
  await device.close();

  const raw = fs.readFileSync(file);
  assert.ok([raw.readUInt32BE(0), raw.readUInt32BE(4096)].includes(0x54574a48), 'a header slot starts with "TWJH"');
  const slot = raw.readUInt32BE(0) === 0x54574a48 && raw.readUInt32BE(4096 + 16 + 4) < raw.readUInt32BE(16 + 4) ? 0 : 1;
  const header = raw.subarray(slot * 4096, slot * 4096 + 4096);
  assert.equal(crc32c(header.subarray(12)), header.readUInt32BE(8), 'the slot CRC32C covers bytes 12..4096');
  const tailPosition = header.readUInt32BE(52);
  assert.equal(raw.readUInt32BE(tailPosition), 0x54574a52, 'the tail position holds a record header "TWJR"');

  const reopenedDevice = await FileJournalDevice.open(file);
  t.after(() => reopenedDevice.close());
  const { journal: reopened, recovery } = await Journal.open(reopenedDevice);
  assert.equal(recovery.cleanShutdown, true);
  assert.equal(recovery.steps.wrap, 1, 'the kept records wrap around the ring end');
  assert.equal(reopened.nextSeq, 46);
  const records = await readAll(reopened);
  assert.deepEqual(records.map((r) => r.seq), Array.from({ length: 46 - reopened.tailSeq }, (_, i) => reopened.tailSeq + i));
  for (const record of records) {
    if (record.data !== undefined) assert.ok(record.data.equals(pattern(record.seq, record.length)), `seq ${record.seq}`);
  }
});
