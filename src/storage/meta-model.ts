// The array's persisted model: drives, volumes and each volume's extent map, and
// the records that change it. The same `applyRecord` serves replay at start and
// the durable copy kept while running, so what is written is what is read back.

import { assert } from '../errors.js';

export const VOLUME_ROLES = ['simplex', 'pvol', 'svol', 'journal-master', 'journal-restore', 'journal-free', 'command-device'] as const;
export type VolumeRole = (typeof VOLUME_ROLES)[number];

export interface DriveMeta {
  /** Stamped into the drive's label; config order and paths may change, ids do not. */
  id: string;
  /** Where the drive was last found; informational. */
  path: string;
  extentCount: number;
  /** Extents at or above this index were never written since the drive was labelled. */
  cleanFrom: number;
}

export interface VolumeMeta {
  id: number;
  name: string;
  lun: number;
  sizeBytes: number;
  role: VolumeRole;
  createdAt: string;
}

/** Where a volume chunk lives: drive index * 2^32 + extent index. */
export type ExtentRef = number;

export function extentRef(drive: number, extent: number): ExtentRef {
  return drive * 2 ** 32 + extent;
}

export function refDrive(ref: ExtentRef): number {
  return Math.floor(ref / 2 ** 32);
}

export function refExtent(ref: ExtentRef): number {
  return ref % 2 ** 32;
}

export interface VolumeState {
  meta: VolumeMeta;
  /** chunk index → extent; a missing chunk is a hole that reads as zeros. */
  map: Map<number, ExtentRef>;
}

export interface MetaState {
  arrayId: string;
  extentBytes: number;
  drives: DriveMeta[];
  volumes: Map<number, VolumeState>;
  nextVolumeId: number;
  /** Records owned by other parts (peers, journal groups), kept whole and opaque here, by kind then key. */
  documents: Map<string, Map<string, unknown>>;
  /** Durable region sets (the activity log, region bitmaps), by name. */
  regionSets: Map<string, Set<number>>;
}

export type MetaRecord =
  | { t: 'drive'; index: number; drive: DriveMeta }
  | { t: 'clean'; drive: number; from: number }
  | { t: 'volume'; volume: VolumeMeta }
  | { t: 'volume-delete'; id: number }
  /** Flat triples (chunk, drive, extent); drive -1 unmaps the chunk. */
  | { t: 'map'; volume: number; entries: number[] }
  /** A whole document of another part (a peer, a journal group); `value` undefined deletes it. */
  | { t: 'doc'; kind: string; key: string; value?: unknown }
  | { t: 'regions'; set: string; add?: number[]; remove?: number[]; clear?: boolean };

export function applyRecord(state: MetaState, record: MetaRecord): void {
  switch (record.t) {
    case 'drive':
      assert(record.index <= state.drives.length, 'drives are added in order');
      state.drives[record.index] = { ...record.drive };
      return;
    case 'clean': {
      const drive = state.drives[record.drive];
      assert(drive !== undefined, 'clean mark names a known drive');
      drive.cleanFrom = Math.max(drive.cleanFrom, record.from);
      return;
    }
    case 'volume': {
      const existing = state.volumes.get(record.volume.id);
      if (existing) existing.meta = { ...record.volume };
      else state.volumes.set(record.volume.id, { meta: { ...record.volume }, map: new Map() });
      state.nextVolumeId = Math.max(state.nextVolumeId, record.volume.id + 1);
      return;
    }
    case 'volume-delete':
      state.volumes.delete(record.id);
      return;
    case 'map': {
      const volume = state.volumes.get(record.volume);
      if (volume === undefined) return; // deleted later in the same commit
      applyMapEntries(volume.map, record.entries);
      return;
    }
    case 'doc': {
      let kind = state.documents.get(record.kind);
      if (!kind) {
        kind = new Map();
        state.documents.set(record.kind, kind);
      }
      if (record.value === undefined) kind.delete(record.key);
      else kind.set(record.key, structuredClone(record.value));
      return;
    }
    case 'regions': {
      let set = state.regionSets.get(record.set);
      if (!set) {
        set = new Set();
        state.regionSets.set(record.set, set);
      }
      if (record.clear) set.clear();
      for (const region of record.remove ?? []) set.delete(region);
      for (const region of record.add ?? []) set.add(region);
      if (set.size === 0) state.regionSets.delete(record.set);
      return;
    }
  }
}

function applyMapEntries(map: Map<number, ExtentRef>, entries: number[]): void {
  assert(entries.length % 3 === 0, 'map entries are triples');
  for (let i = 0; i < entries.length; i += 3) {
    const chunk = entries[i]!;
    const drive = entries[i + 1]!;
    if (drive < 0) map.delete(chunk);
    else map.set(chunk, extentRef(drive, entries[i + 2]!));
  }
}

export interface SnapshotJson {
  version: 1;
  generation: number;
  arrayId: string;
  extentBytes: number;
  nextVolumeId: number;
  drives: DriveMeta[];
  volumes: Array<VolumeMeta & { map: number[] }>;
  documents?: Record<string, Record<string, unknown>>;
  regionSets?: Record<string, number[]>;
}

export function toSnapshot(state: MetaState, generation: number): SnapshotJson {
  const volumes = [...state.volumes.values()].map((volume) => {
    const map: number[] = [];
    for (const [chunk, ref] of volume.map) map.push(chunk, refDrive(ref), refExtent(ref));
    return { ...volume.meta, map };
  });
  return {
    version: 1,
    generation,
    arrayId: state.arrayId,
    extentBytes: state.extentBytes,
    nextVolumeId: state.nextVolumeId,
    drives: state.drives.map((d) => ({ ...d })),
    volumes,
    documents: Object.fromEntries([...state.documents].map(([kind, docs]) => [kind, Object.fromEntries(docs)])),
    regionSets: Object.fromEntries([...state.regionSets].map(([name, set]) => [name, [...set]])),
  };
}

export function fromSnapshot(snapshot: SnapshotJson): MetaState {
  const state: MetaState = {
    arrayId: snapshot.arrayId,
    extentBytes: snapshot.extentBytes,
    drives: snapshot.drives.map((d) => ({ ...d })),
    volumes: new Map(),
    nextVolumeId: snapshot.nextVolumeId,
    documents: new Map(Object.entries(snapshot.documents ?? {}).map(([kind, docs]) => [kind, new Map(Object.entries(docs))])),
    regionSets: new Map(Object.entries(snapshot.regionSets ?? {}).map(([name, regions]) => [name, new Set(regions)])),
  };
  for (const { map, ...meta } of snapshot.volumes) {
    const volume: VolumeState = { meta, map: new Map() };
    applyMapEntries(volume.map, map);
    state.volumes.set(meta.id, volume);
  }
  return state;
}

export function cloneState(state: MetaState): MetaState {
  return fromSnapshot(toSnapshot(state, 0));
}
