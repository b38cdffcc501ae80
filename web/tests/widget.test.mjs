// Browser test of the chat widget, driving Debian's Chromium through playwright-core.
//
//   npm test                                   against tests/fake-server.mjs (the contract, in Node)
//   BASE_URL=http://127.0.0.1:8080 npm test    against a running agentry server: only the
//                                              demo-page conversation test runs
//
// CHROMIUM_PATH overrides /usr/bin/chromium.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startFakeServer, startHostSite, replyFor, DEMO_TENANT_NAME, MAX_TEXT_CHARS } from './fake-server.mjs';

const BASE_URL = (process.env.BASE_URL || '').replace(/\/+$/, '');
const FAKE = !BASE_URL;
const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const WAIT_MS = FAKE ? 15_000 : 60_000;
const fakeOnly = FAKE ? {} : { skip: 'needs the fake server (BASE_URL is set)' };

const GENERIC_ERROR = 'Sorry, something went wrong. Please try again.';

let fake;
let base;
let context;
let userDataDir;

before(async () => {
  if (FAKE) {
    fake = await startFakeServer();
    base = fake.url;
  } else {
    base = BASE_URL;
  }
  userDataDir = await mkdtemp(path.join(os.tmpdir(), 'agentry-widget-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1280, height: 800 },
  });
  // Runs before any page script, in every document (CDP-injected, so the page CSP does not apply).
  await context.addInitScript(() => {
    window.__awTest = { csp: [], globals: Object.getOwnPropertyNames(window) };
    document.addEventListener(
      'securitypolicyviolation',
      (e) => window.__awTest.csp.push(`${e.effectiveDirective} blocked ${e.blockedURI || '(inline)'} ${e.sample || ''}`),
      true,
    );
  });
});

after(async () => {
  if (context) await context.close();
  if (fake) await fake.close();
  if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
});

// ------------------------------------------------------------------ helpers

/** A new tab (so a fresh sessionStorage) whose console, errors, requests and CSP reports are recorded. */
async function newWatchedPage() {
  const page = await context.newPage();
  const watch = { console: [], pageErrors: [], requests: [], csp: [] };
  page.on('console', (msg) => {
    // The browser's own favicon probe is not the page's doing (the server may answer it 404).
    if (new URL(msg.location().url || 'about:blank').pathname === '/favicon.ico') return;
    watch.console.push(`${msg.type()}: ${msg.text()}`);
  });
  page.on('pageerror', (err) => watch.pageErrors.push(String(err)));
  page.on('request', (req) => watch.requests.push({ url: req.url(), method: req.method() }));
  return { page, watch };
}

async function collectCsp(page, watch) {
  const reports = await page.evaluate(() => (window.__awTest ? window.__awTest.csp.splice(0) : []));
  watch.csp.push(...reports);
}

/** Console must be silent, apart from the browser's own lines for responses a test provoked on purpose. */
async function assertCleanPage(page, watch, { allowConsole = [], origins }) {
  await collectCsp(page, watch);
  assert.deepEqual(watch.csp, [], 'no CSP violations');
  assert.deepEqual(watch.pageErrors, [], 'no uncaught errors');
  const noise = watch.console.filter((line) => !allowConsole.some((re) => re.test(line)));
  assert.deepEqual(noise, [], 'no console output');
  for (const { url } of watch.requests) {
    const origin = new URL(url).origin;
    assert.ok(origins.includes(origin), `request to an unexpected origin: ${url}`);
  }
  const styling = await page.evaluate(() => {
    const sr = document.querySelector('agentry-widget')?.shadowRoot;
    return {
      hostStyleElements: document.querySelectorAll('style').length,
      hostStyleAttributes: document.querySelectorAll('[style]').length,
      hostAdopted: document.adoptedStyleSheets.length,
      shadowStyleElements: sr ? sr.querySelectorAll('style, link').length : -1,
      shadowStyleAttributes: sr ? sr.querySelectorAll('[style]').length : -1,
      shadowAdopted: sr ? sr.adoptedStyleSheets.length : 0,
      newGlobals: Object.getOwnPropertyNames(window).filter((name) => !window.__awTest.globals.includes(name)),
    };
  });
  assert.equal(styling.hostStyleElements, 0, 'no <style> in the page');
  assert.equal(styling.hostStyleAttributes, 0, 'no style= in the page');
  assert.equal(styling.hostAdopted, 0, 'the widget adopts no sheet into the host document');
  assert.equal(styling.shadowStyleElements, 0, 'no <style>/<link> in the shadow root');
  assert.equal(styling.shadowStyleAttributes, 0, 'no style= in the shadow root');
  assert.ok(styling.shadowAdopted >= 1, 'styles come from adopted stylesheets');
  assert.deepEqual(styling.newGlobals.filter((name) => name !== '__awTest'), ['AgentryWidget'], 'the only global is AgentryWidget');
}

function ui(page) {
  const root = page.locator('agentry-widget');
  return {
    launcher: root.locator('.launcher'),
    panel: root.locator('.panel'),
    input: root.locator('textarea'),
    send: root.locator('button.send'),
    close: root.locator('button.close'),
    end: root.locator('button.end'),
    error: root.locator('.error'),
    title: root.locator('.title'),
  };
}

function transcript(page) {
  return page.evaluate(() =>
    [...document.querySelector('agentry-widget').shadowRoot.querySelectorAll('.msg')].map((node) => ({
      role: node.getAttribute('data-role'),
      state: node.getAttribute('data-state'),
      text: node.querySelector('.bubble').textContent,
    })),
  );
}

function shadowEval(page, fn, arg) {
  return page.evaluate(
    ([source, value]) => {
      const sr = document.querySelector('agentry-widget').shadowRoot;
      // eslint-disable-next-line no-new-func
      return new Function('sr', 'arg', `return (${source})(sr, arg);`)(sr, value);
    },
    [fn.toString(), arg],
  );
}

/** Waits until `count` finished assistant messages are shown and no turn is pending. */
async function waitForAssistant(page, count) {
  await page.waitForFunction(
    (n) => {
      const sr = document.querySelector('agentry-widget').shadowRoot;
      const done = sr.querySelectorAll('.msg[data-role="assistant"][data-state="done"]').length;
      return done >= n && !sr.querySelector('.msg[data-state="pending"]');
    },
    count,
    { timeout: WAIT_MS },
  );
}

/** Waits until the widget is idle: nothing pending and no "Connecting…" line. */
async function waitIdle(page) {
  await page.waitForFunction(
    () => {
      const sr = document.querySelector('agentry-widget').shadowRoot;
      return !sr.querySelector('.status') && !sr.querySelector('.msg[data-state="pending"]');
    },
    null,
    { timeout: WAIT_MS },
  );
}

async function openWidget(page) {
  const w = ui(page);
  await w.launcher.waitFor({ state: 'visible', timeout: WAIT_MS });
  await w.launcher.click();
  await w.panel.waitFor({ state: 'visible' });
  await waitIdle(page);
  return w;
}

async function send(page, text) {
  const w = ui(page);
  await w.input.fill(text);
  await w.input.press('Enter');
}

const DENIED_LOAD = (status) => new RegExp(`^error: Failed to load resource: the server responded with a status of ${status}`);

// ------------------------------------------------------------------ tests

test('a visitor chats on the demo page, and the conversation survives a reload', { timeout: 4 * WAIT_MS }, async () => {
  const { page, watch } = await newWatchedPage();
  const origin = new URL(base).origin;
  await page.goto(`${base}/demo`);

  const html = await page.content();
  assert.ok(!html.includes('{{'), 'every placeholder was replaced');
  if (FAKE) {
    assert.equal(await page.title(), `${DEMO_TENANT_NAME} · AI assistant demo`);
    assert.equal(fake.state.sessionsCreated, 0, 'no session before the chat is opened');
  }

  const w = ui(page);
  await w.launcher.waitFor({ state: 'visible', timeout: WAIT_MS });
  assert.equal(await w.launcher.getAttribute('aria-label'), 'Open chat');
  assert.equal(await w.launcher.getAttribute('aria-expanded'), 'false');
  const box = await w.launcher.boundingBox();
  assert.ok(box.x + box.width > 1280 - 100 && box.y + box.height > 800 - 100, 'launcher sits bottom-right');
  assert.equal(await w.panel.isVisible(), false);

  await w.launcher.click();
  await w.panel.waitFor({ state: 'visible' });
  assert.equal(await w.launcher.getAttribute('aria-expanded'), 'true');
  const a11y = await shadowEval(page, (sr) => ({
    focused: sr.activeElement && sr.activeElement.tagName,
    dialog: sr.querySelector('.panel').getAttribute('role'),
    labelledBy: sr.querySelector('.panel').getAttribute('aria-labelledby'),
    titleId: sr.querySelector('.title').id,
    logRole: sr.querySelector('.log').getAttribute('role'),
    live: sr.querySelector('.log').getAttribute('aria-live'),
    inputLabel: sr.querySelector('textarea').getAttribute('aria-label'),
    sendLabel: sr.querySelector('button.send').getAttribute('aria-label'),
    closeLabel: sr.querySelector('button.close').getAttribute('aria-label'),
  }));
  assert.deepEqual(a11y, {
    focused: 'TEXTAREA',
    dialog: 'dialog',
    labelledBy: a11y.titleId,
    titleId: a11y.titleId,
    logRole: 'log',
    live: 'polite',
    inputLabel: 'Your message',
    sendLabel: 'Send message',
    closeLabel: 'Close chat',
  });
  if (FAKE) assert.equal(await w.title.textContent(), DEMO_TENANT_NAME, 'the escaped tenant name reads back exactly');
  await waitIdle(page);
  if (FAKE) assert.equal(fake.state.sessionsCreated, 1, 'the session is created on first open');

  // Shift+Enter is a newline, not a send.
  await w.input.pressSequentially('line one');
  await w.input.press('Shift+Enter');
  await w.input.pressSequentially('line two');
  assert.equal(await w.input.inputValue(), 'line one\nline two');
  assert.equal((await transcript(page)).length, 0);
  await w.input.fill('');

  if (FAKE) {
    // Records the pending bubble's text as it grows, to see the deltas arrive one by one.
    await shadowEval(page, (sr) => {
      window.__awTest.partials = [];
      new MutationObserver(() => {
        const pending = sr.querySelector('.msg[data-state="pending"] .bubble');
        if (pending && pending.textContent && !pending.querySelector('.typing')) window.__awTest.partials.push(pending.textContent);
      }).observe(sr.querySelector('.log'), { subtree: true, childList: true, characterData: true });
    });
  }

  // Snapshots the widget the moment the turn starts (a microtask after the DOM change, so before
  // any answer can arrive, however fast the server is).
  await shadowEval(page, (sr) => {
    const observer = new MutationObserver(() => {
      if (window.__awTest.during || !sr.querySelector('.msg[data-state="pending"]')) return;
      window.__awTest.during = {
        sendDisabled: sr.querySelector('button.send').disabled,
        typing: !!sr.querySelector('.msg[data-state="pending"] .typing'),
        busy: sr.querySelector('.log').getAttribute('aria-busy'),
      };
      observer.disconnect();
    });
    observer.observe(sr, { subtree: true, childList: true, attributes: true });
  });
  const first = 'What are your opening hours?';
  await send(page, first);
  await page.waitForFunction(() => window.__awTest.during);
  const during = await page.evaluate(() => window.__awTest.during);
  assert.deepEqual(during, { sendDisabled: true, typing: true, busy: 'true' }, 'in flight: send disabled, typing shown');
  if (FAKE) {
    // Enter while in flight sends nothing (the fake server answers slowly enough to be sure).
    await w.input.fill('not yet');
    await w.input.press('Enter');
    assert.equal(await w.input.inputValue(), 'not yet');
    await w.input.fill('');
  }

  await waitForAssistant(page, 1);
  let shown = await transcript(page);
  assert.equal(shown.length, 2);
  assert.deepEqual(shown[0], { role: 'visitor', state: 'done', text: first });
  assert.equal(shown[1].role, 'assistant');
  assert.ok(shown[1].text.trim().length > 0, 'the assistant answered');
  if (FAKE) {
    assert.equal(shown[1].text, replyFor(first).content, 'deltas across split writes reassemble exactly');
    const partials = await page.evaluate(() => [...new Set(window.__awTest.partials)]);
    assert.ok(partials.length >= 3, `the reply streamed in pieces (${partials.length} steps)`);
    for (const partial of partials) assert.ok(replyFor(first).content.startsWith(partial), `partial "${partial}" is a prefix`);
    const post = fake.state.requests.find((r) => r.method === 'POST' && r.path === '/api/widget/messages');
    assert.equal(post.headers.accept, 'text/event-stream');
    assert.match(post.headers.authorization, /^Bearer agw_/);
    assert.equal(post.headers.cookie, undefined);
  }
  assert.equal(await w.error.isVisible(), false);

  const second = 'My email is visitor@example.com';
  await w.input.fill(second);
  assert.equal(await w.send.isDisabled(), false, 'send is enabled again after the turn');
  await w.input.press('Enter');
  await waitForAssistant(page, 2);
  shown = await transcript(page);
  assert.deepEqual(
    shown.map((m) => m.role),
    ['visitor', 'assistant', 'visitor', 'assistant'],
  );
  assert.equal(shown[2].text, second);
  if (FAKE) assert.equal(shown[3].text, 'Thanks! Someone from the team will write to you at visitor@example.com.');

  // Escape closes and focus returns to the launcher.
  await w.input.focus();
  await page.keyboard.press('Escape');
  await w.panel.waitFor({ state: 'hidden' });
  assert.equal(await w.launcher.getAttribute('aria-expanded'), 'false');
  assert.equal(await shadowEval(page, (sr) => sr.activeElement && sr.activeElement.className), 'launcher');

  // A reload keeps the session: the transcript comes back from the server.
  await collectCsp(page, watch);
  await page.reload();
  const w2 = await openWidget(page);
  await page.waitForFunction(
    (n) => document.querySelector('agentry-widget').shadowRoot.querySelectorAll('.msg').length >= n,
    4,
    { timeout: WAIT_MS },
  );
  const reloaded = await transcript(page);
  assert.deepEqual(
    reloaded.map((m) => [m.role, m.text]),
    shown.map((m) => [m.role, m.text]),
    'the same conversation after a reload',
  );
  if (FAKE) assert.equal(fake.state.sessionsCreated, 1, 'the stored token was reused');

  // The close button also hands focus back.
  await w2.close.click();
  await w2.panel.waitFor({ state: 'hidden' });
  assert.equal(await shadowEval(page, (sr) => sr.activeElement && sr.activeElement.className), 'launcher');

  await assertCleanPage(page, watch, { origins: [origin] });
  await page.close();
});

test('an expired or revoked session is replaced and the message retried once', { ...fakeOnly, timeout: 4 * WAIT_MS }, async () => {
  const { page, watch } = await newWatchedPage();
  const created = fake.state.sessionsCreated;
  await page.goto(`${base}/demo`);
  const w = await openWidget(page);
  await send(page, 'Hello there');
  await waitForAssistant(page, 1);
  const key = `agentry-widget:${fake.state.publicKey}`;
  const tokenBefore = await page.evaluate((k) => JSON.parse(sessionStorage.getItem(k)).token, key);

  fake.revokeAllSessions();
  await send(page, 'Still there?');
  await waitForAssistant(page, 2);
  assert.equal(fake.state.sessionsCreated, created + 2, 'one new session after the 401');
  const tokenAfter = await page.evaluate((k) => JSON.parse(sessionStorage.getItem(k)).token, key);
  assert.notEqual(tokenAfter, tokenBefore, 'the new token is stored');
  assert.equal(await w.error.isVisible(), false, 'the visitor saw no error');
  assert.equal((await transcript(page)).at(-1).text, 'You said: Still there?');

  // A reload shows the new session's transcript.
  await collectCsp(page, watch);
  await page.reload();
  await openWidget(page);
  assert.deepEqual((await transcript(page)).map((m) => m.text), ['Still there?', 'You said: Still there?']);

  // A revoked token found at load time: a new, empty conversation, and no error.
  fake.revokeAllSessions();
  await collectCsp(page, watch);
  await page.reload();
  const w3 = await openWidget(page);
  assert.equal((await transcript(page)).length, 0);
  assert.equal(await w3.error.isVisible(), false);
  assert.equal(fake.state.sessionsCreated, created + 3);
  const greeting = await shadowEval(page, (sr) => sr.querySelector('.greeting')?.textContent);
  assert.equal(greeting, `Hi! Ask me anything about ${DEMO_TENANT_NAME}.`);

  await assertCleanPage(page, watch, { origins: [base], allowConsole: [DENIED_LOAD(401)] });
  await page.close();
});

test('errors reach the visitor: the server message for 4xx, a generic one for 5xx and stream errors', { ...fakeOnly, timeout: 4 * WAIT_MS }, async () => {
  const { page, watch } = await newWatchedPage();
  await page.goto(`${base}/demo`);
  const w = await openWidget(page);

  // Oversized text: the server's 4xx message, and the text is handed back.
  const long = 'a'.repeat(MAX_TEXT_CHARS + 1);
  await send(page, long);
  await w.error.waitFor({ state: 'visible' });
  assert.equal(await w.error.textContent(), `Your message is too long (at most ${MAX_TEXT_CHARS} characters).`);
  assert.equal(await w.input.inputValue(), long, 'the text is given back to edit');
  assert.equal((await transcript(page)).length, 0, 'the rejected message is not shown as sent');
  assert.equal(await w.send.isDisabled(), false);

  // 5xx: generic text, never the server's internals.
  fake.state.nextTurn = { status: 500, code: 'internal', message: 'internal error: db pool exhausted' };
  await send(page, 'Hi');
  await page.waitForFunction(() => document.querySelector('agentry-widget').shadowRoot.querySelector('.error').textContent.startsWith('Sorry'));
  assert.equal(await w.error.textContent(), GENERIC_ERROR);
  assert.equal(await w.input.inputValue(), 'Hi');

  // 429: the server's message.
  fake.state.nextTurn = { status: 429, code: 'rate_limited', message: 'Too many messages. Please wait a moment.' };
  await send(page, 'Hi again');
  await page.waitForFunction(() => document.querySelector('agentry-widget').shadowRoot.querySelector('.error').textContent.startsWith('Too many'));
  assert.equal(await w.send.isDisabled(), false);

  // An error event in the stream: the visitor's message stays (the server has it), the pending reply goes.
  fake.state.nextTurn = { streamError: { code: 'internal', message: 'upstream exploded' } };
  await send(page, 'Are you there?');
  await page.waitForFunction(
    () => {
      const sr = document.querySelector('agentry-widget').shadowRoot;
      return !sr.querySelector('.msg[data-state="pending"]') && sr.querySelector('.error').textContent === 'Sorry, something went wrong. Please try again.';
    },
    null,
    { timeout: WAIT_MS },
  );
  assert.deepEqual((await transcript(page)).map((m) => m.role), ['visitor']);
  fake.state.nextTurn = { streamError: { code: 'invalid', message: 'That message could not be answered.' } };
  await send(page, 'And now?');
  await page.waitForFunction(() => document.querySelector('agentry-widget').shadowRoot.querySelector('.error').textContent === 'That message could not be answered.', null, { timeout: WAIT_MS });

  // A success clears the error. A JSON answer (no stream) is understood too.
  fake.state.nextTurn = { json: true };
  await send(page, 'plain json please');
  await waitForAssistant(page, 1);
  assert.equal(await w.error.isVisible(), false);
  assert.equal((await transcript(page)).at(-1).text, 'You said: plain json please');

  // The final message replaces what the deltas built.
  await send(page, 'please correct me');
  await waitForAssistant(page, 2);
  assert.equal((await transcript(page)).at(-1).text, 'Final answer.');

  // Server text is text: markup stays inert.
  const markup = '<img src=x onerror="window.__pwned=1"><b>bold</b><script>window.__pwned=2</script>';
  await send(page, markup);
  await waitForAssistant(page, 3);
  assert.equal((await transcript(page)).at(-1).text, `You said: ${markup}`);
  const injected = await shadowEval(page, (sr) => sr.querySelectorAll('.log img, .log b, .log script').length);
  assert.equal(injected, 0);
  assert.equal(await page.evaluate(() => window.__pwned), undefined);

  await assertCleanPage(page, watch, { origins: [base], allowConsole: [DENIED_LOAD(422), DENIED_LOAD(500), DENIED_LOAD(429)] });
  await page.close();
});

test('embedded cross-origin on a hostile page with a strict CSP and Trusted Types', { ...fakeOnly, timeout: 4 * WAIT_MS }, async () => {
  const site = await startHostSite({ apiOrigin: fake.url, publicKey: fake.state.publicKey });
  fake.allowOrigin(site.url);
  const seen = fake.state.requests.length;
  const preflightsSeen = fake.state.preflights.length;
  try {
    const { page, watch } = await newWatchedPage();
    await page.goto(site.url);
    const w = ui(page);
    await w.launcher.waitFor({ state: 'visible', timeout: WAIT_MS });
    const box = await w.launcher.boundingBox();
    assert.deepEqual([Math.round(box.width), Math.round(box.height)], [60, 60], 'host CSS does not resize the launcher');
    assert.ok(box.x + box.width > 1280 - 100 && box.y + box.height > 800 - 100, 'launcher sits bottom-right');
    assert.equal(await w.panel.isVisible(), false, 'host [hidden] rules do not reveal the panel');

    // Programmatic open.
    await page.evaluate(() => window.AgentryWidget.open());
    await w.panel.waitFor({ state: 'visible' });
    await waitIdle(page);
    const looks = await shadowEval(page, (sr) => {
      const input = getComputedStyle(sr.querySelector('textarea'));
      const launcher = getComputedStyle(sr.querySelector('.launcher'));
      const header = getComputedStyle(sr.querySelector('.header'));
      return {
        fontSize: input.fontSize,
        comic: input.fontFamily.includes('Comic'),
        letterSpacing: input.letterSpacing,
        color: input.color,
        launcherBg: launcher.backgroundColor,
        headerBg: header.backgroundColor,
        title: sr.querySelector('.title').textContent,
      };
    });
    assert.deepEqual(looks, {
      fontSize: '15px',
      comic: false,
      letterSpacing: 'normal',
      color: 'rgb(27, 31, 41)',
      launcherBg: 'rgb(11, 122, 75)',
      headerBg: 'rgb(11, 122, 75)',
      title: 'Shop help',
    });
    // ...and nothing leaks out: the host's own text keeps the host's styles.
    assert.equal(await page.evaluate(() => getComputedStyle(document.querySelector('.copy')).color), 'rgb(255, 0, 0)');

    await send(page, 'What are your opening hours?');
    await waitForAssistant(page, 1);
    assert.equal((await transcript(page)).at(-1).text, replyFor('What are your opening hours?').content);

    // What the browser sent: CORS preflights asking only for authorization and content-type, no cookies.
    const api = fake.state.requests.slice(seen).filter((r) => r.path.startsWith('/api/'));
    assert.ok(api.length >= 4);
    for (const r of api) {
      assert.equal(r.origin, site.url, `${r.method} ${r.path} carries the page origin`);
      assert.equal(r.headers.cookie, undefined);
    }
    const preflights = fake.state.preflights.slice(preflightsSeen);
    assert.ok(preflights.some((p) => p.path === '/api/widget/session'));
    assert.ok(preflights.some((p) => p.path === '/api/widget/messages' && p.requestMethod === 'POST'));
    for (const p of preflights) {
      const asked = p.requestHeaders.split(',').map((s) => s.trim()).filter(Boolean).sort();
      assert.ok(asked.every((h) => ['authorization', 'content-type'].includes(h)), `preflight asked only for known headers: ${asked}`);
    }

    // End the conversation: the token is revoked server-side and forgotten here.
    const token = await page.evaluate((k) => JSON.parse(sessionStorage.getItem(k)).token, `agentry-widget:${fake.state.publicKey}`);
    await w.end.click();
    await page.waitForFunction(() => document.querySelector('agentry-widget').shadowRoot.querySelectorAll('.msg').length === 0);
    for (let i = 0; i < 50 && !fake.sessions.get(token).revoked; i += 1) await new Promise((r) => setTimeout(r, 50));
    assert.equal(fake.sessions.get(token).revoked, true, 'session/end revoked the token');
    assert.equal(await page.evaluate((k) => sessionStorage.getItem(k), `agentry-widget:${fake.state.publicKey}`), null);
    // A new message starts a new session lazily.
    const before = fake.state.sessionsCreated;
    await send(page, 'Fresh start');
    await waitForAssistant(page, 1);
    assert.equal(fake.state.sessionsCreated, before + 1);

    await page.evaluate(() => window.AgentryWidget.close());
    await w.panel.waitFor({ state: 'hidden' });

    await assertCleanPage(page, watch, { origins: [site.url, fake.url] });
    await page.close();
  } finally {
    await site.close();
  }
});

test('on a site whose origin is not allowed, the visitor is told chat is unreachable', { ...fakeOnly, timeout: 2 * WAIT_MS }, async () => {
  const site = await startHostSite({ apiOrigin: fake.url, publicKey: fake.state.publicKey });
  try {
    const { page, watch } = await newWatchedPage();
    await page.goto(site.url);
    const w = ui(page);
    await w.launcher.waitFor({ state: 'visible', timeout: WAIT_MS });
    await w.launcher.click();
    await w.error.waitFor({ state: 'visible', timeout: WAIT_MS });
    assert.match(await w.error.textContent(), /could not reach the chat service/);
    await assertCleanPage(page, watch, {
      origins: [site.url, fake.url],
      allowConsole: [/blocked by CORS policy/, /^error: Failed to load resource: net::ERR_FAILED/],
    });
    await page.close();
  } finally {
    await site.close();
  }
});
