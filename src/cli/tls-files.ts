// Makes the files hosts and arrays need for NBD over TLS, so an operator needs
// no openssl recipe: a site CA, a server certificate signed by it, client
// certificates (subject CN = the client's identity) and TLS-PSK key files in the
// `identity:hexkey` format of qemu's tls-creds-psk, nbdkit and libnbd. Keys are
// EC P-256, made and signed by Debian's `openssl` CLI (spawned with argument
// arrays, never a shell). File names are those qemu's tls-creds-x509 and
// libnbd's tls-certificates look for in a folder, so `dir=` works directly.
// Keys are mode 0600; nothing is replaced without `force`, and a replacement
// goes through a temporary file and a rename.

import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { TwinstoreError } from '../errors.js';

export const CA_CERT = 'ca-cert.pem';
export const CA_KEY = 'ca-key.pem';
/** How long certificates are valid, in days: the CA ten years, the others about two. */
const caDays = 3650;
const leafDays = 825;
/** How long one openssl run may take before it counts as failed. */
const opensslTimeoutMs = 60_000;
/** A PSK is 32 random bytes, written as 64 hex digits. */
const pskBytes = 32;
/** A PSK file is a handful of lines; anything larger is not one. */
const pskFileBytesMax = 1 << 20;
/** Identities are certificate CNs and PSK identities: no colon (the PSK file's separator), no space. */
const identityPattern = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/;
const hostPattern = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$/;

export interface Written {
  files: string[];
}

export function checkIdentity(id: string, field: string): void {
  if (!identityPattern.test(id)) {
    throw new TwinstoreError('BAD_REQUEST', `--${field} "${id}" must be 1-128 of A-Z a-z 0-9 . _ @ - and start with a letter or digit`, { field });
  }
}

/** A site CA: DIR/ca-cert.pem and DIR/ca-key.pem (0600). */
export function makeCa(out: string, options: { force: boolean }): Written {
  const dir = ensureDir(out);
  const cert = path.join(dir, CA_CERT);
  const key = path.join(dir, CA_KEY);
  refuseExisting([cert, key], options.force);
  return withScratch((scratch) => {
    const keyTmp = newKey(scratch);
    const csr = path.join(scratch, 'ca.csr');
    openssl(['req', '-new', '-key', keyTmp, '-subj', '/CN=Twinstore site CA', '-out', csr]);
    const ext = extensions(scratch, ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign', 'subjectKeyIdentifier=hash']);
    const certTmp = path.join(scratch, 'ca-cert.pem');
    openssl(['x509', '-req', '-in', csr, '-key', keyTmp, '-days', String(caDays), '-set_serial', serial(), '-extfile', ext, '-extensions', 'v3', '-out', certTmp]);
    place(keyTmp, key, 0o600);
    place(certTmp, cert, 0o644);
    return { files: [cert, key] };
  });
}

/** A certificate signed by the CA in `caDir`: the server's (SAN DNS:name and IP:127.0.0.1) or a client's (CN = id). */
export function makeLeaf(options: { caDir: string; out: string; kind: 'server' | 'client'; name: string; force: boolean }): Written {
  const caCert = path.join(options.caDir, CA_CERT);
  const caKey = path.join(options.caDir, CA_KEY);
  for (const file of [caCert, caKey]) {
    if (!fs.existsSync(file)) throw new TwinstoreError('BAD_REQUEST', `--ca ${options.caDir} has no ${path.basename(file)} (make a CA with: twinstore tls ca --out DIR)`, { field: 'ca' });
  }
  if (options.kind === 'server' && !hostPattern.test(options.name) && net.isIP(options.name) === 0) {
    throw new TwinstoreError('BAD_REQUEST', `--name "${options.name}" is not a host name`, { field: 'name' });
  }
  if (options.kind === 'client') checkIdentity(options.name, 'name');
  const dir = ensureDir(options.out);
  const cert = path.join(dir, `${options.kind}-cert.pem`);
  const key = path.join(dir, `${options.kind}-key.pem`);
  const caCopy = path.join(dir, CA_CERT);
  const copyCa = path.resolve(caCopy) !== path.resolve(caCert);
  refuseExisting([cert, key], options.force);
  return withScratch((scratch) => {
    const keyTmp = newKey(scratch);
    const csr = path.join(scratch, 'leaf.csr');
    openssl(['req', '-new', '-key', keyTmp, '-subj', `/CN=${options.name}`, '-out', csr]);
    const usage = options.kind === 'server'
      ? ['extendedKeyUsage=serverAuth', `subjectAltName=${[...new Set([net.isIP(options.name) ? `IP:${options.name}` : `DNS:${options.name}`, 'IP:127.0.0.1'])].join(',')}`]
      : ['extendedKeyUsage=clientAuth'];
    const ext = extensions(scratch, ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', ...usage]);
    const certTmp = path.join(scratch, 'leaf-cert.pem');
    openssl(['x509', '-req', '-in', csr, '-CA', caCert, '-CAkey', caKey, '-days', String(leafDays), '-set_serial', serial(), '-extfile', ext, '-extensions', 'v3', '-out', certTmp]);
    place(keyTmp, key, 0o600);
    place(certTmp, cert, 0o644);
    const files = [cert, key];
    if (copyCa) {
      const caTmp = path.join(scratch, 'ca-copy.pem');
      fs.copyFileSync(caCert, caTmp);
      place(caTmp, caCopy, 0o644);
      files.push(caCopy);
    }
    return { files };
  });
}

/** Adds `identity:hexkey` to a PSK file (made 0600 if new); an identity already there is replaced only with `force`. */
export function addPsk(file: string, identity: string, options: { force: boolean }): Written {
  checkIdentity(identity, 'identity');
  let lines: string[] = [];
  if (fs.existsSync(file)) {
    const stat = fs.statSync(file);
    if (!stat.isFile() || stat.size > pskFileBytesMax) throw new TwinstoreError('BAD_REQUEST', `${file} is not a PSK file`, { field: 'out' });
    lines = fs.readFileSync(file, 'utf8').split('\n').filter((line) => line.trim() !== '');
  }
  const others = lines.filter((line) => line.split(':')[0] !== identity);
  if (others.length !== lines.length && !options.force) {
    throw new TwinstoreError('BAD_REQUEST', `${file} already holds a key for ${identity}; use --force to replace it (its hosts then need the new key)`, { field: 'identity' });
  }
  others.push(`${identity}:${crypto.randomBytes(pskBytes).toString('hex')}`);
  const temporary = path.join(path.dirname(path.resolve(file)), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    fs.writeFileSync(temporary, others.join('\n') + '\n', { mode: 0o600, flag: 'wx' });
    fs.chmodSync(temporary, 0o600);
    fs.renameSync(temporary, file);
  } catch (error) {
    fs.rmSync(temporary, { force: true });
    throw new TwinstoreError('BAD_REQUEST', `cannot write ${file}: ${(error as Error).message}`, { field: 'out', cause: error });
  }
  return { files: [path.resolve(file)] };
}

function ensureDir(dir: string): string {
  const resolved = path.resolve(dir);
  try {
    fs.mkdirSync(resolved, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new TwinstoreError('BAD_REQUEST', `cannot make ${resolved}: ${(error as Error).message}`, { field: 'out', cause: error });
  }
  return resolved;
}

function refuseExisting(files: string[], force: boolean): void {
  if (force) return;
  const existing = files.filter((file) => fs.existsSync(file));
  if (existing.length > 0) throw new TwinstoreError('BAD_REQUEST', `${existing.join(' and ')} already exist; use --force to replace them`, { field: 'out' });
}

/** Runs `work` in a private temporary folder that is removed afterwards, whatever happens. */
function withScratch<T>(work: (scratch: string) => T): T {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'twinstore-tls-'));
  try {
    return work(scratch);
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

/** A new EC P-256 key in `scratch`, mode 0600 before any key byte is written. */
function newKey(scratch: string): string {
  const key = path.join(scratch, 'key.pem');
  fs.writeFileSync(key, '', { mode: 0o600, flag: 'wx' });
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key]);
  return key;
}

function extensions(scratch: string, lines: string[]): string {
  const file = path.join(scratch, 'ext.cnf');
  fs.writeFileSync(file, ['[v3]', ...lines, ''].join('\n'));
  return file;
}

/** A random positive 128-bit serial number. */
function serial(): string {
  const bytes = crypto.randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f | 0x01;
  return `0x${bytes.toString('hex')}`;
}

/** Moves a finished file into place with its mode (rename: a reader never sees half a file). */
function place(from: string, to: string, mode: number): void {
  fs.chmodSync(from, mode);
  try {
    fs.renameSync(from, to);
  } catch {
    // Another file system: copy to a temporary name beside the target, then rename.
    const temporary = `${to}.${process.pid}.tmp`;
    fs.copyFileSync(from, temporary);
    fs.chmodSync(temporary, mode);
    fs.renameSync(temporary, to);
  }
}

function openssl(args: string[]): void {
  const result = spawnSync('openssl', args, { encoding: 'utf8', timeout: opensslTimeoutMs, stdio: ['ignore', 'pipe', 'pipe'] });
  if (result.error) {
    throw new TwinstoreError('TLS_TOOL_FAILED', `cannot run openssl (install the openssl package): ${result.error.message}`, { cause: result.error });
  }
  if (result.status !== 0) {
    throw new TwinstoreError('TLS_TOOL_FAILED', `openssl ${args[0]} failed (exit ${result.status}): ${result.stderr.trim().split('\n')[0] ?? ''}`);
  }
}
