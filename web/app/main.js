// The dashboard shell: sign-in, the hash router (#/agents, #/conversations/ID …),
// the signed-in user and role, and the live event stream behind the
// "waiting for a person" badge and notifications.

import { api, session, setUnauthorizedHandler } from './api.js';
import { h, replace, field } from './dom.js';
import { errorBox, busy, toast } from './ui.js';
import { LiveEvents } from './events.js';
import * as agents from './agents.js';
import * as conversations from './conversations.js';
import * as leads from './leads.js';
import * as llm from './llm.js';
import * as webhooks from './webhooks.js';
import * as tokens from './tokens.js';
import * as phone from './phone.js';
import * as usage from './usage.js';

const main = document.getElementById('main');
const top = document.getElementById('top');

const routes = [
  [/^\/agents$/, 'agents', agents.list],
  [/^\/agents\/([0-9a-fA-F-]{36})$/, 'agents', agents.detail],
  [/^\/conversations$/, 'conversations', conversations.list],
  [/^\/conversations\/([0-9a-fA-F-]{36})$/, 'conversations', conversations.detail],
  [/^\/leads$/, 'leads', leads.page],
  [/^\/llm$/, 'llm', llm.page],
  [/^\/webhooks$/, 'webhooks', webhooks.page],
  [/^\/tokens$/, 'tokens', tokens.page],
  [/^\/phone$/, 'phone', phone.page],
  [/^\/usage$/, 'usage', usage.page],
];

/** What a page gets: the user, their role, and listeners that end with the page. */
const ctx = {
  me: null,
  canManage: false,
  main,
  waiting: new Map(),
  listeners: [],
  /** Calls fn(data) for each live event of `type` while this page is shown. */
  listen(type, fn) {
    this.listeners.push({ type, fn });
  },
  /** The note members see where controls are disabled. */
  readOnlyNote() {
    return this.canManage
      ? null
      : h('p.readonly', `Your role (${this.me.role}) can read this configuration but not change it.`);
  },
};

const live = new LiveEvents({
  conversation: (data) => onConversationEvent(data),
  message: (data) => emit('message', data),
  status: (state) => {
    const dot = document.getElementById('live');
    dot.dataset.state = state;
    dot.title = { live: 'Live updates on', reconnecting: 'Reconnecting…', unavailable: 'Live updates unavailable' }[state] || state;
  },
  unauthorized: () => signedOut('Your session has ended. Sign in again.'),
});

function emit(type, data) {
  for (const listener of ctx.listeners) {
    if (listener.type === type) {
      try {
        listener.fn(data);
      } catch (error) {
        console.error(error);
      }
    }
  }
}

function onConversationEvent(data) {
  const conversation = data && data.conversation;
  if (!conversation) return;
  const wasWaiting = ctx.waiting.has(conversation.id);
  if (conversation.state === 'waiting') {
    ctx.waiting.set(conversation.id, conversation);
    if (!wasWaiting) {
      const notice = toast('A visitor is waiting for a person.', 'waiting', {
        href: `#/conversations/${conversation.id}`,
        text: 'Open the conversation',
      });
      notice.dataset.conversationId = conversation.id;
      notice.querySelector('a').addEventListener('click', () => notice.remove());
    }
  } else {
    ctx.waiting.delete(conversation.id);
    // Someone took it (or it went back to the agent): its notice is stale.
    for (const notice of document.querySelectorAll('.toast.waiting')) {
      if (notice.dataset.conversationId === conversation.id) notice.remove();
    }
  }
  renderBadge();
  emit('conversation', data);
}

function renderBadge() {
  const badge = document.getElementById('waiting-badge');
  const count = ctx.waiting.size;
  badge.hidden = count === 0;
  badge.textContent = count ? String(count) : '';
  badge.title = `${count} waiting for a person`;
  // With someone waiting, the link opens the list of those waiting.
  document.getElementById('conversations-link').href = count ? '#/conversations?state=waiting' : '#/conversations';
}

/** The conversations waiting for a person when the dashboard opens; events keep it current. */
async function loadWaiting() {
  try {
    const list = await conversations.fetchWaiting();
    ctx.waiting = new Map(list.map((c) => [c.id, c]));
    renderBadge();
  } catch {
    // The badge is a convenience: the conversations page shows the same.
  }
}

setUnauthorizedHandler(() => signedOut('Your session has ended. Sign in again.'));

function signedOut(message) {
  live.stop();
  session.token = null;
  ctx.me = null;
  ctx.waiting.clear();
  renderBadge();
  top.hidden = true;
  signInPage(message);
}

function signInPage(message) {
  ctx.listeners = [];
  document.title = 'Sign in · agentry';
  const errors = errorBox();
  const notice = message ? h('p.notice', { role: 'status' }, message) : null;
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const submit = h('button.primary', { type: 'submit' }, 'Sign in');
  const form = h('form.signin', { novalidate: true },
    h('h1', 'Sign in'),
    notice,
    errors.el,
    field('Email', email),
    field('Password', password),
    submit);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (notice) notice.remove();
    // An empty try would still count toward the IP's lockout: not sent.
    if (!email.value.trim() || !password.value) {
      errors.show({ message: 'Enter your email and password.' });
      return;
    }
    await busy(submit, errors, async () => {
      const login = await api('POST', '/auth/login', { body: { email: email.value, password: password.value } });
      session.token = login.token;
      await start();
    });
  });
  replace(main, form);
  email.focus();
}

async function start() {
  const errors = errorBox();
  try {
    ctx.me = await api('GET', '/auth/me');
  } catch (error) {
    if (error.status === 401) return;
    replace(main, h('h1', 'Dashboard'), errors.el);
    errors.show(error);
    return;
  }
  ctx.canManage = ctx.me.role === 'owner' || ctx.me.role === 'admin';
  document.body.dataset.role = ctx.me.role;
  replace(document.getElementById('who'), h('span.tenant', ctx.me.tenant.name), ' · ', h('span.role', ctx.me.role));
  top.hidden = false;
  live.start();
  loadWaiting();
  if (!location.hash || location.hash === '#/' || location.hash === '#/signin') location.hash = '#/agents';
  else route();
}

async function route() {
  if (!ctx.me) return;
  // `#/conversations?state=waiting`: the query is the page's own.
  const path = location.hash.replace(/^#/, '').split('?')[0] || '/agents';
  ctx.listeners = [];
  for (const link of document.querySelectorAll('#nav a')) link.removeAttribute('aria-current');
  for (const [pattern, name, page] of routes) {
    const match = pattern.exec(path);
    if (!match) continue;
    const link = document.querySelector(`#nav a[data-page="${name}"]`);
    if (link) link.setAttribute('aria-current', 'page');
    document.title = `${link ? link.textContent.trim().replace(/\s*\d+$/, '') : name} · agentry`;
    replace(main, h('p.loading', 'Loading…'));
    const errors = errorBox();
    try {
      await page(ctx, ...match.slice(1));
    } catch (error) {
      if (error.status === 401) return;
      replace(main, h('h1', 'Something went wrong'), errors.el);
      errors.show(error);
    }
    main.focus?.();
    return;
  }
  replace(main, h('h1', 'Not found'), h('p', 'No such page. '), h('a', { href: '#/agents' }, 'Go to the agents'));
}

document.getElementById('signout').addEventListener('click', async (event) => {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    await api('POST', '/auth/logout');
  } catch {
    // Signed out here either way; the token expires on its own.
  }
  button.disabled = false;
  location.hash = '#/signin';
  signedOut('You are signed out.');
});

window.addEventListener('hashchange', () => route());

if (session.token) start();
else signInPage();
