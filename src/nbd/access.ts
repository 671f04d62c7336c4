// Per-export access (`nbd.access` in the config, docs/security.md): a volume
// named there is seen and used only by the clients one of its grants matches,
// by identity (certificate CN or PSK identity, known only after STARTTLS), by
// address block, or by both; a volume not named there is open to every client
// that reaches the port. Negotiation asks `grantOf` for every export it names or
// lists: no grant means the export does not exist for that client (LIST leaves
// it out, INFO/GO answer ERR_UNKNOWN). A read-only grant serves the export
// through ReadOnlyExport, so the client gets NBD_FLAG_READ_ONLY and its writes
// EPERM from the same checks that guard an S-VOL.

import net from 'node:net';
import type { NbdGrant } from '../config/index.js';
import { TwinstoreError } from '../errors.js';
import type { Extent } from '../storage/index.js';
import type { BlockExport } from './exports.js';

export interface ClientIdentity {
  address: string;
  /** Undefined before TLS, and for a TLS client without a certificate. */
  identity: string | undefined;
}

export type Grant = 'read-write' | 'read-only' | 'none';

interface CompiledGrant {
  identity: string | undefined;
  block: net.BlockList | undefined;
  readOnly: boolean;
}

export class AccessPolicy {
  private readonly grants = new Map<string, CompiledGrant[]>();

  constructor(config: Map<string, NbdGrant[]> = new Map()) {
    for (const [volume, grants] of config) {
      this.grants.set(volume, grants.map((g) => {
        let block: net.BlockList | undefined;
        if (g.address !== undefined) {
          block = new net.BlockList();
          block.addSubnet(g.address.address, g.address.prefix, g.address.family);
        }
        return { identity: g.identity, block, readOnly: g.readOnly };
      }));
    }
  }

  /** Read-write wins when several grants match. */
  grantOf(volume: string, client: ClientIdentity): Grant {
    const grants = this.grants.get(volume);
    if (grants === undefined) return 'read-write';
    const address = plainAddress(client.address);
    let best: Grant = 'none';
    for (const grant of grants) {
      if (grant.identity !== undefined && grant.identity !== client.identity) continue;
      if (grant.block !== undefined && !grant.block.check(address.text, address.family)) continue;
      if (!grant.readOnly) return 'read-write';
      best = 'read-only';
    }
    return best;
  }

  /** The export as this client may see it: itself, read-only, or not at all. */
  view(exported: BlockExport | undefined, client: ClientIdentity): BlockExport | undefined {
    if (exported === undefined) return undefined;
    const grant = this.grantOf(exported.name, client);
    if (grant === 'none') return undefined;
    return grant === 'read-only' && !exported.readOnly ? new ReadOnlyExport(exported) : exported;
  }
}

/** An IPv4-mapped IPv6 address (::ffff:10.0.0.1) is matched as the IPv4 address it carries. */
function plainAddress(address: string): { text: string; family: 'ipv4' | 'ipv6' } {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return { text: mapped[1]!, family: 'ipv4' };
  return { text: address, family: net.isIPv6(address) ? 'ipv6' : 'ipv4' };
}

/** An export served read-only to one client; writes never reach it (checkRequest answers EPERM first). */
export class ReadOnlyExport implements BlockExport {
  readonly readOnly = true;

  constructor(private readonly inner: BlockExport) {}

  get name(): string {
    return this.inner.name;
  }

  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }

  get description(): string {
    return this.inner.description;
  }

  read(offset: number, buffer: Buffer): Promise<void> {
    return this.inner.read(offset, buffer);
  }

  write(): Promise<void> {
    return Promise.reject(new TwinstoreError('INTERNAL', 'assertion failed: a write reached a read-only grant'));
  }

  writeZeroes(): Promise<void> {
    return this.write();
  }

  trim(): Promise<void> {
    return this.write();
  }

  zeroIsFast(offset: number, length: number): boolean {
    return this.inner.zeroIsFast(offset, length);
  }

  flush(): Promise<void> {
    return this.inner.flush();
  }

  blockStatus(offset: number, length: number, extentsMax: number): Extent[] {
    return this.inner.blockStatus(offset, length, extentsMax);
  }
}
