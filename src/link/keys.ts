// Link keys: the 32-byte pre-shared key two arrays use to authenticate each
// other, kept as 64 hex digits in a file of mode 0600. `twinstore keys` makes
// one; both arrays name the same file contents in `link.pskFile`.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { TwinstoreError } from '../errors.js';
import { PSK_BYTES } from './protocol.js';

const PSK_HEX_CHARS = PSK_BYTES * 2;
/** A key file is one line; anything much longer is not a key file. */
const PSK_FILE_BYTES_MAX = 4096;

/** Reads a link key file: 64 hex digits, surrounding white space allowed. CONFIG_INVALID when missing, short or malformed. */
export function readPskFile(file: string): Buffer {
  let text: string;
  try {
    const stat = fs.statSync(file);
    if (!stat.isFile()) throw new Error('not a regular file');
    if (stat.size > PSK_FILE_BYTES_MAX) throw new Error(`${stat.size} bytes, too large for a key file`);
    text = fs.readFileSync(file, 'utf8').trim();
  } catch (error) {
    throw new TwinstoreError('CONFIG_INVALID', `cannot read the link key file ${file}: ${(error as Error).message} (make one with: twinstore keys --out FILE)`, { field: 'link.pskFile', cause: error });
  }
  if (!/^[0-9a-fA-F]*$/.test(text)) {
    throw new TwinstoreError('CONFIG_INVALID', `the link key file ${file} is malformed: it must hold ${PSK_HEX_CHARS} hex digits and nothing else`, { field: 'link.pskFile' });
  }
  if (text.length !== PSK_HEX_CHARS) {
    throw new TwinstoreError('CONFIG_INVALID', `the link key file ${file} holds ${text.length} hex digits; a link key is ${PSK_HEX_CHARS} (${PSK_BYTES} bytes)`, { field: 'link.pskFile' });
  }
  const psk = Buffer.from(text, 'hex');
  if (psk.length !== PSK_BYTES) throw new TwinstoreError('INTERNAL', 'assertion failed: 64 hex digits decode to 32 bytes');
  return psk;
}

/**
 * Writes a new random link key to `file` with mode 0600. Refuses (BAD_REQUEST)
 * to replace an existing file unless `force`; a replacement goes through a
 * temporary file and a rename, so the key file is never half-written.
 */
export function writePskFile(file: string, options: { force?: boolean } = {}): void {
  const text = crypto.randomBytes(PSK_BYTES).toString('hex') + '\n';
  if (options.force !== true) {
    try {
      fs.writeFileSync(file, text, { mode: 0o600, flag: 'wx' });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new TwinstoreError('BAD_REQUEST', `${file} already exists; use --force to replace it (the peer array then needs the new key too)`, { field: 'out' });
      }
      throw new TwinstoreError('BAD_REQUEST', `cannot write ${file}: ${(error as Error).message}`, { field: 'out', cause: error });
    }
    fs.chmodSync(file, 0o600);
    return;
  }
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    fs.writeFileSync(temporary, text, { mode: 0o600, flag: 'wx' });
    fs.chmodSync(temporary, 0o600);
    fs.renameSync(temporary, file);
  } catch (error) {
    fs.rmSync(temporary, { force: true });
    throw new TwinstoreError('BAD_REQUEST', `cannot write ${file}: ${(error as Error).message}`, { field: 'out', cause: error });
  }
}
