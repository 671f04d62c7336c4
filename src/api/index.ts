// The API part's public surface.
export { ApiServer, type ArrayControl, type StatusJson, type VolumeJson, type CreateVolumeBody } from './server.js';
export type { ReplicationControl } from './replication-routes.js';
export type { EventFeed } from './event-routes.js';
export { TokenStore, tokensPath } from './tokens.js';
