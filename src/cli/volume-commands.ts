// Admin verbs for volumes and array status: HTTP calls to the array's API,
// printed as a table for people or as stable JSON (--json) for scripts.

import type { Command } from 'commander';
import { TwinstoreError } from '../errors.js';
import type { StatusJson, VolumeJson } from '../api/index.js';
import { formatSize, parseSize } from '../util/size.js';
import { connect, type ConnectionOptions } from './client.js';
import { print, table } from './table.js';

type GlobalOptions = ConnectionOptions & { json?: boolean };


function volumeRows(volumes: VolumeJson[]): string {
  return table(
    ['NAME', 'LUN', 'SIZE', 'ALLOCATED', 'ROLE', 'ACCESS', 'SESSIONS', 'NBD URI'],
    volumes.map((v) => [v.name, String(v.lun), formatSize(v.sizeBytes), formatSize(v.allocatedBytes), v.role, accessCell(v), String(v.sessions), v.nbdUri ?? '-']),
  );
}

/** ro or rw as exported; `fenced` when the array refuses host writes to it now (volume show gives the reason). */
function accessCell(v: VolumeJson): string {
  if (!v.exported) return '-';
  if (v.writesRefused !== null) return 'fenced';
  return v.readOnly ? 'ro' : 'rw';
}

export function addVolumeCommands(program: Command, globals: () => GlobalOptions): void {
  const volume = program.command('volume').description('create, list, show and delete volumes');

  volume.command('create <name>')
    .description('create a thin volume, exported over NBD under its name')
    .option('--size <size>', 'size, e.g. 10GiB (a multiple of 4KiB); required but for a command device (default 1MiB)')
    .option('--lun <n>', 'LUN, unique in the array (default: lowest free)')
    .option('--command-device', 'a command device: hosts write a request block at offset 0 and read the reply at 4096 (README)')
    .option('--remote <array>', 'with --command-device: run its requests on this peer array')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { size?: string; lun?: string; commandDevice?: boolean; remote?: string; json?: boolean }, command: Command) => {
      // A usage error (exit 2), as commander gives for any missing required option.
      if (opts.size === undefined && opts.commandDevice !== true) command.error("error: required option '--size <size>' not specified", { exitCode: 2 });
      const sizeBytes = opts.size === undefined ? undefined : parseSize(opts.size);
      if (opts.size !== undefined && sizeBytes === undefined) throw new TwinstoreError('BAD_REQUEST', `--size "${opts.size}" is not a size (e.g. 10GiB)`, { field: 'size' });
      const lun = opts.lun === undefined ? undefined : Number(opts.lun);
      if (lun !== undefined && !Number.isSafeInteger(lun)) throw new TwinstoreError('BAD_REQUEST', `--lun "${opts.lun}" is not a whole number`, { field: 'lun' });
      const created = await connect(globals()).request<VolumeJson>('POST', '/v1/volumes', {
        name,
        ...(sizeBytes === undefined ? {} : { size: sizeBytes }),
        ...(lun === undefined ? {} : { lun }),
        ...(opts.commandDevice === true ? { commandDevice: true } : {}),
        ...(opts.remote === undefined ? {} : { remote: opts.remote }),
      });
      print(opts.json ?? globals().json, created, () => `created volume ${created.name} (LUN ${created.lun}, ${formatSize(created.sizeBytes)}): ${created.nbdUri ?? 'not exported'}`);
    });

  volume.command('list')
    .description('list the volumes of the array')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const { volumes } = await connect(globals()).request<{ volumes: VolumeJson[] }>('GET', '/v1/volumes');
      print(opts.json ?? globals().json, { volumes }, () => (volumes.length === 0 ? 'no volumes' : volumeRows(volumes)));
    });

  volume.command('show <name>')
    .description('show one volume (NAME or #LUN)')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { json?: boolean }) => {
      const shown = await connect(globals()).request<VolumeJson>('GET', `/v1/volumes/${encodeURIComponent(name)}`);
      print(opts.json ?? globals().json, shown, () => table(['FIELD', 'VALUE'], Object.entries(shown).map(([k, v]) => [k, String(v)])));
    });

  volume.command('delete <name>')
    .description('delete a volume (NAME or #LUN) and free its extents')
    .option('--force', 'delete even with open NBD sessions (they are closed)')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { force?: boolean; json?: boolean }) => {
      const query = opts.force ? '?force=true' : '';
      const result = await connect(globals()).request<{ deleted: string }>('DELETE', `/v1/volumes/${encodeURIComponent(name)}${query}`);
      print(opts.json ?? globals().json, result, () => `deleted volume ${result.deleted}`);
    });

  program.command('status')
    .description('show the array: addresses, capacity, drives, whether one failed a sync, and the alerts firing')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const status = await connect(globals()).request<StatusJson>('GET', '/v1/status');
      print(opts.json ?? globals().json, status, () => formatStatus(status));
    });
}

function formatStatus(s: StatusJson): string {
  const head = table(['FIELD', 'VALUE'], [
    ['array', s.array],
    ['version', s.version],
    ['pid', String(s.pid)],
    ['uptime', `${s.uptimeSeconds}s`],
    ['nbd', s.nbd],
    ['api', s.api],
    ['volumes', String(s.volumes)],
    ['capacity', formatSize(s.capacityBytes)],
    ['free', formatSize(s.freeBytes)],
    ['allocated', formatSize(s.allocatedBytes)],
    ['provisioned', formatSize(s.provisionedBytes)],
    ['extent size', formatSize(s.extentBytes)],
    ['sync', s.syncFailed ? 'FAILED: every FLUSH fails (EIO) until the array is restarted' : 'ok'],
  ]);
  const drives = table(['DRIVE', 'USE', 'PATH', 'SIZE', 'FREE', 'SYNC'], [
    ...s.drives.map((d) => [d.id, d.use, d.path, formatSize(d.sizeBytes), formatSize(d.freeBytes), syncCell(d)]),
    ['metadata', '-', s.metadata.path, '-', '-', syncCell(s.metadata)],
  ]);
  const alerts = s.alerts.length === 0 ? 'alerts: none' : table(['ALERT', 'GROUP', 'SINCE', 'MESSAGE'], s.alerts.map((a) => [a.alert, a.group, a.since, a.message]));
  const failures = [...s.drives, { id: 'metadata', ...s.metadata }].filter((d) => d.syncError !== null);
  const notes = failures.map((d) => `sync failed: ${d.id} (${d.path}) at ${d.syncFailedAt}: ${d.syncError}`);
  return [head, drives, alerts, ...(notes.length > 0 ? [notes.join('\n')] : [])].join('\n\n');
}

function syncCell(state: StatusJson['metadata']): string {
  return state.syncFailedAt === null ? 'ok' : `FAILED at ${state.syncFailedAt}`;
}
