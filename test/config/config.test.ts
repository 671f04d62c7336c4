// Goal: a valid config parses with its sizes, defaults and paths as documented,
// and every broken config is refused with CONFIG_INVALID naming the file, the
// line and the key, so an administrator can go straight to the mistake.
// Method: parseConfig on YAML texts that differ from a valid one in a single
// place, each asserting the exact line and key path in the message; then the
// real `twinstore serve --config FILE` process, which must exit non-zero with
// the same message on stderr (or CONFIG_NOT_FOUND for a missing file).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig, parseConfig } from '../../src/config/index.js';
import { isTwinstoreError } from '../../src/errors.js';
import { projectRoot, run, tempDir } from '../helpers/array.js';

const cliEntry = path.join(projectRoot, 'bin', 'twinstore.js');

/** A valid config; `lines` replaces single lines by their 1-based number (undefined removes one). */
function configText(lines: Record<number, string | undefined> = {}): string {
  const base = [
    'array:', //                     1
    '  id: site-a', //               2
    '  dataDir: data', //            3
    'drives:', //                    4
    '  - path: drives/d0.img', //    5
    '    size: 4GiB', //             6
    '  - path: /srv/d1.img', //      7
    '    size: 512MiB', //           8
    'listen:', //                    9
    '  nbd: 127.0.0.1:10809', //     10
    '  api: 127.0.0.1:0', //         11
  ];
  return base
    .map((line, i) => (i + 1 in lines ? lines[i + 1] : line))
    .filter((line): line is string => line !== undefined)
    .join('\n') + '\n';
}

/** Parses and returns the CONFIG_INVALID message; fails the test when the text is accepted. */
function invalid(text: string, file = '/etc/twinstore/site-a.yaml'): string {
  try {
    parseConfig(text, file);
  } catch (error) {
    assert.ok(isTwinstoreError(error), `a TwinstoreError, got ${String(error)}`);
    assert.equal(error.code, 'CONFIG_INVALID');
    return error.message;
  }
  assert.fail(`config was accepted:\n${text}`);
}

test('a valid config parses: sizes, defaults and paths relative to the config folder', () => {
  const config = parseConfig(configText(), '/etc/twinstore/site-a.yaml');
  assert.equal(config.file, '/etc/twinstore/site-a.yaml');
  assert.equal(config.arrayId, 'site-a');
  assert.equal(config.dataDir, '/etc/twinstore/data');
  assert.equal(config.extentBytes, 2 ** 20, 'extentBytes defaults to 1 MiB');
  assert.deepEqual(config.drives, [
    { path: '/etc/twinstore/drives/d0.img', sizeBytes: 4 * 2 ** 30, use: 'data' },
    { path: '/srv/d1.img', sizeBytes: 512 * 2 ** 20, use: 'data' },
  ]);
  assert.deepEqual(config.listen, { nbd: { host: '127.0.0.1', port: 10809 }, api: { host: '127.0.0.1', port: 0 }, link: undefined });
  assert.deepEqual(config.peers, []);
  assert.deepEqual(config.link, { pskFile: undefined, heartbeatMs: 1000, suspendAfterMs: 30000, bandwidthMax: 0 });
  assert.deepEqual(config.groupDefaults, { overflow: 'suspend', throttleMsMax: 5000, fence: 'never', fenceAfterMs: 30_000 });
  assert.deepEqual(config.takeover, { peerTimeoutMs: 5000, startHoldMs: 10_000 });
  assert.deepEqual(config.swap, { lagBytesMax: 64 * 2 ** 20, drainMsMax: 60_000, freezeMsMax: 10_000 });
  assert.equal(config.bitmapRegionBytes, 65536);
  assert.equal(config.apiToken, undefined);
});

test('optional keys: extentBytes as a size, a drive without size, an API token, IPv6 addresses', () => {
  const text = configText({
    3: '  dataDir: /var/lib/twinstore\n  extentBytes: 4MiB',
    6: undefined,
    10: '  nbd: "[::1]:10809"',
    11: '  api: localhost:7700\napi:\n  token: 0123456789abcdef0123',
  });
  const config = parseConfig(text, 'relative/site.yaml');
  assert.equal(config.file, path.resolve('relative/site.yaml'));
  assert.equal(config.dataDir, '/var/lib/twinstore');
  assert.equal(config.extentBytes, 4 * 2 ** 20);
  assert.deepEqual(config.drives[0], { path: path.resolve('relative/drives/d0.img'), sizeBytes: undefined, use: 'data' });
  assert.deepEqual(config.listen.nbd, { host: '::1', port: 10809 });
  assert.deepEqual(config.listen.api, { host: 'localhost', port: 7700 });
  assert.equal(config.apiToken, '0123456789abcdef0123');
});

test('loadConfig resolves relative paths against the folder of the config file, not the working directory', (t) => {
  const dir = tempDir(t);
  fs.mkdirSync(path.join(dir, 'etc'));
  const file = path.join(dir, 'etc', 'site.yaml');
  fs.writeFileSync(file, configText());
  const config = loadConfig(file);
  assert.equal(config.dataDir, path.join(dir, 'etc', 'data'));
  assert.equal(config.drives[0]!.path, path.join(dir, 'etc', 'drives', 'd0.img'));
});

test('missing array.id names the key and the line of its map', () => {
  const message = invalid(configText({ 2: undefined }));
  assert.match(message, /^\/etc\/twinstore\/site-a\.yaml line 1: array\.id: /);
});

test('a bad array.id names the key and its line', () => {
  const message = invalid(configText({ 2: '  id: Site_A' }));
  assert.match(message, /line 2: array\.id: must be 1-63/);
});

test('a bad size in drives[1].size names that key and its line', () => {
  const message = invalid(configText({ 8: '    size: lots' }));
  assert.match(message, /line 8: drives\[1\]\.size: "lots" is not a size/);
});

test('an unknown key (a typo) is named with the line of the key itself', () => {
  const typo = invalid(configText({ 10: '  nbdd: 127.0.0.1:10809' }));
  assert.match(typo, /line 10: listen\.nbdd: unknown key/);
  const extra = invalid(configText({ 7: '  - path: /srv/d1.img', 8: '    size: 512MiB\n    colour: blue' }));
  assert.match(extra, /line 9: drives\[1\]\.colour: unknown key/);
  const top = invalid(configText() + 'replication: {}\n');
  assert.match(top, /line 12: replication: unknown key/);
});

test('fence, takeover and swap keys: values read, a bad fence policy and a bad swap size named with their lines', () => {
  const text = configText() + 'groups:\n  defaults:\n    fence: data\n    fenceAfterMs: 2000\ntakeover:\n  peerTimeoutMs: 1500\n  startHoldMs: 2500\nswap:\n  lagBytesMax: 8MiB\n  freezeMsMax: 3000\n';
  const config = parseConfig(text, 'site.yaml');
  assert.deepEqual(config.groupDefaults, { overflow: 'suspend', throttleMsMax: 5000, fence: 'data', fenceAfterMs: 2000 });
  assert.deepEqual(config.takeover, { peerTimeoutMs: 1500, startHoldMs: 2500 });
  assert.deepEqual(config.swap, { lagBytesMax: 8 * 2 ** 20, drainMsMax: 60_000, freezeMsMax: 3000 });
  assert.match(invalid(configText() + 'groups:\n  defaults:\n    fence: sometimes\n'), /line 14: groups\.defaults\.fence: /);
  assert.match(invalid(configText() + 'swap:\n  lagBytesMax: lots\n'), /line 13: swap\.lagBytesMax: "lots" is not a size/);
  assert.match(invalid(configText() + 'takeover:\n  freezeMsMax: 100\n'), /line 13: takeover\.freezeMsMax: unknown key/);
});

test('an address without a port names the key and its line', () => {
  const message = invalid(configText({ 11: '  api: nohost' }));
  assert.match(message, /line 11: listen\.api: "nohost" is not host:port/);
  assert.match(invalid(configText({ 10: '  nbd: 127.0.0.1:70000' })), /line 10: listen\.nbd: /);
});

test('a YAML syntax error gives its line', () => {
  assert.match(invalid(configText({ 2: '  id: site-a: b' })), /^\/etc\/twinstore\/site-a\.yaml line 2: /);
  assert.match(invalid(configText({ 3: '\tdataDir: data' })), /line 3: Tabs are not allowed/);
  assert.match(invalid(configText({ 8: '    size: 1GiB\n    size: 2GiB' })), /line 9: Map keys must be unique/);
});

test('a drive listed twice (after resolving the path) names the second entry', () => {
  const message = invalid(configText({ 7: '  - path: ./drives/../drives/d0.img' }));
  assert.match(message, /line 7: drives\[1\]\.path: \/etc\/twinstore\/drives\/d0\.img is listed twice/);
});

test('extentBytes must be a power of two from 64KiB to 64MiB', () => {
  const withExtent = (value: string): string => configText({ 3: `  dataDir: data\n  extentBytes: ${value}` });
  assert.match(invalid(withExtent('3MiB')), /line 4: array\.extentBytes: must be a power of two/);
  assert.match(invalid(withExtent('32KiB')), /line 4: array\.extentBytes: must be a power of two/);
  assert.match(invalid(withExtent('128MiB')), /line 4: array\.extentBytes: must be a power of two/);
  assert.equal(parseConfig(withExtent('65536'), 'x.yaml').extentBytes, 65536);
});

test('drives[].use: data by default, journal drives named, a bad use and an array with no data drive refused', () => {
  const parsed = parseConfig(configText({ 8: '    size: 512MiB\n    use: journal' }), 'x.yaml');
  assert.deepEqual(parsed.drives.map((d) => d.use), ['data', 'journal']);
  assert.match(invalid(configText({ 8: '    size: 512MiB\n    use: cache' })), /line 9: drives\[1\]\.use: /);
  const noData = configText({ 6: '    size: 4GiB\n    use: journal', 8: '    size: 512MiB\n    use: journal' });
  assert.match(invalid(noData), /line 4: drives: at least one drive must have use: data/);
});

test('an empty drives list is refused', () => {
  const message = invalid(configText({ 4: 'drives: []', 5: undefined, 6: undefined, 7: undefined, 8: undefined }));
  assert.match(message, /line 4: drives: an array needs at least one drive/);
});

test('an empty file or a token that is too short are refused with the key', () => {
  assert.match(invalid(''), /line 1: array: /);
  assert.match(invalid(configText() + 'api:\n  token: short\n'), /line 13: api\.token: must be at least 16 characters/);
});

test('peers or listen.link without link.pskFile name link.pskFile and the line of what needs it', () => {
  const peers = `${configText()}peers:\n  - id: site-b\n    link: 10.0.0.2:7800\n`;
  assert.equal(invalid(peers), '/etc/twinstore/site-a.yaml line 12: link.pskFile: is required when listen.link or peers are set (make a key with twinstore keys)');
  assert.match(invalid(configText({ 11: '  api: 0.0.0.0:0\n  link: 0.0.0.0:7800' })), /line 12: link\.pskFile: is required/);
  const withKey = parseConfig(`${peers}link:\n  pskFile: keys/link.psk\n`, '/etc/twinstore/site-a.yaml');
  assert.equal(withKey.link.pskFile, '/etc/twinstore/keys/link.psk', 'resolved against the config folder');
  assert.deepEqual(withKey.peers, [{ id: 'site-b', link: { host: '10.0.0.2', port: 7800 } }]);
});

test('twinstore serve with a bad config exits non-zero with CONFIG_INVALID, file, line and key on stderr', (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'bad.yaml');
  fs.writeFileSync(file, configText({ 8: '    size: lots' }).replace('127.0.0.1:10809', '127.0.0.1:0'));
  const result = run(process.execPath, [cliEntry, 'serve', '--config', file], { timeoutMs: 20_000 });
  assert.equal(result.code, 1, `exit status (stderr: ${result.stderr})`);
  assert.match(result.stderr, /^twinstore: CONFIG_INVALID: /m);
  assert.ok(result.stderr.includes(`${file} line 8: drives[1].size:`), result.stderr);
  assert.equal(result.stdout, '', 'no ready line');
  assert.equal(fs.existsSync(path.join(dir, 'data')), false, 'nothing was created');
});

test('twinstore serve with a missing config file exits non-zero with CONFIG_NOT_FOUND', (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'nowhere.yaml');
  const result = run(process.execPath, [cliEntry, 'serve', '--config', file], { timeoutMs: 20_000 });
  assert.equal(result.code, 1, `exit status (stderr: ${result.stderr})`);
  assert.match(result.stderr, /^twinstore: CONFIG_NOT_FOUND: cannot read config .*nowhere\.yaml/m);
});

test('alerts: defaults, per-group thresholds, and a bad threshold named by key and line', () => {
  assert.deepEqual(parseConfig(configText(), '/etc/s.yaml').alerts, { defaults: { lagSecondsMax: 60, journalUsedPercentMax: 80 }, groups: new Map() });
  const config = parseConfig(configText({ 11: '  api: 127.0.0.1:0\nalerts:\n  lagSecondsMax: 0\n  groups:\n    db: {lagSecondsMax: 5}' }), '/etc/s.yaml');
  assert.deepEqual(config.alerts, { defaults: { lagSecondsMax: 0, journalUsedPercentMax: 80 }, groups: new Map([['db', { lagSecondsMax: 5 }]]) });
  assert.match(invalid(configText({ 11: '  api: 127.0.0.1:0\nalerts:\n  groups:\n    db:\n      journalUsedPercentMax: 150' })), /line 15: alerts\.groups\.db\.journalUsedPercentMax: /);
  assert.match(invalid(configText({ 11: '  api: 127.0.0.1:0\nalerts:\n  lagSeconds: 5' })), /line 13: alerts\.lagSeconds: unknown key/);
});

test('plain HTTP on an API address other hosts reach needs api.plainHttpAllowed; api.tls paths resolve', () => {
  assert.match(invalid(configText({ 11: '  api: 0.0.0.0:7700' })), /^\/etc\/twinstore\/site-a\.yaml line 11: listen\.api: plain HTTP on 0\.0\.0\.0, which other hosts can reach: set api\.tls/);
  assert.match(invalid(configText({ 11: '  api: "[::]:7700"' })), /line 11: listen\.api: plain HTTP on ::/);
  for (const api of ['localhost:7700', '127.0.0.2:7700', '"[::1]:7700"']) parseConfig(configText({ 11: `  api: ${api}` }), '/etc/twinstore/site-a.yaml');
  const allowed = parseConfig(configText({ 11: '  api: 0.0.0.0:7700\napi:\n  plainHttpAllowed: true' }), '/etc/twinstore/site-a.yaml');
  assert.equal(allowed.apiTls, undefined);
  const https = parseConfig(configText({ 11: '  api: 0.0.0.0:7700\napi:\n  tls:\n    certFile: tls/server-cert.pem\n    keyFile: tls/server-key.pem' }), '/etc/twinstore/site-a.yaml');
  assert.deepEqual(https.apiTls, { certFile: '/etc/twinstore/tls/server-cert.pem', keyFile: '/etc/twinstore/tls/server-key.pem', caFile: '/etc/twinstore/tls/ca-cert.pem' });
  assert.match(invalid(configText({ 11: '  api: 127.0.0.1:0\napi:\n  tls:\n    certFile: c.pem' })), /line 13: api\.tls\.keyFile: /);
});
