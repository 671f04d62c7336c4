// `twinstore events [--json] [--now]`: the array's event stream (GET /v1/events,
// server-sent events). First the state of every group, pair, peer and volume,
// then one line per change. --json prints each event as one JSON document per
// line; --now prints the snapshot and exits. When the stream ends (the array
// restarts, the connection drops) it says so and comes back with the last id it
// printed (Last-Event-ID), after a backoff as `pair display --watch` uses, so
// nothing is printed twice and nothing is missed while the array keeps it.

import type { Command } from 'commander';
import { TwinstoreError, isTwinstoreError } from '../errors.js';
import { connect, type ConnectionOptions } from './client.js';
import { isAway, watchRetryMsMax, watchRetryMsMin } from './watch.js';

type GlobalOptions = ConnectionOptions & { json?: boolean };

/** One event as the stream's data line carries it. */
interface StreamEvent {
  id: string;
  at: string;
  type: string;
  data: Record<string, unknown>;
}

/** The longest SSE line taken from the stream (a data line is one event: a pair row is well under it). */
const lineBytesMax = 2 ** 20;

export function addEventsCommand(program: Command, globals: () => GlobalOptions): void {
  program.command('events')
    .description('the array\'s events: the state of every group, pair, peer and volume, then each change as it happens')
    .option('--json', 'one JSON document per line')
    .option('--now', 'print the current state and exit')
    .action(async (opts: { json?: boolean; now?: boolean }) => {
      const json = opts.json ?? globals().json ?? false;
      const print = (event: StreamEvent): void => {
        process.stdout.write((json ? JSON.stringify(event) : humanLine(event)) + '\n');
      };
      if (opts.now) {
        await readStream(globals(), '?now=1', undefined, print);
        return;
      }
      let lastId: string | undefined;
      let retryMs = watchRetryMsMin;
      for (;;) {
        try {
          await readStream(globals(), '', lastId, (event) => {
            lastId = event.id;
            retryMs = watchRetryMsMin;
            print(event);
          });
          notice(json, 'the event stream ended', retryMs);
        } catch (error) {
          if (!isAway(error)) throw error;
          notice(json, `the array is unreachable (${error.code}: ${error.message})`, retryMs);
        }
        await new Promise((resolve) => setTimeout(resolve, retryMs));
        retryMs = Math.min(watchRetryMsMax, retryMs * 2);
      }
    });
}

/** Reads one response of the stream to its end, calling `each` per event. */
async function readStream(connection: ConnectionOptions, query: string, lastId: string | undefined, each: (event: StreamEvent) => void): Promise<void> {
  const body = await connect(connection).stream(`/v1/events${query}`, lastId === undefined ? {} : { 'last-event-id': lastId });
  const decoder = new TextDecoder();
  let buffered = '';
  try {
    for await (const chunk of body) {
      buffered += decoder.decode(chunk, { stream: true });
      let end: number;
      while ((end = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 1);
        if (line.startsWith('data: ')) each(JSON.parse(line.slice(6)) as StreamEvent);
      }
      if (buffered.length > lineBytesMax) throw new TwinstoreError('INTERNAL', `an event stream line is over ${lineBytesMax} bytes`);
    }
  } catch (error) {
    if (isTwinstoreError(error)) throw error;
    throw new TwinstoreError('API_UNREACHABLE', `the event stream broke: ${(error as Error).message}`);
  }
}

function notice(json: boolean, what: string, retryMs: number): void {
  const at = new Date().toISOString();
  if (json) process.stdout.write(JSON.stringify({ unreachable: true, at, message: what, retryMs }) + '\n');
  else process.stdout.write(`${at} ${what}; asking again in ${retryMs / 1000} s\n`);
}

/** `AT TYPE key=value …` for people. */
function humanLine(event: StreamEvent): string {
  const fields = Object.entries(event.data)
    .filter(([, value]) => value !== null && typeof value !== 'object')
    .map(([key, value]) => `${key}=${String(value)}`);
  return `${event.at} ${event.type} ${fields.join(' ')}`.trimEnd();
}
