// The dashboard at /ui driven by a real browser (playwright-core with Debian's
// chromium, no browser download) against two real arrays: the page and its
// assets load without a token and with a CSP; a wrong token brings the form
// back with the API's error; a monitor token sees the pair and its Split gets
// FORBIDDEN; with the admin token the pair reaches PAIR on the page; lag rises
// under fio load through a slow link and falls when the link is fast again (in
// the table and the chart); the host's writes show in the throughput chart (GET
// /v1/history); split and resync from the buttons, whose confirm dialog shows
// the CLI line, bring PSUS, then COPY (through a slow link; no consistency
// point shown while the S-VOL is mid-copy) and PAIR (a consistency point); no
// request URL holds the token. Screenshots go to test-output/dashboard/ (the
// paths are printed).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { chromium, type Page } from 'playwright-core';
import { projectRoot, runAsync } from '../helpers/array.js';
import { group, startSite, waitFor } from '../helpers/replication.js';

const executablePath = '/usr/bin/chromium';
const shotsDir = path.join(projectRoot, 'test-output', 'dashboard');
const mib = 2 ** 20;

async function text(page: Page, testId: string): Promise<string> {
  return (await page.getByTestId(testId).first().textContent({ timeout: 1_000 }).catch(() => null)) ?? '';
}

async function attribute(page: Page, testId: string, name: string): Promise<number> {
  return Number(await page.getByTestId(testId).first().getAttribute(name, { timeout: 1_000 }).catch(() => '0'));
}

async function shot(page: Page, name: string): Promise<void> {
  const file = path.join(shotsDir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot: ${file}`);
}

test('the dashboard shows a pair and drives split and resync', { skip: fs.existsSync(executablePath) ? false : `${executablePath} is missing (apt-get install chromium)` }, async (t) => {
  fs.mkdirSync(shotsDir, { recursive: true });
  const site = await startSite(t, { volumes: 1, volumeSize: '32MiB' });
  const base = `http://${site.a.ready!.api}`;
  const token = site.a.token();

  const page0 = await fetch(`${base}/ui/`);
  assert.equal(page0.status, 200, 'the page is served without a token');
  assert.match(page0.headers.get('content-security-policy') ?? '', /script-src 'self'/);
  assert.doesNotMatch(await page0.text(), /<script>|https?:\/\//, 'no inline script and nothing from elsewhere');
  assert.equal((await fetch(`${base}/ui/..%2f..%2fpackage.json`)).status, 404, 'only the built files are served');
  assert.equal((await fetch(`${base}/v1/pairs`)).status, 401, 'the data still needs the token');

  const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  const urls: string[] = [];
  page.on('request', (request) => urls.push(request.url()));
  const pageErrors: string[] = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  page.on('console', (message) => {
    if (/Content.Security.Policy/i.test(message.text())) pageErrors.push(message.text());
  });
  await page.goto(`${base}/ui`);
  await page.getByTestId('token-input').fill('not-the-token');
  await page.getByTestId('token-submit').click();
  await waitFor('the form back with UNAUTHORIZED after a wrong token', async () => (await text(page, 'token-error')).startsWith('UNAUTHORIZED:'), 10_000, 200);
  // A monitor token watches; its Split is refused with the API's code.
  const made = await site.a.cliAsync(['token', 'create', '--role', 'monitor', '--name', 'dashboard', '--json']);
  assert.equal(made.code, 0, `token create: ${made.stderr}`);
  await page.getByTestId('token-input').fill((JSON.parse(made.stdout) as { token: string }).token);
  await page.getByTestId('token-submit').click();
  await waitFor('the pair shown as PAIR with a monitor token', async () => (await text(page, 'pair-status')) === 'PAIR', 20_000, 200);
  await page.getByTestId(`action-split-${group}`).click();
  await page.getByTestId('confirm-run').click();
  await waitFor('FORBIDDEN shown for a split with a monitor token', async () => (await text(page, `action-result-${group}`)).includes('failed: FORBIDDEN:'), 10_000, 200);
  await shot(page, 'monitor-forbidden');
  await page.getByTestId('forget-token').click();
  await page.getByTestId('token-input').fill(token);
  await page.getByTestId('token-submit').click();
  await waitFor('the pair shown as PAIR on the page', async () => (await text(page, 'pair-status')) === 'PAIR', 20_000, 200);
  await waitFor('the event stream live on the page', async () => (await text(page, 'stream-state')) === 'events live', 10_000, 200);
  await shot(page, 'pair');
  await page.reload();
  await waitFor('PAIR again after a reload, the token kept for the tab', async () => (await text(page, 'pair-status')) === 'PAIR', 10_000, 200);

  // A link slower than the host's writes: the journal holds what is not sent yet.
  site.proxy.setMode('bandwidth', { bytesPerSecond: 2_000_000 });
  const fio = await runAsync('fio', ['--name=load', '--ioengine=nbd', `--uri=${site.a.uri('pvol0')}`, '--rw=write', '--bs=1M', '--iodepth=4', '--size=24M', '--output=/dev/null'], { timeoutMs: 30_000 });
  assert.equal(fio.code, 0, `fio: ${fio.stderr}`);
  await waitFor('lag bytes above 4 MiB on the page under load', async () => (await attribute(page, 'pair-lag-bytes', 'data-value')) > 4 * mib, 10_000, 200);
  await waitFor('the lag chart rising above 4 MiB', async () => (await attribute(page, 'chart-lag-bytes', 'data-max')) > 4 * mib, 10_000, 200);
  await waitFor('host write throughput in the chart (from /v1/history)', async () => (await attribute(page, 'chart-throughput', 'data-max')) > 0, 15_000, 200);
  await shot(page, 'lag');
  site.proxy.setMode('pass');
  await waitFor('lag bytes back to 0 on the page', async () => (await attribute(page, 'pair-lag-bytes', 'data-value')) === 0, 20_000, 200);

  await page.getByTestId(`action-split-${group}`).click();
  const cli = await text(page, 'confirm-cli');
  assert.equal(cli, `twinstore --api ${base} pair split --group ${group}`, 'the confirm dialog shows the CLI line');
  await shot(page, 'split-confirm');
  await page.getByTestId('confirm-run').click();
  await waitFor('PSUS on the page after split', async () => (await text(page, 'pair-status')) === 'PSUS', 10_000, 200);
  await shot(page, 'split');

  // Writes while split, copied by the resync through a slow link: the page shows COPY.
  const dirty = await runAsync('fio', ['--name=dirty', '--ioengine=nbd', `--uri=${site.a.uri('pvol0')}`, '--rw=write', '--bs=1M', '--iodepth=4', '--size=16M', '--output=/dev/null'], { timeoutMs: 30_000 });
  assert.equal(dirty.code, 0, `fio: ${dirty.stderr}`);
  site.proxy.setMode('bandwidth', { bytesPerSecond: 2_000_000 });
  await page.getByTestId(`action-resync-${group}`).click();
  assert.equal(await text(page, 'confirm-cli'), `twinstore --api ${base} pair resync --group ${group}`);
  await page.getByTestId('confirm-run').click();
  let copy = '';
  await waitFor('COPY on the page during the resync', async () => {
    const seen = `${await text(page, 'pair-status')} ${await text(page, 'pair-copy')}`;
    if (seen !== copy) console.log(`page: ${(copy = seen)}`);
    return seen.startsWith('COPY ');
  }, 15_000, 100);
  await shot(page, 'copy');
  assert.match(await text(page, 'pair-consistency'), /^none/, 'no consistency point is shown while the S-VOL is mid-copy');
  site.proxy.setMode('pass');
  await waitFor('PAIR on the page after resync', async () => (await text(page, 'pair-status')) === 'PAIR', 20_000, 200);
  assert.match(await text(page, 'pair-consistency'), /^seq \d+/, 'a consistency point again in PAIR');
  await shot(page, 'resync');

  assert.deepEqual(pageErrors, [], 'no script error and no CSP violation on the page');
  assert.ok(urls.length > 0 && urls.every((url) => !url.includes(token)), 'the token is never in a URL');
  assert.ok(urls.every((url) => url.startsWith(base)), `nothing fetched from elsewhere: ${urls.filter((u) => !u.startsWith(base)).join(' ')}`);
});
