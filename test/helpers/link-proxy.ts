// A TCP proxy standing in for the network between two arrays (docs/architecture.md §10:
// delays, splits, drops, cuts). The receiving array is given the proxy's
// address as its peer's link (`peer add site-a --link PROXY`), so everything
// it pulls passes through here. Modes (setMode(mode, options)):
//   pass       bytes go through at once;
//   delay      each chunk is held `delayMs` plus 0..`jitterMs` after it
//              arrived (a latency, so chunks wait side by side), order kept;
//   bandwidth  each direction carries at most `bytesPerSecond` (pieces of at
//              most 16 KiB, paced), order kept;
//   split      each chunk goes out as 2-4 writes cut at random points, a
//              timer tick apart (sockets with Nagle off), order kept;
//   slow       split and delay together: each piece waits 1-20 ms (the first
//              mode of this proxy, kept for its callers);
//   drop       a blackhole: every byte is discarded and no close is passed on.
//              A connection that lost bytes stays dead after the mode changes
//              (it keeps discarding, as a stream with a hole cannot go on), so
//              the arrays notice only through their heartbeats and timeouts and
//              must reconnect; a connection opened during the drop is never
//              connected upstream (its SYN went nowhere). No reset is sent;
//   stall      nothing moves and no close is passed on; held bytes go on when
//              the mode changes (the stream is intact);
//   reset      every connection is destroyed with a TCP RST
//              (socket.resetAndDestroy), and new ones are reset at once until
//              the mode changes. `cut` is the same mode under its first name.
// Everything random comes from the seed. Runs in the test process and is
// closed in t.after. `stats` counts what the modes did (bytes dropped,
// connections reset, writes split, chunks delayed, bytes paced).

import net from 'node:net';
import type { TestContext } from 'node:test';
import { Prng } from '../../src/util/prng.js';

export type ProxyMode = 'pass' | 'delay' | 'bandwidth' | 'split' | 'slow' | 'drop' | 'stall' | 'reset' | 'cut';

export interface ProxyModeOptions {
  /** delay: the fixed part of the latency (default 20 ms). */
  delayMs?: number;
  /** delay: a random extra of 0..jitterMs per chunk (default 10 ms). */
  jitterMs?: number;
  /** bandwidth: bytes per second in each direction (default 1 MB/s). */
  bytesPerSecond?: number;
}

export interface ProxyStats {
  connections: number;
  /** Connections destroyed with RST by `reset`/`cut` (accepted ones and ones already open). */
  resets: number;
  /** Bytes discarded by `drop` (and by connections it left dead). */
  bytesDropped: number;
  /** Connections a drop left dead. */
  blackholed: number;
  /** Chunks written in more than one piece (`split`, `slow`). */
  splitWrites: number;
  /** Chunks held by `delay`. */
  delayedChunks: number;
  /** Bytes paced by `bandwidth`. */
  pacedBytes: number;
}

interface Chunk {
  data: Buffer;
  atMs: number;
}

interface Direction {
  to: net.Socket;
  queue: Chunk[];
  pumping: boolean;
  /** bandwidth: when the direction is free to send again. */
  nextFreeMs: number;
}

interface Pair {
  sockets: net.Socket[];
  directions: Direction[];
  /** A drop discarded some of its bytes: it discards everything from now on. */
  dead: boolean;
}

const pacePieceBytes = 16 * 1024;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

export class LinkProxy {
  private readonly pairs = new Set<Pair>();
  /** Connections accepted during a drop (never connected upstream). */
  private readonly blackholes = new Set<net.Socket>();
  private modeNow: ProxyMode = 'pass';
  private optionsNow: Required<ProxyModeOptions> = { delayMs: 20, jitterMs: 10, bytesPerSecond: 1_000_000 };
  private readonly prng: Prng;
  private wakers = new Set<() => void>();
  readonly stats: ProxyStats = { connections: 0, resets: 0, bytesDropped: 0, blackholed: 0, splitWrites: 0, delayedChunks: 0, pacedBytes: 0 };

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

  /** Connections accepted so far (the first counter of this proxy). */
  get connectionsSeen(): number {
    return this.stats.connections;
  }

  setMode(mode: ProxyMode, options: ProxyModeOptions = {}): void {
    this.modeNow = mode;
    this.optionsNow = {
      delayMs: options.delayMs ?? 20,
      jitterMs: options.jitterMs ?? 10,
      bytesPerSecond: options.bytesPerSecond ?? 1_000_000,
    };
    if (this.resetting) {
      for (const pair of [...this.pairs]) this.stats.resets += this.drop(pair) ? 1 : 0;
      for (const socket of [...this.blackholes]) {
        this.blackholes.delete(socket);
        this.stats.resets += 1;
        socket.resetAndDestroy();
      }
    }
    if (mode === 'drop') for (const pair of this.pairs) this.kill(pair);
    for (const wake of [...this.wakers]) wake();
  }

  async close(): Promise<void> {
    this.setMode('reset');
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private get resetting(): boolean {
    return this.modeNow === 'reset' || this.modeNow === 'cut';
  }

  /** stall and drop pass no close on. */
  private get holding(): boolean {
    return this.modeNow === 'stall' || this.modeNow === 'drop';
  }

  private accept(client: net.Socket): void {
    client.on('error', () => undefined);
    this.stats.connections += 1;
    if (this.resetting) {
      this.stats.resets += 1;
      client.resetAndDestroy();
      return;
    }
    client.setNoDelay(true);
    if (this.modeNow === 'drop') {
      // A blackholed SYN: the peer never hears of it; everything sent is lost.
      this.stats.blackholed += 1;
      this.blackholes.add(client);
      client.on('data', (chunk: Buffer) => {
        this.stats.bytesDropped += chunk.length;
      });
      const end = (): void => {
        if (this.holding) {
          this.whenFlowing(end);
          return;
        }
        this.blackholes.delete(client);
        if (!client.destroyed) client.destroy();
      };
      client.on('close', end);
      return;
    }
    const upstream = net.connect(this.target.port, this.target.host);
    upstream.on('error', () => undefined);
    upstream.setNoDelay(true);
    const pair: Pair = {
      sockets: [client, upstream],
      directions: [{ to: upstream, queue: [], pumping: false, nextFreeMs: 0 }, { to: client, queue: [], pumping: false, nextFreeMs: 0 }],
      dead: false,
    };
    this.pairs.add(pair);
    client.on('data', (chunk: Buffer) => this.enqueue(pair, pair.directions[0]!, chunk));
    upstream.on('data', (chunk: Buffer) => this.enqueue(pair, pair.directions[1]!, chunk));
    const end = (): void => {
      if (this.holding) {
        // A stalled or blackholed network passes no close on; the end is handled when it flows again.
        this.whenFlowing(end);
        return;
      }
      this.drop(pair);
    };
    client.on('close', end);
    upstream.on('close', end);
  }

  /** Resets both sockets of a pair; false when it was gone already. */
  private drop(pair: Pair): boolean {
    if (!this.pairs.delete(pair)) return false;
    for (const socket of pair.sockets) {
      if (!socket.destroyed) socket.resetAndDestroy();
    }
    return true;
  }

  /** A drop: the pair discards what it holds and everything after. */
  private kill(pair: Pair): void {
    if (!pair.dead) this.stats.blackholed += 1;
    pair.dead = true;
    for (const direction of pair.directions) {
      for (const chunk of direction.queue) this.stats.bytesDropped += chunk.data.length;
      direction.queue.length = 0;
    }
  }

  private whenFlowing(fn: () => void): void {
    const waker = (): void => {
      if (this.holding) return;
      this.wakers.delete(waker);
      fn();
    };
    this.wakers.add(waker);
  }

  private enqueue(pair: Pair, direction: Direction, data: Buffer): void {
    if (pair.dead || this.modeNow === 'drop') {
      if (!pair.dead) this.kill(pair);
      this.stats.bytesDropped += data.length;
      return;
    }
    direction.queue.push({ data, atMs: Date.now() });
    if (!direction.pumping) void this.pump(pair, direction);
  }

  /** Moves queued chunks in order, as the mode allows. */
  private async pump(pair: Pair, direction: Direction): Promise<void> {
    direction.pumping = true;
    try {
      while (direction.queue.length > 0 && !direction.to.destroyed && !pair.dead) {
        if (this.holding) {
          await new Promise<void>((resolve) => this.whenFlowing(resolve));
          continue;
        }
        if (this.resetting) {
          direction.queue.length = 0;
          break;
        }
        const chunk = direction.queue.shift()!;
        switch (this.modeNow) {
          case 'pass':
            direction.to.write(chunk.data);
            break;
          case 'delay': {
            const { delayMs, jitterMs } = this.optionsNow;
            this.stats.delayedChunks += 1;
            await sleep(chunk.atMs + delayMs + this.prng.below(jitterMs + 1) - Date.now());
            this.send(pair, direction, chunk.data);
            break;
          }
          case 'bandwidth':
            await this.sendPaced(pair, direction, chunk.data);
            break;
          case 'split':
            await this.sendSplit(pair, direction, chunk.data, () => sleep(1));
            break;
          case 'slow':
            await this.sendSplit(pair, direction, chunk.data, () => sleep(1 + this.prng.below(20)));
            break;
          default:
            direction.to.write(chunk.data);
        }
      }
    } finally {
      direction.pumping = false;
    }
  }

  /** Writes unless the pair died meanwhile (a drop) or the socket is gone. */
  private send(pair: Pair, direction: Direction, data: Buffer): void {
    if (pair.dead) {
      this.stats.bytesDropped += data.length;
      return;
    }
    if (!direction.to.destroyed) direction.to.write(data);
  }

  /** The chunk in 2-4 pieces cut at random points, `wait` before each piece after the first. */
  private async sendSplit(pair: Pair, direction: Direction, data: Buffer, wait: () => Promise<void>): Promise<void> {
    if (data.length < 2) {
      this.send(pair, direction, data);
      return;
    }
    const cuts = new Set<number>();
    const wanted = Math.min(data.length - 1, 1 + this.prng.below(3));
    while (cuts.size < wanted) cuts.add(1 + this.prng.below(data.length - 1));
    const points = [0, ...[...cuts].sort((x, y) => x - y), data.length];
    this.stats.splitWrites += 1;
    for (let i = 0; i + 1 < points.length; i++) {
      if (i > 0) await wait();
      if (direction.to.destroyed) return;
      this.send(pair, direction, data.subarray(points[i], points[i + 1]));
    }
  }

  /** Paces the chunk to `bytesPerSecond` in this direction. */
  private async sendPaced(pair: Pair, direction: Direction, data: Buffer): Promise<void> {
    for (let at = 0; at < data.length; at += pacePieceBytes) {
      const piece = data.subarray(at, at + pacePieceBytes);
      const rate = this.optionsNow.bytesPerSecond;
      const start = Math.max(Date.now(), direction.nextFreeMs);
      direction.nextFreeMs = start + (piece.length * 1000) / rate;
      await sleep(direction.nextFreeMs - Date.now());
      if (direction.to.destroyed) return;
      this.stats.pacedBytes += piece.length;
      this.send(pair, direction, piece);
      if (this.modeNow !== 'bandwidth' && at + pacePieceBytes < data.length) {
        // The mode changed meanwhile: the rest goes back to the front of the queue, for the new mode.
        direction.queue.unshift({ data: data.subarray(at + pacePieceBytes), atMs: Date.now() });
        return;
      }
    }
  }
}
