// Goal: docs/errors.md lists exactly the error codes of the catalogue, so users
// can look up every code they may meet and no documented code is a ghost.
// Method: read the table rows of docs/errors.md (lines starting with "|" whose
// first cell is a `CODE` in backticks), take the first column as the code and the
// second as the HTTP status, and compare both with ERROR_CODES in src/errors.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ERROR_CODES } from '../src/errors.js';

const docFile = path.join(import.meta.dirname, '..', 'docs', 'errors.md');

interface DocRow {
  code: string;
  status: string;
}

function documentedRows(): DocRow[] {
  const rows: DocRow[] = [];
  for (const line of fs.readFileSync(docFile, 'utf8').split('\n')) {
    const cells = line.trim().split('|').slice(1, -1).map((cell) => cell.trim());
    const code = /^`([A-Z0-9_]+)`$/.exec(cells[0] ?? '')?.[1];
    if (code !== undefined) rows.push({ code, status: cells[1] ?? '' });
  }
  return rows;
}

test('docs/errors.md lists every code in ERROR_CODES and no other, each once', () => {
  const documented = documentedRows().map((row) => row.code);
  const catalogue = Object.keys(ERROR_CODES);
  assert.ok(documented.length > 0, 'the error table was found in docs/errors.md');
  assert.deepEqual(documented.filter((code, i) => documented.indexOf(code) !== i), [], 'no code is listed twice');
  const missing = catalogue.filter((code) => !documented.includes(code));
  const unknown = documented.filter((code) => !catalogue.includes(code));
  assert.deepEqual({ missing, unknown }, { missing: [], unknown: [] }, 'missing: in ERROR_CODES but not in docs/errors.md; unknown: in the doc but not in ERROR_CODES');
});

test('docs/errors.md gives each code the HTTP status of the catalogue', () => {
  for (const row of documentedRows()) {
    const entry = ERROR_CODES[row.code as keyof typeof ERROR_CODES];
    if (entry === undefined) continue; // reported by the test above
    assert.equal(row.status, String(entry.status), `HTTP status of ${row.code}`);
  }
});
