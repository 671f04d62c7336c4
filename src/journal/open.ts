// Why this exists: how a journal comes to be, apart from how it runs. format
// writes an empty journal; open picks a header slot, scans the ring (the
// recovery decision table, recovery.ts) and, when the newest header is lost,
// starts the journal again past every seq it may have given out. Each returns
// the parts the Journal is built from (journal.ts), and a recovery report.

import crypto from 'node:crypto';
import { TwinstoreError, assert } from '../errors.js';
import { checkFormatDevice, checkFormatInit, type FormatInit } from './checks.js';
import { blockBytes, encodeHeaderSlot, headerSlotBytes, parseHeaderSlot, ringStartBytes, slotOfGeneration, type HeaderState } from './layout.js';
import { chooseHeader, scanRing, sweepRing, type SweepResult } from './recovery.js';
import { SeqIndex } from './seq-index.js';
import type { Epoch, JournalDevice, RecoveryReport } from './types.js';

/** The session counter of a header is a u32. */
export const sessionMax = 2 ** 32 - 1;

/** What a Journal is built from. */
export interface JournalParts {
  device: JournalDevice;
  header: HeaderState;
  index: SeqIndex;
  head: number;
  nextSeq: number;
  keptBytes: number;
  lastEpoch: Epoch;
}

/** Writes a new, empty journal on `device` (both header slots, then a flush). */
export async function formatParts(device: JournalDevice, init: FormatInit): Promise<JournalParts> {
  checkFormatDevice(device);
  checkFormatInit(init);
  const epoch = freezeEpoch(init.epoch);
  const ringBytes = device.sizeBytes - ringStartBytes;
  const header: HeaderState = {
    generation: 2, session: 1, role: init.role, clean: false, ringBytes, tailSeq: init.firstSeq, tailPosition: ringStartBytes,
    appliedSeq: init.firstSeq, groupId: init.groupId, instances: [{ id: init.instanceId ?? newInstanceId(), firstSeq: init.firstSeq, epoch }],
  };
  await device.write(slotOfGeneration(1) * headerSlotBytes, encodeHeaderSlot({ ...header, generation: 1 }));
  await device.write(slotOfGeneration(2) * headerSlotBytes, encodeHeaderSlot(header));
  await device.flush();
  const index = new SeqIndex(ringBytes / blockBytes, init.firstSeq);
  return { device, header, index, head: ringStartBytes, nextSeq: init.firstSeq, keptBytes: 0, lastEpoch: epoch };
}

/**
 * Picks the header slot and scans the ring. The parts carry a new session; unless the journal was
 * started again (its headers are written already), the caller persists it before any use.
 */
export async function openParts(device: JournalDevice): Promise<{ parts: JournalParts; recovery: RecoveryReport; startedAgain: boolean }> {
  if (!Number.isSafeInteger(device.sizeBytes) || device.sizeBytes % blockBytes !== 0 || device.sizeBytes < ringStartBytes) {
    throw new TwinstoreError('JOURNAL_CORRUPT', `a device of ${device.sizeBytes} bytes cannot hold a journal`);
  }
  const slots = Buffer.alloc(ringStartBytes);
  await device.read(0, slots);
  const chosen = chooseHeader([parseHeaderSlot(slots.subarray(0, headerSlotBytes), 0), parseHeaderSlot(slots.subarray(headerSlotBytes), 1)]);
  const header = chosen.state;
  if (ringStartBytes + header.ringBytes > device.sizeBytes) {
    throw new TwinstoreError('JOURNAL_CORRUPT', `the journal header names a ring of ${header.ringBytes} bytes, more than the device holds`);
  }
  assert(header.session < sessionMax, 'the session counter does not wrap');
  const index = new SeqIndex(header.ringBytes / blockBytes, header.tailSeq);
  const scan = await scanRing(device, header, index);
  // Only a lost newest slot can leave an older header in use; then every block of the ring is read.
  const sweep = scan.label === 'header_behind_ring' || chosen.label !== 'both_valid' ? await sweepRing(device, header) : undefined;
  let lost: string | undefined;
  if (scan.label === 'header_behind_ring') lost = `the record at the persisted tail has seq ${scan.aheadSeq ?? '?'}, not the tail seq ${header.tailSeq}: the header in use (slot ${chosen.slot}) is older than the ring`;
  else if (sweep !== undefined && sweep.maxSession > header.session) lost = `records of session ${sweep.maxSession} lie on the ring, but the newest readable header (slot ${chosen.slot}) knows sessions up to ${header.session}: a newer header was durable and is damaged`;
  if (lost !== undefined) return { ...(await startAgain(device, chosen, sweep!, lost, scan.label)), startedAgain: true };
  const parts: JournalParts = {
    device, header: { ...header, session: header.session + 1, clean: false }, index, head: scan.head, nextSeq: scan.nextSeq,
    keptBytes: scan.keptBytes, lastEpoch: scan.lastEpoch ?? header.instances[0]!.epoch,
  };
  const recovery: RecoveryReport = {
    case: scan.label, records: scan.nextSeq - header.tailSeq, damaged: scan.damaged, cut: scan.cut, lostFrom: scan.lostFrom, headerSlot: chosen.slot, headerCase: chosen.label, steps: scan.steps,
    cleanShutdown: header.clean, tailSeq: header.tailSeq, nextSeq: scan.nextSeq,
    headerLost: header.startedAgain === true ? { reason: 'the journal was started again after its newest header was lost, and its owner had not acted on it when it stopped', maxSeq: null } : null,
  };
  return { parts, recovery, startedAgain: false };
}

/**
 * The newest header is lost: the journal starts again, empty, as a new instance of the same group
 * and role, in a session above every one on the ring, at a seq past any it may have given out:
 * the highest seq on the ring plus twice the ring's capacity in records (records written but not
 * found, damaged ones, lie within one lap). So even a crash before the caller acts on the report
 * cannot give an old seq to a new write. Both slots are written (the lost one first), so the next
 * open finds two valid headers naming it.
 */
async function startAgain(device: JournalDevice, chosen: { state: HeaderState; slot: 0 | 1; label: string }, sweep: SweepResult, reason: string, label: RecoveryReport['case']): Promise<{ parts: JournalParts; recovery: RecoveryReport }> {
  const old = chosen.state;
  const session = Math.max(old.session, sweep.maxSession) + 1;
  assert(session < sessionMax, 'the session counter does not wrap');
  const epoch = old.instances[0]!.epoch;
  const firstSeq = Math.max(old.tailSeq, (sweep.maxSeq ?? -1) + 1) + 2 * (old.ringBytes / blockBytes);
  const header: HeaderState = {
    generation: old.generation + 2, session, role: old.role, clean: false, startedAgain: true, ringBytes: old.ringBytes, tailSeq: firstSeq, tailPosition: ringStartBytes,
    appliedSeq: firstSeq, groupId: old.groupId, instances: [{ id: newInstanceId(), firstSeq, epoch }],
  };
  await device.write(slotOfGeneration(header.generation - 1) * headerSlotBytes, encodeHeaderSlot({ ...header, generation: header.generation - 1 }));
  await device.write(slotOfGeneration(header.generation) * headerSlotBytes, encodeHeaderSlot(header));
  await device.flush();
  const index = new SeqIndex(header.ringBytes / blockBytes, header.tailSeq);
  const parts: JournalParts = { device, header, index, head: ringStartBytes, nextSeq: header.tailSeq, keptBytes: 0, lastEpoch: epoch };
  const recovery: RecoveryReport = {
    case: label, records: 0, damaged: [], cut: [], lostFrom: null, headerLost: { reason, maxSeq: sweep.maxSeq }, headerSlot: chosen.slot, headerCase: chosen.label,
    steps: {}, cleanShutdown: false, tailSeq: old.tailSeq, nextSeq: header.tailSeq,
  };
  return { parts, recovery };
}

export function newInstanceId(): string {
  return crypto.randomBytes(16).toString('hex');
}

export function freezeEpoch(epoch: Epoch): Epoch {
  return Object.freeze({ counter: epoch.counter, arrayId: epoch.arrayId, nonce: epoch.nonce });
}
