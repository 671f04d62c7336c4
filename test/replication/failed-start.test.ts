// Goal: a start that fails exits non-zero at once with its error code on
// stderr, after closing what it opened and releasing the data folder (issue
// 12). Regression for: a start that failed after the link listener was up (a
// journal group that could not be opened) printed its error and hung
// half-started: no API, the link port open, the data folder's lock gone.
// Method: two real arrays paired in a group; B restarted with what an
// operator may get wrong: its config no longer lists the peer its group
// receives from (PEER_UNKNOWN while the groups open, after the link listens),
// then its API port held by another process (LISTEN_FAILED after the link and
// NBD listeners are up). Each time: B exits non-zero within a bound with the
// code on stderr, its link and NBD ports refuse connections, the lock file is
// gone; the fixed start then works and the pair goes back to PAIR, identical.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createVolume, startArray, tempDir, writePsk, runOk, type RunningArray } from '../helpers/array.js';
import { cliOk, display, startWithin, waitFor } from '../helpers/replication.js';

/** A failing start must end within this (it does in well under a second; the machine may be busy). */
const failedStartMsMax = 30_000;

/** Starts the array and expects the start to fail: its exit code, stderr and time to exit (or a hang, past the bound). */
async function failedStart(array: RunningArray): Promise<{ message: string; ms: number }> {
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the failing start was still running ${failedStartMsMax} ms later (hung half-started): ${array.stderr.slice(-1500)}`)), failedStartMsMax);
  });
  try {
    await Promise.race([array.start(), hung]);
  } catch (error) {
    const message = (error as Error).message;
    if (message.startsWith('the failing start')) throw error;
    const ms = Date.now() - started;
    // 'exit' may come before the last of stderr is read: wait for the stream's end.
    const stderr = array.child?.stderr;
    if (stderr && !stderr.closed) await new Promise((resolve) => stderr.once('close', resolve));
    return { message: `${message.split(':')[0]}\n${array.stderr}`, ms };
  } finally {
    clearTimeout(timer);
  }
  throw new Error('the start succeeded');
}

/** Resolves true when a TCP connect to `address` (host:port) is refused. */
function refused(address: string): Promise<boolean> {
  const at = address.lastIndexOf(':');
  return new Promise((resolve) => {
    const socket = net.connect({ host: address.slice(0, at), port: Number(address.slice(at + 1)) });
    socket.once('connect', () => { socket.destroy(); resolve(false); });
    socket.once('error', () => resolve(true));
  });
}

async function checkReleased(array: RunningArray, ports: { link: string; nbd: string }): Promise<void> {
  assert.ok(await refused(ports.link), `the link port ${ports.link} is closed`);
  assert.ok(await refused(ports.nbd), `the NBD port ${ports.nbd} is closed`);
  assert.ok(!fs.existsSync(path.join(array.dir, 'data', 'lock')), 'the data folder lock is released');
}

async function pairAndLag0(a: RunningArray, b: RunningArray): Promise<void> {
  await waitFor('PAIR with lag 0 on A', async () => (await display(a)).every((p) => p.status === 'PAIR' && p.lagRecords === 0), 60_000, 200);
  runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', a.uri('pvol0'), b.uri('svol0')]);
}

test('a failing start exits non-zero at once with its code, its ports closed and its folder unlocked; the fixed start works', { timeout: 240_000 }, async (t) => {
  const dir = tempDir(t);
  const psk = writePsk(dir);
  const a = await startArray(t, { id: 'site-a', pskFile: psk });
  a.pinPorts();
  const peers = `peers:\n  - id: site-a\n    link: ${a.ready!.link}\n`;
  const b = await startArray(t, { id: 'site-b', pskFile: psk, extraConfig: peers });
  b.pinPorts();
  const ports = { link: b.ready!.link!, nbd: b.ready!.nbd };
  cliOk(a, ['peer', 'add', 'site-b', '--link', ports.link]);
  createVolume(a, 'pvol0', '16MiB');
  createVolume(b, 'svol0', '16MiB');
  cliOk(a, ['journal', 'create', 'jnl', '--size', '160MiB']);
  cliOk(b, ['journal', 'create', 'jnl', '--size', '160MiB']);
  cliOk(a, ['pair', 'create', '--group', 'g1', '--pvol', 'pvol0', '--svol', 'site-b:svol0', '--journal', 'jnl', '--remote-journal', 'site-b:jnl']);
  runOk('qemu-io', ['-f', 'raw', a.uri('pvol0'), '-c', 'write -P 0x61 0 1M', '-c', 'flush']);
  await pairAndLag0(a, b);

  // The operator drops the peer from B's config: B's group receives from a peer it no longer knows.
  await b.stop();
  const config = fs.readFileSync(b.configFile, 'utf8');
  fs.writeFileSync(b.configFile, config.replace(peers, ''));
  const unknownPeer = await failedStart(b);
  t.diagnostic(`B without its peer: exited after ${unknownPeer.ms} ms: ${unknownPeer.message.split('\n').find((l) => l.startsWith('twinstore:'))}`);
  assert.match(unknownPeer.message, /serve exited 1/);
  assert.match(unknownPeer.message, /^twinstore: PEER_UNKNOWN: .*site-a/m);
  await checkReleased(b, ports);

  fs.writeFileSync(b.configFile, config);
  await startWithin(b, 'B');
  await pairAndLag0(a, b);

  // Another process holds B's API port: B fails once its link and NBD listeners are up.
  await b.stop();
  const squatter = net.createServer();
  const api = b.ready!.api;
  await new Promise<void>((resolve) => squatter.listen(Number(api.slice(api.lastIndexOf(':') + 1)), '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => squatter.close(() => resolve())));
  const portTaken = await failedStart(b);
  t.diagnostic(`B with its API port taken: exited after ${portTaken.ms} ms: ${portTaken.message.split('\n').find((l) => l.startsWith('twinstore:'))}`);
  assert.match(portTaken.message, /serve exited 1/);
  assert.match(portTaken.message, /^twinstore: LISTEN_FAILED: listen\.api 127\.0\.0\.1:\d+: the address is in use/m);
  await checkReleased(b, ports);

  await new Promise<void>((resolve) => squatter.close(() => resolve()));
  await startWithin(b, 'B');
  runOk('qemu-io', ['-f', 'raw', a.uri('pvol0'), '-c', 'write -P 0x62 2M 1M', '-c', 'flush']);
  await pairAndLag0(a, b);
});
