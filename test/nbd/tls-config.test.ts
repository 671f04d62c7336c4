// Goal: the NBD TLS and access keys (`nbd.tls`, `certFile`, `keyFile`,
// `clientCaFile`, `pskFile`, `nbd.access`) parse as docs/config.md says, and
// every combination that cannot work is refused with CONFIG_INVALID naming the
// key and its line; a file that does not load stops the real `twinstore serve`
// with the file named, before a drive is made.
// Method: parseConfig on a valid config with an `nbd:` block appended; one
// real serve with a PSK file that is not one.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parseConfig } from '../../src/config/index.js';
import { isTwinstoreError } from '../../src/errors.js';
import { projectRoot, run, tempDir, writeConfig } from '../helpers/array.js';

const file = '/etc/twinstore/site-a.yaml';
const base = ['array:', '  id: site-a', '  dataDir: data', 'drives:', '  - path: d0.img', '    size: 1GiB', 'listen:', '  nbd: 127.0.0.1:0', '  api: 127.0.0.1:0'];

/** The base config (9 lines) with `nbd` lines after it: the first nbd line is line 10. */
function text(nbd: string[]): string {
  return [...base, ...nbd].join('\n') + '\n';
}

function invalid(nbd: string[]): string {
  try {
    parseConfig(text(nbd), file);
  } catch (error) {
    assert.ok(isTwinstoreError(error), String(error));
    assert.equal(error.code, 'CONFIG_INVALID');
    return error.message;
  }
  assert.fail(`accepted:\n${nbd.join('\n')}`);
}

test('nbd.tls defaults to off with no grants; certificates, PSK and grants parse with paths from the config folder', () => {
  const plain = parseConfig(text([]), file);
  assert.deepEqual(plain.nbdTls, { mode: 'off', certFile: undefined, keyFile: undefined, clientCaFile: undefined, pskFile: undefined });
  assert.equal(plain.nbdAccess.size, 0);
  assert.equal(plain.nbd.handshakeTimeoutMs, 10_000);
  assert.ok(!('tls' in plain.nbd), 'the TLS keys are not NBD limits');

  const x509 = parseConfig(text(['nbd:', '  tls: require', '  certFile: tls/server-cert.pem', '  keyFile: /srv/key.pem', '  clientCaFile: tls/ca-cert.pem']), file);
  assert.deepEqual(x509.nbdTls, { mode: 'require', certFile: '/etc/twinstore/tls/server-cert.pem', keyFile: '/srv/key.pem', clientCaFile: '/etc/twinstore/tls/ca-cert.pem', pskFile: undefined });
  const psk = parseConfig(text(['nbd:', '  tls: on', '  pskFile: keys.psk', '  access:', '    vol0:', '      - identity: host-a', '      - address: 10.1.0.0/16', '        readOnly: true', '      - identity: host-b', '        address: fd00::1']), file);
  assert.equal(psk.nbdTls.pskFile, '/etc/twinstore/keys.psk');
  assert.deepEqual(psk.nbdAccess.get('vol0'), [
    { identity: 'host-a', address: undefined, readOnly: false },
    { identity: undefined, address: { address: '10.1.0.0', prefix: 16, family: 'ipv4' }, readOnly: true },
    { identity: 'host-b', address: { address: 'fd00::1', prefix: 128, family: 'ipv6' }, readOnly: false },
  ]);
});

test('combinations that cannot work name the key and its line', () => {
  const cases: Array<[string[], RegExp]> = [
    [['nbd:', '  tls: maybe'], /line 11: nbd\.tls: /],
    [['nbd:', '  certFile: a.pem', '  keyFile: b.pem'], /line 11: nbd\.certFile: is set but nbd\.tls is off/],
    [['nbd:', '  pskFile: k.psk'], /line 11: nbd\.pskFile: is set but nbd\.tls is off/],
    [['nbd:', '  tls: require'], /line 11: nbd\.tls: require needs nbd\.certFile and nbd\.keyFile, or nbd\.pskFile/],
    [['nbd:', '  tls: on', '  certFile: a.pem'], /line 12: nbd\.certFile: needs nbd\.keyFile too/],
    [['nbd:', '  tls: on', '  keyFile: b.pem'], /line 12: nbd\.keyFile: needs nbd\.certFile too/],
    [['nbd:', '  tls: on', '  pskFile: k.psk', '  clientCaFile: ca.pem'], /line 13: nbd\.clientCaFile: needs nbd\.certFile/],
    [['nbd:', '  tls: on', '  certFile: a.pem', '  keyFile: b.pem', '  pskFile: k.psk'], /line 14: nbd\.pskFile: choose certificates \(certFile, keyFile\) or pskFile, not both/],
    [['nbd:', '  access:', '    vol0:', '      - identity: host-a'], /line 13: nbd\.access\.vol0\[0\]\.identity: an identity needs nbd\.tls on or require/],
    [['nbd:', '  tls: on', '  certFile: a.pem', '  keyFile: b.pem', '  access:', '    vol0:', '      - identity: host-a'], /line 16: nbd\.access\.vol0\[0\]\.identity: an identity needs nbd\.clientCaFile or nbd\.pskFile/],
    [['nbd:', '  access:', '    vol0:', '      - readOnly: true'], /line 13: nbd\.access\.vol0\[0\]: a grant names an identity, an address, or both/],
    [['nbd:', '  access:', '    vol0:', '      - address: 10.0.0.0/33'], /line 13: nbd\.access\.vol0\[0\]\.address: must be an IP address or CIDR block/],
    [['nbd:', '  access:', '    vol0:', '      - address: host.example'], /nbd\.access\.vol0\[0\]\.address: must be an IP address/],
    [['nbd:', '  access:', '    vol0: []'], /line 12: nbd\.access\.vol0: a volume named here needs at least one grant/],
    [['nbd:', '  tls: on', '  pskFile: k.psk', '  access:', '    vol0:', '      - identity: "host a"'], /nbd\.access\.vol0\[0\]\.identity: must be a certificate CN or PSK identity/],
  ];
  for (const [nbd, pattern] of cases) assert.match(invalid(nbd), pattern, nbd.join(' / '));
});

test('serve refuses a PSK file that is not one, naming the file and line, and a missing certificate', (t) => {
  const dir = tempDir(t);
  const cli = path.join(projectRoot, 'bin', 'twinstore.js');
  const psk = path.join(dir, 'bad.psk');
  fs.writeFileSync(psk, `host-a:${'ab'.repeat(32)}\nhost-b:nothex\n`, { mode: 0o600 });
  const badPsk = writeConfig(dir, { id: 'site-a', extraConfig: ['nbd:', '  tls: require', `  pskFile: ${psk}`].join('\n') });
  const refused = run(process.execPath, [cli, 'serve', '--config', badPsk]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, new RegExp(`CONFIG_INVALID: nbd\\.pskFile: ${psk} line 2: the key is not hex digits`));
  const other = tempDir(t);
  const missing = writeConfig(other, { id: 'site-b', extraConfig: ['nbd:', '  tls: on', `  certFile: ${dir}/none.pem`, `  keyFile: ${dir}/none-key.pem`].join('\n') });
  const noCert = run(process.execPath, [cli, 'serve', '--config', missing]);
  assert.equal(noCert.code, 1);
  assert.match(noCert.stderr, /CONFIG_INVALID: nbd\.certFile: cannot read .*none\.pem: ENOENT/);
  assert.ok(!fs.existsSync(path.join(other, 'data', 'drive0.img')), 'a drive was made before the TLS files were checked');
});
