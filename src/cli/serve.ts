// `twinstore serve --config FILE`: runs one array until SIGTERM or SIGINT.
// SIGHUP re-reads the NBD TLS files (new connections use them).
// Once listening it prints exactly one JSON line on stdout (the bound
// addresses); everything else goes to the log on stderr. A start that fails
// prints `twinstore: CODE: message` and exits 1 at once.

import { loadConfig } from '../config/index.js';
import { TwinstoreArray } from '../array/array.js';
import { isTwinstoreError } from '../errors.js';

export async function serve(configFile: string): Promise<void> {
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
