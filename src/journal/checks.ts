// Input checks for the journal's public calls. Records reach a restore journal
// from the network, so a bad field is an operating error (BAD_REQUEST naming
// the field), not an assertion.

import { TwinstoreError } from '../errors.js';
import { checkEpoch, checkText } from './epoch.js';
import { journalBytesMax, journalBytesMin, kindHasData, recordDataBytesMax, recordLengthMax } from './layout.js';
import type { Epoch, JournalDevice, JournalRole, RecordKind, RecordMeta } from './types.js';

const kinds: readonly RecordKind[] = ['write', 'zero', 'trim', 'base', 'marker'];
const roles: readonly JournalRole[] = ['free', 'master', 'restore'];
const lunMax = 2 ** 32 - 1;

function badRequest(field: string, message: string): TwinstoreError {
  return new TwinstoreError('BAD_REQUEST', message, { field });
}

export function checkWholeNumber(value: number, field: string, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isSafeInteger(value) || value < 0 || value > max) throw badRequest(field, `${field} must be a whole number from 0 to ${max}`);
}

export function checkRole(role: JournalRole): void {
  if (!roles.includes(role)) throw badRequest('role', `role must be one of ${roles.join(', ')}`);
}

export function checkFormatDevice(device: JournalDevice): void {
  const size = device.sizeBytes;
  if (!Number.isSafeInteger(size) || size % 4096 !== 0) throw badRequest('sizeBytes', `a journal device's size must be a multiple of 4096 bytes (got ${size})`);
  if (size < journalBytesMin) {
    throw badRequest('sizeBytes', `a journal must hold 4 of the largest records: at least ${journalBytesMin} bytes (got ${size})`);
  }
  if (size > journalBytesMax) throw badRequest('sizeBytes', `a journal holds at most ${journalBytesMax} bytes (got ${size})`);
}

export interface FormatInit {
  groupId: string;
  role: JournalRole;
  epoch: Epoch;
  firstSeq: number;
  instanceId?: string;
}

export function checkFormatInit(init: FormatInit): void {
  checkText(init.groupId, 'groupId');
  checkRole(init.role);
  checkEpoch(init.epoch, 'epoch');
  checkWholeNumber(init.firstSeq, 'firstSeq');
  if (init.instanceId !== undefined) checkText(init.instanceId, 'instanceId');
}

/** The checks of reserve(): every field storable, data present exactly for write and base records. */
export function checkRecordMeta(meta: Omit<RecordMeta, 'seq'>, dataBytes: number, knownEpoch: Epoch): void {
  if (!kinds.includes(meta.kind)) throw badRequest('kind', `kind must be one of ${kinds.join(', ')}`);
  checkWholeNumber(meta.lun, 'lun', lunMax);
  checkWholeNumber(meta.offset, 'offset');
  checkWholeNumber(meta.timestampMs, 'timestampMs');
  const hasData = kindHasData(meta.kind);
  checkWholeNumber(meta.length, 'length', hasData ? recordDataBytesMax : recordLengthMax);
  if (!Number.isSafeInteger(meta.offset + meta.length)) throw badRequest('length', 'offset + length must be a safe integer');
  if (dataBytes !== (hasData ? meta.length : 0)) {
    throw badRequest('dataBytes', `a ${meta.kind} record of length ${meta.length} carries ${hasData ? meta.length : 0} data bytes, not ${dataBytes}`);
  }
  if (meta.epoch !== knownEpoch) checkEpoch(meta.epoch, 'epoch');
}

export function checkData(meta: Omit<RecordMeta, 'seq'>, data: Buffer | undefined): void {
  const expected = kindHasData(meta.kind) ? meta.length : undefined;
  if (expected === undefined ? data !== undefined : data?.length !== expected) {
    throw badRequest('data', `a ${meta.kind} record of length ${meta.length} needs ${expected === undefined ? 'no data' : `${expected} data bytes`}`);
  }
}
