// The journal's public types: the device it lives on, epochs, record metadata,
// reservations and the report of the recovery scan run by Journal.open.

/**
 * The journal lives on a device: in production a thick volume, in tests an
 * in-memory or file device. Offsets and sizes are in bytes. Writes may run
 * concurrently. A device must not keep a reference to a buffer after the call
 * that was given it has settled.
 */
export interface JournalDevice {
  /** A multiple of 4096. */
  readonly sizeBytes: number;
  read(offset: number, buffer: Buffer): Promise<void>;
  write(offset: number, data: Buffer): Promise<void>;
  /** Durable: every write completed before the call. */
  flush(): Promise<void>;
}

/** An epoch of a journal group (docs/architecture.md §6). `nonce` is 16 lower-case hex characters. */
export interface Epoch {
  counter: number;
  arrayId: string;
  nonce: string;
}

export type JournalRole = 'free' | 'master' | 'restore';

export type RecordKind = 'write' | 'zero' | 'trim' | 'base' | 'marker';

export interface RecordMeta {
  kind: RecordKind;
  seq: number;
  epoch: Epoch;
  timestampMs: number;
  lun: number;
  /** Byte offset on the volume. */
  offset: number;
  /** Bytes covered on the volume; for write and base records also the data's length. */
  length: number;
}

export interface JournalRecord extends RecordMeta {
  /** The data of a write or base record (`length` bytes); undefined for other kinds. */
  data: Buffer | undefined;
  /** CRC32C of `data` (0 without), as the journal recorded it and checked it on the way out. */
  dataCrc: number;
}

export interface Reservation {
  seq: number;
  /** Byte offset of the record's header block on the device. */
  position: number;
  /** Header block + data padded to 4 KiB. */
  recordBytes: number;
}

/** The labels of the recovery scan's decision table (docs/journal-format.md). */
export type RecoveryCase =
  | 'empty'
  | 'end'
  | 'gap'
  | 'foreign_instance'
  | 'stale_lap'
  | 'seq_ahead'
  | 'header_behind_ring'
  | 'stale_session'
  | 'stale_epoch'
  | 'wrap'
  | 'record'
  | 'damaged'
  | 'torn_data_end'
  | 'torn_unsynced';

export interface DamagedRecord {
  seq: number;
  lun: number;
  offset: number;
  length: number;
}

export interface RecoveryReport {
  /** The decision-table label that ended the scan. */
  case: RecoveryCase;
  /** Records recovered, damaged ones included. */
  records: number;
  /** Records whose header is valid but whose data fails its checksum: never to be applied. */
  damaged: DamagedRecord[];
  /**
   * Records cut off at a torn end (`torn_unsynced`, `torn_data_end`): never synced, so never
   * sent or promised durable, but their writes may have reached the volumes. A master re-sends
   * their regions with its active regions.
   */
  cut: DamagedRecord[];
  /**
   * Damage in the middle, detected: records from this seq on had been synced (a later record of
   * the last session says so) but the chain breaks before them (a misdirected write over a
   * record, a destroyed header), so the records kept end before it and the rest cannot be read
   * back. null when the records end where they were last written.
   */
  lostFrom: number | null;
  /**
   * The newest durable header was lost (damaged after its sync): the readable one is older than
   * the ring (`header_behind_ring`), or records of a session it does not know lie on the ring. The
   * records cannot be trusted to chain from it, so the journal was started again, empty, as a new
   * instance past every seq on the ring (`nextSeq`: the highest found, `maxSeq`, plus twice the
   * ring's capacity in records), so no seq means two writes. A master no longer knows which
   * regions its records wrote; a receiver no longer knows what it applied.
   */
  headerLost: { reason: string; maxSeq: number | null } | null;
  /** The header slot the journal was opened from ... */
  headerSlot: 0 | 1;
  /** ... and the header-table label that chose it (both_valid, slot0_torn_or_damaged, slot1_torn_or_damaged). */
  headerCase: string;
  /** How often each decision-table row matched during the scan. */
  steps: Partial<Record<RecoveryCase, number>>;
  /** The header was last written by close(): the journal was stopped cleanly. */
  cleanShutdown: boolean;
  /** The scan started at this seq (the persisted tail) ... */
  tailSeq: number;
  /** ... and ended before this one. */
  nextSeq: number;
}
