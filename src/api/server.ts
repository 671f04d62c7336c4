// The management API: HTTP + JSON under /v1/ (HTTPS with api.tls), bearer-token
// authenticated with roles and an audit line per changing call (access.ts,
// tokens.ts), and Prometheus metrics at /metrics and the probes /healthz and
// /readyz (no token: metrics-routes.ts and health-routes.ts say why). Its
// connections and request times are bounded (connection-bounds.ts). The HTTPS
// certificate is read by the loader NBD uses (util/tls-files.ts) and re-read
// by reloadTls() for new connections (SIGHUP, POST /v1/reload).
// Bodies are validated with zod and a bad one gets 400 naming the field; every
// error answers {"error": {"code", "message", "field"?}} with a code from the
// catalogue in errors.ts.

import crypto from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type tls from 'node:tls';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { z } from 'zod';
import { TwinstoreError, isTwinstoreError } from '../errors.js';
import type { Logger } from '../util/log.js';
import type { ApiTlsConfig } from '../config/index.js';
import { loadX509, type ReloadOutcome, type X509Options } from '../util/tls-files.js';
import { commandDeviceDefaultBytes } from '../array/command-device.js';
import { parseSize } from '../util/size.js';
import type { AlertJson } from '../array/alerts.js';
import type { HistoryJson } from '../array/history.js';
import type { VolumeIoStats } from '../nbd/index.js';
import { addReplicationRoutes, type ReplicationControl } from './replication-routes.js';
import { addMetricsRoutes } from './metrics-routes.js';
import { boundConnections, boundedServerOptions } from './connection-bounds.js';
import { addHealthRoutes } from './health-routes.js';
import { addEventRoutes, type EventFeed } from './event-routes.js';
import { addUiRoutes } from './ui-routes.js';
import { INJECTED_HEADER, guardRoutes, type RouteAccess } from './access.js';
import { addAdminRoutes } from './admin-routes.js';
import type { TokenStore } from './tokens.js';

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

export interface ApiServerOptions {
  tokens: TokenStore;
  /** HTTPS with these files; undefined serves plain HTTP (the config allows it only on loopback unless told). */
  tls: ApiTlsConfig | undefined;
  control: () => ArrayControl;
  replication: () => ReplicationControl;
  events: () => EventFeed;
  /** What SIGHUP does: re-read every part's TLS files (POST /v1/reload). */
  reload: () => ReloadOutcome[];
  log: Logger;
}

export class ApiServer {
  private readonly app: FastifyInstance;
  private readonly tokens: TokenStore;
  private readonly tls: ApiTlsConfig | undefined;
  private readonly log: Logger;
  /** Requests run here for the peer or a command device (inject), by their one-call key: who sent them. */
  private readonly injected = new Map<string, string>();
  /** Every route with its access (public, monitor or admin), as registered. */
  readonly routeAccess: RouteAccess[];

  constructor(options: ApiServerOptions) {
    this.tokens = options.tokens;
    this.tls = options.tls;
    this.log = options.log;
    const bounded = boundedServerOptions();
    const https = this.tls === undefined ? undefined : { ...loadApiTls(this.tls), ...bounded.http, handshakeTimeout: bounded.http.headersTimeout };
    // Fastify's types tie the instance to http or https at compile time; both serve the same routes here.
    this.app = Fastify({ logger: false, ...bounded, ...(https === undefined ? {} : { https }) } as Parameters<typeof Fastify>[0]) as unknown as FastifyInstance;
    boundConnections(this.app);
    this.routeAccess = guardRoutes(this.app, () => this.tokens, options.log, (request) => {
      const key = request.headers[INJECTED_HEADER];
      return typeof key === 'string' ? this.injected.get(key) ?? null : null;
    });
    this.app.setErrorHandler((error, request, reply) => {
      const failure = toTwinstoreError(error);
      request.errorCode = failure.code;
      return sendError(reply, failure, options.log);
    });
    this.app.setNotFoundHandler((request, reply) => {
      request.errorCode = 'NOT_FOUND';
      return sendError(reply, new TwinstoreError('NOT_FOUND', `no route ${request.method} ${request.url}`), options.log);
    });
    this.routes(options.control);
    addReplicationRoutes(this.app, options.replication);
    addMetricsRoutes(this.app, options.replication, options.control);
    addHealthRoutes(this.app, options.replication);
    addEventRoutes(this.app, options.events);
    addUiRoutes(this.app);
    addAdminRoutes(this.app, () => this.tokens, options.reload);
  }

  /** Runs a request forwarded by the peer array (already authenticated by the link) as if it came in here, as the first admin token. */
  async inject(method: string, url: string, body: unknown, via: string): Promise<{ status: number; json: unknown }> {
    // The audit line names who sent it: a key made for this one call, which no outside caller can know.
    const key = crypto.randomUUID();
    this.injected.set(key, via);
    const response = await this.app.inject({
      method: method as 'GET',
      url,
      headers: { authorization: `Bearer ${this.tokens.firstToken}`, [INJECTED_HEADER]: key },
      ...(body === undefined ? {} : { payload: body as object }),
    }).finally(() => this.injected.delete(key));
    let json: unknown;
    try {
      json = response.json();
    } catch {
      json = undefined;
    }
    return { status: response.statusCode, json };
  }

  /** `http` or `https`. */
  get scheme(): string {
    return this.tls === undefined ? 'http' : 'https';
  }

  /** Re-reads the HTTPS files for new connections; a file that does not load keeps the old ones (logged). */
  reloadTls(): ReloadOutcome {
    if (this.tls === undefined) return { part: 'api', state: 'off' };
    try {
      (this.app.server as unknown as tls.Server).setSecureContext(loadApiTls(this.tls));
    } catch (error) {
      const message = (error as Error).message;
      this.log.error({ err: message }, 'API TLS files not reloaded; new connections keep the previous ones');
      return { part: 'api', state: 'failed', error: message };
    }
    this.log.info({ certFile: this.tls.certFile }, 'API TLS files reloaded');
    return { part: 'api', state: 'reloaded' };
  }

  get fastify(): FastifyInstance {
    return this.app;
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

/** TLS 1.2 and 1.3 (curl, browsers and Node all speak both); no renegotiation (Node's https refuses it). */
function loadApiTls(files: ApiTlsConfig): X509Options & { minVersion: tls.SecureVersion } {
  return { ...loadX509({ certFile: files.certFile, keyFile: files.keyFile }, { cert: 'api.tls.certFile', key: 'api.tls.keyFile', ca: 'api.tls.caFile' }), minVersion: 'TLSv1.2' };
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
