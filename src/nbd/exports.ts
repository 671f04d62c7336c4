// What the NBD server serves: named exports, each backed by a volume through the
// small BlockExport surface (so a P-VOL can later journal its writes without the
// server knowing), and the open sessions of each, so that deleting a volume or
// changing its role can close them; and each export's request counts
// (io-stats.ts), kept while the volume lives, through role changes.

import type { Extent } from '../storage/index.js';
import { VolumeIoStats } from './io-stats.js';

export interface BlockExport {
  readonly name: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly description: string;
  read(offset: number, buffer: Buffer): Promise<void>;
  write(offset: number, data: Buffer): Promise<void>;
  writeZeroes(offset: number, length: number, keepAllocated: boolean): Promise<void>;
  trim(offset: number, length: number): Promise<void>;
  /** True when zeroing needs no data writes (NBD_CMD_FLAG_FAST_ZERO). */
  zeroIsFast(offset: number, length: number): boolean;
  /** Durable: every write that completed before the call, on any connection. */
  flush(): Promise<void>;
  blockStatus(offset: number, length: number, extentsMax: number): Extent[];
}

export interface ExportSession {
  /** Stops taking requests, answers those in flight, then closes. */
  close(reason: string): void;
}

export class ExportRegistry {
  private readonly exports = new Map<string, BlockExport>();
  private readonly sessions = new Map<string, Set<ExportSession>>();
  private readonly stats = new Map<string, VolumeIoStats>();

  set(exported: BlockExport): void {
    this.exports.set(exported.name, exported);
  }

  /** Removes the export and closes its sessions. */
  remove(name: string, reason: string): void {
    this.exports.delete(name);
    this.closeSessions(name, reason);
  }

  /** The volume is gone: its export, its sessions and its counts. */
  forget(name: string, reason: string): void {
    this.remove(name, reason);
    this.stats.delete(name);
  }

  /** The request counts of an export, made on first use. */
  ioStats(name: string): VolumeIoStats {
    let stats = this.stats.get(name);
    if (!stats) {
      stats = new VolumeIoStats();
      this.stats.set(name, stats);
    }
    return stats;
  }

  /** Every volume's counts, by name. */
  allIoStats(): ReadonlyMap<string, VolumeIoStats> {
    return this.stats;
  }

  get(name: string): BlockExport | undefined {
    return this.exports.get(name);
  }

  list(): BlockExport[] {
    return [...this.exports.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  attach(name: string, session: ExportSession): void {
    let set = this.sessions.get(name);
    if (!set) {
      set = new Set();
      this.sessions.set(name, set);
    }
    set.add(session);
  }

  detach(name: string, session: ExportSession): void {
    this.sessions.get(name)?.delete(session);
  }

  sessionCount(name: string): number {
    return this.sessions.get(name)?.size ?? 0;
  }

  closeSessions(name: string, reason: string): void {
    for (const session of this.sessions.get(name) ?? []) session.close(reason);
  }
}
