// The journal part's public surface (docs/architecture.md §4): the Journal, the device
// interface it runs on, an in-memory device for tests and simulators, and the
// record and recovery types. The on-disk format is in docs/journal-format.md.
export { Journal } from './journal.js';
export { JournalRecordCorruptError } from './errors.js';
export { MemoryJournalDevice, type CrashOptions } from './memory-device.js';
export { compareEpochs, epochNotOlder, type EpochOrder } from './epoch.js';
export type {
  DamagedRecord, Epoch, JournalDevice, JournalRecord, JournalRole, RecordKind, RecordMeta, RecoveryCase, RecoveryReport, Reservation,
} from './types.js';
