// Reads a YAML config, validates it, and turns every problem into one error
// that names the file, the line and the key (e.g. "site.yaml line 7: drives[0].size: …").
// Relative paths are resolved against the config file's folder.

import fs from 'node:fs';
import path from 'node:path';
import { LineCounter, parseDocument, isNode, type Document } from 'yaml';
import { TwinstoreError } from '../errors.js';
import { configSchema, type HostPort } from './schema.js';

/** The NBD server's bounds on what clients may hold (docs/config.md, `nbd.*`). */
export interface NbdLimits {
  connectionsMax: number;
  connectionsPerAddressMax: number;
  handshakeTimeoutMs: number;
  payloadStallMs: number;
  replyStallMs: number;
  bufferedBytesMax: number;
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
  link: { pskFile: string | undefined; heartbeatMs: number; suspendAfterMs: number };
  groupDefaults: { overflow: 'suspend' | 'throttle'; throttleMsMax: number; fence: FencePolicy; fenceAfterMs: number };
  bitmapRegionBytes: number;
  apiToken: string | undefined;
  tuning: { pollMicros: number; syncReadBytesMax: number; syncWriteBytesMax: number };
  nbd: NbdLimits;
  takeover: { peerTimeoutMs: number; startHoldMs: number };
  swap: { lagBytesMax: number; drainMsMax: number; freezeMsMax: number };
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
    },
    groupDefaults: config.groups.defaults,
    bitmapRegionBytes: config.bitmap.regionBytes,
    apiToken: config.api.token,
    tuning: config.tuning,
    nbd: config.nbd,
    takeover: config.takeover,
    swap: config.swap,
  };
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
