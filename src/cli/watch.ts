// `--watch` for a CLI verb: ask the API every second and print each answer,
// for as long as the user lets it run. The array may go away meanwhile (a
// restart, a crash, a failover test): an unreachable API (or one answering 5xx,
// e.g. still starting) prints one line saying so and the loop asks again after
// a backoff that doubles from watchRetryMsMin to watchRetryMsMax, reaching the
// array afresh each time (with --config its run.json names the new port after a
// restart). Any other error (a wrong token, a bad argument) ends the watch.
//
// Output: people on a terminal get the screen cleared before each table; with
// --json, or when stdout is not a terminal, nothing but the documents (one
// compact JSON document per line) and the notices, so a script can parse it.

import { ERROR_CODES, isTwinstoreError, type TwinstoreError } from '../errors.js';
import { connect, type ApiClient, type ConnectionOptions } from './client.js';

/** The pause between two answers while the API answers. */
export const watchIntervalMs = 1000;
/** The first retry after the API stopped answering, then doubled up to watchRetryMsMax. */
export const watchRetryMsMin = 1000;
export const watchRetryMsMax = 10_000;

export interface WatchOptions<T> {
  connection: ConnectionOptions;
  json: boolean;
  /** One answer of the API. */
  fetch: (client: ApiClient) => Promise<T>;
  /** The human form of an answer. */
  human: (value: T) => string;
}

/** Runs until the process is stopped, or throws the first error that is not the array being away. */
export async function watch<T>(options: WatchOptions<T>): Promise<never> {
  const clear = !options.json && process.stdout.isTTY === true;
  let retryMs = watchRetryMsMin;
  let away = false;
  for (;;) {
    let value: T;
    try {
      value = await options.fetch(connect(options.connection));
    } catch (error) {
      if (!isAway(error)) throw error;
      printAway(options.json, error, retryMs);
      away = true;
      await sleep(retryMs);
      retryMs = Math.min(watchRetryMsMax, retryMs * 2);
      continue;
    }
    if (away && !options.json) process.stdout.write(`${new Date().toISOString()} the array answers again\n`);
    [away, retryMs] = [false, watchRetryMsMin];
    if (options.json) process.stdout.write(JSON.stringify(value) + '\n');
    else process.stdout.write((clear ? '\x1b[2J\x1b[H' : '') + new Date().toISOString() + '\n' + options.human(value) + '\n');
    await sleep(watchIntervalMs);
  }
}

/** The array is away or not ready: API_UNREACHABLE, or an answer of status 5xx (starting, shutting down). */
export function isAway(error: unknown): error is TwinstoreError {
  return isTwinstoreError(error) && (error.code === 'API_UNREACHABLE' || ERROR_CODES[error.code].status >= 500);
}

function printAway(json: boolean, error: TwinstoreError, retryMs: number): void {
  const at = new Date().toISOString();
  if (json) process.stdout.write(JSON.stringify({ unreachable: true, at, error: error.toJSON(), retryMs }) + '\n');
  else process.stdout.write(`${at} the array is unreachable (${error.code}: ${error.message}); asking again in ${retryMs / 1000} s\n`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
