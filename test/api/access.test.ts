// Goal: the API over HTTPS with token roles, as docs/security.md describes: the
// CLI verifies the array's certificate (--config's site CA, --ca, TWINSTORE_CA)
// and says so clearly when the CA is wrong; a monitor token is refused (403
// FORBIDDEN) on every changing route and let in on every reading one; tokens
// made and revoked with the CLI work and stop working at once; every changing
// call leaves one audit line; `twinstore reload` re-reads the certificate, and
// a damaged file keeps the old one in use.
// Method: one real `twinstore serve` with api.tls and nbd.tls from `twinstore
// tls`, shared by the subtests (each leaves it as it found it); HTTPS calls with
// node:https and the CA; the routes are enumerated from the ApiServer itself
// (its onRoute record), so a route added later is checked too.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { auditLines, projectRoot, run, startArray, tempDir, type CommandResult, type RunningArray } from '../helpers/array.js';
import { apiFetch } from '../helpers/http.js';
import { makeX509, x509Config } from '../helpers/tls.js';
import { waitFor } from '../helpers/replication.js';
import { ApiServer, TokenStore } from '../../src/api/index.js';

const cliEntry = path.join(projectRoot, 'bin', 'twinstore.js');

function twinstore(args: string[], env: Record<string, string> = {}): CommandResult {
  return run(process.execPath, [cliEntry, ...args], { env: { TWINSTORE_TOKEN: '', TWINSTORE_CA: '', ...env }, timeoutMs: 30_000 });
}

/** An ApiServer that is built but never listens, and none of whose routes is called. */
function idleServer(): ApiServer {
  const unused = (): never => assert.fail('no route is called in-process');
  return new ApiServer({
    tokens: new TokenStore('0123456789abcdef', path.join('/nonexistent', 'api-tokens.json')),
    tls: undefined, control: unused, replication: unused, events: unused, reload: unused, log: pino({ level: 'silent' }),
  });
}

/** The routes as the server registers them, with their access (fastify's HEAD twins of GETs left out). */
function registeredRoutes(): ApiServer['routeAccess'] {
  return idleServer().routeAccess.filter((r) => r.method !== 'HEAD');
}

test('a changing route that claims less than admin stops the server at registration', () => {
  const server = idleServer();
  assert.throws(() => server.fastify.post('/v1/open', { config: { access: 'monitor' } }, async () => ({})), /changing route POST \/v1\/open must be admin/);
});

test('HTTPS API with token roles, audit lines and reload', async (t) => {
  const dir = tempDir(t);
  const files = makeX509(dir, []);
  const other = makeX509(dir, [], 'other');
  const certFile = path.join(files.server, 'server-cert.pem');
  const keyFile = path.join(files.server, 'server-key.pem');
  const array = await startArray(t, {
    extraConfig: [x509Config(files, 'on'), 'api:', '  tls:', `    certFile: ${certFile}`, `    keyFile: ${keyFile}`].join('\n'),
  });
  const api = array.ready!.api;
  const siteCa = fs.readFileSync(path.join(files.ca, 'ca-cert.pem'));
  const call = (method: string, route: string, token: string, body?: unknown) => apiFetch(api, method, route, { token, ca: siteCa, ...(body === undefined ? {} : { body }) });
  const makeToken = (role: string, name: string): string => {
    const made = array.cli(['token', 'create', '--role', role, '--name', name, '--json']);
    assert.equal(made.code, 0, `token create: ${made.stderr}`);
    return (JSON.parse(made.stdout) as { token: string }).token;
  };

  await t.test('the CLI verifies the certificate: the config CA, --ca, TWINSTORE_CA; a wrong CA fails clearly', () => {
    assert.equal(array.cli(['status', '--json']).code, 0, 'with --config the CLI uses ca-cert.pem beside api.tls.certFile');
    const url = `https://${api}`;
    const token = array.token();
    const withCa = twinstore(['--api', url, '--token', token, '--ca', path.join(files.ca, 'ca-cert.pem'), 'status', '--json']);
    assert.equal(withCa.code, 0, withCa.stderr);
    assert.equal(twinstore(['--api', url, '--token', token, 'status'], { TWINSTORE_CA: path.join(files.ca, 'ca-cert.pem') }).code, 0);
    const wrong = twinstore(['--api', url, '--token', token, '--ca', path.join(other.ca, 'ca-cert.pem'), 'status']);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /^twinstore: API_UNREACHABLE: the array API at https:\/\/127\.0\.0\.1:\d+ has a certificate not signed by the CA in \S+other\/ca-cert\.pem \(\w+\); give the site CA with --ca FILE or TWINSTORE_CA/);
    const none = twinstore(['--api', url, '--token', token, 'status']);
    assert.match(none.stderr, /API_UNREACHABLE: .* not signed by this machine's trusted CAs/);
    const plain = twinstore(['--api', `http://${api}`, '--token', token, 'status']);
    assert.equal(plain.code, 1, 'plain HTTP to the HTTPS port does not work');
  });

  await t.test('a monitor token: 403 FORBIDDEN on every changing route, let in on every reading one', async () => {
    const monitor = makeToken('monitor', 'mon');
    const routes = registeredRoutes();
    const changing = routes.filter((r) => r.method !== 'GET');
    assert.ok(changing.length >= 15 && routes.length - changing.length >= 10, `the route list looks complete (${routes.length} routes)`);
    for (const route of routes) {
      const url = route.url.replace(/:\w+/g, 'nothing-here') + (route.url === '/v1/events' ? '?now=1' : '');
      const answer = await call(route.method, url, monitor, route.method === 'GET' || route.method === 'DELETE' ? undefined : {});
      const what = `${route.method} ${route.url} (${route.access}) with a monitor token`;
      if (route.access === 'admin') {
        assert.equal(answer.status, 403, `${what}: ${JSON.stringify(answer.json)}`);
        assert.equal(answer.json.error.code, 'FORBIDDEN', what);
      } else {
        assert.ok(answer.status !== 401 && answer.status !== 403, `${what}: got ${answer.status}`);
      }
    }
    assert.ok(routes.some((r) => r.method === 'GET' && r.access === 'admin'), 'GET /v1/tokens is admin only');
    assert.equal((await call('GET', '/v1/tokens', array.token())).status, 200);
  });

  await t.test('tokens: listed without secrets, usable at once, refused at once when revoked; each change audited', async () => {
    const ops = makeToken('admin', 'ops');
    const listed = array.cli(['token', 'list', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual((JSON.parse(listed.stdout) as { tokens: Array<{ name: string }> }).tokens.map((x) => x.name).sort(), ['mon', 'ops']);
    assert.ok(!listed.stdout.includes(ops) && !fs.readFileSync(path.join(array.dir, 'data', 'api-tokens.json'), 'utf8').includes(ops), 'no secret in the list or the file');
    assert.equal(fs.statSync(path.join(array.dir, 'data', 'api-tokens.json')).mode & 0o777, 0o600);
    assert.equal((await call('POST', '/v1/volumes', ops, { name: 'audited', size: '1MiB' })).status, 201);
    const revoked = array.cli(['token', 'revoke', 'ops']);
    assert.equal(revoked.code, 0, revoked.stderr);
    const after = await call('DELETE', '/v1/volumes/audited', ops);
    assert.equal(after.status, 401, 'a revoked token is refused on the next call');
    assert.equal((await call('DELETE', '/v1/volumes/audited', array.token())).status, 200);
    assert.equal(array.cli(['token', 'revoke', 'ops']).code, 1, 'revoking twice is TOKEN_NOT_FOUND');
    await waitFor('the audit line of the admin token deleting volume audited', () => auditLines(array).some((l) => l.route === '/v1/volumes/:name' && l.token === 'admin' && l.status === 200));
    const lines = auditLines(array);
    const find = (what: string, match: (l: Record<string, unknown>) => boolean): Record<string, unknown> => lines.find(match) ?? assert.fail(`no audit line for ${what} in:\n${lines.map((l) => JSON.stringify(l)).join('\n')}`);
    const created = find('ops creating a volume', (l) => l.method === 'POST' && l.route === '/v1/volumes' && l.token === 'ops');
    assert.deepEqual([created.role, created.status, created.code, created.body], ['admin', 201, null, { name: 'audited', size: '1MiB' }]);
    const refused = find('the revoked token', (l) => l.method === 'DELETE' && l.token === null && l.status === 401);
    assert.deepEqual([refused.code, refused.params], ['UNAUTHORIZED', { name: 'audited' }]);
    find('a monitor refused', (l) => l.token === 'mon' && l.status === 403 && l.code === 'FORBIDDEN');
    find('making token ops', (l) => l.route === '/v1/tokens' && l.method === 'POST' && (l.body as { name?: string } | undefined)?.name === 'ops');
    assert.ok(!array.stderr.includes(ops), 'the secret is in no log line');
  });

  await t.test('reload re-reads the API certificate; a damaged file keeps the old one', async () => {
    const reload = (args: string[] = []): CommandResult => array.cli(['reload', ...args]);
    const fine = reload(['--json']);
    assert.equal(fine.code, 0, fine.stderr);
    assert.deepEqual(JSON.parse(fine.stdout), { reloaded: [{ part: 'nbd', state: 'reloaded' }, { part: 'api', state: 'reloaded' }] });
    const good = fs.readFileSync(certFile);
    fs.writeFileSync(certFile, 'not a certificate\n');
    const damaged = reload();
    assert.equal(damaged.code, 1);
    assert.match(damaged.stderr, /^twinstore: CONFIG_INVALID: nbd: .*; api: api\.tls\.certFile .*; the previous files stay in use/m);
    assert.equal((await call('GET', '/v1/status', array.token())).status, 200, 'the old certificate still serves');
    fs.writeFileSync(certFile, good);
    for (const name of ['server-cert.pem', 'server-key.pem']) fs.copyFileSync(path.join(other.server, name), path.join(files.server, name));
    assert.equal(reload().code, 0);
    const otherCa = fs.readFileSync(path.join(other.ca, 'ca-cert.pem'));
    assert.equal((await apiFetch(api, 'GET', '/v1/status', { token: array.token(), ca: otherCa })).status, 200, 'new connections get the new certificate');
    await assert.rejects(call('GET', '/v1/status', array.token()), /certificate/i, 'the old CA no longer verifies it');
  });
});
