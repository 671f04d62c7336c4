// The command device (claim 44; docs/architecture.md §7): a small volume through which a
// host that can only do block I/O runs array commands. The host writes a
// request block at offset 0; the array runs it while that WRITE is in flight
// and writes the reply at offset 4096 before acknowledging it, so the host
// then reads the answer. A remote command device forwards every request over
// the link to the peer array it names and writes the peer's answer. The token
// field of the request is never stored (the bytes a host wrote there are kept
// as zeros), so the token is not readable on the device. The block layouts are
// in docs/command-device.md.

import { crc32 } from '@node-rs/crc32';
import crypto from 'node:crypto';
import { TwinstoreError, isTwinstoreError, ERROR_CODES } from '../errors.js';
import type { Volume } from '../storage/index.js';

export const COMMAND_DEVICE_DOCUMENT = 'command-device';
export const commandDeviceDefaultBytes = 2 ** 20;
export const commandBlockBytes = 4096;
export const replyOffset = 4096;
const requestMagic = 0x54574351; // "TWCQ"
const replyMagic = 0x54574352; // "TWCR"
const version = 1;
const tokenField = { at: 24, bytes: 64 };
const requestJsonAt = 88;
const replyJsonAt = 24;

export interface CommandDeviceDocument {
  /** Forward every request to this peer array instead of running it here. */
  remote: string | null;
}

export type ApiCall = (method: string, url: string, body: unknown) => Promise<{ status: number; json: unknown }>;

export interface CommandDeviceOptions {
  volume: Volume;
  /** The array's API token: a request must carry it. */
  token: Buffer;
  remote: string | null;
  /** Runs an API request on this array. */
  local: ApiCall;
  /** Runs an API request on a peer array, over the link. */
  forward: (array: string, method: string, url: string, body: unknown) => Promise<{ status: number; json: unknown }>;
}

interface Request {
  id: bigint;
  token: string;
  verb: string;
  args: Record<string, unknown>;
}

type Route = (args: Record<string, unknown>) => { method: string; url: string; body?: unknown };

const enc = encodeURIComponent;
const query = (group: unknown): string => (typeof group === 'string' ? `?group=${enc(group)}` : '');
const text = (args: Record<string, unknown>, key: string): string => {
  const value = args[key];
  if (typeof value !== 'string' || value.length === 0) throw new TwinstoreError('BAD_REQUEST', `args.${key}: a string is required`, { field: `args.${key}` });
  return value;
};

/** The verbs a request may name, as the API requests they run (the CLI's verbs, same names). */
const routes: Record<string, Route> = {
  status: () => ({ method: 'GET', url: '/v1/status' }),
  'volume list': () => ({ method: 'GET', url: '/v1/volumes' }),
  'volume show': (a) => ({ method: 'GET', url: `/v1/volumes/${enc(text(a, 'name'))}` }),
  'journal list': () => ({ method: 'GET', url: '/v1/journals' }),
  'journal show': (a) => ({ method: 'GET', url: `/v1/journals/${enc(text(a, 'name'))}` }),
  'peer list': () => ({ method: 'GET', url: '/v1/peers' }),
  'pair display': (a) => ({ method: 'GET', url: `/v1/pairs${query(a.group)}` }),
  'pair split': (a) => ({ method: 'POST', url: '/v1/pairs/split', body: { group: text(a, 'group'), rw: a.rw === true } }),
  'pair resync': (a) => ({ method: 'POST', url: '/v1/pairs/resync', body: { group: text(a, 'group') } }),
  'pair restore': (a) => ({ method: 'POST', url: '/v1/pairs/restore', body: { group: text(a, 'group'), paused: a.paused === true } }),
  takeover: (a) => ({ method: 'POST', url: '/v1/takeover', body: { group: text(a, 'group'), force: a.force === true } }),
};

export const commandVerbs = Object.keys(routes);

/** Parses a request block; a TwinstoreError names what is wrong (the id, when readable, still goes in the reply). */
export function parseRequest(block: Buffer): Request {
  if (block.length < commandBlockBytes || block.readUInt32BE(0) !== requestMagic) {
    throw new TwinstoreError('BAD_REQUEST', 'not a command request: the block at offset 0 must start with "TWCQ"', { field: 'magic' });
  }
  if (block.readUInt16BE(4) !== version) throw new TwinstoreError('BAD_REQUEST', `command request version ${block.readUInt16BE(4)}; this array speaks ${version}`, { field: 'version' });
  const length = block.readUInt32BE(16);
  if (length > commandBlockBytes - requestJsonAt) throw new TwinstoreError('BAD_REQUEST', `request JSON of ${length} bytes does not fit in the block`, { field: 'length' });
  const json = block.subarray(requestJsonAt, requestJsonAt + length);
  if (crc32(json) !== block.readUInt32BE(20)) throw new TwinstoreError('BAD_REQUEST', 'the request JSON fails its CRC-32 (a torn or partial write?)', { field: 'crc' });
  let body: unknown;
  try {
    body = JSON.parse(json.toString('utf8'));
  } catch {
    throw new TwinstoreError('BAD_REQUEST', 'the request is not JSON', { field: 'json' });
  }
  const { verb, args } = (body ?? {}) as { verb?: unknown; args?: unknown };
  if (typeof verb !== 'string') throw new TwinstoreError('BAD_REQUEST', 'verb: a string is required', { field: 'verb' });
  if (args !== undefined && (typeof args !== 'object' || args === null || Array.isArray(args))) throw new TwinstoreError('BAD_REQUEST', 'args: an object is required', { field: 'args' });
  const tokenBytes = block.subarray(tokenField.at, tokenField.at + tokenField.bytes);
  const end = tokenBytes.indexOf(0);
  return { id: block.readBigUInt64BE(8), token: tokenBytes.subarray(0, end < 0 ? tokenBytes.length : end).toString('utf8'), verb, args: (args ?? {}) as Record<string, unknown> };
}

/** Builds a request block (for hosts and tests; the layout hosts must write). */
export function encodeRequest(id: bigint, token: string, verb: string, args: Record<string, unknown> = {}): Buffer {
  const block = Buffer.alloc(commandBlockBytes);
  const json = Buffer.from(JSON.stringify({ verb, args }), 'utf8');
  if (json.length > commandBlockBytes - requestJsonAt) throw new TwinstoreError('BAD_REQUEST', 'the request JSON does not fit in one block');
  block.writeUInt32BE(requestMagic, 0);
  block.writeUInt16BE(version, 4);
  block.writeBigUInt64BE(id, 8);
  block.writeUInt32BE(json.length, 16);
  block.writeUInt32BE(crc32(json), 20);
  block.write(token, tokenField.at, tokenField.bytes, 'utf8');
  json.copy(block, requestJsonAt);
  return block;
}

/** The reply: status, the echoed id and the JSON answer, padded to whole 4 KiB blocks. */
export function encodeReply(id: bigint, status: number, answer: unknown, capacity: number): Buffer {
  let json = Buffer.from(JSON.stringify(answer ?? null), 'utf8');
  if (replyJsonAt + json.length > capacity) {
    status = 507;
    json = Buffer.from(JSON.stringify({ error: { code: 'BAD_REQUEST', message: `the answer (${json.length} bytes) does not fit in the reply area (${capacity - replyJsonAt} bytes); make a larger command device` } }));
  }
  const block = Buffer.alloc(Math.ceil((replyJsonAt + json.length) / commandBlockBytes) * commandBlockBytes);
  block.writeUInt32BE(replyMagic, 0);
  block.writeUInt16BE(version, 4);
  block.writeUInt16BE(status, 6);
  block.writeBigUInt64BE(id, 8);
  block.writeUInt32BE(json.length, 16);
  block.writeUInt32BE(crc32(json), 20);
  json.copy(block, replyJsonAt);
  return block;
}

function errorAnswer(error: unknown): { status: number; json: unknown } {
  const code = isTwinstoreError(error) ? error.code : 'INTERNAL';
  return { status: ERROR_CODES[code].status, json: { error: { code, message: (error as Error).message } } };
}

/** `data` as stored at `offset`: a copy with the bytes of the token field (24-87) zeroed, when it covers any. */
export function withoutToken(offset: number, data: Buffer): Buffer {
  const from = Math.max(offset, tokenField.at);
  const to = Math.min(offset + data.length, tokenField.at + tokenField.bytes);
  if (from >= to) return data;
  const stored = Buffer.from(data);
  stored.fill(0, from - offset, to - offset);
  return stored;
}

/**
 * Zeroes a token field found stored on the device: an earlier version stored request blocks
 * whole. Returns whether there was one (the array runs it at start, before hosts connect).
 */
export async function scrubStoredToken(volume: Volume): Promise<boolean> {
  const block = Buffer.alloc(commandBlockBytes);
  await volume.read(0, block);
  if (block.subarray(tokenField.at, tokenField.at + tokenField.bytes).every((byte) => byte === 0)) return false;
  await volume.write(0, withoutToken(0, block));
  return true;
}

export class CommandDevice {
  constructor(private readonly options: CommandDeviceOptions) {}

  /**
   * A host write: stored like any other, but with the token field zeroed, so no NBD client of the
   * device ever reads a token back and none reaches the drive (nor survives a crash); one that
   * covers the request block then runs it, with the token as the host sent it.
   */
  async write(offset: number, data: Buffer): Promise<void> {
    await this.options.volume.write(offset, withoutToken(offset, data));
    if (offset === 0 && data.length >= commandBlockBytes) await this.run(data.subarray(0, commandBlockBytes));
  }

  private async run(block: Buffer): Promise<void> {
    const id = block.length >= 16 ? block.readBigUInt64BE(8) : 0n;
    const answer = await this.answer(block).catch(errorAnswer);
    const capacity = this.options.volume.sizeBytes - replyOffset;
    await this.options.volume.write(replyOffset, encodeReply(id, answer.status, answer.json, capacity));
  }

  private async answer(block: Buffer): Promise<{ status: number; json: unknown }> {
    const request = parseRequest(block);
    const given = Buffer.from(request.token, 'utf8');
    if (given.length !== this.options.token.length || !crypto.timingSafeEqual(given, this.options.token)) {
      throw new TwinstoreError('UNAUTHORIZED', 'the request block carries a wrong API token');
    }
    const route = routes[request.verb];
    if (!route) throw new TwinstoreError('BAD_REQUEST', `unknown verb "${request.verb}"; known: ${commandVerbs.join(', ')}`, { field: 'verb' });
    const call = route(request.args);
    if (this.options.remote !== null) return this.options.forward(this.options.remote, call.method, call.url, call.body);
    return this.options.local(call.method, call.url, call.body);
  }
}
