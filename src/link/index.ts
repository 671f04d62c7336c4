// The array↔array link: TCP + TLS 1.2 with a pre-shared key (mutual
// authentication), checked and length-bounded frames, pipelined requests,
// heartbeats and reconnects. LinkServer answers peers with a handler; PeerLink
// connects to one peer and sends requests. docs/link-protocol.md has the wire
// format.

export { LinkServer, type LinkHandler, type LinkRequest, type LinkResponse, type LinkServerOptions, REQUESTS_IN_FLIGHT_MAX } from './server.js';
export { PeerLink, type LinkAddress, type PeerLinkEvents, type PeerLinkOptions, type RequestOptions } from './peer.js';
export { type LinkIdentity } from './tls.js';
export type { LinkListener, LinkSocket, LinkTransport } from './transport.js';
export { readPskFile, writePskFile } from './keys.js';
export { BODY_BYTES_MAX, PAYLOAD_BYTES_MAX, PAYLOAD_SEGMENTS_MAX, PROTOCOL_VERSION, PSK_BYTES, TLS_CIPHER, TLS_VERSION } from './protocol.js';
