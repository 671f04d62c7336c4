// The array's replication wiring: the link listener and one PeerLink per peer
// (from the config's peers[] and from `peer add`), the journal groups, the
// link requests the peer may send, and the API's replication routes.

import { BytePacer } from '../util/byte-pacer.js';
import { TwinstoreError, isTwinstoreError } from '../errors.js';
import type { ArrayConfig } from '../config/index.js';
import { parseHostPort } from '../config/index.js';
import { LinkServer, PeerLink, readPskFile, type LinkIdentity, type LinkRequest, type LinkResponse, type LinkTransport } from '../link/index.js';
import {
  OK, ReplicationManager, PEER_DOCUMENT, answerLinkRequest, groupsOfPeer, linkRequest, volumeUse, type GroupStats, type JournalDeviceFactory, type LinkHandlers, type PeerMeta,
} from '../replication/index.js';
import type { ReplicationControl } from '../api/index.js';
import { noEvents, type EventSink } from '../events/bus.js';
import type { StorageEngine, Volume } from '../storage/index.js';
import { COMMAND_DEVICE_DOCUMENT, type CommandDeviceDocument } from './command-device.js';
import type { Logger } from '../util/log.js';
import { tokenPath } from './run-files.js';
import { warnExposedSecrets, type SecretFile } from './secret-files.js';

/** Runs an API request here; `via` names who sent it (the audit line says so). */
export type ApiInjector = (method: string, url: string, body: unknown, via: string) => Promise<{ status: number; json: unknown }>;

/** Parts the seeded simulator (test/sim) swaps in: its network, its journal device faults. */
export interface ReplicationParts {
  transport?: LinkTransport;
  journalDevice?: JournalDeviceFactory;
  /** Where the groups and links report their changes (the array's event bus); the simulator sets none. */
  events?: EventSink;
}

export class ArrayReplication implements ReplicationControl {
  readonly manager: ReplicationManager;
  private readonly peers = new Map<string, PeerLink>();
  private server: LinkServer | undefined;
  private identity: LinkIdentity | undefined;
  linkAddress = '';
  injector: ApiInjector = () => Promise.reject(new TwinstoreError('INTERNAL', 'API not ready'));

  constructor(private readonly config: ArrayConfig, private readonly engine: StorageEngine, private readonly log: Logger, private readonly parts: ReplicationParts = {}) {
    this.manager = new ReplicationManager({
      engine,
      log,
      ...(parts.journalDevice === undefined ? {} : { journalDevice: parts.journalDevice }),
      peerChannel: (id) => this.peers.get(id),
      defaults: { ...config.groupDefaults, regionBytes: config.bitmapRegionBytes },
      suspendAfterMs: config.link.suspendAfterMs,
      startHoldMs: config.takeover.startHoldMs,
      ...(parts.events === undefined ? {} : { events: parts.events }),
      ...(config.link.bandwidthMax > 0 ? { pacer: new BytePacer(config.link.bandwidthMax) } : {}),
    });
    this.events = parts.events ?? noEvents;
  }

  private readonly events: EventSink;

  async start(): Promise<void> {
    const pskFile = this.config.link.pskFile;
    warnExposedSecrets(this.secretFiles(), this.log);
    const wanted = this.config.listen.link !== undefined || this.config.peers.length > 0 || this.engine.documents(PEER_DOCUMENT).size > 0;
    if (wanted) {
      if (pskFile === undefined) throw new TwinstoreError('CONFIG_INVALID', `${this.config.file}: link.pskFile is required when listen.link or peers are set (make one with twinstore keys)`, { field: 'link.pskFile' });
      this.identity = { arrayId: this.config.arrayId, psk: readPskFile(pskFile) };
    }
    if (this.config.listen.link && this.identity) {
      this.server = new LinkServer({ identity: this.identity, handler: (peer, request) => this.handle(peer, request), isPeer: (id) => this.isPeer(id), onPeer: (id) => this.peers.get(id)?.retryNow(), log: this.log, heartbeatMs: this.config.link.heartbeatMs, ...this.transportOption() });
      const address = await listening('listen.link', this.config.listen.link, this.server.listen(this.config.listen.link.host, this.config.listen.link.port));
      this.linkAddress = address.address.includes(':') ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
    }
    const stored = this.engine.documents<PeerMeta>(PEER_DOCUMENT);
    for (const peer of this.config.peers) this.connectPeer(peer.id, `${peer.link.host}:${peer.link.port}`);
    for (const peer of stored.values()) if (!this.config.peers.some((p) => p.id === peer.id)) this.connectPeer(peer.id, peer.link);
    await this.manager.start();
  }

  /**
   * The secrets this array reads: the link key, and the API token file (when the config sets no
   * token). Checked here because this is the first step of start-up that has the logger and the
   * config; the token file exists by now (ensureToken ran before).
   */
  private secretFiles(): SecretFile[] {
    const files: SecretFile[] = [];
    if (this.config.link.pskFile !== undefined) files.push({ what: 'the link key file (link.pskFile)', path: this.config.link.pskFile });
    if (this.config.apiToken === undefined) files.push({ what: 'the API token file', path: tokenPath(this.config.dataDir) });
    return files;
  }

  /** Arrays the link listener serves: the config's peers and those added with `peer add` (persisted), never this one. */
  private isPeer(id: string): boolean {
    if (id === this.config.arrayId) return false;
    return this.peers.has(id) || this.config.peers.some((peer) => peer.id === id) || this.engine.documents(PEER_DOCUMENT).has(id);
  }

  private connectPeer(id: string, link: string): void {
    if (!this.identity) throw new TwinstoreError('CONFIG_INVALID', 'link.pskFile is required before adding peers', { field: 'link.pskFile' });
    const address = parseHostPort(link);
    if (!address) throw new TwinstoreError('BAD_REQUEST', `peer link "${link}" is not HOST:PORT`, { field: 'link' });
    const existing = this.peers.get(id);
    if (existing) return existing.setAddress(address);
    const peer = new PeerLink({ identity: this.identity, peerId: id, address, log: this.log, heartbeatMs: this.config.link.heartbeatMs, ...this.transportOption() });
    peer.on('up', () => {
      this.log.info({ peer: id }, 'link up');
      this.events.publish('link', { peer: id, up: true });
      this.manager.peerUp(id);
    });
    peer.on('down', (reason: unknown) => {
      this.log.warn({ peer: id, reason: String(reason) }, 'link down');
      this.events.publish('link', { peer: id, up: false, reason: String(reason) });
    });
    this.peers.set(id, peer);
    peer.start();
  }

  private transportOption(): { transport?: LinkTransport } {
    return this.parts.transport === undefined ? {} : { transport: this.parts.transport };
  }

  /** Requests the peer sends us over the link; replication/protocol.ts checks each body first. */
  private handle(peer: string, request: LinkRequest): Promise<LinkResponse> {
    return answerLinkRequest(this.linkHandlers, peer, request);
  }

  private readonly linkHandlers: LinkHandlers = {
    'journal.read': (body) => this.manager.readJournal(body),
    'pair.prepare': async (body) => {
      this.manager.prepare(body);
      return { body: OK };
    },
    'pair.join': async (body) => {
      await this.manager.join(body);
      return { body: OK };
    },
    'group.delete': async (body) => {
      await this.manager.deleteGroup(body.group);
      return { body: OK };
    },
    'pair.split-rw': async (body) => {
      await this.manager.makeWritable(body);
      return { body: OK };
    },
    'pair.resync-prepare': async (body) => ({ body: await this.manager.prepareResync(body) }),
    'pair.resync-started': async (body) => {
      await this.manager.resyncStarted(body);
      return { body: OK };
    },
    'swap.drain': async (body) => ({ body: this.manager.startDrain(body) }),
    'group.divergence': async (body) => ({ body: await this.manager.divergence(body) }),
    'swap.status': async (body) => ({ body: this.manager.swapStatus(body) }),
    'swap.freeze': async (body) => ({ body: await this.manager.freezeForSwap(body) }),
    'swap.thaw': async (body) => {
      await this.manager.thawAfterSwap(body);
      return { body: OK };
    },
    'swap.demote': async (body) => {
      await this.manager.demote(body);
      return { body: OK };
    },
    'swap.reverse': async (body) => {
      await this.manager.demote(body, true);
      return { body: OK };
    },
    'group.hello': async (body) => ({ body: await this.manager.hello(body) }),
    'pair.display': async (body) => ({ body: { pairs: this.manager.display(body.group) } }),
    'api.forward': async (body, peer) => ({ body: await this.injector(body.method, body.url, body.body, `peer ${peer}`) }),
  };

  /** Runs an API request on a peer array and returns its answer (ARRAY:NAME commands). */
  async forward(arrayId: string, method: string, url: string, body?: unknown): Promise<{ status: number; json: unknown }> {
    const peer = this.peers.get(arrayId);
    if (!peer) throw new TwinstoreError('PEER_UNKNOWN', `no peer named ${arrayId}`);
    return (await linkRequest(peer, 'api.forward', { method, url, body })).body;
  }

  // ReplicationControl ------------------------------------------------------------

  listPeers(): Array<{ id: string; link: string; connected: boolean }> {
    return [...this.peers.entries()].map(([id, peer]) => ({ id, link: this.peerLink(id), connected: peer.connected }));
  }

  private peerLink(id: string): string {
    const fromConfig = this.config.peers.find((p) => p.id === id);
    if (fromConfig) return `${fromConfig.link.host}:${fromConfig.link.port}`;
    return this.engine.documents<PeerMeta>(PEER_DOCUMENT).get(id)?.link ?? '';
  }

  async addPeer(id: string, link: string): Promise<{ id: string; link: string }> {
    if (id === this.config.arrayId) throw new TwinstoreError('BAD_REQUEST', 'an array cannot be its own peer', { field: 'id' });
    this.connectPeer(id, link);
    await this.engine.persist([{ t: 'doc', kind: PEER_DOCUMENT, key: id, value: { id, link } }]);
    return { id, link };
  }

  /**
   * peer remove: refused while a group or a remote command device uses the peer (its pairs would
   * lose their link, and the group could not be opened at the next start), and for a peer from the
   * config file (it would come back at the next start). Removed from memory first, so nothing
   * starts using it while the removal is persisted.
   */
  async removePeer(id: string): Promise<{ deleted: string }> {
    const peer = this.peers.get(id);
    if (!peer) throw new TwinstoreError('PEER_UNKNOWN', `no peer ${id} on ${this.config.arrayId}`, { field: 'id' });
    if (this.config.peers.some((p) => p.id === id)) {
      throw new TwinstoreError('BAD_REQUEST', `peer ${id} is in the config file ${this.config.file} (peers[]); remove it there and restart the array`, { field: 'id' });
    }
    const groups = groupsOfPeer(this.manager.groupMetas(), id);
    if (groups.length > 0) {
      const commands = groups.map((g) => `pair delete --group ${g}`).join(', ');
      throw new TwinstoreError('PEER_IN_USE', `peer ${id} is the peer of group ${groups.join(', ')}; run ${commands} first (with --force if ${id} is gone for good)`, { field: 'id' });
    }
    const devices = this.remoteCommandDevices(id);
    if (devices.length > 0) {
      throw new TwinstoreError('PEER_IN_USE', `command device ${devices.join(', ')} forwards to peer ${id}; delete it first (volume delete ${devices[0]})`, { field: 'id' });
    }
    this.peers.delete(id);
    try {
      await this.engine.persist([{ t: 'doc', kind: PEER_DOCUMENT, key: id }]);
    } catch (error) {
      this.peers.set(id, peer);
      throw error;
    }
    await peer.close();
    this.log.info({ peer: id }, 'peer removed');
    return { deleted: id };
  }

  /** Command-device volumes whose requests go to peer `id`. */
  private remoteCommandDevices(id: string): string[] {
    const documents = this.engine.documents<CommandDeviceDocument>(COMMAND_DEVICE_DOCUMENT);
    return this.engine.volumes().filter((v) => v.meta.role === 'command-device' && documents.get(v.name)?.remote === id).map((v) => v.name);
  }

  /**
   * Refuses deleting a volume a journal group uses (its journal, a P-VOL, an S-VOL): the group
   * would lose it and the next start could not open the group. Run synchronously right before
   * the delete, so no group can take the volume in between.
   */
  assertVolumeFree(volume: Volume): void {
    const use = volumeUse(this.manager.groupMetas(), volume.meta.id);
    if (!use) return;
    const what = { journal: 'the journal', 'P-VOL': 'a P-VOL', 'S-VOL': 'an S-VOL' }[use.as];
    throw new TwinstoreError('VOLUME_IN_USE', `volume ${volume.name} is ${what} of group ${use.group}; run pair delete --group ${use.group} first (--force only closes NBD sessions; it never deletes a volume a group uses)`, { field: 'name' });
  }

  listJournals(): Array<Record<string, unknown>> {
    return this.engine.volumes().filter((v) => v.meta.role.startsWith('journal')).map((v) => this.manager.journalInfo(v.name));
  }

  /** journal delete: a journal no group uses (a journal-free one, or one a lost group left behind). */
  async deleteJournal(name: string): Promise<{ deleted: string }> {
    const volume = this.engine.volume(name);
    if (!volume || !volume.meta.role.startsWith('journal')) throw new TwinstoreError('VOLUME_NOT_FOUND', `no journal named ${name} on ${this.config.arrayId}`, { field: 'name' });
    this.assertVolumeFree(volume);
    await this.engine.deleteVolume(name);
    this.log.info({ journal: name }, 'journal deleted');
    return { deleted: name };
  }

  async createJournal(name: string, sizeBytes: number): Promise<Record<string, unknown>> {
    await this.manager.createJournal(name, sizeBytes);
    return this.manager.journalInfo(name);
  }

  showJournal(name: string): Record<string, unknown> {
    return this.manager.journalInfo(name);
  }

  async createPair(body: Parameters<ReplicationControl['createPair']>[0]): Promise<unknown> {
    const pvolArray = body.pvol.includes(':') ? body.pvol.slice(0, body.pvol.indexOf(':')) : this.config.arrayId;
    if (pvolArray !== this.config.arrayId) {
      const result = await this.forward(pvolArray, 'POST', '/v1/pairs', body);
      if (result.status >= 400) throw errorFrom(result.json);
      return (result.json as { pairs: unknown }).pairs;
    }
    return this.manager.createPair(body);
  }

  async displayPairs(group: string | undefined): Promise<unknown[]> {
    return this.manager.display(group);
  }

  groupStats(): GroupStats[] {
    return this.manager.groupStats();
  }

  unready(): string[] {
    return this.manager.unready();
  }

  async setRestorePaused(group: string, paused: boolean): Promise<{ group: string; paused: boolean }> {
    const restore = this.manager.restoreGroup(group);
    if (!restore) throw new TwinstoreError('GROUP_NOT_FOUND', `group ${group} does not receive on ${this.config.arrayId}`, { field: 'group' });
    await restore.setApplyPaused(paused);
    return { group, paused };
  }

  /** pair split: run on the master; sent there from the S-VOL's array. */
  async splitPair(group: string, rw: boolean): Promise<unknown> {
    if (this.manager.groupRole(group) === 'restore') return this.forwardToMaster(group, 'POST', '/v1/pairs/split', { group, rw });
    return this.manager.split(group, rw);
  }

  /** pair resync: run on the master; sent there from the S-VOL's array. `swap`: after a takeover, on the new primary. */
  async resyncPair(group: string, swap: boolean, discard: string | null = null, forwarded = false): Promise<unknown> {
    const forward = (): Promise<unknown> => {
      if (forwarded) throw new TwinstoreError('PAIR_INVALID', `group ${group} cannot be resynced from ${this.config.arrayId} that way (the command came from the peer already)`, { field: 'group' });
      return this.forwardToMaster(group, 'POST', '/v1/pairs/resync', { group, swap, discard, forwarded: true });
    };
    if (this.manager.groupRole(group) === 'restore') return forward();
    const state = this.manager.takeoverState(group);
    // After a takeover, --swap keeps the array that took over as the primary; without it the old one is again.
    if (swap) return state === 'fenced' ? forward() : this.manager.resyncSwap(group, discard);
    if (state === 'fenced' || state === 'reclaiming') return this.manager.reclaim(group, discard);
    if (state === 'took-over') return forward();
    if (discard !== null) throw new TwinstoreError('BAD_REQUEST', '--discard names a side after a takeover (the group is not taken over here)', { field: 'discard' });
    return this.manager.resync(group);
  }

  /** takeover: run on the receiving array (docs/architecture.md §6). */
  async takeover(group: string, force: boolean): Promise<unknown> {
    this.events.publish('takeover-step', { group, step: 'started', force });
    try {
      const result = await this.manager.takeover(group, { force, peerTimeoutMs: this.config.takeover.peerTimeoutMs, swap: this.config.swap });
      this.events.publish('takeover-step', { group, step: 'done', kind: result.kind, epoch: result.epoch, consistencySeq: result.consistencySeq });
      return result;
    } catch (error) {
      this.events.publish('takeover-step', { group, step: 'failed', error: isTwinstoreError(error) ? error.toJSON() : { code: 'INTERNAL', message: (error as Error).message } });
      throw error;
    }
  }

  private async forwardToMaster(group: string, method: string, url: string, body: unknown): Promise<unknown> {
    const peer = this.manager.peerOfGroup(group);
    const result = await this.forward(peer, method, url, body);
    if (result.status >= 400) throw errorFrom(result.json);
    return result.json;
  }

  async deleteGroup(group: string, force: boolean): Promise<{ deleted: string }> {
    const peerId = this.manager.peerOfGroup(group);
    const peer = this.peers.get(peerId);
    if (!force) {
      if (!peer?.connected) throw new TwinstoreError('LINK_DOWN', `peer ${peerId} is not reachable; use --force to end the pair on ${this.config.arrayId} alone`);
      try {
        await linkRequest(peer, 'group.delete', { group });
      } catch (error) {
        // Already ended there (a --force delete while we were away): end it here too.
        if (!isTwinstoreError(error) || error.code !== 'GROUP_NOT_FOUND') throw error;
        this.log.info({ group, peer: peerId }, 'pair delete: the peer no longer has the group');
      }
    }
    await this.manager.deleteGroup(group);
    return { deleted: group };
  }

  /** The groups, then the links; the links close even when a group's stop fails (its error is thrown after). */
  async stop(): Promise<void> {
    try {
      await this.manager.stop();
    } finally {
      await Promise.all([...this.peers.values()].map((p) => p.close()));
      await this.server?.close();
    }
  }
}

/** A listener's bind, its failure (an address in use, not on this machine) as LISTEN_FAILED naming the config key. */
export async function listening<T>(key: string, address: { host: string; port: number }, bind: Promise<T>): Promise<T> {
  try {
    return await bind;
  } catch (error) {
    if (isTwinstoreError(error)) throw error;
    const reason = (error as NodeJS.ErrnoException).code === 'EADDRINUSE' ? 'the address is in use (another process listens there)' : (error as Error).message;
    throw new TwinstoreError('LISTEN_FAILED', `${key} ${address.host}:${address.port}: ${reason}`, { field: key, cause: error });
  }
}

export function errorFrom(json: unknown): TwinstoreError {
  const error = (json as { error?: { code?: string; message?: string; field?: string } } | undefined)?.error;
  const code = (error?.code ?? 'INTERNAL') as ConstructorParameters<typeof TwinstoreError>[0];
  return new TwinstoreError(code, error?.message ?? 'the peer failed', error?.field === undefined ? {} : { field: error.field });
}
