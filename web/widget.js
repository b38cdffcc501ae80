/*
 * agentry chat widget.
 *
 * Embed with:
 *   <script src="https://HOST/widget.js" data-public-key="pk_..." async></script>
 * Optional attributes: data-title (panel heading), data-greeting (first line
 * shown in an empty conversation), data-accent (a CSS colour for the launcher,
 * header and visitor bubbles; white text sits on it, so pick a dark one).
 *
 * Dependency-free, no build step. Everything renders inside a Shadow DOM styled
 * through a constructable stylesheet (no <style> elements, no style=
 * attributes), so it runs under a strict host CSP and the host page's CSS
 * cannot reach it. Text from the server is untrusted and only ever set through
 * textContent. The only requests it makes go to the API origin the script was
 * loaded from.
 */
(() => {
  'use strict';

  // Loaded twice on one page: the first copy wins.
  if (window.AgentryWidget) return;

  const script =
    document.currentScript ||
    document.querySelector('script[data-public-key][src*="widget.js"]') ||
    document.querySelector('script[data-public-key]');
  if (!script) return;
  const publicKey = (script.getAttribute('data-public-key') || '').trim();
  if (!publicKey) return;
  let apiBase;
  try {
    apiBase = new URL(script.src, document.baseURI).origin;
  } catch {
    return;
  }
  if (!/^https?:/.test(apiBase)) return;

  const attr = (name, fallback) => {
    const value = (script.getAttribute(name) || '').trim();
    return value || fallback;
  };
  const config = {
    title: attr('data-title', 'Chat with us').slice(0, 80),
    greeting: attr('data-greeting', '').slice(0, 500),
    accent: attr('data-accent', ''),
  };

  const TEXT = {
    open: 'Open chat',
    close: 'Close chat',
    end: 'End conversation',
    send: 'Send message',
    input: 'Your message',
    placeholder: 'Type your message…',
    log: 'Conversation',
    you: 'You:',
    assistant: 'Assistant:',
    human: 'Team member:',
    humanTag: 'Team member',
    takenOver: 'A person from the team has joined the conversation.',
    handedBack: 'The assistant is answering again.',
    typing: 'The assistant is typing',
    connecting: 'Connecting…',
    generic: 'Sorry, something went wrong. Please try again.',
    offline: 'We could not reach the chat service. Check your connection and try again.',
    interrupted: 'The reply was interrupted. Please try again.',
    rateLimited: 'You are sending messages too quickly. Please wait a moment and try again.',
    unavailable: 'Chat is not available on this site right now.',
  };

  const STREAM_IDLE_MS = 90_000;
  // The conversation's live stream reconnects after 1 s, doubling to 30 s.
  const LIVE_RETRY_MS = 1_000;
  const LIVE_RETRY_MAX_MS = 30_000;
  const MAX_ERROR_CHARS = 300;

  // ---------------------------------------------------------------- session

  const storeKey = `agentry-widget:${publicKey}`;

  const storage = {
    load() {
      try {
        const raw = window.sessionStorage.getItem(storeKey);
        if (!raw) return null;
        const value = JSON.parse(raw);
        if (!value || typeof value.token !== 'string' || !value.token) return null;
        return { token: value.token, expiresAt: typeof value.expiresAt === 'string' ? value.expiresAt : '' };
      } catch {
        return null;
      }
    },
    save(session) {
      try {
        window.sessionStorage.setItem(storeKey, JSON.stringify(session));
      } catch {
        // Storage disabled or full: the session simply lasts as long as the page.
      }
    },
    clear() {
      try {
        window.sessionStorage.removeItem(storeKey);
      } catch {
        // Nothing stored, nothing to clear.
      }
    },
  };

  const isExpired = (session) => {
    if (!session.expiresAt) return false;
    const at = Date.parse(session.expiresAt);
    return Number.isFinite(at) && at - Date.now() < 5_000;
  };

  let session = storage.load();
  if (session && isExpired(session)) {
    session = null;
    storage.clear();
  }
  let sessionPromise = null;

  /** An HTTP answer that is not a success, with the server's error body if it had one. */
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message || `HTTP ${status}`);
      this.status = status;
      this.code = code || '';
      this.serverMessage = message || '';
    }
  }

  /** A problem reported inside an event stream (`event: error`) or a stream cut short. */
  class StreamError extends Error {
    constructor(code, message) {
      super(message || 'stream error');
      this.code = code || '';
      this.serverMessage = message || '';
    }
  }

  async function apiError(response) {
    let code = '';
    let message = '';
    try {
      const body = await response.json();
      if (body && body.error && typeof body.error === 'object') {
        if (typeof body.error.code === 'string') code = body.error.code;
        if (typeof body.error.message === 'string') message = body.error.message;
      }
    } catch {
      // Not JSON: the status alone has to do.
    }
    return new ApiError(response.status, code, message);
  }

  function call(path, { method = 'GET', token, body, accept = 'application/json', signal, extraHeaders = {} } = {}) {
    const headers = { Accept: accept, ...extraHeaders };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    return fetch(apiBase + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      mode: 'cors',
      credentials: 'omit',
      cache: 'no-store',
      signal,
    });
  }

  async function createSession() {
    const response = await call('/api/widget/session', {
      method: 'POST',
      body: { public_key: publicKey },
    });
    if (!response.ok) throw await apiError(response);
    const body = await response.json();
    if (!body || typeof body.token !== 'string' || !body.token) throw new ApiError(502, '', '');
    const created = { token: body.token, expiresAt: typeof body.expires_at === 'string' ? body.expires_at : '' };
    session = created;
    storage.save(created);
    return created;
  }

  function ensureSession() {
    if (session && !isExpired(session)) return Promise.resolve(session);
    if (!sessionPromise) {
      sessionPromise = createSession().finally(() => {
        sessionPromise = null;
      });
    }
    return sessionPromise;
  }

  function forgetSession(which) {
    if (session && (!which || session.token === which.token)) {
      session = null;
      storage.clear();
    }
  }

  /** Runs an authenticated request; on 401 it starts a new session and tries once more. */
  async function withSession(send) {
    let current = await ensureSession();
    let response = await send(current.token);
    if (response.status === 401) {
      forgetSession(current);
      current = await ensureSession();
      response = await send(current.token);
    }
    return response;
  }

  // ------------------------------------------------------------ SSE parsing

  /**
   * An incremental parser for text/event-stream, after the HTML standard:
   * lines end in CRLF, LF or CR (a CR at a chunk's end may be followed by its
   * LF in the next chunk), `:` lines are comments, several `data:` lines join
   * with LF, and a blank line dispatches the event.
   */
  function createSseParser(onEvent) {
    let buffer = '';
    let skipLeadingLF = false;
    let eventType = '';
    let data = [];
    let lastEventId = '';

    const dispatch = () => {
      if (data.length || eventType) onEvent({ event: eventType || 'message', data: data.join('\n'), id: lastEventId });
      eventType = '';
      data = [];
    };

    const line = (text) => {
      if (text === '') return dispatch();
      if (text.charCodeAt(0) === 58 /* : */) return undefined;
      const colon = text.indexOf(':');
      const field = colon === -1 ? text : text.slice(0, colon);
      let value = colon === -1 ? '' : text.slice(colon + 1);
      if (value.charCodeAt(0) === 32 /* space */) value = value.slice(1);
      if (field === 'data') data.push(value);
      else if (field === 'event') eventType = value;
      else if (field === 'id' && !value.includes('\u0000')) lastEventId = value;
      return undefined;
    };

    return {
      push(chunk) {
        if (!chunk) return;
        let text = chunk;
        if (skipLeadingLF) {
          skipLeadingLF = false;
          if (text.charCodeAt(0) === 10) text = text.slice(1);
        }
        buffer += text;
        let start = 0;
        for (let i = 0; i < buffer.length; i += 1) {
          const c = buffer.charCodeAt(i);
          if (c !== 10 && c !== 13) continue;
          line(buffer.slice(start, i));
          if (c === 13) {
            if (i + 1 < buffer.length) {
              if (buffer.charCodeAt(i + 1) === 10) i += 1;
            } else {
              skipLeadingLF = true;
            }
          }
          start = i + 1;
        }
        buffer = buffer.slice(start);
      },
      end() {
        // Lenient: a last event without its blank line still counts.
        if (buffer) line(buffer);
        buffer = '';
        dispatch();
      },
    };
  }

  const parseJson = (text) => {
    try {
      return JSON.parse(text);
    } catch {
      return null;
    }
  };

  // ---------------------------------------------------------------- styles

  const STYLES = `
:host {
  all: initial !important;
  display: block !important;
  position: fixed !important;
  inset: auto 0 0 auto !important;
  width: 0 !important;
  height: 0 !important;
  margin: 0 !important;
  padding: 0 !important;
  border: 0 !important;
  overflow: visible !important;
  z-index: 2147483000 !important;
  visibility: visible !important;
  opacity: 1 !important;
  transform: none !important;
  filter: none !important;
  contain: none !important;
}
.root {
  --aw-accent: #1f5eff;
  --aw-accent-text: #ffffff;
  --aw-bg: #ffffff;
  --aw-fg: #1b1f29;
  --aw-muted: #5f6776;
  --aw-line: #e3e6ec;
  --aw-soft: #f3f5f9;
  --aw-error-bg: #fff1f0;
  --aw-error-fg: #a8201a;
  --aw-radius: 18px;
  --aw-font: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans", sans-serif;
  font-family: var(--aw-font);
  font-size: 15px;
  line-height: 1.45;
  color: var(--aw-fg);
  -webkit-font-smoothing: antialiased;
  text-align: left;
  direction: ltr;
}
*, *::before, *::after { box-sizing: border-box; }
[hidden] { display: none !important; }
button, textarea { font: inherit; color: inherit; margin: 0; }
button { cursor: pointer; }
button:focus-visible, textarea:focus-visible, .log:focus-visible {
  outline: 3px solid color-mix(in srgb, var(--aw-accent) 55%, transparent);
  outline-offset: 2px;
}
.sr-only {
  position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px;
  overflow: hidden; clip: rect(0 0 0 0); clip-path: inset(50%); white-space: nowrap; border: 0;
}
.launcher {
  position: fixed; right: 20px; bottom: 20px;
  width: 60px; height: 60px; padding: 0;
  border: 0; border-radius: 50%;
  display: grid; place-items: center;
  background: var(--aw-accent); color: var(--aw-accent-text);
  box-shadow: 0 6px 20px rgba(16, 24, 40, .24), 0 2px 6px rgba(16, 24, 40, .12);
  transition: transform .18s ease, box-shadow .18s ease;
}
.launcher:hover { transform: translateY(-2px); box-shadow: 0 10px 26px rgba(16, 24, 40, .28), 0 3px 8px rgba(16, 24, 40, .14); }
.launcher svg { width: 28px; height: 28px; }
.launcher .icon-close { display: none; }
.launcher[aria-expanded="true"] .icon-chat { display: none; }
.launcher[aria-expanded="true"] .icon-close { display: block; }
.launcher .badge {
  position: absolute; top: 4px; right: 4px; width: 12px; height: 12px;
  border-radius: 50%; background: #ff4d4f; border: 2px solid var(--aw-bg);
}
.panel {
  position: fixed; right: 20px; bottom: 92px;
  width: min(390px, calc(100vw - 40px));
  height: min(620px, calc(100vh - 120px));
  display: flex; flex-direction: column;
  background: var(--aw-bg);
  border-radius: var(--aw-radius);
  box-shadow: 0 18px 50px rgba(16, 24, 40, .22), 0 4px 12px rgba(16, 24, 40, .10);
  overflow: hidden;
  transform-origin: bottom right;
  animation: aw-in .18s ease-out;
}
@keyframes aw-in { from { opacity: 0; transform: translateY(8px) scale(.98); } to { opacity: 1; transform: none; } }
.header {
  display: flex; align-items: center; gap: 8px;
  padding: 14px 12px 14px 18px;
  background: var(--aw-accent); color: var(--aw-accent-text);
}
.title { flex: 1; margin: 0; font-size: 16px; font-weight: 600; line-height: 1.3; overflow-wrap: anywhere; }
.icon-btn {
  width: 36px; height: 36px; padding: 0; border: 0; border-radius: 10px;
  display: grid; place-items: center; background: transparent; color: inherit; opacity: .9;
}
.icon-btn:hover { background: rgba(255, 255, 255, .16); opacity: 1; }
.icon-btn svg { width: 20px; height: 20px; }
.log {
  flex: 1; overflow-y: auto; overscroll-behavior: contain;
  padding: 18px 16px 8px;
  display: flex; flex-direction: column; gap: 10px;
  background: var(--aw-bg);
}
.greeting, .status { margin: 0 0 4px; color: var(--aw-muted); font-size: 14px; }
.msg { display: flex; max-width: 100%; }
.msg.visitor { justify-content: flex-end; }
.bubble {
  max-width: 85%;
  padding: 9px 13px;
  border-radius: 16px;
  white-space: pre-wrap;
  overflow-wrap: anywhere;
  word-break: break-word;
}
.visitor .bubble { background: var(--aw-accent); color: var(--aw-accent-text); border-bottom-right-radius: 5px; }
.assistant .bubble { background: var(--aw-soft); color: var(--aw-fg); border-bottom-left-radius: 5px; }
.human .bubble { border: 1px solid var(--aw-accent); }
.human-tag { display: block; font-size: 12px; font-weight: 600; color: var(--aw-muted); margin-bottom: 2px; }
.typing { display: inline-flex; gap: 4px; align-items: center; padding: 4px 2px; }
.typing span { width: 7px; height: 7px; border-radius: 50%; background: var(--aw-muted); opacity: .35; animation: aw-dot 1.2s infinite ease-in-out; }
.typing span:nth-child(2) { animation-delay: .15s; }
.typing span:nth-child(3) { animation-delay: .3s; }
@keyframes aw-dot { 0%, 80%, 100% { opacity: .35; transform: none; } 40% { opacity: 1; transform: translateY(-3px); } }
.error {
  margin: 0 16px 8px; padding: 8px 12px; border-radius: 10px;
  background: var(--aw-error-bg); color: var(--aw-error-fg); font-size: 14px;
  overflow-wrap: anywhere;
}
.composer {
  display: flex; align-items: flex-end; gap: 8px;
  margin: 0; padding: 10px 12px 12px;
  border-top: 1px solid var(--aw-line);
  background: var(--aw-bg);
}
.input {
  flex: 1; min-height: 42px; max-height: 140px;
  padding: 10px 12px;
  border: 1px solid var(--aw-line); border-radius: 12px;
  background: var(--aw-bg);
  resize: none; field-sizing: content;
  line-height: 1.4; font-size: 15px;
}
.input::placeholder { color: var(--aw-muted); opacity: 1; }
.input:focus { border-color: var(--aw-accent); outline: none; }
.send {
  flex: none; width: 42px; height: 42px; padding: 0; border: 0; border-radius: 12px;
  display: grid; place-items: center;
  background: var(--aw-accent); color: var(--aw-accent-text);
}
.send svg { width: 20px; height: 20px; }
.send:disabled { opacity: .45; cursor: not-allowed; }
@media (max-width: 480px) {
  .panel { inset: 0; width: 100%; height: 100%; border-radius: 0; }
  .launcher[aria-expanded="true"] { display: none; }
}
@media (prefers-reduced-motion: reduce) {
  .panel, .typing span { animation: none; }
  .launcher { transition: none; }
  .launcher:hover { transform: none; }
}
@media (forced-colors: active) {
  .bubble, .panel, .error { border: 1px solid CanvasText; }
}
`;

  // ---------------------------------------------------------------- DOM

  const SVG_NS = 'http://www.w3.org/2000/svg';

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === false || value == null) continue;
      node.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children) node.append(child);
    return node;
  }

  function icon(className, paths) {
    const svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('fill', 'none');
    svg.setAttribute('stroke', 'currentColor');
    svg.setAttribute('stroke-width', '2');
    svg.setAttribute('stroke-linecap', 'round');
    svg.setAttribute('stroke-linejoin', 'round');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    if (className) svg.setAttribute('class', className);
    for (const d of paths) {
      const path = document.createElementNS(SVG_NS, 'path');
      path.setAttribute('d', d);
      svg.append(path);
    }
    return svg;
  }

  const ICON_CHAT = ['M21 12a8 8 0 0 1-11.6 7.1L4 20.5l1.4-4.9A8 8 0 1 1 21 12z'];
  const ICON_CLOSE = ['M6 6l12 12', 'M18 6L6 18'];
  const ICON_SEND = ['M5 12h13', 'M12 5l7 7-7 7'];
  const ICON_END = ['M3 12a9 9 0 1 0 3-6.7', 'M3 4v5h5'];

  const host = document.createElement('agentry-widget');
  const shadow = host.attachShadow({ mode: 'open' });
  const sheet = new CSSStyleSheet();
  sheet.replaceSync(STYLES);
  const sheets = [sheet];
  if (config.accent && window.CSS && CSS.supports('color', config.accent) && !/[;{}]/.test(config.accent)) {
    const accentSheet = new CSSStyleSheet();
    accentSheet.replaceSync(`.root { --aw-accent: ${config.accent}; }`);
    sheets.push(accentSheet);
  }
  shadow.adoptedStyleSheets = sheets;

  const titleEl = h('h2', { class: 'title', id: 'aw-title' });
  titleEl.textContent = config.title;

  const endButton = h('button', { type: 'button', class: 'icon-btn end', 'aria-label': TEXT.end, title: TEXT.end }, icon('', ICON_END));
  const closeButton = h('button', { type: 'button', class: 'icon-btn close', 'aria-label': TEXT.close, title: TEXT.close }, icon('', ICON_CLOSE));

  const log = h('div', {
    class: 'log',
    id: 'aw-log',
    role: 'log',
    'aria-live': 'polite',
    'aria-relevant': 'additions text',
    'aria-label': TEXT.log,
    tabindex: '0',
  });

  const errorEl = h('p', { class: 'error', role: 'alert', hidden: true });

  const input = h('textarea', {
    class: 'input',
    id: 'aw-input',
    rows: '1',
    placeholder: TEXT.placeholder,
    'aria-label': TEXT.input,
    autocomplete: 'off',
    enterkeyhint: 'send',
  });
  const sendButton = h('button', { type: 'submit', class: 'send', 'aria-label': TEXT.send, title: TEXT.send }, icon('', ICON_SEND));
  const composer = h('form', { class: 'composer', novalidate: true }, input, sendButton);

  const panel = h(
    'section',
    { class: 'panel', id: 'aw-panel', role: 'dialog', 'aria-modal': 'false', 'aria-labelledby': 'aw-title', hidden: true },
    h('div', { class: 'header' }, titleEl, endButton, closeButton),
    log,
    errorEl,
    composer,
  );

  const badge = h('span', { class: 'badge', hidden: true, 'aria-hidden': 'true' });
  const launcher = h(
    'button',
    { type: 'button', class: 'launcher', 'aria-label': TEXT.open, 'aria-expanded': 'false', 'aria-controls': 'aw-panel', 'aria-haspopup': 'dialog' },
    icon('icon-chat', ICON_CHAT),
    icon('icon-close', ICON_CLOSE),
    badge,
  );

  const root = h('div', { class: 'root' }, panel, launcher);
  shadow.append(root);

  // ---------------------------------------------------------------- state

  let isOpen = false;
  let busy = false; // a turn, or the first load, is in flight
  let loaded = false; // this page has shown the stored transcript (or had none)
  let loadPromise = null;
  let inflight = null; // AbortController of the running turn
  let generation = 0; // bumps when the conversation is ended, so late answers are dropped
  let lastSeq = -1; // the latest message position shown: where the live stream resumes
  let live = null; // AbortController of the conversation's live stream
  let humanAnswers = false; // a person from the team has the conversation

  const nearBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 60;
  const scrollToEnd = () => {
    log.scrollTop = log.scrollHeight;
  };

  function updateSendState() {
    sendButton.disabled = busy || input.value.trim() === '';
  }

  function showError(message) {
    errorEl.textContent = message;
    errorEl.hidden = false;
  }

  function clearError() {
    errorEl.textContent = '';
    errorEl.hidden = true;
  }

  function visitorMessageFor(error) {
    if (error instanceof ApiError) {
      if (error.status >= 500 || error.status === 401) return TEXT.generic;
      if (error.serverMessage) return error.serverMessage.slice(0, MAX_ERROR_CHARS);
      if (error.status === 429) return TEXT.rateLimited;
      if (error.status === 403 || error.status === 404) return TEXT.unavailable;
      return TEXT.generic;
    }
    if (error instanceof StreamError) {
      if (error.code === 'interrupted') return TEXT.interrupted;
      if (!error.serverMessage || error.code === 'internal' || error.code === 'unavailable') return TEXT.generic;
      return error.serverMessage.slice(0, MAX_ERROR_CHARS);
    }
    if (error && error.name === 'AbortError') return TEXT.interrupted;
    // fetch rejects with a TypeError on network and CORS failures.
    return error instanceof TypeError ? TEXT.offline : TEXT.generic;
  }

  function renderGreeting() {
    if (!config.greeting) return;
    const p = h('p', { class: 'greeting' });
    p.textContent = config.greeting;
    log.append(p);
  }

  function messageNode(role, text, state, human = false) {
    const label = h('span', { class: 'sr-only' });
    label.textContent = role === 'visitor' ? TEXT.you : human ? TEXT.human : TEXT.assistant;
    const bubble = h('div', { class: 'bubble' });
    if (human) {
      const tag = h('span', { class: 'human-tag', 'aria-hidden': 'true' });
      tag.textContent = TEXT.humanTag;
      bubble.append(tag, document.createTextNode(text));
    } else {
      bubble.textContent = text;
    }
    const attrs = { class: `msg ${role}${human ? ' human' : ''}`, 'data-role': role, 'data-state': state };
    if (human) attrs['data-human'] = 'true';
    return h('div', attrs, label, bubble);
  }

  /** Whether the message with this id is on show already (a reply can come twice: its turn and the live stream). */
  function isShown(id) {
    return typeof id === 'string' && log.querySelector(`[data-id="${CSS.escape(id)}"]`) !== null;
  }

  function noteSeq(message) {
    if (message && Number.isInteger(message.seq) && message.seq > lastSeq) lastSeq = message.seq;
  }

  function appendMessage(role, text, state = 'done', human = false) {
    const stick = nearBottom();
    const node = messageNode(role, text, state, human);
    log.append(node);
    if (stick || role === 'visitor') scrollToEnd();
    return node;
  }

  function pendingReply() {
    const node = messageNode('assistant', '', 'pending');
    const bubble = node.querySelector('.bubble');
    const dots = h('span', { class: 'typing' }, h('span', { 'aria-hidden': 'true' }), h('span', { 'aria-hidden': 'true' }), h('span', { 'aria-hidden': 'true' }), h('span', { class: 'sr-only' }));
    dots.lastChild.textContent = TEXT.typing;
    bubble.append(dots);
    log.append(node);
    scrollToEnd();
    let text = '';
    return {
      node,
      get text() {
        return text;
      },
      append(fragment) {
        if (!fragment) return;
        const stick = nearBottom();
        text += fragment;
        bubble.textContent = text; // also removes the typing dots
        if (stick) scrollToEnd();
      },
      finish(finalText, id) {
        const stick = nearBottom();
        text = finalText;
        bubble.textContent = finalText;
        node.setAttribute('data-state', 'done');
        if (id) node.setAttribute('data-id', id);
        if (stick) scrollToEnd();
      },
      remove() {
        node.remove();
      },
    };
  }

  function setStatus(text) {
    let status = log.querySelector('.status');
    if (!text) {
      if (status) status.remove();
      return;
    }
    if (!status) {
      status = h('p', { class: 'status' });
      log.prepend(status);
    }
    status.textContent = text;
  }

  // ---------------------------------------------------------------- loading

  function loadTranscript() {
    if (loaded) return Promise.resolve();
    if (loadPromise) return loadPromise;
    const gen = generation;
    busy = true;
    updateSendState();
    setStatus(TEXT.connecting);
    loadPromise = (async () => {
      try {
        if (session) {
          const response = await withSession((token) => call('/api/widget/messages', { token }));
          if (!response.ok) throw await apiError(response);
          const body = await response.json();
          if (gen !== generation) return;
          const messages = body && Array.isArray(body.messages) ? body.messages : [];
          for (const m of messages) {
            if (!m || typeof m.content !== 'string') continue;
            if (m.role !== 'visitor' && m.role !== 'assistant') continue;
            const node = appendMessage(m.role, m.content, 'done', m.human === true);
            if (typeof m.id === 'string') node.setAttribute('data-id', m.id);
            noteSeq(m);
          }
        } else {
          await ensureSession();
        }
        if (gen === generation) {
          loaded = true;
          startLive();
        }
      } catch (error) {
        if (gen === generation) showError(visitorMessageFor(error));
      } finally {
        loadPromise = null;
        setStatus('');
        busy = false;
        updateSendState();
        scrollToEnd();
      }
    })();
    return loadPromise;
  }

  // ---------------------------------------------------------------- a turn

  async function readStream(response, reply, signal) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let final = null;
    let done = false;
    let failure = null;
    const parser = createSseParser(({ event, data }) => {
      if (event === 'delta') {
        const body = parseJson(data);
        if (body && typeof body.text === 'string') reply.append(body.text);
      } else if (event === 'message') {
        const body = parseJson(data);
        if (body && typeof body.content === 'string') final = body;
      } else if (event === 'held') {
        final = { held: true };
      } else if (event === 'done') {
        done = true;
      } else if (event === 'error') {
        const body = parseJson(data);
        const err = body && body.error && typeof body.error === 'object' ? body.error : {};
        failure = new StreamError(typeof err.code === 'string' ? err.code : '', typeof err.message === 'string' ? err.message : '');
      }
    });

    let idle = null;
    const abortOnIdle = () => {
      clearTimeout(idle);
      idle = setTimeout(() => inflight && inflight.signal === signal && inflight.abort(), STREAM_IDLE_MS);
    };
    abortOnIdle();
    try {
      for (;;) {
        const { value, done: ended } = await reader.read();
        if (ended) {
          parser.push(decoder.decode());
          parser.end();
          break;
        }
        abortOnIdle();
        parser.push(decoder.decode(value, { stream: true }));
        if (done || failure) {
          reader.cancel().catch(() => {});
          break;
        }
      }
    } finally {
      clearTimeout(idle);
    }

    if (failure) throw failure;
    if (final) return final;
    if (done && reply.text) return { content: reply.text };
    throw new StreamError('interrupted', '');
  }

  async function sendTurn(text) {
    const gen = generation;
    busy = true;
    clearError();
    badge.hidden = true;
    const visitorNode = appendMessage('visitor', text);
    const reply = pendingReply();
    log.setAttribute('aria-busy', 'true');
    updateSendState();
    const controller = new AbortController();
    inflight = controller;
    let accepted = false; // the server took the message (the stream began)
    try {
      const response = await withSession((token) =>
        call('/api/widget/messages', {
          method: 'POST',
          token,
          body: { text },
          accept: 'text/event-stream',
          signal: controller.signal,
        }),
      );
      if (!response.ok) throw await apiError(response);
      accepted = true;
      const type = (response.headers.get('Content-Type') || '').toLowerCase();
      let final;
      if (type.startsWith('text/event-stream') && response.body) {
        final = await readStream(response, reply, controller.signal);
      } else {
        const body = await response.json();
        final = body && body.held === true ? { held: true } : body && body.reply;
        if (!final || (!final.held && typeof final.content !== 'string')) throw new StreamError('interrupted', '');
      }
      if (gen !== generation) return;
      loaded = true;
      startLive();
      if (final.held) {
        // A person from the team has it: their answer comes on the live stream.
        reply.remove();
        return;
      }
      if (isShown(final.id)) {
        reply.remove(); // heard on the live stream already
      } else {
        reply.finish(final.content, typeof final.id === 'string' ? final.id : '');
      }
      noteSeq(final);
      if (!isOpen) badge.hidden = false;
    } catch (error) {
      if (gen !== generation) return;
      reply.remove();
      if (!accepted) {
        // Nothing reached the conversation: take the bubble back and give the text back.
        visitorNode.remove();
        if (!input.value.trim()) {
          input.value = text;
        }
      }
      showError(visitorMessageFor(error));
    } finally {
      if (inflight === controller) inflight = null;
      if (gen === generation) {
        busy = false;
        log.setAttribute('aria-busy', 'false');
        updateSendState();
      }
    }
  }

  async function submit() {
    if (busy || !input.value.trim()) return;
    // The stored transcript goes above the new message, so it loads first.
    if (!loaded) {
      await loadTranscript();
      if (busy || !loaded) return; // the error is on show; the text stays in the box
    }
    const text = input.value.trim();
    if (!text) return;
    input.value = '';
    sendTurn(text);
  }

  // ------------------------------------------------------------ live stream

  /** Shows a message heard on the live stream, unless it is on show already. */
  function liveMessage(m) {
    if (!m || typeof m.content !== 'string' || typeof m.id !== 'string') return;
    // The visitor's own lines are on show from when they were sent; the
    // assistant's reply to a turn in flight comes with that turn.
    if (m.role !== 'assistant' || (inflight && m.human !== true)) {
      noteSeq(m);
      return;
    }
    if (isShown(m.id)) return;
    const node = appendMessage('assistant', m.content, 'done', m.human === true);
    node.setAttribute('data-id', m.id);
    noteSeq(m);
    if (!isOpen) badge.hidden = false;
  }

  function setHumanAnswers(human) {
    if (human === humanAnswers) return;
    humanAnswers = human;
    const note = h('p', { class: 'status', role: 'status' });
    note.textContent = human ? TEXT.takenOver : TEXT.handedBack;
    log.append(note);
    if (nearBottom()) scrollToEnd();
  }

  async function readLive(response, signal) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const parser = createSseParser(({ event, data }) => {
      const body = parseJson(data);
      if (event === 'state' && body) setHumanAnswers(body.state === 'human');
      else if (event === 'message') liveMessage(body);
    });
    signal.addEventListener('abort', () => reader.cancel().catch(() => {}), { once: true });
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(decoder.decode(value, { stream: true }));
    }
  }

  /** Follows the conversation's live stream (a team member's replies) while a session lasts. */
  function startLive() {
    if (live || !session) return;
    const gen = generation;
    const controller = new AbortController();
    live = controller;
    (async () => {
      let delay = LIVE_RETRY_MS;
      while (gen === generation && session && !controller.signal.aborted) {
        try {
          const response = await withSession((token) =>
            call('/api/widget/events', {
              token,
              accept: 'text/event-stream',
              signal: controller.signal,
              extraHeaders: lastSeq >= 0 ? { 'Last-Event-ID': String(lastSeq) } : {},
            }),
          );
          // Refused for good (origin, ended widget): no point asking again.
          if (response.status >= 400 && response.status < 500 && response.status !== 429) break;
          if (response.ok && response.body) {
            delay = LIVE_RETRY_MS;
            await readLive(response, controller.signal);
          }
        } catch {
          // Network trouble: try again below.
        }
        if (controller.signal.aborted || gen !== generation) break;
        await new Promise((resolve) => setTimeout(resolve, delay * (0.75 + Math.random() / 2)));
        delay = Math.min(delay * 2, LIVE_RETRY_MAX_MS);
      }
      if (live === controller) live = null;
    })();
  }

  function stopLive() {
    if (live) live.abort();
    live = null;
  }

  async function endConversation() {
    const ended = session;
    generation += 1;
    if (inflight) inflight.abort();
    inflight = null;
    stopLive();
    lastSeq = -1;
    humanAnswers = false;
    forgetSession();
    loaded = true; // a fresh conversation has nothing to load
    busy = false;
    log.replaceChildren();
    log.setAttribute('aria-busy', 'false');
    renderGreeting();
    clearError();
    badge.hidden = true;
    updateSendState();
    if (isOpen) input.focus({ preventScroll: true });
    if (ended) {
      try {
        await call('/api/widget/session/end', { method: 'POST', token: ended.token });
      } catch {
        // The token is forgotten here either way and expires on its own.
      }
    }
  }

  // ---------------------------------------------------------------- open/close

  let returnFocusTo = null;

  function activeInside() {
    return shadow.activeElement !== null;
  }

  function open() {
    if (isOpen) return;
    isOpen = true;
    const active = document.activeElement;
    returnFocusTo = active && active !== host && active !== document.body ? active : null;
    panel.hidden = false;
    launcher.setAttribute('aria-expanded', 'true');
    launcher.setAttribute('aria-label', TEXT.close);
    badge.hidden = true;
    input.focus({ preventScroll: true });
    scrollToEnd();
    loadTranscript();
  }

  function close() {
    if (!isOpen) return;
    const hadFocus = activeInside();
    isOpen = false;
    panel.hidden = true;
    launcher.setAttribute('aria-expanded', 'false');
    launcher.setAttribute('aria-label', TEXT.open);
    if (hadFocus) {
      const target = returnFocusTo && returnFocusTo.isConnected ? returnFocusTo : launcher;
      target.focus({ preventScroll: true });
    }
    returnFocusTo = null;
  }

  launcher.addEventListener('click', () => {
    if (isOpen) {
      close();
      launcher.focus({ preventScroll: true });
    } else {
      open();
    }
  });
  // The launcher itself opened the panel: focus goes back to it, not to what had focus before.
  launcher.addEventListener('pointerdown', () => {
    if (!isOpen) launcher.focus({ preventScroll: true });
  });
  closeButton.addEventListener('click', close);
  endButton.addEventListener('click', () => {
    endConversation();
  });
  panel.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && !event.isComposing) {
      event.stopPropagation();
      close();
    }
  });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      submit();
    }
  });
  input.addEventListener('input', updateSendState);
  composer.addEventListener('submit', (event) => {
    event.preventDefault();
    submit();
  });

  renderGreeting();
  updateSendState();

  const mount = () => {
    if (!host.isConnected) (document.body || document.documentElement).append(host);
  };
  if (document.body) mount();
  else document.addEventListener('DOMContentLoaded', mount, { once: true });

  Object.defineProperty(window, 'AgentryWidget', {
    value: Object.freeze({
      open,
      close,
      toggle: () => (isOpen ? close() : open()),
      isOpen: () => isOpen,
      endConversation,
    }),
    configurable: false,
    enumerable: false,
    writable: false,
  });
})();
