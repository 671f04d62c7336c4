// Serves one volume as an NBD export. Which roles are exported, and read-only,
// is decided here: hosts write simplex volumes and P-VOLs, read S-VOLs; journal
// volumes are the array's own and are never exported.

import type { BlockExport } from '../nbd/index.js';
import type { StorageEngine, Volume, VolumeRole, Extent } from '../storage/index.js';
import { formatSize } from '../util/size.js';

const exportedRoles: ReadonlySet<VolumeRole> = new Set(['simplex', 'pvol', 'svol', 'command-device']);
const readOnlyRoles: ReadonlySet<VolumeRole> = new Set(['svol']);

export function isExported(volume: Volume): boolean {
  return exportedRoles.has(volume.meta.role);
}

export class VolumeExport implements BlockExport {
  constructor(private readonly volume: Volume, private readonly engine: StorageEngine) {}

  get name(): string {
    return this.volume.name;
  }

  get sizeBytes(): number {
    return this.volume.sizeBytes;
  }

  get readOnly(): boolean {
    return readOnlyRoles.has(this.volume.meta.role);
  }

  get description(): string {
    const meta = this.volume.meta;
    return `Twinstore ${this.engine.arrayId} LUN ${meta.lun} ${meta.role} ${formatSize(meta.sizeBytes)}`;
  }

  read(offset: number, buffer: Buffer): Promise<void> {
    return this.volume.read(offset, buffer);
  }

  write(offset: number, data: Buffer): Promise<void> {
    return this.volume.write(offset, data);
  }

  writeZeroes(offset: number, length: number, keepAllocated: boolean): Promise<void> {
    return this.volume.writeZeroes(offset, length, keepAllocated);
  }

  trim(offset: number, length: number): Promise<void> {
    return this.volume.writeZeroes(offset, length, false);
  }

  zeroIsFast(offset: number, length: number): boolean {
    return this.volume.zeroIsFast(offset, length);
  }

  flush(): Promise<void> {
    return this.engine.flush();
  }

  blockStatus(offset: number, length: number, extentsMax: number): Extent[] {
    return this.volume.blockStatus(offset, length, extentsMax);
  }
}
