// Test-only fault switch for drives and metadata files: lets a test make a
// running array's files fail like a dying disk, then heal them, to show that a
// drive I/O error suspends a pair (PSUE) and that resync recovers; or fail one
// sync the way Linux does, to show that a failed sync is never forgotten
// (sticky-sync.ts).
//
// Set TWINSTORE_TEST_IO_ERROR_FILE=/path/trigger. While that file exists, each
// of its lines is one of:
//   PATH            every read, write and sync of the file at PATH (or under
//                   it, for a folder) fails with the error a real EIO gives: an
//                   IO_ERROR whose cause has `code` 'EIO'
//   *               the same for every drive (never a metadata file)
//   sync-once PATH  the next sync of a file at or under PATH fails once with
//                   EIO, and the writes to that file since the line was seen
//                   (or since its last sync, if later) are put back to what
//                   they overwrote, as the kernel loses the pages of a failed
//                   writeback; later syncs succeed, as the kernel's do. The
//                   line fires once while it stays in the file; removed and
//                   written again, it fires again.
// A timer (unref'd) reads the trigger every 50 ms, so an I/O only checks a Set
// or a Map; each time the lines it acts on change it writes them to
// `<trigger>.seen`, so a test waits for that instead of for a time. With the
// variable unset no file is wrapped and nothing runs. Never set it in production.

import fs from 'node:fs';
import path from 'node:path';
import { TwinstoreError } from '../errors.js';
import { ioError, type BlockFile } from './block-file.js';

const triggerPath = process.env.TWINSTORE_TEST_IO_ERROR_FILE ?? '';
export const ioFaultMode = triggerPath !== '';
const pollMs = 50;
const syncOncePrefix = 'sync-once ';
/** Bytes of overwritten data one file keeps to put back while a sync-once line is armed for it. */
const putBackBytesMax = 256 * 2 ** 20;

/** Resolved paths failing now ('*': every drive). Replaced whole by each poll. */
let failing = new Set<string>();
/** Resolved paths of sync-once lines, and whether each has fired since it appeared. */
let syncOnce = new Map<string, { fired: boolean }>();
let poller: NodeJS.Timeout | undefined;
/** The lines of the last poll, as written to `<trigger>.seen`. */
let seen = '';

function poll(): void {
  fs.readFile(triggerPath, 'utf8', (error, text) => {
    const lines = error ? [] : text.split('\n').map((line) => line.trim()).filter(Boolean);
    failing = new Set(lines.filter((line) => !line.startsWith(syncOncePrefix)).map((line) => (line === '*' ? line : path.resolve(line))));
    const next = new Map<string, { fired: boolean }>();
    for (const line of lines.filter((l) => l.startsWith(syncOncePrefix))) {
      const entry = path.resolve(line.slice(syncOncePrefix.length).trim());
      next.set(entry, syncOnce.get(entry) ?? { fired: false });
    }
    syncOnce = next;
    const acting = lines.map((line) => `${line}\n`).join('');
    if (acting !== seen) {
      seen = acting;
      // The test may have removed the trigger's folder while the array still runs: nobody waits then.
      fs.writeFile(`${triggerPath}.seen`, acting, () => undefined);
    }
  });
}

function startPolling(): void {
  if (poller !== undefined) return;
  poll();
  poller = setInterval(poll, pollMs);
  poller.unref();
}

/** A line's path names this file: the file itself, or a folder it lies under. */
function covers(entry: string, file: string): boolean {
  return file === entry || file.startsWith(entry + path.sep);
}

/** An errno-style error, as fs gives for a failed pread/pwrite/fdatasync. */
function eio(syscall: string, file: string): NodeJS.ErrnoException {
  const error: NodeJS.ErrnoException = new Error(`EIO: i/o error, ${syscall} (test fault on ${file})`);
  error.code = 'EIO';
  error.errno = -5;
  error.syscall = syscall;
  return error;
}

export class FaultyFile implements BlockFile {
  private readonly resolvedPath: string;
  /** What the writes since the last sync overwrote, oldest first (only while a sync-once line is armed). */
  private overwritten: Array<{ position: number; data: Buffer }> = [];
  private overwrittenBytes = 0;

  constructor(private readonly inner: BlockFile, private readonly kind: 'drive' | 'metadata') {
    this.resolvedPath = path.resolve(inner.path);
    startPolling();
  }

  get path(): string {
    return this.inner.path;
  }

  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }

  private failingNow(): boolean {
    if (failing.size === 0) return false;
    if (this.kind === 'drive' && failing.has('*')) return true;
    for (const entry of failing) if (entry !== '*' && covers(entry, this.resolvedPath)) return true;
    return false;
  }

  /** The sync-once line that has not fired yet and names this file. */
  private armed(): { fired: boolean } | undefined {
    if (syncOnce.size === 0) return undefined;
    for (const [entry, state] of syncOnce) if (!state.fired && covers(entry, this.resolvedPath)) return state;
    return undefined;
  }

  read(buffer: Buffer, position: number): Promise<void> {
    if (this.failingNow()) return Promise.reject(ioError('read', this.path, eio('read', this.path)));
    return this.inner.read(buffer, position);
  }

  async write(buffer: Buffer, position: number): Promise<void> {
    if (this.failingNow()) throw ioError('write', this.path, eio('write', this.path));
    if (this.armed() !== undefined) {
      if (this.overwrittenBytes + buffer.length > putBackBytesMax) {
        throw new TwinstoreError('IO_ERROR', `test fault: more than ${putBackBytesMax} bytes written to ${this.path} while sync-once waits for its sync`);
      }
      const before = Buffer.alloc(buffer.length);
      await this.inner.read(before, position);
      this.overwritten.push({ position, data: before });
      this.overwrittenBytes += before.length;
    }
    await this.inner.write(buffer, position);
  }

  async sync(): Promise<void> {
    if (this.failingNow()) throw ioError('sync', this.path, eio('fdatasync', this.path));
    const once = this.armed();
    if (once !== undefined) {
      once.fired = true;
      await this.putBack();
      throw ioError('sync', this.path, eio('fdatasync', this.path));
    }
    await this.inner.sync();
    this.overwritten = [];
    this.overwrittenBytes = 0;
  }

  /** The writes since the last sync are lost: what they overwrote goes back, newest first, durably. */
  private async putBack(): Promise<void> {
    const overwritten = this.overwritten;
    this.overwritten = [];
    this.overwrittenBytes = 0;
    for (let i = overwritten.length - 1; i >= 0; i -= 1) await this.inner.write(overwritten[i]!.data, overwritten[i]!.position);
    await this.inner.sync();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
