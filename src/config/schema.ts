// The config file's shape: keys, types, defaults and the checks that need no
// disk. Sizes may be written "4GiB"; addresses as host:port (port 0 picks a
// free port). Unknown keys are errors, so a typo never passes silently.

import net from 'node:net';
import { z } from 'zod';
import { parseSize } from '../util/size.js';

const sizeBytes = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const bytes = parseSize(value);
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${value}" is not a size (write e.g. 4GiB, 512MiB or a number of bytes)` });
    return z.NEVER;
  }
  return bytes;
});

export interface HostPort {
  host: string;
  port: number;
}

export function parseHostPort(text: string): HostPort | undefined {
  const match = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(text.trim());
  if (!match) return undefined;
  const port = Number(match[3]);
  if (port > 65535) return undefined;
  return { host: match[1] ?? match[2] ?? '', port };
}

const address = z.string().transform((value, ctx) => {
  const parsed = parseHostPort(value);
  if (!parsed) {
    ctx.addIssue({ code: 'custom', message: `"${value}" is not host:port (e.g. 127.0.0.1:10809; port 0 picks a free one)` });
    return z.NEVER;
  }
  return parsed;
});

const extentBytes = sizeBytes.refine((n) => n >= 65536 && n <= 64 * 2 ** 20 && (n & (n - 1)) === 0, {
  message: 'must be a power of two from 64KiB to 64MiB',
});

/** An address or a CIDR block (10.0.0.0/24, fd00::/8); a bare address is one host. */
const cidr = z.string().refine((value) => parseCidr(value) !== undefined, { message: 'must be an IP address or CIDR block (e.g. 10.0.0.0/24)' });

/** Who may see and use a volume over NBD: an identity (certificate CN or PSK identity), an address block, or both (both must match). */
const grant = z
  .strictObject({
    identity: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/, 'must be a certificate CN or PSK identity (A-Z a-z 0-9 . _ @ -)').optional(),
    address: cidr.optional(),
    readOnly: z.boolean().default(false),
  })
  .refine((g) => g.identity !== undefined || g.address !== undefined, { message: 'a grant names an identity, an address, or both' });

export interface Cidr {
  address: string;
  prefix: number;
  family: 'ipv4' | 'ipv6';
}

export function parseCidr(text: string): Cidr | undefined {
  const [address = '', prefixText, extra] = text.trim().split('/');
  if (extra !== undefined) return undefined;
  const version = net.isIP(address);
  if (version === 0) return undefined;
  const bits = version === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? bits : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= bits)) return undefined;
  return { address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' };
}

export const configSchema = z.strictObject({
  array: z.strictObject({
    id: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be 1-63 of a-z 0-9 - and start with a letter or digit'),
    dataDir: z.string().min(1),
    extentBytes: extentBytes.default(2 ** 20),
  }),
  drives: z
    .array(z.strictObject({ path: z.string().min(1), size: sizeBytes.optional(), use: z.enum(['data', 'journal']).default('data') }))
    .min(1, 'an array needs at least one drive')
    .refine((drives) => drives.some((d) => d.use === 'data'), { message: 'at least one drive must have use: data (volumes live there)' }),
  listen: z.strictObject({
    nbd: address,
    api: address,
    link: address.optional(),
  }),
  peers: z.array(z.strictObject({ id: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be an array id'), link: address })).default([]),
  link: z
    .strictObject({
      pskFile: z.string().min(1).optional(),
      heartbeatMs: z.number().int().min(50).max(60_000).default(1000),
      suspendAfterMs: z.number().int().min(100).max(3_600_000).default(30_000),
      bandwidthMax: sizeBytes.refine((n) => n === 0 || n >= 65536, { message: 'must be 0 (no cap) or at least 64KiB (per second)' }).default(0),
    })
    .default({ heartbeatMs: 1000, suspendAfterMs: 30_000, bandwidthMax: 0 }),
  groups: z
    .strictObject({
      defaults: z
        .strictObject({
          overflow: z.enum(['suspend', 'throttle']).default('suspend'),
          throttleMsMax: z.number().int().min(0).max(600_000).default(5000),
          fence: z.enum(['never', 'data']).default('never'),
          fenceAfterMs: z.number().int().min(100).max(3_600_000).default(30_000),
        })
        .default({ overflow: 'suspend', throttleMsMax: 5000, fence: 'never', fenceAfterMs: 30_000 }),
    })
    .default({ defaults: { overflow: 'suspend', throttleMsMax: 5000, fence: 'never', fenceAfterMs: 30_000 } }),
  alerts: z
    .strictObject({
      lagSecondsMax: z.number().min(0).max(30 * 86_400).default(60),
      journalUsedPercentMax: z.number().min(0).max(100).default(80),
      groups: z
        .record(
          z.string().min(1),
          z.strictObject({
            lagSecondsMax: z.number().min(0).max(30 * 86_400).optional(),
            journalUsedPercentMax: z.number().min(0).max(100).optional(),
          }),
        )
        .default({}),
    })
    .default({ lagSecondsMax: 60, journalUsedPercentMax: 80, groups: {} }),
  bitmap: z
    .strictObject({
      regionBytes: sizeBytes.refine((n) => n >= 4096 && n <= 64 * 2 ** 20 && (n & (n - 1)) === 0, { message: 'must be a power of two from 4KiB to 64MiB' }).default(65536),
    })
    .default({ regionBytes: 65536 }),
  api: z
    .strictObject({
      token: z.string().min(16, 'must be at least 16 characters').optional(),
      /** HTTPS with the files `twinstore tls server` makes; caFile is the site CA the CLI verifies the API with. */
      tls: z.strictObject({ certFile: z.string().min(1), keyFile: z.string().min(1), caFile: z.string().min(1).optional() }).optional(),
      plainHttpAllowed: z.boolean().default(false),
    })
    .default({ plainHttpAllowed: false }),
  takeover: z
    .strictObject({
      peerTimeoutMs: z.number().int().min(100).max(600_000).default(5000),
      startHoldMs: z.number().int().min(0).max(600_000).default(10_000),
    })
    .default({ peerTimeoutMs: 5000, startHoldMs: 10_000 }),
  swap: z
    .strictObject({
      lagBytesMax: sizeBytes.default(64 * 2 ** 20),
      drainMsMax: z.number().int().min(0).max(3_600_000).default(60_000),
      freezeMsMax: z.number().int().min(100).max(600_000).default(10_000),
    })
    .default({ lagBytesMax: 64 * 2 ** 20, drainMsMax: 60_000, freezeMsMax: 10_000 }),
  nbd: z
    .strictObject({
      tls: z.enum(['off', 'on', 'require']).default('off'),
      certFile: z.string().min(1).optional(),
      keyFile: z.string().min(1).optional(),
      clientCaFile: z.string().min(1).optional(),
      pskFile: z.string().min(1).optional(),
      access: z.record(z.string().min(1), z.array(grant).min(1, 'a volume named here needs at least one grant (remove it to let every client in)')).default({}),
      connectionsMax: z.number().int().min(1).max(65_536).default(1024),
      connectionsPerAddressMax: z.number().int().min(1).max(65_536).default(64),
      handshakeTimeoutMs: z.number().int().min(100).max(3_600_000).default(10_000),
      payloadStallMs: z.number().int().min(100).max(3_600_000).default(30_000),
      replyStallMs: z.number().int().min(100).max(3_600_000).default(30_000),
      bufferedBytesMax: sizeBytes.refine((n) => n >= 128 * 2 ** 20, { message: 'must be at least 128MiB (four 32 MiB requests)' }).default(2 ** 30),
    })
    .default({ tls: 'off', access: {}, connectionsMax: 1024, connectionsPerAddressMax: 64, handshakeTimeoutMs: 10_000, payloadStallMs: 30_000, replyStallMs: 30_000, bufferedBytesMax: 2 ** 30 }),
  tuning: z
    .strictObject({
      pollMicros: z.number().int().min(0).max(10_000).default(200),
      syncReadBytesMax: sizeBytes.refine((n) => n <= 2 ** 20, { message: 'must be at most 1MiB' }).default(65536),
      syncWriteBytesMax: sizeBytes.refine((n) => n <= 2 ** 20, { message: 'must be at most 1MiB' }).default(65536),
    })
    .default({ pollMicros: 200, syncReadBytesMax: 65536, syncWriteBytesMax: 65536 }),
});

export type ConfigInput = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;
