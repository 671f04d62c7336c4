// Link protocol constants: the frame header layout, frame types, limits and the
// TLS choice. docs/link-protocol.md describes the same wire format for people;
// keep the two in step.
//
// A frame is a 32-byte header, then a table of payload segments (u32 length and
// u32 CRC32C each), then the JSON body, then the payload bytes. All integers are
// big-endian.
//
//   0  u32 magic 'TLNK'        16 u32 body bytes
//   4  u8  protocol version    20 u32 payload bytes (sum of the segments)
//   5  u8  frame type          24 u32 CRC32C of segment table + body
//   6  u16 payload segments    28 u32 CRC32C of header bytes 0..27
//   8  u64 request id
//
// Each segment carries its own CRC so that a sender that already holds a
// checked CRC of a buffer (a journal record's, read back and verified) sends it
// without another pass over the bytes, and the receiver checks each segment
// once and can keep the CRC (its restore journal records it as it is).

export const FRAME_MAGIC = 0x544c4e4b; // 'TLNK'
export const PROTOCOL_VERSION = 2;
export const HEADER_BYTES = 32;
/** A segment table entry: u32 length, u32 CRC32C of the segment. */
export const SEGMENT_ENTRY_BYTES = 8;

export const FRAME_TYPE = {
  HELLO: 1,
  REQUEST: 2,
  RESPONSE: 3,
  ERROR: 4,
  PING: 5,
  PONG: 6,
} as const;
export type FrameType = (typeof FRAME_TYPE)[keyof typeof FRAME_TYPE];

export const FRAME_TYPE_NAMES: Record<FrameType, string> = {
  1: 'hello', 2: 'request', 3: 'response', 4: 'error', 5: 'ping', 6: 'pong',
};

export function isFrameType(value: number): value is FrameType {
  return value >= FRAME_TYPE.HELLO && value <= FRAME_TYPE.PONG;
}

/** The JSON body of one frame (request envelope included). */
export const BODY_BYTES_MAX = 2 ** 20;
/** The bulk bytes of one frame, all segments together. */
export const PAYLOAD_BYTES_MAX = 64 * 2 ** 20;
/** Payload segments of one frame (the u16 count field). */
export const PAYLOAD_SEGMENTS_MAX = 0xffff;
/** Method names are short identifiers such as `journal.read`. */
export const METHOD_CHARS_MAX = 128;
/** Request ids are u64 on the wire; we only send safe integers. */
export const REQUEST_ID_MAX = Number.MAX_SAFE_INTEGER;

/**
 * TLS 1.2 with an ephemeral finite-field Diffie-Hellman exchange authenticated by
 * the pre-shared key (RFC 4279 DHE_PSK, RFC 5487 GCM): both sides prove they hold
 * the key, and past traffic stays secret if the key leaks later (plain PSK suites
 * have no forward secrecy). Node 20 offers no external-PSK TLS 1.3 (it asks for a
 * certificate), and ECDHE-PSK exists only with CBC or ChaCha20, which is slower
 * than AES-GCM on CPUs with AES-NI.
 */
export const TLS_VERSION = 'TLSv1.2';
export const TLS_CIPHER = 'DHE-PSK-AES256-GCM-SHA384';
export const PSK_BYTES = 32;

/** The first frame each side sends after the TLS handshake. */
export interface HelloBody {
  protocolVersion: number;
  arrayId: string;
  heartbeatMs: number;
}

export interface ErrorBody {
  code: string;
  message: string;
}

/** Request id 0 names the connection rather than one request (hello refusals, protocol errors). */
export const CONNECTION_ID = 0;
