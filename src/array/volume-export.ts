// Serves one volume as an NBD export. Which roles are exported, and read-only,
// is decided here: hosts write simplex volumes and P-VOLs, read S-VOLs (unless
// a split --rw made them writable, tracked); journal volumes are the array's
// own and are never exported.

import { TwinstoreError } from '../errors.js';
import type { BlockExport } from '../nbd/index.js';
import type { StorageEngine, Volume, VolumeRole, Extent } from '../storage/index.js';
import { formatSize } from '../util/size.js';
import type { CommandDevice } from './command-device.js';

const exportedRoles: ReadonlySet<VolumeRole> = new Set(['simplex', 'pvol', 'svol', 'command-device']);
const readOnlyRoles: ReadonlySet<VolumeRole> = new Set(['svol']);

export function isExported(volume: Volume): boolean {
  return exportedRoles.has(volume.meta.role);
}

/** The replicated write path of a P-VOL (journaled) or of an S-VOL split --rw (tracked), when the volume is one. */
export interface JournaledWriter {
  write(lun: number, offset: number, data: Buffer): Promise<void>;
  writeZeroes(lun: number, offset: number, length: number, keepAllocated: boolean): Promise<void>;
  trim(lun: number, offset: number, length: number): Promise<void>;
  flush(): Promise<void>;
}

export type WriterLookup = (volume: Volume) => { group: JournaledWriter; lun: number } | undefined;

export class VolumeExport implements BlockExport {
  constructor(
    private readonly volume: Volume,
    private readonly engine: StorageEngine,
    private readonly journaled: WriterLookup = () => undefined,
    /** For a command-device volume: runs the request a write puts at offset 0. */
    private readonly commandDevice?: CommandDevice,
  ) {}

  get name(): string {
    return this.volume.name;
  }

  get sizeBytes(): number {
    return this.volume.sizeBytes;
  }

  get readOnly(): boolean {
    return readOnlyRoles.has(this.volume.meta.role) && this.journaled(this.volume) === undefined;
  }

  get description(): string {
    const meta = this.volume.meta;
    return `Twinstore ${this.engine.arrayId} LUN ${meta.lun} ${meta.role} ${formatSize(meta.sizeBytes)}`;
  }

  read(offset: number, buffer: Buffer): Promise<void> {
    return this.volume.read(offset, buffer);
  }

  write(offset: number, data: Buffer): Promise<void> {
    if (this.commandDevice) return this.commandDevice.write(offset, data);
    const master = this.journaled(this.volume);
    if (!master && this.unjournaledPvol()) return this.refuse();
    return master ? master.group.write(master.lun, offset, data) : this.volume.write(offset, data);
  }

  writeZeroes(offset: number, length: number, keepAllocated: boolean): Promise<void> {
    const master = this.journaled(this.volume);
    if (!master && this.unjournaledPvol()) return this.refuse();
    return master ? master.group.writeZeroes(master.lun, offset, length, keepAllocated) : this.volume.writeZeroes(offset, length, keepAllocated);
  }

  trim(offset: number, length: number): Promise<void> {
    const master = this.journaled(this.volume);
    if (!master && this.unjournaledPvol()) return this.refuse();
    return master ? master.group.trim(master.lun, offset, length) : this.volume.writeZeroes(offset, length, false);
  }

  /**
   * A P-VOL with no sending group: its group is changing role (a swap's demotion stops the group
   * before the volume turns S-VOL and its sessions close; a pair delete before it turns simplex).
   * A write let through here would be acknowledged but never journaled: the other array would
   * never get it, and a swap would lose it.
   */
  private unjournaledPvol(): boolean {
    return this.volume.meta.role === 'pvol';
  }

  private refuse(): Promise<never> {
    return Promise.reject(new TwinstoreError('VOLUME_FENCED', `volume ${this.volume.name} is changing its role: host writes are refused`));
  }

  zeroIsFast(offset: number, length: number): boolean {
    return this.volume.zeroIsFast(offset, length);
  }

  flush(): Promise<void> {
    const master = this.journaled(this.volume);
    return master ? master.group.flush() : this.engine.flush();
  }

  blockStatus(offset: number, length: number, extentsMax: number): Extent[] {
    return this.volume.blockStatus(offset, length, extentsMax);
  }
}
