// The config part's public surface.
export { loadConfig, parseConfig, type ArrayConfig, type NbdLimits } from './load.js';
export { parseHostPort, type HostPort } from './schema.js';
