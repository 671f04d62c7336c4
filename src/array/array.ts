// One Twinstore array: the process that owns a data folder and its drives. It
// wires the storage engine to the NBD exports and the management API, keeps
// the export list in step with the volumes, and shuts down in order (stop
// taking requests, answer those in flight, flush, close files).

import { TwinstoreError } from '../errors.js';
import type { ArrayConfig } from '../config/index.js';
import { StorageEngine, volatileCacheMode, type EngineSyncFailure, type Volume } from '../storage/index.js';
import { AccessPolicy, ExportRegistry, NbdServer, NbdTls, type VolumeIoStats } from '../nbd/index.js';
import { ApiServer, TokenStore, tokensPath, type ArrayControl, type StatusJson, type VolumeJson, type CreateVolumeBody } from '../api/index.js';
import { sharedPool } from '../util/buffer-pool.js';
import { createLogger, type Logger } from '../util/log.js';
import type { ReloadOutcome } from '../util/tls-files.js';
import { CommandDevice, COMMAND_DEVICE_DOCUMENT, commandBlockBytes, scrubStoredToken, type CommandDeviceDocument } from './command-device.js';
import { VolumeExport, isExported } from './volume-export.js';
import { ArrayReplication, errorFrom, listening } from './replication-control.js';
import { ArrayEvents } from './array-events.js';
import { GroupAlerts } from './alerts.js';
import { History, type HistoryJson } from './history.js';
import { EventBus } from '../events/bus.js';
import { acquireLock, ensureToken, writeRunInfo } from './run-files.js';
import { VERSION } from '../version.js';

export { VERSION };

export interface ReadyInfo {
  ready: true;
  array: string;
  nbd: string;
  api: string;
  link?: string;
}

export class TwinstoreArray implements ArrayControl {
  private readonly startedAt = Date.now();
  /** The read-only flag of each export when it was (re)made: what connected hosts were told. */
  private readonly exportedReadOnly = new Map<string, boolean>();
  private nbdAddress = '';
  private apiAddress = '';
  private readonly history = new History({ pairs: () => this.replication.manager.display(), ioStats: () => this.registry.allIoStats() });

  private constructor(
    private readonly config: ArrayConfig,
    private readonly registry: ExportRegistry,
    private readonly engine: StorageEngine,
    private readonly nbd: NbdServer,
    private readonly api: ApiServer,
    private readonly replication: ArrayReplication,
    private readonly events: ArrayEvents,
    private readonly releaseLock: () => void,
    private readonly token: string,
    readonly log: Logger,
  ) {
    replication.injector = (method, url, body, via) => api.inject(method, url, body, via);
    replication.manager.openSessions = (name) => registry.sessionCount(name);
    replication.manager.closeSessions = (name, reason) => registry.closeSessions(name, reason);
    engine.on('sync-failed', (failure: EngineSyncFailure) => {
      log.error({ drive: failure.drive, path: failure.path, err: failure.message }, 'sync failed: writes since its last good sync may be lost; every FLUSH fails until the array is restarted');
    });
  }

  /**
   * Opens the drives, the groups and the listeners. A start that fails closes what it opened
   * (listeners, links, groups, drives), then releases the data folder's lock, then throws: the
   * lock is never free while this process still holds the folder's files.
   */
  static async start(config: ArrayConfig): Promise<{ array: TwinstoreArray; ready: ReadyInfo }> {
    const log = createLogger({ array: config.arrayId });
    const releaseLock = acquireLock(config.dataDir);
    let engine: StorageEngine | undefined;
    let array: TwinstoreArray | undefined;
    try {
      // The TLS files first: one that does not load stops the start before a drive is opened.
      const tls = config.nbdTls.mode === 'off' ? undefined : new NbdTls(config.nbdTls, log, config.nbd.handshakeTimeoutMs);
      const drives = config.drives.map((d) => ({ ...d, syncReadBytesMax: config.tuning.syncReadBytesMax, syncWriteBytesMax: config.tuning.syncWriteBytesMax }));
      engine = await StorageEngine.open({ arrayId: config.arrayId, dataDir: config.dataDir, extentBytes: config.extentBytes, drives });
      const token = ensureToken(config.dataDir, config.apiToken);
      let control: TwinstoreArray | undefined;
      const bus = new EventBus();
      const replication = new ArrayReplication(config, engine, log, { events: bus });
      const events = new ArrayEvents(bus, {
        volumes: () => control!.listVolumes(),
        peers: () => replication.listPeers(),
        groups: () => replication.manager.groupMetas(),
        pairs: () => replication.manager.display(),
      }, new GroupAlerts(config.alerts));
      const tokens = new TokenStore(token, tokensPath(config.dataDir));
      const api = new ApiServer({
        tokens, tls: config.apiTls, control: () => control!, replication: () => replication, events: () => events, reload: () => control!.reloadTls(), log,
      });
      const registry = new ExportRegistry();
      const nbd = new NbdServer(registry, sharedPool, log, { pollMicros: config.tuning.pollMicros, limits: config.nbd, tls, access: new AccessPolicy(config.nbdAccess) });
      array = new TwinstoreArray(config, registry, engine, nbd, api, replication, events, releaseLock, token, log);
      control = array;
      return { array, ready: await array.listen() };
    } catch (error) {
      log.error({ err: (error as Error).message, code: (error as { code?: unknown }).code }, 'start failed; closing what it opened');
      await (array ? array.close() : engine?.close())?.catch((e: unknown) => log.error({ err: (e as Error).message }, 'closing after a failed start failed'));
      releaseLock();
      throw error;
    }
  }

  private async listen(): Promise<ReadyInfo> {
    await this.replication.start();
    for (const volume of this.engine.volumes()) this.exportVolume(volume);
    await this.scrubCommandDevices();
    this.engine.on('volume-created', (volume: Volume) => this.exportVolume(volume));
    this.engine.on('volume-deleted', (volume: Volume) => this.registry.forget(volume.name, `volume ${volume.name} deleted`));
    this.engine.on('volume-role', (volume: Volume) => this.reexport(volume));
    this.events.start(this.engine);
    this.history.start();
    const nbd = await listening('listen.nbd', this.config.listen.nbd, this.nbd.listen(this.config.listen.nbd.host, this.config.listen.nbd.port));
    const api = await listening('listen.api', this.config.listen.api, this.api.listen(this.config.listen.api.host, this.config.listen.api.port));
    this.nbdAddress = formatAddress(nbd.address, nbd.port);
    this.apiAddress = formatAddress(api.address, api.port);
    writeRunInfo(this.config.dataDir, { array: this.config.arrayId, pid: process.pid, nbd: this.nbdAddress, api: this.apiAddress });
    const link = this.replication.linkAddress;
    this.log.info({ nbd: this.nbdAddress, api: this.apiAddress, link, volatileCache: volatileCacheMode }, 'array ready');
    return { ready: true, array: this.config.arrayId, nbd: this.nbdAddress, api: this.apiAddress, ...(link ? { link } : {}) };
  }

  /** Before hosts connect: no command device keeps a token an earlier version stored in its request block. */
  private async scrubCommandDevices(): Promise<void> {
    let scrubbed = 0;
    for (const volume of this.engine.volumes()) {
      if (volume.meta.role !== 'command-device' || !(await scrubStoredToken(volume))) continue;
      this.log.warn({ volume: volume.name }, 'command device: zeroed an API token stored in its request block (by an earlier version)');
      scrubbed += 1;
    }
    if (scrubbed > 0) await this.engine.flush();
  }

  private exportVolume(volume: Volume): void {
    if (!isExported(volume)) return;
    const exported = new VolumeExport(volume, this.engine, (v) => this.replication.manager.writerOf(v), this.commandDeviceFor(volume));
    this.registry.set(exported);
    this.exportedReadOnly.set(volume.name, exported.readOnly);
  }

  /**
   * A role change: the export follows; if the read-only flag hosts saw at negotiation changes,
   * sessions are closed so hosts reconnect and see the new one. (The flag is kept at export time:
   * the export's own getter already reads the new role.)
   */
  private reexport(volume: Volume): void {
    const wasReadOnly = this.exportedReadOnly.get(volume.name);
    if (!isExported(volume)) {
      this.exportedReadOnly.delete(volume.name);
      return this.registry.remove(volume.name, `volume ${volume.name} is now ${volume.meta.role}`);
    }
    this.exportVolume(volume);
    if (wasReadOnly !== undefined && wasReadOnly !== this.exportedReadOnly.get(volume.name)) {
      this.registry.closeSessions(volume.name, `volume ${volume.name} is now ${volume.meta.role}`);
    }
  }

  /** SIGHUP or POST /v1/reload: new NBD and API connections use the TLS files as they are now; a part whose files do not load keeps its old ones (logged). */
  reloadTls(): ReloadOutcome[] {
    this.log.info('reloading the NBD and API TLS files');
    return [this.nbd.reloadTls(), this.api.reloadTls()];
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
      alerts: this.events.alerts.firing(),
    };
  }

  historyJson(): HistoryJson {
    return this.history.json();
  }

  ioStats(): ReadonlyMap<string, VolumeIoStats> {
    return this.registry.allIoStats();
  }

  listVolumes(): VolumeJson[] {
    return this.engine.volumes().map((v) => this.volumeJson(v));
  }

  async getVolume(ref: string): Promise<VolumeJson> {
    const peer = this.peerOf(ref);
    if (peer) {
      const result = await this.replication.forward(peer.array, 'GET', `/v1/volumes/${encodeURIComponent(peer.name)}`);
      if (result.status >= 400) throw errorFrom(result.json);
      return result.json as VolumeJson;
    }
    return this.volumeJson(this.resolve(ref));
  }

  /** ARRAY:NAME naming another array. */
  private peerOf(ref: string): { array: string; name: string } | undefined {
    const at = ref.indexOf(':');
    if (at < 0) return undefined;
    const array = ref.slice(0, at);
    return array === this.config.arrayId ? undefined : { array, name: ref.slice(at + 1) };
  }

  async createVolume(body: CreateVolumeBody): Promise<VolumeJson> {
    if (body.remote !== undefined && !body.commandDevice) throw new TwinstoreError('BAD_REQUEST', 'remote: only a command device forwards to a peer', { field: 'remote' });
    if (body.remote !== undefined && !this.replication.listPeers().some((p) => p.id === body.remote)) {
      throw new TwinstoreError('PEER_UNKNOWN', `no peer ${body.remote}; add it with peer add`, { field: 'remote' });
    }
    if (body.commandDevice && body.sizeBytes < 2 * commandBlockBytes) {
      throw new TwinstoreError('BAD_REQUEST', `size: a command device needs at least ${2 * commandBlockBytes} bytes (request and reply blocks)`, { field: 'size' });
    }
    // A command device's document goes in the volume's own commit: its export reads it as soon as
    // the volume exists, and a create that is refused or fails writes neither.
    const commandDevice = body.commandDevice
      ? { role: 'command-device' as const, documents: [{ t: 'doc' as const, kind: COMMAND_DEVICE_DOCUMENT, key: body.name, value: { remote: body.remote ?? null } satisfies CommandDeviceDocument }] }
      : {};
    const volume = await this.engine.createVolume({ name: body.name, sizeBytes: body.sizeBytes, lun: body.lun, ...commandDevice });
    this.log.info({ volume: volume.name, lun: volume.meta.lun, sizeBytes: volume.sizeBytes, role: volume.meta.role, remote: body.remote }, 'volume created');
    return this.volumeJson(volume);
  }

  /** The command device behind a command-device volume (its document says whether it forwards). */
  private commandDeviceFor(volume: Volume): CommandDevice | undefined {
    if (volume.meta.role !== 'command-device') return undefined;
    const doc = this.engine.documents<CommandDeviceDocument>(COMMAND_DEVICE_DOCUMENT).get(volume.name);
    return new CommandDevice({
      volume,
      token: Buffer.from(this.token, 'utf8'),
      remote: doc?.remote ?? null,
      local: (method, url, body) => this.api.inject(method, url, body, `command device ${volume.name}`),
      forward: (array, method, url, body) => this.replication.forward(array, method, url, body),
    });
  }

  async deleteVolume(ref: string, force: boolean): Promise<void> {
    const peer = this.peerOf(ref);
    if (peer) {
      const query = force ? '?force=true' : '';
      const result = await this.replication.forward(peer.array, 'DELETE', `/v1/volumes/${encodeURIComponent(peer.name)}${query}`);
      if (result.status >= 400) throw errorFrom(result.json);
      return;
    }
    const volume = this.resolve(ref);
    // Before the sessions: --force closes sessions, it never takes a volume from a group.
    this.replication.assertVolumeFree(volume);
    const sessions = this.registry.sessionCount(volume.name);
    if (sessions > 0 && !force) {
      throw new TwinstoreError('VOLUME_BUSY', `volume ${volume.name} has ${sessions} open NBD session(s); close them or use --force`);
    }
    const commandDevice = volume.meta.role === 'command-device';
    await this.engine.deleteVolume(volume.name);
    if (commandDevice) await this.engine.persist([{ t: 'doc', kind: COMMAND_DEVICE_DOCUMENT, key: volume.name }]);
    this.log.info({ volume: volume.name }, 'volume deleted');
  }

  /** A volume by NAME or #LUN. */
  private resolve(ref: string): Volume {
    if (ref.startsWith(`${this.config.arrayId}:`)) ref = ref.slice(this.config.arrayId.length + 1);
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
      writesRefused: this.replication.manager.writesRefusedOf(volume) ?? null,
      exported: exported !== undefined,
      nbdUri: exported ? `nbd://${this.nbdAddress}/${encodeURIComponent(meta.name)}` : null,
      sessions: this.registry.sessionCount(volume.name),
      createdAt: meta.createdAt,
    };
  }

  /** Stops in order; after a failed sync the files are still closed and the lock released, and the stop fails (unclean). */
  async stop(): Promise<void> {
    this.log.info('shutting down');
    try {
      await this.close();
    } finally {
      this.releaseLock();
    }
    this.log.info('stopped cleanly');
  }

  /** Listeners first (no new request), then links and groups, then the drives; each step runs even if one before failed. */
  private async close(): Promise<void> {
    let failed: unknown;
    this.events.stop();
    this.history.stop();
    for (const step of [() => this.api.close(), () => this.nbd.close(), () => this.replication.stop(), () => this.engine.close()]) {
      try {
        await step();
      } catch (error) {
        failed ??= error;
      }
    }
    if (failed !== undefined) throw failed;
  }
}

function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
