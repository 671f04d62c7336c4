// The simulated hosts (issue 5): a few connections to the volumes of the
// current primary, each with one request at a time, issuing overlapping
// stamped writes and FLUSHes at random. What they saw (issue and end of every
// request, acknowledged or failed) is the HostLog the write-order checker of
// test/helpers/write-order.ts reads; sim time is its clock, kept strictly
// increasing so that no two host events share an instant.

import { stampBlock, blockBytes, type HostLog, type Recovery } from '../helpers/write-order.js';
import type { Kernel } from './kernel.js';
import type { SimArray } from './array.js';

export const VOLUMES = ['vol0', 'vol1'];
export const VOLUME_BLOCKS = 48;
const CONNECTIONS = 3;

interface Connection {
  busy: boolean;
}

export class Hosts {
  readonly log: HostLog = { writes: new Map(), flushes: [] };
  readonly recoveries: Recovery[] = [];
  private nextId = 1;
  private lastUs = 0;
  /** Bumped when the hosts move or their array dies: answers of an older generation are ignored. */
  private generation = 0;
  private readonly connections: Connection[] = Array.from({ length: CONNECTIONS }, () => ({ busy: false }));
  private readonly inFlight = new Set<{ end: (acked: boolean) => void }>();
  /** The last acknowledgement or recovery: a P-VOL must hold everything up to it. */
  lastSettledUs = 0;
  stats = { writes: 0, acked: 0, failed: 0, flushes: 0 };

  constructor(private readonly kernel: Kernel, private readonly print: (line: string) => void) {}

  /** A strictly increasing host clock in µs. */
  stamp(): number {
    this.lastUs = Math.max(this.lastUs + 1, Math.round(this.kernel.nowMs * 1000));
    return this.lastUs;
  }

  get idle(): boolean {
    return this.inFlight.size === 0;
  }

  /** Ends every request in flight as failed (their array died, or the hosts moved). */
  abandon(why: string): void {
    this.generation += 1;
    for (const op of [...this.inFlight]) op.end(false);
    this.inFlight.clear();
    for (const c of this.connections) c.busy = false;
    if (why) this.print(`hosts H abandon in-flight requests: ${why}`);
  }

  /** Maybe starts a request on each idle connection to `array` (the primary). */
  tick(array: SimArray): void {
    for (const connection of this.connections) {
      if (connection.busy || !this.kernel.chance(0.3)) continue;
      if (this.kernel.chance(0.15)) this.flush(array, connection);
      else this.write(array, connection);
    }
  }

  private write(array: SimArray, connection: Connection): void {
    const volume = this.kernel.int(0, VOLUMES.length - 1);
    const blocks = this.kernel.int(1, 4);
    // A small hot area, so that writes overlap often.
    const firstBlock = this.kernel.chance(0.6) ? this.kernel.int(0, 7) : this.kernel.int(0, VOLUME_BLOCKS - blocks);
    const exported = array.exportOf(VOLUMES[volume]!);
    // The NBD server refuses writes on a read-only export (an S-VOL) before they reach the volume.
    if (exported === undefined || exported.readOnly) return;
    const id = this.nextId++;
    const data = Buffer.concat(Array.from({ length: blocks }, (_, i) => stampBlock(volume, id, firstBlock + i)));
    const write = { id, volume, firstBlock, blocks, conn: this.connections.indexOf(connection), issueUs: this.stamp(), endUs: undefined as number | undefined, acked: false };
    this.log.writes.set(id, write);
    this.stats.writes += 1;
    this.run(array, connection, `write #${id} vol${volume} blocks ${firstBlock}+${blocks}`, () => exported.write(firstBlock * blockBytes, data), (acked, endUs) => {
      write.endUs = endUs;
      write.acked = acked;
    });
  }

  private flush(array: SimArray, connection: Connection): void {
    const volume = this.kernel.int(0, VOLUMES.length - 1);
    const exported = array.exportOf(VOLUMES[volume]!);
    if (exported === undefined) return;
    const flush = { id: this.nextId++, volume, conn: this.connections.indexOf(connection), issueUs: this.stamp(), endUs: undefined as number | undefined, acked: false };
    this.log.flushes.push(flush);
    this.stats.flushes += 1;
    this.run(array, connection, `flush #${flush.id} vol${volume}`, () => exported.flush(), (acked, endUs) => {
      flush.endUs = endUs;
      flush.acked = acked;
    });
  }

  private run(array: SimArray, connection: Connection, what: string, start: () => Promise<void>, done: (acked: boolean, endUs: number) => void): void {
    connection.busy = true;
    const generation = this.generation;
    let ended = false;
    const op = {
      end: (acked: boolean): void => {
        if (ended) return;
        ended = true;
        this.inFlight.delete(op);
        connection.busy = false;
        const endUs = this.stamp();
        done(acked, endUs);
        if (acked) {
          this.stats.acked += 1;
          this.lastSettledUs = endUs;
        } else this.stats.failed += 1;
      },
    };
    this.inFlight.add(op);
    this.print(`${array.id} H ${what}`);
    let promise: Promise<void>;
    try {
      promise = start();
    } catch (error) {
      promise = Promise.reject(error);
    }
    promise.then(
      () => {
        if (generation !== this.generation) return;
        this.print(`${array.id} H ack ${what}`);
        op.end(true);
      },
      (error: unknown) => {
        if (generation !== this.generation) return;
        this.print(`${array.id} H fail ${what}: ${(error as Error).message}`);
        op.end(false);
      },
    );
  }

  /** The content the hosts find after a crash or a takeover: one more "write" to every block. */
  recover(images: Buffer[], why: string): void {
    const atUs = this.stamp();
    this.recoveries.push({ atUs, images });
    this.lastSettledUs = atUs;
    this.print(`hosts H recovery point (${why})`);
  }
}
