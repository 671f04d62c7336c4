// The NBD listener: accepts TCP connections and gives each an NbdSession.
// It bounds what clients can hold: connections in all (counted here, since the
// receiver moves each socket's handle away from net.Server, whose own count
// then drops at once), connections per client address, and descriptors (the
// cap is lowered to leave `descriptorsReserved` of the process's soft
// RLIMIT_NOFILE to the API, the link and the drives). A connection over a cap is
// closed at accept, with a warning logged at most once per `refusalLogMs`. One
// sweep timer enforces every session's handshake and payload deadlines, so no
// timer is armed per request. Shutdown stops accepting, lets every session
// answer what it has in flight, then resolves.

import fs from 'node:fs';
import net from 'node:net';
import type { NbdLimits } from '../config/index.js';
import { closeGraceMs } from './session.js';
import type { BufferPool } from '../util/buffer-pool.js';
import type { Logger } from '../util/log.js';
import { ByteBudget } from './budget.js';
import type { ExportRegistry } from './exports.js';
import { NbdSession } from './session.js';
import { AdaptivePoller } from '../util/poller.js';
import { AccessPolicy } from './access.js';
import type { NbdTls } from './tls.js';
import type { ReloadOutcome } from '../util/tls-files.js';

/** Descriptors kept free of NBD connections for the API, the link, drives and journals. */
export const descriptorsReserved = 256;
const refusalLogMs = 10_000;
const sweepMsMax = 1000;
const sweepMsMin = 50;

export interface NbdServerOptions {
  pollMicros: number;
  limits: NbdLimits;
  /** STARTTLS; undefined when nbd.tls is off. */
  tls?: NbdTls | undefined;
  access?: AccessPolicy;
}

export class NbdServer {
  private readonly server: net.Server;
  private readonly sessions = new Set<NbdSession>();
  private readonly perAddress = new Map<string, number>();
  private readonly poller: AdaptivePoller;
  private readonly budget: ByteBudget;
  private readonly limits: NbdLimits;
  private readonly tls: NbdTls | undefined;
  private readonly access: AccessPolicy;
  /** min(nbd.connectionsMax, soft nofile − descriptorsReserved). */
  readonly connectionsMax: number;
  private readonly sweep: NodeJS.Timeout;
  private refusedSince = 0;
  private refusalLoggedAt = 0;

  constructor(
    private readonly registry: ExportRegistry,
    private readonly pool: BufferPool,
    private readonly log: Logger,
    options: NbdServerOptions,
  ) {
    this.limits = options.limits;
    this.tls = options.tls;
    this.access = options.access ?? new AccessPolicy();
    this.poller = new AdaptivePoller(options.pollMicros);
    this.budget = new ByteBudget(options.limits.bufferedBytesMax);
    const nofile = softOpenFilesLimit();
    this.connectionsMax = nofile === undefined
      ? this.limits.connectionsMax
      : Math.max(1, Math.min(this.limits.connectionsMax, nofile - descriptorsReserved));
    if (this.connectionsMax < this.limits.connectionsMax) {
      log.warn({ configured: this.limits.connectionsMax, connectionsMax: this.connectionsMax, nofile, descriptorsReserved }, 'NBD connection cap lowered to fit the open-files limit');
    }
    this.server = net.createServer({ pauseOnConnect: true }, (socket) => this.accept(socket));
    const sweepMs = Math.min(sweepMsMax, Math.max(sweepMsMin, Math.min(this.limits.handshakeTimeoutMs, this.limits.payloadStallMs, this.limits.replyStallMs, closeGraceMs) / 4));
    this.sweep = setInterval(() => this.checkDeadlines(), sweepMs);
    this.sweep.unref();
  }

  listen(host: string, port: number): Promise<net.AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port }, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as net.AddressInfo);
      });
    });
  }

  private accept(socket: net.Socket): void {
    const address = socket.remoteAddress ?? '';
    const fromAddress = this.perAddress.get(address) ?? 0;
    if (this.sessions.size >= this.connectionsMax || fromAddress >= this.limits.connectionsPerAddressMax) {
      this.refuse(socket, address, this.sessions.size >= this.connectionsMax ? 'connectionsMax' : 'connectionsPerAddressMax');
      return;
    }
    this.perAddress.set(address, fromAddress + 1);
    const session = new NbdSession(socket, {
      registry: this.registry,
      pool: this.pool,
      budget: this.budget,
      poller: this.poller,
      log: this.log,
      handshakeTimeoutMs: this.limits.handshakeTimeoutMs,
      payloadStallMs: this.limits.payloadStallMs,
      replyStallMs: this.limits.replyStallMs,
      tls: this.tls,
      access: this.access,
    });
    this.sessions.add(session);
    void session.closedPromise().then(() => {
      this.sessions.delete(session);
      const left = (this.perAddress.get(address) ?? 1) - 1;
      if (left === 0) this.perAddress.delete(address);
      else this.perAddress.set(address, left);
    });
  }

  /** Closes a connection over a cap; logs the first refusal, then a count every refusalLogMs. */
  private refuse(socket: net.Socket, address: string, bound: 'connectionsMax' | 'connectionsPerAddressMax'): void {
    socket.on('error', () => undefined);
    socket.destroy();
    this.refusedSince += 1;
    const now = Date.now();
    if (now - this.refusalLoggedAt < refusalLogMs) return;
    this.log.warn({
      address, bound, connections: this.sessions.size, connectionsMax: this.connectionsMax,
      connectionsPerAddressMax: this.limits.connectionsPerAddressMax, refused: this.refusedSince,
    }, 'refusing NBD connection over the cap');
    this.refusalLoggedAt = now;
    this.refusedSince = 0;
  }

  /** SIGHUP: re-reads the TLS files for new connections (a file that does not load keeps the old ones, logged). */
  reloadTls(): ReloadOutcome {
    return this.tls === undefined ? { part: 'nbd', state: 'off' } : this.tls.reload();
  }

  private checkDeadlines(): void {
    const now = Date.now();
    for (const session of this.sessions) session.checkDeadlines(now);
  }

  async close(): Promise<void> {
    const closing = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const session of this.sessions) session.close('array shutting down');
    await Promise.all([...this.sessions].map((s) => s.closedPromise()));
    await closing;
    clearInterval(this.sweep);
  }
}

/** The soft RLIMIT_NOFILE from /proc/self/limits ("Max open files  <soft>  <hard>  files"), if Linux shows it. */
export function softOpenFilesLimit(text?: string): number | undefined {
  let limits = text;
  if (limits === undefined) {
    try {
      limits = fs.readFileSync('/proc/self/limits', 'utf8');
    } catch {
      return undefined;
    }
  }
  const match = /^Max open files\s+(\d+|unlimited)\s/m.exec(limits);
  if (!match || match[1] === 'unlimited') return undefined;
  return Number(match[1]);
}
