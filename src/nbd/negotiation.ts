// The handshake phase (fixed newstyle): options in, replies out. Pure apart from
// looking exports up, so it is unit-tested without sockets. Each call returns the
// bytes to send and what the session does next. With TLS configured, STARTTLS
// is answered ACK and the session runs the handshake (`starttls`), then calls
// tlsEstablished, which discards what was negotiated before (the spec: all
// prior state). Under `require` every option but STARTTLS and ABORT gets
// ERR_TLS_REQD before TLS (EXPORT_NAME, which has no error reply, closes).
// Every export named or listed goes through the access policy: one the client
// has no grant for is unknown to it.

import { infoBlockSize, infoExport, infoText, metaContext, optionReply, serverEntry, exportNameReply } from './encoder.js';
import type { BlockExport, ExportRegistry } from './exports.js';
import { AccessPolicy, type ClientIdentity } from './access.js';
import {
  BASE_ALLOCATION, BASE_ALLOCATION_ID, CLIENT_FLAG_FIXED_NEWSTYLE, CLIENT_FLAG_NO_ZEROES, INFO, OPT, OPTIONS_PER_SESSION_MAX,
  REP, STRING_BYTES_MAX, TFLAG,
} from './protocol.js';

export type NextStep =
  | { step: 'continue' }
  | { step: 'close'; reason: string; graceful: boolean }
  | { step: 'starttls' }
  | { step: 'transmission'; exported: BlockExport; structured: boolean; allocationContext: boolean };

export interface OptionOutcome {
  replies: Buffer[];
  next: NextStep;
}

const CONTINUE: NextStep = { step: 'continue' };

export interface NegotiationOptions {
  /** `off`: STARTTLS gets ERR_POLICY. */
  tls: 'off' | 'on' | 'require';
  access: AccessPolicy;
  /** The client's address (for address grants). */
  address: string;
}

export class Negotiation {
  private noZeroes = false;
  private structured = false;
  /** The export SET_META_CONTEXT named, if base:allocation was selected for it. */
  private allocationFor: string | undefined;
  private optionCount = 0;
  private tlsActive = false;
  private readonly client: ClientIdentity;
  private readonly tls: NegotiationOptions['tls'];
  private readonly access: AccessPolicy;

  constructor(private readonly registry: ExportRegistry, options: NegotiationOptions = { tls: 'off', access: new AccessPolicy(), address: '' }) {
    this.client = { address: options.address, identity: undefined };
    this.tls = options.tls;
    this.access = options.access;
  }

  /** The TLS handshake after STARTTLS finished: what was negotiated in the clear is forgotten. */
  tlsEstablished(identity: string | undefined): void {
    this.tlsActive = true;
    this.client.identity = identity;
    this.structured = false;
    this.allocationFor = undefined;
  }

  /** The export `name` as this client may see it (undefined: unknown to it). */
  private lookup(name: string): BlockExport | undefined {
    return this.access.view(this.registry.get(name), this.client);
  }

  /** Client flags: unknown bits close the connection (spec: MUST). */
  clientFlags(flags: number): NextStep {
    if ((flags & ~(CLIENT_FLAG_FIXED_NEWSTYLE | CLIENT_FLAG_NO_ZEROES)) !== 0) {
      return { step: 'close', reason: `unknown client flags 0x${flags.toString(16)}`, graceful: false };
    }
    this.noZeroes = (flags & CLIENT_FLAG_NO_ZEROES) !== 0;
    return CONTINUE;
  }

  option(option: number, data: Buffer): OptionOutcome {
    this.optionCount += 1;
    if (this.optionCount > OPTIONS_PER_SESSION_MAX) {
      return { replies: [], next: { step: 'close', reason: `more than ${OPTIONS_PER_SESSION_MAX} options`, graceful: false } };
    }
    if (this.tls === 'require' && !this.tlsActive && option !== OPT.STARTTLS && option !== OPT.ABORT) {
      if (option === OPT.EXPORT_NAME) return { replies: [], next: { step: 'close', reason: 'EXPORT_NAME before STARTTLS (nbd.tls is require)', graceful: false } };
      return error(option, REP.ERR_TLS_REQD, 'this array requires TLS: send STARTTLS first');
    }
    switch (option) {
      case OPT.EXPORT_NAME:
        return this.exportName(data);
      case OPT.ABORT:
        return { replies: [optionReply(option, REP.ACK)], next: { step: 'close', reason: 'client sent ABORT', graceful: true } };
      case OPT.LIST:
        return this.list(data);
      case OPT.STARTTLS:
        return this.startTls(data);
      case OPT.INFO:
      case OPT.GO:
        return this.infoOrGo(option, data);
      case OPT.STRUCTURED_REPLY:
        if (data.length > 0) return error(option, REP.ERR_INVALID, 'STRUCTURED_REPLY carries no data');
        this.structured = true;
        return { replies: [optionReply(option, REP.ACK)], next: CONTINUE };
      case OPT.LIST_META_CONTEXT:
      case OPT.SET_META_CONTEXT:
        return this.metaContext(option, data);
      default:
        return error(option, REP.ERR_UNSUP, `option ${option} is not supported`);
    }
  }

  private startTls(data: Buffer): OptionOutcome {
    if (data.length > 0) return error(OPT.STARTTLS, REP.ERR_INVALID, 'STARTTLS carries no data');
    if (this.tls === 'off') return error(OPT.STARTTLS, REP.ERR_POLICY, 'TLS is not configured on this array');
    if (this.tlsActive) return error(OPT.STARTTLS, REP.ERR_INVALID, 'TLS is already active');
    return { replies: [optionReply(OPT.STARTTLS, REP.ACK)], next: { step: 'starttls' } };
  }

  private exportName(data: Buffer): OptionOutcome {
    const name = data.toString('utf8');
    const exported = this.lookup(name);
    if (!exported) return { replies: [], next: { step: 'close', reason: `EXPORT_NAME for unknown export "${name}"`, graceful: false } };
    const flags = transmissionFlags(exported, this.structured);
    const allocationContext = this.structured && this.allocationFor === exported.name;
    return {
      replies: [exportNameReply(exported.sizeBytes, flags, this.noZeroes)],
      next: { step: 'transmission', exported, structured: this.structured, allocationContext },
    };
  }

  private list(data: Buffer): OptionOutcome {
    if (data.length > 0) return error(OPT.LIST, REP.ERR_INVALID, 'LIST carries no data');
    const visible = this.registry.list().filter((e) => this.access.grantOf(e.name, this.client) !== 'none');
    const replies = visible.map((e) => optionReply(OPT.LIST, REP.SERVER, serverEntry(e.name, e.description)));
    replies.push(optionReply(OPT.LIST, REP.ACK));
    return { replies, next: CONTINUE };
  }

  private infoOrGo(option: number, data: Buffer): OptionOutcome {
    const parsed = parseInfoRequest(data);
    if (typeof parsed === 'string') return error(option, REP.ERR_INVALID, parsed);
    const exported = this.lookup(parsed.name);
    if (!exported) return error(option, REP.ERR_UNKNOWN, `no export named "${parsed.name}"`);
    const replies = [optionReply(option, REP.INFO, infoExport(exported.sizeBytes, transmissionFlags(exported, this.structured)))];
    if (parsed.requests.includes(INFO.NAME)) replies.push(optionReply(option, REP.INFO, infoText(INFO.NAME, exported.name)));
    if (parsed.requests.includes(INFO.DESCRIPTION)) replies.push(optionReply(option, REP.INFO, infoText(INFO.DESCRIPTION, exported.description)));
    replies.push(optionReply(option, REP.INFO, infoBlockSize()));
    replies.push(optionReply(option, REP.ACK));
    if (option === OPT.INFO) return { replies, next: CONTINUE };
    const allocationContext = this.structured && this.allocationFor === exported.name;
    return { replies, next: { step: 'transmission', exported, structured: this.structured, allocationContext } };
  }

  private metaContext(option: number, data: Buffer): OptionOutcome {
    const setting = option === OPT.SET_META_CONTEXT;
    if (setting) this.allocationFor = undefined; // a SET replaces the selection even when it fails
    const parsed = parseMetaRequest(data);
    if (typeof parsed === 'string') return error(option, REP.ERR_INVALID, parsed);
    if (setting && !this.structured) return error(option, REP.ERR_INVALID, 'SET_META_CONTEXT needs STRUCTURED_REPLY first');
    if (!this.lookup(parsed.name)) return error(option, REP.ERR_UNKNOWN, `no export named "${parsed.name}"`);
    const matches = parsed.queries.length === 0
      ? !setting
      : parsed.queries.some((q) => q === BASE_ALLOCATION || (!setting && q === 'base:'));
    const replies: Buffer[] = [];
    if (matches) {
      replies.push(optionReply(option, REP.META_CONTEXT, metaContext(setting ? BASE_ALLOCATION_ID : 0, BASE_ALLOCATION)));
      if (setting) this.allocationFor = parsed.name;
    }
    replies.push(optionReply(option, REP.ACK));
    return { replies, next: CONTINUE };
  }
}

function error(option: number, type: number, message: string): OptionOutcome {
  return { replies: [optionReply(option, type, Buffer.from(message, 'utf8'))], next: CONTINUE };
}

export function transmissionFlags(exported: BlockExport, structured: boolean): number {
  let flags = TFLAG.HAS_FLAGS | TFLAG.SEND_FLUSH | TFLAG.SEND_FUA | TFLAG.SEND_TRIM | TFLAG.SEND_WRITE_ZEROES
    | TFLAG.CAN_MULTI_CONN | TFLAG.SEND_CACHE | TFLAG.SEND_FAST_ZERO;
  if (structured) flags |= TFLAG.SEND_DF;
  if (exported.readOnly) flags |= TFLAG.READ_ONLY;
  return flags;
}

/** INFO/GO data: u32 namelen, name, u16 n, n × u16 info type. Returns an error text when malformed. */
function parseInfoRequest(data: Buffer): { name: string; requests: number[] } | string {
  if (data.length < 6) return 'INFO/GO data shorter than 6 bytes';
  const nameBytes = data.readUInt32BE(0);
  if (nameBytes > STRING_BYTES_MAX || 4 + nameBytes + 2 > data.length) return 'export name length overruns the option';
  const count = data.readUInt16BE(4 + nameBytes);
  if (data.length !== 4 + nameBytes + 2 + 2 * count) return 'information request count does not match the option length';
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(data.readUInt16BE(4 + nameBytes + 2 + 2 * i));
  return { name: data.toString('utf8', 4, 4 + nameBytes), requests };
}

/** META_CONTEXT data: u32 namelen, name, u32 n, n × (u32 len, query). */
function parseMetaRequest(data: Buffer): { name: string; queries: string[] } | string {
  if (data.length < 8) return 'META_CONTEXT data shorter than 8 bytes';
  const nameBytes = data.readUInt32BE(0);
  if (nameBytes > STRING_BYTES_MAX || 4 + nameBytes + 4 > data.length) return 'export name length overruns the option';
  const count = data.readUInt32BE(4 + nameBytes);
  let at = 8 + nameBytes;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return 'query count overruns the option';
    const length = data.readUInt32BE(at);
    if (length > STRING_BYTES_MAX || at + 4 + length > data.length) return 'query length overruns the option';
    queries.push(data.toString('utf8', at + 4, at + 4 + length));
    at += 4 + length;
  }
  if (at !== data.length) return 'trailing bytes after the last query';
  return { name: data.toString('utf8', 4, 4 + nameBytes), queries };
}
