// A durable set of regions (docs/architecture.md §3.4 activity log, §6 region bitmaps):
// marking a region that is not yet in the set commits it to the array
// metadata before the caller goes on, so the mark is durable before the data
// write it covers is issued. Concurrent marks share one commit.

import type { StorageEngine } from '../storage/index.js';

export class DurableRegionSet {
  private readonly regions: Set<number>;
  private pending = new Set<number>();
  private committing: Promise<void> | undefined;

  constructor(private readonly engine: StorageEngine, readonly name: string, readonly regionBytes: number) {
    this.regions = engine.regionSet(name);
  }

  get size(): number {
    return this.regions.size;
  }

  has(region: number): boolean {
    return this.regions.has(region);
  }

  values(): number[] {
    return [...this.regions].sort((a, b) => a - b);
  }

  regionsOf(offset: number, length: number): number[] {
    const first = Math.floor(offset / this.regionBytes);
    const last = Math.floor((offset + Math.max(length, 1) - 1) / this.regionBytes);
    const out: number[] = [];
    for (let r = first; r <= last; r++) out.push(r);
    return out;
  }

  /** Resolves once every region of the range is durably in the set. */
  async mark(offset: number, length: number): Promise<void> {
    const missing = this.regionsOf(offset, length).filter((r) => !this.regions.has(r));
    if (missing.length === 0) return;
    for (const r of missing) this.pending.add(r);
    while (missing.some((r) => !this.regions.has(r))) {
      if (!this.committing) this.committing = this.commitPending();
      await this.committing;
    }
  }

  private async commitPending(): Promise<void> {
    const add = [...this.pending];
    this.pending = new Set();
    try {
      await this.engine.persist([{ t: 'regions', set: this.name, add }]);
      for (const r of add) this.regions.add(r);
    } finally {
      this.committing = undefined;
    }
  }

  /** Adds regions durably without waiting per write (folding journal records into a bitmap). */
  async addAll(regions: number[]): Promise<void> {
    const add = regions.filter((r) => !this.regions.has(r));
    if (add.length === 0) return;
    await this.engine.persist([{ t: 'regions', set: this.name, add }]);
    for (const r of add) this.regions.add(r);
  }

  async clear(): Promise<void> {
    await this.engine.persist([{ t: 'regions', set: this.name, clear: true }]);
    this.regions.clear();
  }

  async remove(regions: number[]): Promise<void> {
    if (regions.length === 0) return;
    await this.engine.persist([{ t: 'regions', set: this.name, remove: regions }]);
    for (const r of regions) this.regions.delete(r);
  }
}
