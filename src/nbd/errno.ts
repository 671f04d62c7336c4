// How a failed request is answered: the NBD error number for an error the
// storage or replication code threw, and the text logged and sent with it.

import { isTwinstoreError } from '../errors.js';
import { NBD_ERR } from './protocol.js';

export function errorNumber(error: unknown): number {
  if (isTwinstoreError(error)) {
    if (error.code === 'NO_SPACE') return NBD_ERR.ENOSPC;
    if (error.code === 'SHUTTING_DOWN') return NBD_ERR.ESHUTDOWN;
    if (error.code === 'VOLUME_FENCED') return NBD_ERR.EPERM;
  }
  return NBD_ERR.EIO;
}

export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
