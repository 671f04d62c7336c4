// Who may call which API route, and the audit log of every changing call
// (docs/security.md). Each route's access is fixed when it is registered (an
// onRoute hook): `public` (no token: /metrics and the probes), `monitor`
// (any token: the reading routes) or `admin`. A route says so in its
// `config.access`; one that says nothing is `monitor` if it is a GET and
// `admin` otherwise, and a changing route (any method but GET and HEAD) that
// claims less than `admin` stops the array at start: a new changing route
// cannot open itself to monitor tokens by mistake.
//
// Every call with a method other than GET or HEAD, refused or not, gets one
// info line from the child logger `component: "audit"`: the caller's token name
// and role (none when the token was missing or wrong), method, route pattern,
// its parameters, the body's plain fields (any whose name suggests a secret is
// left out), and the answer's status and error code.

import type { FastifyInstance, FastifyRequest } from 'fastify';
import { TwinstoreError } from '../errors.js';
import type { Logger } from '../util/log.js';
import type { Caller, TokenStore } from './tokens.js';

export const ACCESS_LEVELS = ['public', 'monitor', 'admin'] as const;
export type Access = (typeof ACCESS_LEVELS)[number];

declare module 'fastify' {
  interface FastifyContextConfig {
    access?: Access;
  }
  interface FastifyRequest {
    caller: Caller | null;
    errorCode: string | null;
  }
}

export interface RouteAccess {
  method: string;
  url: string;
  access: Access;
}

const readMethods = new Set(['GET', 'HEAD']);
/** Body field names the audit line leaves out. */
const secretField = /token|secret|key|psk|password/i;
/** A body string longer than this is cut in the audit line. */
const auditValueCharsMax = 128;

export function isChanging(method: string): boolean {
  return !readMethods.has(method.toUpperCase());
}

/** The header that carries an injected request's one-call key (ApiServer.inject). */
export const INJECTED_HEADER = 'x-twinstore-injected';

/**
 * Registers the hooks; call before any route is added. `via` names who sent a request run here
 * on another's behalf (the peer array, a command device), else null. Returns the routes as they
 * are registered, with their access.
 */
export function guardRoutes(app: FastifyInstance, tokens: () => TokenStore, log: Logger, via: (request: FastifyRequest) => string | null): RouteAccess[] {
  const routes: RouteAccess[] = [];
  const audit = log.child({ component: 'audit' });
  app.decorateRequest('caller', null);
  app.decorateRequest('errorCode', null);
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    const changing = methods.some((m) => isChanging(m));
    const access: Access = route.config?.access ?? (changing ? 'admin' : 'monitor');
    if (changing && access !== 'admin') throw new TwinstoreError('INTERNAL', `assertion failed: changing route ${methods.join(',')} ${route.url} must be admin, not ${access}`);
    route.config = { ...route.config, access };
    for (const method of methods) routes.push({ method, url: route.url, access });
  });
  app.addHook('onRequest', async (request) => authorize(request, tokens()));
  app.addHook('onResponse', async (request, reply) => {
    if (!isChanging(request.method)) return;
    audit.info({
      token: request.caller?.name ?? null,
      role: request.caller?.role ?? null,
      via: via(request),
      method: request.method,
      route: request.routeOptions.url ?? request.url.split('?')[0],
      params: request.params,
      body: bodySummary(request.body),
      status: reply.statusCode,
      code: request.errorCode,
    }, 'audit');
  });
  return routes;
}

function authorize(request: FastifyRequest, tokens: TokenStore): void {
  // An unknown route still needs a token: its 404 tells nothing to a caller without one.
  const access = request.routeOptions.config?.access ?? 'monitor';
  if (access === 'public') return;
  const header = request.headers.authorization ?? '';
  // RFC 7235: the auth scheme is case-insensitive (`bearer`, `BEARER`), followed by one or more spaces.
  const match = /^bearer[ \t]+(.+)$/i.exec(header);
  const caller = match === null ? undefined : tokens.lookup(match[1]!);
  if (caller === undefined) throw new TwinstoreError('UNAUTHORIZED', 'missing or wrong API token (Authorization: Bearer <token>)');
  request.caller = caller;
  if (access === 'admin' && caller.role !== 'admin') {
    throw new TwinstoreError('FORBIDDEN', `token ${caller.name} has role ${caller.role}: ${request.method} ${request.routeOptions.url ?? request.url} needs an admin token`);
  }
}

/** The body's top-level plain fields, without any that may hold a secret. */
function bodySummary(body: unknown): Record<string, unknown> | undefined {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return undefined;
  const summary: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(body)) {
    if (secretField.test(key)) continue;
    if (typeof value === 'string') summary[key] = value.length > auditValueCharsMax ? `${value.slice(0, auditValueCharsMax)}…` : value;
    else if (typeof value === 'number' || typeof value === 'boolean' || value === null) summary[key] = value;
  }
  return summary;
}
