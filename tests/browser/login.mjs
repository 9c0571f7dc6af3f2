// The pages behind access control in Debian's headless Chromium, driven by
// playwright-core: without credentials a page anonymous clients may not see
// is the 401 login challenge; a browser that answers it (as a person types
// a name and password into the prompt) sees what that user may, and its
// scripts' fetches (the live logs) carry the login too. The menu of every
// viewer links to the pages it may open and to no other, and an anonymous
// one's to /login, where a person logs in. tests/web_browser.rs
// starts flakeforge with an htpasswd file and a policy and runs:
//   node login.mjs BASE_URL BUILD_ID PULLER:PASSWORD ADMIN:PASSWORD BUILDER:PASSWORD
// where anonymous clients and the puller may pull hello alone, the builder
// may build hello (not an admin), and BUILD_ID is a build of hello.
// Every check prints "ok - ..."; the first that fails ends the run non-zero.
import { chromium } from 'playwright-core';

const [base, buildId, puller, admin, builder] = process.argv.slice(2);
if (!builder) throw new Error('usage: node login.mjs BASE_URL BUILD_ID PULLER:PASSWORD ADMIN:PASSWORD BUILDER:PASSWORD');
const credentials = login => {
  const [username, password] = login.split(':');
  return { username, password };
};

// playwright's launch gives the browser a fresh profile of its own.
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

async function check(name, run) {
  await run();
  console.log(`ok - ${name}`);
}

async function pageAs(login) {
  const context = await browser.newContext(login ? { httpCredentials: credentials(login) } : {});
  const page = await context.newPage();
  page.setDefaultTimeout(60_000);
  return page;
}

const images = page => page.locator('#catalog tr[data-image]').evaluateAll(rows => rows.map(r => r.dataset.image));

// A viewer logs in as a person does: the menu's "Log in" (/login) gets the
// challenge, the browser answers it and lands on the catalog.
async function logIn(login) {
  const page = await pageAs(login);
  const response = await page.goto(`${base}/login`);
  assert(response.status() === 200 && page.url() === `${base}/`, `logging in ends at ${page.url()}: ${response.status()}`);
  return page;
}

// The menu of the page shown is `labels`, and each of its section links
// opens (200, never a 401 or 403) for the viewer that sees it ("Log in" is
// the challenge: see logIn).
async function menuIs(page, labels) {
  const links = await page.locator('header nav a').evaluateAll(as => as.map(a => [a.textContent, a.getAttribute('href')]));
  const shown = links.map(([label]) => label);
  assert(JSON.stringify(shown) === JSON.stringify(labels), `the menu shows ${JSON.stringify(shown)}, not ${JSON.stringify(labels)}`);
  for (const [label, href] of links.filter(([, href]) => href !== '/login')) {
    const status = (await page.goto(`${base}${href}`)).status();
    assert(status === 200, `the menu's ${label} (${href}): ${status}`);
  }
}

try {
  await check('without a login a page anonymous clients may not see is the challenge browsers answer', async () => {
    // Headless, nobody is there to answer the prompt: the navigation ends
    // in an error once the 401 with its challenge has come.
    const page = await pageAs(null);
    const responses = [];
    page.on('response', response => responses.push(response));
    for (const path of ['/login', '/builds', '/cache', `/builds/${buildId}`]) {
      await page.goto(`${base}${path}`).catch(() => null);
      const response = responses.find(r => r.url() === `${base}${path}`);
      assert(response, `${path}: no response`);
      assert(response.status() === 401, `${path}: ${response.status()}`);
      assert(response.headers()['www-authenticate'] === 'Basic realm="flakeforge"', `${path}: no Basic challenge`);
    }
  });

  await check('an anonymous viewer, who may pull but build nothing, has no menu link to the builds or the cache', async () => {
    const page = await pageAs(null);
    const response = await page.goto(`${base}/`);
    assert(response.status() === 200, `the catalog: ${response.status()}`);
    const names = await images(page);
    assert(JSON.stringify(names) === '["hello"]', `the catalog lists ${names}`);
    await menuIs(page, ['Images', 'Log in']);
  });

  await check('a wrong password is asked again', async () => {
    const page = await pageAs(`${puller.split(':')[0]}:wrong`);
    const response = await page.goto(`${base}/login`);
    assert(response.status() === 401, `logging in: ${response.status()}`);
    assert((await page.textContent('main')).includes('wrong user name or password'), 'the page says why');
  });

  await check('a user who may pull hello alone sees hello alone, and not the cache', async () => {
    const page = await logIn(puller);
    const names = await images(page);
    assert(JSON.stringify(names) === '["hello"]', `the catalog lists ${names}`);
    assert((await page.goto(`${base}/images/hello:latest`)).status() === 200, 'the page of hello');
    assert((await page.goto(`${base}/images/world:latest`)).status() === 403, 'the page of world');
    assert((await page.goto(`${base}/cache`)).status() === 403, 'the cache');
    assert((await page.goto(`${base}/builds`)).status() === 403, 'the builds');
    // A refusal's page has the viewer's menu too.
    await menuIs(page, ['Images']);
  });

  await check('a user who may build hello sees its builds in the menu, not the cache', async () => {
    const page = await logIn(builder);
    await menuIs(page, ['Images', 'Builds']);
    assert((await page.goto(`${base}/builds/${buildId}`)).status() === 200, 'the build of hello');
    assert((await page.goto(`${base}/cache`)).status() === 403, 'the cache');
  });

  await check('an admin sees every image, a build with its log, and the cache', async () => {
    const page = await logIn(admin);
    const names = await images(page);
    assert(['hello', 'world', 'broken', 'ticker'].every(n => names.includes(n)), `the catalog lists ${names}`);
    assert((await page.goto(`${base}/builds/${buildId}`)).status() === 200, 'the build page');
    assert((await page.locator('#state').textContent()) === 'succeeded', 'the build is not shown');
    // What the live log does: a fetch from the page's script, with the login the browser holds.
    const log = await page.evaluate(async id => {
      const response = await fetch(`/-/builds/${id}/log`);
      return [response.status, await response.text()];
    }, buildId);
    assert(log[0] === 200 && log[1].length > 0, `the log fetched by the page: ${log[0]}`);
    assert((await page.goto(`${base}/cache`)).status() === 200, 'the cache');
    await menuIs(page, ['Images', 'Builds', 'Cache']);
  });
} finally {
  await browser.close();
}
