// One NBD client connection: greeting, option haggling (negotiation.ts), then
// transmission. Requests run concurrently and are answered as they complete,
// out of order. A request counts against the connection's bounds until its
// reply has left the socket (the reply's write callback), and the bytes of
// replies still queued on the socket count with the bytes running, so a client
// that never reads its replies stops being read (back-pressure) instead of
// growing the queue. READ buffers and WRITE payloads come from the server-wide
// budget (budget.ts); a READ that does not fit waits there, parked, with reading
// stopped. A handshake that takes longer than `handshakeTimeoutMs`, or a WRITE
// payload that gets no byte for `payloadStallMs`, or replies of which none has
// left the socket for `replyStallMs` (a client that stopped reading), closes the
// connection with a log line (the server's sweep calls checkDeadlines); so does
// a session being closed (the array stopping) whose requests are done but whose
// replies the client does not read, `closeGraceMs` after the close began. A bad frame that
// desynchronises the stream closes this connection only, after a log line;
// anything else gets the spec's error. STARTTLS: once its ACK has left, reading
// stops and tls.ts runs the handshake on the same socket (the handshake deadline
// still runs); on success the session goes on over the TLS socket, read through
// 'data' events; a failed handshake is logged and closes the connection.

import type net from 'node:net';
import type tls from 'node:tls';
import { adoptSocket, streamReceiver, type ByteSink, type Receiver } from './receiver.js';
import type { AccessPolicy } from './access.js';
import type { NbdTls } from './tls.js';
import { isTwinstoreError } from '../errors.js';
import type { BufferPool } from '../util/buffer-pool.js';
import type { Logger } from '../util/log.js';
import { NbdDecoder, type NbdRequest } from './decoder.js';
import { errorNumber, errorText } from './errno.js';
import {
  blockStatusChunk, errorChunk, greeting, noneChunk, offsetDataHeader, offsetHoleChunk, simpleReply,
} from './encoder.js';
import type { BlockExport, ExportRegistry, ExportSession } from './exports.js';
import { Negotiation } from './negotiation.js';
import { BASE_ALLOCATION_ID, CMD, CMD_FLAG, NBD_ERR, STATE_HOLE, STATE_ZERO } from './protocol.js';
import { checkRequest } from './requests.js';
import type { VolumeIoStats } from './io-stats.js';
import type { AdaptivePoller } from '../util/poller.js';
import type { BudgetWaiter, ByteBudget } from './budget.js';

/** Requests read and not yet answered on the wire, per connection. */
const requestsInFlightMax = 128;
/** READ + WRITE bytes running plus reply bytes queued on the socket, per connection: past it, reading stops. */
export const bytesInFlightMax = 128 * 2 ** 20;
const readChunksMax = 1024;
/**
 * A session being closed whose requests have all run but whose replies are not read: destroyed
 * this long after the close began, so a client that never reads cannot hold a stopping array.
 */
export const closeGraceMs = 5_000;
const blockStatusExtentsMax = 16384;

interface Transmission {
  exported: BlockExport;
  stats: VolumeIoStats;
  structured: boolean;
  allocationContext: boolean;
}

export interface SessionOptions {
  registry: ExportRegistry;
  pool: BufferPool;
  budget: ByteBudget;
  poller: AdaptivePoller;
  log: Logger;
  handshakeTimeoutMs: number;
  payloadStallMs: number;
  replyStallMs: number;
  /** Undefined: nbd.tls is off. */
  tls: NbdTls | undefined;
  access: AccessPolicy;
}

export class NbdSession implements ExportSession, ByteSink, BudgetWaiter {
  private readonly decoder: NbdDecoder;
  private readonly negotiation: Negotiation;
  private transmission: Transmission | undefined;
  private requestsInFlight = 0;
  private bytesInFlight = 0;
  private stopping = false;
  private closed = false;
  /** Reading stopped for back-pressure; resumed when requests complete. */
  private readingStopped = false;
  private log: Logger;
  private readonly done: Promise<void>;
  private resolveDone!: () => void;
  /** Replaced by the TLS socket and its receiver after STARTTLS. */
  private receiver: Receiver;
  private socket: net.Socket;
  /** STARTTLS was acknowledged: nothing is read until the handshake has finished. */
  private upgrading = false;
  private readonly registry: ExportRegistry;
  private readonly pool: BufferPool;
  private readonly budget: ByteBudget;
  private readonly poller: AdaptivePoller;
  private readonly acceptedAt = Date.now();
  /** A READ that waits for the budget; reading is stopped until it runs. */
  private parked: NbdRequest | undefined;
  /** Requests running (dispatched, not yet answered). */
  private executing = 0;
  /** Replies handed to the socket that have not left it yet. */
  private repliesQueued = 0;
  /** When a queued reply last left the socket (or the first was queued): the reply stall's clock. */
  private replyProgressAt = 0;
  /** When close() began (the array stopping), for closeGraceMs. */
  private closingAt: number | undefined;

  /** `raw` must have been accepted with pauseOnConnect, so no byte was read yet. */
  constructor(raw: net.Socket, private readonly options: SessionOptions) {
    this.registry = options.registry;
    this.pool = options.pool;
    this.budget = options.budget;
    this.poller = options.poller;
    this.log = options.log.child({ client: `${raw.remoteAddress}:${raw.remotePort}` });
    this.decoder = new NbdDecoder(this.pool, this.budget);
    this.negotiation = new Negotiation(this.registry, { tls: options.tls?.mode ?? 'off', access: options.access, address: raw.remoteAddress ?? '' });
    this.receiver = adoptSocket(raw, this);
    const socket = this.receiver.socket;
    this.socket = socket;
    socket.setNoDelay(true);
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve;
    });
    this.watch(socket);
    socket.write(greeting());
  }

  private watch(socket: net.Socket): void {
    socket.on('close', () => this.onClosed());
    socket.on('error', (error) => this.log.debug({ err: error.message }, 'socket error'));
  }

  /** Resolves once the socket has closed. */
  closedPromise(): Promise<void> {
    return this.done;
  }

  close(reason: string): void {
    if (this.stopping) return;
    this.log.info({ reason }, 'closing NBD session');
    this.stopping = true;
    this.closingAt = Date.now();
    if (this.transmission === undefined) this.socket.destroy();
    else this.endWhenIdle();
  }

  /**
   * Closes a handshake past handshakeTimeoutMs, a WRITE payload that got no byte for payloadStallMs,
   * replies none of which left the socket for replyStallMs, and a closing session whose requests
   * are done but whose replies are unread closeGraceMs after the close began.
   */
  checkDeadlines(now: number): void {
    if (this.closed) return;
    if (this.repliesQueued > 0 && now - this.replyProgressAt > this.options.replyStallMs) {
      this.log.warn({ replyStallMs: this.options.replyStallMs, repliesQueued: this.repliesQueued, queuedBytes: this.socket.writableLength }, 'closing NBD connection: the client reads no replies');
      this.stopping = true;
      this.socket.destroy();
      return;
    }
    if (this.closingAt !== undefined && this.executing === 0 && this.repliesQueued > 0 && now - this.closingAt > closeGraceMs) {
      this.log.warn({ closeGraceMs, repliesQueued: this.repliesQueued }, 'closing NBD connection: the client reads no replies while the array stops');
      this.socket.destroy();
      return;
    }
    if (this.transmission === undefined) {
      if (now - this.acceptedAt <= this.options.handshakeTimeoutMs) return;
      this.log.info({ handshakeTimeoutMs: this.options.handshakeTimeoutMs }, 'closing NBD connection: handshake not finished in time');
      this.stopping = true;
      this.socket.destroy();
      return;
    }
    const since = this.decoder.payloadWaitingSince;
    if (since === undefined || now - since <= this.options.payloadStallMs) return;
    this.log.warn({ payloadStallMs: this.options.payloadStallMs, export: this.transmission.exported.name }, 'closing NBD connection: WRITE payload stalled');
    this.stopping = true;
    this.socket.destroy();
  }

  /** BudgetWaiter: buffers came back; run the parked READ or let the decoder grow its payload. */
  budgetFreed(): void {
    if (this.closed) return;
    const parked = this.parked;
    if (parked !== undefined) {
      if (!this.budget.tryTake(parked.length)) {
        this.budget.wait(this);
        return;
      }
      this.parked = undefined;
      this.dispatch(parked, parked.length);
    }
    this.resumeIfStopped();
  }

  // ByteSink: how the receiver hands us bytes.

  readTarget(): Buffer {
    return this.decoder.readTarget();
  }

  received(count: number): void {
    this.decoder.received(count);
  }

  push(chunk: Buffer): void {
    this.decoder.push(chunk);
  }

  onBytes(): boolean {
    this.poller.kick();
    const more = this.pump();
    if (!more) this.readingStopped = true;
    return more;
  }

  /** Decodes and dispatches what has arrived; returns whether reading may go on. */
  private pump(): boolean {
    while (!this.stopping && !this.closed && !this.upgrading) {
      if (this.parked !== undefined || this.requestsInFlight >= requestsInFlightMax) return false;
      if (this.bytesInFlight + this.socket.writableLength >= bytesInFlightMax) return false;
      const message = this.decoder.next();
      if (message === undefined) {
        if (!this.decoder.waitingForBudget) break;
        this.budget.wait(this);
        return false;
      }
      switch (message.kind) {
        case 'fatal':
          this.abort(message.reason);
          return false;
        case 'client-flags':
          this.onClientFlags(message.flags);
          break;
        case 'option':
          this.onOption(message.option, message.data);
          break;
        case 'request':
          this.onRequest(message.request);
          break;
      }
    }
    return !this.stopping && !this.closed && !this.upgrading && this.decoder.readTarget().length > 0;
  }

  private resumeIfStopped(): void {
    if (!this.readingStopped || this.stopping || this.closed || this.upgrading) return;
    if (this.pump()) {
      this.readingStopped = false;
      this.receiver.resume();
    }
  }

  /** A protocol violation the stream cannot recover from: log it and drop this connection only. */
  private abort(reason: string): void {
    this.log.warn({ reason, export: this.transmission?.exported.name }, 'closing NBD connection after a malformed frame');
    this.stopping = true;
    this.socket.destroy();
  }

  private onClientFlags(flags: number): void {
    const next = this.negotiation.clientFlags(flags);
    if (next.step === 'close') this.abort(next.reason);
  }

  private onOption(option: number, data: Buffer): void {
    const outcome = this.negotiation.option(option, data);
    const next = outcome.next;
    if (next.step === 'starttls') return this.startTls(outcome.replies);
    this.send(outcome.replies);
    if (next.step === 'close') {
      if (next.graceful) {
        this.stopping = true;
        this.finish();
      } else this.abort(next.reason);
    } else if (next.step === 'transmission') {
      this.transmission = { exported: next.exported, stats: this.registry.ioStats(next.exported.name), structured: next.structured, allocationContext: next.allocationContext };
      this.registry.attach(next.exported.name, this);
      this.decoder.enterTransmission();
      this.log.debug({ export: next.exported.name, structured: next.structured }, 'transmission started');
    }
  }

  /** STARTTLS acknowledged: stop reading, and once the ACK has left, hand the socket to the handshake. */
  private startTls(replies: Buffer[]): void {
    if (this.decoder.buffered > 0) return this.abort('bytes sent after STARTTLS before its reply');
    this.upgrading = true;
    const raw = this.socket;
    this.send(replies.slice(0, -1));
    raw.write(replies.at(-1)!, () => {
      if (this.closed || this.stopping || raw.destroyed) return;
      this.options.tls!.upgrade(raw, {
        secure: (secure, identity) => this.secured(secure, identity),
        failed: (reason) => {
          // A session that closed the connection itself (its deadline, the array stopping) said why already.
          if (!this.stopping) this.log.warn({ reason }, 'NBD TLS handshake failed; connection closed');
          this.stopping = true;
          raw.destroy();
        },
      });
    });
  }

  private secured(secure: tls.TLSSocket, identity: string | undefined): void {
    if (this.closed || this.stopping) {
      secure.destroy();
      return;
    }
    const raw = this.socket;
    secure.once('close', () => raw.destroy());
    this.log = this.log.child({ identity: identity ?? null });
    this.log.debug({ protocol: secure.getProtocol(), cipher: secure.getCipher().name }, 'NBD TLS established');
    this.socket = secure;
    this.watch(secure);
    // A bad record or alert after the handshake: OpenSSL's reason, then the connection closes.
    secure.on('error', (error: Error & { code?: string }) => {
      if (!this.stopping) this.log.warn({ err: error.message, code: error.code }, 'closing NBD connection after a TLS error');
    });
    this.negotiation.tlsEstablished(identity);
    this.upgrading = false;
    this.readingStopped = false;
    this.receiver = streamReceiver(secure, this);
  }

  private onRequest(request: NbdRequest): void {
    const transmission = this.transmission!;
    if (request.type === CMD.DISC) {
      this.stopping = true;
      this.endWhenIdle();
      return;
    }
    const verdict = checkRequest(request, transmission.exported, transmission.allocationContext, transmission.structured);
    const weight = request.type === CMD.READ || request.type === CMD.WRITE ? request.length : 0;
    this.requestsInFlight += 1;
    if (verdict.error !== 0) {
      this.replyError(request, verdict.error, verdict.message);
      if (request.payload) this.decoder.releasePayload(request.payload);
      return;
    }
    // A READ's buffer comes from the budget before it runs; one that does not fit waits, parked.
    if (request.type === CMD.READ && request.length > 0 && !this.budget.tryTake(request.length)) {
      this.parked = request;
      this.budget.wait(this);
      return;
    }
    this.dispatch(request, weight);
  }

  private dispatch(request: NbdRequest, weight: number): void {
    this.bytesInFlight += weight;
    this.executing += 1;
    const t = this.transmission!;
    const startedAt = performance.now();
    void this.execute(request, t).then(() => false, (error: unknown) => {
      this.failed(request, error);
      return true;
    }).then((failed) => {
      t.stats.record(request.type, weight, performance.now() - startedAt, failed);
      if (request.payload) this.decoder.releasePayload(request.payload);
      this.bytesInFlight -= weight;
      this.executing -= 1;
      this.resumeIfStopped();
    });
  }

  /** A reply has left the socket (or the socket is gone): the request stops counting. */
  private readonly replyWritten = (): void => {
    this.requestsInFlight -= 1;
    if (this.stopping) this.endWhenIdle();
    else this.resumeIfStopped();
  };

  private async execute(request: NbdRequest, t: Transmission): Promise<void> {
    const { exported } = t;
    const fua = (request.flags & CMD_FLAG.FUA) !== 0;
    switch (request.type) {
      case CMD.READ:
        return this.read(request, t);
      case CMD.WRITE:
        await exported.write(request.offset, request.payload!);
        break;
      case CMD.FLUSH:
        await exported.flush();
        return this.replyOk(request);
      case CMD.TRIM:
        await exported.trim(request.offset, request.length);
        break;
      case CMD.CACHE:
        return this.replyOk(request);
      case CMD.WRITE_ZEROES:
        if ((request.flags & CMD_FLAG.FAST_ZERO) !== 0 && !exported.zeroIsFast(request.offset, request.length)) {
          return this.replyError(request, NBD_ERR.ENOTSUP, 'zeroing this range needs data writes');
        }
        await exported.writeZeroes(request.offset, request.length, (request.flags & CMD_FLAG.NO_HOLE) !== 0);
        break;
      case CMD.BLOCK_STATUS:
        return this.blockStatus(request, exported);
    }
    if (fua) await exported.flush();
    this.replyOk(request);
  }

  private async read(request: NbdRequest, t: Transmission): Promise<void> {
    const { cookieHigh, cookieLow, offset, length } = request;
    if (length === 0) return this.replyOk(request);
    const runs = t.structured && (request.flags & CMD_FLAG.DF) === 0
      ? t.exported.blockStatus(offset, length, readChunksMax)
      : [{ lengthBytes: length, hole: false }];
    const buffer = this.pool.acquire(length);
    try {
      await t.exported.read(offset, buffer);
      if ((request.flags & CMD_FLAG.FUA) !== 0) await t.exported.flush();
    } catch (error) {
      this.releaseRead(buffer);
      throw error;
    }
    if (!t.structured) return this.reply([simpleReply(0, cookieHigh, cookieLow), buffer], buffer);
    const covered = runs.reduce((sum, run) => sum + run.lengthBytes, 0);
    if (covered < length) runs.push({ lengthBytes: length - covered, hole: false });
    const parts: Buffer[] = [];
    let at = 0;
    runs.forEach((run, i) => {
      const last = i === runs.length - 1;
      if (run.hole) parts.push(offsetHoleChunk(cookieHigh, cookieLow, offset + at, run.lengthBytes, last));
      else parts.push(offsetDataHeader(cookieHigh, cookieLow, offset + at, run.lengthBytes, last), buffer.subarray(at, at + run.lengthBytes));
      at += run.lengthBytes;
    });
    this.reply(parts, buffer);
  }

  /** A READ buffer goes back to the pool and the budget it was taken from. */
  private releaseRead(buffer: Buffer): void {
    this.pool.release(buffer);
    this.budget.give(buffer.length);
  }

  private blockStatus(request: NbdRequest, exported: BlockExport): void {
    const requestOne = (request.flags & CMD_FLAG.REQ_ONE) !== 0;
    const extents = exported.blockStatus(request.offset, request.length, requestOne ? 1 : blockStatusExtentsMax);
    const encoded = extents.map((e) => ({ length: e.lengthBytes, flags: e.hole ? STATE_HOLE | STATE_ZERO : 0 }));
    this.reply([blockStatusChunk(request.cookieHigh, request.cookieLow, BASE_ALLOCATION_ID, encoded)]);
  }

  private failed(request: NbdRequest, error: unknown): void {
    if (isTwinstoreError(error) && error.code === 'INTERNAL') {
      // An assertion failed: a bug. Crash loudly rather than serve from a state we no longer trust.
      this.log.fatal({ err: error.message, stack: error.stack }, 'invariant broken; stopping the array');
      setImmediate(() => {
        throw error;
      });
    }
    const code = errorNumber(error);
    if (code === NBD_ERR.EIO) this.log.error({ err: errorText(error), type: request.type, offset: request.offset }, 'request failed');
    this.replyError(request, code, errorText(error));
  }

  private replyOk(request: NbdRequest): void {
    const structuredRead = request.type === CMD.READ && this.transmission!.structured;
    this.reply([structuredRead ? noneChunk(request.cookieHigh, request.cookieLow) : simpleReply(0, request.cookieHigh, request.cookieLow)]);
  }

  private replyError(request: NbdRequest, error: number, message: string): void {
    this.log.debug({ type: request.type, offset: request.offset, length: request.length, error, message }, 'request refused');
    const structuredRead = request.type === CMD.READ && this.transmission!.structured;
    this.reply([structuredRead ? errorChunk(request.cookieHigh, request.cookieLow, error, message) : simpleReply(error, request.cookieHigh, request.cookieLow)]);
  }

  /** Handshake replies: written back to back. */
  private send(parts: Buffer[]): void {
    if (this.closed || this.socket.destroyed) return;
    this.socket.cork();
    for (const part of parts) this.socket.write(part);
    this.socket.uncork();
  }

  /** A request's reply; the request counts until it has left the socket, and `borrowed` (a READ buffer) goes back then. */
  private reply(parts: Buffer[], borrowed?: Buffer): void {
    if (this.closed || this.socket.destroyed) {
      if (borrowed) this.releaseRead(borrowed);
      this.replyWritten();
      return;
    }
    this.poller.kick();
    if (this.repliesQueued === 0) this.replyProgressAt = Date.now();
    this.repliesQueued += 1;
    const left = (): void => {
      this.repliesQueued -= 1;
      this.replyProgressAt = Date.now();
      if (borrowed) this.releaseRead(borrowed);
      this.replyWritten();
    };
    this.socket.cork();
    const last = parts.length - 1;
    for (let i = 0; i < last; i++) this.socket.write(parts[i]!);
    this.socket.write(parts[last]!, left);
    this.socket.uncork();
  }

  private endWhenIdle(): void {
    if (this.requestsInFlight === 0 && !this.closed) this.finish();
  }

  /** Flushes what is queued, then closes; reading has stopped, so EOF would never be seen. */
  private finish(): void {
    this.socket.end(() => this.socket.destroy());
  }

  /** Runs once, for whichever socket (plain or TLS) closes first; the other is destroyed with it. */
  private onClosed(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    this.resolveDone();
    this.budget.forget(this);
    this.decoder.dispose();
    if (this.transmission) this.registry.detach(this.transmission.exported.name, this);
  }
}
