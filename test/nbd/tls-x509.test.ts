// Goal: NBD over TLS with X.509 certificates works with the clients people use
// and keeps out what it must (issue 15). Before it, STARTTLS got ERR_POLICY and
// every client on the port could list and write every volume in the clear.
// Method: certificates made at test time by the real `twinstore tls`, a real
// `twinstore serve` with `nbd.tls: require`; qemu-img info/convert and qemu-io
// with tls-creds-x509, nbdinfo and nbdcopy (both ways) with nbds:// URIs, nbdsh
// with set_tls(TLS_REQUIRE). A raw client checks what the clients hide: a plain
// client gets ERR_TLS_REQD and an empty LIST, EXPORT_NAME before TLS closes,
// a second STARTTLS over TLS gets ERR_INVALID, a stalled handshake is cut by
// nbd.handshakeTimeoutMs, garbage instead of a TLS record or a forged record
// after the handshake closes only that connection, with a log line. With
// clientCaFile: no certificate or one from another CA is refused, and the
// array logs why. `nbd.tls: on` serves plain and TLS clients. Data is checked
// by reading it back.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { createVolume, run, runOk, startArray, tempDir } from '../helpers/array.js';
import { waitFor } from '../helpers/replication.js';
import { infoRequest, listedNames, makeX509, nbdPort, RawNbd, twinstoreTls, x509Config } from '../helpers/tls.js';
import { OPT, REP } from '../../src/nbd/protocol.js';

const MiB = 2 ** 20;
const handshakeTimeoutMs = 1500;

function qemuTls(dir: string): string[] {
  return ['--object', `tls-creds-x509,id=tls0,dir=${dir},endpoint=client`];
}

function qemuImage(port: number, volume: string): string {
  return `driver=nbd,host=127.0.0.1,port=${port},export=${volume},tls-creds=tls0`;
}

test('twinstore tls makes CA, server, client and PSK files with private keys and never overwrites', (t) => {
  const dir = tempDir(t);
  const files = makeX509(dir, ['host-a']);
  for (const [folder, names] of [[files.ca, ['ca-cert.pem', 'ca-key.pem']], [files.server, ['ca-cert.pem', 'server-cert.pem', 'server-key.pem']], [files.clients['host-a']!, ['ca-cert.pem', 'client-cert.pem', 'client-key.pem']]] as const) {
    assert.deepEqual(fs.readdirSync(folder).sort(), [...names].sort(), `files in ${folder}`);
    for (const name of names) {
      const mode = fs.statSync(path.join(folder, name)).mode & 0o777;
      if (name.endsWith('key.pem')) assert.equal(mode, 0o600, `${name} mode`);
      else assert.equal(mode & 0o022, 0, `${name} writable by group or others`);
    }
  }
  const subject = runOk('openssl', ['x509', '-in', path.join(files.clients['host-a']!, 'client-cert.pem'), '-noout', '-subject']);
  assert.match(subject, /CN ?= ?host-a/);
  const san = runOk('openssl', ['x509', '-in', path.join(files.server, 'server-cert.pem'), '-noout', '-ext', 'subjectAltName']);
  assert.match(san, /DNS:localhost/);
  assert.match(san, /IP Address:127\.0\.0\.1/);
  runOk('openssl', ['verify', '-CAfile', path.join(files.ca, 'ca-cert.pem'), path.join(files.server, 'server-cert.pem'), path.join(files.clients['host-a']!, 'client-cert.pem')]);

  const before = fs.readFileSync(path.join(files.ca, 'ca-key.pem'));
  const again = run(process.execPath, [path.join(import.meta.dirname, '..', '..', 'bin', 'twinstore.js'), 'tls', 'ca', '--out', files.ca]);
  assert.equal(again.code, 1, again.stderr);
  assert.match(again.stderr, /BAD_REQUEST: .*already exist; use --force/);
  assert.deepEqual(fs.readFileSync(path.join(files.ca, 'ca-key.pem')), before, 'the CA key was replaced');
  twinstoreTls(['ca', '--out', files.ca, '--force']);
  assert.notDeepEqual(fs.readFileSync(path.join(files.ca, 'ca-key.pem')), before, '--force did not replace the CA key');

  const psk = path.join(dir, 'keys.psk');
  twinstoreTls(['psk', '--identity', 'host-a', '--out', psk]);
  twinstoreTls(['psk', '--identity', 'host-b', '--out', psk]);
  assert.equal(fs.statSync(psk).mode & 0o777, 0o600);
  const lines = fs.readFileSync(psk, 'utf8').trim().split('\n');
  assert.deepEqual(lines.map((l) => l.split(':')[0]), ['host-a', 'host-b']);
  for (const line of lines) assert.match(line, /^host-[ab]:[0-9a-f]{64}$/);
  const twice = run(process.execPath, [path.join(import.meta.dirname, '..', '..', 'bin', 'twinstore.js'), 'tls', 'psk', '--identity', 'host-a', '--out', psk]);
  assert.equal(twice.code, 1);
  assert.match(twice.stderr, /already holds a key for host-a/);
  assert.deepEqual(fs.readFileSync(psk, 'utf8').trim().split('\n'), lines);
});

test('nbd.tls require: qemu, nbdinfo, nbdcopy and nbdsh over X.509; plain clients get TLS_REQD and see nothing', async (t) => {
  const dir = tempDir(t);
  const files = makeX509(dir, ['host-a']);
  const client = files.clients['host-a']!;
  const array = await startArray(t, { extraConfig: x509Config(files, 'require') });
  createVolume(array, 'vol0', '64MiB');
  const port = nbdPort(array);
  const uri = `nbds://127.0.0.1:${port}/vol0?tls-certificates=${client}`;

  const info = runOk('qemu-img', ['info', ...qemuTls(client), '--image-opts', qemuImage(port, 'vol0')]);
  assert.match(info, /virtual size: 64 MiB/);
  const io = runOk('qemu-io', ['-c', 'write -P 0x5a 1M 256k', '-c', 'read -P 0x5a 1M 256k', ...qemuTls(client), '--image-opts', qemuImage(port, 'vol0')]);
  assert.match(io, /read 262144\/262144 bytes/);

  // qemu-img convert uploads a file; nbdcopy reads it back; nbdcopy uploads another; qemu-img convert reads that back.
  const first = path.join(dir, 'first.raw');
  fs.writeFileSync(first, crypto.randomBytes(8 * MiB));
  runOk('qemu-img', ['convert', '-n', '-f', 'raw', ...qemuTls(client), '--target-image-opts', first, qemuImage(port, 'vol0')]);
  const back = path.join(dir, 'back.raw');
  runOk('nbdcopy', [uri, back]);
  assert.ok(fs.readFileSync(back).subarray(0, 8 * MiB).equals(fs.readFileSync(first)), 'nbdcopy read back other bytes than qemu-img convert wrote');
  const second = path.join(dir, 'second.raw');
  fs.writeFileSync(second, crypto.randomBytes(64 * MiB));
  runOk('nbdcopy', [second, uri]);
  const back2 = path.join(dir, 'back2.raw');
  runOk('qemu-img', ['convert', '-O', 'raw', ...qemuTls(client), '--image-opts', qemuImage(port, 'vol0'), back2]);
  assert.ok(fs.readFileSync(back2).equals(fs.readFileSync(second)), 'qemu-img convert read back other bytes than nbdcopy wrote');

  const shown = runOk('nbdinfo', [uri]);
  assert.match(shown, /protocol: newstyle-fixed with TLS/);
  assert.match(shown, /export-size: 67108864/);
  const nbdsh = runOk('nbdsh', ['-c', [
    'h.set_tls(nbd.TLS_REQUIRE)',
    `h.set_tls_certificates(${JSON.stringify(client)})`,
    `h.connect_uri("nbd://127.0.0.1:${port}/vol0")`,
    'h.pwrite(b"\\x33" * 4096, 0)',
    'h.flush()',
    'print(h.get_tls_negotiated(), h.pread(4096, 0) == b"\\x33" * 4096)',
  ].join('\n')]);
  assert.equal(nbdsh.trim(), 'True True');

  // A plain client: every option but STARTTLS and ABORT gets TLS_REQD; LIST names nothing.
  const plain = await RawNbd.connect(array);
  await plain.greet();
  plain.sendOption(OPT.LIST);
  const list = await plain.replies();
  assert.deepEqual(list.map((r) => r.type), [REP.ERR_TLS_REQD]);
  assert.deepEqual(listedNames(list), []);
  for (const option of [OPT.INFO, OPT.GO]) {
    plain.sendOption(option, infoRequest('vol0'));
    assert.deepEqual((await plain.replies()).map((r) => r.type), [REP.ERR_TLS_REQD], `option ${option} before TLS`);
  }
  plain.sendOption(OPT.STRUCTURED_REPLY);
  assert.equal((await plain.reply()).type, REP.ERR_TLS_REQD);
  // After TLS the same connection lists the volume; a second STARTTLS is ERR_INVALID.
  await plain.startTls({ ca: fs.readFileSync(path.join(client, 'ca-cert.pem')), servername: 'localhost' });
  plain.sendOption(OPT.LIST);
  assert.deepEqual(listedNames(await plain.replies()), ['vol0']);
  plain.sendOption(OPT.STARTTLS);
  assert.equal((await plain.reply()).type, REP.ERR_INVALID);
  plain.destroy();

  // EXPORT_NAME before TLS cannot be answered with an error: the connection closes.
  const legacy = await RawNbd.connect(array);
  await legacy.greet();
  legacy.sendOption(OPT.EXPORT_NAME, Buffer.from('vol0'));
  await waitFor('the array to close an EXPORT_NAME sent before STARTTLS', () => legacy.isClosed, 10_000, 20);

  // nbdsh without TLS is refused too.
  const refused = run('nbdsh', ['-c', `h.connect_uri("nbd://127.0.0.1:${port}/vol0")`]);
  assert.notEqual(refused.code, 0, 'a plain libnbd client connected to a require array');
});

test('a stalled TLS handshake is cut by nbd.handshakeTimeoutMs; garbage after the ACK or a forged record closes only that connection', async (t) => {
  const dir = tempDir(t);
  const files = makeX509(dir, ['host-a']);
  const array = await startArray(t, { extraConfig: x509Config(files, 'require', { extra: [`  handshakeTimeoutMs: ${handshakeTimeoutMs}`] }) });
  createVolume(array, 'vol0', '16MiB');
  const uri = `nbds://127.0.0.1:${nbdPort(array)}/vol0?tls-certificates=${files.clients['host-a']!}`;

  const stalled = await RawNbd.connect(array);
  const openedAt = Date.now();
  await stalled.greet();
  stalled.sendOption(OPT.STARTTLS);
  assert.equal((await stalled.reply()).type, REP.ACK);
  // No ClientHello follows. The sweep runs every handshakeTimeoutMs / 4: allow that and a busy machine.
  await waitFor('the array to close a connection whose TLS handshake never starts', () => stalled.isClosed, handshakeTimeoutMs + 10_000, 20);
  assert.ok(Date.now() - openedAt >= handshakeTimeoutMs - 50, 'closed before the handshake timeout');
  // The session's deadline (from accept) or the TLS layer's (the same bound, from STARTTLS), whichever fires first.
  await waitFor('the handshake timeout log line', () => /handshake not finished in time|TLS handshake timeout/.test(array.stderr), 10_000);

  const garbage = await RawNbd.connect(array);
  await garbage.greet();
  garbage.sendOption(OPT.STARTTLS);
  assert.equal((await garbage.reply()).type, REP.ACK);
  garbage.send(Buffer.alloc(4096, 0x47));
  await waitFor('the array to close a connection that sent garbage instead of a TLS record', () => garbage.isClosed, 10_000, 20);
  await waitFor('a log line for the failed handshake', () => /NBD TLS handshake failed/.test(array.stderr), 10_000);
  // A record that fails its integrity check after the handshake (type 23, TLS 1.2 version, 64 bytes of noise).
  const forged = await RawNbd.connect(array);
  await forged.greet();
  await forged.startTls({ ca: fs.readFileSync(path.join(files.clients['host-a']!, 'ca-cert.pem')), servername: 'localhost' });
  forged.sendOption(OPT.LIST);
  assert.deepEqual(listedNames(await forged.replies()), ['vol0'], 'LIST over TLS before the forged record');
  forged.sendRaw(Buffer.concat([Buffer.from([23, 3, 3, 0, 64]), crypto.randomBytes(64)]));
  await waitFor('the array to close a connection that sent a forged TLS record', () => forged.isClosed, 10_000, 20);
  await waitFor('a log line for the forged record', () => array.stderr.includes('closing NBD connection after a TLS error'), 10_000);
  assert.match(runOk('nbdinfo', ['--size', uri]), /^16777216/, 'a good client after the bad ones');
});

test('nbd.clientCaFile: a client certificate from the CA is required; none or another CA is refused and logged', async (t) => {
  const dir = tempDir(t);
  const files = makeX509(dir, ['host-a']);
  const other = makeX509(dir, ['intruder'], 'other-ca');
  const array = await startArray(t, { extraConfig: x509Config(files, 'require', { clientCa: true }) });
  createVolume(array, 'vol0', '16MiB');
  const port = nbdPort(array);
  const good = files.clients['host-a']!;
  assert.match(runOk('nbdinfo', ['--size', `nbds://127.0.0.1:${port}/vol0?tls-certificates=${good}`]), /^16777216/);

  // A folder trusting our CA (to accept the server) but holding another CA's client certificate.
  const foreign = path.join(dir, 'foreign');
  fs.mkdirSync(foreign);
  fs.copyFileSync(path.join(good, 'ca-cert.pem'), path.join(foreign, 'ca-cert.pem'));
  for (const name of ['client-cert.pem', 'client-key.pem']) fs.copyFileSync(path.join(other.clients['intruder']!, name), path.join(foreign, name));
  const refused = run('nbdinfo', ['--size', `nbds://127.0.0.1:${port}/vol0?tls-certificates=${foreign}`]);
  assert.notEqual(refused.code, 0, 'a certificate from another CA was accepted');
  await waitFor('a log line naming the refused certificate', () => /client certificate refused: UNABLE_TO_VERIFY_LEAF_SIGNATURE/.test(array.stderr), 10_000);

  const anonymous = path.join(dir, 'anonymous');
  fs.mkdirSync(anonymous);
  fs.copyFileSync(path.join(good, 'ca-cert.pem'), path.join(anonymous, 'ca-cert.pem'));
  const none = run('qemu-img', ['info', ...qemuTls(anonymous), '--image-opts', qemuImage(port, 'vol0')]);
  assert.notEqual(none.code, 0, 'a client without a certificate was accepted');
  await waitFor('a log line for the missing certificate', () => /client certificate refused: .*PEER_DID_NOT_RETURN_A_CERTIFICATE/.test(array.stderr), 10_000);
  assert.match(runOk('qemu-img', ['info', ...qemuTls(good), '--image-opts', qemuImage(port, 'vol0')]), /virtual size: 16 MiB/);
});

test('nbd.tls on: a plain client and a TLS client are both served, each told what it negotiated', async (t) => {
  const dir = tempDir(t);
  const files = makeX509(dir, ['host-a']);
  const array = await startArray(t, { extraConfig: x509Config(files, 'on') });
  createVolume(array, 'vol0', '16MiB');
  const port = nbdPort(array);
  const probe = (tls: string): string => runOk('nbdsh', ['-c', [
    `h.set_tls(${tls})`,
    `h.set_tls_certificates(${JSON.stringify(files.clients['host-a']!)})`,
    `h.connect_uri("nbd://127.0.0.1:${port}/vol0")`,
    'print(h.get_tls_negotiated(), h.get_size())',
  ].join('\n')]).trim();
  assert.equal(probe('nbd.TLS_DISABLE'), 'False 16777216');
  assert.equal(probe('nbd.TLS_REQUIRE'), 'True 16777216');
  assert.equal(probe('nbd.TLS_ALLOW'), 'True 16777216', 'a client that may use TLS gets it');
});
