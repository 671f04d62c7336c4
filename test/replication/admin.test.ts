// Goal: the replication admin surface does what an administrator expects of
// it: journal create refuses a journal too small to be safe, journal show and
// pair display --json have their documented fields on both arrays, pair create
// refuses every bad request with a stable code and changes nothing when it
// does, two P-VOLs share one group (one sequence space), pair delete ends the
// pairs on both arrays (or on one with --force when the peer is gone), a
// command naming the other array is answered by it, and `twinstore demo` runs,
// stops and comes back with its data.
// Method: real `twinstore serve` processes (test/helpers/array.ts) driven with
// the CLI and the API; hosts are qemu-io, qemu-img and nbdsh over NBD; the demo
// runs as `node bin/twinstore.js demo --dir TMP`.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { createVolume, projectRoot, runOk, startArray, startPairOfArrays, tempDir, type CommandResult, type RunningArray } from '../helpers/array.js';

const cliEntry = path.join(projectRoot, 'bin', 'twinstore.js');

/** docs/architecture.md §8: the `pair display --json` contract. */
const displayFields = ['group', 'direction', 'epoch', 'pvol', 'svol', 'status', 'statusReason', 'copyPercent', 'journalUsedPercent', 'lagRecords', 'lagBytes', 'lagSeconds', 'consistencySeq', 'consistencyTime', 'restoring', 'copyBytes',
  'copyRemainingBytes', 'copyRateBytesPerSecond', 'copyEtaSeconds', 'pendingRegions', 'pendingBytes', 'restorePaused', 'recovery', 'svolConsistent'];

interface PairRow {
  group: string;
  pvol: string;
  svol: string;
  status: string;
  statusReason: string | null;
  lagRecords: number;
  consistencySeq: number;
}

interface JournalJson {
  name: string;
  role: string;
  group: string | null;
  instanceId?: string;
  epoch?: { counter: number; arrayId: string; nonce: string };
  cursors?: { tailSeq: number; nextSeq: number; durableSeq: number; appliedSeq: number };
  usedBytes?: number;
  capacityBytes?: number;
  usedPercent?: number;
}

function json<T>(array: RunningArray, args: string[]): T {
  const out = array.cli([...args, '--json']);
  assert.equal(out.code, 0, `twinstore ${args.join(' ')}: ${out.stderr}`);
  return JSON.parse(out.stdout) as T;
}

function pairs(array: RunningArray, group?: string): PairRow[] {
  return json<{ pairs: PairRow[] }>(array, ['pair', 'display', ...(group ? ['--group', group] : [])]).pairs;
}

function role(array: RunningArray, volume: string): string {
  return json<{ role: string }>(array, ['volume', 'show', volume]).role;
}

function journal(array: RunningArray, name: string): JournalJson {
  return json<JournalJson>(array, ['journal', 'show', name]);
}

/** Asserts exit status 1 and `twinstore: CODE: …` on stderr. */
function assertFails(result: CommandResult, code: string, message?: RegExp): void {
  assert.equal(result.code, 1, `exit 1 (stdout ${result.stdout}, stderr ${result.stderr})`);
  assert.match(result.stderr, new RegExp(`^twinstore: ${code}: `, 'm'));
  if (message) assert.match(result.stderr, message);
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

function pairCreate(array: RunningArray, group: string, pvol: string, svol: string, journalName = 'jnl', remoteJournal = 'site-b:jnl'): CommandResult {
  return array.cli(['pair', 'create', '--group', group, '--pvol', pvol, '--svol', svol, '--journal', journalName, '--remote-journal', remoteJournal]);
}

/** Holds an NBD session open (reading every 100 ms, up to 60 s). */
function holdSession(t: TestContext, uri: string): ChildProcess {
  const script = ['import time', 'deadline = time.time() + 60', 'while time.time() < deadline:', '    h.pread(512, 0)', '    time.sleep(0.1)'].join('\n');
  const child = spawn('nbdsh', ['-u', uri, '-c', script], { env: { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` }, stdio: 'ignore' });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return child;
}

function sessions(array: RunningArray, volume: string): number {
  return json<{ sessions: number }>(array, ['volume', 'show', volume]).sessions;
}

function compare(a: string, b: string): void {
  runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', a, b]);
}

test('journal create refuses less than 4x the largest write and names the limit', async (t) => {
  const array = await startArray(t);
  const limit = 134_242_304; // two header slots + 4 x (4 KiB record header + 32 MiB data)
  const small = array.cli(['journal', 'create', 'small', '--size', String(limit - 4096)]);
  assertFails(small, 'BAD_REQUEST', new RegExp(`at least 4x the largest write: ${limit} bytes`));
  const answer = await array.api('POST', '/v1/journals', { name: 'small', size: '64MiB' });
  assert.equal(answer.status, 400);
  assert.equal(answer.json.error.field, 'size');
  assert.equal((await array.api('GET', '/v1/volumes/small')).json.error.code, 'VOLUME_NOT_FOUND', 'nothing was made');

  const exact = json<JournalJson>(array, ['journal', 'create', 'exact', '--size', String(limit)]);
  assert.deepEqual(exact, { name: 'exact', role: 'journal-free', sizeBytes: limit, group: null });
  const listed = json<{ volumes: Array<{ name: string; exported: boolean }> }>(array, ['volume', 'list']).volumes;
  assert.deepEqual(listed.map((v) => [v.name, v.exported]), [['exact', false]], 'a journal is not an NBD export');
});

test('pair create refusals, two P-VOLs in one group, journal show and pair display fields, forwarding, pair delete', async (t) => {
  const { a, b } = await startPairOfArrays(t);
  const pvol1 = createVolume(a, 'pvol1', '32MiB');
  const pvol2 = createVolume(a, 'pvol2', '16MiB');
  createVolume(b, 'svol1', '32MiB');
  createVolume(b, 'svol2', '16MiB');
  createVolume(b, 'small', '8MiB');
  for (const array of [a, b]) {
    assert.equal(array.cli(['journal', 'create', 'jnl', '--size', '160MiB']).code, 0);
    assert.equal(array.cli(['journal', 'create', 'jnl2', '--size', '160MiB']).code, 0);
  }
  runOk('qemu-io', ['-f', 'raw', pvol1, '-c', 'write -P 0x11 0 4M']);
  runOk('qemu-io', ['-f', 'raw', pvol2, '-c', 'write -P 0x22 1M 2M']);

  // The S-VOL's size differs: refused on B, named, over the link.
  assertFails(pairCreate(a, 'g1', 'pvol1', 'site-b:small'), 'PAIR_INVALID', /S-VOL small holds 8388608 bytes, the P-VOL 33554432/);
  const sized = await a.api('POST', '/v1/pairs', { group: 'g1', pvol: 'pvol1', svol: 'site-b:small', journal: 'jnl', remoteJournal: 'site-b:jnl' });
  assert.equal(sized.status, 409);
  assert.equal(sized.json.error.code, 'PAIR_INVALID');

  // The S-VOL is open by a host.
  const host = holdSession(t, b.uri('svol1'));
  await waitFor('the host session on svol1', () => sessions(b, 'svol1') === 1);
  assertFails(pairCreate(a, 'g1', 'pvol1', 'site-b:svol1'), 'VOLUME_BUSY', /S-VOL svol1 is open by a host/);
  host.kill('SIGKILL');
  await waitFor('the host session closed', () => sessions(b, 'svol1') === 0);
  for (const [array, name] of [[a, 'pvol1'], [b, 'svol1'], [b, 'small']] as const) assert.equal(role(array, name), 'simplex', `${name} untouched by the refusals`);
  for (const array of [a, b]) assert.equal(journal(array, 'jnl').role, 'journal-free');

  const created = pairCreate(a, 'g1', 'pvol1', 'site-b:svol1');
  assert.equal(created.code, 0, created.stderr);

  // The P-VOL is no longer simplex; the journals belong to g1.
  assertFails(pairCreate(a, 'g2', 'pvol1', 'site-b:svol2', 'jnl2', 'site-b:jnl2'), 'PAIR_INVALID', /pvol1 is pvol, not simplex/);
  assertFails(pairCreate(a, 'g2', 'pvol2', 'site-b:svol2', 'jnl', 'site-b:jnl2'), 'PAIR_INVALID', /journal jnl is journal-master/);
  assertFails(pairCreate(a, 'g2', 'pvol2', 'site-b:svol2', 'jnl2', 'site-b:jnl'), 'PAIR_INVALID', /journal jnl is journal-restore/);
  assertFails(pairCreate(a, 'g1', 'pvol2', 'site-b:svol2', 'jnl2', 'site-b:jnl'), 'PAIR_INVALID', /group g1 already uses journal jnl; name that one/);
  assertFails(pairCreate(a, 'g1', 'pvol2', 'site-b:svol2', 'jnl', 'site-b:jnl2'), 'PAIR_INVALID', /group g1 already uses journal jnl on site-b/);
  const refused = await a.api('POST', '/v1/pairs', { group: 'g2', pvol: 'pvol1', svol: 'site-b:svol2', journal: 'jnl2', remoteJournal: 'site-b:jnl2' });
  assert.equal(refused.json.error.field, 'pvol');
  assert.equal(role(a, 'pvol2'), 'simplex');
  assert.equal(role(b, 'svol2'), 'simplex');
  for (const array of [a, b]) assert.equal(journal(array, 'jnl2').role, 'journal-free');
  assert.throws(() => pairs(a, 'g2'), 'no group g2 was made');

  // A second P-VOL joins g1: one journal, one sequence space.
  const joined = pairCreate(a, 'g1', 'pvol2', 'site-b:svol2');
  assert.equal(joined.code, 0, joined.stderr);
  await waitFor('both pairs PAIR with lag 0', () => {
    const rows = pairs(a, 'g1');
    return rows.length === 2 && rows.every((p) => p.status === 'PAIR' && p.lagRecords === 0);
  });
  const before = journal(a, 'jnl').cursors!.nextSeq;
  runOk('qemu-io', ['-f', 'raw', pvol1, '-c', 'write -P 0x31 8M 64k', '-c', 'write -P 0x32 9M 64k', '-c', 'write -P 0x33 10M 64k', '-c', 'flush']);
  runOk('qemu-io', ['-f', 'raw', pvol2, '-c', 'write -P 0x41 4M 64k', '-c', 'write -P 0x42 5M 64k', '-c', 'flush']);
  assert.equal(journal(a, 'jnl').cursors!.nextSeq, before + 5, 'writes to both P-VOLs take seqs from one counter');
  await waitFor('lag 0 after the writes', () => pairs(a, 'g1').every((p) => p.lagRecords === 0));
  await waitFor('B applied every record', () => journal(b, 'jnl').cursors!.appliedSeq === before + 5);
  compare(pvol1, b.uri('svol1'));
  compare(pvol2, b.uri('svol2'));
  const points = pairs(b, 'g1').map((p) => p.consistencySeq);
  assert.deepEqual(points, [before + 4, before + 4], 'both S-VOLs are at one consistency point');

  // journal show on both sides.
  const master = journal(a, 'jnl');
  const restore = journal(b, 'jnl');
  for (const [shown, expectedRole] of [[master, 'journal-master'], [restore, 'journal-restore']] as const) {
    assert.deepEqual(Object.keys(shown).sort(), ['capacityBytes', 'cursors', 'epoch', 'group', 'instanceId', 'name', 'role', 'sizeBytes', 'usedBytes', 'usedPercent']);
    assert.equal(shown.role, expectedRole);
    assert.equal(shown.group, 'g1');
    assert.match(shown.instanceId!, /^[0-9a-f-]{8,}$/);
    assert.deepEqual(Object.keys(shown.cursors!).sort(), ['appliedSeq', 'durableSeq', 'nextSeq', 'tailSeq']);
    assert.ok(shown.capacityBytes! > 150 * 2 ** 20 && shown.usedBytes! >= 0 && shown.usedPercent! >= 0);
  }
  assert.deepEqual(master.epoch, restore.epoch, 'one group epoch on both arrays');
  assert.equal(master.epoch!.arrayId, 'site-a');
  assert.notEqual(master.instanceId, restore.instanceId, 'each journal has its own instance id');
  assert.equal(restore.cursors!.appliedSeq, master.cursors!.nextSeq);

  // pair display --json: exactly the docs/architecture.md §8 fields, on both arrays.
  for (const array of [a, b]) {
    const rows = json<{ pairs: Array<Record<string, unknown>> }>(array, ['pair', 'display']).pairs;
    assert.equal(rows.length, 2);
    for (const row of rows) assert.deepEqual(Object.keys(row).sort(), [...displayFields].sort());
    assert.deepEqual(rows.map((r) => [r.pvol, r.svol, r.direction, r.group]), [
      ['site-a:pvol1', 'site-b:svol1', 'site-a->site-b', 'g1'],
      ['site-a:pvol2', 'site-b:svol2', 'site-a->site-b', 'g1'],
    ]);
  }

  // A command naming the other array is forwarded and answered there.
  const remote = json<{ name: string; role: string; readOnly: boolean; nbdUri: string }>(a, ['volume', 'show', 'site-b:svol1']);
  assert.deepEqual([remote.name, remote.role, remote.readOnly, remote.nbdUri], ['svol1', 'svol', true, b.uri('svol1')]);
  assertFails(a.cli(['volume', 'show', 'site-b:nothing']), 'VOLUME_NOT_FOUND', /site-b/);
  assertFails(a.cli(['volume', 'show', 'site-z:svol1']), 'PEER_UNKNOWN');

  // pair delete with the peer up ends both pairs on both arrays.
  const deleted = a.cli(['pair', 'delete', '--group', 'g1']);
  assert.equal(deleted.code, 0, deleted.stderr);
  for (const [array, names] of [[a, ['pvol1', 'pvol2']], [b, ['svol1', 'svol2']]] as const) {
    for (const name of names) assert.equal(role(array, name), 'simplex');
    assert.deepEqual(journal(array, 'jnl'), { name: 'jnl', role: 'journal-free', sizeBytes: 160 * 2 ** 20, group: null });
    assert.deepEqual(pairs(array), []);
  }
  runOk('qemu-io', ['-f', 'raw', b.uri('svol1'), '-c', 'write -P 0x99 0 64k', '-c', 'read -P 0x99 0 64k']);
  runOk('qemu-io', ['-f', 'raw', pvol1, '-c', 'read -P 0x11 0 4M']);
});

test('pair delete with the peer down needs --force and ends the pair on this array alone', async (t) => {
  const { a, b } = await startPairOfArrays(t);
  const pvol = createVolume(a, 'pvol', '8MiB');
  createVolume(b, 'svol', '8MiB');
  for (const array of [a, b]) assert.equal(array.cli(['journal', 'create', 'jnl', '--size', '160MiB']).code, 0);
  assert.equal(pairCreate(a, 'g1', 'pvol', 'site-b:svol').code, 0);
  await waitFor('PAIR', () => pairs(a)[0]?.status === 'PAIR');
  await b.kill9();
  await waitFor('A sees the link down', () => pairs(a)[0]?.statusReason === 'link-down', 10_000);

  assertFails(a.cli(['pair', 'delete', '--group', 'g1']), 'LINK_DOWN', /--force/);
  assert.equal(role(a, 'pvol'), 'pvol', 'a refused delete changes nothing');
  const forced = a.cli(['pair', 'delete', '--group', 'g1', '--force']);
  assert.equal(forced.code, 0, forced.stderr);
  assert.equal(role(a, 'pvol'), 'simplex');
  assert.equal(journal(a, 'jnl').role, 'journal-free');
  assert.deepEqual(pairs(a), []);
  runOk('qemu-io', ['-f', 'raw', pvol, '-c', 'write -P 0x5e 0 64k']);

  // B comes back still holding its side of g1; A no longer has the group, so B's delete ends it there.
  await b.start();
  assert.equal(pairs(b, 'g1').length, 1);
  await waitFor('the link is back', () => json<{ peers: Array<{ connected: boolean }> }>(b, ['peer', 'list']).peers[0]?.connected === true);
  const cleanup = b.cli(['pair', 'delete', '--group', 'g1']);
  assert.equal(cleanup.code, 0, cleanup.stderr);
  assert.equal(role(b, 'svol'), 'simplex');
  assert.equal(journal(b, 'jnl').role, 'journal-free');
  runOk('qemu-io', ['-f', 'raw', b.uri('svol'), '-c', 'write -P 0x77 0 64k']);
});

interface DemoReady {
  ready: boolean;
  group: string;
  arrays: Array<{ id: string; pid: number; config: string; nbd: string; api: string; link: string }>;
  pvol: string;
  svol: string;
}

/** Runs `twinstore demo --dir DIR` until its JSON ready line; SIGKILLs it (and its arrays) after the test if still running. */
async function startDemo(t: TestContext, dir: string): Promise<{ child: ChildProcess; ready: DemoReady; output: () => string; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [cliEntry, 'demo', '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stderr!.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let pids: number[] = [];
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
  });
  const ready = await new Promise<DemoReady>((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      output += line + '\n';
      if (line.startsWith('{"ready":true')) resolve(JSON.parse(line) as DemoReady);
    });
    child.once('exit', (code) => reject(new Error(`demo exited ${code} before it was ready:\n${output}`)));
  });
  pids = ready.arrays.map((a) => a.pid);
  return { child, ready, output: () => output, exited };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function demoCli(config: string, args: string[]): unknown {
  return JSON.parse(runOk(process.execPath, [cliEntry, '--config', config, ...args, '--json']));
}

test('twinstore demo: two arrays paired, a JSON ready line, SIGTERM stops both, a second run reuses the data', async (t) => {
  const dir = tempDir(t);
  const first = await startDemo(t, dir);
  const ready = first.ready;
  assert.equal(ready.group, 'demo');
  assert.deepEqual(ready.arrays.map((a) => a.id), ['site-a', 'site-b']);
  for (const array of ready.arrays) {
    assert.deepEqual(Object.keys(array).sort(), ['api', 'config', 'id', 'link', 'nbd', 'pid']);
    assert.ok(path.isAbsolute(array.config) && array.config.startsWith(dir), array.config);
    assert.match(array.link, /^127\.0\.0\.1:\d+$/);
    assert.ok(alive(array.pid));
  }
  const [siteA, siteB] = ready.arrays as [DemoReady['arrays'][0], DemoReady['arrays'][0]];
  assert.equal(ready.pvol, `nbd://${siteA.nbd}/vol0`);
  assert.equal(ready.svol, `nbd://${siteB.nbd}/vol0`);
  assert.match(first.output(), /pair display --watch/);

  const display = (config: string): PairRow[] => (demoCli(config, ['pair', 'display']) as { pairs: PairRow[] }).pairs;
  await waitFor('the demo pair in PAIR', () => display(siteA.config)[0]?.status === 'PAIR');
  assert.deepEqual(display(siteB.config).map((p) => [p.group, p.pvol, p.svol]), [['demo', 'site-a:vol0', 'site-b:vol0']]);
  runOk('qemu-io', ['-f', 'raw', ready.pvol, '-c', 'write -P 0xd7 1M 1M', '-c', 'flush']);
  await waitFor('lag 0', () => display(siteA.config)[0]?.lagRecords === 0);
  const seqs = (demoCli(siteA.config, ['journal', 'show', 'jnl0']) as JournalJson).cursors!.nextSeq;

  first.child.kill('SIGTERM');
  assert.equal(await first.exited, 0, `the demo exits 0 on SIGTERM:\n${first.output().slice(-3000)}`);
  await waitFor('both arrays exited', () => ready.arrays.every((a) => !alive(a.pid)), 10_000);

  const second = await startDemo(t, dir);
  assert.deepEqual(second.ready.arrays.map((a) => [a.id, a.config, a.nbd, a.api, a.link]), ready.arrays.map((a) => [a.id, a.config, a.nbd, a.api, a.link]), 'the same arrays, at the same addresses');
  const again = display(siteA.config);
  assert.deepEqual(again.map((p) => [p.group, p.status]), [['demo', 'PAIR']], 'the pair is still there, in PAIR: no new copy');
  assert.equal((demoCli(siteA.config, ['journal', 'show', 'jnl0']) as JournalJson).cursors!.nextSeq, seqs, 'no record was added: nothing was copied again');
  runOk('qemu-io', ['-f', 'raw', '-r', second.ready.svol, '-c', 'read -P 0xd7 1M 1M']);
  second.child.kill('SIGTERM');
  assert.equal(await second.exited, 0);
  await waitFor('both arrays exited again', () => second.ready.arrays.every((a) => !alive(a.pid)), 10_000);
});

test('an S-VOL name without its array, or a journal on the wrong array, is refused before anything changes', async (t) => {
  const { a, b } = await startPairOfArrays(t);
  createVolume(a, 'pvol', '8MiB');
  createVolume(b, 'svol', '8MiB');
  for (const array of [a, b]) assert.equal(array.cli(['journal', 'create', 'jnl', '--size', '160MiB']).code, 0);
  assertFails(pairCreate(a, 'g1', 'pvol', 'svol'), 'BAD_REQUEST', /PEER:NAME/);
  assertFails(pairCreate(a, 'g1', 'pvol', 'site-b:svol', 'jnl', 'site-a:jnl'), 'BAD_REQUEST');
  assertFails(pairCreate(a, 'g1', 'pvol', 'site-b:nothing'), 'VOLUME_NOT_FOUND', /no S-VOL nothing on site-b/);
  assert.equal(role(a, 'pvol'), 'simplex');
  for (const array of [a, b]) assert.equal(journal(array, 'jnl').role, 'journal-free');
});
