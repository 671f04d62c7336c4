// Goal: the method table of docs/link-protocol.md names exactly the link methods of
// src/replication/protocol.ts, each once, so a peer built from the page speaks every method
// the arrays answer and no documented method is a ghost.
// Method: read the rows of the "### Methods" table (lines starting with "|" whose first cell
// is a `name.verb` in backticks) and compare their names with LINK_METHODS; then send each
// documented method a body that is not an object and an unknown method, through the
// dispatcher, and expect BAD_REQUEST (the answer a peer gets).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { LINK_METHODS, answerLinkRequest, type LinkHandlers } from '../../src/replication/index.js';
import { isTwinstoreError } from '../../src/errors.js';

const docFile = path.join(import.meta.dirname, '..', '..', 'docs', 'link-protocol.md');

function documentedMethods(): string[] {
  const text = fs.readFileSync(docFile, 'utf8');
  const table = text.slice(text.indexOf('### Methods'), text.indexOf('### Bounds and back-pressure'));
  const methods: string[] = [];
  for (const line of table.split('\n')) {
    const first = line.trim().split('|')[1]?.trim() ?? '';
    const method = /^`([a-z]+\.[a-z-]+)`$/.exec(first)?.[1];
    if (method !== undefined) methods.push(method);
  }
  return methods;
}

test('docs/link-protocol.md lists every link method of protocol.ts and no other, each once', () => {
  const documented = documentedMethods();
  assert.deepEqual([...documented].sort(), [...new Set(documented)].sort(), 'no method is listed twice');
  assert.deepEqual([...documented].sort(), [...LINK_METHODS].sort());
});

test('an unknown method, or a body that is not an object, is refused with BAD_REQUEST before any handler runs', async () => {
  const refused = (): never => assert.fail('no handler runs');
  const handlers = Object.fromEntries(LINK_METHODS.map((method) => [method, refused])) as unknown as LinkHandlers;
  const badRequest = (what: string) => (error: unknown): boolean => {
    assert.ok(isTwinstoreError(error) && error.code === 'BAD_REQUEST', `${what}: ${String(error)}`);
    return true;
  };
  await assert.rejects(answerLinkRequest(handlers, 'site-a', { method: 'journal.write', body: {} }), badRequest('unknown method'));
  for (const method of LINK_METHODS) {
    await assert.rejects(answerLinkRequest(handlers, 'site-a', { method, body: 'not an object' }), badRequest(method));
  }
});
