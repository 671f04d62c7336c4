// Atomic, durable array metadata: a checksummed snapshot plus an append-only log
// of checksummed records. A commit appends its records and fdatasyncs the log;
// a torn or partly written tail fails its checksum and is cut off on replay, so
// kill -9 at any point leaves either the old or the new state, never a mix.
// Every open (and every 8 MiB of log) folds the log into a new snapshot written
// as tmp + fdatasync + rename + directory fsync, and starts an empty log file
// named after the snapshot's generation, so stale tails are never replayed.
// A failed sync of a metadata file (log, snapshot, folder) is remembered: every
// later commit fails until the array is restarted (sticky-sync.ts says why).

import fs from 'node:fs';
import path from 'node:path';
import { crc32c } from '@node-rs/crc32';
import { TwinstoreError, assert } from '../errors.js';
import { openBlockFile } from './open-file.js';
import type { BlockFile } from './block-file.js';
import { syncFailure, type SyncFailure } from './sticky-sync.js';
import { applyRecord, cloneState, fromSnapshot, toSnapshot, type MetaRecord, type MetaState, type SnapshotJson } from './meta-model.js';

const frameMagic = 0x54574d4c; // "TWML"
const frameHeaderBytes = 16;
const frameBytesMax = 64 * 2 ** 20;
const compactAfterBytes = 8 * 2 ** 20;
const snapshotName = 'snapshot';

export class MetaStore {
  private logEnd = 0;
  private chain: Promise<void> = Promise.resolve();
  /** The first failed sync of a metadata file; every later commit fails with its error. */
  syncFailure: SyncFailure | undefined;
  /** Syncs of metadata files that failed. */
  failedSyncs = 0;
  /** Hears of the first failed sync (the engine reports it). */
  onSyncFailed: (failure: SyncFailure) => void = () => undefined;

  private constructor(
    private readonly dir: string,
    /** The state as it is on disk: only records whose commit returned. */
    readonly durable: MetaState,
    private generation: number,
    private log: BlockFile,
  ) {}

  static async open(dir: string, initial: () => MetaState): Promise<MetaStore> {
    fs.mkdirSync(dir, { recursive: true });
    const loaded = readSnapshot(dir);
    const state = loaded ? fromSnapshot(loaded) : initial();
    const generation = loaded?.generation ?? 0;
    // The first open makes its empty log before renaming the snapshot into place, so an empty
    // log alone is a crash during that open; a log holding records means the snapshot was lost.
    if (!loaded && fs.readdirSync(dir).some((name) => name.startsWith('log-') && fs.statSync(path.join(dir, name)).size > 0)) {
      throw new TwinstoreError('METADATA_CORRUPT', `metadata log records exist in ${dir} but the snapshot is missing`);
    }
    await replayLog(path.join(dir, `log-${generation}`), generation, state);
    const store = new MetaStore(dir, state, generation, await writeSnapshot(dir, state, generation + 1, runSync));
    store.generation = generation + 1;
    removeStaleLogs(dir, store.generation);
    return store;
  }

  /** Appends records durably (one write, one fdatasync). Commits run one at a time, in call order. */
  commit(records: MetaRecord[]): Promise<void> {
    const run = this.chain.then(() => this.commitNow(records));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async commitNow(records: MetaRecord[]): Promise<void> {
    if (this.syncFailure !== undefined) throw this.syncFailure.error;
    if (records.length === 0) return;
    const frames = encodeFrames(records, this.generation);
    await this.log.write(frames, this.logEnd);
    await this.sync(this.log.path, () => this.log.sync());
    this.logEnd += frames.length;
    for (const record of records) applyRecord(this.durable, record);
    if (this.logEnd >= compactAfterBytes) await this.compact();
  }

  private async compact(): Promise<void> {
    const next = this.generation + 1;
    const log = await writeSnapshot(this.dir, this.durable, next, (file, run) => this.sync(file, run));
    await this.log.close();
    this.log = log;
    this.generation = next;
    this.logEnd = 0;
    removeStaleLogs(this.dir, next);
  }

  /** Runs one sync of a metadata file; a failure is remembered (logged by the engine, counted). */
  private async sync(file: string, run: () => Promise<void> | void): Promise<void> {
    try {
      await run();
    } catch (error) {
      this.failedSyncs += 1;
      if (this.syncFailure === undefined) {
        this.syncFailure = syncFailure(file, error);
        this.onSyncFailed(this.syncFailure);
      }
      throw error;
    }
  }

  /** A deep copy of the durable state, for the engine's live view. */
  snapshotState(): MetaState {
    return cloneState(this.durable);
  }

  async close(): Promise<void> {
    await this.chain;
    await this.log.close();
  }
}

function encodeFrames(records: MetaRecord[], generation: number): Buffer {
  const parts = records.map((record) => {
    const payload = Buffer.from(JSON.stringify(record), 'utf8');
    assert(payload.length <= frameBytesMax, 'metadata record is bounded');
    const header = Buffer.alloc(frameHeaderBytes);
    header.writeUInt32BE(frameMagic, 0);
    header.writeUInt32BE(payload.length, 4);
    header.writeUInt32BE(crc32c(payload), 8);
    header.writeUInt32BE(generation >>> 0, 12);
    return Buffer.concat([header, payload]);
  });
  return Buffer.concat(parts);
}

async function replayLog(file: string, generation: number, state: MetaState): Promise<void> {
  if (!fs.existsSync(file)) return;
  const bytes = fs.readFileSync(file);
  let offset = 0;
  while (offset + frameHeaderBytes <= bytes.length) {
    if (bytes.readUInt32BE(offset) !== frameMagic) break;
    const length = bytes.readUInt32BE(offset + 4);
    if (length > frameBytesMax || offset + frameHeaderBytes + length > bytes.length) break;
    if (bytes.readUInt32BE(offset + 12) !== generation >>> 0) break;
    const payload = bytes.subarray(offset + frameHeaderBytes, offset + frameHeaderBytes + length);
    if (crc32c(payload) !== bytes.readUInt32BE(offset + 8)) break;
    applyRecord(state, JSON.parse(payload.toString('utf8')) as MetaRecord);
    offset += frameHeaderBytes + length;
  }
}

function readSnapshot(dir: string): SnapshotJson | undefined {
  const file = path.join(dir, snapshotName);
  if (!fs.existsSync(file)) return undefined;
  const text = fs.readFileSync(file, 'utf8');
  const newline = text.indexOf('\n');
  const match = /^twinstore-meta v1 crc32c=([0-9a-f]{8}) bytes=(\d+)$/.exec(text.slice(0, newline));
  const body = match ? Buffer.from(text.slice(newline + 1), 'utf8').subarray(0, Number(match[2])) : undefined;
  if (!match || !body || body.length !== Number(match[2]) || crc32c(body).toString(16).padStart(8, '0') !== match[1]) {
    throw new TwinstoreError('METADATA_CORRUPT', `metadata snapshot ${file} fails its checksum`);
  }
  return JSON.parse(body.toString('utf8')) as SnapshotJson;
}

/** Runs a sync of `file` (the store's own runner also remembers a failure). */
type SyncRunner = (file: string, run: () => Promise<void> | void) => Promise<void>;

/** At open a failed sync fails the open: nothing to remember. */
const runSync: SyncRunner = async (_file, run) => {
  await run();
};

/** Writes snapshot `generation` atomically and returns the new, empty log it starts. */
async function writeSnapshot(dir: string, state: MetaState, generation: number, sync: SyncRunner): Promise<BlockFile> {
  const body = Buffer.from(JSON.stringify(toSnapshot(state, generation)), 'utf8');
  const header = `twinstore-meta v1 crc32c=${crc32c(body).toString(16).padStart(8, '0')} bytes=${body.length}\n`;
  const tmp = path.join(dir, `${snapshotName}.tmp`);
  fs.rmSync(tmp, { force: true });
  const file = openBlockFile(tmp, { createSizeBytes: 0, kind: 'metadata' });
  try {
    await file.write(Buffer.concat([Buffer.from(header, 'utf8'), body]), 0);
    await sync(tmp, () => file.sync());
  } finally {
    await file.close();
  }
  const logPath = path.join(dir, `log-${generation}`);
  fs.rmSync(logPath, { force: true });
  const log = openBlockFile(logPath, { createSizeBytes: 0, kind: 'metadata' });
  fs.renameSync(tmp, path.join(dir, snapshotName));
  try {
    await sync(dir, () => syncDirectory(dir));
  } catch (error) {
    await log.close();
    throw error;
  }
  return log;
}

function removeStaleLogs(dir: string, generation: number): void {
  for (const name of fs.readdirSync(dir)) {
    if (name.startsWith('log-') && name !== `log-${generation}`) fs.rmSync(path.join(dir, name), { force: true });
  }
}

export function syncDirectory(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
