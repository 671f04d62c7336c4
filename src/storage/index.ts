// The storage part's public surface: the engine, volumes and their metadata types.
export { StorageEngine, VOLUME_NAME_PATTERN, LUN_MAX, VOLUME_ALIGN_BYTES, type EngineOptions, type CreateVolumeRequest, type EngineSyncFailure } from './engine.js';
export { Volume, type Extent } from './volume.js';
export { VOLUME_ROLES, type VolumeRole, type VolumeMeta, type MetaRecord } from './meta-model.js';
export { volatileCacheMode } from './open-file.js';
export { isIoError } from './block-file.js';
