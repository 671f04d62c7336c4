// Goal: a host that can only do block I/O runs array commands through a
// command device (claim 44): it writes a request block at offset 0 and reads
// the reply at 4096; a remote command device on B answers with A's answer;
// takeover sent to B's own device swaps the roles; a wrong token, a malformed
// block, an unknown verb and a down link each give
// an error reply, and nothing else changes.
// Method: two real arrays paired in a group (B reaches A through a TCP
// proxy), command devices made with the CLI, and nbdsh (libnbd's Python
// shell) building request blocks with struct and zlib.crc32 as a host would
// (docs/command-device.md), run asynchronously so the proxy keeps working.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runOk, startArray } from '../helpers/array.js';
import { command } from '../helpers/command-device.js';
import { readAll } from '../helpers/nbdsh.js';
import { cliOk, display, startSite, waitFor } from '../helpers/replication.js';

test('command devices: pair display on B, A\'s status through B\'s remote device, and error replies', { timeout: 180_000 }, async (t) => {
  const site = await startSite(t, { volumes: 1, volumeSize: '16MiB', envA: {}, envB: {} });
  cliOk(site.b, ['volume', 'create', 'cmd', '--command-device']);
  cliOk(site.b, ['volume', 'create', 'rcmd', '--command-device', '--remote', 'site-a']);
  const token = site.b.token();
  // The CLI calls above block this process (and the proxy in it) for a moment: let B's link come back.
  await waitFor('B to show PAIR', async () => (await display(site.b))[0]!.status === 'PAIR' && (await display(site.b))[0]!.statusReason === null, 30_000, 100);

  const shown = await command(site.b.uri('cmd'), { id: 7, token, verb: 'pair display', args: { group: 'g1' } });
  t.diagnostic(`pair display through B's command device: ${JSON.stringify(shown).slice(0, 300)}`);
  assert.equal(shown.magic, 'TWCR');
  assert.equal(shown.status, 200);
  assert.equal(shown.id, 7, 'the reply echoes the request id');
  assert.equal(shown.answer.pairs[0].svol, 'site-b:svol0');
  assert.equal(shown.answer.pairs[0].status, 'PAIR');

  const remote = await command(site.b.uri('rcmd'), { id: 8, token, verb: 'status' });
  t.diagnostic(`status through B's remote command device: array ${remote.answer.array}`);
  assert.equal(remote.status, 200);
  assert.equal(remote.answer.array, 'site-a', 'B\'s remote device answers with A\'s status');

  const badToken = await command(site.b.uri('cmd'), { id: 9, token: 'not-the-token-at-all', verb: 'pair display' });
  assert.equal(badToken.status, 401);
  assert.equal(badToken.answer.error.code, 'UNAUTHORIZED');
  assert.equal(badToken.id, 9);

  const badMagic = await command(site.b.uri('cmd'), { id: 10, token, verb: 'status', magic: 'XXXX' });
  assert.equal(badMagic.status, 400);
  assert.match(badMagic.answer.error.message, /TWCQ/);

  const unknown = await command(site.b.uri('cmd'), { id: 11, token, verb: 'format everything' });
  assert.equal(unknown.status, 400);
  assert.match(unknown.answer.error.message, /unknown verb "format everything"; known: .*pair display/);

  // A split sent through the command device really runs (and a resync brings the pair back).
  const split = await command(site.b.uri('cmd'), { id: 12, token, verb: 'pair split', args: { group: 'g1' } });
  assert.equal(split.status, 200, JSON.stringify(split.answer));
  assert.equal(split.answer.atSplitPoint, true);
  const resync = await command(site.b.uri('rcmd'), { id: 13, token, verb: 'pair resync', args: { group: 'g1' } });
  assert.equal(resync.status, 200, JSON.stringify(resync.answer));

  await waitFor('PAIR again after the resync', async () => (await display(site.b))[0]!.status === 'PAIR', 60_000, 100);

  // takeover through B's own device: a planned swap (A answers), B is the primary now.
  const swap = await command(site.b.uri('cmd'), { id: 16, token, verb: 'takeover', args: { group: 'g1' } });
  t.diagnostic(`takeover through B's command device: ${JSON.stringify(swap.answer)}`);
  assert.equal(swap.status, 200, JSON.stringify(swap.answer));
  assert.equal(swap.answer.kind, 'swap');
  const after = await command(site.b.uri('cmd'), { id: 17, token, verb: 'pair display', args: { group: 'g1' } });
  assert.equal(after.answer.pairs[0].direction, 'site-b->site-a');

  site.proxy.setMode('cut');
  await waitFor('B to see the link down', () => JSON.parse(cliOk(site.b, ['peer', 'list', '--json'])).peers[0].connected === false, 30_000, 100);
  const down = await command(site.b.uri('rcmd'), { id: 14, token, verb: 'status' });
  t.diagnostic(`remote device with the link down: ${down.status} ${down.answer.error?.code}`);
  assert.equal(down.status, 503);
  assert.equal(down.answer.error.code, 'LINK_DOWN');
  const local = await command(site.b.uri('cmd'), { id: 15, token, verb: 'status' });
  assert.equal(local.answer.array, 'site-b', 'the local device still answers');
});

// Goal (issue 12): the API token a request carries is not readable on the device afterwards, by
// any NBD client of it, nor on the drive; a write at 0 too short to be a request is stored
// without the token field's bytes too. Method: one array, a command device, nbdsh sending a request and
// reading offset 0 back, nbdcopy reading the whole device, and the drive file read whole.
test('command device: no token is readable on the device or its drive after a request', { timeout: 60_000 }, async (t) => {
  const array = await startArray(t, { drives: ['256MiB'] });
  cliOk(array, ['volume', 'create', 'cmd', '--command-device']);
  const token = array.token();
  const reply = await command(array.uri('cmd'), { id: 21, token, verb: 'status' });
  assert.equal(reply.status, 200, JSON.stringify(reply.answer));
  assert.equal(reply.answer.array, 'site-a');
  const block = Buffer.from(reply.requestBlockHex, 'hex');
  t.diagnostic(`offset 0 after the request: ${block.subarray(0, 24).toString('hex')} | token field ${block.subarray(24, 88).toString('hex')} | ${block.subarray(88, 120).toString('utf8')}`);
  assert.equal(block.subarray(0, 4).toString('latin1'), 'TWCQ', 'the rest of the request block is kept as written');
  assert.match(block.subarray(88, 120).toString('utf8'), /^\{"verb": "status"/);
  assert.ok(block.subarray(24, 88).equals(Buffer.alloc(64)), 'the token field reads as zeros');

  // A 512-byte write at 0 (too short to be a request) with the token in the field is stored without it too.
  runOk('nbdsh', ['-u', array.uri('cmd'), '-c', `b = bytearray(b"x" * 512)\nb[24:24 + ${token.length}] = ${JSON.stringify(token)}.encode()\nh.pwrite(bytes(b), 0)`]);
  const device = readAll(array.uri('cmd'), array.dir);
  assert.ok(device.subarray(24, 88).equals(Buffer.alloc(64)), 'the token field of a short write reads as zeros');
  assert.equal(device.subarray(0, 24).toString('latin1') + device.subarray(88, 512).toString('latin1'), 'x'.repeat(24 + 424), 'the rest of the short write is stored');
  assert.equal(device.indexOf(token.slice(0, 16)), -1, 'no part of the token on the device');
  await array.stop();
  const drive = fs.readFileSync(path.join(array.dir, 'data', 'drive0.img'));
  assert.equal(drive.indexOf(token.slice(0, 16)), -1, 'no part of the token on the drive');
});

// Goal: a token an earlier version left stored in a device's request block (it stored the block
// whole) is gone once the array has started. Method: a marker written through NBD locates the
// device's block 0 on the stopped array's drive file; the token is put in its token field there,
// as the earlier version left it; after the start, nbdsh reads offset 0 and the stopped drive is
// searched again.
test('command device: a token stored by an earlier version is zeroed at start', { timeout: 60_000 }, async (t) => {
  const array = await startArray(t, { drives: ['256MiB'] });
  cliOk(array, ['volume', 'create', 'cmd', '--command-device']);
  const token = array.token();
  const marker = `marker-${process.pid}-${Date.now()}`;
  runOk('nbdsh', ['-u', array.uri('cmd'), '-c', `b = bytearray(512)\nb[88:88 + ${marker.length}] = ${JSON.stringify(marker)}.encode()\nh.pwrite(bytes(b), 0)\nh.flush()`]);
  await array.stop();
  const drivePath = path.join(array.dir, 'data', 'drive0.img');
  const at = fs.readFileSync(drivePath).indexOf(marker);
  assert.ok(at >= 88, 'the marker is on the drive');
  const fd = fs.openSync(drivePath, 'r+');
  fs.writeSync(fd, Buffer.from(token), 0, token.length, at - 88 + 24);
  fs.closeSync(fd);

  await array.start();
  const block = Buffer.from(runOk('nbdsh', ['-u', array.uri('cmd'), '-c', 'print(h.pread(512, 0).hex())']).trim(), 'hex');
  t.diagnostic(`token field after the start: ${block.subarray(24, 88).toString('hex')}`);
  assert.ok(block.subarray(24, 88).equals(Buffer.alloc(64)), 'the token field reads as zeros after the start');
  assert.equal(block.subarray(88, 88 + marker.length).toString('latin1'), marker, 'the rest of the block is kept');
  assert.match(array.stderr, /zeroed an API token stored in its request block/);
  await array.stop();
  assert.equal(fs.readFileSync(drivePath).indexOf(token.slice(0, 16)), -1, 'no part of the token on the drive');
});
