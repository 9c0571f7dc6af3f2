// The operator's pages in Debian's headless Chromium, driven by
// playwright-core. tests/web_browser.rs starts flakeforge, builds what the
// pages show, and runs: node web.mjs BASE_URL SCREENSHOT_DIR TICKER_BUILD BROKEN_BUILD
// (TICKER_BUILD is running when this starts; its log grows a line a second).
// Every check prints "ok - ..."; the first that fails ends the run non-zero.
import { chromium } from 'playwright-core';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [base, shots, tickerId, brokenId] = process.argv.slice(2);
if (!brokenId) throw new Error('usage: node web.mjs BASE_URL SCREENSHOT_DIR TICKER_BUILD BROKEN_BUILD');
mkdirSync(shots, { recursive: true });
const host = new URL(base).host;

const userDataDir = mkdtempSync(join(tmpdir(), 'flakeforge-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
  viewport: { width: 1280, height: 900 },
});
const elsewhere = [];
context.on('request', request => {
  if (!request.url().startsWith(base) && !request.url().startsWith('data:')) elsewhere.push(request.url());
});

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

async function check(name, run) {
  await run();
  console.log(`ok - ${name}`);
}

const ticks = text => Math.max(0, ...[...text.matchAll(/tick (\d+)/g)].map(m => Number(m[1])));

try {
  const page = await context.newPage();
  page.setDefaultTimeout(60_000);

  await check('a running build\'s log grows on its page without a reload', async () => {
    await page.goto(`${base}/builds/${tickerId}`);
    assert(await page.locator('#state').textContent() === 'running', 'the ticker build is not running');
    const first = ticks(await page.locator('#log').textContent());
    await page.evaluate(() => { window.sameDocument = true; });
    await page.waitForFunction(
      n => [...document.getElementById('log').textContent.matchAll(/tick (\d+)/g)].some(m => Number(m[1]) >= n),
      first + 3);
    assert(await page.evaluate(() => window.sameDocument === true), 'the page was reloaded');
    await page.screenshot({ path: join(shots, 'build-live.png'), fullPage: true });
  });

  const list = await context.newPage();
  list.setDefaultTimeout(60_000);
  await check('the list of builds tails the running build\'s log live', async () => {
    await list.goto(`${base}/builds`);
    const tail = list.locator(`#running [data-build="${tickerId}"] pre`);
    const first = ticks(await tail.textContent());
    await list.waitForFunction(
      ([id, n]) => [...document.querySelector(`#running [data-build="${id}"] pre`).textContent.matchAll(/tick (\d+)/g)]
        .some(m => Number(m[1]) >= n),
      [tickerId, first + 2]);
    const lines = (await tail.textContent()).trim().split('\n').length;
    assert(lines <= 10, `the tail shows ${lines} lines, not the last 10`);
    await list.screenshot({ path: join(shots, 'builds.png'), fullPage: true });
  });

  await check('the catalog lists the images with tags, systems, size and last build', async () => {
    await list.goto(`${base}/`);
    for (const name of ['hello', 'world', 'broken', 'ticker']) {
      assert(await list.locator(`#catalog tr[data-image="${name}"]`).count() === 1, `no row for ${name}`);
    }
    const hello = list.locator('#catalog tr[data-image="hello"]');
    const text = await hello.textContent();
    assert(text.includes('latest') && text.includes('linux/') && /\d (B|KiB|MiB)/.test(text) && text.includes('succeeded'),
      `the hello row says: ${text}`);
    assert((await list.locator('#catalog tr[data-image="broken"]').textContent()).includes('failed'), 'broken is not failed');
    await list.screenshot({ path: join(shots, 'catalog.png'), fullPage: true });
  });

  await check('an image page has the pull lines, config and a chart of its layers', async () => {
    await list.locator('#catalog tr[data-image="hello"] td a').first().click();
    await list.waitForURL(`${base}/images/hello:latest`);
    assert(await list.inputValue('#pull-docker') === `docker pull ${host}/hello:latest`, 'the docker pull line');
    assert(await list.inputValue('#pull-podman') === `podman pull --tls-verify=false ${host}/hello:latest`, 'the podman pull line');
    const bars = await list.locator('svg.layers rect').count();
    const rows = await list.locator('table.layers tbody tr').count();
    assert(bars >= 2 && bars === rows, `${bars} bars for ${rows} layers`);
    const widths = await list.locator('svg.layers rect').evaluateAll(rects => rects.map(r => parseFloat(r.getAttribute('width'))));
    assert(Math.max(...widths) > Math.min(...widths), `the bars do not differ in length: ${widths}`);
    const shared = list.locator('svg.layers g[data-shared="true"]');
    assert(await shared.count() >= 1, 'no layer is marked shared (busybox is in world too)');
    assert((await shared.first().textContent()).includes('busybox'), 'the shared layer is not busybox');
    assert((await list.locator('table.layers').textContent()).includes('world:latest'), 'the table does not name world');
    assert((await list.locator('dd[data-key="Cmd"]').textContent()).includes('hello'), 'Cmd is not shown');
    await list.locator('button[data-copy="pull-docker"]').click();
    assert(await list.locator('button[data-copy="pull-docker"]').textContent() === 'Copied', 'the copy button');
    await list.screenshot({ path: join(shots, 'image.png'), fullPage: true });
    await list.setViewportSize({ width: 390, height: 844 });
    const overflow = await list.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(overflow <= 1, `the page is ${overflow} px wider than a phone`);
    await list.screenshot({ path: join(shots, 'image-phone.png'), fullPage: true });
    await list.setViewportSize({ width: 1280, height: 900 });
  });

  await check('a failed build\'s log is one click from the list of builds', async () => {
    await list.goto(`${base}/builds`);
    const card = list.locator(`#failed [data-build="${brokenId}"]`);
    assert((await card.locator('pre').textContent()).includes('flakeforge-test-build-failure'), 'the failure is not in the tail');
    await card.locator('a', { hasText: 'log' }).click();
    await list.waitForURL(`${base}/builds/${brokenId}`);
    assert(await list.locator('#state').textContent() === 'failed', 'the build is not failed');
    assert((await list.locator('#error').textContent()).includes('broken'), 'no error line');
    assert((await list.locator('#log').textContent()).includes('flakeforge-test-build-failure'), 'the log lacks the failure');
    assert(await list.locator('#log[data-follow]').count() === 0, 'a finished log is followed');
    await list.screenshot({ path: join(shots, 'build-failed.png'), fullPage: true });
  });

  await check('the cache page shows use, hit ratio and the largest blobs', async () => {
    await list.goto(`${base}/cache`);
    assert((await list.locator('#used').textContent()).includes('of 10.0 GiB'), 'the limit');
    assert(/\d+(\.\d)? %/.test(await list.locator('#hits').textContent()), 'the hit ratio');
    assert(await list.locator('#largest tbody tr').count() >= 2, 'the largest blobs');
    await list.screenshot({ path: join(shots, 'cache.png'), fullPage: true });
  });

  await check('a build\'s page shows its end once the log ends', async () => {
    await page.waitForFunction(() => document.getElementById('state')?.textContent === 'succeeded', null,
      { timeout: 180_000 });
    assert(ticks(await page.locator('#log').textContent()) >= 3, 'the reloaded log');
    await page.screenshot({ path: join(shots, 'build-done.png'), fullPage: true });
  });

  await check('nothing was fetched from elsewhere', async () => {
    assert(elsewhere.length === 0, `requests elsewhere: ${elsewhere.join(', ')}`);
  });
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
