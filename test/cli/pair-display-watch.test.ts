// Goal: `pair display --watch` is usable by scripts and survives the array
// going away (issue 16): with --json (or stdout not a terminal) it prints one
// JSON document per line and no clear-screen codes; when the API goes away it
// says so on a line of its own and keeps asking, with a bounded backoff, and
// picks up again once the array is back (on its new port: run.json is read
// afresh); a closed stdout (`| head -1`) ends any verb with status 0 and no
// stack trace.
// Method: real `twinstore serve` and the real CLI as child processes with
// stdout on a pipe; the array is stopped with SIGTERM and started again on the
// same data folder while the watch runs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { projectRoot, startArray, type RunningArray } from '../helpers/array.js';

const cliEntry = path.join(projectRoot, 'bin', 'twinstore.js');

function spawnCli(array: RunningArray, args: string[]): ChildProcess {
  return spawn(process.execPath, [cliEntry, '--config', array.configFile, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Collects the child's stdout lines; `next(what)` waits (bounded) for a line that passes `check`. */
function lines(child: ChildProcess): { next: (what: string, check: (line: string) => boolean, timeoutMs?: number) => Promise<string>; all: string[] } {
  const all: string[] = [];
  const waiters: Array<() => void> = [];
  readline.createInterface({ input: child.stdout! }).on('line', (line) => {
    all.push(line);
    for (const wake of waiters.splice(0)) wake();
  });
  let read = 0;
  const next = async (what: string, check: (line: string) => boolean, timeoutMs = 60_000): Promise<string> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (read < all.length) {
        const line = all[read++]!;
        if (check(line)) return line;
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; lines so far: ${all.slice(-10).join(' | ')}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
  };
  return { next, all };
}

function exited(child: ChildProcess, timeoutMs = 30_000): Promise<{ code: number | null; stderr: string }> {
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the CLI did not exit within ${timeoutMs} ms: ${stderr}`)), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

test('pair display --watch --json: one JSON document per line, across an API restart', { timeout: 180_000 }, async (t) => {
  const array = await startArray(t);
  const watcher = spawnCli(array, ['pair', 'display', '--watch', '--json']);
  t.after(() => { watcher.kill('SIGKILL'); });
  const out = lines(watcher);
  for (let i = 0; i < 2; i++) {
    const line = await out.next(`answer ${i + 1} of the watch`, () => true);
    assert.ok(!line.includes('\x1b'), `no terminal control codes in --json output: ${JSON.stringify(line)}`);
    assert.deepEqual(JSON.parse(line), { pairs: [] }, 'each line is one whole JSON document');
  }
  await array.stop();
  const away = JSON.parse(await out.next('a line saying the array is unreachable', (line) => line.includes('unreachable')));
  assert.equal(away.unreachable, true);
  assert.equal(away.error.code, 'API_UNREACHABLE');
  assert.equal(watcher.exitCode, null, 'the watch goes on while the array is away');
  await array.start();
  const back = await out.next('an answer once the array is back (its new port)', (line) => line.startsWith('{"pairs"'), 60_000);
  assert.deepEqual(JSON.parse(back), { pairs: [] });
  for (const line of out.all) assert.doesNotThrow(() => JSON.parse(line), `every line parses as JSON: ${line}`);
});

test('a closed stdout ends --watch and a one-shot verb with status 0 and no stack trace', { timeout: 120_000 }, async (t) => {
  const array = await startArray(t);
  const watcher = spawnCli(array, ['pair', 'display', '--watch']);
  const done = exited(watcher);
  await lines(watcher).next('the first table of the watch', () => true);
  watcher.stdout!.destroy();
  const watched = await done;
  assert.equal(watched.code, 0, `pair display --watch | head -1 exits 0: ${watched.stderr}`);
  assert.equal(watched.stderr, '', 'nothing on stderr (no EPIPE stack trace)');

  for (const verb of [['status'], ['volume', 'list', '--json']]) {
    const child = spawnCli(array, verb);
    child.stdout!.destroy();
    const result = await exited(child);
    assert.equal(result.code, 0, `${verb.join(' ')} with its stdout closed exits 0: ${result.stderr}`);
    assert.equal(result.stderr, '', `${verb.join(' ')}: nothing on stderr`);
  }
});
