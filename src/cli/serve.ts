// `twinstore serve --config FILE`: runs one array until SIGTERM or SIGINT.
// Once listening it prints exactly one JSON line on stdout (the bound
// addresses); everything else goes to the log on stderr.

import { loadConfig } from '../config/index.js';
import { TwinstoreArray } from '../array/array.js';

export async function serve(configFile: string): Promise<void> {
  const config = loadConfig(configFile);
  const { array, ready } = await TwinstoreArray.start(config);
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
}
