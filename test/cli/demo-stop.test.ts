// Goal: `twinstore demo` stops both arrays on Ctrl-C whatever state they are
// in, and says when one dies (issue 12). Regression for: a Ctrl-C while an
// array was starting (or hung) was ignored: the demo only signalled arrays
// that had printed their ready line, and waited for ever for one that did not
// stop; an array that died left the demo waiting with the other running.
// Method: the real `node bin/twinstore.js demo --dir TMP`; its arrays found in
// /proc by their command line (the config files under TMP), so the test needs
// nothing the demo prints. SIGINT to the demo (what Ctrl-C sends it) as soon
// as the first array is spawned; SIGINT with one array stopped by SIGSTOP (it
// cannot act on SIGTERM: hung); kill -9 of one array once the demo is ready.
// Each time: the demo exits within a bound and no array process is left.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { projectRoot, tempDir } from '../helpers/array.js';
import { waitFor } from '../helpers/replication.js';

const cliEntry = path.join(projectRoot, 'bin', 'twinstore.js');
/** The demo kills an array that has not stopped 20 s after SIGTERM; it must have exited well within this. */
const demoExitMsMax = 60_000;

interface Demo {
  child: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** The `twinstore serve` processes of the demo in `dir`: their command line names a config under it. */
function arrayPids(dir: string): Array<{ pid: number; site: string }> {
  const out: Array<{ pid: number; site: string }> = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // gone meanwhile
    }
    const config = argv.find((a) => a.startsWith(dir) && a.endsWith('.yaml'));
    if (config && argv.includes('serve') && !isZombie(Number(entry))) out.push({ pid: Number(entry), site: path.basename(config, '.yaml') });
  }
  return out;
}

function isZombie(pid: number): boolean {
  try {
    return / Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\)/, ''));
  } catch {
    return true;
  }
}

function startDemo(t: TestContext, dir: string): Demo {
  const child = spawn(process.execPath, [cliEntry, 'demo', '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  child.stderr!.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const { pid } of arrayPids(dir)) process.kill(pid, 'SIGKILL');
  });
  return { child, output: () => output, exited };
}

async function demoExit(demo: Demo, dir: string, why: string): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the demo had not exited ${demoExitMsMax} ms after ${why}; arrays still running: ${JSON.stringify(arrayPids(dir))}\n${demo.output().slice(-3000)}`)), demoExitMsMax);
  });
  try {
    return await Promise.race([demo.exited, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function untilReady(demo: Demo): Promise<void> {
  await waitFor('the demo\'s JSON ready line', () => demo.output().includes('{"ready":true'), 180_000, 100);
}

test('Ctrl-C while the first array is starting stops it, and the demo starts no other', { timeout: 240_000 }, async (t) => {
  const dir = tempDir(t);
  const demo = startDemo(t, dir);
  await waitFor('the demo to spawn its first array', () => arrayPids(dir).length > 0, 60_000, 5);
  const first = arrayPids(dir);
  demo.child.kill('SIGINT');
  const exit = await demoExit(demo, dir, 'SIGINT while site-a was starting');
  t.diagnostic(`demo exited ${JSON.stringify(exit)}; it said: ${demo.output().split('\n').filter((l) => l.startsWith('twinstore demo:')).join(' | ')}`);
  await waitFor('no array of the demo left running', () => arrayPids(dir).length === 0, 30_000, 100);
  assert.deepEqual(first.map((p) => p.site), ['site-a']);
  assert.doesNotMatch(demo.output(), /"ready":true/, 'the demo stopped setting up');
});

test('Ctrl-C with an array hung (SIGSTOP) stops both: the hung one is killed after the bound', { timeout: 240_000 }, async (t) => {
  const dir = tempDir(t);
  const demo = startDemo(t, dir);
  await untilReady(demo);
  const arrays = arrayPids(dir);
  assert.deepEqual(arrays.map((a) => a.site).sort(), ['site-a', 'site-b']);
  const hung = arrays.find((a) => a.site === 'site-b')!;
  process.kill(hung.pid, 'SIGSTOP');
  demo.child.kill('SIGINT');
  const exit = await demoExit(demo, dir, 'SIGINT with site-b stopped');
  t.diagnostic(`demo exited ${JSON.stringify(exit)}; it said: ${demo.output().split('\n').filter((l) => l.startsWith('twinstore demo:')).join(' | ')}`);
  await waitFor('both arrays gone', () => arrayPids(dir).length === 0, 30_000, 100);
  assert.match(demo.output(), /site-b \(pid \d+\) did not stop within \d+ ms of SIGTERM: killing it/);
  assert.equal(exit.code, 1, 'an array had to be killed: the demo says so with its exit status');
});

test('an array killed -9 under the demo: it says so, stops the other and exits 1', { timeout: 240_000 }, async (t) => {
  const dir = tempDir(t);
  const demo = startDemo(t, dir);
  await untilReady(demo);
  const arrays = arrayPids(dir);
  const victim = arrays.find((a) => a.site === 'site-a')!;
  process.kill(victim.pid, 'SIGKILL');
  const exit = await demoExit(demo, dir, 'kill -9 of site-a');
  t.diagnostic(`demo exited ${JSON.stringify(exit)}; it said: ${demo.output().split('\n').filter((l) => l.startsWith('twinstore demo:')).join(' | ')}`);
  assert.match(demo.output(), new RegExp(`twinstore demo: site-a \\(pid ${victim.pid}\\) died \\(killed by SIGKILL\\); stopping site-b`));
  assert.equal(exit.code, 1);
  await waitFor('site-b stopped too', () => arrayPids(dir).length === 0, 30_000, 100);
});
