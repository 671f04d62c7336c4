// The listening side of the link: accepts peer arrays over TLS-PSK, checks
// their HELLO, and answers their requests with the handler, many at a time and
// in whatever order the handler finishes.
//
// Back-pressure: a connection stops reading while REQUESTS_IN_FLIGHT_MAX of its
// requests are in the handler, or while more than SEND_BACKLOG_BYTES_MAX of
// answers wait in the socket for a peer that reads slowly; it reads again when
// both are below. A handshake that fails is logged once (warn, with the remote
// address) and the socket destroyed: the peer gets nothing.
//
// Holding the key is not enough: the identity a client authenticated as must be
// one of this array's peers (isPeer, asked at each connection, so a `peer add`
// counts at once) and never this array's own id. Such a client is refused after
// TLS, before any hello or handler: one warn line here, and in place of the
// hello one LINK_AUTH error frame telling its operator why.

import tls from 'node:tls';
import type { AddressInfo, Socket } from 'node:net';
import { ERROR_CODES, TwinstoreError, isTwinstoreError, type ErrorCode } from '../errors.js';
import type { Logger } from '../util/log.js';
import { CLOSE_GRACE_MS, FrameConnection } from './connection.js';
import { encodeFrame, type Frame } from './frame.js';
import { CONNECTION_ID, FRAME_TYPE, PROTOCOL_VERSION } from './protocol.js';
import { checkIdentity, describeHandshakeError, serverTlsOptions, type LinkIdentity } from './tls.js';
import type { LinkListener, LinkSocket, LinkTransport } from './transport.js';

export interface LinkRequest {
  method: string;
  /** JSON */
  body: unknown;
  /** Bulk bytes, may be empty. */
  payload: Buffer[];
}

export interface LinkResponse {
  body: unknown;
  payload: Buffer[];
  /** CRC32C of each payload segment: a sender gives the ones it holds (checked); a received answer has them all, checked. */
  payloadCrcs?: readonly number[];
}

/** Throw a TwinstoreError and the caller's request rejects with a TwinstoreError of the same code and message. */
export type LinkHandler = (peerId: string, request: LinkRequest) => Promise<LinkResponse>;

/** Requests of one connection inside the handler at once; past it the connection stops reading. */
export const REQUESTS_IN_FLIGHT_MAX = 64;
/** Answers waiting in one connection's socket; past it the connection stops reading. */
export const SEND_BACKLOG_BYTES_MAX = 64 * 2 ** 20;
export const CONNECTIONS_MAX = 64;
export const HEARTBEAT_MS_DEFAULT = 1000;

export interface LinkServerOptions {
  identity: LinkIdentity;
  handler: LinkHandler;
  /** Whether an array id is one of this array's peers; asked for each connection after TLS. Others are refused. */
  isPeer: (arrayId: string) => boolean;
  log: Logger;
  heartbeatMs?: number;
  /** Per connection; defaults to REQUESTS_IN_FLIGHT_MAX. */
  requestsInFlightMax?: number;
  /** How bytes travel (default: TLS-PSK over TCP); the simulator's in-process network in test/sim. */
  transport?: LinkTransport;
  /** A peer array passed HELLO on an inbound connection (the network between us works again). */
  onPeer?: (arrayId: string) => void;
}

export function remoteLabel(socket: { remoteAddress?: string | undefined; remotePort?: number | undefined }): string {
  return `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
}

export class LinkServer {
  private readonly server: tls.Server | undefined;
  private listener: LinkListener | undefined;
  private readonly sessions = new Set<InboundSession>();
  /** Every accepted TCP socket, handshaking or not, so close() can end them all. */
  private readonly sockets = new Set<Socket>();
  private readonly identities = new WeakMap<tls.TLSSocket, string>();
  private readonly heartbeatMs: number;
  private closing: Promise<void> | undefined;

  constructor(private readonly options: LinkServerOptions) {
    checkIdentity(options.identity);
    this.heartbeatMs = options.heartbeatMs ?? HEARTBEAT_MS_DEFAULT;
    if (options.transport !== undefined) return;
    const tlsOptions = serverTlsOptions({
      identity: options.identity,
      handshakeTimeoutMs: Math.max(3 * this.heartbeatMs, 1000),
      onIdentity: (socket, peerId) => this.identities.set(socket, peerId),
    });
    const server = tls.createServer(tlsOptions, (socket) => this.accept(socket, this.identities.get(socket) ?? ''));
    this.server = server;
    server.maxConnections = CONNECTIONS_MAX;
    server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    server.on('tlsClientError', (error, socket) => {
      const remote = remoteLabel(socket);
      if (this.closing === undefined) options.log.warn({ remote, code: (error as { code?: string }).code }, `link: refused ${remote}: TLS-PSK handshake failed: ${describeHandshakeError(error)}`);
      socket.destroy();
    });
  }

  async listen(host: string, port: number): Promise<AddressInfo> {
    const transport = this.options.transport;
    if (transport !== undefined) {
      this.listener = await transport.listen(host, port, this.options.identity, (socket, peerId) => this.accept(socket, peerId));
      return this.listener.address;
    }
    const server = this.server!;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port }, () => {
        server.off('error', reject);
        resolve(server.address() as AddressInfo);
      });
    });
  }

  /** Peers with an open connection that passed HELLO. */
  connectedPeers(): string[] {
    return [...this.sessions].flatMap((session) => (session.peerId === undefined ? [] : [session.peerId]));
  }

  /** Stops listening and closes every connection; requests in flight on the peers fail with LINK_DOWN. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      if (this.server !== undefined) this.server.close(() => resolve());
      else void (this.listener?.close() ?? Promise.resolve()).then(resolve);
      for (const session of this.sessions) session.connection.close('the array is closing its link listener', 'LINK_DOWN');
      for (const socket of this.sockets) socket.destroy();
    });
    return this.closing;
  }

  private accept(socket: LinkSocket, authenticatedAs: string): void {
    if (this.closing !== undefined) {
      socket.destroy();
      return;
    }
    const refusal = this.identityRefusal(authenticatedAs);
    if (refusal !== undefined) {
      this.refuse(socket, authenticatedAs, refusal);
      return;
    }
    const session = new InboundSession({
      socket,
      authenticatedAs,
      arrayId: this.options.identity.arrayId,
      heartbeatMs: this.heartbeatMs,
      handler: this.options.handler,
      log: this.options.log,
      requestsInFlightMax: this.options.requestsInFlightMax ?? REQUESTS_IN_FLIGHT_MAX,
      onClose: () => this.sessions.delete(session),
      ...(this.options.onPeer === undefined ? {} : { onPeer: this.options.onPeer }),
    });
    this.sessions.add(session);
  }

  /** Why a client that holds the key may still not use the link, or undefined when it may. */
  private identityRefusal(authenticatedAs: string): string | undefined {
    const own = this.options.identity.arrayId;
    if (authenticatedAs === own) return `it authenticated as "${own}", this array's own id`;
    if (!this.options.isPeer(authenticatedAs)) {
      return `array "${authenticatedAs}" is not a peer of ${own} (add it there first: twinstore peer add ${authenticatedAs} --link HOST:PORT)`;
    }
    return undefined;
  }

  /** One warn line here; the client gets one LINK_AUTH error frame in place of our hello, then the connection ends. */
  private refuse(socket: LinkSocket, authenticatedAs: string, refusal: string): void {
    const remote = remoteLabel(socket);
    this.options.log.warn({ remote, authenticatedAs }, `link: refused ${remote}: ${refusal}`);
    const message = `refused by ${this.options.identity.arrayId}: ${refusal}`;
    socket.on('error', () => undefined);
    for (const buffer of encodeFrame({ type: FRAME_TYPE.ERROR, requestId: CONNECTION_ID, error: { code: 'LINK_AUTH', message } })) socket.write(buffer);
    socket.end();
    setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
  }
}

interface InboundOptions {
  socket: LinkSocket;
  /** The PSK identity of the TLS handshake. */
  authenticatedAs: string;
  arrayId: string;
  heartbeatMs: number;
  handler: LinkHandler;
  log: Logger;
  requestsInFlightMax: number;
  onClose: () => void;
  onPeer?: (arrayId: string) => void;
}

/** One accepted connection: HELLO check, then requests to the handler. */
class InboundSession {
  readonly connection: FrameConnection;
  peerId: string | undefined;
  private readonly remote: string;
  private readonly inFlight = new Set<number>();

  constructor(private readonly options: InboundOptions) {
    this.remote = remoteLabel(options.socket);
    this.connection = new FrameConnection({
      socket: options.socket,
      log: options.log,
      label: `${options.authenticatedAs} at ${this.remote}`,
      hello: { protocolVersion: PROTOCOL_VERSION, arrayId: options.arrayId, heartbeatMs: options.heartbeatMs },
      onFrame: (frame) => this.onFrame(frame),
      onClose: (reason, code) => this.onClose(reason, code),
    });
    options.socket.on('drain', () => this.updateReading());
  }

  private onFrame(frame: Frame): void {
    switch (frame.type) {
      case FRAME_TYPE.HELLO:
        this.checkHello(frame.hello.arrayId, frame.hello.protocolVersion);
        return;
      case FRAME_TYPE.REQUEST:
        this.startRequest(frame);
        return;
      case FRAME_TYPE.ERROR:
        if (frame.requestId === CONNECTION_ID) {
          const code: ErrorCode = Object.hasOwn(ERROR_CODES, frame.error.code) ? (frame.error.code as ErrorCode) : 'LINK_PROTOCOL';
          this.connection.close(`the peer closed the link: ${frame.error.message}`, code);
          return;
        }
        break;
      default:
        break;
    }
    this.connection.protocolError(`unexpected frame of type ${frame.type} from a connecting array`);
  }

  private checkHello(arrayId: string, protocolVersion: number): void {
    const { authenticatedAs, log } = this.options;
    let refusal: string | undefined;
    if (protocolVersion !== PROTOCOL_VERSION) refusal = `it speaks link protocol ${protocolVersion}, this array ${PROTOCOL_VERSION}`;
    else if (arrayId !== authenticatedAs) refusal = `it says it is array "${arrayId}" but authenticated as "${authenticatedAs}"`;
    if (refusal !== undefined) {
      log.warn({ remote: this.remote, arrayId, authenticatedAs }, `link: refused ${this.remote}: ${refusal}`);
      this.connection.close(`refused by ${this.options.arrayId}: ${refusal}`, 'LINK_AUTH', { tellPeer: true });
      return;
    }
    this.peerId = arrayId;
    log.info({ peer: arrayId, remote: this.remote }, `link: peer ${arrayId} connected from ${this.remote}`);
    this.options.onPeer?.(arrayId);
  }

  private startRequest(frame: Extract<Frame, { type: typeof FRAME_TYPE.REQUEST }>): void {
    if (this.peerId === undefined) return; // refused at hello; the connection is closing
    if (this.inFlight.has(frame.requestId)) {
      this.connection.protocolError(`request id ${frame.requestId} is already in flight`);
      return;
    }
    this.inFlight.add(frame.requestId);
    this.updateReading();
    void this.answer(this.peerId, frame);
  }

  private async answer(peerId: string, frame: Extract<Frame, { type: typeof FRAME_TYPE.REQUEST }>): Promise<void> {
    let reply: Frame;
    try {
      const response = await this.options.handler(peerId, { method: frame.method, body: frame.body, payload: frame.payload });
      reply = {
        type: FRAME_TYPE.RESPONSE, requestId: frame.requestId, body: response.body ?? null, payload: response.payload,
        ...(response.payloadCrcs === undefined ? {} : { payloadCrcs: response.payloadCrcs }),
      };
    } catch (error) {
      reply = this.errorReply(frame, error);
    }
    this.inFlight.delete(frame.requestId);
    if (this.connection.isClosed) {
      this.options.log.debug({ peer: peerId, method: frame.method }, 'link: answer dropped, the connection is closed');
      return;
    }
    try {
      this.connection.send(reply);
    } catch (error) {
      this.connection.send(this.errorReply(frame, error));
    }
    this.updateReading();
  }

  private errorReply(frame: Extract<Frame, { type: typeof FRAME_TYPE.REQUEST }>, error: unknown): Frame {
    const known = isTwinstoreError(error);
    if (!known || error.code === 'INTERNAL') {
      this.options.log.error({ err: error, peer: this.peerId, method: frame.method }, `link: ${frame.method} from ${this.peerId} failed`);
    }
    const code: ErrorCode = known ? error.code : 'INTERNAL';
    const message = error instanceof Error ? error.message : String(error);
    return { type: FRAME_TYPE.ERROR, requestId: frame.requestId, error: { code, message } };
  }

  private updateReading(): void {
    const busy = this.inFlight.size >= this.options.requestsInFlightMax || this.connection.sendBacklogBytes > SEND_BACKLOG_BYTES_MAX;
    if (busy) this.connection.pauseReading();
    else this.connection.resumeReading();
  }

  private onClose(reason: string, code: ErrorCode): void {
    if (this.peerId !== undefined) {
      this.options.log.info({ peer: this.peerId, remote: this.remote, code }, `link: peer ${this.peerId} at ${this.remote} disconnected: ${reason}`);
    }
    this.options.onClose();
  }
}

/** The TwinstoreError a requester sees for an error frame: the same code, or LINK_PROTOCOL for a code unknown here. */
export function errorFromFrame(peerId: string, method: string, error: { code: string; message: string }): TwinstoreError {
  if (Object.hasOwn(ERROR_CODES, error.code)) return new TwinstoreError(error.code as ErrorCode, error.message);
  return new TwinstoreError('LINK_PROTOCOL', `${peerId} answered ${method} with error code ${error.code}, unknown to this array: ${error.message}`);
}
