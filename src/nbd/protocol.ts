// NBD protocol constants, as NetworkBlockDevice/nbd doc/proto.md defines them.
// Names follow the spec so that the code reads side by side with it.

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const REP_MAGIC = 0x0003e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const FLAG_FIXED_NEWSTYLE = 0x1;
export const FLAG_NO_ZEROES = 0x2;
export const CLIENT_FLAG_FIXED_NEWSTYLE = 0x1;
export const CLIENT_FLAG_NO_ZEROES = 0x2;

export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_PLATFORM: 0x80000004,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_BLOCK_SIZE_REQD: 0x80000008,
  ERR_TOO_BIG: 0x80000009,
} as const;

export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

export const TFLAG = {
  HAS_FLAGS: 0x0001,
  READ_ONLY: 0x0002,
  SEND_FLUSH: 0x0004,
  SEND_FUA: 0x0008,
  ROTATIONAL: 0x0010,
  SEND_TRIM: 0x0020,
  SEND_WRITE_ZEROES: 0x0040,
  SEND_DF: 0x0080,
  CAN_MULTI_CONN: 0x0100,
  SEND_CACHE: 0x0400,
  SEND_FAST_ZERO: 0x0800,
} as const;

export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;

export const CMD_FLAG = { FUA: 0x01, NO_HOLE: 0x02, DF: 0x04, REQ_ONE: 0x08, FAST_ZERO: 0x10 } as const;

/** Which command flags each command accepts; any other bit is EINVAL. FUA is valid on every command. */
export const CMD_FLAGS_ALLOWED: Record<number, number> = {
  [CMD.READ]: CMD_FLAG.FUA | CMD_FLAG.DF,
  [CMD.WRITE]: CMD_FLAG.FUA,
  [CMD.DISC]: CMD_FLAG.FUA,
  [CMD.FLUSH]: CMD_FLAG.FUA,
  [CMD.TRIM]: CMD_FLAG.FUA,
  [CMD.CACHE]: CMD_FLAG.FUA,
  [CMD.WRITE_ZEROES]: CMD_FLAG.FUA | CMD_FLAG.NO_HOLE | CMD_FLAG.FAST_ZERO,
  [CMD.BLOCK_STATUS]: CMD_FLAG.FUA | CMD_FLAG.REQ_ONE,
};

export const REPLY_FLAG_DONE = 0x1;
export const REPLY_TYPE = { NONE: 0, OFFSET_DATA: 1, OFFSET_HOLE: 2, BLOCK_STATUS: 5, ERROR: 0x8001, ERROR_OFFSET: 0x8002 } as const;

export const NBD_ERR = { EPERM: 1, EIO: 5, ENOMEM: 12, EINVAL: 22, ENOSPC: 28, EOVERFLOW: 75, ENOTSUP: 95, ESHUTDOWN: 108 } as const;

export const STATE_HOLE = 0x1;
export const STATE_ZERO = 0x2;
export const BASE_ALLOCATION = 'base:allocation';
export const BASE_ALLOCATION_ID = 1;

/** Block sizes we advertise (NBD_INFO_BLOCK_SIZE). */
export const BLOCK_MIN = 512;
export const BLOCK_PREFERRED = 4096;
export const PAYLOAD_MAX = 32 * 2 ** 20;

/** Bounds on what a client may send during the handshake. */
export const OPTION_BYTES_MAX = 64 * 1024;
export const OPTIONS_PER_SESSION_MAX = 4096;
export const STRING_BYTES_MAX = 4096;
