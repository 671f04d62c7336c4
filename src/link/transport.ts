// How link bytes travel between arrays. In production: TLS-PSK over TCP
// (tls.ts; LinkServer and PeerLink use it when no transport is given). The
// seeded simulator (test/sim) supplies an in-process transport whose every
// delivery its scheduler orders, so the framing, HELLO, heartbeats, requests
// and everything above them run as the same code either way.

import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { LinkIdentity } from './tls.js';

/** An authenticated byte stream: emits 'secureConnect' (client side) once the peer is authenticated. */
export type LinkSocket = Duplex & { remoteAddress?: string | undefined; remotePort?: number | undefined };

export interface LinkListener {
  address: AddressInfo;
  /** Stops accepting; sockets already handed out are the caller's to close. */
  close(): Promise<void>;
}

export interface LinkTransport {
  /** A client socket towards `address`; `onHint` hears the listening array's identity hint. */
  connect(address: { host: string; port: number }, identity: LinkIdentity, onHint: (hint: string | null) => void): LinkSocket;
  /** Listens; `accept` gets each connection that authenticated, with the peer's identity. */
  listen(host: string, port: number, identity: LinkIdentity, accept: (socket: LinkSocket, peerId: string) => void): Promise<LinkListener>;
}
