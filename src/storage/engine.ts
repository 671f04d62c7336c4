// The storage engine of one array: drives, the extent allocator, volumes and
// their durable metadata. Its flush is a group commit: concurrent callers share
// one round, and a round (1) takes the queued metadata records, (2) fdatasyncs
// every drive, (3) appends the records to the metadata log and fdatasyncs it,
// then (4) lets the extents those records released be reused. Step 2 before 3
// is what keeps a map entry from ever being durable before the data it points to.
// A failed sync of any drive or of the metadata is sticky (sticky-sync.ts): from
// then on every flush round fails with its IO_ERROR until the array is restarted,
// and the engine emits 'sync-failed' once per drive (the array logs it, the
// replication suspends its groups).

import { EventEmitter } from 'node:events';
import path from 'node:path';
import { TwinstoreError, assert } from '../errors.js';
import { ExtentAllocator } from './allocator.js';
import { openDrives, type DriveConfig, type DriveUse, type OpenDrive } from './drives.js';
import { MetaStore } from './meta-store.js';
import { VOLUME_ROLES, refDrive, refExtent, type ExtentRef, type MetaRecord, type MetaState, type VolumeMeta, type VolumeRole } from './meta-model.js';
import { Volume, type VolumeHost } from './volume.js';
import { StickySyncFile, type SyncFailure } from './sticky-sync.js';

export interface EngineOptions {
  arrayId: string;
  dataDir: string;
  extentBytes: number;
  drives: DriveConfig[];
}

export interface CreateVolumeRequest {
  name: string;
  sizeBytes: number;
  lun?: number | undefined;
  role?: VolumeRole | undefined;
  /** Document records committed in the same metadata commit as the volume (a command device's). */
  documents?: MetaRecord[] | undefined;
}

export const VOLUME_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
export const LUN_MAX = 65535;
export const VOLUME_ALIGN_BYTES = 4096;
/**
 * How often every drive is synced in the background. Tests that must see a release not yet
 * durable set TWINSTORE_TEST_BACKGROUND_FLUSH_MS (a loaded machine can take 5 s between two steps).
 */
const backgroundFlushMs = Number(process.env.TWINSTORE_TEST_BACKGROUND_FLUSH_MS ?? '') || 5000;

/** What 'sync-failed' reports: a drive (its id) or the metadata (`metadata`) failed a sync. */
export interface EngineSyncFailure extends SyncFailure {
  drive: string;
}

/** A drive's or the metadata's sync state, for status and metrics. */
export interface SyncStateJson {
  path: string;
  /** Syncs that failed (the first and any that overlapped it). */
  syncFailures: number;
  /** When the first failed (null: none failed since the array started). */
  syncFailedAt: string | null;
  /** The first failed sync's error message. */
  syncError: string | null;
}

export class StorageEngine extends EventEmitter implements VolumeHost {
  readonly extentBytes: number;
  private readonly volumesByName = new Map<string, Volume>();
  /** Volumes being created: name to LUN, held from the check until their record is committed. */
  private readonly creating = new Map<string, number>();
  private pendingRecords: MetaRecord[] = [];
  private pendingMaps = new Map<number, number[]>();
  /** Volumes whose map entries the running flush round is committing. */
  private mapsInFlight = new Set<number>();
  private flushRunning: Promise<void> | undefined;
  private flushQueued: Promise<void> | undefined;
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  /** A drive write completed since the last flush round began. */
  private dirty = false;
  /** Set by the first failed sync of a drive or the metadata: every later flush fails with it. */
  private syncError: TwinstoreError | undefined;
  private readonly drives: Map<number, OpenDrive & { file: StickySyncFile }>;

  private constructor(
    private readonly options: EngineOptions,
    private readonly meta: MetaStore,
    private readonly live: MetaState,
    drives: Map<number, OpenDrive>,
    private readonly allocator: ExtentAllocator,
  ) {
    super();
    this.drives = new Map([...drives].map(([index, drive]) => {
      const file = new StickySyncFile(drive.file, (failure) => this.syncFailed(this.live.drives[index]!.id, failure));
      return [index, { ...drive, file }];
    }));
    meta.onSyncFailed = (failure) => this.syncFailed('metadata', failure);
    this.extentBytes = live.extentBytes;
    for (const state of live.volumes.values()) this.volumesByName.set(state.meta.name, new Volume(this, state));
    // A failed background round is not forgotten: its drive (or the metadata) remembers the failed
    // sync, fails every later flush, and 'sync-failed' has told the array.
    this.timer = setInterval(() => void this.flush().catch(() => undefined), backgroundFlushMs);
    this.timer.unref();
  }

  static async open(options: EngineOptions): Promise<StorageEngine> {
    const meta = await MetaStore.open(path.join(options.dataDir, 'meta'), () => ({
      arrayId: options.arrayId,
      extentBytes: options.extentBytes,
      drives: [],
      volumes: new Map(),
      nextVolumeId: 1,
      documents: new Map(),
      regionSets: new Map(),
    }));
    const durable = meta.durable;
    if (durable.arrayId !== options.arrayId) {
      throw new TwinstoreError('CONFIG_INVALID', `array.id is "${options.arrayId}" but the data folder ${options.dataDir} belongs to array "${durable.arrayId}"`);
    }
    const used = new Set<number>();
    for (const volume of durable.volumes.values()) for (const ref of volume.map.values()) used.add(refDrive(ref));
    let opened: OpenDrive[] = [];
    try {
      const { drives, records } = await openDrives(options.drives, durable, used, { dataDir: options.dataDir }, (drive) => opened.push(drive));
      opened = drives;
      await meta.commit(records);
    } catch (error) {
      await Promise.all(opened.map((d) => d.file.close()));
      await meta.close();
      throw error;
    }
    const live = meta.snapshotState();
    const byIndex = new Map(opened.map((d) => [d.index, d]));
    const allocator = new ExtentAllocator(live, opened.map((d) => ({ index: d.index, use: d.use })), (r) => meta.commit(r));
    return new StorageEngine(options, meta, live, byIndex, allocator);
  }

  get arrayId(): string {
    return this.options.arrayId;
  }

  volumes(): Volume[] {
    return [...this.volumesByName.values()].sort((a, b) => a.meta.lun - b.meta.lun);
  }

  volume(name: string): Volume | undefined {
    return this.volumesByName.get(name);
  }

  volumeByLun(lun: number): Volume | undefined {
    return this.volumes().find((v) => v.meta.lun === lun);
  }

  /**
   * Check, then persist, then show: the name and LUN are checked and held (so a concurrent
   * create of either is refused), the volume record is committed with `request.documents` in
   * one metadata commit, and only then does the volume exist (listed, exported). A refused or
   * failed create leaves nothing behind, in memory or on disk. A new volume maps no extent, so
   * its record needs no drive sync before it (the group commit's ordering is for map entries).
   */
  async createVolume(request: CreateVolumeRequest): Promise<Volume> {
    this.checkOpen();
    // The create commits its own metadata record (no flush round): after a failed sync it must fail as a FLUSH does.
    this.checkSynced();
    const lun = request.lun ?? this.freeLun();
    checkVolumeRequest(request, lun);
    if (this.volumesByName.has(request.name) || this.creating.has(request.name)) throw new TwinstoreError('VOLUME_EXISTS', `volume ${request.name} already exists`, { field: 'name' });
    const holder = this.volumeByLun(lun)?.name ?? [...this.creating].find(([, held]) => held === lun)?.[0];
    if (holder !== undefined) throw new TwinstoreError('LUN_IN_USE', `LUN ${lun} is already used by volume ${holder}`, { field: 'lun' });
    const meta: VolumeMeta = {
      id: this.live.nextVolumeId,
      name: request.name,
      lun,
      sizeBytes: request.sizeBytes,
      role: request.role ?? 'simplex',
      createdAt: new Date().toISOString(),
    };
    // Never reused, even when this create fails: a record that reached the log unsynced must name no later volume.
    this.live.nextVolumeId += 1;
    this.creating.set(meta.name, lun);
    try {
      // The documents first: a torn commit then leaves at most a document of no volume, never a volume without its document.
      await this.meta.commit([...(request.documents ?? []), { t: 'volume', volume: meta }]);
    } finally {
      this.creating.delete(meta.name);
    }
    assert(!this.volumesByName.has(meta.name) && !this.live.volumes.has(meta.id), 'a held name and a new id are free when their create commits');
    this.live.volumes.set(meta.id, { meta, map: new Map() });
    const volume = new Volume(this, this.live.volumes.get(meta.id)!);
    this.volumesByName.set(meta.name, volume);
    this.emit('volume-created', volume);
    return volume;
  }

  async deleteVolume(name: string): Promise<void> {
    this.checkOpen();
    const volume = this.volumesByName.get(name);
    if (!volume) throw new TwinstoreError('VOLUME_NOT_FOUND', `no volume named ${name}`);
    this.volumesByName.delete(name);
    this.emit('volume-deleted', volume);
    this.pendingMaps.delete(volume.meta.id);
    for (const [, ref] of volume.mappedExtents()) this.allocator.release(ref);
    this.live.volumes.delete(volume.meta.id);
    this.pendingRecords.push({ t: 'volume-delete', id: volume.meta.id });
    await this.flush();
  }

  volumeById(id: number): Volume | undefined {
    return this.volumes().find((v) => v.meta.id === id);
  }

  /** Changes a volume's role durably, then tells listeners (the NBD exports follow). */
  async setRole(name: string, role: VolumeRole): Promise<void> {
    this.checkOpen();
    const volume = this.volumesByName.get(name);
    if (!volume) throw new TwinstoreError('VOLUME_NOT_FOUND', `no volume named ${name}`);
    if (volume.meta.role === role) return;
    const meta: VolumeMeta = { ...volume.meta, role };
    await this.meta.commit([{ t: 'volume', volume: meta }]);
    const state = this.live.volumes.get(meta.id)!;
    state.meta = meta;
    this.emit('volume-role', volume);
  }

  /** Durably records documents and region sets of other parts (no data ordering: commits at once). */
  persist(records: MetaRecord[]): Promise<void> {
    this.checkOpen();
    return this.meta.commit(records);
  }

  /** Documents of one kind, as last persisted. */
  documents<T>(kind: string): Map<string, T> {
    return new Map([...(this.meta.durable.documents.get(kind) ?? new Map())].map(([k, v]) => [k, structuredClone(v) as T]));
  }

  regionSet(name: string): Set<number> {
    return new Set(this.meta.durable.regionSets.get(name) ?? []);
  }

  private freeLun(): number {
    const used = new Set([...this.volumes().map((v) => v.meta.lun), ...this.creating.values()]);
    let lun = 0;
    while (used.has(lun)) lun += 1;
    return lun;
  }

  /** The first sync failure is kept (every later flush fails with it) and told once per drive. */
  private syncFailed(drive: string, failure: SyncFailure): void {
    this.syncError ??= failure.error;
    const event: EngineSyncFailure = { ...failure, drive };
    this.emit('sync-failed', event);
  }

  /** Throws the first failed sync's error (IO_ERROR): nothing is made durable until a restart. */
  checkSynced(): void {
    if (this.syncError !== undefined) throw this.syncError;
  }

  /** Group commit; see the module comment. Resolves when everything done before the call is durable. */
  flush(): Promise<void> {
    if (this.syncError !== undefined) return Promise.reject(this.syncError);
    if (this.flushQueued) return this.flushQueued;
    if (!this.dirty && !this.flushRunning && this.pendingRecords.length === 0 && this.pendingMaps.size === 0) return Promise.resolve();
    if (!this.flushRunning) return this.startRound();
    const queued = this.flushRunning.catch(() => undefined).then(() => {
      this.flushQueued = undefined;
      return this.startRound();
    });
    this.flushQueued = queued;
    return queued;
  }

  private startRound(): Promise<void> {
    const round = this.runRound().finally(() => {
      if (this.flushRunning === round) this.flushRunning = undefined;
    });
    this.flushRunning = round;
    return round;
  }

  private async runRound(): Promise<void> {
    if (this.syncError !== undefined) throw this.syncError;
    this.dirty = false;
    const records = this.takeRecords();
    const released = this.allocator.drainReleases();
    try {
      await Promise.all([...this.drives.values()].map((d) => d.file.sync()));
      await this.meta.commit(records);
    } catch (error) {
      this.dirty = true;
      this.pendingRecords = [...records, ...this.pendingRecords];
      for (const ref of released) this.allocator.release(ref);
      throw error;
    }
    this.allocator.releasesDurable(released);
    this.mapsInFlight = new Set();
  }

  /**
   * Makes every completed write to one volume durable by syncing only the drives that hold
   * its extents — when its map is complete and durable (a thick volume such as a journal),
   * so no metadata needs to go with the data. Otherwise a full flush. A journal on its own
   * drive (`drives[].use: journal`) then syncs its records and not the P-VOL data beside it,
   * and fails only while one of those drives has failed a sync.
   */
  syncVolumeData(volumeId: number): Promise<void> {
    const state = this.live.volumes.get(volumeId);
    const chunks = state === undefined ? 0 : Math.ceil(state.meta.sizeBytes / this.extentBytes);
    const mapSettled = state !== undefined && state.map.size === chunks && !this.pendingMaps.has(volumeId) &&
      !this.mapsInFlight.has(volumeId) && !this.pendingRecords.some((r) => r.t === 'map' && r.volume === volumeId);
    if (!mapSettled) return this.flush();
    const drives = new Set<number>();
    for (const ref of state.map.values()) drives.add(refDrive(ref));
    return Promise.all([...drives].map((index) => this.drives.get(index)!.file.sync())).then(() => undefined);
  }

  private takeRecords(): MetaRecord[] {
    this.mapsInFlight = new Set(this.pendingMaps.keys());
    const records = this.pendingRecords;
    for (const [volume, entries] of this.pendingMaps) records.push({ t: 'map', volume, entries });
    this.pendingRecords = [];
    this.pendingMaps = new Map();
    return records;
  }

  // VolumeHost: what a Volume asks of the engine.

  allocateExtent(pool: DriveUse): Promise<{ ref: ExtentRef; needsZeroing: boolean }> {
    return this.allocator.allocate(pool);
  }

  readExtent(ref: ExtentRef, buffer: Buffer, offsetInExtent: number): Promise<void> {
    return this.driveOf(ref).file.read(buffer, this.position(ref, offsetInExtent, buffer.length));
  }

  async writeExtent(ref: ExtentRef, buffer: Buffer, offsetInExtent: number): Promise<void> {
    await this.driveOf(ref).file.write(buffer, this.position(ref, offsetInExtent, buffer.length));
    this.dirty = true;
  }

  pin(ref: ExtentRef): void {
    this.allocator.pin(ref);
  }

  unpin(ref: ExtentRef): void {
    this.allocator.unpin(ref);
  }

  mapChanged(volumeId: number, chunk: number, ref: ExtentRef | undefined, old: ExtentRef | undefined): void {
    let entries = this.pendingMaps.get(volumeId);
    if (!entries) {
      entries = [];
      this.pendingMaps.set(volumeId, entries);
    }
    if (ref === undefined) entries.push(chunk, -1, 0);
    else entries.push(chunk, refDrive(ref), refExtent(ref));
    if (old !== undefined) this.allocator.release(old);
  }

  private driveOf(ref: ExtentRef): OpenDrive {
    const drive = this.drives.get(refDrive(ref));
    assert(drive !== undefined, 'extent lies on an open drive');
    return drive;
  }

  private position(ref: ExtentRef, offsetInExtent: number, length: number): number {
    assert(offsetInExtent >= 0 && offsetInExtent + length <= this.extentBytes, 'I/O stays inside its extent');
    return (refExtent(ref) + 1) * this.extentBytes + offsetInExtent;
  }

  stats(): {
    extentBytes: number; capacityBytes: number; freeBytes: number; allocatedBytes: number; provisionedBytes: number;
    /** True once a drive or the metadata failed a sync: every flush fails until the array is restarted. */
    syncFailed: boolean;
    drives: Array<{ id: string; use: DriveUse; sizeBytes: number; capacityBytes: number; freeBytes: number } & SyncStateJson>;
    metadata: SyncStateJson;
  } {
    const capacityBytes = this.allocator.totalExtents() * this.extentBytes;
    const freeBytes = this.allocator.freeExtents() * this.extentBytes;
    return {
      extentBytes: this.extentBytes,
      capacityBytes,
      freeBytes,
      allocatedBytes: this.volumes().reduce((sum, v) => sum + v.allocatedBytes(), 0),
      provisionedBytes: this.volumes().reduce((sum, v) => sum + v.sizeBytes, 0),
      syncFailed: this.syncError !== undefined,
      drives: [...this.drives.values()].map((d) => {
        const extents = this.allocator.driveExtents(d.index);
        return {
          id: this.live.drives[d.index]!.id, use: d.use, sizeBytes: d.file.sizeBytes,
          capacityBytes: extents.total * this.extentBytes, freeBytes: extents.free * this.extentBytes,
          ...syncState(d.file.path, d.file.failedSyncs, d.file.failure),
        };
      }),
      metadata: syncState(path.join(this.options.dataDir, 'meta'), this.meta.failedSyncs, this.meta.syncFailure),
    };
  }

  private checkOpen(): void {
    if (this.closed) throw new TwinstoreError('SHUTTING_DOWN', 'the array is shutting down');
  }

  /** Flushes, then closes the files; after a failed sync the files are closed and the flush's error thrown. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    try {
      await this.flush();
    } finally {
      await this.meta.close();
      await Promise.all([...this.drives.values()].map((d) => d.file.close()));
    }
  }
}

function syncState(file: string, syncFailures: number, failure: SyncFailure | undefined): SyncStateJson {
  return { path: file, syncFailures, syncFailedAt: failure?.failedAt ?? null, syncError: failure?.message ?? null };
}

function checkVolumeRequest(request: CreateVolumeRequest, lun: number): void {
  if (!VOLUME_NAME_PATTERN.test(request.name)) {
    throw new TwinstoreError('BAD_REQUEST', `volume name "${request.name}" must be 1-64 of A-Z a-z 0-9 . _ - and start with a letter or digit`, { field: 'name' });
  }
  if (!Number.isSafeInteger(request.sizeBytes) || request.sizeBytes <= 0 || request.sizeBytes % VOLUME_ALIGN_BYTES !== 0) {
    throw new TwinstoreError('BAD_REQUEST', `volume size ${request.sizeBytes} must be a positive multiple of ${VOLUME_ALIGN_BYTES} bytes`, { field: 'size' });
  }
  if (!Number.isSafeInteger(lun) || lun < 0 || lun > LUN_MAX) {
    throw new TwinstoreError('BAD_REQUEST', `LUN ${lun} must be a whole number from 0 to ${LUN_MAX}`, { field: 'lun' });
  }
  if (request.role !== undefined && !VOLUME_ROLES.includes(request.role)) {
    throw new TwinstoreError('BAD_REQUEST', `role ${String(request.role)} is not one of ${VOLUME_ROLES.join(', ')}`, { field: 'role' });
  }
}
