// Goal: TLS-PSK with the clients that use it, per-export grants, and reloading
// the TLS files on SIGHUP (issue 15). Before it, STARTTLS got ERR_POLICY, no
// PSK or grant existed, and SIGHUP killed the array.
// Method: PSK files made at test time by the real `twinstore tls psk`; a real
// `twinstore serve` with `nbd.tls: require` and `nbd.pskFile`: qemu-img info
// with tls-creds-psk, nbdinfo with tls-psk-file, nbdsh with set_tls_psk_file;
// a raw client sees TLS 1.2 with an (EC)DHE-PSK suite and its renegotiation
// refused; a wrong key and an unknown identity are refused and logged. Grants
// (`nbd.access`) by identity: a client not on a volume's list does not see it
// in LIST and gets ERR_UNKNOWN (libnbd: ENOENT) for it; a read-only grant
// exports it READ_ONLY and writes get EPERM. Grants by address, with TLS off:
// a raw client from 127.0.0.2 sees what one from 127.0.0.1 does not. Reload:
// SIGHUP after the certificate files were replaced with ones from a new CA:
// new clients need the new CA, a connection made before keeps working, and a
// damaged file on the next SIGHUP keeps the files in use, with a log line.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { createVolume, run, runOk, startArray, tempDir } from '../helpers/array.js';
import { waitFor } from '../helpers/replication.js';
import { infoRequest, listedNames, makePsk, makeX509, nbdPort, RawNbd, x509Config } from '../helpers/tls.js';
import { OPT, REP } from '../../src/nbd/protocol.js';

/** nbdsh over TLS-PSK as `identity`: prints JSON with what the client saw of `volume` and of LIST. */
function pskProbe(port: number, keys: string, identity: string, volume: string, byte = 0x77): { listed: string[]; open: string; readOnly?: boolean; write?: string } {
  const script = [
    'import errno, json',
    'out = {}',
    'names = []',
    'h.set_tls(nbd.TLS_REQUIRE)',
    `h.set_tls_psk_file(${JSON.stringify(keys)})`,
    `h.set_tls_username(${JSON.stringify(identity)})`,
    'h.set_opt_mode(True)',
    `h.connect_uri("nbd://127.0.0.1:${port}/")`,
    'h.opt_list(lambda name, description: names.append(name) or 0)',
    'out["listed"] = sorted(names)',
    `h.set_export_name(${JSON.stringify(volume)})`,
    'try:',
    '    h.opt_go()',
    '    out["open"] = "ok"',
    'except nbd.Error as e:',
    '    out["open"] = errno.errorcode.get(e.errnum, str(e.errnum))',
    'if out["open"] == "ok":',
    '    out["readOnly"] = bool(h.is_read_only())',
    '    h.set_strict_mode(0)',
    '    try:',
    `        h.pwrite(bytes([${byte}]) * 4096, 0)`,
    '        out["write"] = "ok"',
    '    except nbd.Error as e:',
    '        out["write"] = errno.errorcode.get(e.errnum, str(e.errnum))',
    'print(json.dumps(out))',
  ].join('\n');
  const stdout = runOk('nbdsh', ['-c', script]);
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as ReturnType<typeof pskProbe>;
}

test('TLS-PSK: qemu-img, nbdinfo and nbdsh connect; a wrong key or unknown identity is refused and logged', async (t) => {
  const dir = tempDir(t);
  const psk = makePsk(dir, ['host-a', 'host-b']);
  const array = await startArray(t, { extraConfig: ['nbd:', '  tls: require', `  pskFile: ${psk.file}`].join('\n') });
  createVolume(array, 'vol0', '32MiB');
  const port = nbdPort(array);
  const hostA = psk.hosts['host-a']!;

  const info = runOk('qemu-img', ['info', '--object', `tls-creds-psk,id=tls0,dir=${hostA},username=host-a,endpoint=client`, '--image-opts', `driver=nbd,host=127.0.0.1,port=${port},export=vol0,tls-creds=tls0`]);
  assert.match(info, /virtual size: 32 MiB/);
  assert.match(runOk('nbdinfo', ['--size', `nbds://host-a@127.0.0.1:${port}/vol0?tls-psk-file=${path.join(hostA, 'keys.psk')}`]), /^33554432/);
  const probe = pskProbe(port, path.join(psk.hosts['host-b']!, 'keys.psk'), 'host-b', 'vol0');
  assert.deepEqual(probe, { listed: ['vol0'], open: 'ok', readOnly: false, write: 'ok' });

  // TLS 1.2 with a forward-secret PSK suite; a renegotiation the client asks for is refused.
  const [identity, hex] = fs.readFileSync(path.join(hostA, 'keys.psk'), 'utf8').trim().split(':') as [string, string];
  const raw = await RawNbd.connect(array);
  await raw.greet();
  const secure = await raw.startTls({
    minVersion: 'TLSv1.2', maxVersion: 'TLSv1.3', ciphers: 'ECDHE-PSK-CHACHA20-POLY1305:DHE-PSK-AES256-GCM-SHA384',
    checkServerIdentity: () => undefined, pskCallback: () => ({ identity, psk: Buffer.from(hex, 'hex') }),
  });
  assert.equal(secure.getProtocol(), 'TLSv1.2');
  assert.match(secure.getCipher().name, /^(ECDHE|DHE)-PSK-/);
  raw.sendOption(OPT.LIST);
  assert.deepEqual(listedNames(await raw.replies()), ['vol0']);
  const renegotiated = await new Promise<Error | null>((resolve) => {
    secure.once('error', resolve);
    if (!secure.renegotiate({}, (error) => resolve(error))) resolve(new Error('renegotiate() refused locally'));
  });
  assert.ok(renegotiated !== null, 'the array accepted a TLS renegotiation');
  raw.destroy();

  const wrong = path.join(dir, 'wrong.psk');
  fs.writeFileSync(wrong, `host-a:${'ab'.repeat(32)}\n`, { mode: 0o600 });
  assert.notEqual(run('nbdinfo', ['--size', `nbds://host-a@127.0.0.1:${port}/vol0?tls-psk-file=${wrong}`]).code, 0, 'a wrong key was accepted');
  await waitFor('a log line for the wrong PSK', () => /PSK handshake failed: wrong key .*\(PSK identity host-a\)/.test(array.stderr), 10_000);
  const stranger = path.join(dir, 'stranger.psk');
  fs.writeFileSync(stranger, `host-z:${'cd'.repeat(32)}\n`, { mode: 0o600 });
  assert.notEqual(run('nbdinfo', ['--size', `nbds://host-z@127.0.0.1:${port}/vol0?tls-psk-file=${stranger}`]).code, 0, 'an unknown identity was accepted');
  await waitFor('a log line for the unknown identity', () => /unknown PSK identity \\"host-z\\"/.test(array.stderr), 10_000);
});

test('nbd.access by identity: others do not see the volume (ERR_UNKNOWN); a read-only grant gets READ_ONLY and EPERM', async (t) => {
  const dir = tempDir(t);
  const psk = makePsk(dir, ['host-a', 'host-b', 'host-c']);
  const array = await startArray(t, {
    extraConfig: [
      'nbd:', '  tls: require', `  pskFile: ${psk.file}`,
      '  access:',
      '    private:', '      - identity: host-a',
      '    shared:', '      - identity: host-a', '      - identity: host-b', '        readOnly: true',
    ].join('\n'),
  });
  for (const name of ['private', 'shared', 'open']) createVolume(array, name, '16MiB');
  const port = nbdPort(array);
  const keys = (id: string): string => path.join(psk.hosts[id]!, 'keys.psk');

  assert.deepEqual(pskProbe(port, keys('host-a'), 'host-a', 'private'), { listed: ['open', 'private', 'shared'], open: 'ok', readOnly: false, write: 'ok' });
  assert.deepEqual(pskProbe(port, keys('host-a'), 'host-a', 'shared'), { listed: ['open', 'private', 'shared'], open: 'ok', readOnly: false, write: 'ok' });
  assert.deepEqual(pskProbe(port, keys('host-b'), 'host-b', 'private'), { listed: ['open', 'shared'], open: 'ENOENT' });
  assert.deepEqual(pskProbe(port, keys('host-b'), 'host-b', 'shared', 0x42), { listed: ['open', 'shared'], open: 'ok', readOnly: true, write: 'EPERM' });
  assert.deepEqual(pskProbe(port, keys('host-c'), 'host-c', 'shared'), { listed: ['open'], open: 'ENOENT' });
  assert.deepEqual(pskProbe(port, keys('host-c'), 'host-c', 'open'), { listed: ['open'], open: 'ok', readOnly: false, write: 'ok' });

  // host-b's refused write (0x42) left the bytes host-a wrote (0x77).
  const read = runOk('nbdsh', ['-c', [
    'h.set_tls(nbd.TLS_REQUIRE)', `h.set_tls_psk_file(${JSON.stringify(keys('host-a'))})`, 'h.set_tls_username("host-a")',
    `h.connect_uri("nbd://127.0.0.1:${port}/shared")`, 'print(h.pread(4096, 0) == b"\\x77" * 4096)',
  ].join('\n')]);
  assert.equal(read.trim(), 'True');
});

test('nbd.access by address (TLS off): a client outside the block does not see the volume; one inside does', async (t) => {
  const array = await startArray(t, {
    extraConfig: ['nbd:', '  access:', '    lab:', '      - address: 127.0.0.2/32', '    ro:', '      - address: 127.0.0.0/8', '        readOnly: true'].join('\n'),
  });
  for (const name of ['lab', 'ro', 'open']) createVolume(array, name, '16MiB');
  const names = async (from: string): Promise<{ listed: string[]; lab: number }> => {
    const client = await RawNbd.connect(array, from);
    await client.greet();
    client.sendOption(OPT.LIST);
    const listed = listedNames(await client.replies());
    client.sendOption(OPT.INFO, infoRequest('lab'));
    const lab = (await client.replies()).at(-1)!.type;
    client.destroy();
    return { listed, lab };
  };
  assert.deepEqual(await names('127.0.0.1'), { listed: ['open', 'ro'], lab: REP.ERR_UNKNOWN });
  assert.deepEqual(await names('127.0.0.2'), { listed: ['lab', 'open', 'ro'], lab: REP.ACK });
  const ro = run('nbdsh', ['-c', [
    'import errno', `h.connect_uri("nbd://${array.nbd}/ro")`, 'h.set_strict_mode(0)', 'print(h.is_read_only())',
    'try:', '    h.pwrite(b"x" * 512, 0)', '    print("ok")', 'except nbd.Error as e:', '    print(errno.errorcode.get(e.errnum))',
  ].join('\n')]);
  assert.equal(ro.stdout.trim(), 'True\nEPERM', ro.stderr);
});

test('SIGHUP reloads the certificate files for new connections; old ones go on; a damaged file keeps the old ones', async (t) => {
  const dir = tempDir(t);
  const first = makeX509(dir, ['host-a']);
  const second = makeX509(dir, ['host-a'], 'next-ca');
  // The array reads its files from a folder of its own, replaced below.
  const live = path.join(dir, 'live');
  fs.cpSync(first.server, live, { recursive: true });
  const array = await startArray(t, { extraConfig: x509Config({ ...first, server: live }, 'require') });
  createVolume(array, 'vol0', '16MiB');
  const port = nbdPort(array);
  const size = (client: string): ReturnType<typeof run> => run('nbdinfo', ['--size', `nbds://127.0.0.1:${port}/vol0?tls-certificates=${client}`]);
  assert.equal(size(first.clients['host-a']!).code, 0);

  const before = await RawNbd.connect(array);
  await before.greet();
  await before.startTls({ ca: fs.readFileSync(path.join(first.ca, 'ca-cert.pem')), servername: 'localhost' });

  for (const name of ['server-cert.pem', 'server-key.pem']) fs.copyFileSync(path.join(second.server, name), path.join(live, name));
  array.child!.kill('SIGHUP');
  await waitFor('the reload log line', () => array.stderr.includes('NBD TLS files reloaded'), 10_000);
  assert.equal(size(second.clients['host-a']!).code, 0, 'a client of the new CA after the reload');
  assert.notEqual(size(first.clients['host-a']!).code, 0, 'a client trusting only the old CA still connected');
  before.sendOption(OPT.LIST);
  assert.deepEqual(listedNames(await before.replies()), ['vol0'], 'the connection made before the reload');
  before.destroy();

  fs.writeFileSync(path.join(live, 'server-cert.pem'), 'not a certificate\n');
  array.child!.kill('SIGHUP');
  await waitFor('the failed-reload log line', () => array.stderr.includes('NBD TLS files not reloaded'), 10_000);
  assert.equal(size(second.clients['host-a']!).code, 0, 'the files in use before the damaged reload');
  assert.ok(array.child!.exitCode === null, 'the array exited');
});
