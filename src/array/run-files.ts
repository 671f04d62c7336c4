// Files a running array keeps in its data folder: a lock (one process per data
// folder; a stale lock from a killed process is taken over), the API token
// (mode 0600, made at first start unless the config gives one) and run.json with
// the addresses actually bound, so the CLI finds an array started on port 0.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { TwinstoreError } from '../errors.js';

export interface RunInfo {
  array: string;
  pid: number;
  nbd: string;
  api: string;
}

export function acquireLock(dataDir: string): () => void {
  fs.mkdirSync(dataDir, { recursive: true });
  const lock = path.join(dataDir, 'lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(lock, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      return () => fs.rmSync(lock, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const holder = Number(fs.readFileSync(lock, 'utf8').trim());
      if (Number.isInteger(holder) && holder > 0 && processAlive(holder)) {
        throw new TwinstoreError('CONFIG_INVALID', `data folder ${dataDir} is in use by process ${holder}`);
      }
      fs.rmSync(lock, { force: true });
    }
  }
  throw new TwinstoreError('CONFIG_INVALID', `cannot take the lock on ${dataDir}`);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function tokenPath(dataDir: string): string {
  return path.join(dataDir, 'api-token');
}

/** The configured token, or the one in the data folder, made on first use. */
export function ensureToken(dataDir: string, configured: string | undefined): string {
  if (configured !== undefined) return configured;
  const file = tokenPath(dataDir);
  // An empty file (a crash between its creation and the write) holds no token: an
  // empty one would let every request in, so make a new one as if it were missing.
  const existing = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim() : '';
  if (existing !== '') return existing;
  const token = crypto.randomBytes(24).toString('hex');
  fs.writeFileSync(file, `${token}\n`, { mode: 0o600 });
  return token;
}

export function runInfoPath(dataDir: string): string {
  return path.join(dataDir, 'run.json');
}

export function writeRunInfo(dataDir: string, info: RunInfo): void {
  const file = runInfoPath(dataDir);
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(info) + '\n', { mode: 0o600 });
  fs.renameSync(`${file}.tmp`, file);
}

export function readRunInfo(dataDir: string): RunInfo | undefined {
  try {
    return JSON.parse(fs.readFileSync(runInfoPath(dataDir), 'utf8')) as RunInfo;
  } catch {
    return undefined;
  }
}
