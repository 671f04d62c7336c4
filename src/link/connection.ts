// One authenticated link connection, either side: frames in and out over a
// Duplex (a TLS socket in production; any Duplex in tests), the HELLO rule,
// heartbeats, and closing with a reason.
//
// - Each side sends its HELLO first; the first frame received must be the
//   peer's HELLO (or an error frame with id 0: a listening array refusing the
//   connecting one's identity) and no other frame may be one.
// - Pings and pongs are answered here and never reach the owner.
// - Heartbeat: a timer ticks every heartbeatMs/4. It sends a ping when nothing
//   was sent for heartbeatMs, and closes the connection (LINK_TIMEOUT) when
//   nothing was received for 3 × the larger of the two sides' heartbeatMs. Any
//   received bytes count, so a long frame in transit keeps the link alive.
//   While the owner has paused reading (back-pressure) the peer is not blamed.
//   A ping or pong carries how many frames its side sent before it; a count that
//   differs from the frames decoded here means the stream lost or doubled one,
//   and the connection closes at once (docs/link-protocol.md).
// - Sending corks the socket until the next tick of the event loop, so the
//   frames of one turn leave in one writev; payload buffers are written as they
//   are, never copied into the header.
// - A malformed frame is logged and closes this connection only. Before closing
//   for a protocol or identity reason the peer is told why in an error frame.

import type { Duplex } from 'node:stream';
import { assert, type ErrorCode } from '../errors.js';
import type { Logger } from '../util/log.js';
import { FrameDecoder } from './decoder.js';
import { encodeFrame, type Frame } from './frame.js';
import { CONNECTION_ID, FRAME_TYPE, REQUEST_ID_MAX, type HelloBody } from './protocol.js';

/** Closing politely: how long the peer gets to read our last frame before the socket is destroyed. */
export const CLOSE_GRACE_MS = 1000;
export const SILENT_HEARTBEATS_MAX = 3;

/** A ping's request id: 1 + the frames its side sent before it, kept within the request-id range (never CONNECTION_ID). */
export function frameCountTag(frames: number): number {
  return 1 + (frames % REQUEST_ID_MAX);
}

export interface ConnectionOptions {
  socket: Duplex;
  log: Logger;
  /** Who is on the other side, for log lines ("site-b at 10.0.0.2:7800"). */
  readonly label: string;
  hello: HelloBody;
  /** Every frame but ping and pong; the first call is the peer's hello, or its error frame (id 0) refusing us. */
  onFrame: (frame: Frame) => void;
  /** Called once, when the connection closes for any reason. */
  onClose: (reason: string, code: ErrorCode) => void;
}

export class FrameConnection {
  private readonly decoder = new FrameDecoder();
  private readonly heartbeatMs: number;
  private readonly timer: NodeJS.Timeout;
  private peerHeartbeatMs: number | undefined;
  private readingPaused = false;
  private corked = false;
  private closed = false;
  private lastSentMs = Date.now();
  /** Frames handed to the socket, and frames decoded from it: a ping carries the first, checked against the second. */
  private framesSent = 0;
  private framesReceived = 0;
  /** Date.now() when bytes last arrived from the peer. */
  lastHeardMs = Date.now();
  readonly label: string;

  constructor(private readonly options: ConnectionOptions) {
    this.heartbeatMs = options.hello.heartbeatMs;
    this.label = options.label;
    assert(this.heartbeatMs >= 1, 'heartbeatMs is positive');
    const socket = options.socket;
    socket.on('data', (chunk: Buffer) => this.received(chunk));
    socket.on('error', (error: Error) => this.close(`connection error: ${error.message}`, 'LINK_DOWN'));
    socket.on('end', () => this.close('the peer closed the connection', 'LINK_DOWN'));
    socket.on('close', () => this.close('the connection closed', 'LINK_DOWN'));
    this.timer = setInterval(() => this.tick(), Math.max(1, Math.floor(this.heartbeatMs / 4)));
    this.send({ type: FRAME_TYPE.HELLO, requestId: CONNECTION_ID, hello: options.hello });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Bytes handed to the socket and not yet written out. */
  get sendBacklogBytes(): number {
    return this.options.socket.writableLength;
  }

  /** Sends one frame; false when the connection is closed. Throws (nothing sent) when the frame breaks a limit. */
  send(frame: Frame): boolean {
    if (this.closed) return false;
    return this.sendEncoded(encodeFrame(frame));
  }

  /** Sends the buffers of one frame from encodeFrame(); false when the connection is closed. */
  sendEncoded(buffers: readonly Buffer[]): boolean {
    if (this.closed) return false;
    const socket = this.options.socket;
    if (!this.corked) {
      this.corked = true;
      socket.cork();
      process.nextTick(() => {
        this.corked = false;
        socket.uncork();
      });
    }
    for (const buffer of buffers) socket.write(buffer);
    this.framesSent += 1;
    this.lastSentMs = Date.now();
    return true;
  }

  /** Stops taking frames from the socket until resumeReading(). */
  pauseReading(): void {
    this.readingPaused = true;
    this.options.socket.pause();
  }

  resumeReading(): void {
    if (!this.readingPaused || this.closed) return;
    this.readingPaused = false;
    this.lastHeardMs = Date.now();
    this.decodeQueued();
    if (!this.readingPaused) this.options.socket.resume();
  }

  /**
   * Closes the connection once; onClose gets the reason. With tellPeer, the peer
   * first gets an error frame with the code and reason, and the socket ends
   * gracefully; otherwise it is destroyed at once.
   */
  close(reason: string, code: ErrorCode, options: { tellPeer?: boolean } = {}): void {
    if (this.closed) return;
    const socket = this.options.socket;
    if (options.tellPeer === true && socket.writable) {
      this.send({ type: FRAME_TYPE.ERROR, requestId: CONNECTION_ID, error: { code, message: reason } });
      this.closed = true;
      socket.end();
      setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
    } else {
      this.closed = true;
      socket.destroy();
    }
    clearInterval(this.timer);
    this.options.onClose(reason, code);
  }

  /** The peer broke the protocol: one warn line, the peer is told, this connection closes. */
  protocolError(reason: string): void {
    if (this.closed) return;
    this.options.log.warn({ peer: this.label, reason }, `link: protocol error from ${this.label}: ${reason}; closing this connection`);
    this.close(`protocol error: ${reason}`, 'LINK_PROTOCOL', { tellPeer: true });
  }

  private received(chunk: Buffer): void {
    if (this.closed) return;
    this.lastHeardMs = Date.now();
    this.decoder.push(chunk);
    this.decodeQueued();
  }

  private decodeQueued(): void {
    while (!this.readingPaused && !this.closed) {
      const decoded = this.decoder.next();
      if (decoded === undefined) return;
      if (decoded.kind === 'fatal') {
        this.protocolError(decoded.reason);
        return;
      }
      this.dispatch(decoded.frame);
    }
  }

  private dispatch(frame: Frame): void {
    const before = this.framesReceived;
    this.framesReceived += 1;
    if (this.peerHeartbeatMs === undefined) {
      // A listening array that refuses this array's identity answers with an error frame instead of its hello.
      if (frame.type === FRAME_TYPE.ERROR && frame.requestId === CONNECTION_ID) {
        this.options.onFrame(frame);
        return;
      }
      if (frame.type !== FRAME_TYPE.HELLO) {
        this.protocolError(`the first frame was not a hello (type ${frame.type})`);
        return;
      }
      this.peerHeartbeatMs = frame.hello.heartbeatMs;
      this.options.onFrame(frame);
      return;
    }
    switch (frame.type) {
      case FRAME_TYPE.HELLO:
        this.protocolError('a second hello frame');
        return;
      case FRAME_TYPE.PING:
      case FRAME_TYPE.PONG:
        // Pings and pongs name how many frames their side sent before them (0: a peer that does
        // not count). TCP loses nothing, so a difference means the stream itself is broken: a
        // frame lost or doubled on the way (a faulty middlebox), and an answer may never come.
        // Close it now rather than let a request wait out its timeout. Pongs count too: a side
        // that only answers pings (its own timer never fires) is checked all the same.
        if (frame.requestId !== CONNECTION_ID && frame.requestId !== frameCountTag(before)) {
          const what = frame.type === FRAME_TYPE.PING ? 'ping' : 'pong';
          this.protocolError(`frames were lost or doubled on this connection: the peer sent ${frame.requestId - 1} before its ${what} (mod 2^53), ${before} arrived`);
          return;
        }
        if (frame.type === FRAME_TYPE.PING) this.send({ type: FRAME_TYPE.PONG, requestId: frameCountTag(this.framesSent) });
        return;
      default:
        this.options.onFrame(frame);
    }
  }

  /** How long the peer may stay silent before the connection is closed. */
  get silenceMsMax(): number {
    return SILENT_HEARTBEATS_MAX * Math.max(this.heartbeatMs, this.peerHeartbeatMs ?? 0);
  }

  private tick(): void {
    const now = Date.now();
    if (!this.readingPaused && now - this.lastHeardMs > this.silenceMsMax) {
      const silentMs = now - this.lastHeardMs;
      this.options.log.warn({ peer: this.label, silentMs }, `link: ${this.label} silent for ${silentMs} ms; closing the connection`);
      this.close(`the peer was silent for ${silentMs} ms (${SILENT_HEARTBEATS_MAX} heartbeats)`, 'LINK_TIMEOUT');
      return;
    }
    if (now - this.lastSentMs >= this.heartbeatMs) this.send({ type: FRAME_TYPE.PING, requestId: frameCountTag(this.framesSent) });
  }
}
