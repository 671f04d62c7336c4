// The bounds of the management API's HTTP server, so that idle, slow or many
// connections cannot hold its descriptors or stop it answering (a slowloris
// client, a script that leaks sockets). Each bound is named here, with units:
// how many connections in all and per client address, how long a request may
// take to arrive (its headers, then the whole of it), how long a connection may
// sit idle with no request in progress, and how big a body may be. A request in
// progress is never cut by the idle bound: a takeover or a swap's drain may
// answer after minutes of silence on its socket.

import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';

export const API_BOUNDS = {
  /** Connections open at once, in all (`server.maxConnections`); past it new ones are closed at once. */
  connectionsMax: 256,
  /** Connections open at once from one client address; past it new ones from there are closed at once. */
  connectionsPerAddressMax: 64,
  /** From a request's first byte until its headers are in (`headersTimeout`). */
  headersMs: 10_000,
  /** From a request's first byte until all of it, body included, is in (`requestTimeout`). */
  requestMs: 30_000,
  /** A connection with no request in progress and no byte in either way (`connectionTimeout`), first request included. */
  idleMs: 10_000,
  /** An idle keep-alive connection after a reply (`keepAliveTimeout`). */
  keepAliveMs: 5_000,
  /** Requests served on one connection before it is closed (`maxRequestsPerSocket`). */
  requestsPerSocketMax: 1000,
  /** The largest request body (`bodyLimit`). */
  bodyBytesMax: 2 ** 20,
  /** How often the server checks the header and request bounds (`connectionsCheckingInterval`). */
  checkIntervalMs: 1000,
} as const;

/** The fastify options that carry the bounds. */
export function boundedServerOptions(): {
  bodyLimit: number; connectionTimeout: number; keepAliveTimeout: number; requestTimeout: number; maxRequestsPerSocket: number;
  http: { headersTimeout: number; connectionsCheckingInterval: number };
} {
  return {
    bodyLimit: API_BOUNDS.bodyBytesMax,
    connectionTimeout: API_BOUNDS.idleMs,
    keepAliveTimeout: API_BOUNDS.keepAliveMs,
    requestTimeout: API_BOUNDS.requestMs,
    maxRequestsPerSocket: API_BOUNDS.requestsPerSocketMax,
    http: { headersTimeout: API_BOUNDS.headersMs, connectionsCheckingInterval: API_BOUNDS.checkIntervalMs },
  };
}

/**
 * The bounds fastify has no option for: the connection caps, and an idle timeout that spares a
 * connection whose request is still being answered (node would close any socket silent for
 * `connectionTimeout`; with a 'timeout' listener on the server it leaves the choice here).
 */
export function boundConnections(app: FastifyInstance): void {
  const server: Server = app.server;
  server.maxConnections = API_BOUNDS.connectionsMax;
  const perAddress = new Map<string, number>();
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? '';
    const open = perAddress.get(address) ?? 0;
    if (open >= API_BOUNDS.connectionsPerAddressMax) {
      socket.destroy();
      return;
    }
    perAddress.set(address, open + 1);
    socket.once('close', () => {
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left <= 0) perAddress.delete(address);
      else perAddress.set(address, left);
    });
  });
  const answering = new WeakMap<Socket, number>();
  app.addHook('onRequest', async (request) => {
    const socket = request.raw.socket;
    answering.set(socket, (answering.get(socket) ?? 0) + 1);
  });
  app.addHook('onResponse', async (request) => {
    const socket = request.raw.socket;
    answering.set(socket, Math.max(0, (answering.get(socket) ?? 1) - 1));
  });
  server.on('timeout', (socket: Socket) => {
    if ((answering.get(socket) ?? 0) === 0) socket.destroy();
  });
}
