// `twinstore serve --config FILE`: runs one array until SIGTERM or SIGINT.
// SIGHUP re-reads the NBD and API TLS files (new connections use them).
// Once listening it prints exactly one JSON line on stdout (the bound
// addresses); everything else goes to the log on stderr. A start that fails
// prints `twinstore: CODE: message` and exits 1 at once.
//
// The array's heap policy is set here, for the serving process only. An array's
// live heap is small (tens of MB) while hundreds of MB/s of I/O buffers and TLS
// chunks pass through it; with V8's incremental marking that made a full
// mark-compact start every ~200 ms on both arrays of a replicating pair (about a
// third of their CPU, in helper threads and pauses, `bench:profile --trace-gc`).
// Without it a mark-compact runs only when the old generation fills, a few times
// a minute, as one short pause over that small heap.

import v8 from 'node:v8';
import { loadConfig } from '../config/index.js';
import { TwinstoreArray } from '../array/array.js';
import { isTwinstoreError } from '../errors.js';

export async function serve(configFile: string): Promise<void> {
  v8.setFlagsFromString('--no-incremental-marking');
  const config = loadConfig(configFile);
  let started: Awaited<ReturnType<typeof TwinstoreArray.start>>;
  try {
    started = await TwinstoreArray.start(config);
  } catch (error) {
    // The start closed what it opened and released the data folder: exit now, whatever handle is
    // left (a half-started array must not linger with a port open and its folder unlocked).
    const code = isTwinstoreError(error) ? error.code : 'INTERNAL';
    process.stderr.write(`twinstore: ${code}: ${(error as Error).message}\n`);
    process.exit(1);
  }
  const { array, ready } = started;
  process.stdout.write(JSON.stringify(ready) + '\n');
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    array.log.info({ signal }, 'signal received');
    array.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        array.log.error({ err: (error as Error).message }, 'unclean shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => {
    if (!stopping) array.reloadTls();
  });
}
