// Byte-range locks for one volume, granted strictly in arrival order among
// overlapping ranges (docs/architecture.md §3.2): the second of two overlapping writes
// waits until the first has reached the volume, so writes reach a P-VOL in
// the order of the sequence numbers they take once granted, and a P-VOL and
// its S-VOL never diverge. Non-overlapping ranges never wait for each other.

interface Entry {
  start: number;
  end: number;
  granted: boolean;
  grant: () => void;
}

export type Unlock = () => void;

export class RangeLock {
  /** Held and waiting entries, in arrival order. */
  private entries: Entry[] = [];

  acquire(offset: number, length: number): Promise<Unlock> {
    return new Promise((resolve) => {
      const entry: Entry = { start: offset, end: offset + Math.max(length, 1), granted: false, grant: () => undefined };
      let released = false;
      const unlock = (): void => {
        if (released) return;
        released = true;
        this.entries = this.entries.filter((e) => e !== entry);
        this.grantWaiting();
      };
      entry.grant = () => resolve(unlock);
      this.entries.push(entry);
      this.grantWaiting();
    });
  }

  /** Ranges held or waiting; for tests and metrics. */
  get size(): number {
    return this.entries.length;
  }

  private grantWaiting(): void {
    for (let i = 0; i < this.entries.length; i++) {
      const entry = this.entries[i]!;
      if (entry.granted) continue;
      let blocked = false;
      for (let j = 0; j < i && !blocked; j++) {
        const earlier = this.entries[j]!;
        blocked = earlier.start < entry.end && entry.start < earlier.end;
      }
      if (!blocked) {
        entry.granted = true;
        entry.grant();
      }
    }
  }
}
