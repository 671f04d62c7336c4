// The replication part's public surface.
export { ReplicationManager, splitRef, type PairCreateRequest } from './manager.js';
export type { PeerChannel } from './restore-group.js';
export { GROUP_DOCUMENT, PEER_DOCUMENT, type PairDisplay, type PeerMeta } from './model.js';
