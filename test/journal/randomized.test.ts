// Goal: whatever the interleaving of appends, syncs, releases, header writes
// and crashes, recovery yields exactly a contiguous run of records from the
// persisted tail that contains every record synced before the crash, each
// byte-identical to what was written, possibly followed by later records that
// happened to land (those may be reported damaged, never silently wrong).
// Method: a property test driven by seeded PRNGs (src/util/prng.ts). Each seed
// runs random steps against an in-memory device whose crashes drop, land or
// tear (per 512-byte sector) every unflushed write, and which sometimes holds
// writes so they complete out of order or not at all before a crash. A model
// remembers each seq's metadata and data seed; after every crash the reopened
// journal is read in full and compared with it. JOURNAL_PROPERTY_SEEDS and
// JOURNAL_PROPERTY_STEPS run more.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Journal, type MemoryJournalDevice, type Reservation } from '../../src/journal/index.js';
import { Prng } from '../../src/util/prng.js';
import { epochA, formatted, hasData, kinds, memoryDevice, pattern, readAllOrDamaged, type Meta } from './helpers.js';

const seedCount = Number(process.env.JOURNAL_PROPERTY_SEEDS ?? 8);
const stepCount = Number(process.env.JOURNAL_PROPERTY_STEPS ?? 200);

interface Written {
  meta: Meta;
  dataSeed: number;
}

class World {
  device: MemoryJournalDevice = memoryDevice();
  journal!: Journal;
  readonly model = new Map<number, Written>();
  persistedTail = 1;
  persistedApplied = 1;
  dataSeeds = 0;
  crashes = 0;
  fulls = 0;

  constructor(readonly prng: Prng, readonly seed: number) {}

  randomMeta(): Meta {
    const kind = kinds[this.prng.below(kinds.length)]!;
    const size = this.prng.below(100);
    const length = !hasData(kind) ? this.prng.below(2 ** 30) : size < 60 ? 1 + this.prng.below(65536) : size < 85 ? this.prng.below(2 ** 20) : this.prng.below(8 * 2 ** 20);
    return { kind, length, lun: this.prng.below(4), offset: 512 * this.prng.below(2 ** 24), epoch: epochA, timestampMs: 1_700_000_000_000 + this.prng.below(1e6) };
  }
}

async function appendBatch(world: World): Promise<void> {
  const { journal, device, prng } = world;
  const hold = prng.below(4) === 0;
  if (hold) device.holdWrites();
  const writes: Promise<void>[] = [];
  const count = 1 + prng.below(6);
  for (let i = 0; i < count; i += 1) {
    const meta = world.randomMeta();
    let reservation: Reservation;
    try {
      reservation = journal.reserve(meta, hasData(meta.kind) ? meta.length : 0);
    } catch (error) {
      assert.equal((error as { code?: string }).code, 'JOURNAL_FULL');
      world.fulls += 1;
      break;
    }
    const dataSeed = (world.dataSeeds += 1);
    world.model.set(reservation.seq, { meta, dataSeed });
    writes.push(journal.write(reservation, meta, hasData(meta.kind) ? pattern(dataSeed, meta.length) : undefined));
  }
  const sync = prng.below(3) === 0 ? journal.sync() : undefined;
  if (hold) {
    device.completeHeld(Array.from({ length: device.heldCount }, (_, i) => i).filter(() => prng.below(2) === 0));
    if (prng.below(4) === 0) return crashAndCheck(world);
    device.stopHolding();
  }
  await Promise.all(writes);
  await sync;
}

/** Appends until JOURNAL_FULL, syncs, then frees a little: the next appends reuse space a header must free first. */
async function fill(world: World): Promise<void> {
  const { journal, prng } = world;
  for (;;) {
    const meta = { ...world.randomMeta(), kind: 'write' as const, length: 1 + prng.below(4 * 2 ** 20) };
    let reservation: Reservation;
    try {
      reservation = journal.reserve(meta, meta.length);
    } catch (error) {
      assert.equal((error as { code?: string }).code, 'JOURNAL_FULL');
      world.fulls += 1;
      break;
    }
    const dataSeed = (world.dataSeeds += 1);
    world.model.set(reservation.seq, { meta, dataSeed });
    await journal.write(reservation, meta, pattern(dataSeed, meta.length));
  }
  await journal.sync();
  journal.release(Math.min(journal.durableSeq, journal.tailSeq + 1 + prng.below(3)));
}

async function crashAndCheck(world: World): Promise<void> {
  const before = world.journal;
  const at = { tail: before.tailSeq, durable: before.durableSeq, next: before.nextSeq, applied: before.appliedSeq };
  world.device = world.device.crash({ prng: world.prng, landShare: world.prng.next(), tearShare: world.prng.next() / 2 });
  world.crashes += 1;
  const { journal, recovery } = await Journal.open(world.device);
  world.journal = journal;
  const where = `seed ${world.seed}, crash ${world.crashes}`;
  assert.ok(journal.tailSeq >= world.persistedTail && journal.tailSeq <= at.tail, `${where}: tail ${journal.tailSeq} is a persisted one`);
  assert.ok(journal.appliedSeq >= world.persistedApplied && journal.appliedSeq <= at.applied, `${where}: applied ${journal.appliedSeq}`);
  assert.ok(journal.nextSeq >= at.durable && journal.nextSeq <= at.next, `${where}: next ${journal.nextSeq} keeps every synced record (durable was ${at.durable})`);
  const { records, damaged } = await readAllOrDamaged(journal);
  assert.deepEqual(damaged, recovery.damaged.map((d) => d.seq), `${where}: damaged records are the reported ones`);
  assert.ok(damaged.every((seq) => seq >= at.durable), `${where}: no synced record is damaged (${damaged} vs durable ${at.durable}, tail ${journal.tailSeq} was ${at.tail})`);
  // A crash alone only tears records no later record knew as synced: they end the records (torn_unsynced), never damaged or lost.
  assert.deepEqual(damaged, [], `${where}: a crash alone damages nothing (${recovery.case})`);
  assert.equal(recovery.lostFrom, null, `${where}: a crash alone loses no synced record`);
  const seen = [...records.map((r) => r.seq), ...damaged].sort((a, b) => a - b);
  assert.deepEqual(seen, Array.from({ length: journal.nextSeq - journal.tailSeq }, (_, i) => journal.tailSeq + i), `${where}: a contiguous run`);
  for (const record of records) {
    const written = world.model.get(record.seq);
    assert.ok(written !== undefined, `${where}: seq ${record.seq} was written`);
    assert.deepEqual({ ...record, data: undefined, dataCrc: undefined }, { ...written.meta, seq: record.seq, data: undefined, dataCrc: undefined }, `${where}: seq ${record.seq} metadata`);
    if (hasData(record.kind)) assert.ok(record.data!.equals(pattern(written.dataSeed, record.length)), `${where}: seq ${record.seq} data`);
  }
  for (const seq of world.model.keys()) if (seq >= journal.nextSeq) world.model.delete(seq);
  world.persistedTail = journal.tailSeq;
  world.persistedApplied = journal.appliedSeq;
  if (damaged.length > 0) {
    // Damaged records are never applied; the replication layer resyncs their regions. Drop them for good.
    journal.release(Math.max(...damaged) + 1);
    await journal.persistHeader();
    world.persistedTail = journal.tailSeq;
  }
}

async function step(world: World): Promise<void> {
  const { journal, prng } = world;
  const roll = prng.below(100);
  if (roll < 2) return fill(world);
  if (roll < 55) return appendBatch(world);
  if (roll < 72) return journal.sync();
  if (roll < 84) return journal.release(journal.tailSeq + prng.below(Math.min(8, journal.durableSeq - journal.tailSeq) + 1));
  if (roll < 89) return journal.markApplied(journal.appliedSeq + prng.below(Math.max(0, journal.durableSeq - journal.appliedSeq) + 1));
  if (roll < 96) {
    const cursors = { tail: journal.tailSeq, applied: journal.appliedSeq };
    await journal.persistHeader();
    world.persistedTail = cursors.tail;
    world.persistedApplied = cursors.applied;
    return;
  }
  return crashAndCheck(world);
}

for (let seed = 1; seed <= seedCount; seed += 1) {
  test(`random appends, syncs, releases and crashes (seed ${seed})`, async () => {
    const world = new World(new Prng(seed * 7919), seed);
    world.journal = await formatted(world.device);
    for (let i = 0; i < stepCount; i += 1) {
      await step(world);
      assert.ok(world.journal.durableSeq <= world.journal.nextSeq && world.journal.usedBytes <= world.journal.capacityBytes);
    }
    await crashAndCheck(world);
    assert.ok(world.crashes >= 2, `seed ${seed} crashed ${world.crashes} times`);
    if (process.env.JOURNAL_PROPERTY_STATS === '1') console.log({ seed, crashes: world.crashes, fulls: world.fulls, next: world.journal.nextSeq });
  });
}
