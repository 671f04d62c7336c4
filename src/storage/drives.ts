// The drives an array owns. Each drive carries a label in its first extent
// (magic, array id, data folder, drive id, extent size, checksummed) so that config
// order and paths may change without mixing drives up, and a drive of another
// array is never written. Extent i of a drive lives at byte (i + 1) × extentBytes.
// A labelled drive is never labelled again unless the label names this very data
// folder (a crash between labelling and registering): a second array given the
// same files (another array id, or a copied config with another data folder) is
// refused with DRIVE_OWNED, whether or not the owner is running. Block devices are
// also claimed for the process (O_EXCL, block-file.ts).

import crypto from 'node:crypto';
import path from 'node:path';
import { crc32c } from '@node-rs/crc32';
import { TwinstoreError } from '../errors.js';
import { openBlockFile } from './open-file.js';
import type { BlockFile } from './block-file.js';
import type { DriveMeta, MetaRecord, MetaState } from './meta-model.js';

const labelMagic = Buffer.from('TWINDRV1', 'ascii');
const labelBytes = 4096;

interface DriveLabel {
  arrayId: string;
  /** The owner's data folder, absolute. Labels written before it was recorded lack it. */
  dataDir?: string;
  driveId: string;
  extentBytes: number;
}

/** Who opens the drives: the array (its id is `state.arrayId`) with this data folder. */
export interface DriveOwner {
  dataDir: string;
}

/** What a drive holds: volumes (`data`), or journal volumes only (`journal`). */
export type DriveUse = 'data' | 'journal';

export interface DriveConfig {
  path: string;
  sizeBytes?: number | undefined;
  syncReadBytesMax?: number | undefined;
  syncWriteBytesMax?: number | undefined;
  /** Default `data`. Not stored on the drive: it steers new allocations only. */
  use?: DriveUse | undefined;
}

export interface OpenDrive {
  index: number;
  file: BlockFile;
  use: DriveUse;
}

/** Opens every configured drive, labelling new ones; returns records that register new drives. */
/** `onOpened` hears of every file opened, so a caller can close them if a later drive fails. */
export async function openDrives(
  configs: DriveConfig[],
  state: MetaState,
  usedDrives: Set<number>,
  owner: DriveOwner,
  onOpened: (drive: OpenDrive) => void,
): Promise<{ drives: OpenDrive[]; records: MetaRecord[] }> {
  const drives: OpenDrive[] = [];
  const records: MetaRecord[] = [];
  const dataDir = path.resolve(owner.dataDir);
  /** What each configured path carries, for a DRIVE_MISSING that says where the drive is not. */
  const found: string[] = [];
  for (const config of configs) {
    const file = openBlockFile(config.path, {
      kind: 'drive',
      syncReadBytesMax: config.syncReadBytesMax ?? 0,
      syncWriteBytesMax: config.syncWriteBytesMax ?? 0,
      ...(config.sizeBytes === undefined ? {} : { createSizeBytes: config.sizeBytes }),
    });
    onOpened({ index: -1, file, use: config.use ?? 'data' });
    const extentCount = Math.floor(file.sizeBytes / state.extentBytes) - 1;
    if (extentCount < 1) {
      throw new TwinstoreError('DRIVE_INVALID', `drive ${config.path} holds ${file.sizeBytes} bytes; it needs at least two extents of ${state.extentBytes}`);
    }
    const label = await readLabel(file);
    found.push(`${config.path} carries ${label === undefined ? 'no label (a new drive)' : `drive ${label.driveId}`}`);
    let index = label === undefined ? -1 : checkLabel(label, config.path, state, dataDir);
    if (index < 0) {
      index = state.drives.length + records.length;
      const drive: DriveMeta = { id: crypto.randomUUID(), path: config.path, extentCount, cleanFrom: 0 };
      await writeLabel(file, { arrayId: state.arrayId, dataDir, driveId: drive.id, extentBytes: state.extentBytes });
      records.push({ t: 'drive', index, drive });
    } else {
      const known = state.drives[index]!;
      if (extentCount < known.extentCount && usedDrives.has(index)) {
        throw new TwinstoreError('DRIVE_INVALID', `drive ${config.path} shrank from ${known.extentCount} to ${extentCount} extents`);
      }
      if (known.path !== config.path || known.extentCount !== extentCount) {
        records.push({ t: 'drive', index, drive: { ...known, path: config.path, extentCount } });
      }
    }
    if (drives.some((d) => d.index === index)) throw new TwinstoreError('DRIVE_INVALID', `drive ${config.path} is listed twice`);
    drives.push({ index, file, use: config.use ?? 'data' });
  }
  for (const index of usedDrives) {
    if (!drives.some((d) => d.index === index)) {
      const meta = state.drives[index]!;
      throw new TwinstoreError('DRIVE_MISSING', `drive ${meta.id} (last seen at ${meta.path}) holds volume extents, but no configured drive carries its label (${found.join('; ')})`);
    }
  }
  return { drives, records };
}

function checkLabel(label: DriveLabel, file: string, state: MetaState, dataDir: string): number {
  const owner = `array ${label.arrayId}${label.dataDir === undefined ? '' : ` (data folder ${label.dataDir})`}`;
  if (label.arrayId !== state.arrayId) {
    throw new TwinstoreError('DRIVE_OWNED', `drive ${file} belongs to ${owner}, not to ${state.arrayId}; it is left as it is`);
  }
  if (label.extentBytes !== state.extentBytes) {
    throw new TwinstoreError('DRIVE_INVALID', `drive ${file} was labelled with ${label.extentBytes}-byte extents, the array uses ${state.extentBytes}`);
  }
  const index = state.drives.findIndex((d) => d.id === label.driveId);
  if (index >= 0) return index;
  // Labelled, but not registered here. Only a label naming this very data folder comes from a crash
  // between labelling and registering (label it anew); any other is another array's drive.
  if (label.dataDir !== dataDir) {
    throw new TwinstoreError('DRIVE_OWNED', `drive ${file} belongs to ${owner}, whose metadata is not in ${dataDir}; it is left as it is (another array uses it, or used it: clear its first 4096 bytes only if none does)`);
  }
  return -1;
}

async function readLabel(file: BlockFile): Promise<DriveLabel | undefined> {
  const block = Buffer.alloc(labelBytes);
  await file.read(block, 0);
  if (block.every((byte) => byte === 0)) return undefined;
  const length = block.readUInt32BE(8);
  if (!block.subarray(0, 8).equals(labelMagic) || length > labelBytes - 16) {
    throw new TwinstoreError('DRIVE_INVALID', `drive ${file.path} holds data but no Twinstore label; refusing to overwrite it`);
  }
  const body = block.subarray(16, 16 + length);
  if (crc32c(body) !== block.readUInt32BE(12)) throw new TwinstoreError('DRIVE_INVALID', `drive ${file.path} has a damaged label`);
  return JSON.parse(body.toString('utf8')) as DriveLabel;
}

async function writeLabel(file: BlockFile, label: DriveLabel): Promise<void> {
  const block = Buffer.alloc(labelBytes);
  const body = Buffer.from(JSON.stringify(label), 'utf8');
  labelMagic.copy(block, 0);
  block.writeUInt32BE(body.length, 8);
  block.writeUInt32BE(crc32c(body), 12);
  body.copy(block, 16);
  await file.write(block, 0);
  await file.sync();
}
