// API routes for the API's own administration: tokens (made, listed and
// revoked while the array runs; tokens.ts keeps them) and POST /v1/reload,
// which does what SIGHUP does (re-reads the TLS files of NBD and the API) and
// says what it reloaded. A part whose files do not load keeps the ones it has,
// and the answer is CONFIG_INVALID naming the part and the file.

import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { TwinstoreError } from '../errors.js';
import { parseBody } from './replication-routes.js';
import { ROLES, type TokenStore } from './tokens.js';
import type { ReloadOutcome } from '../util/tls-files.js';

const createTokenSchema = z.strictObject({ name: z.string().min(1), role: z.enum(ROLES) });

export function addAdminRoutes(app: FastifyInstance, tokens: () => TokenStore, reload: () => ReloadOutcome[]): void {
  // Token names and roles are for admins: a monitor token learns nothing of the others.
  app.get('/v1/tokens', { config: { access: 'admin' } }, async () => ({ tokens: tokens().list() }));
  app.post('/v1/tokens', async (request, reply) => {
    const body = parseBody(createTokenSchema, request.body);
    return reply.code(201).send(tokens().create(body.name, body.role));
  });
  app.delete<{ Params: { name: string } }>('/v1/tokens/:name', async (request) => {
    tokens().revoke(request.params.name);
    return { revoked: request.params.name };
  });
  app.post('/v1/reload', async () => {
    const outcomes = reload();
    const failed = outcomes.filter((o) => o.state === 'failed');
    if (failed.length > 0) {
      const summary = outcomes.map((o) => `${o.part}: ${o.state === 'failed' ? `${o.error}; the previous files stay in use` : o.state}`).join('; ');
      throw new TwinstoreError('CONFIG_INVALID', summary);
    }
    return { reloaded: outcomes };
  });
}
