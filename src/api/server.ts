// The management API: HTTP + JSON under /v1/, bearer-token authenticated, and
// Prometheus metrics at /metrics and the probes /healthz and /readyz (no token:
// metrics-routes.ts and health-routes.ts say why). Its
// connections and request times are bounded (connection-bounds.ts).
// Bodies are validated with zod and a bad one gets 400 naming the field; every
// error answers {"error": {"code", "message", "field"?}} with a code from the
// catalogue in errors.ts.

import crypto from 'node:crypto';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { z } from 'zod';
import { TwinstoreError, assert, isTwinstoreError } from '../errors.js';
import type { Logger } from '../util/log.js';
import { commandDeviceDefaultBytes } from '../array/command-device.js';
import { parseSize } from '../util/size.js';
import type { AlertJson } from '../array/alerts.js';
import type { HistoryJson } from '../array/history.js';
import type { VolumeIoStats } from '../nbd/index.js';
import { addReplicationRoutes, type ReplicationControl } from './replication-routes.js';
import { METRICS_PATH, addMetricsRoutes } from './metrics-routes.js';
import { boundConnections, boundedServerOptions } from './connection-bounds.js';
import { HEALTH_PATH, READY_PATH, addHealthRoutes } from './health-routes.js';
import { addEventRoutes, type EventFeed } from './event-routes.js';
import { UI_ROUTES, addUiRoutes } from './ui-routes.js';

export interface VolumeJson {
  name: string;
  lun: number;
  sizeBytes: number;
  allocatedBytes: number;
  role: string;
  readOnly: boolean;
  /** Why host writes are refused now (a FENCED or swapping P-VOL, fence data), else null; readOnly is the export's flag. */
  writesRefused: string | null;
  exported: boolean;
  nbdUri: string | null;
  sessions: number;
  createdAt: string;
}

export interface StatusJson {
  array: string;
  version: string;
  pid: number;
  uptimeSeconds: number;
  nbd: string;
  api: string;
  volumes: number;
  extentBytes: number;
  capacityBytes: number;
  freeBytes: number;
  allocatedBytes: number;
  provisionedBytes: number;
  /** True once a drive or the metadata failed a sync: every FLUSH fails (EIO) until the array is restarted. */
  syncFailed: boolean;
  /** capacityBytes: the drive's extents (its size less the metadata reserve); freeBytes: those not allocated. */
  /** The group alerts firing now (docs/api.md#alerts). */
  alerts: AlertJson[];
  drives: Array<{ id: string; use: 'data' | 'journal'; sizeBytes: number; capacityBytes: number; freeBytes: number } & SyncStateJson>;
  metadata: SyncStateJson;
}

/** A drive's or the metadata's syncs since the array started (docs/api.md). */
export interface SyncStateJson {
  path: string;
  syncFailures: number;
  syncFailedAt: string | null;
  syncError: string | null;
}

export interface CreateVolumeBody {
  name: string;
  sizeBytes: number;
  lun: number | undefined;
  /** A command device (request block at 0, reply at 4096; docs/command-device.md). */
  commandDevice?: boolean;
  /** For a command device: forward its requests to this peer array. */
  remote?: string | undefined;
}

export interface ArrayControl {
  status(): StatusJson;
  listVolumes(): VolumeJson[];
  getVolume(ref: string): Promise<VolumeJson>;
  createVolume(body: CreateVolumeBody): Promise<VolumeJson>;
  deleteVolume(ref: string, force: boolean): Promise<void>;
  /** Each volume's NBD request counts, for /metrics. */
  ioStats(): ReadonlyMap<string, VolumeIoStats>;
  /** The last hour of lag, journal use and host I/O (GET /v1/history). */
  historyJson(): HistoryJson;
}

const createVolumeSchema = z.strictObject({
  name: z.string(),
  size: z.union([z.string(), z.number()]).optional(),
  lun: z.number().int().min(0).optional(),
  commandDevice: z.boolean().optional(),
  remote: z.string().min(1).optional(),
});

export class ApiServer {
  private readonly app: FastifyInstance;
  private readonly token: Buffer;

  constructor(options: { token: string; control: () => ArrayControl; replication: () => ReplicationControl; events: () => EventFeed; log: Logger }) {
    assert(options.token.length > 0, 'the API token is not empty');
    this.token = Buffer.from(options.token, 'utf8');
    this.app = Fastify({ logger: false, ...boundedServerOptions() });
    boundConnections(this.app);
    this.app.addHook('onRequest', async (request) => this.authenticate(request));
    this.app.setErrorHandler((error, _request, reply) => sendError(reply, toTwinstoreError(error), options.log));
    this.app.setNotFoundHandler((request, reply) => sendError(reply, new TwinstoreError('NOT_FOUND', `no route ${request.method} ${request.url}`), options.log));
    this.routes(options.control);
    addReplicationRoutes(this.app, options.replication);
    addMetricsRoutes(this.app, options.replication, options.control);
    addHealthRoutes(this.app, options.replication);
    addEventRoutes(this.app, options.events);
    addUiRoutes(this.app);
  }

  /** Runs a request forwarded by the peer array (already authenticated by the link) as if it came in here. */
  async inject(method: string, url: string, body: unknown): Promise<{ status: number; json: unknown }> {
    const response = await this.app.inject({
      method: method as 'GET',
      url,
      headers: { authorization: `Bearer ${this.token.toString('utf8')}` },
      ...(body === undefined ? {} : { payload: body as object }),
    });
    let json: unknown;
    try {
      json = response.json();
    } catch {
      json = undefined;
    }
    return { status: response.statusCode, json };
  }

  get fastify(): FastifyInstance {
    return this.app;
  }

  private authenticate(request: FastifyRequest): void {
    // Prometheus scrapes without a token; /metrics shows no secrets (metrics-routes.ts).
    // Probes carry no token either; /healthz and /readyz show no secrets (health-routes.ts).
    const route = request.routeOptions.url;
    // The dashboard's files hold no data; its calls to /v1 carry the token (ui-routes.ts).
    if (route === METRICS_PATH || route === HEALTH_PATH || route === READY_PATH || (route !== undefined && UI_ROUTES.has(route))) return;
    const header = request.headers.authorization ?? '';
    // RFC 7235: the auth scheme is case-insensitive (`bearer`, `BEARER`), followed by one or more spaces.
    const match = /^bearer[ \t]+(.+)$/i.exec(header);
    const given = Buffer.from(match?.[1] ?? '', 'utf8');
    if (given.length !== this.token.length || !crypto.timingSafeEqual(given, this.token)) {
      throw new TwinstoreError('UNAUTHORIZED', 'missing or wrong API token (Authorization: Bearer <token>)');
    }
  }

  private routes(control: () => ArrayControl): void {
    const app = this.app;
    app.get('/v1/status', async () => control().status());
    app.get('/v1/volumes', async () => ({ volumes: control().listVolumes() }));
    app.get('/v1/history', async () => control().historyJson());
    app.get<{ Params: { name: string } }>('/v1/volumes/:name', async (request) => control().getVolume(request.params.name));
    app.post('/v1/volumes', async (request, reply) => {
      const volume = await control().createVolume(parseCreateVolume(request.body));
      return reply.code(201).send(volume);
    });
    app.delete<{ Params: { name: string }; Querystring: { force?: string } }>('/v1/volumes/:name', async (request) => {
      const force = request.query.force === 'true' || request.query.force === '1';
      await control().deleteVolume(request.params.name, force);
      return { deleted: request.params.name };
    });
  }

  async listen(host: string, port: number): Promise<AddressInfo> {
    await this.app.listen({ host, port });
    return this.app.server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    await this.app.close();
  }
}

function parseCreateVolume(body: unknown): CreateVolumeBody {
  const result = createVolumeSchema.safeParse(body ?? {});
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const field = issue.code === 'unrecognized_keys' ? issue.keys[0] ?? '' : issue.path.join('.');
    const message = issue.code === 'unrecognized_keys' ? 'unknown field' : issue.message;
    throw new TwinstoreError('BAD_REQUEST', `${field || 'body'}: ${message}`, { field: field || 'body' });
  }
  const { size, commandDevice, remote } = result.data;
  if (size === undefined && commandDevice !== true) throw new TwinstoreError('BAD_REQUEST', 'size: required', { field: 'size' });
  const sizeBytes = size === undefined ? commandDeviceDefaultBytes : parseSize(size);
  if (sizeBytes === undefined) {
    throw new TwinstoreError('BAD_REQUEST', `size: "${size}" is not a size (e.g. 10GiB or a number of bytes)`, { field: 'size' });
  }
  return { name: result.data.name, sizeBytes, lun: result.data.lun, ...(commandDevice === true ? { commandDevice: true } : {}), ...(remote === undefined ? {} : { remote }) };
}

function toTwinstoreError(error: unknown): TwinstoreError {
  if (isTwinstoreError(error)) return error;
  const statusCode = (error as { statusCode?: number }).statusCode;
  const message = error instanceof Error ? error.message : String(error);
  if (statusCode !== undefined && statusCode >= 400 && statusCode < 500) {
    return new TwinstoreError('BAD_REQUEST', `body: ${message}`, { field: 'body' });
  }
  return new TwinstoreError('INTERNAL', message, { cause: error });
}

function sendError(reply: FastifyReply, error: TwinstoreError, log: Logger): FastifyReply {
  if (error.status >= 500) log.error({ code: error.code, err: error.message }, 'API request failed');
  return reply.code(error.status).send({ error: error.toJSON() });
}
