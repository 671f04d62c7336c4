// One structured logger (pino, JSON lines on stderr; stdout carries only the
// ready line). TWINSTORE_LOG_LEVEL sets the level (default info).

import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(bindings: Record<string, unknown> = {}): Logger {
  return pino(
    { level: process.env.TWINSTORE_LOG_LEVEL ?? 'info', base: { pid: process.pid, ...bindings } },
    pino.destination({ fd: 2, sync: true }),
  );
}
