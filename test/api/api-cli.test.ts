// Goal: the management API and the `twinstore` CLI behave as documented for an
// administrator: authenticated, validated (a bad request names its field, every
// error carries its stable code), volumes appear and disappear as NBD exports,
// a volume in use is not deleted by accident, and volumes with their data
// survive a restart. Method: real `twinstore serve` processes on loopback with
// ports chosen at run time (test/helpers/array.ts); the API is called with
// fetch, the CLI as a child process, exports are listed with nbdinfo, sessions
// held open with nbdsh, and data written and checked with qemu-io.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { projectRoot, run, runOk, startArray, tempDir, type CommandResult, type RunningArray } from '../helpers/array.js';

const cliEntry = path.join(projectRoot, 'bin', 'twinstore.js');

/** Runs the CLI with the given global options (no --config). */
function twinstore(args: string[], env: Record<string, string> = {}): CommandResult {
  return run(process.execPath, [cliEntry, ...args], { env: { TWINSTORE_TOKEN: '', ...env }, timeoutMs: 30_000 });
}

/** Runs the CLI against the array and parses its --json output; fails on a non-zero exit. */
function cliJson<T>(array: RunningArray, args: string[]): T {
  const result = array.cli([...args, '--json']);
  assert.equal(result.code, 0, `twinstore ${args.join(' ')}: ${result.stderr}`);
  return JSON.parse(result.stdout) as T;
}

/** Asserts the CLI failed with exit status 1 and `twinstore: CODE: …` on stderr. */
function assertCliError(result: CommandResult, code: string, message?: RegExp): void {
  assert.equal(result.code, 1, `exit status 1 (stdout: ${result.stdout}, stderr: ${result.stderr})`);
  assert.match(result.stderr, new RegExp(`^twinstore: ${code}: `, 'm'));
  if (message) assert.match(result.stderr, message);
  assert.equal(result.stdout, '');
}

function exportNames(array: RunningArray): string[] {
  const listed = JSON.parse(runOk('nbdinfo', ['--list', '--json', `nbd://${array.nbd}`])) as { exports: Array<{ 'export-name': string }> };
  return listed.exports.map((e) => e['export-name']).sort();
}

interface VolumeJson {
  name: string;
  lun: number;
  sizeBytes: number;
  allocatedBytes: number;
  sessions: number;
  createdAt: string;
  nbdUri: string | null;
}

const volumeFields = ['name', 'lun', 'sizeBytes', 'allocatedBytes', 'role', 'readOnly', 'writesRefused', 'exported', 'nbdUri', 'sessions', 'createdAt'];

test('API: status needs the bearer token; the token file is private', async (t) => {
  const array = await startArray(t);
  const status = await array.api('GET', '/v1/status');
  assert.equal(status.status, 200);
  assert.equal(status.json.array, 'site-a');
  assert.equal(status.json.nbd, array.nbd);
  assert.equal(status.json.api, array.ready!.api);
  assert.ok(status.json.capacityBytes > 0 && status.json.capacityBytes <= 2 * 2 ** 30, `capacity ${status.json.capacityBytes}`);
  assert.equal(status.json.drives.length, 1);
  assert.equal(status.json.drives[0].path, path.join(array.dir, 'data', 'drive0.img'));

  const anonymous = await fetch(`http://${array.ready!.api}/v1/status`);
  assert.equal(anonymous.status, 401);
  assert.equal(((await anonymous.json()) as { error: { code: string } }).error.code, 'UNAUTHORIZED');
  const token = array.token();
  const sameLength = token.slice(0, -1) + (token.endsWith('0') ? '1' : '0');
  for (const wrong of ['wrong', sameLength, `${token}x`]) {
    const answer = await array.api('GET', '/v1/status', undefined, wrong);
    assert.equal(answer.status, 401, `token ${wrong}`);
    assert.equal(answer.json.error.code, 'UNAUTHORIZED');
    assert.match(answer.json.error.message, /token/);
  }
  const noRoute = await array.api('GET', '/v1/nothing');
  assert.equal(noRoute.status, 404);
  assert.equal(noRoute.json.error.code, 'NOT_FOUND');
  assert.equal((await array.api('GET', '/v1/nothing', undefined, 'wrong')).status, 401, 'no route is revealed without the token');

  assert.ok(token.length >= 32, 'a long random token');
  assert.equal(fs.statSync(path.join(array.dir, 'data', 'api-token')).mode & 0o777, 0o600);
});

test('an empty token file (e.g. a crash right after it was created) does not open the API to everyone', async (t) => {
  const dir = tempDir(t);
  fs.mkdirSync(path.join(dir, 'data'));
  fs.writeFileSync(path.join(dir, 'data', 'api-token'), '', { mode: 0o600 });
  const array = await startArray(t, { dir });
  const anonymous = await fetch(`http://${array.ready!.api}/v1/status`);
  assert.equal(anonymous.status, 401, 'no Authorization header');
  assert.equal((await array.api('GET', '/v1/status', undefined, '')).status, 401, 'an empty bearer token');
  assert.ok(array.token().length >= 32, 'a new token was made');
  assert.equal((await array.api('GET', '/v1/status')).status, 200);
  assert.equal(array.cli(['status']).code, 0, 'the CLI finds the new token');
});

test('API: bad volume requests get 400 naming the field; conflicts 409; unknown 404', async (t) => {
  const array = await startArray(t);
  const bad: Array<[string, unknown, string]> = [
    ['missing name', { size: '10MiB' }, 'name'],
    ['size "lots"', { name: 'v', size: 'lots' }, 'size'],
    ['size not a multiple of 4096', { name: 'v', size: 4097 }, 'size'],
    ['size zero', { name: 'v', size: 0 }, 'size'],
    ['negative lun', { name: 'v', size: '1MiB', lun: -1 }, 'lun'],
    ['fractional lun', { name: 'v', size: '1MiB', lun: 1.5 }, 'lun'],
    ['unknown field', { name: 'v', size: '1MiB', colour: 'red' }, 'colour'],
    ['invalid JSON text', '{"name": "v", "size": ', 'body'],
    ['a JSON array', [], 'body'],
    ['name with a slash', { name: 'a/b', size: '1MiB' }, 'name'],
    ['name with a colon', { name: 'a:b', size: '1MiB' }, 'name'],
    ['empty name', { name: '', size: '1MiB' }, 'name'],
  ];
  for (const [what, body, field] of bad) {
    const answer = await array.api('POST', '/v1/volumes', body);
    assert.equal(answer.status, 400, what);
    assert.equal(answer.json.error.code, 'BAD_REQUEST', what);
    assert.equal(answer.json.error.field, field, what);
    assert.match(answer.json.error.message, new RegExp(field === 'body' ? 'body|JSON|object' : field), what);
  }
  assert.deepEqual((await array.api('GET', '/v1/volumes')).json, { volumes: [] }, 'no bad request created anything');

  const created = await array.api('POST', '/v1/volumes', { name: 'vol.1', size: '10MiB', lun: 3 });
  assert.equal(created.status, 201);
  assert.deepEqual(Object.keys(created.json).sort(), [...volumeFields].sort());
  assert.equal(created.json.sizeBytes, 10 * 2 ** 20);
  assert.equal(created.json.nbdUri, `nbd://${array.nbd}/vol.1`);

  const duplicate = await array.api('POST', '/v1/volumes', { name: 'vol.1', size: '1MiB' });
  assert.equal(duplicate.status, 409);
  assert.equal(duplicate.json.error.code, 'VOLUME_EXISTS');
  const lunTaken = await array.api('POST', '/v1/volumes', { name: 'other', size: '1MiB', lun: 3 });
  assert.equal(lunTaken.status, 409);
  assert.equal(lunTaken.json.error.code, 'LUN_IN_USE');
  assert.equal(lunTaken.json.error.field, 'lun');

  const missing = await array.api('GET', '/v1/volumes/nope');
  assert.equal(missing.status, 404);
  assert.equal(missing.json.error.code, 'VOLUME_NOT_FOUND');
  assert.equal((await array.api('DELETE', '/v1/volumes/nope')).json.error.code, 'VOLUME_NOT_FOUND');
  assert.equal((await array.api('GET', '/v1/volumes/%234')).status, 404);
  const byLun = await array.api('GET', '/v1/volumes/%233');
  assert.equal(byLun.status, 200);
  assert.equal(byLun.json.name, 'vol.1');
  assert.deepEqual((await array.api('GET', '/v1/volumes')).json.volumes.map((v: VolumeJson) => v.name), ['vol.1']);
});

test('CLI: create, list, show (by name and #LUN), delete and status through --config', async (t) => {
  const array = await startArray(t);
  const created = array.cli(['volume', 'create', 'alpha', '--size', '10MiB']);
  assert.equal(created.code, 0, created.stderr);
  assert.match(created.stdout, /created volume alpha \(LUN 0, 10MiB\): nbd:\/\/127\.0\.0\.1:\d+\/alpha/);
  const beta = cliJson<VolumeJson>(array, ['volume', 'create', 'beta', '--size', '10MiB', '--lun', '5']);
  assert.equal(beta.lun, 5);

  const table = array.cli(['volume', 'list']);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /^NAME\s+LUN\s+SIZE/);
  assert.match(table.stdout, /^alpha\s+0\s+10MiB/m);
  assert.match(table.stdout, /^beta\s+5\s+10MiB/m);
  const { volumes } = cliJson<{ volumes: Array<Record<string, unknown>> }>(array, ['volume', 'list']);
  assert.deepEqual(volumes.map((v) => v.name), ['alpha', 'beta']);
  for (const volume of volumes) assert.deepEqual(Object.keys(volume).sort(), [...volumeFields].sort());
  assert.ok(!Number.isNaN(Date.parse(String(volumes[0]!.createdAt))), 'createdAt is a date');

  const shown = array.cli(['volume', 'show', 'beta']);
  assert.equal(shown.code, 0, shown.stderr);
  assert.match(shown.stdout, /^lun\s+5$/m);
  assert.deepEqual(cliJson<VolumeJson>(array, ['volume', 'show', '#5']).name, 'beta');
  assertCliError(array.cli(['volume', 'show', '#9']), 'VOLUME_NOT_FOUND', /#9/);

  const deleted = array.cli(['volume', 'delete', 'alpha']);
  assert.equal(deleted.code, 0, deleted.stderr);
  assert.match(deleted.stdout, /deleted volume alpha/);
  assertCliError(array.cli(['volume', 'show', 'alpha']), 'VOLUME_NOT_FOUND');
  assert.equal(array.cli(['volume', 'delete', '#5']).code, 0);
  assert.equal(array.cli(['volume', 'list']).stdout.trim(), 'no volumes');

  const status = array.cli(['status']);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /^array\s+site-a$/m);
  assert.match(status.stdout, /^nbd\s+127\.0\.0\.1:\d+$/m);
  assert.match(status.stdout, /^DRIVE\s+USE\s+PATH\s+SIZE\s+FREE\s+SYNC$/m);
  assert.match(status.stdout, /^alerts: none$/m);
  assert.match(status.stdout, /^sync\s+ok$/m, 'no drive failed a sync');
  const json = cliJson<{ array: string; nbd: string; volumes: number; drives: unknown[] }>(array, ['status']);
  assert.deepEqual([json.array, json.nbd, json.volumes, json.drives.length], ['site-a', array.nbd, 0, 1]);
});

test('CLI: --api with --token or TWINSTORE_TOKEN; errors print their code and exit 1', async (t) => {
  const array = await startArray(t);
  const api = `http://${array.ready!.api}`;
  const token = array.token();

  const created = twinstore(['--api', api, '--token', token, 'volume', 'create', 'viaflag', '--size', '10MiB', '--json']);
  assert.equal(created.code, 0, created.stderr);
  assert.equal((JSON.parse(created.stdout) as VolumeJson).name, 'viaflag');
  const listed = twinstore(['--api', `${api}/`, 'volume', 'list', '--json'], { TWINSTORE_TOKEN: token });
  assert.equal(listed.code, 0, listed.stderr);
  assert.deepEqual((JSON.parse(listed.stdout) as { volumes: VolumeJson[] }).volumes.map((v) => v.name), ['viaflag']);
  assert.equal(twinstore(['--api', api, 'status'], { TWINSTORE_TOKEN: token }).code, 0);

  assertCliError(twinstore(['--api', api, 'volume', 'list']), 'BAD_REQUEST', /--api needs --token or TWINSTORE_TOKEN/);
  assertCliError(twinstore(['--api', api, '--token', 'wrong', 'volume', 'list']), 'UNAUTHORIZED');
  assertCliError(twinstore(['volume', 'list']), 'BAD_REQUEST', /--config FILE .* or --api URL/);
  assertCliError(array.cli(['volume', 'create', 'viaflag', '--size', '1MiB']), 'VOLUME_EXISTS', /volume viaflag already exists/);
  assertCliError(array.cli(['volume', 'create', 'x', '--size', 'lots']), 'BAD_REQUEST', /--size "lots" is not a size/);
  assertCliError(array.cli(['volume', 'create', 'bad/name', '--size', '1MiB']), 'BAD_REQUEST', /bad\/name/);
  assertCliError(twinstore(['--api', 'http://127.0.0.1:1', '--token', token, 'status']), 'API_UNREACHABLE');
  assert.equal(array.cli(['volume', 'create', 'nosize']).code, 2, 'a missing required option is a usage error');
});

test('exports appear on create and disappear on delete', async (t) => {
  const array = await startArray(t);
  assert.deepEqual(exportNames(array), []);
  cliJson(array, ['volume', 'create', 'first', '--size', '10MiB']);
  cliJson(array, ['volume', 'create', 'second', '--size', '20MiB']);
  assert.deepEqual(exportNames(array), ['first', 'second']);
  const info = JSON.parse(runOk('nbdinfo', ['--json', array.uri('second')])) as { exports: Array<{ 'export-size': number; is_read_only: boolean }> };
  assert.equal(info.exports[0]!['export-size'], 20 * 2 ** 20);
  assert.equal(info.exports[0]!.is_read_only, false);
  assert.equal(array.cli(['volume', 'delete', 'first']).code, 0);
  assert.deepEqual(exportNames(array), ['second']);
  const gone = run('nbdinfo', ['--json', array.uri('first')], { timeoutMs: 30_000 });
  assert.notEqual(gone.code, 0, 'a deleted export cannot be opened');
});

/** Holds an NBD session open, reading every 100 ms; exits 3 as soon as the server closes it. */
function holdSession(t: TestContext, uri: string): { child: ChildProcess; exited: Promise<number | null> } {
  const script = [
    'import sys, time',
    'deadline = time.time() + 30',
    'while time.time() < deadline:',
    '    try:',
    '        h.pread(512, 0)',
    '    except Exception as e:',
    '        print("closed:", e)',
    '        sys.exit(3)',
    '    time.sleep(0.1)',
  ].join('\n');
  const child = spawn('nbdsh', ['-u', uri, '-c', script], {
    env: { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { child, exited };
}

async function waitForSessions(array: RunningArray, name: string, atLeast: number): Promise<VolumeJson> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const shown = cliJson<VolumeJson>(array, ['volume', 'show', name]);
    if (shown.sessions >= atLeast) return shown;
    await sleep(100);
  }
  assert.fail(`volume ${name} never reported ${atLeast} session(s)`);
}

test('deleting a volume with an open NBD session is refused with VOLUME_BUSY; --force closes the session', async (t) => {
  const array = await startArray(t);
  const uri = cliJson<VolumeJson>(array, ['volume', 'create', 'busy', '--size', '8MiB']).nbdUri!;
  const session = holdSession(t, uri);
  await waitForSessions(array, 'busy', 1);

  assertCliError(array.cli(['volume', 'delete', 'busy']), 'VOLUME_BUSY', /busy has 1 open NBD session/);
  const busy = await array.api('DELETE', '/v1/volumes/busy');
  assert.equal(busy.status, 409);
  assert.equal(busy.json.error.code, 'VOLUME_BUSY');
  assert.equal(cliJson<VolumeJson>(array, ['volume', 'show', 'busy']).sessions, 1, 'the refused delete left the session alone');
  assert.equal(session.child.exitCode, null, 'the client is still connected');

  const forced = array.cli(['volume', 'delete', 'busy', '--force']);
  assert.equal(forced.code, 0, forced.stderr);
  const code = await Promise.race([session.exited, sleep(10_000, 'timeout', { ref: false })]);
  assert.equal(code, 3, 'the client saw its session closed');
  assert.deepEqual(exportNames(array), []);
  assertCliError(array.cli(['volume', 'show', 'busy']), 'VOLUME_NOT_FOUND');
});

test('volumes, LUNs, sizes and data survive SIGTERM and restart', async (t) => {
  const array = await startArray(t);
  const before = cliJson<VolumeJson>(array, ['volume', 'create', 'keep', '--size', '64MiB', '--lun', '9']);
  cliJson(array, ['volume', 'create', 'other', '--size', '4MiB']);
  runOk('qemu-io', ['-f', 'raw', array.uri('keep'), '-c', 'write -P 0x42 0 64k', '-c', 'write -P 0x17 40M 4k']);
  const written = cliJson<VolumeJson>(array, ['volume', 'show', 'keep']);
  assert.equal(written.allocatedBytes, 2 * 2 ** 20, 'two extents were written');

  assert.equal(await array.stop(), 0, 'SIGTERM stops the array cleanly');
  assert.equal(fs.existsSync(path.join(array.dir, 'data', 'lock')), false, 'a clean stop releases the lock');
  await array.start();

  const after = cliJson<{ volumes: VolumeJson[] }>(array, ['volume', 'list']).volumes;
  assert.deepEqual(after.map((v) => [v.name, v.lun, v.sizeBytes]), [['other', 0, 4 * 2 ** 20], ['keep', 9, 64 * 2 ** 20]]);
  const kept = after.find((v) => v.name === 'keep')!;
  assert.equal(kept.createdAt, before.createdAt);
  assert.equal(kept.allocatedBytes, written.allocatedBytes);
  assert.equal(kept.nbdUri, array.uri('keep'), 'the URI follows the new port');
  assert.deepEqual(exportNames(array), ['keep', 'other']);
  const reads = runOk('qemu-io', ['-f', 'raw', array.uri('keep'),
    '-c', 'read -P 0x42 0 64k',
    '-c', 'read -P 0 64k 64k',
    '-c', 'read -P 0x17 40M 4k',
    '-c', 'read -P 0 60M 1M']);
  assert.doesNotMatch(reads, /Pattern verification failed/);
  assert.equal((reads.match(/^read \d+\/\d+ bytes/gm) ?? []).length, 4, reads);
});

test('two arrays run side by side; a second serve on the same data folder is refused', async (t) => {
  const siteA = await startArray(t, { id: 'site-a', drives: ['1GiB'] });
  const siteB = await startArray(t, { id: 'site-b', drives: ['1GiB'] });
  assert.notEqual(siteA.dir, siteB.dir);
  assert.notEqual(siteA.nbd, siteB.nbd);
  for (const [array, byte] of [[siteA, '0xaa'], [siteB, '0xbb']] as const) {
    cliJson(array, ['volume', 'create', 'same-name', '--size', '8MiB']);
    runOk('qemu-io', ['-f', 'raw', array.uri('same-name'), '-c', `write -P ${byte} 0 1M`]);
  }
  for (const [array, byte] of [[siteA, '0xaa'], [siteB, '0xbb']] as const) {
    assert.equal(cliJson<{ array: string }>(array, ['status']).array, array === siteA ? 'site-a' : 'site-b');
    const reads = runOk('qemu-io', ['-f', 'raw', array.uri('same-name'), '-c', `read -P ${byte} 0 1M`]);
    assert.doesNotMatch(reads, /Pattern verification failed/, `${array.dir}: ${reads}`);
  }

  const second = run(process.execPath, [cliEntry, 'serve', '--config', siteA.configFile], { timeoutMs: 30_000 });
  assert.notEqual(second.code, 0, 'the second serve exits with an error');
  assert.match(second.stderr, /data folder .*\/data is in use by process \d+/);
  assert.equal(second.stdout, '', 'it never reported ready');
  const lock = fs.readFileSync(path.join(siteA.dir, 'data', 'lock'), 'utf8').trim();
  assert.equal(Number(lock), siteA.child!.pid, 'the lock still names the running array');
  assert.equal(cliJson<{ array: string }>(siteA, ['status']).array, 'site-a', 'the running array is unharmed');

  await siteA.kill9();
  await siteA.start();
  assert.deepEqual(cliJson<{ volumes: VolumeJson[] }>(siteA, ['volume', 'list']).volumes.map((v) => v.name), ['same-name'], 'a stale lock after kill -9 is taken over');
});
