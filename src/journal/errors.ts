// The error a damaged journal record raises when it is read: a TwinstoreError
// with code JOURNAL_RECORD_CORRUPT that also carries the seq and, when the
// record's header is intact, the region it covers (for the resync bitmap).

import { TwinstoreError } from '../errors.js';
import type { DamagedRecord } from './types.js';

export class JournalRecordCorruptError extends TwinstoreError {
  constructor(readonly seq: number, readonly region: DamagedRecord | undefined, detail: string) {
    super('JOURNAL_RECORD_CORRUPT', `journal record seq ${seq} ${detail}`, { field: 'seq' });
  }
}
