// Chooses how drive and metadata files are opened: plain descriptors, or the
// volatile cache of docs/architecture.md §10 when the test-only switch
// TWINSTORE_TEST_VOLATILE_CACHE=1 is set (TWINSTORE_TEST_SEED seeds its write-back);
// drives and metadata files also go behind the test-only fault switch (fault-file.ts) when
// TWINSTORE_TEST_IO_ERROR_FILE is set, outermost, so a failed write never reaches the cache;
// or, in the seeded simulator, whatever its opener returns.

import { openDescriptorFile, skipFdatasyncPlanted, type BlockFile, type OpenOptions } from './block-file.js';
import { VolatileFile } from './volatile-file.js';
import { FaultyFile, ioFaultMode } from './fault-file.js';
import { Prng } from '../util/prng.js';

export const volatileCacheMode = process.env.TWINSTORE_TEST_VOLATILE_CACHE === '1';
const seedBase = Number(process.env.TWINSTORE_TEST_SEED ?? Date.now() % 2 ** 31);
let opened = 0;

/** Opens a drive or metadata file some other way: the seeded simulator's in-process files (test/sim). */
export type BlockFileOpener = (path: string, options: OpenOptions) => BlockFile;
let opener: BlockFileOpener | undefined;

/** Test only: every later open goes to `next` (undefined: back to real files). */
export function setBlockFileOpener(next: BlockFileOpener | undefined): void {
  opener = next;
}

export function openBlockFile(path: string, options: OpenOptions): BlockFile {
  if (opener !== undefined) return opener(path, options);
  const file = openCachedFile(path, options);
  return ioFaultMode ? new FaultyFile(file, options.kind) : file;
}

function openCachedFile(path: string, options: OpenOptions): BlockFile {
  const file = openDescriptorFile(path, options);
  if (!volatileCacheMode) return file;
  opened += 1;
  const skipSync = options.kind === 'drive' && skipFdatasyncPlanted;
  return new VolatileFile(file, new Prng(seedBase + opened * 7919), skipSync);
}
