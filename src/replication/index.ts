// The replication part's public surface.
export { ReplicationManager, splitRef, type GroupStats, type JournalDeviceFactory, type PairCreateRequest, type TakeoverResult } from './manager.js';
export { OK, LINK_METHODS, answerLinkRequest, linkRequest, type LinkHandlers, type LinkMethod, type PeerChannel } from './protocol.js';
export { GROUP_DOCUMENT, PAIR_STATUSES, PEER_DOCUMENT, formatEpoch, type GroupMeta, type PairDisplay, type PairStatus, type PeerMeta } from './model.js';
export { groupsOfPeer, volumeUse, type VolumeUse } from './usage.js';
