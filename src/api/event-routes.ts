// GET /v1/events: the array's events as server-sent events (text/event-stream),
// written by hand on the raw response. A client first gets the snapshot (one
// event per group, pair, peer and volume) and `snapshot-end`, then every change
// as it is published on the bus, each with its id. A client that comes back
// with `Last-Event-ID` (header, or `?lastEventId=`) gets only the changes after
// it; when those are no longer kept (or the id is of another run of the array)
// it gets a `resynced` event and a fresh snapshot. `?now=1`: the snapshot, then
// the response ends.
//
// Bounds: a client that does not read falls behind in the socket's buffer;
// past clientBufferedBytesMax the server drops it (it may come back with its
// last id). A comment line every heartbeatMs keeps a quiet stream visibly
// alive. The connections themselves count against the API's connection bounds,
// and the token is needed as on every /v1 route.

import type { FastifyInstance } from 'fastify';
import type { ServerResponse } from 'node:http';
import type { ArrayEvent, EventBus } from '../events/bus.js';

export const EVENTS_PATH = '/v1/events';
/** Bytes queued to one client unsent; past it the client is dropped. */
export const clientBufferedBytesMax = 4 * 2 ** 20;
/** A comment line this often on a stream (no event in between or not). */
export const heartbeatMs = 15_000;

export interface EventFeed {
  bus: EventBus;
  snapshot(): ArrayEvent[];
}

export function addEventRoutes(app: FastifyInstance, feed: () => EventFeed): void {
  const open = new Set<ServerResponse>();
  app.addHook('preClose', async () => {
    for (const response of open) response.end();
  });
  app.get<{ Querystring: { now?: string; lastEventId?: string } }>(EVENTS_PATH, (request, reply) => {
    // Past the hijack no error reply can be sent: a failure here is a bug, and the stream is cut.
    reply.hijack();
    try {
      stream(request.headers['last-event-id'], request.query, reply.raw);
    } catch (error) {
      reply.raw.destroy(error as Error);
    }
  });

  function stream(lastEventId: string | string[] | undefined, query: { now?: string; lastEventId?: string }, response: ServerResponse): void {
    const source = feed();
    const bus = source.bus;
    const lastId = headerValue(lastEventId) ?? query.lastEventId;
    const now = query.now === '1' || query.now === 'true';
    response.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive' });
    // All in one tick: the backlog or snapshot and the subscription meet at the same id, nothing between.
    const missed = lastId === undefined ? undefined : bus.since(lastId);
    const first: ArrayEvent[] = missed ?? [
      ...(lastId === undefined ? [] : [{ id: bus.lastId, at: new Date().toISOString(), type: 'resynced', data: { lastEventId: lastId, reason: 'the events after that id are no longer kept (or it is of an earlier run): a fresh snapshot follows' } }]),
      ...source.snapshot(),
      { id: bus.lastId, at: new Date().toISOString(), type: 'snapshot-end', data: {} },
    ];
    const send = (event: ArrayEvent): void => {
      if (response.destroyed) return;
      response.write(frame(event));
      if (response.writableLength > clientBufferedBytesMax) response.destroy();
    };
    for (const event of first) send(event);
    if (now) {
      response.end();
      return;
    }
    open.add(response);
    const unsubscribe = bus.subscribe(send);
    const heartbeat = setInterval(() => {
      if (!response.destroyed) response.write(': heartbeat\n\n');
    }, heartbeatMs);
    response.once('close', () => {
      clearInterval(heartbeat);
      unsubscribe();
      open.delete(response);
    });
  }
}

/** One event in the SSE wire form; the data line is the whole event as JSON (one line). */
export function frame(event: ArrayEvent): string {
  return `id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
