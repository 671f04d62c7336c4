// Goal: a planned swap, and the swap back, while hosts write without pause:
// roles and direction flip both times, the hosts lose no acknowledged write,
// the two arrays end identical, and the host outage (the freeze as the hosts
// feel it) is measured and printed, not asserted (only a sanity bound).
// Method: two real arrays, three pairs in one group. The libnbd hosts of
// test/helpers/write-order-hosts.py write stamped blocks to two P-VOLs (QD 16,
// two connections each, overlapping rewrites, some FLUSHes) and log issue and
// ack times; each connection knows the volume on both arrays and, when its
// session is closed (the swap turns its P-VOL into an S-VOL), reconnects by
// itself to whichever export is writable. fio (nbd engine, QD 16) writes the
// third P-VOL as bulk load, restarted on the new primary after each swap.
// `takeover` runs on B (swap), then on A (swap back). The outage is read from
// the hosts' log: the time from the last write the old primary acknowledged to
// the first the new one did. At the end, with lag 0: qemu-img compare of every
// pair, and every block of the stamped volumes holds its newest acknowledged
// write (or a later one), and the write-order checker finds them consistent.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Hosts, nowUs } from '../helpers/hosts.js';
import type { RunningArray } from '../helpers/array.js';
import { compareAll, display, readVolume, sleep, startSite, waitFor, type Site } from '../helpers/replication.js';
import { checkWriteOrder } from '../helpers/write-order.js';
import { ackedWrites, checkNothingAckedLost, lostAckControl, outages, takeover, volumeRole, type TakeoverAnswer } from '../helpers/takeover-checks.js';

const outageMsSanity = 30_000;

interface Fio {
  exited: Promise<{ code: number | null; output: string }>;
}

/** fio writing `uri` (nbd engine, QD 16, 16 KiB random writes, rate-capped) for up to `seconds`; killed by PID in t.after. */
function startFio(t: TestContext, uri: string, seconds: number): Fio {
  const child = spawn('fio', ['--name=load', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=16k', '--size=16M', '--iodepth=16',
    '--time_based', `--runtime=${seconds}`, '--rate_iops=400', '--output-format=terse'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  const exited = new Promise<{ code: number | null; output: string }>((resolve) => child.once('close', (code) => resolve({ code, output })));
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { exited };
}

async function fioEnded(fio: Fio, what: string, timeoutMs = 30_000): Promise<{ code: number | null; output: string }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`fio (${what}) still running ${timeoutMs} ms later`)), timeoutMs); });
  try {
    return await Promise.race([fio.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Every volume of the group has its role on both arrays, and the new primary shows PAIR in its direction. */
async function assertRoles(site: Site, primary: 'a' | 'b'): Promise<void> {
  for (let i = 0; i < site.pvols.length; i++) {
    assert.equal(await volumeRole(site.a, site.pvols[i]!), primary === 'a' ? 'pvol' : 'svol');
    assert.equal(await volumeRole(site.b, site.svols[i]!), primary === 'a' ? 'svol' : 'pvol');
  }
  const rows = await display(primary === 'a' ? site.a : site.b);
  assert.ok(rows.length === site.pvols.length && rows.every((r) => r.status === 'PAIR'), JSON.stringify(rows));
  assert.equal(rows[0]!.direction, primary === 'a' ? 'site-a->site-b' : 'site-b->site-a');
}

/** Waits until every host connection has had a write acknowledged by `site` (0 = A, 1 = B) after `sinceUs`. */
async function hostsWriteTo(hosts: Hosts, site: number, sinceUs: number): Promise<void> {
  await waitFor(`every host connection acknowledged on ${site === 0 ? 'A' : 'B'}`, () => {
    const conns = new Set(ackedWrites(hosts.logFile).filter((w) => w.site === site && w.ackUs > sinceUs).map((w) => w.conn));
    return conns.size === hosts.connections;
  }, 30_000, 100);
}

/** The lines of an array's log about swaps, takeovers and the link: the evidence when a swap goes wrong. */
function swapLog(array: RunningArray): string {
  return array.stderr.split('\n').filter((line) => /takeover|swap|freez|drain|demot|link/i.test(line)).slice(-10).join('\n');
}

async function swapUnderLoad(t: TestContext, from: RunningArray, to: RunningArray, label: string): Promise<TakeoverAnswer> {
  const started = nowUs();
  const answer = await takeover(to);
  t.diagnostic(`${label}: ${JSON.stringify(answer)} (takeover call ${((nowUs() - started) / 1000).toFixed(0)} ms)`);
  assert.equal(answer.kind, 'swap', `a planned swap with the primary alive; the new primary's log:\n${swapLog(to)}\nthe old primary's:\n${swapLog(from)}`);
  return answer;
}

test('planned swap under load, then swap back: roles flip, nothing acknowledged is lost, identical; the host outage is measured', { timeout: 150_000 }, async (t) => {
  const site = await startSite(t, { volumes: 3, envA: {}, envB: {} });
  const stamped = [0, 1];
  const hosts = await Hosts.start(t, {
    volumes: stamped.map((i) => site.a.uri(site.pvols[i]!)),
    alternates: stamped.map((i) => [site.b.uri(site.svols[i]!)]),
    autoReconnect: true,
    hotBlocks: site.volumeBytes / 4096,
    dir: site.dir,
    seed: 11,
    writesPerSecondPerConnection: 150,
  });
  const fioOnA = startFio(t, site.a.uri(site.pvols[2]!), 60);
  await sleep(2500);

  const swap = await swapUnderLoad(t, site.a, site.b, 'swap A->B under load');
  assert.match(swap.epoch, /^2@site-b#/);
  await assertRoles(site, 'b');
  await hostsWriteTo(hosts, 1, 0);
  const fioA = await fioEnded(fioOnA, 'on A after the swap');
  t.diagnostic(`fio on A's P-VOL when it turned S-VOL: exit ${fioA.code}; ${fioA.output.trim().split('\n').filter((l) => /error|err=/i.test(l)).slice(0, 2).join(' | ').slice(0, 300)}`);
  const fioOnB = startFio(t, site.b.uri(site.svols[2]!), 60);
  await sleep(2500);

  const back = await swapUnderLoad(t, site.b, site.a, 'swap B->A under load');
  assert.match(back.epoch, /^3@site-a#/);
  await assertRoles(site, 'a');
  await hostsWriteTo(hosts, 0, nowUs());
  const fioB = await fioEnded(fioOnB, 'on B after the swap back');
  t.diagnostic(`fio on B's P-VOL when it turned S-VOL: exit ${fioB.code}`);
  const fioAgain = await fioEnded(startFio(t, site.a.uri(site.pvols[2]!), 2), 'on A again');
  assert.equal(fioAgain.code, 0, `fio on A's P-VOL after the swap back: ${fioAgain.output}`);
  await hosts.stop();

  const log = hosts.readLog();
  const acked = ackedWrites(hosts.logFile);
  const refused = [...log.writes.values()].filter((w) => w.endUs !== undefined && !w.acked).length;
  const seen = outages(acked);
  t.diagnostic(`hosts: ${acked.length} writes acknowledged, ${refused} refused (never acknowledged), runs by array ${JSON.stringify(seen.runs.map(([s, n]) => `${s === 0 ? 'A' : 'B'}:${n}`))}; ` +
    `longest gap between acks ${seen.gapMsMax.toFixed(0)} ms`);
  for (const s of seen.switches) {
    t.diagnostic(`outage ${s.from === 0 ? 'A->B' : 'B->A'}: last ack on the old primary to first ack on the new one ${s.outageMs.toFixed(0)} ms ` +
      `(longest for one connection ${s.connectionOutageMsMax.toFixed(0)} ms)`);
  }
  t.diagnostic(`freezeMs reported by takeover: A->B ${swap.freezeMs} ms, B->A ${back.freezeMs} ms`);
  assert.deepEqual(seen.runs.map(([s]) => s), [0, 1, 0], 'acks come from A, then only from B, then only from A again: never from both');
  for (const s of seen.switches) assert.ok(s.outageMs < outageMsSanity, `outage ${s.outageMs} ms`);

  await waitFor('PAIR with lag 0 on A', async () => (await display(site.a)).every((p) => p.status === 'PAIR' && p.lagRecords === 0), 60_000, 100);
  compareAll(site);
  const images = stamped.map((i) => readVolume(site.b, site.svols[i]!, site.dir));
  const lost = checkNothingAckedLost(log, images);
  assert.deepEqual(lost.slice(0, 5), [], 'every acknowledged write is on the volumes unless the hosts overwrote it');
  const order = checkWriteOrder({ log, images, takenUs: nowUs() });
  assert.deepEqual(order.violations.slice(0, 5), []);
  t.diagnostic(`final volumes: ${order.blocksWritten} blocks hold ${order.writesHeld} of ${log.writes.size} writes; compare identical for ${site.pvols.length} pairs`);
  const control = lostAckControl(log, images);
  assert.ok(control, 'the volumes hold acknowledged writes');
  assert.ok(checkNothingAckedLost(log, control.images).length > 0, `the check catches a lost write (${control.what})`);
});
