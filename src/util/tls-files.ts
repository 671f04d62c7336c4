// Reading the X.509 files a TLS listener serves (the NBD STARTTLS server and
// the HTTPS API), one way for both: each file is checked to be a regular file
// of sane size, the certificate and key are tried together in a secure context
// before they are used, and every failure is CONFIG_INVALID naming the config
// key and the file. A reload calls the same function, so a damaged file found
// at SIGHUP is reported the same way and the caller keeps the old context.

import fs from 'node:fs';
import tls from 'node:tls';
import { TwinstoreError } from '../errors.js';

/** A certificate, key or PSK file larger than this is not one. */
export const tlsFileBytesMax = 1 << 20;

export interface X509Files {
  certFile: string;
  keyFile: string;
  /** A CA whose certificates are trusted for client certificates (optional). */
  caFile?: string | undefined;
}

/** The config keys the files came from, for the error messages (e.g. `nbd.certFile`). */
export interface X509Keys {
  cert: string;
  key: string;
  ca: string;
}

/** What a reload did to one part's TLS files: `off` when the part has no TLS. */
export interface ReloadOutcome {
  part: 'nbd' | 'api';
  state: 'reloaded' | 'off' | 'failed';
  error?: string;
}

export type X509Options = Pick<tls.SecureContextOptions, 'cert' | 'key' | 'ca'>;

/** Reads the files and checks that they make a secure context; CONFIG_INVALID naming the key otherwise. */
export function loadX509(files: X509Files, keys: X509Keys, extra: tls.SecureContextOptions = {}): X509Options {
  const options: X509Options = {
    cert: readTlsFile(files.certFile, keys.cert),
    key: readTlsFile(files.keyFile, keys.key),
    ...(files.caFile === undefined ? {} : { ca: readTlsFile(files.caFile, keys.ca) }),
  };
  try {
    tls.createSecureContext({ ...extra, ...options });
  } catch (error) {
    throw new TwinstoreError('CONFIG_INVALID', `${keys.cert} ${files.certFile} with ${keys.key} ${files.keyFile}: ${(error as Error).message}`, { field: keys.cert, cause: error });
  }
  return options;
}

export function readTlsFile(file: string, key: string): Buffer {
  try {
    const stat = fs.statSync(file);
    if (!stat.isFile()) throw new Error('not a regular file');
    if (stat.size > tlsFileBytesMax) throw new Error(`${stat.size} bytes, more than ${tlsFileBytesMax}`);
    return fs.readFileSync(file);
  } catch (error) {
    throw new TwinstoreError('CONFIG_INVALID', `${key}: cannot read ${file}: ${(error as Error).message}`, { field: key, cause: error });
  }
}
