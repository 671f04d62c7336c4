// Goal: /ui serves only the files of the built dashboard, each by its exact name,
// with the CSP, and says how to build it when there is none.
// Method: the real route module on a real fastify listening on 127.0.0.1 port 0,
// over a folder made here holding a page, an asset, a file of another type and,
// beside it, a secret; then requests by real HTTP for each and for ways out of
// the folder (dot segments, encoded, doubled slashes), which must all be 404.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import Fastify from 'fastify';
import { addUiRoutes, uiContentSecurityPolicy } from '../../src/api/ui-routes.js';
import { isTwinstoreError } from '../../src/errors.js';
import { apiFetch } from '../helpers/http.js';

async function serve(t: test.TestContext, dir: string): Promise<string> {
  const app = Fastify();
  // The API's own handler answers {"error"} with the code's status (server.ts); here only the status and message matter.
  app.setErrorHandler((error, _request, reply) => reply.code(isTwinstoreError(error) ? error.status : 500).send({ error: { message: (error as Error).message } }));
  addUiRoutes(app, dir);
  t.after(() => app.close());
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address() as { port: number };
  return `http://127.0.0.1:${address.port}`;
}

test('/ui serves the built files by exact name and nothing else', async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'twinstore-ui-'));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  const dir = path.join(root, 'web');
  fs.mkdirSync(path.join(dir, 'assets'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'index.html'), '<!doctype html><p>page</p>');
  fs.writeFileSync(path.join(dir, 'assets', 'index-abc.js'), 'console.log(1)');
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'not a page file');
  fs.writeFileSync(path.join(root, 'secret.js'), 'TOP-SECRET-CONTENT');
  const base = await serve(t, dir);

  const page = await fetch(`${base}/ui/`);
  assert.equal(page.status, 200);
  assert.equal(await page.text(), '<!doctype html><p>page</p>');
  assert.equal(page.headers.get('content-security-policy'), uiContentSecurityPolicy);
  assert.equal(page.headers.get('cache-control'), 'no-store');
  const redirect = await fetch(`${base}/ui`, { redirect: 'manual' });
  assert.equal(redirect.headers.get('location'), '/ui/');
  const asset = await fetch(`${base}/ui/assets/index-abc.js`);
  assert.equal(asset.headers.get('content-type'), 'text/javascript; charset=utf-8');
  assert.match(asset.headers.get('cache-control') ?? '', /immutable/);
  for (const route of ['/ui/notes.txt', '/ui/../secret.js', '/ui/%2e%2e/secret.js', '/ui/..%2fsecret.js', '/ui/assets/../../secret.js', '/ui//etc/passwd', '/ui/assets/', '/ui/index.html/']) {
    // Sent as written (fetch would resolve the dot segments before sending).
    const response = await apiFetch(base.replace('http://', ''), 'GET', route, { token: '' });
    assert.equal(response.status, 404, `${route} is not served`);
    assert.doesNotMatch(JSON.stringify(response.json), /TOP-SECRET-CONTENT|root:/, `${route} shows nothing of the file`);
  }
});

test('/ui without a built dashboard answers 404 saying to build it', async (t) => {
  const base = await serve(t, path.join(os.tmpdir(), 'twinstore-ui-none-', String(process.pid)));
  const response = await fetch(`${base}/ui/`);
  assert.equal(response.status, 404);
  assert.match(await response.text(), /npm run build/);
});
