// API routes for replication: peers, journals, pairs (docs/architecture.md §7, §8).
// Bodies are validated here and a bad one gets 400 naming the field, like the
// volume routes.

import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { TwinstoreError } from '../errors.js';
import type { GroupStats } from '../replication/index.js';
import { parseSize } from '../util/size.js';

export interface ReplicationControl {
  listPeers(): Array<{ id: string; link: string; connected: boolean }>;
  addPeer(id: string, link: string): Promise<{ id: string; link: string }>;
  /** Refused while a group or a remote command device uses the peer (PEER_IN_USE). */
  removePeer(id: string): Promise<{ deleted: string }>;
  createJournal(name: string, sizeBytes: number): Promise<Record<string, unknown>>;
  showJournal(name: string): Record<string, unknown>;
  listJournals(): Array<Record<string, unknown>>;
  /** Refused for a journal a group uses (VOLUME_IN_USE). */
  deleteJournal(name: string): Promise<{ deleted: string }>;
  createPair(body: {
    group: string; pvol: string; svol: string; journal: string; remoteJournal: string; overflow?: 'suspend' | 'throttle' | undefined; copyPaceBytesPerSecond?: number | undefined;
    fence?: 'never' | 'data' | undefined; fenceAfterMs?: number | undefined;
  }): Promise<unknown>;
  displayPairs(group: string | undefined): Promise<unknown[]>;
  setRestorePaused(group: string, paused: boolean): Promise<{ group: string; paused: boolean }>;
  deleteGroup(group: string, force: boolean): Promise<{ deleted: string }>;
  splitPair(group: string, rw: boolean): Promise<unknown>;
  /** `forwarded`: sent by the peer array (a forwarded command is never forwarded again). */
  resyncPair(group: string, swap: boolean, discard: string | null, forwarded: boolean): Promise<unknown>;
  takeover(group: string, force: boolean): Promise<unknown>;
  /** Read-only journal numbers per group, for /metrics. */
  groupStats(): GroupStats[];
  /** Why the array is not ready yet (GET /readyz); empty when it is. */
  unready(): string[];
}

const peerSchema = z.strictObject({ id: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be an array id'), link: z.string().regex(/^[^\s:]+:\d{1,5}$|^\[[^\]]+\]:\d{1,5}$/, 'must be HOST:PORT') });
const journalSchema = z.strictObject({ name: z.string(), size: z.union([z.string(), z.number()]) });
const pairSchema = z.strictObject({
  group: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'must be 1-64 of A-Z a-z 0-9 . _ -'),
  pvol: z.string().min(1),
  svol: z.string().min(1),
  journal: z.string().min(1),
  remoteJournal: z.string().min(1),
  overflow: z.enum(['suspend', 'throttle']).optional(),
  copyPace: z.union([z.string(), z.number()]).optional(),
  fence: z.enum(['never', 'data']).optional(),
  fenceAfterMs: z.number().int().min(100).max(3_600_000).optional(),
});

export function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const result = schema.safeParse(body ?? {});
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const field = issue.code === 'unrecognized_keys' ? issue.keys[0] ?? '' : issue.path.join('.');
  const message = issue.code === 'unrecognized_keys' ? 'unknown field' : issue.message;
  throw new TwinstoreError('BAD_REQUEST', `${field || 'body'}: ${message}`, { field: field || 'body' });
}

function sizeField(value: string | number, field: string): number {
  const bytes = parseSize(value);
  if (bytes === undefined) throw new TwinstoreError('BAD_REQUEST', `${field}: "${value}" is not a size`, { field });
  return bytes;
}

export function addReplicationRoutes(app: FastifyInstance, control: () => ReplicationControl): void {
  app.get('/v1/peers', async () => ({ peers: control().listPeers() }));
  app.post('/v1/peers', async (request, reply) => {
    const body = parseBody(peerSchema, request.body);
    return reply.code(201).send(await control().addPeer(body.id, body.link));
  });
  app.delete<{ Params: { id: string } }>('/v1/peers/:id', async (request) => control().removePeer(request.params.id));
  app.get('/v1/journals', async () => ({ journals: control().listJournals() }));
  app.delete<{ Params: { name: string } }>('/v1/journals/:name', async (request) => control().deleteJournal(request.params.name));
  app.post('/v1/journals', async (request, reply) => {
    const body = parseBody(journalSchema, request.body);
    return reply.code(201).send(await control().createJournal(body.name, sizeField(body.size, 'size')));
  });
  app.get<{ Params: { name: string } }>('/v1/journals/:name', async (request) => control().showJournal(request.params.name));
  app.post('/v1/pairs', async (request, reply) => {
    const body = parseBody(pairSchema, request.body);
    const copyPaceBytesPerSecond = body.copyPace === undefined ? undefined : sizeField(body.copyPace, 'copyPace');
    const pairs = await control().createPair({ ...body, copyPaceBytesPerSecond });
    return reply.code(201).send({ pairs });
  });
  app.get<{ Querystring: { group?: string } }>('/v1/pairs', async (request) => ({ pairs: await control().displayPairs(request.query.group) }));
  app.post('/v1/pairs/restore', async (request) => {
    const body = parseBody(z.strictObject({ group: z.string().min(1), paused: z.boolean() }), request.body);
    return control().setRestorePaused(body.group, body.paused);
  });
  app.post('/v1/pairs/split', async (request) => {
    const body = parseBody(z.strictObject({ group: z.string().min(1), rw: z.boolean().default(false) }), request.body);
    return control().splitPair(body.group, body.rw);
  });
  app.post('/v1/pairs/resync', async (request) => {
    const body = parseBody(z.strictObject({
      group: z.string().min(1), swap: z.boolean().default(false), discard: z.string().min(1).nullable().default(null), forwarded: z.boolean().default(false),
    }), request.body);
    return control().resyncPair(body.group, body.swap, body.discard, body.forwarded);
  });
  app.post('/v1/takeover', async (request) => {
    const body = parseBody(z.strictObject({ group: z.string().min(1), force: z.boolean().default(false) }), request.body);
    return control().takeover(body.group, body.force);
  });
  app.delete<{ Params: { group: string }; Querystring: { force?: string } }>('/v1/groups/:group', async (request) => {
    const force = request.query.force === 'true' || request.query.force === '1';
    return control().deleteGroup(request.params.group, force);
  });
}
