// `twinstore journal size --write-rate R --outage T`: the journal a group needs
// to ride out a link outage of T at a host write rate R without suspending. It
// is arithmetic on the journal's own layout (a 4 KiB header block per record,
// data padded to 4 KiB, the header slots before the ring, a record's worth of
// waste at the ring's end), so it runs locally and needs no array.

import { TwinstoreError } from '../errors.js';
import { journalBytesMin, recordBytesFor, ringStartBytes } from '../journal/layout.js';
import { parseSize } from '../util/size.js';

/** Headroom the suggestion adds over the bare need, for bursts above the average rate. */
export const journalSizeHeadroom = 0.25;
/** Outages longer than this are refused: a week of journal is a sign the numbers are wrong. */
export const outageSecondsMax = 7 * 24 * 3600;

const durationUnits: Record<string, number> = { '': 1, s: 1, m: 60, min: 60, h: 3600, d: 86_400 };

/** Parses "90s", "30m", "2h", "1.5h", "1d" or a number of seconds; undefined when it is not one. */
export function parseDurationSeconds(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  if (!match) return undefined;
  const unit = durationUnits[(match[2] ?? '').toLowerCase()];
  if (unit === undefined) return undefined;
  const seconds = Number(match[1]) * unit;
  return Number.isFinite(seconds) ? seconds : undefined;
}

export interface JournalSizeInput {
  writeRateBytesPerSecond: number;
  outageSeconds: number;
  /** The hosts' typical write size: small writes cost a 4 KiB header each. */
  writeBytes: number;
}

export interface JournalSize extends JournalSizeInput {
  records: number;
  recordBytes: number;
  /** Bytes the outage's records take in the ring, with one record of wrap waste. */
  ringBytes: number;
  /** The smallest journal volume that holds them (header slots included), in whole MiB. */
  neededBytes: number;
  /** neededBytes with journalSizeHeadroom more, in whole MiB. */
  suggestedBytes: number;
}

const mib = 2 ** 20;

function wholeMiB(bytes: number): number {
  return Math.ceil(bytes / mib) * mib;
}

export function journalSizeFor(input: JournalSizeInput): JournalSize {
  const { writeRateBytesPerSecond, outageSeconds, writeBytes } = input;
  const records = Math.ceil((writeRateBytesPerSecond * outageSeconds) / writeBytes);
  const recordBytes = recordBytesFor('write', writeBytes);
  const ringBytes = (records + 1) * recordBytes;
  const neededBytes = wholeMiB(Math.max(journalBytesMin, ringStartBytes + ringBytes));
  const suggestedBytes = wholeMiB(neededBytes * (1 + journalSizeHeadroom));
  return { ...input, records, recordBytes, ringBytes, neededBytes, suggestedBytes };
}

/** The command's options as typed, checked; BAD_REQUEST names the option. */
export function journalSizeInput(options: { writeRate: string; outage: string; writeSize: string }): JournalSizeInput {
  const rate = parseSize(options.writeRate.replace(/\/s$/i, ''));
  if (rate === undefined || rate <= 0) {
    throw new TwinstoreError('BAD_REQUEST', `--write-rate "${options.writeRate}" is not a rate such as 50MiB/s`, { field: 'write-rate' });
  }
  const outage = parseDurationSeconds(options.outage);
  if (outage === undefined || outage <= 0 || outage > outageSecondsMax) {
    throw new TwinstoreError('BAD_REQUEST', `--outage "${options.outage}" is not a duration from 1s to 7d such as 30m or 2h`, { field: 'outage' });
  }
  const writeBytes = parseSize(options.writeSize);
  if (writeBytes === undefined || writeBytes < 512 || writeBytes > 32 * mib) {
    throw new TwinstoreError('BAD_REQUEST', `--write-size "${options.writeSize}" is not a write size from 512 bytes to 32MiB`, { field: 'write-size' });
  }
  return { writeRateBytesPerSecond: rate, outageSeconds: outage, writeBytes };
}
