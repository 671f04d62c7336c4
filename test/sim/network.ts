// The simulated network (issue 5): the link transport of every simulated
// array, in process. A connection is two SimSockets; whatever one side writes
// in one turn of its event loop (FrameConnection corks, so that is whole
// frames) travels as one packet whose delivery the kernel schedules after a
// seeded delay. Per direction between two arrays the network can be:
//   delayed      packets take 5-200 ms instead of 0-2 ms (order kept);
//   partitioned  new connections time out (one way or both); on open connections the
//                bytes are held, as TCP retransmits them, and arrive in order once it
//                heals (unless the connection was closed meanwhile); a lossy partition
//                (a broken middlebox) loses them instead, which TCP never does;
//   clogged      packets wait until the clog ends, then flow in order;
// and single packets can be dropped, duplicated or swapped with the next one,
// which TCP never does: the link's framing and request ids must turn each into
// a closed connection or a timeout, never into a wrong answer. A reset ends
// every connection between the two at once.

import { Duplex } from 'node:stream';
import type { AddressInfo } from 'node:net';
import type { LinkIdentity, LinkListener, LinkSocket, LinkTransport } from '../../src/link/index.js';
import type { Kernel } from './kernel.js';

interface DirectionState {
  delayed: boolean;
  partitioned: boolean;
  /** While partitioned, bytes on open connections are lost, not held. */
  lossy: boolean;
  clogUntilMs: number;
  /** What open connections sent while partitioned, to go out in order at the heal. */
  held: Array<() => void>;
}

export interface PacketFaults {
  drop: number;
  duplicate: number;
  reorder: number;
}

export class SimNetwork {
  private readonly listeners = new Map<string, { owner: string; accept: (socket: LinkSocket, peerId: string) => void }>();
  private readonly directions = new Map<string, DirectionState>();
  private readonly sockets = new Set<SimSocket>();
  packetFaults: PacketFaults = { drop: 0, duplicate: 0, reorder: 0 };
  stats = { packets: 0, dropped: 0, duplicated: 0, reordered: 0, partitionHeld: 0, partitionLost: 0, resets: 0, connections: 0, refused: 0 };

  constructor(readonly kernel: Kernel) {}

  direction(from: string, to: string): DirectionState {
    const key = `${from}>${to}`;
    let state = this.directions.get(key);
    if (state === undefined) {
      state = { delayed: false, partitioned: false, lossy: false, clogUntilMs: 0, held: [] };
      this.directions.set(key, state);
    }
    return state;
  }

  heal(): void {
    for (const state of this.directions.values()) {
      Object.assign(state, { delayed: false, clogUntilMs: 0 });
      this.setPartitioned(state, false);
    }
    this.packetFaults = { drop: 0, duplicate: 0, reorder: 0 };
  }

  /** Partitions one direction, or heals it: then what open connections sent meanwhile goes out, in order. */
  setPartitioned(state: DirectionState, partitioned: boolean, lossy = false): void {
    state.partitioned = partitioned;
    state.lossy = partitioned && lossy;
    if (!partitioned) for (const release of state.held.splice(0)) release();
  }

  /**
   * Ends every connection between a and b. Each side's socket is destroyed in an event of its own
   * array, so what its code starts on the way (a reconnect timer) belongs to that array and dies
   * with it at a crash; run in the simulator's event, it outlived crashes or was lost with another's.
   */
  reset(a: string, b: string): void {
    this.stats.resets += 1;
    for (const socket of [...this.sockets]) {
      if ((socket.local === a && socket.remote === b) || (socket.local === b && socket.remote === a)) {
        this.kernel.schedule(0, `${socket.local} connection reset`, () => socket.destroy(), socket.local);
      }
    }
  }

  /** An array went down: its listener is gone and its sockets die with it (the peer hears nothing). */
  crash(owner: string): void {
    for (const [key, listener] of this.listeners) if (listener.owner === owner) this.listeners.delete(key);
    for (const socket of [...this.sockets]) {
      if (socket.local === owner) {
        socket.dead = true;
        this.sockets.delete(socket);
      }
    }
  }

  /** The transport one array uses. */
  transport(owner: string): LinkTransport {
    return {
      connect: (address, identity) => this.connect(owner, `${address.host}:${address.port}`, identity),
      listen: (host, port, _identity, accept) => this.listen(owner, host, port, accept),
    };
  }

  private listen(owner: string, host: string, port: number, accept: (socket: LinkSocket, peerId: string) => void): Promise<LinkListener> {
    const key = `${host}:${port}`;
    this.listeners.set(key, { owner, accept });
    const address: AddressInfo = { address: host, port, family: 'IPv4' };
    return Promise.resolve({
      address,
      close: () => {
        if (this.listeners.get(key)?.owner === owner) this.listeners.delete(key);
        return Promise.resolve();
      },
    });
  }

  private connect(owner: string, target: string, identity: LinkIdentity): LinkSocket {
    const client = new SimSocket(this, owner, '?');
    this.sockets.add(client);
    const listener = this.listeners.get(target);
    const remote = listener?.owner ?? '?';
    client.remote = remote;
    const there = this.direction(owner, remote);
    const back = this.direction(remote, owner);
    if (listener === undefined) {
      // Nobody listening: refused after a round trip.
      this.stats.refused += 1;
      this.kernel.schedule(this.delayMs(owner, remote), `${owner} connect refused`, () => client.destroy(Object.assign(new Error(`connect ECONNREFUSED ${target}`), { code: 'ECONNREFUSED' })), owner);
      return client;
    }
    if (there.partitioned || back.partitioned) return client; // the SYN or its answer is lost: the caller's deadline ends it
    this.kernel.schedule(this.delayMs(owner, remote), `${remote} accept ${owner}`, () => {
      const current = this.listeners.get(target);
      if (current === undefined || current.owner !== remote || client.destroyed) return;
      const server = new SimSocket(this, remote, owner);
      this.sockets.add(server);
      server.peer = client;
      client.peer = server;
      this.stats.connections += 1;
      current.accept(server, identity.arrayId);
      this.kernel.schedule(this.delayMs(remote, owner), `${owner} connected to ${remote}`, () => {
        if (!client.destroyed) client.emit('secureConnect');
      }, owner);
    }, remote);
    return client;
  }

  delayMs(from: string, to: string): number {
    const state = this.direction(from, to);
    const base = state.delayed ? this.kernel.int(5, 200) : this.kernel.int(0, 2);
    return Math.max(base, state.clogUntilMs - this.kernel.nowMs);
  }

  /** One turn's bytes from `socket` to its peer. */
  send(socket: SimSocket, packet: Buffer): void {
    const peer = socket.peer;
    if (peer === undefined) return;
    this.stats.packets += 1;
    const state = this.direction(socket.local, socket.remote);
    if (state.partitioned && state.lossy) {
      this.stats.partitionLost += 1;
      return;
    }
    if (state.partitioned) {
      this.stats.partitionHeld += 1;
      state.held.push(() => this.transmit(socket, peer, packet));
      return;
    }
    this.transmit(socket, peer, packet);
  }

  private transmit(socket: SimSocket, peer: SimSocket, packet: Buffer): void {
    if (socket.dead) return;
    const { kernel, packetFaults } = this;
    if (kernel.chance(packetFaults.drop)) {
      this.stats.dropped += 1;
      return;
    }
    const copies = kernel.chance(packetFaults.duplicate) ? 2 : 1;
    if (copies === 2) this.stats.duplicated += 1;
    let at = Math.max(kernel.nowMs + this.delayMs(socket.local, socket.remote), socket.lastArrivalMs);
    if (kernel.chance(packetFaults.reorder) && socket.lastArrivalMs > kernel.nowMs) {
      // Overtakes the packet before it.
      at = kernel.nowMs;
      this.stats.reordered += 1;
    } else {
      socket.lastArrivalMs = at;
    }
    for (let i = 0; i < copies; i++) {
      kernel.schedule(at - kernel.nowMs, `${peer.local} receive ${packet.length}B from ${socket.local}`, () => peer.arrive(packet), peer.local);
    }
  }

  /** `socket` ended or was destroyed: the peer hears of it after the usual delay (unless cut off). */
  closed(socket: SimSocket, how: 'end' | 'destroy'): void {
    this.sockets.delete(socket);
    const peer = socket.peer;
    if (peer === undefined || socket.dead) return;
    const state = this.direction(socket.local, socket.remote);
    if (state.partitioned) {
      if (!state.lossy) state.held.push(() => this.tellClosed(socket, peer, how));
      return;
    }
    this.tellClosed(socket, peer, how);
  }

  private tellClosed(socket: SimSocket, peer: SimSocket, how: 'end' | 'destroy'): void {
    if (socket.dead) return;
    const at = Math.max(this.kernel.nowMs + this.delayMs(socket.local, socket.remote), socket.lastArrivalMs);
    this.kernel.schedule(at - this.kernel.nowMs, `${peer.local} hears ${how} from ${socket.local}`, () => {
      if (how === 'end') peer.push(null);
      else peer.destroy();
    }, peer.local);
  }
}

export class SimSocket extends Duplex {
  peer: SimSocket | undefined;
  lastArrivalMs = 0;
  /** Its array crashed: nothing more leaves it. */
  dead = false;
  remoteAddress: string;
  remotePort = 1;

  constructor(private readonly network: SimNetwork, readonly local: string, public remote: string) {
    super({ allowHalfOpen: false });
    this.remoteAddress = remote;
  }

  arrive(packet: Buffer): void {
    if (this.destroyed) return;
    this.push(packet);
  }

  override _read(): void {}

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (!this.dead) this.network.send(this, chunk);
    callback();
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (error?: Error | null) => void): void {
    if (!this.dead) this.network.send(this, Buffer.concat(chunks.map((c) => c.chunk)));
    callback();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.network.closed(this, 'end');
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.network.closed(this, 'destroy');
    callback(error);
  }
}
