// The API's bearer tokens and their roles (docs/security.md). The first admin
// token is today's: `api.token` from the config, or the data folder's
// `api-token` file; it is named `admin` and cannot be revoked through the API
// (change the file or the config and restart). Further tokens are made and
// revoked at run time and kept in `api-tokens.json` in the data folder, mode
// 0600, as sha256 hashes only (the tokens are 32 random bytes, so a plain hash
// is enough): the secret is shown once, when it is made. Every change is
// written to a temporary file, synced, renamed over the old one and the folder
// synced, so a crash leaves the old list or the new one. A revoke takes effect
// for the next request, since every request looks its token up here.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { TwinstoreError, assert } from '../errors.js';
import { syncDirectory } from '../storage/meta-store.js';

export const ROLES = ['admin', 'monitor'] as const;
export type Role = (typeof ROLES)[number];

/** Who made a call: a token's name and role. */
export interface Caller {
  name: string;
  role: Role;
}

export interface TokenInfo extends Caller {
  createdAt: string;
}

interface StoredToken extends TokenInfo {
  sha256: string;
}

/** The name of the first admin token (the token file or api.token). */
export const FIRST_TOKEN_NAME = 'admin';
/** Tokens made at run time; each request looks through them (a map by hash), so the bound is generous. */
export const tokensMax = 1000;
const namePattern = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const tokenBytes = 32;

export function tokensPath(dataDir: string): string {
  return path.join(dataDir, 'api-tokens.json');
}

export class TokenStore {
  private readonly first: Buffer;
  private byHash = new Map<string, StoredToken>();

  constructor(firstToken: string, private readonly file: string) {
    assert(firstToken.length > 0, 'the API token is not empty');
    this.first = Buffer.from(firstToken, 'utf8');
    for (const token of readTokens(file)) this.byHash.set(token.sha256, token);
  }

  /** The caller a bearer token belongs to, or undefined when it is none of them. */
  lookup(given: string): Caller | undefined {
    const bytes = Buffer.from(given, 'utf8');
    if (bytes.length === this.first.length && crypto.timingSafeEqual(bytes, this.first)) return { name: FIRST_TOKEN_NAME, role: 'admin' };
    const found = this.byHash.get(sha256(given));
    return found === undefined ? undefined : { name: found.name, role: found.role };
  }

  /** The first admin token itself (for calls the peer array forwards, already authenticated by the link). */
  get firstToken(): string {
    return this.first.toString('utf8');
  }

  list(): TokenInfo[] {
    return [...this.byHash.values()].map(({ name, role, createdAt }) => ({ name, role, createdAt }));
  }

  /** Makes a token; its secret is returned here and nowhere else. */
  create(name: string, role: Role): TokenInfo & { token: string } {
    if (!namePattern.test(name)) throw new TwinstoreError('BAD_REQUEST', `name: "${name}" must be 1-63 of a-z 0-9 . _ - and start with a letter or digit`, { field: 'name' });
    if (name === FIRST_TOKEN_NAME || this.list().some((t) => t.name === name)) throw new TwinstoreError('TOKEN_EXISTS', `an API token named ${name} already exists`, { field: 'name' });
    if (this.byHash.size >= tokensMax) throw new TwinstoreError('BAD_REQUEST', `there are already ${tokensMax} tokens (tokensMax); revoke some first`, { field: 'name' });
    const token = crypto.randomBytes(tokenBytes).toString('hex');
    const stored: StoredToken = { name, role, createdAt: new Date().toISOString(), sha256: sha256(token) };
    const next = new Map(this.byHash).set(stored.sha256, stored);
    writeTokens(this.file, [...next.values()]);
    this.byHash = next;
    return { name, role, createdAt: stored.createdAt, token };
  }

  revoke(name: string): void {
    if (name === FIRST_TOKEN_NAME) {
      throw new TwinstoreError('BAD_REQUEST', `the ${FIRST_TOKEN_NAME} token is the token file (or api.token): replace it there and restart the array`, { field: 'name' });
    }
    const entry = [...this.byHash.values()].find((t) => t.name === name);
    if (entry === undefined) throw new TwinstoreError('TOKEN_NOT_FOUND', `no API token named ${name}`, { field: 'name' });
    const next = new Map(this.byHash);
    next.delete(entry.sha256);
    writeTokens(this.file, [...next.values()]);
    this.byHash = next;
  }
}

function sha256(token: string): string {
  return crypto.createHash('sha256').update(token, 'utf8').digest('hex');
}

function readTokens(file: string): StoredToken[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new TwinstoreError('CONFIG_INVALID', `cannot read the API token list ${file}: ${(error as Error).message}`, { cause: error });
  }
  try {
    const parsed = JSON.parse(text) as { tokens: StoredToken[] };
    const ok = Array.isArray(parsed.tokens) && parsed.tokens.every((t) => typeof t.name === 'string' && (ROLES as readonly string[]).includes(t.role) && /^[0-9a-f]{64}$/.test(t.sha256));
    if (!ok) throw new Error('not a token list');
    return parsed.tokens;
  } catch (error) {
    throw new TwinstoreError('CONFIG_INVALID', `the API token list ${file} is damaged (${(error as Error).message}); move it away to start with the first admin token only`, { cause: error });
  }
}

function writeTokens(file: string, tokens: StoredToken[]): void {
  const temp = `${file}.tmp`;
  const fd = fs.openSync(temp, 'w', 0o600);
  try {
    fs.writeSync(fd, JSON.stringify({ tokens }, null, 1) + '\n');
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(temp, file);
  syncDirectory(path.dirname(file));
}
