// A failed sync is never forgotten (the rule PostgreSQL adopted after "fsyncgate"). Linux
// reports a writeback error to one fdatasync per open file and then forgets it: the next
// fdatasync returns 0 although the pages it could not write are gone from the drive (the
// kernel marked them clean). A drive file behind StickySyncFile remembers its first failed
// sync, and every later sync fails with an IO_ERROR that names it, until the process opens
// the file again (the array restarted and recovered). Reads and writes pass unchanged; the
// sync path checks one field.
//
// Two syncs of one file may overlap (a flush round and a journal sync): the kernel gives the
// error to whichever checks first, and the other returns 0 over the same lost pages. So a
// sync that succeeds while others of the file are in flight waits for them, and fails if any
// of them failed.

import { TwinstoreError, assert } from '../errors.js';
import type { BlockFile } from './block-file.js';

export interface SyncFailure {
  path: string;
  /** When the first sync failed (ISO 8601). */
  failedAt: string;
  /** That sync's error message. */
  message: string;
  /** The error every later sync (and flush) fails with. */
  error: TwinstoreError;
}

/** The failure to remember for a sync of `path` that failed with `cause`. */
export function syncFailure(path: string, cause: unknown): SyncFailure {
  const failedAt = new Date().toISOString();
  const message = cause instanceof Error ? cause.message : String(cause);
  const error = new TwinstoreError(
    'IO_ERROR',
    `a sync of ${path} failed at ${failedAt} (${message}): writes since its last good sync may be lost, and every flush fails until the array is restarted`,
    { cause },
  );
  return { path, failedAt, message, error };
}

export class StickySyncFile implements BlockFile {
  /** The first failed sync; set once, never cleared. */
  failure: SyncFailure | undefined;
  /** Syncs that failed on the file itself (not those refused for an earlier failure). */
  failedSyncs = 0;
  private readonly running = new Set<Promise<void>>();

  constructor(private readonly inner: BlockFile, private readonly onFailed: (failure: SyncFailure) => void) {}

  get path(): string {
    return this.inner.path;
  }

  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }

  read(buffer: Buffer, position: number): Promise<void> {
    return this.inner.read(buffer, position);
  }

  write(buffer: Buffer, position: number): Promise<void> {
    return this.inner.write(buffer, position);
  }

  sync(): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure.error);
    const synced = this.inner.sync().catch((error: unknown) => this.failed(error));
    this.running.add(synced);
    return synced.finally(() => this.running.delete(synced)).then(() => this.settled());
  }

  private failed(error: unknown): never {
    this.failedSyncs += 1;
    if (this.failure === undefined) {
      this.failure = syncFailure(this.inner.path, error);
      this.onFailed(this.failure);
    }
    assert(this.failure !== undefined, 'a failed sync is remembered');
    throw error;
  }

  /** After a good sync: the overlapping ones settle first, and an earlier or overlapping failure wins. */
  private async settled(): Promise<void> {
    if (this.running.size > 0) await Promise.allSettled([...this.running]);
    if (this.failure !== undefined) throw this.failure.error;
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
