// Test-only drive fault switch (DESIGN.md §6 "drive error", §10): lets a test
// make a running array's drives fail like a dying disk, then heal them, to show
// that a drive I/O error suspends a pair (PSUE) and that resync recovers.
//
// Set TWINSTORE_TEST_IO_ERROR_FILE=/path/trigger. While that file exists, every
// read, write and sync of a drive whose path is one of its lines (or of every
// drive, for a line `*`) fails with the error a real EIO gives: an IO_ERROR
// whose cause has `code` 'EIO'. A timer (unref'd) reads the trigger every
// 50 ms, so an I/O only checks a Set; with the variable unset no file is
// wrapped and nothing runs. Metadata files are never failed. Never set it in
// production.

import fs from 'node:fs';
import path from 'node:path';
import { ioError, type BlockFile } from './block-file.js';

const triggerPath = process.env.TWINSTORE_TEST_IO_ERROR_FILE ?? '';
export const ioFaultMode = triggerPath !== '';
const pollMs = 50;

/** Resolved drive paths failing now ('*': every drive). Replaced whole by each poll. */
let failing = new Set<string>();
let poller: NodeJS.Timeout | undefined;

function poll(): void {
  fs.readFile(triggerPath, 'utf8', (error, text) => {
    failing = error ? new Set() : new Set(text.split('\n').map((line) => line.trim()).filter(Boolean).map((line) => (line === '*' ? line : path.resolve(line))));
  });
}

function startPolling(): void {
  if (poller !== undefined) return;
  poll();
  poller = setInterval(poll, pollMs);
  poller.unref();
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

  constructor(private readonly inner: BlockFile) {
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
    return failing.size > 0 && (failing.has(this.resolvedPath) || failing.has('*'));
  }

  read(buffer: Buffer, position: number): Promise<void> {
    if (this.failingNow()) return Promise.reject(ioError('read', this.path, eio('read', this.path)));
    return this.inner.read(buffer, position);
  }

  write(buffer: Buffer, position: number): Promise<void> {
    if (this.failingNow()) return Promise.reject(ioError('write', this.path, eio('write', this.path)));
    return this.inner.write(buffer, position);
  }

  sync(): Promise<void> {
    if (this.failingNow()) return Promise.reject(ioError('sync', this.path, eio('fdatasync', this.path)));
    return this.inner.sync();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
