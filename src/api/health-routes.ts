// GET /healthz and GET /readyz, for a cluster manager, a load balancer or a
// person with curl: no token, like /metrics, because a probe carries none and
// the answers hold no secret (group names and why they wait).
//
// /healthz answers 200 while the process serves its API at all. /readyz answers
// 200 once every journal group persisted here is open and no sending group
// still holds host writes at start for its peer's epoch (start-hold.ts); before
// that 503 with {"ready": false, "error": {"code": "ARRAY_STARTING", ...},
// "reasons": [...]} naming each group that waits and why.

import type { FastifyInstance } from 'fastify';
import { ERROR_CODES } from '../errors.js';

export const HEALTH_PATH = '/healthz';
export const READY_PATH = '/readyz';

export interface ReadinessSource {
  /** Why the array is not ready, one line per group; empty when it is. */
  unready(): string[];
}

export function addHealthRoutes(app: FastifyInstance, source: () => ReadinessSource): void {
  app.get(HEALTH_PATH, { config: { access: 'public' } }, async () => ({ ok: true, pid: process.pid }));
  app.get(READY_PATH, { config: { access: 'public' } }, async (_request, reply) => {
    const reasons = source().unready();
    if (reasons.length === 0) return { ready: true };
    return reply.code(ERROR_CODES.ARRAY_STARTING.status).send({
      ready: false,
      error: { code: 'ARRAY_STARTING', message: reasons.join('; ') },
      reasons,
    });
  });
}
