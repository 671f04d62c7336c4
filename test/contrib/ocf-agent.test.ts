// Goal: the Pacemaker resource agent (contrib/ocf/twinstore) drives a journal
// group as a cluster manager would: it passes resource-agents' ocf-tester,
// monitor tells the promoted (sending) side from the unpromoted one, the
// promotion scores prefer the consistent side (primary > PAIR > PSUS > COPY), a promote on B with A killed
// takes over and B serves writes, and a COPY S-VOL refuses to be promoted.
// Method: two real arrays (test/helpers/replication.ts) with group g1 in PAIR
// and g2 held in COPY by a slow copy pace; ocf-tester against A, and Pacemaker's
// own crm_resource --force-* running the agent from a file CIB (CIB_file, no
// cluster). crm_resource finds OCF agents only under /usr/lib/ocf/resource.d
// (compiled in), so the test links the agent there as provider "twinstore"
// (as root, as CI runs) and removes the link after. The agent logs each score
// it sets (HA_LOGFILE): without a cluster crm_attribute cannot record it.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createVolume, projectRoot, runAsync, runOk, type CommandResult, type RunningArray } from '../helpers/array.js';
import { cliOk, display, startSite, waitFor, waitForPairAndLag0, type Site } from '../helpers/replication.js';

const agentPath = path.join(projectRoot, 'contrib', 'ocf', 'twinstore');
const cli = path.join(projectRoot, 'bin', 'twinstore.js');
const providerDir = '/usr/lib/ocf/resource.d/twinstore';

// OCF exit codes (resource-agents' ocf-returncodes).
const OCF_SUCCESS = 0;
const OCF_ERR_CONFIGURED = 6;
const OCF_NOT_RUNNING = 7;
const OCF_RUNNING_MASTER = 8;

interface Resource {
  id: string;
  array: RunningArray;
  group: string;
  /** Reach the array with api and token_file instead of its config file. */
  byApi?: boolean;
}

interface Cluster {
  dir: string;
  cib: string;
  log: string;
  env: Record<string, string>;
}

/**
 * Links the agent where crm_resource looks for provider twinstore; after the test the link goes,
 * and the folder if the test made it. An agent installed there already is put back.
 */
function installAgent(t: TestContext): void {
  const madeDir = !fs.existsSync(providerDir);
  fs.mkdirSync(providerDir, { recursive: true });
  const link = path.join(providerDir, 'twinstore');
  const saved = fs.existsSync(link) ? `${link}.before-test-${process.pid}` : null;
  if (saved !== null) fs.renameSync(link, saved);
  fs.symlinkSync(agentPath, link);
  t.after(() => {
    fs.rmSync(link, { force: true });
    if (saved !== null) fs.renameSync(saved, link);
    if (madeDir) fs.rmdirSync(providerDir);
  });
}

/** The agent's parameters for a resource: the array's config file, or its API URL and a token file. */
function params(dir: string, r: Resource): Record<string, string> {
  if (!r.byApi) return { twinstore: cli, config: r.array.configFile, group: r.group };
  const tokenFile = path.join(dir, `${r.id}.token`);
  fs.writeFileSync(tokenFile, r.array.token(), { mode: 0o600 });
  return { twinstore: cli, api: `http://${r.array.ready!.api}`, token_file: tokenFile, group: r.group };
}

/** A CIB file with one promotable clone per resource, as an operator would configure them. */
function writeCib(dir: string, resources: Resource[]): string {
  const clones = resources.map((r) => `
      <clone id="${r.id}-clone">
        <meta_attributes id="${r.id}-clone-meta"><nvpair id="${r.id}-promotable" name="promotable" value="true"/></meta_attributes>
        <primitive id="${r.id}" class="ocf" provider="twinstore" type="twinstore">
          <instance_attributes id="${r.id}-ia">${Object.entries(params(dir, r)).map(([name, value]) => `
            <nvpair id="${r.id}-${name}" name="${name}" value="${value}"/>`).join('')}
          </instance_attributes>
        </primitive>
      </clone>`).join('');
  const cib = `<cib crm_feature_set="3.16.2" validate-with="pacemaker-3.9" epoch="1" num_updates="0" admin_epoch="0">
  <configuration>
    <crm_config><cluster_property_set id="options"><nvpair id="stonith" name="stonith-enabled" value="false"/></cluster_property_set></crm_config>
    <nodes/>
    <resources>${clones}
    </resources>
    <constraints/>
  </configuration>
  <status/>
</cib>
`;
  const file = path.join(dir, 'cib.xml');
  fs.writeFileSync(file, cib);
  return file;
}

function cluster(site: Site, resources: Resource[]): Cluster {
  const dir = fs.mkdtempSync(path.join(site.dir, 'ocf-'));
  const rsctmp = path.join(dir, 'rsctmp');
  fs.mkdirSync(rsctmp);
  const log = path.join(dir, 'agent.log');
  const cib = writeCib(dir, resources);
  return { dir, cib, log, env: { CIB_file: cib, HA_RSCTMP: rsctmp, HA_LOGFILE: log } };
}

/** crm_resource --force-ACTION -r ID: Pacemaker runs the agent's action on this node. */
async function force(c: Cluster, action: 'start' | 'stop' | 'promote' | 'demote' | 'check', id: string): Promise<CommandResult> {
  return runAsync('crm_resource', ['-r', id, `--force-${action}`, '--timeout', '120s'], { env: c.env, timeoutMs: 150_000 });
}

/** The agent's return code for a crm_resource --force-* run, from crm_resource's report of it. */
function agentRc(result: CommandResult): number {
  const match = /returned (\d+) \(/.exec(result.stdout + result.stderr);
  assert.ok(match, `crm_resource named no agent return code: ${result.stdout}${result.stderr}`);
  return Number(match[1]);
}

async function forceRc(c: Cluster, action: 'start' | 'stop' | 'promote' | 'demote' | 'check', id: string): Promise<number> {
  return agentRc(await force(c, action, id));
}

/** The last promotion score the agent logged for a resource. */
function lastScore(c: Cluster, id: string): string {
  const lines = fs.readFileSync(c.log, 'utf8').split('\n').filter((l) => l.includes(`(${id})`) && l.includes('promotion score'));
  assert.ok(lines.length > 0, `no promotion score logged for ${id}:\n${fs.readFileSync(c.log, 'utf8')}`);
  return /promotion score (\S+)/.exec(lines[lines.length - 1]!)![1]!;
}

/** A second group, g2, held in COPY: 16 MiB of data copied at 256 KiB/s. */
async function copyingGroup(site: Site): Promise<void> {
  createVolume(site.a, 'pcopy', '32MiB');
  createVolume(site.b, 'scopy', '32MiB');
  runOk('qemu-io', ['-f', 'raw', site.a.uri('pcopy'), '-c', 'write -P 0x33 0 16M', '-c', 'flush']);
  cliOk(site.a, ['journal', 'create', 'jnl2', '--size', '192MiB']);
  cliOk(site.b, ['journal', 'create', 'jnl2', '--size', '192MiB']);
  const args = ['pair', 'create', '--group', 'g2', '--pvol', 'pcopy', '--svol', 'site-b:scopy', '--journal', 'jnl2', '--remote-journal', 'site-b:jnl2', '--copy-pace', '256KiB'];
  const created = await site.a.cliAsync(args);
  assert.equal(created.code, 0, created.stderr);
  await waitFor('g2 in COPY on B', async () => (await display(site.b, 'g2')).every((p) => p.status === 'COPY'), 30_000);
}

test('OCF agent: ocf-tester, monitor codes, scores, promote = takeover with A dead, COPY refuses', { timeout: 240_000 }, async (t) => {
  installAgent(t);
  const started = Date.now();
  const step = (what: string): void => t.diagnostic(`${what} at ${Date.now() - started} ms`);
  const site = await startSite(t, { volumes: 1, volumeSize: '16MiB' });
  await copyingGroup(site);
  const resources: Resource[] = [{ id: 'ts-a', array: site.a, group: 'g1' }, { id: 'ts-b', array: site.b, group: 'g1' }, { id: 'ts-b2', array: site.b, group: 'g2', byApi: true }];
  const c = cluster(site, resources);
  step('site ready');

  // ocf-tester drives its own instance (ts-tester) on A: its promote and demote leave A the
  // primary, so it runs beside the crm_resource steps below until A is killed.
  const tester = runAsync('ocf-tester', ['-n', 'ts-tester', '-o', `twinstore=${cli}`, '-o', `config=${site.a.configFile}`, '-o', 'group=g1', agentPath], { env: c.env, timeoutMs: 120_000 });

  const invalid = await runAsync('crm_resource', ['--validate', '--class', 'ocf', '--provider', 'twinstore', '--agent', 'twinstore', '--option', 'group=g1'], { env: c.env });
  assert.equal(agentRc(invalid), OCF_ERR_CONFIGURED, `validate-all without config or api: ${invalid.stdout}${invalid.stderr}`);
  for (const r of resources) assert.equal(await forceRc(c, 'check', r.id), OCF_NOT_RUNNING, `${r.id} before start: not running`);
  for (const r of resources) assert.equal(await forceRc(c, 'start', r.id), OCF_SUCCESS, `${r.id} start`);
  assert.equal(await forceRc(c, 'promote', 'ts-a'), OCF_SUCCESS, 'promote A (already the primary)');
  assert.equal(await forceRc(c, 'check', 'ts-a'), OCF_RUNNING_MASTER, 'A: promoted');
  assert.equal(await forceRc(c, 'check', 'ts-b'), OCF_SUCCESS, 'B: unpromoted');
  assert.equal(await forceRc(c, 'check', 'ts-b2'), OCF_SUCCESS, 'B g2: unpromoted');

  const scores = { a: Number(lastScore(c, 'ts-a')), b: Number(lastScore(c, 'ts-b')), b2: lastScore(c, 'ts-b2') };
  t.diagnostic(`scores: ${JSON.stringify(scores)}`);
  assert.ok(scores.a > scores.b && scores.b >= 100, `the primary over a PAIR S-VOL with small lag: ${JSON.stringify(scores)}`);
  assert.equal(scores.b2, '-INFINITY', 'a COPY S-VOL is never promoted');

  // A split S-VOL (PSUS) is consistent at an older point: it scores below a PAIR one.
  assert.equal((await site.a.cliAsync(['pair', 'split', '--group', 'g1'])).code, 0, 'pair split g1');
  await waitFor('g1 PSUS on B', async () => (await display(site.b)).every((p) => p.status === 'PSUS'), 30_000);
  assert.equal(await forceRc(c, 'check', 'ts-b'), OCF_SUCCESS, 'B split: unpromoted');
  const split = Number(lastScore(c, 'ts-b'));
  assert.ok(split > 0 && split < scores.b, `a PSUS S-VOL (${split}) under a PAIR one (${scores.b})`);
  assert.equal((await site.a.cliAsync(['pair', 'resync', '--group', 'g1'])).code, 0, 'pair resync g1');
  await waitForPairAndLag0(site);

  const refused = await force(c, 'promote', 'ts-b2');
  assert.notEqual(agentRc(refused), OCF_SUCCESS, `promote of a COPY S-VOL must fail: ${refused.stdout}`);
  assert.match(fs.readFileSync(c.log, 'utf8'), /g2 is COPY here/);
  assert.equal((await display(site.b, 'g2'))[0]!.direction, 'site-a->site-b', 'g2 still sent from A');

  step('scores and COPY refusal');
  const tested = await tester;
  assert.equal(tested.code, 0, `ocf-tester against A:\n${tested.stdout}${tested.stderr}`);
  assert.match(tested.stdout, /passed all tests/);
  step('ocf-tester');

  await site.a.kill9();
  assert.equal(await forceRc(c, 'check', 'ts-a'), OCF_NOT_RUNNING, 'A killed: not running');
  assert.equal(await forceRc(c, 'promote', 'ts-b'), OCF_SUCCESS, `promote B with A dead:\n${fs.readFileSync(c.log, 'utf8')}`);
  assert.match(fs.readFileSync(c.log, 'utf8'), /takeover of g1 without the primary \(SSWS\)/);
  assert.equal(await forceRc(c, 'check', 'ts-b'), OCF_RUNNING_MASTER, 'B: promoted');
  assert.equal(Number(lastScore(c, 'ts-b')), 2000, 'B, now the primary, holds the top score');
  const rows = await display(site.b);
  assert.deepEqual(rows.map((p) => [p.status, p.direction]), [['SSWS', 'site-b->site-a']]);
  runOk('qemu-io', ['-f', 'raw', site.b.uri('svol0'), '-c', 'write -P 0x5b 0 1M', '-c', 'flush']);
  runOk('qemu-io', ['-f', 'raw', site.b.uri('svol0'), '-c', 'read -P 0x5b 0 1M']);
  for (const r of resources.slice(1)) assert.equal(await forceRc(c, 'stop', r.id), OCF_SUCCESS, `${r.id} stop`);
  step('takeover and writes on B');
});
