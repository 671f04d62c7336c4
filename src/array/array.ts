// One Twinstore array: the process that owns a data folder and its drives. It
// wires the storage engine to the NBD exports and the management API, keeps
// the export list in step with the volumes, and shuts down in order (stop
// taking requests, answer those in flight, flush, close files).

import { TwinstoreError } from '../errors.js';
import type { ArrayConfig } from '../config/index.js';
import { StorageEngine, volatileCacheMode, type Volume } from '../storage/index.js';
import { ExportRegistry, NbdServer } from '../nbd/index.js';
import { ApiServer, type ArrayControl, type StatusJson, type VolumeJson, type CreateVolumeBody } from '../api/index.js';
import { sharedPool } from '../util/buffer-pool.js';
import { createLogger, type Logger } from '../util/log.js';
import { VolumeExport, isExported } from './volume-export.js';
import { acquireLock, ensureToken, writeRunInfo } from './run-files.js';

export const VERSION = '0.1.0';

export interface ReadyInfo {
  ready: true;
  array: string;
  nbd: string;
  api: string;
}

export class TwinstoreArray implements ArrayControl {
  private readonly startedAt = Date.now();
  private nbdAddress = '';
  private apiAddress = '';

  private constructor(
    private readonly config: ArrayConfig,
    private readonly registry: ExportRegistry,
    private readonly engine: StorageEngine,
    private readonly nbd: NbdServer,
    private readonly api: ApiServer,
    private readonly releaseLock: () => void,
    readonly log: Logger,
  ) {}

  static async start(config: ArrayConfig): Promise<{ array: TwinstoreArray; ready: ReadyInfo }> {
    const log = createLogger({ array: config.arrayId });
    const releaseLock = acquireLock(config.dataDir);
    try {
      const drives = config.drives.map((d) => ({ ...d, syncReadBytesMax: config.tuning.syncReadBytesMax }));
      const engine = await StorageEngine.open({ arrayId: config.arrayId, dataDir: config.dataDir, extentBytes: config.extentBytes, drives });
      const token = ensureToken(config.dataDir, config.apiToken);
      let control: TwinstoreArray | undefined;
      const api = new ApiServer({ token, control: () => control!, log });
      const registry = new ExportRegistry();
      const array = new TwinstoreArray(config, registry, engine, new NbdServer(registry, sharedPool, log, { pollMicros: config.tuning.pollMicros }), api, releaseLock, log);
      control = array;
      return { array, ready: await array.listen() };
    } catch (error) {
      releaseLock();
      throw error;
    }
  }

  private async listen(): Promise<ReadyInfo> {
    for (const volume of this.engine.volumes()) this.exportVolume(volume);
    this.engine.on('volume-created', (volume: Volume) => this.exportVolume(volume));
    this.engine.on('volume-deleted', (volume: Volume) => this.registry.remove(volume.name, `volume ${volume.name} deleted`));
    const nbd = await this.nbd.listen(this.config.listen.nbd.host, this.config.listen.nbd.port);
    const api = await this.api.listen(this.config.listen.api.host, this.config.listen.api.port);
    this.nbdAddress = formatAddress(nbd.address, nbd.port);
    this.apiAddress = formatAddress(api.address, api.port);
    writeRunInfo(this.config.dataDir, { array: this.config.arrayId, pid: process.pid, nbd: this.nbdAddress, api: this.apiAddress });
    this.log.info({ nbd: this.nbdAddress, api: this.apiAddress, volatileCache: volatileCacheMode }, 'array ready');
    return { ready: true, array: this.config.arrayId, nbd: this.nbdAddress, api: this.apiAddress };
  }

  private exportVolume(volume: Volume): void {
    if (isExported(volume)) this.registry.set(new VolumeExport(volume, this.engine));
  }

  status(): StatusJson {
    const stats = this.engine.stats();
    return {
      array: this.config.arrayId,
      version: VERSION,
      pid: process.pid,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      nbd: this.nbdAddress,
      api: this.apiAddress,
      volumes: this.engine.volumes().length,
      ...stats,
    };
  }

  listVolumes(): VolumeJson[] {
    return this.engine.volumes().map((v) => this.volumeJson(v));
  }

  getVolume(ref: string): VolumeJson {
    return this.volumeJson(this.resolve(ref));
  }

  async createVolume(body: CreateVolumeBody): Promise<VolumeJson> {
    const volume = await this.engine.createVolume({ name: body.name, sizeBytes: body.sizeBytes, lun: body.lun });
    this.log.info({ volume: volume.name, lun: volume.meta.lun, sizeBytes: volume.sizeBytes }, 'volume created');
    return this.volumeJson(volume);
  }

  async deleteVolume(ref: string, force: boolean): Promise<void> {
    const volume = this.resolve(ref);
    const sessions = this.registry.sessionCount(volume.name);
    if (sessions > 0 && !force) {
      throw new TwinstoreError('VOLUME_BUSY', `volume ${volume.name} has ${sessions} open NBD session(s); close them or use --force`);
    }
    await this.engine.deleteVolume(volume.name);
    this.log.info({ volume: volume.name }, 'volume deleted');
  }

  /** A volume by NAME or #LUN. */
  private resolve(ref: string): Volume {
    const lun = /^#(\d+)$/.exec(ref);
    const volume = lun ? this.engine.volumeByLun(Number(lun[1])) : this.engine.volume(ref);
    if (!volume) throw new TwinstoreError('VOLUME_NOT_FOUND', `no volume ${ref} on array ${this.config.arrayId}`);
    return volume;
  }

  private volumeJson(volume: Volume): VolumeJson {
    const meta = volume.meta;
    const exported = this.registry.get(volume.name);
    return {
      name: meta.name,
      lun: meta.lun,
      sizeBytes: meta.sizeBytes,
      allocatedBytes: volume.allocatedBytes(),
      role: meta.role,
      readOnly: exported?.readOnly ?? true,
      exported: exported !== undefined,
      nbdUri: exported ? `nbd://${this.nbdAddress}/${encodeURIComponent(meta.name)}` : null,
      sessions: this.registry.sessionCount(volume.name),
      createdAt: meta.createdAt,
    };
  }

  async stop(): Promise<void> {
    this.log.info('shutting down');
    await this.api.close();
    await this.nbd.close();
    await this.engine.close();
    this.releaseLock();
    this.log.info('stopped cleanly');
  }
}

function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
