// The one error catalogue. Every error a user can see carries a stable `code`
// from this table; the CLI, the HTTP API and the logs all speak these codes, and
// docs/errors.md lists the same set (a test keeps the two in step).

export const ERROR_CODES = {
  CONFIG_INVALID: { status: 400, summary: 'the config file is not valid; the message names the key and line' },
  CONFIG_NOT_FOUND: { status: 400, summary: 'the config file could not be read' },
  BAD_REQUEST: { status: 400, summary: 'an API body, query or CLI argument is not valid; the message names the field' },
  UNAUTHORIZED: { status: 401, summary: 'the API token is missing or wrong' },
  FORBIDDEN: { status: 403, summary: "the API token's role may not make this call (a monitor token only reads)" },
  TOKEN_NOT_FOUND: { status: 404, summary: 'no API token with that name' },
  TOKEN_EXISTS: { status: 409, summary: 'an API token with that name already exists' },
  NOT_FOUND: { status: 404, summary: 'no such API route' },
  VOLUME_NOT_FOUND: { status: 404, summary: 'no volume with that name or LUN on this array' },
  VOLUME_EXISTS: { status: 409, summary: 'a volume with that name already exists' },
  LUN_IN_USE: { status: 409, summary: 'another volume already has that LUN' },
  VOLUME_BUSY: { status: 409, summary: 'the volume has open NBD sessions; close them or use --force' },
  NO_SPACE: { status: 507, summary: 'the drives have no free extent left' },
  DRIVE_MISSING: { status: 500, summary: 'a drive that holds volume extents is not in the config' },
  DRIVE_INVALID: { status: 500, summary: 'a drive cannot be used (wrong label, too small, unreadable)' },
  METADATA_CORRUPT: { status: 500, summary: 'the array metadata cannot be read back intact' },
  IO_ERROR: { status: 500, summary: 'a drive read, write or sync failed' },
  JOURNAL_FULL: { status: 507, summary: 'the journal has no room for another record until the receiver catches up' },
  JOURNAL_CORRUPT: { status: 500, summary: 'the journal cannot be opened: no valid header slot, or its header is behind its records' },
  JOURNAL_RECORD_CORRUPT: { status: 500, summary: 'a journal record fails its checksum; the message names its seq' },
  JOURNAL_RECORD_GONE: { status: 410, summary: 'the journal records asked for were already released' },
  JOURNAL_SEQ_MISMATCH: { status: 409, summary: 'a record or read names a seq that is not next in the journal' },
  JOURNAL_EPOCH_STALE: { status: 409, summary: 'a record or role change carries an epoch older than the journal\'s' },
  SHUTTING_DOWN: { status: 503, summary: 'the array is shutting down' },
  API_UNREACHABLE: { status: 503, summary: 'the CLI could not reach the array API' },
  LINK_DOWN: { status: 503, summary: 'the link to the peer array is down, or went down before the answer came' },
  LINK_TIMEOUT: { status: 504, summary: 'the peer array did not answer a link request, or went silent, in time' },
  LINK_AUTH: { status: 502, summary: 'the peer array failed link authentication or is not the array expected' },
  LINK_PROTOCOL: { status: 502, summary: 'the peer array sent a malformed link frame or speaks another protocol version' },
  LINK_FRAME_TOO_LARGE: { status: 413, summary: 'a link request or response exceeds the frame limits (1 MiB JSON, 64 MiB payload)' },
  PEER_UNKNOWN: { status: 404, summary: 'no peer array with that id is configured or added' },
  GROUP_NOT_FOUND: { status: 404, summary: 'no journal group with that name on this array' },
  PAIR_INVALID: { status: 409, summary: 'the pair cannot be made or changed: a volume or journal has the wrong role, size or group' },
  VOLUME_FENCED: { status: 409, summary: 'the volume refuses host writes: a swap is freezing it, or the other array holds a newer epoch' },
  VOLUME_IN_USE: { status: 409, summary: 'the volume is the journal, a P-VOL or an S-VOL of a journal group; end the group first (pair delete --group G)' },
  PEER_IN_USE: { status: 409, summary: 'a journal group or a remote command device uses that peer; end or delete it first' },
  ARRAY_STARTING: { status: 503, summary: 'the array is still opening its journal groups; ask again' },
  LISTEN_FAILED: { status: 500, summary: 'a listener (NBD, API or link) could not bind its address' },
  SWAP_DRAIN_TIMEOUT: { status: 504, summary: 'a planned swap was aborted, nothing changed: the primary\'s drain did not bring the lag under swap.lagBytesMax within swap.drainMsMax' },
  DRIVE_OWNED: { status: 409, summary: 'a drive belongs to another array or data folder, or another process holds it; the message names the path and the owner' },
  TLS_TOOL_FAILED: { status: 500, summary: 'twinstore tls could not run openssl, or openssl failed; the message gives its first error line' },
  INTERNAL: { status: 500, summary: 'a bug: an invariant did not hold' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class TwinstoreError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly field: string | undefined;

  constructor(code: ErrorCode, message: string, options: { field?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'TwinstoreError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
    this.field = options.field;
  }

  toJSON(): { code: ErrorCode; message: string; field?: string } {
    return this.field === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, field: this.field };
  }
}

export function isTwinstoreError(error: unknown): error is TwinstoreError {
  return error instanceof TwinstoreError;
}

/** Crash loudly: an assertion failure is a bug, never an operating error. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new TwinstoreError('INTERNAL', `assertion failed: ${message}`);
}
