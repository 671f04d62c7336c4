// Goal: across real processes, only arrays that share the link key get a link.
// Arrays whose keys differ never come up, so pair create fails with a LINK_*
// code and the listening array logs the refusal; an array that has peers but
// no key refuses to start, naming link.pskFile; a plain TCP client on the
// link port gets nothing back.
// Method: `twinstore serve` processes started by test/helpers/array.ts, each
// with its own key file; peers added with the CLI; the refusal read from the
// array's stderr (JSON log lines); a raw TCP socket for the stranger.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { createVolume, projectRoot, run, startArray, tempDir, writeConfig, writePsk } from '../helpers/array.js';
import { waitFor } from '../helpers/replication.js';

const cliEntry = path.join(projectRoot, 'bin', 'twinstore.js');

interface LogLine {
  level: number;
  msg: string;
  remote?: string;
}

function logLines(stderr: string): LogLine[] {
  return stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogLine);
}

test('arrays whose link keys differ: no link, pair create fails with LINK_*, the listener logs the refusal', async (t) => {
  const keyA = writePsk(tempDir(t));
  const keyB = writePsk(tempDir(t));
  const a = await startArray(t, { id: 'site-a', pskFile: keyA });
  const b = await startArray(t, { id: 'site-b', pskFile: keyB });
  assert.equal(a.cli(['peer', 'add', 'site-b', '--link', b.ready!.link!]).code, 0);
  assert.equal(b.cli(['peer', 'add', 'site-a', '--link', a.ready!.link!]).code, 0);
  createVolume(a, 'pvol', '16MiB');
  createVolume(b, 'svol', '16MiB');
  for (const array of [a, b]) assert.equal(array.cli(['journal', 'create', 'jnl', '--size', '160MiB']).code, 0);

  await sleep(1500);
  for (const [array, peer] of [[a, 'site-b'], [b, 'site-a']] as const) {
    const listed = array.cli(['peer', 'list', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual((JSON.parse(listed.stdout) as { peers: Array<{ id: string; connected: boolean }> }).peers.map((p) => [p.id, p.connected]), [[peer, false]], `${array.ready!.array} sees ${peer} down`);
  }

  const created = a.cli(['pair', 'create', '--group', 'g1', '--pvol', 'pvol', '--svol', 'site-b:svol', '--journal', 'jnl', '--remote-journal', 'site-b:jnl']);
  assert.equal(created.code, 1);
  assert.match(created.stderr, /^twinstore: LINK_[A-Z_]+: /m);
  const forwarded = a.cli(['volume', 'show', 'site-b:svol']);
  assert.equal(forwarded.code, 1, 'nothing is forwarded either');
  assert.match(forwarded.stderr, /^twinstore: LINK_[A-Z_]+: /m);
  assert.equal(JSON.parse(a.cli(['volume', 'show', 'pvol', '--json']).stdout).role, 'simplex', 'the failed create changed nothing');

  for (const [listener, from] of [[b, a], [a, b]] as const) {
    const refused = logLines(listener.stderr).filter((l) => l.level === 40 && /^link: refused 127\.0\.0\.1:\d+: TLS-PSK handshake failed/.test(l.msg));
    assert.ok(refused.length >= 1, `${listener.ready!.array} logs the refusal of ${from.ready!.array}: ${listener.stderr.slice(-2000)}`);
    assert.match(refused[0]!.msg, /wrong link key/);
    assert.ok(!logLines(listener.stderr).some((l) => /link: peer site-[ab] connected/.test(l.msg)), 'no peer ever connected');
  }
});

test('an array with peers (or listen.link) but no link.pskFile refuses to start with CONFIG_INVALID naming link.pskFile', (t) => {
  const dir = tempDir(t);
  const withPeers = writeConfig(dir, { id: 'site-a', extraConfig: 'peers:\n  - id: site-b\n    link: 127.0.0.1:7999' });
  const withListener = writeConfig(dir, { id: 'site-c' });
  fs.writeFileSync(withListener, fs.readFileSync(withListener, 'utf8').replace('  api: 127.0.0.1:0', '  api: 127.0.0.1:0\n  link: 127.0.0.1:0'));
  for (const file of [withPeers, withListener]) {
    const started = run(process.execPath, [cliEntry, 'serve', '--config', file], { timeoutMs: 30_000 });
    assert.equal(started.code, 1, `serve exits 1 (${started.stderr})`);
    assert.equal(started.stdout, '', 'no ready line');
    assert.match(started.stderr, /^twinstore: CONFIG_INVALID: .* line \d+: link\.pskFile: is required when listen\.link or peers are set/m);
  }
  assert.ok(!fs.existsSync(path.join(dir, 'data')), 'the refused config touched no data folder or drive');
});

test('a plain TCP connection to the link port gets nothing', async (t) => {
  const array = await startArray(t, { id: 'site-a', pskFile: writePsk(tempDir(t)) });
  const [host, port] = splitAddress(array.ready!.link!);
  const socket = net.connect(port, host);
  t.after(() => socket.destroy());
  const received: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => received.push(chunk));
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  const localPort = socket.localPort;
  socket.write('GET / HTTP/1.0\r\n\r\n');
  socket.write(Buffer.concat([Buffer.from('TLNK'), Buffer.alloc(60)]));
  // A reset (ECONNRESET) is one way of getting nothing: events.once would reject on the socket's
  // 'error' event, so wait for 'close' itself, which follows a reset as well as an orderly end.
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await Promise.race([closed, sleep(30_000).then(() => assert.fail('timed out after 30000 ms waiting for the link port to close the plain TCP connection'))]);
  const bytes = Buffer.concat(received);
  assert.equal(bytes.indexOf('TLNK'), -1, 'no link frame');
  assert.ok(bytes.length <= 7, `at most a TLS alert record came back (${bytes.length} bytes)`);
  const refusals = (): LogLine[] => logLines(array.stderr).filter((l) => l.level === 40 && /^link: refused/.test(l.msg));
  await waitFor('the listener to log `link: refused` for the plain TCP connection', () => refusals().length > 0, 30_000);
  const refused = refusals();
  assert.equal(refused.length, 1, array.stderr);
  assert.equal(refused[0]!.remote, `127.0.0.1:${localPort}`);
});

function splitAddress(address: string): [string, number] {
  const at = address.lastIndexOf(':');
  return [address.slice(0, at), Number(address.slice(at + 1))];
}

test('a link key file and an API token file open to group or others are named in a warning at start', { timeout: 120_000 }, async (t) => {
  const keyFile = writePsk(tempDir(t));
  fs.chmodSync(keyFile, 0o644);
  const first = await startArray(t, { id: 'site-a', pskFile: keyFile });
  const tokenFile = path.join(first.dir, 'data', 'api-token');
  const warnings = (stderr: string): string[] => logLines(stderr).filter((l) => l.level === 40 && /has mode \d{4}: group or others can read or change it/.test(l.msg)).map((l) => l.msg);
  assert.deepEqual(warnings(first.stderr).length, 1, `only the key file is open at first start: ${first.stderr}`);
  assert.match(warnings(first.stderr)[0]!, new RegExp(`${keyFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} has mode 0644.*chmod 600`));
  await first.stop('SIGTERM');
  fs.chmodSync(tokenFile, 0o640);
  await first.start();
  const both = warnings(first.stderr);
  assert.equal(both.length, 2, `the key file and the token file: ${both.join(' | ')}`);
  assert.ok(both.some((m) => m.includes(`${tokenFile} has mode 0640`)), 'the token file is named with its mode');
  fs.chmodSync(keyFile, 0o600);
  fs.chmodSync(tokenFile, 0o600);
  await first.stop('SIGTERM');
  await first.start();
  assert.deepEqual(warnings(first.stderr), [], 'no warning once both are private');
});
