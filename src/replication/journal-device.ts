// A journal volume as the journal's device: positional I/O on the volume and
// durability through the engine's flush (one fdatasync round for all drives,
// so the same round also makes the P-VOL writes durable that the records
// describe).

import type { JournalDevice } from '../journal/index.js';
import type { StorageEngine, Volume } from '../storage/index.js';

export class VolumeJournalDevice implements JournalDevice {
  constructor(private readonly volume: Volume, private readonly engine: StorageEngine) {}

  get sizeBytes(): number {
    return this.volume.sizeBytes;
  }

  read(offset: number, buffer: Buffer): Promise<void> {
    return this.volume.read(offset, buffer);
  }

  write(offset: number, data: Buffer): Promise<void> {
    return this.volume.write(offset, data);
  }

  flush(): Promise<void> {
    return this.engine.syncVolumeData(this.volume.meta.id);
  }
}
