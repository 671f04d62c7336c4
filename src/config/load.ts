// Reads a YAML config, validates it, and turns every problem into one error
// that names the file, the line and the key (e.g. "site.yaml line 7: drives[0].size: …").
// Relative paths are resolved against the config file's folder.

import fs from 'node:fs';
import path from 'node:path';
import { LineCounter, parseDocument, isNode, type Document } from 'yaml';
import { TwinstoreError } from '../errors.js';
import { configSchema, parseCidr, type Cidr, type HostPort, type ParsedConfig } from './schema.js';

/** The NBD server's bounds on what clients may hold (docs/config.md, `nbd.*`). */
export interface NbdLimits {
  connectionsMax: number;
  connectionsPerAddressMax: number;
  handshakeTimeoutMs: number;
  payloadStallMs: number;
  replyStallMs: number;
  bufferedBytesMax: number;
}

/** NBD over TLS (docs/security.md): `on` offers STARTTLS, `require` refuses everything else before it. Paths are absolute. */
export interface NbdTlsConfig {
  mode: 'off' | 'on' | 'require';
  certFile: string | undefined;
  keyFile: string | undefined;
  /** Set: a client certificate signed by this CA is required, and its subject CN is the client's identity. */
  clientCaFile: string | undefined;
  /** `identity:hexkey` lines; the PSK identity is the client's identity. */
  pskFile: string | undefined;
}

/** HTTPS for the API (docs/security.md). Paths are absolute; caFile defaults to ca-cert.pem beside certFile. */
export interface ApiTlsConfig {
  certFile: string;
  keyFile: string;
  caFile: string;
}

/** One grant of `nbd.access.VOLUME`: a client matches when every part it names matches. */
export interface NbdGrant {
  identity: string | undefined;
  address: Cidr | undefined;
  readOnly: boolean;
}

/** What a P-VOL does while its link is down: keep writing (`never`) or refuse writes (`data`). */
export type FencePolicy = 'never' | 'data';

export interface ArrayConfig {
  file: string;
  arrayId: string;
  dataDir: string;
  extentBytes: number;
  drives: Array<{ path: string; sizeBytes: number | undefined; use: 'data' | 'journal' }>;
  listen: { nbd: HostPort; api: HostPort; link: HostPort | undefined };
  peers: Array<{ id: string; link: HostPort }>;
  /** bandwidthMax: bytes per second the array sends journal answers at, over all its groups; 0: no cap. */
  link: { pskFile: string | undefined; heartbeatMs: number; suspendAfterMs: number; bandwidthMax: number };
  groupDefaults: { overflow: 'suspend' | 'throttle'; throttleMsMax: number; fence: FencePolicy; fenceAfterMs: number };
  /** Alert thresholds: the defaults and, per group, those that differ (0 turns one off). */
  alerts: { defaults: { lagSecondsMax: number; journalUsedPercentMax: number }; groups: Map<string, { lagSecondsMax?: number; journalUsedPercentMax?: number }> };
  bitmapRegionBytes: number;
  apiToken: string | undefined;
  /** Undefined: plain HTTP (on loopback only, unless api.plainHttpAllowed). */
  apiTls: ApiTlsConfig | undefined;
  tuning: { pollMicros: number; syncReadBytesMax: number; syncWriteBytesMax: number };
  nbd: NbdLimits;
  nbdTls: NbdTlsConfig;
  /** Volumes named here are seen and used only by the clients a grant matches; others by every client. */
  nbdAccess: Map<string, NbdGrant[]>;
  takeover: { peerTimeoutMs: number; startHoldMs: number };
  swap: { lagBytesMax: number; drainMsMax: number; freezeMsMax: number };
}

/** The keys given (exactOptionalPropertyTypes: no key set to undefined). */
function definedOnly<T extends object>(value: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as { [K in keyof T]?: Exclude<T[K], undefined> };
}

export function loadConfig(file: string): ArrayConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new TwinstoreError('CONFIG_NOT_FOUND', `cannot read config ${file}: ${(error as Error).message}`);
  }
  return parseConfig(text, file);
}

export function parseConfig(text: string, file: string): ArrayConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
  const syntax = doc.errors[0];
  if (syntax) {
    const line = syntax.linePos?.[0].line ?? 1;
    throw new TwinstoreError('CONFIG_INVALID', `${file} line ${line}: ${syntax.message.split('\n')[0]}`);
  }
  const result = configSchema.safeParse(doc.toJS() ?? {});
  if (!result.success) {
    // A mistyped key gives two issues, the unknown key and the missing one: name the typo.
    const issue = result.error.issues.find((i) => i.code === 'unrecognized_keys') ?? result.error.issues[0]!;
    const keyPath = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
    const unknownKey = issue.code === 'unrecognized_keys' ? issue.keys[0] : undefined;
    const fullPath = unknownKey === undefined ? keyPath : [...keyPath, unknownKey];
    const line = lineOf(doc, lines, fullPath);
    const message = unknownKey === undefined ? issue.message : `unknown key (allowed keys are listed in docs/config.md)`;
    throw new TwinstoreError('CONFIG_INVALID', `${file} line ${line}: ${formatPath(fullPath) || '(top level)'}: ${message}`, { field: formatPath(fullPath) });
  }
  const config = result.data;
  const base = path.dirname(path.resolve(file));
  const drives = config.drives.map((d) => ({ path: path.resolve(base, d.path), sizeBytes: d.size, use: d.use }));
  const seen = new Set<string>();
  drives.forEach((drive, i) => {
    if (seen.has(drive.path)) {
      throw new TwinstoreError('CONFIG_INVALID', `${file} line ${lineOf(doc, lines, ['drives', i, 'path'])}: drives[${i}].path: ${drive.path} is listed twice`, { field: `drives[${i}].path` });
    }
    seen.add(drive.path);
  });
  if (config.link.pskFile === undefined && (config.listen.link !== undefined || config.peers.length > 0)) {
    // Checked here, before any drive or data folder is touched (the array checks peers added at run time again).
    const key = config.peers.length > 0 ? ['peers'] : ['listen', 'link'];
    throw new TwinstoreError('CONFIG_INVALID', `${file} line ${lineOf(doc, lines, key)}: link.pskFile: is required when listen.link or peers are set (make a key with twinstore keys)`, { field: 'link.pskFile' });
  }
  const fail = (keyPath: Array<string | number>, message: string): never => {
    throw new TwinstoreError('CONFIG_INVALID', `${file} line ${lineOf(doc, lines, keyPath)}: ${formatPath(keyPath)}: ${message}`, { field: formatPath(keyPath) });
  };
  const nbdTls = checkNbdTls(config.nbd, base, fail);
  const apiTls = checkApiTls(config, base, fail);
  const { connectionsMax, connectionsPerAddressMax, handshakeTimeoutMs, payloadStallMs, replyStallMs, bufferedBytesMax, access } = config.nbd;
  const nbdAccess = new Map<string, NbdGrant[]>();
  for (const [volume, grants] of Object.entries(access)) {
    nbdAccess.set(volume, grants.map((g, i) => {
      if (g.identity !== undefined && nbdTls.mode === 'off') fail(['nbd', 'access', volume, i, 'identity'], 'an identity needs nbd.tls on or require (plain clients have none)');
      if (g.identity !== undefined && nbdTls.clientCaFile === undefined && nbdTls.pskFile === undefined) {
        fail(['nbd', 'access', volume, i, 'identity'], 'an identity needs nbd.clientCaFile or nbd.pskFile (without them a client proves none)');
      }
      return { identity: g.identity, address: g.address === undefined ? undefined : parseCidr(g.address), readOnly: g.readOnly };
    }));
  }
  return {
    file: path.resolve(file),
    arrayId: config.array.id,
    dataDir: path.resolve(base, config.array.dataDir),
    extentBytes: config.array.extentBytes,
    drives,
    listen: { nbd: config.listen.nbd, api: config.listen.api, link: config.listen.link },
    peers: config.peers,
    link: {
      pskFile: config.link.pskFile === undefined ? undefined : path.resolve(base, config.link.pskFile),
      heartbeatMs: config.link.heartbeatMs,
      suspendAfterMs: config.link.suspendAfterMs,
      bandwidthMax: config.link.bandwidthMax,
    },
    groupDefaults: config.groups.defaults,
    alerts: {
      defaults: { lagSecondsMax: config.alerts.lagSecondsMax, journalUsedPercentMax: config.alerts.journalUsedPercentMax },
      groups: new Map(Object.entries(config.alerts.groups).map(([group, limits]) => [group, definedOnly(limits)])),
    },
    bitmapRegionBytes: config.bitmap.regionBytes,
    apiToken: config.api.token,
    apiTls,
    tuning: config.tuning,
    nbd: { connectionsMax, connectionsPerAddressMax, handshakeTimeoutMs, payloadStallMs, replyStallMs, bufferedBytesMax },
    nbdTls,
    nbdAccess,
    takeover: config.takeover,
    swap: config.swap,
  };
}

/**
 * The TLS keys that go together: with TLS on, certFile and keyFile (X.509) or pskFile (TLS-PSK), not
 * both (Node 20 has no PSK on TLS 1.3, so one port cannot offer X.509 on 1.3 and PSK on 1.2 without
 * lowering X.509 clients to 1.2); clientCaFile only with a certificate; no file with TLS off.
 */
function checkNbdTls(nbd: ParsedConfig['nbd'], base: string, fail: (keyPath: Array<string | number>, message: string) => never): NbdTlsConfig {
  const resolve = (file: string | undefined): string | undefined => (file === undefined ? undefined : path.resolve(base, file));
  if (nbd.tls === 'off') {
    const set = (['certFile', 'keyFile', 'clientCaFile', 'pskFile'] as const).find((key) => nbd[key] !== undefined);
    if (set !== undefined) fail(['nbd', set], 'is set but nbd.tls is off (set nbd.tls: on or require)');
  } else {
    if (nbd.pskFile !== undefined && (nbd.certFile !== undefined || nbd.keyFile !== undefined)) {
      fail(['nbd', 'pskFile'], 'choose certificates (certFile, keyFile) or pskFile, not both');
    }
    if (nbd.certFile !== undefined && nbd.keyFile === undefined) fail(['nbd', 'certFile'], 'needs nbd.keyFile too');
    if (nbd.keyFile !== undefined && nbd.certFile === undefined) fail(['nbd', 'keyFile'], 'needs nbd.certFile too');
    if (nbd.pskFile === undefined && nbd.certFile === undefined) fail(['nbd', 'tls'], `${nbd.tls} needs nbd.certFile and nbd.keyFile, or nbd.pskFile (make them with twinstore tls)`);
    if (nbd.clientCaFile !== undefined && nbd.certFile === undefined) fail(['nbd', 'clientCaFile'], 'needs nbd.certFile and nbd.keyFile (client certificates are X.509)');
  }
  return {
    mode: nbd.tls,
    certFile: resolve(nbd.certFile),
    keyFile: resolve(nbd.keyFile),
    clientCaFile: resolve(nbd.clientCaFile),
    pskFile: resolve(nbd.pskFile),
  };
}

/** api.tls with absolute paths; plain HTTP on an address other hosts reach only when api.plainHttpAllowed says so. */
function checkApiTls(config: ParsedConfig, base: string, fail: (keyPath: Array<string | number>, message: string) => never): ApiTlsConfig | undefined {
  const tls = config.api.tls;
  if (tls === undefined) {
    if (!config.api.plainHttpAllowed && !isLoopback(config.listen.api.host)) {
      fail(['listen', 'api'], `plain HTTP on ${config.listen.api.host}, which other hosts can reach: set api.tls (certFile, keyFile; make them with twinstore tls server) or api.plainHttpAllowed: true`);
    }
    return undefined;
  }
  const certFile = path.resolve(base, tls.certFile);
  return { certFile, keyFile: path.resolve(base, tls.keyFile), caFile: tls.caFile === undefined ? path.join(path.dirname(certFile), 'ca-cert.pem') : path.resolve(base, tls.caFile) };
}

/** Only this machine reaches it: localhost, 127.0.0.0/8 or ::1. */
function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** The line of the deepest node on `keyPath` that exists (the key itself when it is there). */
function lineOf(doc: Document, lines: LineCounter, keyPath: Array<string | number>): number {
  for (let depth = keyPath.length; depth >= 0; depth--) {
    const node: unknown = depth === 0 ? doc.contents : doc.getIn(keyPath.slice(0, depth), true);
    const pairKey = depth > 0 ? findKeyNode(doc, keyPath.slice(0, depth)) : undefined;
    const target = pairKey ?? node;
    if (isNode(target) && target.range) return lines.linePos(target.range[0]).line;
  }
  return 1;
}

/** The key node of a map entry (so "unknown key" points at the key, not its value). */
function findKeyNode(doc: Document, keyPath: Array<string | number>): unknown {
  const parent: unknown = keyPath.length === 1 ? doc.contents : doc.getIn(keyPath.slice(0, -1), true);
  const last = keyPath[keyPath.length - 1];
  if (!parent || typeof parent !== 'object' || !('items' in parent) || typeof last !== 'string') return undefined;
  const items = (parent as { items: Array<{ key?: unknown }> }).items;
  for (const item of items) {
    const key = item.key;
    if (isNode(key) && 'value' in key && (key as { value: unknown }).value === last) return key;
  }
  return undefined;
}

function formatPath(keyPath: Array<string | number>): string {
  return keyPath.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
}
