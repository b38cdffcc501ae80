// Browser test of the tenant dashboard (/app) against a real agentry server,
// driving Debian's Chromium through playwright-core. tests/api/dashboard.rs
// starts the server, makes the tenant and its member, and runs this with:
//
//   BASE_URL                         the server (instance A)
//   SECOND_BASE_URL                  optional: instance B on the same database and Redis
//   OWNER_EMAIL, OWNER_PASSWORD      the new tenant's owner
//   MEMBER_EMAIL, MEMBER_PASSWORD    a member of that tenant (read-only configuration)
//   AGENTRY_SCREENSHOTS              where the screenshots go (default test-results/screenshots)
//   CHROMIUM_PATH                    overrides /usr/bin/chromium

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE = (process.env.BASE_URL || '').replace(/\/+$/, '');
const SECOND = (process.env.SECOND_BASE_URL || '').replace(/\/+$/, '');
const OWNER = { email: process.env.OWNER_EMAIL, password: process.env.OWNER_PASSWORD };
const MEMBER = { email: process.env.MEMBER_EMAIL, password: process.env.MEMBER_PASSWORD };
const SHOTS = path.resolve(process.env.AGENTRY_SCREENSHOTS || 'test-results/screenshots');
const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const WAIT = 60_000;
const skip = BASE && OWNER.email ? {} : { skip: 'needs BASE_URL, OWNER_EMAIL … (run it through tests/api/dashboard.rs)' };

// Responses the test provokes on purpose, which Chromium reports on the console
// (429: the production rate limits are on, and the dashboard retries reads).
const EXPECTED_CONSOLE = [/Failed to load resource: the server responded with a status of (400|401|403|404|409|422|429)/];

let browser;
let context;
let host;
const state = {};
const apiRequests = [];
const watched = [];

/** The page of another origin that embeds the widget: /?key=pk_… */
function startHostSite() {
  const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://host.invalid');
    if (url.pathname !== '/') {
      res.writeHead(404, { 'content-type': 'text/plain' });
      return res.end('not found');
    }
    const api = url.searchParams.get('api') || BASE;
    res.writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': `default-src 'self'; script-src ${api}; connect-src ${api}; style-src 'self'; object-src 'none'; base-uri 'none'`,
    });
    res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Dockside Bikes</title></head>
<body><h1>Dockside Bikes</h1><p>Bike repairs by the harbour.</p>
<script src="${escape(api)}/widget.js" data-public-key="${escape(url.searchParams.get('key') || '')}" async></script>
</body></html>`);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({ server, origin: `http://127.0.0.1:${server.address().port}` }));
  });
}

before(async () => {
  if (skip.skip) return;
  await mkdir(SHOTS, { recursive: true });
  host = await startHostSite();
  browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  for (const origin of [BASE, SECOND].filter(Boolean)) {
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
  }
  await context.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.effectiveDirective} blocked ${e.blockedURI || '(inline)'}`), true);
  });
});

after(async () => {
  if (browser) await browser.close();
  if (host) host.server.close();
  if (apiRequests.length) {
    // The `standard` tier counts per tenant and minute: the busiest minute of this session.
    const times = apiRequests.map((r) => r.at).sort((a, b) => a - b);
    let peak = 0;
    for (let i = 0, j = 0; i < times.length; i++) {
      while (times[i] - times[j] > 60_000) j++;
      peak = Math.max(peak, i - j + 1);
    }
    const limited = apiRequests.filter((r) => r.status === 429).length;
    const seconds = ((times.at(-1) - times[0]) / 1000).toFixed(0);
    console.log(`# dashboard API requests: ${times.length} in ${seconds} s, busiest minute ${peak}, answered 429: ${limited}`);
    for (const r of apiRequests.filter((r) => r.status === 429)) {
      console.log(`#   429 at +${((r.at - times[0]) / 1000).toFixed(1)} s: ${r.method} ${r.path}`);
    }
  }
});

/** A tab whose console, errors and API requests are recorded. */
async function watchedPage() {
  const page = await context.newPage();
  const watch = { page, console: [], errors: [] };
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') watch.console.push(msg.text());
  });
  page.on('pageerror', (error) => watch.errors.push(String(error)));
  page.on('response', (response) => {
    const url = new URL(response.url());
    if (url.pathname.startsWith('/api/v1/') && [BASE, SECOND].includes(url.origin)) {
      apiRequests.push({ at: Date.now(), status: response.status(), method: response.request().method(), path: url.pathname });
    }
  });
  watched.push(watch);
  return watch;
}

async function assertClean(watch) {
  const csp = await watch.page.evaluate(() => window.__csp.splice(0)).catch(() => []);
  assert.deepEqual(csp, [], 'no CSP violations');
  assert.deepEqual(watch.errors, [], 'no uncaught errors');
  const noise = watch.console.filter((line) => !EXPECTED_CONSOLE.some((re) => re.test(line)));
  assert.deepEqual(noise, [], 'no unexpected console output');
  const styled = await watch.page.evaluate(() => [...document.querySelectorAll('[style]:not([style=""]), style')].map((e) => e.outerHTML.slice(0, 120)));
  assert.deepEqual(styled, [], 'no inline style in the dashboard');
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

async function signIn(page, base, who) {
  await page.goto(`${base}/app`);
  const form = page.locator('form.signin');
  await form.waitFor({ timeout: WAIT });
  await form.locator('input[name=email]').fill(who.email);
  await form.locator('input[name=password]').fill(who.password);
  await form.locator('button[type=submit]').click();
  await page.locator('#top').waitFor({ state: 'visible', timeout: WAIT });
}

async function go(page, hash) {
  await page.evaluate((h) => { location.hash = h; }, hash);
  await page.locator('p.loading').waitFor({ state: 'detached', timeout: WAIT });
}

/** The visible error banner's text. */
async function shownError(page, scope = page) {
  const box = scope.locator('.error:not([hidden])').first();
  await box.waitFor({ timeout: WAIT });
  return box.textContent();
}

/** The API as the test itself calls it, with the page's token. */
async function apiFromPage(page, method, pathname) {
  return page.evaluate(async ([method, p]) => {
    for (let attempt = 0; ; attempt++) {
      const response = await fetch('/api/v1' + p, { method, headers: { authorization: 'Bearer ' + sessionStorage.getItem('agentry-dashboard:token') } });
      if (response.status === 429 && attempt < 5) {
        await new Promise((r) => setTimeout(r, 1000 * (Number(response.headers.get('retry-after')) || 1) + 500 * attempt));
        continue;
      }
      return { status: response.status, body: response.status === 204 ? null : await response.json() };
    }
  }, [method, pathname]);
}

// ---- the widget on the host page (its markup is web/widget.js's)

function widgetText(page) {
  return page.evaluate(() => [...document.querySelector('agentry-widget').shadowRoot.querySelectorAll('.msg')]
    .map((m) => ({ role: m.getAttribute('data-role'), state: m.getAttribute('data-state'), text: m.querySelector('.bubble').textContent })));
}

async function visitorSays(page, text, { expectReply = true } = {}) {
  const before = (await widgetText(page)).filter((m) => m.role === 'assistant').length;
  const input = page.locator('agentry-widget textarea');
  await input.fill(text);
  await input.press('Enter');
  if (!expectReply) return null;
  try {
    await page.waitForFunction((n) => {
      const sr = document.querySelector('agentry-widget').shadowRoot;
      return sr.querySelectorAll('.msg[data-role="assistant"][data-state="done"]').length > n && !sr.querySelector('.msg[data-state="pending"]');
    }, before, { timeout: WAIT });
  } catch (error) {
    // For whoever reads a CI log: what the widget showed, and a picture of it.
    const log = await page.evaluate(() => document.querySelector('agentry-widget').shadowRoot.querySelector('.log').outerHTML).catch(() => '');
    console.log(`# no answer to ${JSON.stringify(text)} within ${WAIT} ms; the widget shows: ${log}`);
    await shot(page, `failed-visitor-${Date.now()}`).catch(() => {});
    throw error;
  }
  return (await widgetText(page)).filter((m) => m.role === 'assistant').at(-1).text;
}

// ---------------------------------------------------------------- tests

test('the owner signs in (after a wrong password is refused with the server\'s message)', { ...skip, timeout: 2 * WAIT }, async () => {
  const watch = await watchedPage();
  state.owner = watch;
  const { page } = watch;
  await page.goto(`${BASE}/app`);
  await shot(page, '00-sign-in');
  const form = page.locator('form.signin');
  // Empty: refused in the page, no request (it would count toward the lockout).
  const logins = () => apiRequests.filter((r) => r.path === '/api/v1/auth/login').length;
  await form.locator('button[type=submit]').click();
  assert.match(await shownError(page), /Enter your email and password/);
  assert.equal(logins(), 0);
  await form.locator('input[name=email]').fill(OWNER.email);
  await form.locator('input[name=password]').fill('not the password');
  await form.locator('button[type=submit]').click();
  const refused = await shownError(page);
  assert.match(refused, /incorrect/i, `the API's message is shown: ${refused}`);
  assert.match(refused, /invalid_credentials/, 'with its code');
  await signIn(page, BASE, OWNER);
  assert.equal(await page.locator('#who .role').textContent(), 'owner');
  assert.equal(await page.locator('#who .tenant').textContent(), 'Dockside Bikes & <Repairs>', 'the tenant name reads back exactly (escaped, not parsed)');
  assert.ok(await page.evaluate(() => sessionStorage.getItem('agentry-dashboard:token')), 'the token is in sessionStorage');
  await page.locator('h1', { hasText: 'Agents' }).waitFor();
  await shot(page, '01-agents-empty');
});

test('the owner creates an agent with a knowledge document, and a widget for another origin', { ...skip, timeout: 3 * WAIT }, async () => {
  const { page } = state.owner;
  const create = page.locator('form.create-agent');
  await create.locator('input[name=name]').fill('Harbour helper');
  await create.locator('textarea[name=system_prompt]').fill('You help visitors of Dockside Bikes.');
  await create.locator('button[type=submit]').click();
  await page.waitForURL(/#\/agents\/[0-9a-f-]{36}$/, { timeout: WAIT });
  state.agentId = page.url().split('/').at(-1);
  await page.locator('h1', { hasText: 'Harbour helper' }).waitFor();

  // Prompt, profile and a directive, saved and read back after a reload.
  const settings = page.locator('form.agent-settings');
  await settings.locator('input[name=brand]').fill('Dockside Bikes');
  await settings.locator('textarea[name=facts]').fill('Repairs usually take two days.\nWe sell no e-bikes.');
  await settings.locator('textarea[name=competitors]').fill('Spoke City');
  // Directives are on by default: one off, one in the tenant's own words.
  assert.equal(await settings.locator('input[name="directive-no_trade_in_values"]').isChecked(), true);
  await settings.locator('input[name="directive-no_trade_in_values"]').uncheck();
  await settings.locator('input[name="wording-competitor_deflection"]').fill('Ask us about our own bikes instead.');
  await settings.locator('button[type=submit]').click();
  await settings.locator('.saved', { hasText: 'Saved' }).waitFor({ timeout: WAIT });
  const stored = await apiFromPage(page, 'GET', `/agents/${state.agentId}`);
  assert.equal(stored.body.profile.directives.no_trade_in_values, false);
  assert.deepEqual(stored.body.profile.directives.competitor_deflection, { enabled: true, wording: 'Ask us about our own bikes instead.' });
  assert.deepEqual(stored.body.profile.facts, ['Repairs usually take two days.', 'We sell no e-bikes.']);
  await page.reload();
  await page.locator('form.agent-settings').waitFor({ timeout: WAIT });
  assert.equal(await page.locator('form.agent-settings input[name=brand]').inputValue(), 'Dockside Bikes');
  assert.equal(await page.locator('input[name="directive-no_trade_in_values"]').isChecked(), false);
  assert.equal(await page.locator('input[name="wording-competitor_deflection"]').inputValue(), 'Ask us about our own bikes instead.');

  // A knowledge document, ingested to ready.
  const details = page.locator('details.add');
  if (!(await details.evaluate((d) => d.open))) await details.locator('summary').click();
  const doc = page.locator('form.add-document');
  await doc.locator('input[name=title]').fill('Opening hours');
  await doc.locator('select[name=content_type]').selectOption('markdown');
  await doc.locator('textarea[name=content]').fill('# Opening hours\n\nDockside Bikes is open Monday to Saturday from 8 am to 6 pm. The workshop closes on Sunday.');
  await doc.locator('button[type=submit]').click();
  await page.locator('tr[data-status="ready"]', { hasText: 'Opening hours' }).waitFor({ timeout: WAIT });

  // A file: uploaded (multipart), then a document of the agent; and deleted again.
  await page.locator('form.upload-file input[type=file]').setInputFiles({
    name: 'returns-policy.md',
    mimeType: 'text/markdown',
    buffer: Buffer.from('# Returns\n\nUnused parts can be returned within 30 days with the receipt.\n'),
  });
  await page.locator('form.upload-file button[type=submit]').click();
  await page.locator('form.upload-file .uploaded', { hasText: 'returns-policy.md' }).waitFor({ timeout: WAIT });
  const fromFile = page.locator('tr[data-document-id]', { hasText: 'returns-policy' });
  await fromFile.waitFor({ timeout: WAIT });
  await page.locator('tr[data-status="ready"]', { hasText: 'returns-policy' }).waitFor({ timeout: WAIT });
  await fromFile.locator('button.danger').click();
  await page.locator('dialog.confirm button[value=ok]').click();
  await fromFile.waitFor({ state: 'detached', timeout: WAIT });
  assert.equal(await page.locator('tr[data-document-id]').count(), 1, 'the typed document stays');

  // Invalid input: the API's 422 message is shown.
  const widgetForm = page.locator('form.create-widget');
  await widgetForm.locator('textarea').fill('not an origin');
  await widgetForm.locator('button[type=submit]').click();
  const invalid = await shownError(page, page.locator('.widgets'));
  assert.match(invalid, /is not an origin/, `the API's message is shown: ${invalid}`);

  await widgetForm.locator('textarea').fill(host.origin);
  await widgetForm.locator('button[type=submit]').click();
  const widget = page.locator('.widget').first();
  await widget.waitFor({ timeout: WAIT });
  state.publicKey = await widget.getAttribute('data-public-key');
  assert.match(state.publicKey, /^pk_/);
  const snippet = await widget.locator('code.embed').textContent();
  assert.equal(snippet, `<script src="${BASE}/widget.js" data-public-key="${state.publicKey}" async></script>`);
  await widget.locator('button.copy').click();
  await widget.locator('.copied', { hasText: 'Copied' }).waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), snippet, 'the snippet is on the clipboard');
  assert.equal(await page.locator('.error:not([hidden])').count(), 0, 'the error went with the next success');
  await shot(page, '02-agent');
  await assertClean(state.owner);
});

test('a webhook endpoint\'s secret and an API token are shown once', { ...skip, timeout: 3 * WAIT }, async () => {
  const { page } = state.owner;
  await go(page, '#/webhooks');
  const form = page.locator('form.create-endpoint');
  await form.locator('input[name=url]').fill('http://127.0.0.1:9/hooks');
  await form.locator('input[name=description]').fill('CRM');
  await form.locator('button[type=submit]').click();
  const dialog = page.locator('dialog.secret');
  await dialog.waitFor({ timeout: WAIT });
  const secret = await dialog.locator('.secret-value').textContent();
  assert.match(secret, /^whsec_/);
  await shot(page, '03-webhook-secret-dialog');
  await dialog.locator('button[type=submit]').click();
  await dialog.waitFor({ state: 'detached' });
  await page.locator('tr[data-endpoint-id]').first().waitFor();
  const hasSecret = (value) => page.evaluate((v) => document.documentElement.outerHTML.includes(v), value);
  assert.equal(await hasSecret(secret), false, 'the secret left the page with its dialog');
  await page.reload();
  await page.locator('tr[data-endpoint-id]').first().waitFor({ timeout: WAIT });
  assert.equal(await hasSecret(secret), false, 'and is not shown after a reload');
  assert.match(await page.locator('tr[data-endpoint-id] code.masked').textContent(), /…|\*|whsec_/);

  // Rotate: a new secret, once.
  await page.locator('tr[data-endpoint-id] button.rotate').click();
  await page.locator('dialog.confirm button[value=ok]').click();
  await dialog.waitFor({ timeout: WAIT });
  const rotated = await dialog.locator('.secret-value').textContent();
  assert.match(rotated, /^whsec_/);
  assert.notEqual(rotated, secret);
  await dialog.locator('button[type=submit]').click();
  await dialog.waitFor({ state: 'detached' });
  assert.equal(await hasSecret(rotated), false);
  await page.locator('tr[data-endpoint-id] button.toggle', { hasText: 'Disable' }).click();
  await page.locator('tr[data-endpoint-id]', { hasText: 'disabled' }).waitFor({ timeout: WAIT });
  await page.locator('tr[data-endpoint-id] button.toggle', { hasText: 'Enable' }).click();
  await page.locator('tr[data-endpoint-id]', { hasText: 'enabled' }).waitFor({ timeout: WAIT });
  await shot(page, '04-webhooks');

  await go(page, '#/tokens');
  const tokenForm = page.locator('form.create-token');
  await tokenForm.locator('input[name=name]').fill('CRM sync');
  await tokenForm.locator('input[value="leads:read"]').check();
  await tokenForm.locator('button[type=submit]').click();
  await dialog.waitFor({ timeout: WAIT });
  const token = await dialog.locator('.secret-value').textContent();
  assert.ok(token.length > 20, 'a token is shown');
  await shot(page, '05-api-token-dialog');
  await dialog.locator('button[type=submit]').click();
  await dialog.waitFor({ state: 'detached' });
  await page.locator('tr[data-token-id][data-status="active"]').waitFor();
  assert.equal(await hasSecret(token), false, 'the token left the page with its dialog');
  await page.reload();
  await page.locator('tr[data-token-id]').waitFor({ timeout: WAIT });
  assert.equal(await hasSecret(token), false, 'and is not shown after a reload');
  await page.locator('tr[data-token-id] button.danger').click();
  await page.locator('dialog.confirm button[value=ok]').click();
  await page.locator('tr[data-token-id][data-status="revoked"]').waitFor({ timeout: WAIT });
  await shot(page, '06-api-tokens');
  await assertClean(state.owner);
});

test('a visitor chats through the widget on another origin; the dashboard shows the conversation and the lead', { ...skip, timeout: 4 * WAIT }, async () => {
  const visitor = await watchedPage();
  state.visitor = visitor;
  const { page } = visitor;
  await page.goto(`${host.origin}/?key=${encodeURIComponent(state.publicKey)}`);
  await page.locator('agentry-widget').waitFor({ state: 'attached', timeout: WAIT });
  const launcher = page.locator('agentry-widget .launcher');
  await launcher.click();
  await page.locator('agentry-widget textarea').waitFor({ timeout: WAIT });
  const hours = await visitorSays(page, 'What are your opening hours?');
  assert.match(hours, /Monday|8 am/, `answered from the knowledge document: ${hours}`);
  const lead = await visitorSays(page, "Hi, I'm Lee Park: lee.park@example.com");
  assert.ok(lead.length > 0);
  await shot(page, '07-visitor-host-page');

  const owner = state.owner.page;
  await go(owner, '#/conversations');
  const row = owner.locator('tr[data-conversation-id]');
  await row.first().waitFor({ timeout: WAIT });
  assert.equal(await row.count(), 1);
  assert.match(await row.first().textContent(), /widget|web/);
  state.conversationId = await row.first().getAttribute('data-conversation-id');

  // Search finds it by a visitor's words, and not by words nobody said.
  await owner.locator('form.filters input[name=q]').fill('opening hours');
  await owner.locator('form.filters button[type=submit]').click();
  await owner.locator(`tr[data-conversation-id="${state.conversationId}"]`).waitFor();
  await owner.locator('form.filters input[name=q]').fill('zeppelin');
  await owner.locator('form.filters button[type=submit]').click();
  await owner.locator('p.empty', { hasText: 'No conversations match.' }).waitFor({ timeout: WAIT });
  await owner.locator('form.filters input[name=q]').fill('');
  // By agent, and by dates: from tomorrow on there is nothing.
  await owner.locator('form.filters select[name=agent_id]').selectOption(state.agentId);
  await owner.locator('form.filters button[type=submit]').click();
  await owner.locator(`tr[data-conversation-id="${state.conversationId}"]`).waitFor({ timeout: WAIT });
  const tomorrow = new Date(Date.now() + 86_400_000);
  const day = `${tomorrow.getFullYear()}-${String(tomorrow.getMonth() + 1).padStart(2, '0')}-${String(tomorrow.getDate()).padStart(2, '0')}`;
  await owner.locator('form.filters input[name=from]').fill(day);
  await owner.locator('form.filters button[type=submit]').click();
  await owner.locator('p.empty', { hasText: 'No conversations match.' }).waitFor({ timeout: WAIT });
  await owner.locator('form.filters input[name=from]').fill('');
  await owner.locator('form.filters button[type=submit]').click();
  await row.first().waitFor();
  await shot(owner, '08-conversations');

  await row.first().locator('a').first().click();
  const transcript = owner.locator('ol.transcript');
  await transcript.locator('li.msg').nth(3).waitFor({ timeout: WAIT });
  const messages = await transcript.locator('li.msg').evaluateAll((items) => items.map((li) => ({ role: li.dataset.role, text: li.querySelector('.text').textContent })));
  assert.deepEqual(messages.map((m) => m.role), ['visitor', 'assistant', 'visitor', 'assistant']);
  assert.equal(messages[0].text, 'What are your opening hours?');
  await shot(owner, '09-conversation');

  await go(owner, '#/leads');
  const leadRow = owner.locator('tr[data-lead-id]', { hasText: 'lee.park@example.com' });
  await leadRow.waitFor({ timeout: WAIT });
  assert.match(await leadRow.textContent(), /Lee Park/);
  await shot(owner, '10-leads');

  await go(owner, '#/webhooks');
  const delivery = owner.locator('tr[data-delivery-id]').first();
  try {
    await delivery.waitFor({ timeout: 10_000 });
    await delivery.locator('button').click();
    await delivery.locator('button', { hasText: 'Scheduled' }).waitFor({ timeout: WAIT });
    console.log('# redelivered the lead.created delivery');
  } catch {
    console.log('# no webhook delivery recorded within 10 s (dispatch off here?): redeliver not exercised');
  }
  await assertClean(visitor);
});

test('the LLM key is write-only; usage, phone and the other pages render', { ...skip, timeout: 3 * WAIT }, async () => {
  const { page } = state.owner;
  await go(page, '#/llm');
  const form = page.locator('form.llm');
  await form.locator('select[name=provider]').selectOption('openai');
  await form.locator('input[name=model]').fill('gpt-4o-mini');
  await form.locator('input[name=api_key]').fill('sk-test-never-shown-0123456789');
  await form.locator('button[type=submit]').click();
  await page.locator('p.llm-status', { hasText: 'API key set' }).waitFor({ timeout: WAIT });
  await page.reload();
  await page.locator('p.llm-status', { hasText: 'API key set' }).waitFor({ timeout: WAIT });
  assert.equal(await page.locator('form.llm input[name=api_key]').inputValue(), '');
  assert.equal(await page.evaluate(() => document.documentElement.outerHTML.includes('sk-test-never-shown')), false);
  await shot(page, '11-llm');
  // Back to the offline responder, for the chats that follow.
  await page.locator('form.llm button.danger').click();
  await page.locator('dialog.confirm button[value=ok]').click();
  await page.locator('p.llm-status', { hasText: 'No connection set' }).waitFor({ timeout: WAIT });

  await go(page, '#/usage');
  // The offline responder records no usage events: the page renders its totals.
  const turns = await page.locator('dd.turns').textContent();
  assert.match(turns, /^\d[\d,]*$/, `usage shows the turns: ${turns}`);
  await shot(page, '12-usage');
  await go(page, '#/phone');
  await page.locator('h2', { hasText: 'Twilio account' }).waitFor();
  const twilio = page.locator('form.twilio');
  await twilio.locator('input[name=account_sid]').fill('AC0123456789abcdef0123456789abcdef');
  await twilio.locator('input[name=auth_token]').fill('twilioAuthToken0123456789');
  await twilio.locator('button[type=submit]').click();
  await page.locator('p', { hasText: 'Account AC0123456789abcdef0123456789abcdef, changed' }).waitFor({ timeout: WAIT });
  assert.equal(await page.evaluate(() => document.documentElement.outerHTML.includes('twilioAuthToken0123456789')), false, 'the auth token is write-only');
  const number = page.locator('form.add-number');
  await number.locator('input[name=number]').fill('+14155550123');
  await number.locator('button[type=submit]').click();
  await page.locator('td', { hasText: '+14155550123' }).waitFor({ timeout: WAIT });
  await shot(page, '13-phone');
  await assertClean(state.owner);
});

test('a member reads configuration but cannot change it; the API\'s 403 is shown', { ...skip, timeout: 2 * WAIT }, async () => {
  const { page } = state.owner;
  await page.locator('#signout').click();
  await page.locator('form.signin').waitFor({ timeout: WAIT });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('agentry-dashboard:token')), null, 'signed out: the token is gone');

  const member = await watchedPage();
  state.member = member;
  await signIn(member.page, BASE, MEMBER);
  const m = member.page;
  assert.equal(await m.locator('#who .role').textContent(), 'member');
  await m.locator(`a[href="#/agents/${state.agentId}"]`).click();
  await m.locator('form.agent-settings').waitFor({ timeout: WAIT });
  assert.ok(await m.locator('p.readonly').isVisible(), 'the member is told why');
  assert.equal(await m.locator('form.agent-settings button[type=submit]').isDisabled(), true);
  assert.equal(await m.locator('form.agent-settings textarea[name=system_prompt]').isDisabled(), true);
  assert.equal(await m.locator('form.create-widget button[type=submit]').isDisabled(), true);
  await shot(m, '14-member-agent');
  // Past the disabled control, the API refuses, and its message is shown.
  await m.evaluate(() => {
    for (const el of document.querySelectorAll('form.agent-settings [disabled]')) el.disabled = false;
  });
  await m.locator('form.agent-settings textarea[name=system_prompt]').fill('Changed by a member');
  await m.locator('form.agent-settings button[type=submit]').click();
  const refused = await shownError(m);
  assert.match(refused, /your role can read but not change/, `the 403's message is shown: ${refused}`);
  assert.match(refused, /forbidden/);
  await shot(m, '15-member-refused');
  await assertClean(member);
});

test('live takeover: waiting notification, take over, reply, hand back (instances A and B when given)', { ...skip, timeout: 5 * WAIT }, async (t) => {
  const probe = await apiFromPage(state.member.page, 'GET', `/conversations/${state.conversationId}`);
  assert.equal(probe.status, 200);
  if (!('state' in (probe.body.conversation || probe.body))) {
    t.skip('this server has no takeover yet (conversations carry no `state`)');
    return;
  }
  // The team member's dashboard on instance B; the visitor's widget stays on A.
  const dashboardBase = SECOND || BASE;
  const teamWatch = dashboardBase === BASE ? state.member : await watchedPage();
  const team = teamWatch.page;
  if (dashboardBase !== BASE) await signIn(team, dashboardBase, MEMBER);
  await team.locator('#live[data-state="live"]').waitFor({ timeout: WAIT });

  const visitor = state.visitor.page;
  // When the widget (re)opens its live stream, for the latency line below.
  const widgetStreams = [];
  visitor.on('request', (r) => { if (new URL(r.url()).pathname === '/api/widget/events') widgetStreams.push(Date.now()); });
  const asked = Date.now();
  await visitorSays(visitor, 'Can I talk to a real person please?');
  const toast = team.locator('.toast.waiting a');
  await toast.waitFor({ timeout: WAIT });
  const notified = Date.now() - asked;
  assert.equal(await team.locator('#waiting-badge').textContent(), '1');
  await shot(team, '16-waiting-notification');
  await toast.click();
  await team.locator('button.take').click();
  const reply = team.locator('form.reply');
  await reply.waitFor({ state: 'visible', timeout: WAIT });

  const text = 'Hi, this is Sam from the workshop team.';
  await reply.locator('textarea').fill(text);
  const sent = Date.now();
  let replyStored = 0;
  const posted = team.waitForResponse((r) => r.request().method() === 'POST' && r.url().endsWith('/messages'))
    .then(() => { replyStored = Date.now() - sent; });
  await reply.locator('button[type=submit]').click();
  // Polled every 20 ms: the default (animation frames) is throttled on a
  // page that is not in front, which added most of a second to the figure.
  await visitor.waitForFunction((t) => [...document.querySelector('agentry-widget').shadowRoot.querySelectorAll('.msg')]
    .some((m) => m.textContent.includes(t)), text, { timeout: WAIT, polling: 20 });
  const toVisitor = Date.now() - sent;
  await posted;
  await shot(visitor, '18-visitor-sees-the-reply');
  await team.locator('li.msg.human', { hasText: text }).waitFor();

  const answer = 'Thanks Sam, can you fix a flat today?';
  const answered = Date.now();
  await visitorSays(visitor, answer, { expectReply: false });
  await team.locator('li.msg.visitor', { hasText: answer }).waitFor({ timeout: WAIT });
  const toTeam = Date.now() - answered;
  await shot(team, '17-taken-over');
  // The agent stays silent while a person has the conversation.
  await new Promise((r) => setTimeout(r, 3000));
  const during = await apiFromPage(team, 'GET', `/conversations/${state.conversationId}`);
  assert.equal(during.body.messages.at(-1).content, answer, 'no agent reply after the visitor\'s answer');

  await team.locator('button.handback').click();
  await team.locator('button.take').waitFor({ timeout: WAIT });
  const back = await visitorSays(visitor, 'What are your opening hours?');
  assert.ok(back.length > 0, 'the agent answers again');
  const stored = (await apiFromPage(team, 'GET', `/conversations/${state.conversationId}`)).body.messages;
  const ids = stored.map((m) => m.id);
  assert.equal(new Set(ids).size, ids.length, 'no message stored twice');
  assert.equal(stored.filter((m) => m.content === text).length, 1, 'the reply is stored once');
  assert.equal(stored.find((m) => m.content === text).human, true);
  const seqs = stored.map((m) => m.seq).filter((s) => s !== undefined);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'in order');
  console.log(`# takeover latency (${dashboardBase === BASE ? 'one instance' : 'visitor on A, dashboard on B'}): notification ${notified} ms, reply to visitor ${toVisitor} ms (its POST answered after ${replyStored} ms), visitor to dashboard ${toTeam} ms; the widget opened its live stream at ${widgetStreams.map((t) => `${t - sent} ms`).join(', ') || 'no time'} relative to the reply's send`);
  await assertClean(teamWatch);
});
