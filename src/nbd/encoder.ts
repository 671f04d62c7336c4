// Encoders for what the server sends: the greeting, option replies, the
// EXPORT_NAME reply, simple replies and structured reply chunks. Headers are
// small fresh buffers; data is passed alongside and never copied into them.

import {
  BLOCK_MIN, BLOCK_PREFERRED, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT, INFO, NBDMAGIC, PAYLOAD_MAX,
  REPLY_FLAG_DONE, REPLY_TYPE, REP_MAGIC, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC,
} from './protocol.js';

export function greeting(): Buffer {
  const buffer = Buffer.alloc(18);
  buffer.writeBigUInt64BE(NBDMAGIC, 0);
  buffer.writeBigUInt64BE(IHAVEOPT, 8);
  buffer.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
  return buffer;
}

export function optionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(20);
  header.writeBigUInt64BE(REP_MAGIC, 0);
  header.writeUInt32BE(option, 8);
  header.writeUInt32BE(type >>> 0, 12);
  header.writeUInt32BE(data.length, 16);
  return Buffer.concat([header, data]);
}

export function serverEntry(name: string, description: string): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32BE(nameBytes.length, 0);
  return Buffer.concat([length, nameBytes, Buffer.from(description, 'utf8')]);
}

export function infoExport(sizeBytes: number, transmissionFlags: number): Buffer {
  const data = Buffer.alloc(12);
  data.writeUInt16BE(INFO.EXPORT, 0);
  data.writeBigUInt64BE(BigInt(sizeBytes), 2);
  data.writeUInt16BE(transmissionFlags, 10);
  return data;
}

export function infoText(type: number, text: string): Buffer {
  const data = Buffer.alloc(2);
  data.writeUInt16BE(type, 0);
  return Buffer.concat([data, Buffer.from(text, 'utf8')]);
}

export function infoBlockSize(): Buffer {
  const data = Buffer.alloc(14);
  data.writeUInt16BE(INFO.BLOCK_SIZE, 0);
  data.writeUInt32BE(BLOCK_MIN, 2);
  data.writeUInt32BE(BLOCK_PREFERRED, 6);
  data.writeUInt32BE(PAYLOAD_MAX, 10);
  return data;
}

export function metaContext(id: number, name: string): Buffer {
  const data = Buffer.alloc(4);
  data.writeUInt32BE(id, 0);
  return Buffer.concat([data, Buffer.from(name, 'utf8')]);
}

/** The reply to NBD_OPT_EXPORT_NAME: size, flags and (unless NO_ZEROES) 124 zero bytes. */
export function exportNameReply(sizeBytes: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const buffer = Buffer.alloc(noZeroes ? 10 : 134);
  buffer.writeBigUInt64BE(BigInt(sizeBytes), 0);
  buffer.writeUInt16BE(transmissionFlags, 8);
  return buffer;
}

export function simpleReply(error: number, cookieHigh: number, cookieLow: number): Buffer {
  const header = Buffer.alloc(16);
  header.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  header.writeUInt32BE(error, 4);
  header.writeUInt32BE(cookieHigh, 8);
  header.writeUInt32BE(cookieLow, 12);
  return header;
}

/** A structured chunk header; `extraBytes` of payload follow it (the caller writes them). */
export function chunkHeader(options: { done: boolean; type: number; cookieHigh: number; cookieLow: number; payloadBytes: number }): Buffer {
  const header = Buffer.alloc(20);
  header.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  header.writeUInt16BE(options.done ? REPLY_FLAG_DONE : 0, 4);
  header.writeUInt16BE(options.type, 6);
  header.writeUInt32BE(options.cookieHigh, 8);
  header.writeUInt32BE(options.cookieLow, 12);
  header.writeUInt32BE(options.payloadBytes, 16);
  return header;
}

/** OFFSET_DATA chunk header plus its 8-byte offset; the data follows. */
export function offsetDataHeader(cookieHigh: number, cookieLow: number, offset: number, dataBytes: number, done: boolean): Buffer {
  const header = chunkHeader({ done, type: REPLY_TYPE.OFFSET_DATA, cookieHigh, cookieLow, payloadBytes: 8 + dataBytes });
  const position = Buffer.alloc(8);
  position.writeBigUInt64BE(BigInt(offset), 0);
  return Buffer.concat([header, position]);
}

export function offsetHoleChunk(cookieHigh: number, cookieLow: number, offset: number, holeBytes: number, done: boolean): Buffer {
  const header = chunkHeader({ done, type: REPLY_TYPE.OFFSET_HOLE, cookieHigh, cookieLow, payloadBytes: 12 });
  const payload = Buffer.alloc(12);
  payload.writeBigUInt64BE(BigInt(offset), 0);
  payload.writeUInt32BE(holeBytes, 8);
  return Buffer.concat([header, payload]);
}

export function noneChunk(cookieHigh: number, cookieLow: number): Buffer {
  return chunkHeader({ done: true, type: REPLY_TYPE.NONE, cookieHigh, cookieLow, payloadBytes: 0 });
}

export function errorChunk(cookieHigh: number, cookieLow: number, error: number, message: string): Buffer {
  const text = Buffer.from(message.slice(0, 200), 'utf8');
  const payload = Buffer.alloc(6);
  payload.writeUInt32BE(error, 0);
  payload.writeUInt16BE(text.length, 4);
  const header = chunkHeader({ done: true, type: REPLY_TYPE.ERROR, cookieHigh, cookieLow, payloadBytes: 6 + text.length });
  return Buffer.concat([header, payload, text]);
}

export function blockStatusChunk(cookieHigh: number, cookieLow: number, contextId: number, extents: Array<{ length: number; flags: number }>): Buffer {
  const payload = Buffer.alloc(4 + 8 * extents.length);
  payload.writeUInt32BE(contextId, 0);
  extents.forEach((extent, i) => {
    payload.writeUInt32BE(extent.length, 4 + 8 * i);
    payload.writeUInt32BE(extent.flags, 8 + 8 * i);
  });
  const header = chunkHeader({ done: true, type: REPLY_TYPE.BLOCK_STATUS, cookieHigh, cookieLow, payloadBytes: payload.length });
  return Buffer.concat([header, payload]);
}
