// Checks a transmission request against the spec before it touches storage:
// known command, flags valid for it, read-only export, range and alignment.
// Returns the NBD error to answer with, or 0 to go ahead.

import type { NbdRequest } from './decoder.js';
import type { BlockExport } from './exports.js';
import { BLOCK_MIN, CMD, CMD_FLAG, CMD_FLAGS_ALLOWED, NBD_ERR, PAYLOAD_MAX } from './protocol.js';

export interface Verdict {
  error: number;
  message: string;
}

const OK: Verdict = { error: 0, message: '' };

export function checkRequest(request: NbdRequest, exported: BlockExport, allocationContext: boolean, structured: boolean): Verdict {
  const { type, flags, offset, length } = request;
  const allowed = CMD_FLAGS_ALLOWED[type];
  if (allowed === undefined) return fail(NBD_ERR.EINVAL, `unknown command ${type}`);
  if ((flags & ~allowed) !== 0) return fail(NBD_ERR.EINVAL, `flags 0x${flags.toString(16)} are not valid for command ${type}`);
  if (type === CMD.FLUSH || type === CMD.DISC) {
    return offset === 0 && length === 0 ? OK : fail(NBD_ERR.EINVAL, 'FLUSH and DISC carry no offset or length');
  }
  if (type === CMD.READ && (flags & CMD_FLAG.DF) !== 0 && !structured) return fail(NBD_ERR.EINVAL, 'DF needs structured replies');
  const writes = type === CMD.WRITE || type === CMD.TRIM || type === CMD.WRITE_ZEROES;
  if (writes && exported.readOnly) return fail(NBD_ERR.EPERM, `export ${exported.name} is read-only`);
  if (type === CMD.BLOCK_STATUS && !allocationContext) return fail(NBD_ERR.EINVAL, 'BLOCK_STATUS needs a negotiated base:allocation context');
  if (offset + length > exported.sizeBytes || offset > exported.sizeBytes) {
    const error = type === CMD.WRITE || type === CMD.WRITE_ZEROES ? NBD_ERR.ENOSPC : NBD_ERR.EINVAL;
    return fail(error, `range ${offset}+${length} runs past the end of ${exported.name} (${exported.sizeBytes} bytes)`);
  }
  if (offset % BLOCK_MIN !== 0 || length % BLOCK_MIN !== 0) {
    return fail(NBD_ERR.EINVAL, `offset ${offset} and length ${length} must be multiples of ${BLOCK_MIN}`);
  }
  if (type === CMD.READ && length > PAYLOAD_MAX) return fail(NBD_ERR.EINVAL, `READ of ${length} bytes exceeds ${PAYLOAD_MAX}`);
  if (type === CMD.BLOCK_STATUS && length === 0) return fail(NBD_ERR.EINVAL, 'BLOCK_STATUS of length 0');
  return OK;
}

function fail(error: number, message: string): Verdict {
  return { error, message };
}
