// Epoch comparison and validation. An epoch is newer when its counter is
// higher; two epochs with the same counter are the same epoch only when array
// id and nonce match too, otherwise they conflict (two arrays promoted at once).

import { TwinstoreError } from '../errors.js';
import type { Epoch } from './types.js';

export type EpochOrder = 'older' | 'same' | 'newer' | 'conflict';

/** How `epoch` relates to `reference`. */
export function compareEpochs(epoch: Epoch, reference: Epoch): EpochOrder {
  if (epoch.counter < reference.counter) return 'older';
  if (epoch.counter > reference.counter) return 'newer';
  return epoch.arrayId === reference.arrayId && epoch.nonce === reference.nonce ? 'same' : 'conflict';
}

export function epochNotOlder(epoch: Epoch, reference: Epoch): boolean {
  const order = compareEpochs(epoch, reference);
  return order === 'same' || order === 'newer';
}

export function sameEpoch(a: Epoch, b: Epoch): boolean {
  return compareEpochs(a, b) === 'same';
}

export function formatEpoch(epoch: Epoch): string {
  return `${epoch.counter}/${epoch.arrayId}/${epoch.nonce}`;
}

const noncePattern = /^[0-9a-f]{16}$/;
export const textFieldBytesMax = 63;

/** Throws BAD_REQUEST naming `field` when the epoch cannot be stored. */
export function checkEpoch(epoch: Epoch, field: string): void {
  if (!Number.isSafeInteger(epoch.counter) || epoch.counter < 0) {
    throw new TwinstoreError('BAD_REQUEST', `${field}.counter must be a whole number >= 0`, { field: `${field}.counter` });
  }
  if (!noncePattern.test(epoch.nonce)) {
    throw new TwinstoreError('BAD_REQUEST', `${field}.nonce must be 16 lower-case hex characters`, { field: `${field}.nonce` });
  }
  checkText(epoch.arrayId, `${field}.arrayId`);
}

/** Throws BAD_REQUEST naming `field` unless `text` is 1 to 63 bytes of UTF-8. */
export function checkText(text: string, field: string): void {
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes === 0 || bytes > textFieldBytesMax) {
    throw new TwinstoreError('BAD_REQUEST', `${field} must be 1 to ${textFieldBytesMax} bytes of UTF-8`, { field });
  }
}
