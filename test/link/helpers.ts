// Shared pieces of the link tests: a logger that keeps its lines, a link pair
// closed in t.after, frames built byte by byte from docs/link-protocol.md (not
// with src/link's encoder), a raw TLS-PSK client, and a TCP proxy that can cut or
// stall every connection through it.

import net from 'node:net';
import tls from 'node:tls';
import { crc32c } from '@node-rs/crc32';
import { pino } from 'pino';
import type { TestContext } from 'node:test';
import { LinkServer, PeerLink, type LinkHandler, type LinkIdentity, type PeerLinkOptions } from '../../src/link/index.js';
import type { Logger } from '../../src/util/log.js';

export const HOST = '127.0.0.1';
export const KEY_A = Buffer.alloc(32, 0xa1);
export const KEY_B = Buffer.alloc(32, 0xb2);

export interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

export const WARN = 40;

export function captureLog(): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = pino({ level: 'debug' }, { write: (text: string) => lines.push(JSON.parse(text) as LogLine) });
  return { log, lines };
}

export function identity(arrayId: string, psk: Buffer = KEY_A): LinkIdentity {
  return { arrayId, psk };
}

/** The peers a test's LinkServer serves (its isPeer option): the ids the link tests dial it with. */
export function peersOf(...ids: string[]): (arrayId: string) => boolean {
  return (arrayId) => ids.includes(arrayId);
}

/** Every id the link tests' clients use for a server 'site-b' (raw clients among them). */
export const TEST_PEERS = peersOf('site-a', 'site-y', 'site-z');

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function waitFor(what: string, predicate: () => boolean, timeoutMs = 5000): Promise<void> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(5);
  }
}

export function once(emitter: { once(event: string, listener: (...args: never[]) => void): unknown }, event: string, timeoutMs = 5000): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${event}' within ${timeoutMs} ms`)), timeoutMs);
    emitter.once(event, (...args: never[]) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

export const echoHandler: LinkHandler = async (peerId, request) => ({ body: { peerId, method: request.method, body: request.body }, payload: request.payload });

/** A listening server ('site-b') and a started PeerLink from 'site-a', both closed in t.after. */
export async function startPair(t: TestContext, options: {
  handler?: LinkHandler;
  serverHeartbeatMs?: number;
  requestsInFlightMax?: number;
  serverIdentityPsk?: Buffer;
  peer?: Partial<PeerLinkOptions>;
} = {}): Promise<{ server: LinkServer; peer: PeerLink; port: number; serverLog: LogLine[]; peerLog: LogLine[] }> {
  const serverLogs = captureLog();
  const peerLogs = captureLog();
  const server = new LinkServer({
    identity: identity('site-b', options.serverIdentityPsk),
    handler: options.handler ?? echoHandler,
    isPeer: TEST_PEERS,
    log: serverLogs.log,
    ...(options.serverHeartbeatMs === undefined ? {} : { heartbeatMs: options.serverHeartbeatMs }),
    ...(options.requestsInFlightMax === undefined ? {} : { requestsInFlightMax: options.requestsInFlightMax }),
  });
  t.after(() => server.close());
  const { port } = await server.listen(HOST, 0);
  const peer = new PeerLink({ identity: identity('site-a'), peerId: 'site-b', address: { host: HOST, port }, log: peerLogs.log, ...options.peer });
  t.after(() => peer.close());
  const up = once(peer, 'up');
  peer.start();
  await up;
  return { server, peer, port, serverLog: serverLogs.lines, peerLog: peerLogs.lines };
}

// ---------------------------------------------------------------------------
// Frames built by hand from the layout in docs/link-protocol.md.

export const TYPE = { hello: 1, request: 2, response: 3, error: 4, ping: 5, pong: 6 } as const;
/** The link protocol version of docs/link-protocol.md (written out: a change to it must be a deliberate one). */
export const LINK_VERSION = 2;

export interface RawFrame {
  type: number;
  requestId?: number;
  json?: unknown;
  segments?: Buffer[];
  magic?: number;
  version?: number;
  /** Overrides of header fields, written before the checksums are computed. */
  bodyBytes?: number;
  payloadBytes?: number;
  /** Flip a bit of the data checksum (segment table + JSON), of the header checksum, or of segment N's checksum in the table. */
  breakDataCrc?: boolean;
  breakHeaderCrc?: boolean;
  breakSegmentCrc?: number;
  /** Raw JSON bytes instead of `json`. */
  jsonBytes?: Buffer;
}

export function rawFrame(frame: RawFrame): Buffer {
  const segments = frame.segments ?? [];
  const body = frame.jsonBytes ?? (frame.json === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(frame.json), 'utf8'));
  const table = Buffer.alloc(8 * segments.length);
  segments.forEach((segment, i) => {
    table.writeUInt32BE(segment.length, 8 * i);
    table.writeUInt32BE((crc32c(segment) ^ (frame.breakSegmentCrc === i ? 1 : 0)) >>> 0, 8 * i + 4);
  });
  const checked = Buffer.concat([table, body]);
  const header = Buffer.alloc(32);
  const id = BigInt(frame.requestId ?? 0);
  header.writeUInt32BE(frame.magic ?? 0x544c4e4b, 0);
  header.writeUInt8(frame.version ?? LINK_VERSION, 4);
  header.writeUInt8(frame.type, 5);
  header.writeUInt16BE(segments.length, 6);
  header.writeBigUInt64BE(id, 8);
  header.writeUInt32BE(frame.bodyBytes ?? body.length, 16);
  header.writeUInt32BE(frame.payloadBytes ?? segments.reduce((sum, s) => sum + s.length, 0), 20);
  header.writeUInt32BE((crc32c(checked) ^ (frame.breakDataCrc === true ? 1 : 0)) >>> 0, 24);
  header.writeUInt32BE((crc32c(header.subarray(0, 28)) ^ (frame.breakHeaderCrc === true ? 1 : 0)) >>> 0, 28);
  return Buffer.concat([header, checked, ...segments]);
}

export function rawHello(arrayId: string, heartbeatMs = 1000): Buffer {
  return rawFrame({ type: TYPE.hello, json: { protocolVersion: LINK_VERSION, arrayId, heartbeatMs } });
}

export function rawRequest(requestId: number, method: string, body: unknown, segments: Buffer[] = []): Buffer {
  return rawFrame({ type: TYPE.request, requestId, json: { method, body }, segments });
}

/** A TLS-PSK client that speaks no link protocol of its own: it collects what it receives. */
export async function rawTlsClient(t: TestContext, port: number, options: { arrayId: string; psk?: Buffer }): Promise<{ socket: tls.TLSSocket; received: () => Buffer; closed: Promise<void> }> {
  const chunks: Buffer[] = [];
  const socket = tls.connect({
    host: HOST,
    port,
    minVersion: 'TLSv1.2',
    maxVersion: 'TLSv1.2',
    ciphers: 'DHE-PSK-AES256-GCM-SHA384',
    checkServerIdentity: () => undefined,
    pskCallback: () => ({ psk: options.psk ?? KEY_A, identity: options.arrayId }),
  });
  t.after(() => socket.destroy());
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await once(socket, 'secureConnect');
  return { socket, received: () => Buffer.concat(chunks), closed };
}

/** Reads the frame types out of a byte stream built from whole frames (header fields only, no checks). */
export function frameTypes(stream: Buffer): Array<{ type: number; requestId: number; json: unknown }> {
  const frames: Array<{ type: number; requestId: number; json: unknown }> = [];
  let at = 0;
  while (at + 32 <= stream.length) {
    const segments = stream.readUInt16BE(at + 6);
    const bodyBytes = stream.readUInt32BE(at + 16);
    const payloadBytes = stream.readUInt32BE(at + 20);
    const bodyAt = at + 32 + 8 * segments;
    if (bodyAt + bodyBytes + payloadBytes > stream.length) break;
    const json = bodyBytes === 0 ? undefined : JSON.parse(stream.subarray(bodyAt, bodyAt + bodyBytes).toString('utf8'));
    frames.push({ type: stream.readUInt8(at + 5), requestId: Number(stream.readBigUInt64BE(at + 8)), json });
    at = bodyAt + bodyBytes + payloadBytes;
  }
  return frames;
}

// ---------------------------------------------------------------------------
// A TCP proxy standing in for the network between two arrays.

export interface Proxy {
  port: number;
  /** Destroys every connection through the proxy (both ends get a reset). */
  cut(): void;
  /** Stops forwarding in both directions and passes on no close: the peer seems to hang. */
  stall(): void;
  resume(): void;
  connections(): number;
}

export async function startProxy(t: TestContext, targetPort: number): Promise<Proxy> {
  const pairs = new Set<[net.Socket, net.Socket]>();
  let stalled = false;
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, HOST);
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    const forward = (from: net.Socket, to: net.Socket): void => {
      from.on('data', (chunk: Buffer) => {
        if (!stalled) to.write(chunk);
      });
    };
    forward(client, upstream);
    forward(upstream, client);
    // While stalled, a close on one side is not passed on either: the other
    // side sees a network that swallows everything.
    const end = (): void => {
      if (stalled && !(client.destroyed && upstream.destroyed)) return;
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    for (const socket of pair) {
      socket.on('error', () => undefined);
      socket.on('close', end);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const port = (server.address() as net.AddressInfo).port;
  const proxy: Proxy = {
    port,
    cut: () => {
      for (const pair of pairs) {
        for (const socket of pair) socket.resetAndDestroy();
        pairs.delete(pair);
      }
    },
    stall: () => {
      stalled = true;
    },
    resume: () => {
      stalled = false;
    },
    connections: () => pairs.size,
  };
  t.after(() => {
    proxy.cut();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return proxy;
}
