// A TCP proxy standing in for the network between two arrays (DESIGN.md §10:
// delays, splits, drops, cuts). The receiving array is given the proxy's
// address as its peer's link (`peer add site-a --link PROXY`), so everything
// it pulls passes through here. Modes:
//   pass   bytes go through at once;
//   slow   each chunk waits 1-20 ms and is split at random points (order kept);
//   stall  nothing moves and no close is passed on; held bytes go on at `pass`;
//   cut    every connection is reset, and new ones are reset at once until `pass`.
// Runs in the test process and is closed in t.after.

import net from 'node:net';
import type { TestContext } from 'node:test';
import { Prng } from '../../src/util/prng.js';

export type ProxyMode = 'pass' | 'slow' | 'stall' | 'cut';

interface Direction {
  to: net.Socket;
  queue: Buffer[];
  pumping: boolean;
}

interface Pair {
  sockets: [net.Socket, net.Socket];
  directions: [Direction, Direction];
}

export class LinkProxy {
  private readonly pairs = new Set<Pair>();
  private modeNow: ProxyMode = 'pass';
  private readonly prng: Prng;
  private wakers = new Set<() => void>();
  connectionsSeen = 0;

  private constructor(private readonly server: net.Server, private readonly target: { host: string; port: number }, seed: number) {
    this.prng = new Prng(seed);
  }

  static async start(t: TestContext | undefined, target: string, seed = 1): Promise<LinkProxy> {
    const at = target.lastIndexOf(':');
    const server = net.createServer();
    const proxy = new LinkProxy(server, { host: target.slice(0, at), port: Number(target.slice(at + 1)) }, seed);
    server.on('connection', (client) => proxy.accept(client));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t?.after(() => proxy.close());
    return proxy;
  }

  get address(): string {
    const address = this.server.address() as net.AddressInfo;
    return `127.0.0.1:${address.port}`;
  }

  get mode(): ProxyMode {
    return this.modeNow;
  }

  setMode(mode: ProxyMode): void {
    this.modeNow = mode;
    if (mode === 'cut') for (const pair of [...this.pairs]) this.drop(pair);
    for (const wake of [...this.wakers]) wake();
  }

  async close(): Promise<void> {
    this.setMode('cut');
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    client.on('error', () => undefined);
    if (this.modeNow === 'cut') {
      client.resetAndDestroy();
      return;
    }
    this.connectionsSeen += 1;
    const upstream = net.connect(this.target.port, this.target.host);
    upstream.on('error', () => undefined);
    const pair: Pair = {
      sockets: [client, upstream],
      directions: [{ to: upstream, queue: [], pumping: false }, { to: client, queue: [], pumping: false }],
    };
    this.pairs.add(pair);
    client.on('data', (chunk: Buffer) => this.enqueue(pair.directions[0], chunk));
    upstream.on('data', (chunk: Buffer) => this.enqueue(pair.directions[1], chunk));
    const end = (): void => {
      if (this.modeNow === 'stall') {
        // A stalled network passes no close on; the end is handled when it passes again.
        this.whenNotStalled(end);
        return;
      }
      this.drop(pair);
    };
    client.on('close', end);
    upstream.on('close', end);
  }

  private drop(pair: Pair): void {
    if (!this.pairs.delete(pair)) return;
    for (const socket of pair.sockets) {
      if (!socket.destroyed) socket.resetAndDestroy();
    }
  }

  private whenNotStalled(fn: () => void): void {
    const waker = (): void => {
      if (this.modeNow === 'stall') return;
      this.wakers.delete(waker);
      fn();
    };
    this.wakers.add(waker);
  }

  private enqueue(direction: Direction, chunk: Buffer): void {
    direction.queue.push(chunk);
    if (!direction.pumping) void this.pump(direction);
  }

  /** Moves queued chunks in order, as the mode allows. */
  private async pump(direction: Direction): Promise<void> {
    direction.pumping = true;
    try {
      while (direction.queue.length > 0 && !direction.to.destroyed) {
        if (this.modeNow === 'stall') {
          await new Promise<void>((resolve) => this.whenNotStalled(resolve));
          continue;
        }
        if (this.modeNow === 'cut') {
          direction.queue.length = 0;
          break;
        }
        const chunk = direction.queue.shift()!;
        if (this.modeNow === 'pass') {
          direction.to.write(chunk);
          continue;
        }
        await this.sendSlowly(direction, chunk);
      }
    } finally {
      direction.pumping = false;
    }
  }

  private async sendSlowly(direction: Direction, chunk: Buffer): Promise<void> {
    let at = 0;
    while (at < chunk.length) {
      const piece = Math.min(chunk.length - at, 1 + this.prng.below(Math.max(1, chunk.length)));
      await new Promise((resolve) => setTimeout(resolve, 1 + this.prng.below(20)));
      if (direction.to.destroyed) return;
      direction.to.write(chunk.subarray(at, at + piece));
      at += piece;
    }
  }
}
