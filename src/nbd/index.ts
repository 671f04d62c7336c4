// The NBD part's public surface.
export { NbdServer } from './server.js';
export { ExportRegistry, type BlockExport } from './exports.js';
export { NbdTls } from './tls.js';
export { AccessPolicy } from './access.js';
export { IO_OPS, VolumeIoStats, latencyBucketsSeconds, type IoOp, type IoOpCounts } from './io-stats.js';
