// The config part's public surface.
export { loadConfig, parseConfig, type ArrayConfig, type NbdLimits, type NbdTlsConfig, type NbdGrant } from './load.js';
export { parseHostPort, parseCidr, type Cidr, type HostPort } from './schema.js';
