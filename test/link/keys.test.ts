// Goal: `twinstore keys --out FILE` makes a usable link key (64 hex digits,
// mode 0600), never overwrites one by accident, and says how to use it; and
// readPskFile accepts exactly such files and refuses missing, short or
// malformed ones with CONFIG_INVALID naming the file.
// Method: the verb runs through commander with addKeysCommand on a fresh
// program (stdout captured) in a temporary folder; the key it writes is read back
// with readPskFile and used for a real link between two arrays on 127.0.0.1.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { Command } from 'commander';
import { addKeysCommand } from '../../src/cli/keys-command.js';
import { TwinstoreError } from '../../src/errors.js';
import { readPskFile } from '../../src/link/index.js';
import { startPair } from './helpers.js';

function tempDir(t: import('node:test').TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twinstore-keys-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function runKeys(t: import('node:test').TestContext, args: string[]): Promise<string> {
  const program = new Command('twinstore').exitOverride();
  addKeysCommand(program);
  let printed = '';
  const write = t.mock.method(process.stdout, 'write', (chunk: string | Uint8Array) => {
    printed += String(chunk);
    return true;
  });
  try {
    await program.parseAsync(['node', 'twinstore', 'keys', ...args]);
  } finally {
    write.mock.restore();
  }
  return printed;
}

function isConfigInvalid(pattern: RegExp): (error: unknown) => boolean {
  return (error) => error instanceof TwinstoreError && error.code === 'CONFIG_INVALID' && pattern.test(error.message);
}

test('keys --out writes 32 random bytes as hex, mode 0600, and says how to use them', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'link.key');
  const printed = await runKeys(t, ['--out', file]);
  assert.match(fs.readFileSync(file, 'utf8'), /^[0-9a-f]{64}\n$/);
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  assert.match(printed, /wrote a new 32-byte link key to .*link\.key \(mode 0600\)/);
  assert.match(printed, /pskFile: .*link\.key/);
  const psk = readPskFile(file);
  assert.equal(psk.length, 32);

  const other = path.join(dir, 'other.key');
  await runKeys(t, ['--out', other]);
  assert.notDeepEqual(readPskFile(other), psk, 'each run makes a new key');
});

test('keys refuses to overwrite a file unless --force, and --force replaces it with mode 0600', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'link.key');
  fs.writeFileSync(file, 'precious\n', { mode: 0o644 });
  await assert.rejects(runKeys(t, ['--out', file]), (error: unknown) => error instanceof TwinstoreError && error.code === 'BAD_REQUEST' && /already exists; use --force/.test(error.message));
  assert.equal(fs.readFileSync(file, 'utf8'), 'precious\n', 'untouched');
  await runKeys(t, ['--out', file, '--force']);
  assert.match(fs.readFileSync(file, 'utf8'), /^[0-9a-f]{64}\n$/);
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(fs.readdirSync(dir), ['link.key'], 'no temporary file left behind');
});

test('readPskFile refuses missing, short, long and malformed files with CONFIG_INVALID', (t) => {
  const dir = tempDir(t);
  const write = (name: string, text: string): string => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    return file;
  };
  assert.throws(() => readPskFile(path.join(dir, 'missing.key')), isConfigInvalid(/cannot read the link key file .*missing\.key: ENOENT.*twinstore keys --out FILE/));
  assert.throws(() => readPskFile(dir), isConfigInvalid(/not a regular file/));
  assert.throws(() => readPskFile(write('empty.key', '')), isConfigInvalid(/holds 0 hex digits; a link key is 64 \(32 bytes\)/));
  assert.throws(() => readPskFile(write('short.key', 'ab'.repeat(16))), isConfigInvalid(/short\.key holds 32 hex digits/));
  assert.throws(() => readPskFile(write('long.key', 'ab'.repeat(33))), isConfigInvalid(/holds 66 hex digits/));
  assert.throws(() => readPskFile(write('bad.key', 'zz'.repeat(32))), isConfigInvalid(/bad\.key is malformed/));
  assert.throws(() => readPskFile(write('two.key', `${'ab'.repeat(32)}\n${'cd'.repeat(32)}\n`)), isConfigInvalid(/malformed/));
  assert.deepEqual(readPskFile(write('upper.key', `  ${'AB'.repeat(32)}\r\n`)), Buffer.alloc(32, 0xab), 'case and surrounding white space do not matter');
  try {
    readPskFile(path.join(dir, 'missing.key'));
  } catch (error) {
    assert.equal((error as TwinstoreError).field, 'link.pskFile');
  }
});

test('a key made by the verb authenticates a real link', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'link.key');
  await runKeys(t, ['--out', file]);
  const psk = readPskFile(file);
  const { peer } = await startPair(t, { peer: { identity: { arrayId: 'site-a', psk } }, serverIdentityPsk: psk });
  assert.deepEqual((await peer.request('m', 'keyed')).body, { peerId: 'site-a', method: 'm', body: 'keyed' });
});
