// The config part's public surface.
export { loadConfig, parseConfig, type ArrayConfig, type NbdLimits, type NbdTlsConfig, type NbdGrant, type ApiTlsConfig } from './load.js';
export { parseHostPort, parseCidr, type Cidr, type HostPort } from './schema.js';
