// Goal: `serve --log-format pretty` (or TWINSTORE_LOG_FORMAT=pretty) logs lines a
// person reads: time, level, array, message, then key=value fields; JSON stays the
// default; a format it does not know is refused before anything starts.
// Method: real arrays started with each format, their stderr read; prettyLine on
// pino lines of every shape.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fs from 'node:fs';
import os from 'node:os';
import { prettyLine } from '../../src/util/log.js';
import { projectRoot, run, startArray } from '../helpers/array.js';

const prettyPattern = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (TRACE|DEBUG|INFO |WARN |ERROR|FATAL) /;

test('prettyLine: the head, then the fields as key=value, quoted where they need it', () => {
  const line = JSON.stringify({ level: 40, time: Date.UTC(2026, 11, 8, 1, 2, 3, 4), pid: 7, array: 'site-a', msg: 'link down', peer: 'site-b', reason: 'timed out after 5 s', n: 3, nested: { a: 1 } });
  assert.equal(prettyLine(line), '2026-12-08T01:02:03.004Z WARN  site-a: link down  peer=site-b reason="timed out after 5 s" n=3 nested={"a":1}\n');
  assert.equal(prettyLine('not json'), 'not json\n', 'a line that is not JSON is passed on as it is');
});

test('an array started with TWINSTORE_LOG_FORMAT=pretty logs pretty lines; by default it logs JSON', async (t) => {
  const pretty = await startArray(t, { env: { TWINSTORE_LOG_FORMAT: 'pretty' } });
  const plain = await startArray(t);
  const lines = (text: string): string[] => text.split('\n').filter((l) => l.length > 0);
  assert.ok(lines(pretty.stderr).length > 0, 'the pretty array logged its start');
  for (const line of lines(pretty.stderr)) assert.match(line, prettyPattern, `a pretty line: ${line}`);
  assert.ok(lines(pretty.stderr).some((l) => / INFO  \S+: /.test(l)), 'info lines name the array');
  assert.ok(lines(plain.stderr).length > 0);
  for (const line of lines(plain.stderr)) assert.doesNotThrow(() => JSON.parse(line), `a JSON line: ${line}`);
});

test('serve --log-format with a format it does not know exits 1 naming the option', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twinstore-logfmt-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const config = path.join(dir, 'site.yaml');
  fs.writeFileSync(config, ['array:', '  id: site-a', `  dataDir: ${dir}/data`, 'drives:', `  - path: ${dir}/d0.img`, '    size: 1GiB', 'listen:', '  nbd: 127.0.0.1:0', '  api: 127.0.0.1:0', ''].join('\n'));
  const result = run(process.execPath, [path.join(projectRoot, 'bin', 'twinstore.js'), '--config', config, 'serve', '--log-format', 'xml'], { timeoutMs: 30_000 });
  assert.equal(result.code, 1, result.stderr);
  assert.match(result.stderr, /BAD_REQUEST: --log-format "xml" is not one of json, pretty/);
  assert.equal(fs.existsSync(path.join(dir, 'd0.img')), false, 'nothing was started: no drive made');
});
