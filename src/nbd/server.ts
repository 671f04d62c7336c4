// The NBD listener: accepts TCP connections and gives each an NbdSession.
// Shutdown stops accepting, lets every session answer what it has in flight,
// then resolves.

import net from 'node:net';
import type { BufferPool } from '../util/buffer-pool.js';
import type { Logger } from '../util/log.js';
import type { ExportRegistry } from './exports.js';
import { NbdSession } from './session.js';
import { AdaptivePoller } from '../util/poller.js';

const connectionsMax = 1024;

export class NbdServer {
  private readonly server: net.Server;
  private readonly sessions = new Set<NbdSession>();

  private readonly poller: AdaptivePoller;

  constructor(
    private readonly registry: ExportRegistry,
    private readonly pool: BufferPool,
    private readonly log: Logger,
    options: { pollMicros: number },
  ) {
    this.poller = new AdaptivePoller(options.pollMicros);
    this.server = net.createServer({ pauseOnConnect: true }, (socket) => this.accept(socket));
    this.server.maxConnections = connectionsMax;
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
    const session = new NbdSession(socket, this.registry, this.pool, this.poller, this.log);
    this.sessions.add(session);
    void session.closedPromise().then(() => this.sessions.delete(session));
  }

  async close(): Promise<void> {
    const closing = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const session of this.sessions) session.close('array shutting down');
    await Promise.all([...this.sessions].map((s) => s.closedPromise()));
    await closing;
  }
}
