// Goal: GET /metrics gives a Prometheus scraper what an operator watches on a
// replicated pair: per-group lag, journal use, records sent and applied, pair
// status and link state, the receiver's data age, each volume's NBD requests
// (counts, bytes, latency histogram) and sessions, drive and pool capacity,
// and the group alerts, with no token needed and no secret shown; the alerts
// also in `status` and the event stream, and the same lag and host writes in
// the dashboard's history (GET /v1/history) (issue 16).
// Method: two real `twinstore serve` processes with a pair in PAIR, g1's alert
// thresholds set low in the config; the metrics are fetched over HTTP without a
// token and parsed as Prometheus text. Restore is paused on B so records stay
// in A's journal (used bytes and lag above 0: the lag and journal alerts fire,
// seen in metrics, `status --json` and `events --now --json`), then resumed
// (lag back to 0, counters agree on both arrays, the alerts clear); B is killed
// and A's link metric goes to 0.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import { createVolume, runOk, startPairOfArrays, type RunningArray } from '../helpers/array.js';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text format (one sample per line; comments skipped). */
function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(match, `a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]!] = pair[2]!;
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/**
 * One scrape on a connection of its own: the CLI calls between scrapes block this process
 * (spawnSync), so a kept-alive connection could be one the array closed meanwhile.
 */
async function scrape(array: RunningArray): Promise<{ samples: Sample[]; text: string }> {
  const { status, contentType, text } = await new Promise<{ status: number; contentType: string; text: string }>((resolve, reject) => {
    http.get(`http://${array.ready!.api}/metrics`, { agent: false }, (response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (chunk: string) => { body += chunk; });
      response.on('end', () => resolve({ status: response.statusCode ?? 0, contentType: response.headers['content-type'] ?? '', text: body }));
    }).on('error', reject);
  });
  assert.equal(status, 200, 'no token needed');
  assert.match(contentType, /^text\/plain; version=0\.0\.4/);
  return { samples: parse(text), text };
}

/** The value of the one sample with this name whose labels include `labels`; undefined when there is none. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.ok(found.length <= 1, `one ${name} ${JSON.stringify(labels)}, got ${found.length}`);
  return found[0]?.value;
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const g1 = { group: 'g1' };
const pvolLabel = { group: 'g1', pvol: 'site-a:pvol' };

const alertConfig = ['alerts:', '  lagSecondsMax: 600', '  groups:', '    g1: {lagSecondsMax: 1, journalUsedPercentMax: 2}'].join('\n');

interface AlertShown { group: string; alert: string; value: number; threshold: number; message: string }

function firingOn(array: RunningArray): AlertShown[] {
  const status = array.cli(['status', '--json']);
  assert.equal(status.code, 0, status.stderr);
  return (JSON.parse(status.stdout) as { alerts: AlertShown[] }).alerts;
}

test('/metrics on both arrays of a pair: names, lag, journal use, records, pair status, link state, volumes, alerts', async (t) => {
  const { a, b, psk } = await startPairOfArrays(t, { extraConfig: alertConfig });
  const pvol = createVolume(a, 'pvol', '32MiB');
  createVolume(b, 'svol', '32MiB');
  for (const array of [a, b]) assert.equal(array.cli(['journal', 'create', 'jnl', '--size', '160MiB']).code, 0);
  const created = a.cli(['pair', 'create', '--group', 'g1', '--pvol', 'pvol', '--svol', 'site-b:svol', '--journal', 'jnl', '--remote-journal', 'site-b:jnl']);
  assert.equal(created.code, 0, created.stderr);

  await waitFor('PAIR and lag 0 in A\'s metrics', async () => {
    const { samples } = await scrape(a);
    return value(samples, 'twinstore_pair_status', { ...pvolLabel, status: 'PAIR' }) === 1 && value(samples, 'twinstore_group_lag_records', g1) === 0;
  });

  const { samples: onA, text: textA } = await scrape(a);
  for (const name of [
    'twinstore_group_info', 'twinstore_group_lag_records', 'twinstore_group_lag_bytes', 'twinstore_group_lag_seconds',
    'twinstore_journal_used_bytes', 'twinstore_journal_capacity_bytes', 'twinstore_group_records_journaled_total',
    'twinstore_group_records_sent_total', 'twinstore_pair_status', 'twinstore_pair_copy_percent', 'twinstore_link_up',
    'process_cpu_user_seconds_total', 'nodejs_heap_size_used_bytes',
  ]) {
    assert.ok(onA.some((s) => s.name === name), `A exports ${name}`);
  }
  assert.equal(value(onA, 'twinstore_group_info', { group: 'g1', role: 'master', peer: 'site-b' }), 1);
  assert.equal(value(onA, 'twinstore_link_up', { peer: 'site-b' }), 1);
  assert.equal(value(onA, 'twinstore_pair_copy_percent', pvolLabel), 100);
  const capacity = value(onA, 'twinstore_journal_capacity_bytes', g1)!;
  assert.ok(capacity > 150 * 2 ** 20 && capacity <= 160 * 2 ** 20, `journal capacity ${capacity}`);
  const statuses = onA.filter((s) => s.name === 'twinstore_pair_status');
  assert.deepEqual(statuses.map((s) => s.labels.status).sort(), ['COPY', 'FENCED', 'PAIR', 'PSUE', 'PSUS', 'SMPL', 'SSWS', 'SWAP']);
  assert.deepEqual(statuses.filter((s) => s.value === 1).map((s) => s.labels.status), ['PAIR'], 'exactly one status is 1');
  for (const secret of [a.token(), fs.readFileSync(psk, 'utf8').trim()]) assert.ok(!textA.includes(secret), 'no token or key in the metrics');

  await waitFor('PAIR in B\'s metrics, labelled by the P-VOL too', async () => value((await scrape(b)).samples, 'twinstore_pair_status', { ...pvolLabel, status: 'PAIR' }) === 1);
  const { samples: onB } = await scrape(b);
  assert.equal(value(onB, 'twinstore_group_info', { group: 'g1', role: 'restore', peer: 'site-a' }), 1);
  assert.equal(value(onB, 'twinstore_link_up', { peer: 'site-a' }), 1);
  assert.equal(value(onB, 'twinstore_group_lag_seconds', g1), undefined, 'lag seconds and bytes come from the master clock only');
  assert.equal(value(onB, 'twinstore_group_records_sent_total', g1), undefined);
  assert.ok(value(onB, 'twinstore_group_records_applied_total', g1)! > 0);

  // Hold restore on B: records are sent and stored there, but not applied, so A keeps them.
  assert.equal(b.cli(['pair', 'restore', '--group', 'g1', '--pause']).code, 0);
  const appliedBefore = value(onB, 'twinstore_group_records_applied_total', g1)!;
  runOk('qemu-io', ['-f', 'raw', pvol, '-c', 'write -P 0x5a 0 4M', '-c', 'write -P 0x5b 8M 1M', '-c', 'flush']);
  await waitFor('records stored on B but not applied', async () => {
    const { samples } = await scrape(b);
    return value(samples, 'twinstore_group_records_stored_total', g1)! > appliedBefore;
  });
  const held = (await scrape(a)).samples;
  assert.ok(value(held, 'twinstore_journal_used_bytes', g1)! >= 5 * 2 ** 20, `A's journal holds the unapplied writes: ${value(held, 'twinstore_journal_used_bytes', g1)}`);
  assert.ok(value(held, 'twinstore_group_lag_records', g1)! > 0);
  assert.ok(value(held, 'twinstore_group_lag_bytes', g1)! >= 5 * 2 ** 20);
  assert.ok(value(held, 'twinstore_group_lag_seconds', g1)! > 0);
  assert.equal(value((await scrape(b)).samples, 'twinstore_group_records_applied_total', g1), appliedBefore, 'nothing applied while paused');
  assertVolumeSeries(held);

  await waitFor('the lag and journal alerts firing on A (metrics)', async () => {
    const { samples } = await scrape(a);
    return value(samples, 'twinstore_alert_firing', { group: 'g1', alert: 'lag' }) === 1 && value(samples, 'twinstore_alert_firing', { group: 'g1', alert: 'journal' }) === 1;
  });
  assert.equal(value((await scrape(a)).samples, 'twinstore_alert_firing', { group: 'g1', alert: 'suspended' }), 0);
  const firing = firingOn(a);
  assert.deepEqual(firing.map((f) => [f.group, f.alert, f.threshold]), [['g1', 'journal', 2], ['g1', 'lag', 1]], 'status lists both, with the group\'s own thresholds');
  assert.match(firing[1]!.message, /^g1: lag \d+\.\d s is over 1 s$/);
  const snapshot = a.cli(['events', '--now', '--json']);
  assert.equal(snapshot.code, 0, snapshot.stderr);
  const alertEvents = snapshot.stdout.trim().split('\n').map((line) => JSON.parse(line) as { type: string; data: { state: string; alert: string } }).filter((e) => e.type === 'alert');
  assert.deepEqual(alertEvents.map((e) => [e.data.state, e.data.alert]), [['firing', 'journal'], ['firing', 'lag']], 'the event snapshot shows the firing alerts');
  await waitFor('a history sample with the held lag and the P-VOL\'s writes (GET /v1/history)', async () => {
    const history = JSON.parse(runOk('curl', ['-sS', '-H', `Authorization: Bearer ${a.token()}`, `http://${a.ready!.api}/v1/history`])) as {
      intervalSeconds: number; samples: Array<{ groups: Record<string, { lagBytes: number }>; volumes: Record<string, { writeBytes: number }> }>;
    };
    assert.equal(history.intervalSeconds, 5);
    return history.samples.some((s) => (s.groups.g1?.lagBytes ?? 0) >= 5 * 2 ** 20) && history.samples.some((s) => (s.volumes.pvol?.writeBytes ?? 0) > 0);
  });
  const statusText = a.cli(['status']);
  assert.match(statusText.stdout, /^lag\s+g1\s+\S+\s+g1: lag /m, 'status shows the alert to a person');

  assert.equal(b.cli(['pair', 'restore', '--group', 'g1', '--resume']).code, 0);
  await waitFor('lag 0 and the counters agreeing on both arrays', async () => {
    const [sa, sb] = [(await scrape(a)).samples, (await scrape(b)).samples];
    const journaled = value(sa, 'twinstore_group_records_journaled_total', g1);
    return value(sa, 'twinstore_group_lag_records', g1) === 0
      && value(sa, 'twinstore_group_lag_seconds', g1) === 0
      && value(sa, 'twinstore_journal_used_bytes', g1) === 0
      && value(sa, 'twinstore_group_records_sent_total', g1) === journaled
      && value(sb, 'twinstore_group_records_applied_total', g1) === journaled;
  });
  await waitFor('the alerts cleared once lag and journal use are back to 0', async () => firingOn(a).length === 0);
  const dataAge = value((await scrape(b)).samples, 'twinstore_group_data_age_seconds', g1);
  assert.ok(dataAge !== undefined && dataAge >= 0 && dataAge < 600, `the receiver shows its S-VOLs' data age: ${dataAge}`);

  await b.kill9();
  await waitFor('A sees the link down', async () => value((await scrape(a)).samples, 'twinstore_link_up', { peer: 'site-b' }) === 0, 10_000);
  assert.equal(value((await scrape(a)).samples, 'twinstore_pair_status', { ...pvolLabel, status: 'PAIR' }), 1, 'the pair status stays PAIR (shown with reason link-down)');
});

/** The P-VOL's host I/O (4 MiB + 1 MiB written and a flush, by one qemu-io), the drive and pool capacity. */
function assertVolumeSeries(samples: Sample[]): void {
  const vol = { volume: 'pvol' };
  const writes = value(samples, 'twinstore_volume_requests_total', { ...vol, op: 'write' })!;
  assert.ok(writes >= 2, `writes counted: ${writes}`);
  assert.ok(value(samples, 'twinstore_volume_bytes_total', { ...vol, op: 'write' })! >= 5 * 2 ** 20, 'write bytes counted');
  assert.ok(value(samples, 'twinstore_volume_requests_total', { ...vol, op: 'flush' })! >= 1, 'the flush counted');
  assert.equal(value(samples, 'twinstore_volume_errors_total', { ...vol, op: 'write' }), 0);
  assert.equal(value(samples, 'twinstore_volume_request_seconds_count', { ...vol, op: 'write' }), writes);
  assert.equal(value(samples, 'twinstore_volume_request_seconds_bucket', { ...vol, op: 'write', le: '+Inf' }), writes);
  const buckets = samples.filter((s) => s.name === 'twinstore_volume_request_seconds_bucket' && s.labels.volume === 'pvol' && s.labels.op === 'write').map((s) => s.value);
  assert.ok(buckets.length > 2 && buckets.every((v, i) => i === 0 || v >= buckets[i - 1]!), `cumulative buckets: ${buckets.join(' ')}`);
  assert.ok(value(samples, 'twinstore_volume_request_seconds_sum', { ...vol, op: 'write' })! > 0);
  assert.equal(value(samples, 'twinstore_nbd_sessions', vol), 0, 'qemu-io has disconnected');
  assert.equal(value(samples, 'twinstore_volume_size_bytes', { ...vol, role: 'pvol' }), 32 * 2 ** 20);
  assert.ok(value(samples, 'twinstore_volume_allocated_bytes', { ...vol, role: 'pvol' })! >= 5 * 2 ** 20);
  const capacity = value(samples, 'twinstore_pool_capacity_bytes')!;
  const free = value(samples, 'twinstore_pool_free_bytes')!;
  assert.ok(capacity > 0 && free > 0 && free < capacity, `pool: ${free} of ${capacity} free`);
  const drives = samples.filter((s) => s.name === 'twinstore_drive_free_bytes');
  assert.ok(drives.length >= 1 && drives.every((d) => d.labels.use === 'data' && d.value <= capacity), 'each drive\'s free bytes');
}

test('/metrics needs no token, but every other route and method still does', async (t) => {
  const { a } = await startPairOfArrays(t);
  const { samples } = await scrape(a);
  assert.ok(value(samples, 'twinstore_link_up', { peer: 'site-b' }) !== undefined);
  assert.equal(samples.filter((s) => s.name.startsWith('twinstore_group_')).length, 0, 'no groups yet, no group series');
  assert.equal((await fetch(`http://${a.ready!.api}/v1/status`)).status, 401);
  assert.equal((await fetch(`http://${a.ready!.api}/metrics/extra`)).status, 401, 'only the exact path is open');
  assert.equal((await fetch(`http://${a.ready!.api}/metrics`, { method: 'POST' })).status, 401);
});
