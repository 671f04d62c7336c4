// The pair commands of both arrays: journals made, pairs created (asking the peer to prepare
// and join), groups deleted, split (and split --rw on the S-VOL side), resync (both sides'
// steps), and the master's side of journal.read. Groups are opened and looked up through the
// registry, which owns them.

import crypto from 'node:crypto';
import { TwinstoreError } from '../../errors.js';
import { Journal, type Epoch } from '../../journal/index.js';
import type { Volume } from '../../storage/index.js';
import {
  linkRequest, wireRecords, type GroupRequest, type JournalReadAnswer, type JournalReadRequest, type PairJoinRequest, type PairPrepareRequest,
  type ResyncPrepareAnswer, type ResyncStartedRequest, type SplitRwRequest,
} from '../protocol.js';
import { GROUP_DOCUMENT, type FencePolicy, type GroupMeta, type OverflowPolicy, type PairDisplay, type PairMeta } from '../model.js';
import type { GroupRegistry } from './registry.js';

export interface PairCreateRequest {
  group: string;
  pvol: string;
  svol: string;
  journal: string;
  remoteJournal: string;
  overflow?: OverflowPolicy | undefined;
  copyPaceBytesPerSecond?: number | undefined;
  fence?: FencePolicy | undefined;
  fenceAfterMs?: number | undefined;
}

/** Parses ARRAY:NAME; a bare NAME belongs to `localId`. */
export function splitRef(ref: string, localId: string): { array: string; name: string } {
  const at = ref.indexOf(':');
  return at < 0 ? { array: localId, name: ref } : { array: ref.slice(0, at), name: ref.slice(at + 1) };
}

/** What a pair create (or join) chooses for a new group; the rest of its document comes from the defaults. */
type NewGroupFields = Pick<GroupMeta, 'name' | 'role' | 'peer' | 'journalVolumeId' | 'remoteJournal' | 'overflow' | 'copyPaceBytesPerSecond'> & { fence: FencePolicy; fenceAfterMs: number };

export class PairCommands {
  constructor(private readonly groups: GroupRegistry) {}

  private get engine(): GroupRegistry['engine'] {
    return this.groups.engine;
  }

  private get defaults(): GroupRegistry['options']['defaults'] {
    return this.groups.options.defaults;
  }

  // ---- journals ---------------------------------------------------------------

  async createJournal(name: string, sizeBytes: number): Promise<Volume> {
    if (sizeBytes < Journal.MIN_BYTES) {
      throw new TwinstoreError('BAD_REQUEST', `a journal must hold at least 4x the largest write: ${Journal.MIN_BYTES} bytes`, { field: 'size' });
    }
    const volume = await this.engine.createVolume({ name, sizeBytes, role: 'journal-free' });
    await volume.writeZeroes(0, sizeBytes, true);
    await this.engine.flush();
    return volume;
  }

  // ---- pairs --------------------------------------------------------------------

  /** pair create, run on the master (P-VOL) array. */
  async createPair(request: PairCreateRequest): Promise<PairDisplay[]> {
    const local = this.engine.arrayId;
    const pvolRef = splitRef(request.pvol, local);
    const svolRef = splitRef(request.svol, local);
    const journalRef = splitRef(request.journal, local);
    const remoteJournalRef = splitRef(request.remoteJournal, svolRef.array);
    if (pvolRef.array !== local || journalRef.array !== local) {
      throw new TwinstoreError('BAD_REQUEST', `run pair create on the P-VOL's array or name it ${local}:NAME`, { field: 'pvol' });
    }
    if (svolRef.array === local || remoteJournalRef.array !== svolRef.array) {
      throw new TwinstoreError('BAD_REQUEST', 'the S-VOL and the remote journal must be on the peer array (PEER:NAME)', { field: 'svol' });
    }
    const peer = this.groups.options.peerChannel(svolRef.array);
    if (!peer) throw new TwinstoreError('PEER_UNKNOWN', `no peer ${svolRef.array}; add it with peer add`);
    const pvol = this.engine.volume(pvolRef.name);
    if (!pvol) throw new TwinstoreError('VOLUME_NOT_FOUND', `no volume ${pvolRef.name}`, { field: 'pvol' });
    if (pvol.meta.role !== 'simplex') throw new TwinstoreError('PAIR_INVALID', `${pvolRef.name} is ${pvol.meta.role}, not simplex`, { field: 'pvol' });
    const existing = this.groups.master(request.group);
    const journalVolume = this.engine.volume(journalRef.name);
    if (!journalVolume) throw new TwinstoreError('VOLUME_NOT_FOUND', `no journal ${journalRef.name}`, { field: 'journal' });
    if (existing && existing.meta.journalVolumeId !== journalVolume.meta.id) {
      throw new TwinstoreError('PAIR_INVALID', `group ${request.group} already uses journal ${this.groups.journalName(existing.meta)}; name that one`, { field: 'journal' });
    }
    if (!existing && journalVolume.meta.role !== 'journal-free') {
      throw new TwinstoreError('PAIR_INVALID', `journal ${journalRef.name} is ${journalVolume.meta.role}; a new group needs a journal-free journal`, { field: 'journal' });
    }
    if (this.groups.restore(request.group)) throw new TwinstoreError('PAIR_INVALID', `group ${request.group} receives on this array`, { field: 'group' });
    await linkRequest(peer, 'pair.prepare', { group: request.group, svol: svolRef.name, journal: remoteJournalRef.name, sizeBytes: pvol.sizeBytes, master: local });

    const epoch: Epoch = existing?.meta.epoch ?? { counter: 1, arrayId: local, nonce: crypto.randomBytes(8).toString('hex') };
    const pair: PairMeta = {
      pvolLun: pvol.meta.lun,
      pvolName: pvol.name,
      svolName: svolRef.name,
      localVolumeId: pvol.meta.id,
      sizeBytes: pvol.sizeBytes,
      status: 'COPY',
      statusReason: null,
      copyOffset: 0,
      copyLastSeq: null,
    };
    let group = existing;
    if (!group) {
      const journal = await Journal.format(this.groups.journalDevice(journalVolume), { groupId: request.group, role: 'master', epoch, firstSeq: 0 });
      await this.engine.setRole(journalVolume.name, 'journal-master');
      const meta = this.newMeta({
        name: request.group, role: 'master', peer: svolRef.array, journalVolumeId: journalVolume.meta.id, remoteJournal: remoteJournalRef.name,
        overflow: request.overflow ?? this.defaults.overflow, copyPaceBytesPerSecond: request.copyPaceBytesPerSecond ?? 0,
        fence: request.fence ?? this.defaults.fence, fenceAfterMs: request.fenceAfterMs ?? this.defaults.fenceAfterMs,
      }, epoch);
      group = this.groups.newMaster(meta, journal);
    }
    try {
      await linkRequest(peer, 'pair.join', {
        group: request.group, master: local, epoch, journal: remoteJournalRef.name, remoteJournal: journalRef.name, pair: { ...pair, localVolumeId: -1 },
        ...(group.meta.fence === undefined ? {} : { fence: group.meta.fence }), ...(group.meta.fenceAfterMs === undefined ? {} : { fenceAfterMs: group.meta.fenceAfterMs }),
      });
    } catch (error) {
      if (!existing) {
        // The peer did not join: give the journal back, as if the group had never been made.
        this.groups.forget(request.group);
        await group.journal.close().catch(() => undefined);
        await this.engine.setRole(journalVolume.name, 'journal-free');
      }
      throw error;
    }
    group.meta.pairs.push(pair);
    group.addPair(pair, group.meta.regionBytes ?? this.defaults.regionBytes);
    await this.groups.persist(group.meta);
    await this.engine.setRole(pvol.name, 'pvol');
    group.startCopy(pair.pvolLun);
    this.groups.log.info({ group: request.group, pvol: pvol.name, svol: request.svol }, 'pair created');
    return this.groups.display(request.group);
  }

  /** A new group's document. */
  private newMeta(chosen: NewGroupFields, epoch: Epoch): GroupMeta {
    // In the order pair create always wrote them.
    return {
      name: chosen.name, role: chosen.role, peer: chosen.peer, journalVolumeId: chosen.journalVolumeId, remoteJournal: chosen.remoteJournal,
      overflow: chosen.overflow, throttleMsMax: this.defaults.throttleMsMax, copyPaceBytesPerSecond: chosen.copyPaceBytesPerSecond,
      fence: chosen.fence, fenceAfterMs: chosen.fenceAfterMs, regionBytes: this.defaults.regionBytes,
      epoch,
      epochs: [{ epoch, firstSeq: 0 }],
      pairs: [],
      createdAt: new Date().toISOString(),
    };
  }

  /** On the restore side: can this S-VOL and journal join group `group`? */
  prepare(body: PairPrepareRequest): void {
    const svol = this.engine.volume(body.svol);
    if (!svol) throw new TwinstoreError('VOLUME_NOT_FOUND', `no S-VOL ${body.svol} on ${this.engine.arrayId}`, { field: 'svol' });
    if (svol.meta.role !== 'simplex') throw new TwinstoreError('PAIR_INVALID', `S-VOL ${body.svol} is ${svol.meta.role}, not SMPL`, { field: 'svol' });
    if (svol.sizeBytes !== body.sizeBytes) {
      throw new TwinstoreError('PAIR_INVALID', `S-VOL ${body.svol} holds ${svol.sizeBytes} bytes, the P-VOL ${body.sizeBytes}`, { field: 'svol' });
    }
    if (this.groups.openSessions(svol.name) > 0) throw new TwinstoreError('VOLUME_BUSY', `S-VOL ${body.svol} is open by a host; close it first`, { field: 'svol' });
    const journal = this.engine.volume(body.journal);
    if (!journal) throw new TwinstoreError('VOLUME_NOT_FOUND', `no journal ${body.journal} on ${this.engine.arrayId}`, { field: 'remoteJournal' });
    const existing = this.groups.restore(body.group);
    if (existing && existing.meta.journalVolumeId !== journal.meta.id) {
      throw new TwinstoreError('PAIR_INVALID', `group ${body.group} already uses journal ${this.groups.journalName(existing.meta)} on ${this.engine.arrayId}`, { field: 'remoteJournal' });
    }
    if (!existing && journal.meta.role !== 'journal-free') {
      throw new TwinstoreError('PAIR_INVALID', `journal ${body.journal} is ${journal.meta.role}; a new group needs a journal-free journal`, { field: 'remoteJournal' });
    }
    if (this.groups.master(body.group)) throw new TwinstoreError('PAIR_INVALID', `group ${body.group} sends from this array`, { field: 'group' });
  }

  async join(body: PairJoinRequest): Promise<void> {
    this.prepare({ group: body.group, svol: body.pair.svolName, journal: body.journal, sizeBytes: body.pair.sizeBytes, master: body.master });
    const svol = this.engine.volume(body.pair.svolName)!;
    let group = this.groups.restore(body.group);
    if (!group) {
      const journalVolume = this.engine.volume(body.journal)!;
      const journal = await Journal.format(this.groups.journalDevice(journalVolume), { groupId: body.group, role: 'restore', epoch: body.epoch, firstSeq: 0 });
      await this.engine.setRole(journalVolume.name, 'journal-restore');
      const meta = this.newMeta({
        name: body.group, role: 'restore', peer: body.master, journalVolumeId: journalVolume.meta.id, remoteJournal: body.remoteJournal,
        overflow: this.defaults.overflow, copyPaceBytesPerSecond: 0,
        // The group's link-down policy, for when this array becomes its primary (swap, takeover).
        fence: body.fence ?? this.defaults.fence, fenceAfterMs: body.fenceAfterMs ?? this.defaults.fenceAfterMs,
      }, body.epoch);
      group = this.groups.newRestore(meta, journal);
      group.start();
    }
    group.meta.pairs.push({ ...body.pair, localVolumeId: svol.meta.id });
    await this.groups.persist(group.meta);
    await this.engine.setRole(svol.name, 'svol');
  }

  /** The master side of `journal.read`. */
  async readJournal(body: JournalReadRequest): Promise<{ body: JournalReadAnswer; payload: Buffer[]; payloadCrcs: number[] }> {
    const group = this.groups.master(body.group);
    if (!group) throw new TwinstoreError('PAIR_INVALID', `no group ${body.group} sends from ${this.engine.arrayId}`);
    const { records, payload, payloadCrcs } = wireRecords(await group.readJournal(body));
    const pairs = group.meta.pairs.map((p) => ({ pvolLun: p.pvolLun, status: p.status, statusReason: p.statusReason }));
    const skipTo = group.meta.skipTo ?? 0;
    // Until the receiver has applied past the skip point (records it stored below it may be held
    // by an atomic unit that never ends), each answer says it.
    const skip = body.fromSeq < skipTo || body.appliedSeq < skipTo;
    // A receiver that lost its journal: every region is marked now (readJournal did it), and its journal goes on at skipTo.
    if (body.journalLost === true) return { body: { records: [], masterNextSeq: group.journal.nextSeq, pairs, skipTo, fullCopyMarked: true }, payload: [], payloadCrcs: [] };
    return { body: { records, masterNextSeq: group.journal.nextSeq, pairs, ...(skip ? { skipTo } : {}) }, payload, payloadCrcs };
  }

  /** Ends every pair of the group on this array: volumes back to simplex, the journal free again. */
  async deleteGroup(name: string): Promise<void> {
    const group = this.groups.master(name) ?? this.groups.restore(name);
    if (!group) throw new TwinstoreError('GROUP_NOT_FOUND', `no journal group ${name} on ${this.engine.arrayId}`, { field: 'group' });
    await group.stop();
    this.groups.forget(name);
    for (const pair of group.meta.pairs) {
      const volume = this.engine.volumeById(pair.localVolumeId);
      if (volume) await this.engine.setRole(volume.name, 'simplex');
      await this.engine.persist([{ t: 'regions', set: `bitmap:${name}:${pair.pvolLun}`, clear: true }]);
    }
    const journal = this.engine.volumeById(group.meta.journalVolumeId);
    if (journal) await this.engine.setRole(journal.name, 'journal-free');
    await this.engine.persist([{ t: 'doc', kind: GROUP_DOCUMENT, key: name }]);
    this.groups.reportDeleted(name);
    this.groups.log.info({ group: name }, 'journal group deleted');
  }

  // ---- split and resync (docs/architecture.md §6) ------------------------------------------------

  /**
   * pair split on the master: PSUS from a split point; waits (up to `waitMs`) until the
   * receiver has applied up to it; with `rw` then makes the S-VOLs writable. Re-running it
   * on a split group goes on from where it stopped.
   */
  async split(name: string, rw: boolean, waitMs = 30_000): Promise<{ group: string; splitSeq: number; consistencySeq: number; atSplitPoint: boolean; svolWritable: boolean }> {
    const group = this.groups.masterGroup(name);
    const splitSeq = group.meta.splitSeq !== undefined && group.meta.splitSeq !== null && group.meta.pairs.every((p) => p.status === 'PSUS')
      ? group.meta.splitSeq
      : await group.split();
    const atSplitPoint = await group.waitApplied(splitSeq, waitMs);
    if (rw) {
      if (!atSplitPoint) {
        throw new TwinstoreError('LINK_TIMEOUT', `group ${name} is split, but ${group.meta.peer} has not applied up to the split point (seq ${splitSeq - 1}) yet; run pair split --rw again`);
      }
      await linkRequest(this.groups.peerOf(group), 'pair.split-rw', { group: name, splitSeq });
    }
    return { group: name, splitSeq, consistencySeq: splitSeq - 1, atSplitPoint, svolWritable: rw };
  }

  /** The S-VOL side of split --rw. */
  async makeWritable(body: SplitRwRequest): Promise<void> {
    const group = this.groups.restoreGroupOrThrow(body.group);
    for (const pair of await group.makeWritable(body.splitSeq)) this.groups.closeSessions(pair.svolName, `S-VOL ${pair.svolName} is writable (pair split --rw)`);
  }

  /**
   * pair resync on the master: the S-VOLs read-only again and their bitmaps fetched, merged
   * into ours durably, then cleared there; every marked region is copied (COPY), then PAIR.
   */
  async resync(name: string): Promise<{ group: string; dirtyBytes: number }> {
    const group = this.groups.masterGroup(name);
    // After a failed sync nothing the copy writes could be made durable: restart the array first.
    this.engine.checkSynced();
    const peer = this.groups.peerOf(group);
    const prepared = (await linkRequest(peer, 'pair.resync-prepare', { group: name })).body;
    const { dirtyBytes, resyncFromSeq } = await group.resync(prepared.dirty);
    await linkRequest(peer, 'pair.resync-started', { group: name, resyncFromSeq });
    return { group: name, dirtyBytes };
  }

  async prepareResync(body: GroupRequest): Promise<ResyncPrepareAnswer> {
    const group = this.groups.restoreGroupOrThrow(body.group);
    this.engine.checkSynced();
    const { closed, dirty } = await group.prepareResync();
    for (const pair of closed) this.groups.closeSessions(pair.svolName, `S-VOL ${pair.svolName} is read-only again (pair resync)`);
    return { dirty };
  }

  async resyncStarted(body: ResyncStartedRequest): Promise<void> {
    await this.groups.restoreGroupOrThrow(body.group).resyncStarted(body.resyncFromSeq);
  }
}
