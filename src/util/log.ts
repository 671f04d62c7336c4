// One structured logger (pino, JSON lines on stderr; stdout carries only the
// ready line). TWINSTORE_LOG_LEVEL sets the level (default info);
// TWINSTORE_LOG_FORMAT (or `serve --log-format`) `pretty` writes each line for a
// person at a terminal instead: time, level, message, then the fields as
// key=value. JSON stays the default, for log collectors. Both write
// synchronously, so the last lines before a crash are not lost.

import fs from 'node:fs';
import { pino, type Logger } from 'pino';

export type { Logger };

export const LOG_FORMATS = ['json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export function isLogFormat(value: string): value is LogFormat {
  return (LOG_FORMATS as readonly string[]).includes(value);
}

const levelNames: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
/** Fields every line has, shown in the line's head rather than as key=value. */
const headFields = new Set(['level', 'time', 'msg', 'pid', 'array']);

function fieldText(value: unknown): string {
  if (typeof value === 'string') return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
  return JSON.stringify(value) ?? String(value);
}

/** One pino JSON line as a person reads it: `2026-12-08T01:22:33.123Z INFO  site-a: message key=value …`. */
export function prettyLine(json: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  const time = typeof entry.time === 'number' ? new Date(entry.time).toISOString() : '-';
  const level = (levelNames[entry.level as number] ?? String(entry.level)).padEnd(5);
  const who = typeof entry.array === 'string' ? `${entry.array}: ` : '';
  const fields = Object.entries(entry).filter(([key]) => !headFields.has(key)).map(([key, value]) => `${key}=${fieldText(value)}`);
  return `${time} ${level} ${who}${String(entry.msg ?? '')}${fields.length > 0 ? `  ${fields.join(' ')}` : ''}\n`;
}

export function createLogger(bindings: Record<string, unknown> = {}): Logger {
  const options = { level: process.env.TWINSTORE_LOG_LEVEL ?? 'info', base: { pid: process.pid, ...bindings } };
  if (process.env.TWINSTORE_LOG_FORMAT === 'pretty') {
    return pino(options, { write: (line: string) => fs.writeSync(2, prettyLine(line)) });
  }
  return pino(options, pino.destination({ fd: 2, sync: true }));
}
