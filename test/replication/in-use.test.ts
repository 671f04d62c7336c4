// Goal: an operator cannot take a journal group's volumes or peer from under it
// (issue 12: `volume delete` of a journal in use succeeded, and the next start
// failed on VOLUME_NOT_FOUND). volume delete (with and without --force) of the
// journal, the P-VOL and the S-VOL, journal delete of a journal in use and peer
// remove of the group's peer are refused with VOLUME_IN_USE / PEER_IN_USE and a
// message naming the command to run first; nothing changes, and the array
// restarts with the group whole. Once the group is deleted, journal list shows
// the journal free and journal delete, volume delete and peer remove work (the
// removed peer stays gone after a restart).
// Method: two real arrays paired in one group (test/helpers/replication.ts),
// every command through the CLI as an operator types it (run asynchronously: B
// reaches A through a proxy in this process, which a blocking call would stall),
// plus the API routes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { projectRoot, startArray, tempDir, writePsk, type RunningArray } from '../helpers/array.js';
import { display, startSite, startWithin } from '../helpers/replication.js';

/** The CLI against an array, not blocking this process. */
function cli(array: RunningArray, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(projectRoot, 'bin', 'twinstore.js'), '--config', array.configFile, ...args], { timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr });
    });
  });
}

async function cliOk(array: RunningArray, args: string[]): Promise<string> {
  const result = await cli(array, args);
  assert.equal(result.code, 0, `twinstore ${args.join(' ')} exited ${result.code}: ${result.stderr}${result.stdout}`);
  return result.stdout;
}

/** Runs a CLI command that must fail; returns its stderr. */
async function refused(array: RunningArray, args: string[], code: string): Promise<string> {
  const result = await cli(array, args);
  assert.equal(result.code, 1, `twinstore ${args.join(' ')} should be refused with ${code}, got exit ${result.code}: ${result.stdout}${result.stderr}`);
  assert.match(result.stderr, new RegExp(`^twinstore: ${code}: `), result.stderr);
  return result.stderr;
}

async function volumeNames(array: RunningArray): Promise<string[]> {
  return (JSON.parse(await cliOk(array, ['volume', 'list', '--json'])) as { volumes: Array<{ name: string }> }).volumes.map((v) => v.name);
}

interface JournalRow {
  name: string;
  role: string;
  sizeBytes: number;
  group: string | null;
  usedPercent?: number;
}

async function journals(array: RunningArray): Promise<JournalRow[]> {
  return (JSON.parse(await cliOk(array, ['journal', 'list', '--json'])) as { journals: JournalRow[] }).journals;
}

test('volumes, journals and peers a group uses cannot be deleted; free ones can', { timeout: 480_000 }, async (t) => {
  const site = await startSite(t, { volumes: 1, volumeSize: '16MiB', journalSize: '129MiB', envA: {}, envB: {} });
  const { a, b } = site;

  for (const force of [[], ['--force']]) {
    const journal = await refused(a, ['volume', 'delete', 'jnl', ...force], 'VOLUME_IN_USE');
    assert.match(journal, /volume jnl is the journal of group g1; run pair delete --group g1 first/);
    const pvol = await refused(a, ['volume', 'delete', 'pvol0', ...force], 'VOLUME_IN_USE');
    assert.match(pvol, /volume pvol0 is a P-VOL of group g1; run pair delete --group g1 first/);
    const svol = await refused(b, ['volume', 'delete', 'svol0', ...force], 'VOLUME_IN_USE');
    assert.match(svol, /volume svol0 is an S-VOL of group g1; run pair delete --group g1 first/);
    await refused(b, ['volume', 'delete', 'jnl', ...force], 'VOLUME_IN_USE');
  }
  // ARRAY:NAME is refused by the array that holds it, with its code.
  await refused(b, ['volume', 'delete', 'site-a:jnl', '--force'], 'VOLUME_IN_USE');
  assert.match(await refused(a, ['journal', 'delete', 'jnl'], 'VOLUME_IN_USE'), /pair delete --group g1/);
  assert.match(await refused(a, ['journal', 'delete', 'pvol0'], 'VOLUME_NOT_FOUND'), /no journal named pvol0/);
  const peer = await refused(a, ['peer', 'remove', 'site-b'], 'PEER_IN_USE');
  assert.match(peer, /peer site-b is the peer of group g1; run pair delete --group g1 first/);
  await refused(a, ['peer', 'remove', 'site-z'], 'PEER_UNKNOWN');
  const http = await a.api('DELETE', '/v1/journals/jnl');
  assert.equal(http.status, 409);
  assert.equal(http.json.error.code, 'VOLUME_IN_USE');

  assert.deepEqual((await volumeNames(a)).sort(), ['jnl', 'pvol0']);
  const listed = await journals(a);
  assert.equal(listed.length, 1);
  assert.deepEqual({ name: listed[0]!.name, role: listed[0]!.role, group: listed[0]!.group }, { name: 'jnl', role: 'journal-master', group: 'g1' });
  assert.equal(typeof listed[0]!.usedPercent, 'number');
  const human = await cliOk(b, ['journal', 'list']);
  t.diagnostic(`journal list on B:\n${human}`);
  assert.match(human, /^NAME\s+ROLE\s+SIZE\s+GROUP\s+USED%\n/);
  assert.match(human, /\njnl\s+journal-restore\s+129MiB\s+g1\s+[\d.]+\n?$/);

  // The refusals changed nothing: A restarts with its group (the old code hung here on VOLUME_NOT_FOUND).
  await a.stop();
  await startWithin(a, 'A');
  assert.equal((await display(a))[0]!.pvol, 'site-a:pvol0');

  await cliOk(a, ['pair', 'delete', '--group', 'g1']);
  assert.deepEqual((await journals(a)).map((j) => [j.name, j.role, j.group]), [['jnl', 'journal-free', null]]);
  assert.equal((await cliOk(a, ['journal', 'delete', 'jnl'])).trim(), 'deleted journal jnl');
  assert.equal((await cliOk(a, ['journal', 'list'])).trim(), 'no journals');
  await cliOk(a, ['volume', 'delete', 'pvol0']);
  await cliOk(b, ['volume', 'delete', 'jnl']);
  assert.equal((await cliOk(a, ['peer', 'remove', 'site-b'])).trim(), 'removed peer site-b');
  assert.deepEqual(JSON.parse(await cliOk(a, ['peer', 'list', '--json'])).peers, []);
  await a.stop();
  await startWithin(a, 'A');
  assert.deepEqual(JSON.parse(await cliOk(a, ['peer', 'list', '--json'])).peers, [], 'a removed peer stays removed after a restart');
});

test('peer remove: refused while a remote command device forwards to the peer', { timeout: 240_000 }, async (t) => {
  const site = await startSite(t, { volumes: 1, volumeSize: '16MiB', journalSize: '129MiB', envA: {}, envB: {} });
  await cliOk(site.b, ['pair', 'delete', '--group', 'g1']);
  await cliOk(site.b, ['volume', 'create', 'rcmd', '--command-device', '--remote', 'site-a']);
  assert.match(await refused(site.b, ['peer', 'remove', 'site-a'], 'PEER_IN_USE'), /command device rcmd forwards to peer site-a; delete it first/);
  await cliOk(site.b, ['volume', 'delete', 'rcmd']);
  await cliOk(site.b, ['peer', 'remove', 'site-a']);
  const removed = await site.b.api('DELETE', '/v1/peers/site-a');
  assert.equal(removed.status, 404);
  assert.equal(removed.json.error.code, 'PEER_UNKNOWN');
});

test('peer remove of a peer from the config file says to edit the file', { timeout: 120_000 }, async (t) => {
  const dir = tempDir(t);
  const array = await startArray(t, { id: 'site-a', pskFile: writePsk(dir), extraConfig: 'peers:\n  - id: site-z\n    link: 127.0.0.1:9\n' });
  const message = await refused(array, ['peer', 'remove', 'site-z'], 'BAD_REQUEST');
  assert.match(message, /peer site-z is in the config file .*site-a\.yaml \(peers\[\]\); remove it there and restart the array/);
  assert.equal(JSON.parse(await cliOk(array, ['peer', 'list', '--json'])).peers[0].id, 'site-z');
});
