// Admin verbs for replication: peers, journals and pairs. Like every other
// verb they are HTTP calls to one array's API; commands that name the other
// array (ARRAY:NAME) are forwarded by the array over the link.

import type { Command } from 'commander';
import { TwinstoreError } from '../errors.js';
import type { PairDisplay } from '../replication/index.js';
import { formatSize, parseSize } from '../util/size.js';
import { connect, type ApiClient, type ConnectionOptions } from './client.js';
import { watch } from './watch.js';
import { journalSizeFor, journalSizeInput, type JournalSize } from './journal-size.js';
import { print, table } from './table.js';

type GlobalOptions = ConnectionOptions & { json?: boolean };


export function pairTable(pairs: PairDisplay[]): string {
  if (pairs.length === 0) return 'no pairs';
  const rows = table(
    ['GROUP', 'DIRECTION', 'P-VOL', 'S-VOL', 'STATUS', 'COPY%', 'JNL%', 'LAG(rec)', 'LAG(s)', 'PENDING', 'CONSISTENT@', 'REASON'],
    pairs.map((p) => [
      p.group, p.direction, p.pvol, p.svol, p.restorePaused ? `${p.status} (paused)` : p.status, copyCell(p), String(p.journalUsedPercent),
      String(p.lagRecords), String(p.lagSeconds), pendingCell(p), String(p.consistencySeq), p.statusReason ?? '-',
    ]),
  );
  const hints = [...new Set(pairs.filter((p) => p.recovery !== null).map((p) => `${p.group}: ${p.recovery}`))];
  return hints.length === 0 ? rows : `${rows}\n\n${hints.join('\n')}`;
}

/** COPY% with the rate and ETA while a copy runs (when known). */
function copyCell(p: PairDisplay): string {
  if (p.status !== 'COPY' || p.copyPercent < 0) return p.copyPercent < 0 ? '-' : String(p.copyPercent);
  if (p.copyRateBytesPerSecond === null) return `${p.copyPercent} (${formatSize(p.copyRemainingBytes)} left)`;
  const eta = p.copyEtaSeconds === null ? '?' : formatSeconds(p.copyEtaSeconds);
  return `${p.copyPercent} (${formatSize(p.copyRateBytesPerSecond)}/s, ETA ${eta})`;
}

/** What a suspended pair owes: its bitmap's regions and bytes, and the journal's backlog. */
function pendingCell(p: PairDisplay): string {
  const suspended = p.status === 'PSUS' || p.status === 'PSUE' || p.status === 'SSWS' || p.status === 'FENCED';
  if (!suspended && p.pendingRegions === 0) return '-';
  const journal = p.lagBytes > 0 ? ` + ${formatSize(p.lagBytes)} jnl` : p.lagRecords > 0 ? ` + ${p.lagRecords} rec jnl` : '';
  return `${p.pendingRegions} regions (${formatSize(p.pendingBytes)})${journal}`;
}

function formatSeconds(seconds: number): string {
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  return `${Math.round(seconds / 3600)}h`;
}

/** A row of journal list (GET /v1/journals): usage only for a journal a group has open. */
interface JournalRow {
  name: string;
  role: string;
  sizeBytes: number;
  group: string | null;
  usedPercent?: number;
}

function journalTable(journals: JournalRow[]): string {
  if (journals.length === 0) return 'no journals';
  return table(['NAME', 'ROLE', 'SIZE', 'GROUP', 'USED%'], journals.map((j) => [j.name, j.role, formatSize(j.sizeBytes), j.group ?? '-', j.usedPercent === undefined ? '-' : String(j.usedPercent)]));
}

export function addReplicationCommands(program: Command, globals: () => GlobalOptions): void {
  const peer = program.command('peer').description('the other array of a pair');
  peer.command('add <id>')
    .description('record a peer array and connect to it')
    .requiredOption('--link <host:port>', "the peer's link address")
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { link: string; json?: boolean }) => {
      const added = await connect(globals()).request<{ id: string; link: string }>('POST', '/v1/peers', { id, link: opts.link });
      print(opts.json ?? globals().json, added, () => `peer ${added.id} at ${added.link}`);
    });
  peer.command('list')
    .description('list peers and whether the link is up')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const { peers } = await connect(globals()).request<{ peers: Array<{ id: string; link: string; connected: boolean }> }>('GET', '/v1/peers');
      print(opts.json ?? globals().json, { peers }, () => table(['PEER', 'LINK', 'STATE'], peers.map((p) => [p.id, p.link, p.connected ? 'up' : 'down'])));
    });
  peer.command('remove <id>')
    .description('forget a peer added with peer add and close its link (refused while a group or a remote command device uses it)')
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { json?: boolean }) => {
      const result = await connect(globals()).request<{ deleted: string }>('DELETE', `/v1/peers/${encodeURIComponent(id)}`);
      print(opts.json ?? globals().json, result, () => `removed peer ${result.deleted}`);
    });

  const journal = program.command('journal').description('journal volumes');
  journal.command('list')
    .description('list the journal volumes: role, size, group and usage')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const { journals } = await connect(globals()).request<{ journals: JournalRow[] }>('GET', '/v1/journals');
      print(opts.json ?? globals().json, { journals }, () => journalTable(journals));
    });
  journal.command('delete <name>')
    .description('delete a journal no group uses (pair delete the group first)')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { json?: boolean }) => {
      const result = await connect(globals()).request<{ deleted: string }>('DELETE', `/v1/journals/${encodeURIComponent(name)}`);
      print(opts.json ?? globals().json, result, () => `deleted journal ${result.deleted}`);
    });
  journal.command('create <name>')
    .description('create a journal volume (journal-free until a group uses it)')
    .requiredOption('--size <size>', 'size, e.g. 1GiB (at least 4x the largest write)')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { size: string; json?: boolean }) => {
      const size = parseSize(opts.size);
      if (size === undefined) throw new TwinstoreError('BAD_REQUEST', `--size "${opts.size}" is not a size`, { field: 'size' });
      const created = await connect(globals()).request<Record<string, unknown>>('POST', '/v1/journals', { name, size });
      print(opts.json ?? globals().json, created, () => `created journal ${name} (${formatSize(size)})`);
    });
  journal.command('show <name>')
    .description('cursors, instance id, epoch and usage of a journal')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { json?: boolean }) => {
      const shown = await connect(globals()).request<Record<string, unknown>>('GET', `/v1/journals/${encodeURIComponent(name)}`);
      print(opts.json ?? globals().json, shown, () => table(['FIELD', 'VALUE'], Object.entries(shown).map(([k, v]) => [k, typeof v === 'object' ? JSON.stringify(v) : String(v)])));
    });

  journal.command('size')
    .description('the journal a group needs to ride out a link outage without suspending (runs locally)')
    .requiredOption('--write-rate <rate>', 'the hosts\' sustained write rate to the group, e.g. 50MiB/s')
    .requiredOption('--outage <duration>', 'the outage to ride out, e.g. 30m, 2h')
    .option('--write-size <size>', 'the hosts\' typical write size (each record also takes a 4 KiB header)', '64KiB')
    .option('--json', 'print JSON')
    .action((opts: { writeRate: string; outage: string; writeSize: string; json?: boolean }) => {
      const size = journalSizeFor(journalSizeInput(opts));
      print(opts.json ?? globals().json, size, () => journalSizeText(size));
    });

  const pair = program.command('pair').description('replication pairs and journal groups');
  pair.command('create')
    .description('pair a P-VOL with an S-VOL on the peer, in a journal group')
    .requiredOption('--group <group>', 'journal group (consistency group)')
    .requiredOption('--pvol <name>', 'the P-VOL (NAME here, or ARRAY:NAME)')
    .requiredOption('--svol <array:name>', 'the S-VOL on the peer')
    .requiredOption('--journal <name>', 'the master journal (on the P-VOL array)')
    .requiredOption('--remote-journal <array:name>', 'the restore journal on the peer')
    .option('--overflow <policy>', 'suspend or throttle when the journal is full')
    .option('--copy-pace <rate>', 'initial copy rate cap per second, e.g. 100MiB')
    .option('--fence <policy>', 'with the link down: never (keep writing, tracked) or data (refuse writes after --fence-after)')
    .option('--fence-after <ms>', 'how long the link must be down before fence data refuses writes', (v) => Number(v))
    .option('--json', 'print JSON')
    .action(async (opts: { group: string; pvol: string; svol: string; journal: string; remoteJournal: string; overflow?: string; copyPace?: string; fence?: string; fenceAfter?: number; json?: boolean }) => {
      const body = {
        group: opts.group,
        pvol: opts.pvol,
        svol: opts.svol,
        journal: opts.journal,
        remoteJournal: opts.remoteJournal,
        ...(opts.overflow === undefined ? {} : { overflow: opts.overflow }),
        ...(opts.copyPace === undefined ? {} : { copyPace: opts.copyPace }),
        ...(opts.fence === undefined ? {} : { fence: opts.fence }),
        ...(opts.fenceAfter === undefined ? {} : { fenceAfterMs: opts.fenceAfter }),
      };
      const { pairs } = await connect(globals()).request<{ pairs: PairDisplay[] }>('POST', '/v1/pairs', body);
      print(opts.json ?? globals().json, { pairs }, () => pairTable(pairs));
    });
  pair.command('delete')
    .description('end every pair of a group on both arrays (--force: on this array alone, when the peer is gone)')
    .requiredOption('--group <group>', 'journal group')
    .option('--force', 'end the pairs here even if the peer cannot be reached')
    .option('--json', 'print JSON')
    .action(async (opts: { group: string; force?: boolean; json?: boolean }) => {
      const query = opts.force ? '?force=true' : '';
      const result = await connect(globals()).request<{ deleted: string }>('DELETE', `/v1/groups/${encodeURIComponent(opts.group)}${query}`);
      print(opts.json ?? globals().json, result, () => `deleted journal group ${result.deleted}`);
    });
  pair.command('restore')
    .description('pause or resume applying records to the S-VOLs (run on the receiving array)')
    .requiredOption('--group <group>', 'journal group')
    .option('--pause', 'hold restore: records keep arriving and are stored')
    .option('--resume', 'apply again')
    .option('--json', 'print JSON')
    .action(async (opts: { group: string; pause?: boolean; resume?: boolean; json?: boolean }) => {
      if (opts.pause === opts.resume) throw new TwinstoreError('BAD_REQUEST', 'say --pause or --resume', { field: 'pause' });
      const result = await connect(globals()).request<{ group: string; paused: boolean }>('POST', '/v1/pairs/restore', { group: opts.group, paused: opts.pause === true });
      print(opts.json ?? globals().json, result, () => `restore of ${result.group} ${result.paused ? 'paused' : 'resumed'}`);
    });
  pair.command('split')
    .description('stop the S-VOLs at a consistency point (PSUS); changes are tracked on both sides')
    .requiredOption('--group <group>', 'journal group')
    .option('--rw', 'make the S-VOLs writable once they reach the split point (their writes are tracked too)')
    .option('--json', 'print JSON')
    .action(async (opts: { group: string; rw?: boolean; json?: boolean }) => {
      const result = await connect(globals()).request<{ group: string; splitSeq: number; consistencySeq: number; atSplitPoint: boolean; svolWritable: boolean }>(
        'POST', '/v1/pairs/split', { group: opts.group, rw: opts.rw === true });
      print(opts.json ?? globals().json, result, () => `split ${result.group} at seq ${result.consistencySeq}: ` +
        (result.atSplitPoint ? 'the S-VOLs hold that point' : 'the S-VOLs are still applying up to it') +
        (result.svolWritable ? '; the S-VOLs are writable' : ''));
    });
  pair.command('resync')
    .description('copy only the regions changed on either side since the split or suspension, then PAIR')
    .requiredOption('--group <group>', 'journal group')
    .option('--swap', 'after a takeover without the primary (SSWS): make the old primary the receiver and copy only what either side wrote since')
    .option('--discard <array>', 'with --swap: the array whose writes after the divergence point are overwritten (needed when both sides wrote)')
    .option('--json', 'print JSON')
    .action(async (opts: { group: string; swap?: boolean; discard?: string; json?: boolean }) => {
      const result = await connect(globals()).request<{ group: string; dirtyBytes: number }>('POST', '/v1/pairs/resync', { group: opts.group, swap: opts.swap === true, discard: opts.discard ?? null });
      print(opts.json ?? globals().json, result, () => `resync of ${result.group} started: ${result.dirtyBytes} bytes of changed regions to copy (watch pair display)`);
    });
  program.command('takeover')
    .description('make this (receiving) array the primary of a group: a planned swap when the primary answers, else a takeover without it (exit 0: swap, 3: takeover)')
    .requiredOption('--group <group>', 'journal group')
    .option('--force', 'take over even while a pair is in COPY (its S-VOL is not consistent)')
    .option('--json', 'print JSON')
    .action(async (opts: { group: string; force?: boolean; json?: boolean }) => {
      const result = await connect(globals()).request<{ group: string; kind: 'swap' | 'takeover'; consistencySeq: number; epoch: string; freezeMs: number; ms: number; resumed: boolean }>(
        'POST', '/v1/takeover', { group: opts.group, force: opts.force === true });
      print(opts.json ?? globals().json, result, () => (result.kind === 'swap'
        ? `swap of ${result.group} done${result.resumed ? ' (finished an earlier run)' : ''}: this array is the primary (epoch ${result.epoch}); the volumes hold seq ${result.consistencySeq}; host writes were held ${result.freezeMs} ms; replication now runs from here`
        : `takeover of ${result.group} without the primary: this array is the primary (epoch ${result.epoch}, SSWS); the volumes hold seq ${result.consistencySeq}; when the old primary is back, run pair resync --group ${result.group} --swap here`));
      if (result.kind === 'takeover') process.exitCode = 3;
    });
  pair.command('display')
    .description('pair status, copy progress, lag and consistency point')
    .option('--group <group>', 'one group')
    .option('--json', 'print JSON (a stable contract)')
    .option('--watch', 'refresh every second until Ctrl-C')
    .action(async (opts: { group?: string; json?: boolean; watch?: boolean }) => {
      const query = opts.group === undefined ? '' : `?group=${encodeURIComponent(opts.group)}`;
      const fetch = (client: ApiClient): Promise<{ pairs: PairDisplay[] }> => client.request<{ pairs: PairDisplay[] }>('GET', `/v1/pairs${query}`);
      const json = opts.json ?? globals().json ?? false;
      if (opts.watch) await watch({ connection: globals(), json, fetch, human: ({ pairs }) => pairTable(pairs) });
      const { pairs } = await fetch(connect(globals()));
      print(json, { pairs }, () => pairTable(pairs));
    });
}

/** Bytes as an operator reads them: GiB or MiB with one decimal. */
function approximate(bytes: number): string {
  return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(1)}GiB` : `${(bytes / 2 ** 20).toFixed(1)}MiB`;
}

function journalSizeText(size: JournalSize): string {
  const createSize = size.suggestedBytes >= 2 ** 30 ? `${Math.ceil(size.suggestedBytes / 2 ** 30)}GiB` : `${size.suggestedBytes / 2 ** 20}MiB`;
  const outageMs = size.outageSeconds * 1000;
  return [
    `${formatSize(size.writeRateBytesPerSecond)}/s for ${size.outageSeconds} s in ${formatSize(size.writeBytes)} writes: ${size.records} records of ${formatSize(size.recordBytes)} each`,
    `needs a journal of at least ${approximate(size.neededBytes)}; with headroom for bursts: ${approximate(size.suggestedBytes)}`,
    `  twinstore journal create jnl --size ${createSize}        (on both arrays: after a swap the other one sends)`,
    outageMs <= 3_600_000
      ? `A group suspends (PSUE link-down) after link.suspendAfterMs of silence (30000 by default): set it to at least ${Math.ceil(outageMs)} to ride out this outage.`
      : 'link.suspendAfterMs is at most 3600000: a longer outage suspends the group after an hour, and a resync copies the regions written since.',
  ].join('\n');
}
