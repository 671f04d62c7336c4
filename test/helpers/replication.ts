// Two arrays with one journal group of P-VOL/S-VOL pairs, for the replication
// fault tests: array A sends, array B receives and reaches A's link through a
// LinkProxy (so a test can cut or stall the link B pulls over), both in
// volatile-cache mode unless told otherwise. Also the small verbs those tests
// share: pair display, journal show, pause/resume restore, reading a volume
// whole, and taking a stable image of the S-VOLs.

import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { createVolume, runOk, startArray, tempDir, writePsk, type RunningArray } from './array.js';
import { LinkProxy } from './link-proxy.js';
import { apiFetch } from './http.js';
import { readAll } from './nbdsh.js';
import { nowUs } from './hosts.js';
import type { PairDisplay } from '../../src/replication/index.js';

/** A row of `pair display --json` (the API's contract, src/replication/model.ts). */
export type PairRow = PairDisplay;

export interface JournalInfo {
  role: string;
  cursors: { tailSeq: number; nextSeq: number; durableSeq: number; appliedSeq: number };
  usedBytes: number;
}

export const group = 'g1';
export const volatileEnv = { TWINSTORE_TEST_VOLATILE_CACHE: '1' };

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 60_000, intervalMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/**
 * Waits until `read()` reaches `target` (a count that only grows: an applied seq, records done).
 * On a busy machine progress can be slow but steady, so the failure is a stall: no progress for
 * `stallMs`, or `timeoutMs` in all. The message says what was awaited and the last value seen.
 */
export async function waitForProgress(what: string, read: () => Promise<number>, target: number, options: { stallMs?: number; timeoutMs?: number; intervalMs?: number } = {}): Promise<void> {
  const { stallMs = 60_000, timeoutMs = 600_000, intervalMs = 200 } = options;
  const started = Date.now();
  let best = await read();
  let movedAt = started;
  while (best < target) {
    const now = Date.now();
    if (now - movedAt > stallMs) throw new Error(`no progress for ${stallMs} ms waiting for ${what} (at ${best} of ${target})`);
    if (now - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (at ${best} of ${target})`);
    await sleep(intervalMs);
    const value = await read();
    if (value > best) [best, movedAt] = [value, Date.now()];
  }
}

/** One API call, bounded: a hung array fails the test instead of stalling it. */
async function api(array: RunningArray, method: string, route: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  return apiFetch(array.ready!.api, method, route, { token: array.token(), ...(body === undefined ? {} : { body }) });
}

/** pair display through the API (what `pair display --json` prints). */
export async function display(array: RunningArray, name = group): Promise<PairRow[]> {
  const { status, json } = await api(array, 'GET', `/v1/pairs?group=${encodeURIComponent(name)}`);
  assert.equal(status, 200, JSON.stringify(json));
  return (json as { pairs: PairRow[] }).pairs;
}

/** pair display --json through the CLI. */
export function displayCli(array: RunningArray, name = group): PairRow[] {
  const out = array.cli(['pair', 'display', '--group', name, '--json']);
  assert.equal(out.code, 0, out.stderr);
  return (JSON.parse(out.stdout) as { pairs: PairRow[] }).pairs;
}

export async function journalShow(array: RunningArray, name = 'jnl'): Promise<JournalInfo> {
  const { status, json } = await api(array, 'GET', `/v1/journals/${encodeURIComponent(name)}`);
  assert.equal(status, 200, JSON.stringify(json));
  return json as JournalInfo;
}

/** pair restore --pause / --resume on the receiving array (through the API, as the CLI does). */
export async function setRestorePaused(array: RunningArray, paused: boolean, name = group): Promise<void> {
  const { status, json } = await api(array, 'POST', '/v1/pairs/restore', { group: name, paused });
  assert.equal(status, 200, JSON.stringify(json));
}

/** The receiving array's applied cursor: every record below it is on the S-VOLs. */
export async function appliedSeq(b: RunningArray): Promise<number> {
  const rows = await display(b);
  return rows[0]!.consistencySeq + 1;
}

export interface Site {
  a: RunningArray;
  b: RunningArray;
  proxy: LinkProxy;
  dir: string;
  pvols: string[];
  svols: string[];
  volumeBytes: number;
}

export interface SiteOptions {
  volumes?: number;
  volumeSize?: string;
  journalSize?: string;
  envA?: Record<string, string>;
  envB?: Record<string, string>;
  drives?: string[];
  seed?: number;
  copyPace?: string;
  /** Wait for PAIR and lag 0 before returning (default true). */
  waitForPair?: boolean;
  /** Runs after the volumes exist and before pair create (to put data on the P-VOLs). */
  beforePair?: (site: Site) => void | Promise<void>;
  /** link.suspendAfterMs on both arrays. */
  suspendAfterMs?: number;
  /** link.bandwidthMax on A (what it sends), e.g. '2MiB'. */
  bandwidthMaxA?: string;
  /** More config for A (YAML text appended to its config). */
  extraConfigA?: string;
  /** More config for B (YAML text appended to its config). */
  extraConfigB?: string;
  /** More `pair create` options (e.g. --fence data). */
  pairArgs?: string[];
}

/** Starts A and B, links B to A through a proxy, and pairs `volumes` P-VOLs in one journal group. */
export async function startSite(t: TestContext, options: SiteOptions = {}): Promise<Site> {
  const dir = tempDir(t);
  const psk = writePsk(dir);
  const drives = options.drives ?? ['2GiB'];
  const link = { pskFile: psk, ...(options.suspendAfterMs === undefined ? {} : { suspendAfterMs: options.suspendAfterMs }) };
  const a = await startArray(t, { id: 'site-a', ...link, ...(options.bandwidthMaxA === undefined ? {} : { bandwidthMax: options.bandwidthMaxA }), drives, ...(options.extraConfigA === undefined ? {} : { extraConfig: options.extraConfigA }), env: options.envA ?? { ...volatileEnv, TWINSTORE_TEST_SEED: String(options.seed ?? 1) } });
  const b = await startArray(t, { id: 'site-b', ...link, drives, ...(options.extraConfigB === undefined ? {} : { extraConfig: options.extraConfigB }), env: options.envB ?? { ...volatileEnv, TWINSTORE_TEST_SEED: String((options.seed ?? 1) + 1) } });
  a.pinPorts();
  b.pinPorts();
  const proxy = await LinkProxy.start(t, a.ready!.link!, options.seed ?? 1);
  cliOk(a, ['peer', 'add', 'site-b', '--link', b.ready!.link!]);
  cliOk(b, ['peer', 'add', 'site-a', '--link', proxy.address]);
  const count = options.volumes ?? 2;
  const volumeSize = options.volumeSize ?? '16MiB';
  const pvols: string[] = [];
  const svols: string[] = [];
  for (let i = 0; i < count; i++) {
    createVolume(a, `pvol${i}`, volumeSize);
    createVolume(b, `svol${i}`, volumeSize);
    pvols.push(`pvol${i}`);
    svols.push(`svol${i}`);
  }
  const volumes = (JSON.parse(cliOk(a, ['volume', 'list', '--json'])) as { volumes: Array<{ name: string; sizeBytes: number }> }).volumes;
  const site: Site = { a, b, proxy, dir, pvols, svols, volumeBytes: volumes.find((v) => v.name === 'pvol0')!.sizeBytes };
  await options.beforePair?.(site);
  const journalSize = options.journalSize ?? '384MiB';
  cliOk(a, ['journal', 'create', 'jnl', '--size', journalSize]);
  cliOk(b, ['journal', 'create', 'jnl', '--size', journalSize]);
  // B's link to A runs through the proxy in this process, which a synchronous CLI call stalls: the
  // link is up before the pairs are made, and they are made without blocking, or a loaded machine
  // leaves B unable to pull for link.suspendAfterMs and the new pair suspends (link-down).
  await waitFor('the link both ways before the pairs are made', () => linkUp(site), 60_000, 100);
  for (let i = 0; i < count; i++) {
    const args = ['pair', 'create', '--group', group, '--pvol', pvols[i]!, '--svol', `site-b:${svols[i]!}`, '--journal', 'jnl', '--remote-journal', 'site-b:jnl', '--json'];
    if (options.copyPace !== undefined) args.push('--copy-pace', options.copyPace);
    args.push(...(options.pairArgs ?? []));
    const result = await a.cliAsync(args);
    if (result.code !== 0) throw new Error(`twinstore ${args.join(' ')} exited ${result.code}: ${result.stderr}${result.stdout}`);
  }
  if (options.waitForPair ?? true) await waitForPairAndLag0(site);
  return site;
}

/**
 * Whether each array's own connection to the other is up. Each array dials its peer, so one
 * side may already hear the other (a fence arrives) while its own requests still fail.
 */
export async function linkUp(site: Site): Promise<boolean> {
  for (const array of [site.a, site.b]) {
    const { json } = await api(array, 'GET', '/v1/peers');
    if (!(json as { peers: Array<{ connected: boolean }> }).peers.every((p) => p.connected)) return false;
  }
  return true;
}

/** The proxy passes again; once the link is up both ways, `pair resync` on A, PAIR, lag 0 and every pair identical. */
export async function healAndResync(site: Site): Promise<void> {
  site.proxy.setMode('pass');
  await waitFor('the link both ways', () => linkUp(site), 30_000, 100);
  const { status, json } = await api(site.a, 'POST', '/v1/pairs/resync', { group });
  assert.equal(status, 200, JSON.stringify(json));
  await waitFor('PAIR, lag 0', async () => (await display(site.a)).every((p) => p.status === 'PAIR' && p.lagRecords === 0), 60_000, 100);
  compareAll(site);
}

/**
 * `pair resync` on A once the link is up both ways; sent again while it fails with LINK_DOWN (the
 * link dropped on heartbeats under load before the resync changed anything), for 60 s at most.
 */
export async function resyncWhenLinked(site: Site): Promise<void> {
  await waitFor('pair resync to be accepted (link up)', async () => {
    if (!(await linkUp(site))) return false;
    const result = site.a.cli(['pair', 'resync', '--group', group]);
    const output = result.stderr + result.stdout;
    if (result.code !== 0 && !/LINK_DOWN/.test(output)) throw new Error(`pair resync failed: ${output}`);
    return result.code === 0;
  }, 60_000, 200);
}

/** Runs the CLI against an array; throws with its output when it fails. */
export function cliOk(array: RunningArray, args: string[]): string {
  const result = array.cli(args);
  if (result.code !== 0) throw new Error(`twinstore ${args.join(' ')} exited ${result.code}: ${result.stderr}${result.stdout}`);
  return result.stdout;
}

/**
 * Waits for every pair PAIR with lag 0 on A. A copy or a backlog on a loaded machine may take long
 * but moves: the failure is `stallMs` with nothing in pair display changing (status, copied bytes,
 * lag), or 5 × stallMs in all; the message gives the last rows.
 */
export async function waitForPairAndLag0(site: Site, stallMs = 120_000): Promise<void> {
  const started = Date.now();
  let seen = '';
  let changedAt = started;
  for (;;) {
    const rows = await display(site.a);
    if (rows.every((p) => p.status === 'PAIR' && p.lagRecords === 0)) return;
    const state = rows.map((p) => `${p.pvol} ${p.status}${p.statusReason ? ` (${p.statusReason})` : ''} copy ${p.copyBytes} bytes lag ${p.lagRecords}`).join('; ');
    const now = Date.now();
    if (state !== seen) [seen, changedAt] = [state, now];
    if (now - changedAt > stallMs) throw new Error(`no change for ${stallMs} ms waiting for PAIR with lag 0 on A: ${state}`);
    if (now - started > 5 * stallMs) throw new Error(`timed out after ${5 * stallMs} ms waiting for PAIR with lag 0 on A: ${state}`);
    await sleep(200);
  }
}

export function readVolume(array: RunningArray, name: string, dir: string): Buffer {
  return readAll(array.uri(name), dir);
}

export interface SvolImage {
  images: Buffer[];
  /** The receiving array's applied cursor while the images were read. */
  appliedSeq: number;
  takenUs: number;
}

/**
 * Reads every S-VOL while restore is paused on B, so the image is one applied prefix:
 * pause, wait until the applied cursor stays put (a batch that was running has ended),
 * read, check the cursor did not move meanwhile (else read again), resume.
 */
export async function readSvols(site: Site, options: { leavePaused?: boolean } = {}): Promise<SvolImage> {
  await setRestorePaused(site.b, true);
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      let before = await appliedSeq(site.b);
      for (let polls = 0; ; polls++) {
        await sleep(250);
        const now = await appliedSeq(site.b);
        if (now === before) break;
        if (polls > 120) throw new Error(`restore kept applying for 30 s after pair restore --pause (at seq ${now})`);
        before = now;
      }
      const images = site.svols.map((name) => readVolume(site.b, name, site.dir));
      const takenUs = nowUs();
      if ((await appliedSeq(site.b)) === before) return { images, appliedSeq: before, takenUs };
    }
    throw new Error('restore kept moving while paused');
  } finally {
    if (options.leavePaused !== true) await setRestorePaused(site.b, false);
  }
}

/** qemu-img compare of every P-VOL with its S-VOL; throws naming the first difference. */
export function compareAll(site: Site): void {
  site.pvols.forEach((pvol, i) => {
    runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', site.a.uri(pvol), site.b.uri(site.svols[i]!)]);
  });
}

/** Restarts an array; fails with the end of its log if it is not ready within `ms`. */
export async function startWithin(array: RunningArray, name: string, ms = 60_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`array ${name} was not ready within ${ms / 1000} s of its restart: ${array.stderr.slice(-3000)}`)), ms);
  });
  try {
    await Promise.race([array.start(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A's journal nextSeq once it has not moved for 400 ms (call it while no host writes to A). */
export async function stableNextSeq(site: Site): Promise<number> {
  let last = -1;
  let stableSince = Date.now();
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (Date.now() > deadline) throw new Error(`A's journal kept growing for 60 s after its restart with no host writing (nextSeq ${last})`);
    const next = (await journalShow(site.a)).cursors.nextSeq;
    if (next !== last) {
      last = next;
      stableSince = Date.now();
    } else if (Date.now() - stableSince >= 400) {
      return next;
    }
    await sleep(100);
  }
}
