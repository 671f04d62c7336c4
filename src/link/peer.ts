// The connecting side of the link: one PeerLink per peer array. It connects
// over TLS-PSK, checks the peer's HELLO, then carries pipelined requests, each
// answered by id in any order. It reconnects forever (capped exponential
// back-off with seeded jitter) until close().
//
// States: idle → connecting ⇄ up → closed. Every connection attempt has a
// generation number; callbacks of an older attempt are ignored, so a late event
// from a dead socket never touches the current one. 'up' is emitted when a
// connection passes HELLO; 'down' (reason, code) once for each 'up', when that
// connection ends, or at close(). Requests in flight when it ends reject with
// LINK_DOWN; request() while not up rejects at once with LINK_DOWN.
//
// At most requestsInFlightMax requests are on the wire at once; later ones wait
// here in order. Every frame is encoded when request() is called, so a frame
// over the limits is refused at once, and its payload buffers are the caller's
// own (not copied): do not change them until the request settles.

import { EventEmitter } from 'node:events';
import tls from 'node:tls';
import { crc32c } from '@node-rs/crc32';
import { ERROR_CODES, TwinstoreError, assert, type ErrorCode } from '../errors.js';
import type { Logger } from '../util/log.js';
import { Backoff } from './backoff.js';
import { FrameConnection } from './connection.js';
import { encodeFrame, type Frame } from './frame.js';
import { CONNECTION_ID, FRAME_TYPE, PROTOCOL_VERSION, REQUEST_ID_MAX, type HelloBody } from './protocol.js';
import { HEARTBEAT_MS_DEFAULT, errorFromFrame, type LinkResponse } from './server.js';
import { checkIdentity, clientTlsOptions, describeHandshakeError, type LinkIdentity } from './tls.js';
import type { LinkSocket, LinkTransport } from './transport.js';

export interface LinkAddress {
  host: string;
  port: number;
}

export interface PeerLinkOptions {
  identity: LinkIdentity;
  peerId: string;
  address: LinkAddress;
  log: Logger;
  /** Ping when idle this often; a connection silent for 3× is closed. Default 1000. */
  heartbeatMs?: number;
  /** Reconnect delays: from backoffMsMin (default 100), doubling to backoffMsMax (default 5000), with jitter. */
  backoffMsMin?: number;
  backoffMsMax?: number;
  /** Default timeout of request() (default 30000); LINK_TIMEOUT past it. */
  requestTimeoutMs?: number;
  /** Seeds the back-off jitter (default: a hash of both array ids). */
  seed?: number;
  /** Requests on the wire at once (default 1024); later ones wait in order. */
  requestsInFlightMax?: number;
  /** How bytes travel (default: TLS-PSK over TCP); the simulator's in-process network in test/sim. */
  transport?: LinkTransport;
}

export interface RequestOptions {
  /** Overrides requestTimeoutMs for this request. */
  timeoutMs?: number;
}

export interface PeerLinkEvents {
  up: [];
  down: [reason: string, code: ErrorCode];
  /** A reconnect is scheduled in delayMs. */
  retry: [delayMs: number];
}

export const REQUEST_TIMEOUT_MS_DEFAULT = 30_000;
export const CLIENT_REQUESTS_IN_FLIGHT_MAX = 1024;

type State = 'idle' | 'connecting' | 'up' | 'closed';

interface Attempt {
  generation: number;
  address: LinkAddress;
  socket: LinkSocket;
  connection: FrameConnection | undefined;
  /** The listening array's PSK identity hint. */
  hint: string | null | undefined;
  deadline: NodeJS.Timeout;
}

interface Pending {
  id: number;
  method: string;
  buffers: Buffer[];
  timeoutMs: number;
  timer: NodeJS.Timeout | undefined;
  resolve: (response: LinkResponse) => void;
  reject: (error: TwinstoreError) => void;
}

export class PeerLink extends EventEmitter<PeerLinkEvents> {
  readonly peerId: string;
  private readonly identity: LinkIdentity;
  private readonly log: Logger;
  private readonly heartbeatMs: number;
  private readonly requestTimeoutMs: number;
  private readonly requestsInFlightMax: number;
  private readonly backoff: Backoff;
  /** retryNow() came while an attempt was under way: if it fails, the next waits the shortest delay. */
  private retrySoon = false;
  private address: LinkAddress;
  private state: State = 'idle';
  private generation = 0;
  private attempt: Attempt | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly inFlight = new Map<number, Pending>();
  private readonly queued: Pending[] = [];
  private nextRequestId = 1;
  private lastHeardSavedMs = Date.now();
  private downReason = 'not connected yet';
  private lastLoggedFailure: string | undefined;
  private closing: Promise<void> | undefined;
  private readonly transport: LinkTransport | undefined;

  constructor(options: PeerLinkOptions) {
    super();
    checkIdentity(options.identity);
    this.identity = options.identity;
    this.peerId = options.peerId;
    this.address = { host: options.address.host, port: options.address.port };
    this.log = options.log;
    this.transport = options.transport;
    this.heartbeatMs = options.heartbeatMs ?? HEARTBEAT_MS_DEFAULT;
    this.requestTimeoutMs = options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS_DEFAULT;
    this.requestsInFlightMax = options.requestsInFlightMax ?? CLIENT_REQUESTS_IN_FLIGHT_MAX;
    assert(this.heartbeatMs >= 1 && this.requestTimeoutMs >= 1 && this.requestsInFlightMax >= 1, 'PeerLink options are positive');
    this.backoff = new Backoff({
      minMs: options.backoffMsMin ?? 100,
      maxMs: options.backoffMsMax ?? 5000,
      seed: options.seed ?? crc32c(`${options.identity.arrayId}>${options.peerId}`),
    });
  }

  get connected(): boolean {
    return this.state === 'up';
  }

  /** Date.now() when bytes last came from the peer; before the first connection, when this link was made. */
  get lastHeardMs(): number {
    const connection = this.attempt?.connection;
    return this.state === 'up' && connection !== undefined ? connection.lastHeardMs : this.lastHeardSavedMs;
  }

  /** Why the link is not up (undefined while it is). */
  get lastDownReason(): string | undefined {
    return this.state === 'up' ? undefined : this.downReason;
  }

  /** Where the link connects (the last setAddress()). */
  get currentAddress(): LinkAddress {
    return { ...this.address };
  }

  start(): void {
    if (this.state !== 'idle') return;
    this.state = 'connecting';
    this.connect();
  }

  /** Points the link at a new address; a connection to the old one is dropped and the new one tried at once. */
  setAddress(address: LinkAddress): void {
    if (address.host === this.address.host && address.port === this.address.port) return;
    this.address = { host: address.host, port: address.port };
    this.log.info({ peer: this.peerId, address: this.label() }, `link: ${this.peerId} is now at ${this.label()}`);
    if (this.state !== 'connecting' && this.state !== 'up') return;
    if (this.attempt !== undefined) this.lost(this.attempt.generation, `the address changed to ${this.label()}`, 'LINK_DOWN');
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.backoff.reset();
    this.connect();
  }

  /**
   * The peer just reached us on its own connection, so the network between us works: a link
   * waiting out its back-off (up to backoffMsMax) tries again now. Without it the two directions
   * come back seconds apart, and a receiver whose pulls go this way stays silent long enough after
   * a resync to suspend the group again (simulator seed 31).
   */
  retryNow(): void {
    // An attempt under way that fails (begun before the network came back) retries at the shortest delay.
    if (this.state === 'connecting' && this.attempt !== undefined) this.retrySoon = true;
    if (this.state !== 'connecting' || this.attempt !== undefined || this.retryTimer === undefined) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.backoff.reset();
    this.connect();
  }

  request(method: string, body: unknown, payload: Buffer[] = [], options: RequestOptions = {}): Promise<LinkResponse> {
    if (this.state !== 'up') return Promise.reject(this.downError());
    assert(this.nextRequestId <= REQUEST_ID_MAX, 'request ids left');
    const id = this.nextRequestId++;
    let buffers: Buffer[];
    try {
      buffers = encodeFrame({ type: FRAME_TYPE.REQUEST, requestId: id, method, body, payload });
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise<LinkResponse>((resolve, reject) => {
      const pending: Pending = { id, method, buffers, timeoutMs: options.timeoutMs ?? this.requestTimeoutMs, timer: undefined, resolve, reject };
      pending.timer = setTimeout(() => this.timedOut(pending), pending.timeoutMs);
      if (this.inFlight.size < this.requestsInFlightMax) this.transmit(pending);
      else this.queued.push(pending);
    });
  }

  close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    const wasUp = this.state === 'up';
    this.state = 'closed';
    this.generation += 1;
    clearTimeout(this.retryTimer);
    this.failAll(new TwinstoreError('LINK_DOWN', `the link to ${this.peerId} was closed`));
    const attempt = this.attempt;
    this.attempt = undefined;
    let socketClosed = Promise.resolve();
    if (attempt !== undefined) {
      clearTimeout(attempt.deadline);
      if (wasUp && attempt.connection !== undefined) this.lastHeardSavedMs = attempt.connection.lastHeardMs;
      const socket = attempt.socket;
      if (!socket.closed) socketClosed = new Promise((resolve) => socket.once('close', () => resolve()));
      if (attempt.connection !== undefined) attempt.connection.close('the link was closed', 'LINK_DOWN');
      else socket.destroy();
    }
    this.downReason = 'the link was closed';
    if (wasUp) this.emit('down', this.downReason, 'LINK_DOWN');
    this.closing = socketClosed;
    return socketClosed;
  }

  private label(): string {
    return `${this.address.host}:${this.address.port}`;
  }

  private downError(): TwinstoreError {
    if (this.state === 'closed') return new TwinstoreError('LINK_DOWN', `the link to ${this.peerId} was closed`);
    return new TwinstoreError('LINK_DOWN', `the link to ${this.peerId} (${this.label()}) is down: ${this.downReason}`);
  }

  private connect(): void {
    assert(this.state === 'connecting' && this.attempt === undefined, 'connect only while connecting, one attempt at a time');
    this.generation += 1;
    const generation = this.generation;
    const address = { ...this.address };
    const handshakeMs = Math.max(3 * this.heartbeatMs, 1000);
    const onHint = (hint: string | null): void => {
      if (this.attempt?.generation === generation) this.attempt.hint = hint;
    };
    const socket: LinkSocket = this.transport !== undefined
      ? this.transport.connect(address, this.identity, onHint)
      : tls.connect(clientTlsOptions({ identity: this.identity, host: address.host, port: address.port, onHint }));
    const deadline = setTimeout(() => this.lost(generation, `no link handshake within ${handshakeMs} ms`, 'LINK_TIMEOUT'), handshakeMs);
    const attempt: Attempt = { generation, address, socket, connection: undefined, hint: undefined, deadline };
    const onError = (error: Error & { code?: string }): void => {
      const tlsError = /^ERR_(SSL|TLS)_/.test(error.code ?? '');
      this.lost(generation, tlsError ? `TLS-PSK handshake failed: ${describeHandshakeError(error)}` : error.message, tlsError ? 'LINK_AUTH' : 'LINK_DOWN');
    };
    const onClose = (): void => this.lost(generation, 'the connection closed during the handshake', 'LINK_DOWN');
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.once('secureConnect', () => {
      socket.off('error', onError);
      socket.off('close', onClose);
      this.secured(attempt);
    });
    this.attempt = attempt;
  }

  private secured(attempt: Attempt): void {
    if (attempt.generation !== this.generation) {
      attempt.socket.destroy();
      return;
    }
    const hello: HelloBody = { protocolVersion: PROTOCOL_VERSION, arrayId: this.identity.arrayId, heartbeatMs: this.heartbeatMs };
    attempt.connection = new FrameConnection({
      socket: attempt.socket,
      log: this.log,
      label: `${this.peerId} at ${attempt.address.host}:${attempt.address.port}`,
      hello,
      onFrame: (frame) => this.received(attempt, frame),
      onClose: (reason, code) => this.lost(attempt.generation, reason, code),
    });
  }

  private received(attempt: Attempt, frame: Frame): void {
    if (attempt.generation !== this.generation) return;
    const connection = attempt.connection!;
    switch (frame.type) {
      case FRAME_TYPE.HELLO:
        this.checkHello(attempt, frame.hello);
        return;
      case FRAME_TYPE.RESPONSE:
        this.settle(frame.requestId, (pending) => pending.resolve({ body: frame.body, payload: frame.payload, ...(frame.payloadCrcs === undefined ? {} : { payloadCrcs: frame.payloadCrcs }) }));
        return;
      case FRAME_TYPE.ERROR: {
        const error = frame.error;
        if (frame.requestId !== CONNECTION_ID) {
          this.settle(frame.requestId, (pending) => pending.reject(errorFromFrame(this.peerId, pending.method, error)));
          return;
        }
        const code: ErrorCode = Object.hasOwn(ERROR_CODES, error.code) ? (error.code as ErrorCode) : 'LINK_PROTOCOL';
        connection.close(`${this.peerId} closed the link: ${error.message}`, code);
        return;
      }
      default:
        connection.protocolError(`unexpected frame of type ${frame.type} from the listening array`);
    }
  }

  private checkHello(attempt: Attempt, hello: HelloBody): void {
    const connection = attempt.connection!;
    let refusal: string | undefined;
    if (hello.protocolVersion !== PROTOCOL_VERSION) refusal = `it speaks link protocol ${hello.protocolVersion}, this array ${PROTOCOL_VERSION}`;
    else if (hello.arrayId !== this.peerId) refusal = `the array at ${this.label()} is "${hello.arrayId}", not "${this.peerId}"`;
    else if (typeof attempt.hint === 'string' && attempt.hint !== hello.arrayId) refusal = `its TLS identity "${attempt.hint}" differs from its hello "${hello.arrayId}"`;
    if (refusal !== undefined) {
      connection.close(`refused by ${this.identity.arrayId}: ${refusal}`, 'LINK_AUTH', { tellPeer: true });
      return;
    }
    clearTimeout(attempt.deadline);
    this.state = 'up';
    this.backoff.reset();
    this.lastLoggedFailure = undefined;
    this.log.info({ peer: this.peerId, address: this.label() }, `link: up to ${this.peerId} at ${this.label()}`);
    this.emit('up');
  }

  /** Ends attempt `generation` (if it is still the current one) and schedules the next. */
  private lost(generation: number, reason: string, code: ErrorCode): void {
    if (generation !== this.generation || this.state === 'closed') return;
    const attempt = this.attempt;
    assert(attempt !== undefined && attempt.generation === generation, 'the current generation has an attempt');
    this.attempt = undefined;
    this.generation += 1;
    clearTimeout(attempt.deadline);
    if (attempt.connection !== undefined) attempt.connection.close(reason, code);
    else attempt.socket.destroy();
    const wasUp = this.state === 'up';
    if (wasUp) this.lastHeardSavedMs = attempt.connection!.lastHeardMs;
    this.state = 'connecting';
    this.downReason = reason;
    this.failAll(new TwinstoreError('LINK_DOWN', `the link to ${this.peerId} went down: ${reason}`));
    if (this.retrySoon) this.backoff.reset();
    this.retrySoon = false;
    const delayMs = this.backoff.next();
    this.logFailure(wasUp, reason, code, delayMs);
    if (wasUp) this.emit('down', reason, code);
    if (this.state !== 'connecting' || this.attempt !== undefined) return; // a 'down' listener closed or redirected the link
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.state === 'connecting' && this.attempt === undefined) this.connect();
    }, delayMs);
    this.emit('retry', delayMs);
  }

  private logFailure(wasUp: boolean, reason: string, code: ErrorCode, delayMs: number): void {
    const fields = { peer: this.peerId, address: this.label(), code, retryMs: delayMs };
    if (wasUp) this.log.warn(fields, `link: down to ${this.peerId} at ${this.label()}: ${reason}; reconnecting`);
    else if (reason !== this.lastLoggedFailure) this.log.warn(fields, `link: cannot connect to ${this.peerId} at ${this.label()}: ${reason}; retrying`);
    else this.log.debug(fields, `link: still cannot connect to ${this.peerId}: ${reason}`);
    this.lastLoggedFailure = reason;
  }

  private transmit(pending: Pending): void {
    const connection = this.attempt?.connection;
    assert(this.state === 'up' && connection !== undefined, 'requests go out only while up');
    this.inFlight.set(pending.id, pending);
    connection.sendEncoded(pending.buffers);
    pending.buffers = [];
  }

  private settle(id: number, finish: (pending: Pending) => void): void {
    const pending = this.inFlight.get(id);
    if (pending === undefined) {
      this.log.debug({ peer: this.peerId, requestId: id }, 'link: answer to a request no longer waiting (timed out)');
      return;
    }
    this.inFlight.delete(id);
    clearTimeout(pending.timer);
    finish(pending);
    this.sendQueued();
  }

  private sendQueued(): void {
    while (this.state === 'up' && this.queued.length > 0 && this.inFlight.size < this.requestsInFlightMax) this.transmit(this.queued.shift()!);
  }

  private timedOut(pending: Pending): void {
    const queuedAt = this.queued.indexOf(pending);
    if (queuedAt >= 0) this.queued.splice(queuedAt, 1);
    else if (!this.inFlight.delete(pending.id)) return;
    pending.reject(new TwinstoreError('LINK_TIMEOUT', `${this.peerId} did not answer ${pending.method} within ${pending.timeoutMs} ms`));
    this.sendQueued();
  }

  private failAll(error: TwinstoreError): void {
    const all = [...this.inFlight.values(), ...this.queued];
    this.inFlight.clear();
    this.queued.length = 0;
    for (const pending of all) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
  }
}
