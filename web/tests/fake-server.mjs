// A small stand-in for the agentry server's widget surface, for the browser test:
// serves /demo, /demo.css and /widget.js with the real server's security headers,
// and implements the visitor API contract (sessions, SSE replies split across
// writes, transcript, session end, CORS against allowed origins).
//
// Run on its own to look at the demo: `node tests/fake-server.mjs [port]`.

import { createServer } from 'node:http';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const WEB_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export const STRICT_CSP =
  "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";
export const EMBEDDABLE_CSP =
  "default-src 'self'; frame-ancestors *; base-uri 'none'; form-action 'self'; object-src 'none'";

export const DEMO_PUBLIC_KEY = 'pk_demo_fake_0123456789';
// Characters that must be escaped, to prove the page survives them.
export const DEMO_TENANT_NAME = 'Harbor & Co <Test> "Dental"';
export const MAX_TEXT_CHARS = 2000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function escapeHtml(text) {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

function baseHeaders(embeddable) {
  return embeddable
    ? {
        'x-content-type-options': 'nosniff',
        'referrer-policy': 'strict-origin-when-cross-origin',
        'content-security-policy': EMBEDDABLE_CSP,
        'cross-origin-resource-policy': 'cross-origin',
      }
    : {
        'x-content-type-options': 'nosniff',
        'referrer-policy': 'strict-origin-when-cross-origin',
        'content-security-policy': STRICT_CSP,
        'x-frame-options': 'DENY',
        'cross-origin-opener-policy': 'same-origin',
        'cross-origin-resource-policy': 'same-origin',
      };
}

/** The canned assistant: deterministic replies keyed on the visitor's text. */
export function replyFor(text) {
  const lower = text.toLowerCase();
  if (lower.includes('opening hours')) {
    // Non-ASCII on purpose: the writes split these characters' UTF-8 bytes.
    return { deltas: null, content: 'We are open Monday to Friday, 8:00–18:00, and Saturday 9:00–13:00. Café on site ☕.' };
  }
  if (/[\w.+-]+@[\w-]+\.[\w.]+/.test(text)) {
    const email = text.match(/[\w.+-]+@[\w-]+\.[\w.]+/)[0];
    return { deltas: null, content: `Thanks! Someone from the team will write to you at ${email}.` };
  }
  if (lower.includes('correct me')) {
    // The final message replaces whatever the deltas built up.
    return { deltas: ['Draft ', 'answer ', 'that will be replaced'], content: 'Final answer.' };
  }
  return { deltas: null, content: `You said: ${text}` };
}

function splitWords(content) {
  const parts = content.match(/\S+\s*/g) || [content];
  const out = [];
  for (let i = 0; i < parts.length; i += 3) out.push(parts.slice(i, i + 3).join(''));
  return out;
}

export async function startFakeServer({ port = 0, host = '127.0.0.1', chunkDelayMs = 8 } = {}) {
  const sessions = new Map(); // token -> { publicKey, revoked, messages, expiresAt }
  const state = {
    publicKey: DEMO_PUBLIC_KEY,
    tenantName: DEMO_TENANT_NAME,
    allowedOrigins: new Set(),
    sessionsCreated: 0,
    requests: [], // { method, path, origin, headers }
    preflights: [], // { path, origin, requestHeaders, requestMethod }
    /** The next POST /api/widget/messages answers this instead: { status, code, message } | { streamError } | { json } */
    nextTurn: null,
    firstByteDelayMs: 250,
  };

  const jsonHeaders = (origin, extra = {}) => ({
    'content-type': 'application/json',
    'cache-control': 'no-store',
    ...baseHeaders(true),
    ...corsHeaders(origin),
    ...extra,
  });

  function originAllowed(origin) {
    return state.allowedOrigins.has(origin);
  }

  function corsHeaders(origin) {
    if (!origin || !originAllowed(origin)) return {};
    return { 'access-control-allow-origin': origin, vary: 'Origin', 'access-control-expose-headers': 'retry-after' };
  }

  function sendJson(res, origin, status, body, extra) {
    res.writeHead(status, jsonHeaders(origin, extra));
    res.end(body === undefined ? undefined : JSON.stringify(body));
  }

  function sendError(res, origin, status, code, message, extra) {
    sendJson(res, origin, status, { error: { code, message } }, extra);
  }

  async function readJson(req) {
    const chunks = [];
    let size = 0;
    for await (const chunk of req) {
      size += chunk.length;
      if (size > 262144) throw Object.assign(new Error('too large'), { status: 413 });
      chunks.push(chunk);
    }
    try {
      return JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      throw Object.assign(new Error('bad json'), { status: 400 });
    }
  }

  function bearer(req) {
    const value = req.headers.authorization || '';
    const match = /^Bearer (\S+)$/.exec(value);
    if (!match) return null;
    const session = sessions.get(match[1]);
    if (!session || session.revoked || session.expiresAt < Date.now()) return null;
    return session;
  }

  async function serveFile(res, file, type, embeddable, transform) {
    let body = await readFile(path.join(WEB_DIR, file), 'utf8');
    if (transform) body = transform(body);
    res.writeHead(200, { 'content-type': type, 'cache-control': 'no-cache', ...baseHeaders(embeddable) });
    res.end(body);
  }

  /** Writes an SSE body in awkward pieces: frames split mid-line, mid-CRLF and mid-UTF-8 character. */
  async function streamReply(res, turn) {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
      ...baseHeaders(true),
      ...corsHeaders(turn.origin),
    });
    res.flushHeaders();
    await sleep(state.firstByteDelayMs);

    let wire = ': stream opened\n\n';
    turn.deltas.forEach((text, i) => {
      const eol = i % 2 === 0 ? '\r\n' : '\n';
      wire += `event: delta${eol}data: ${JSON.stringify({ text })}${eol}${eol}`;
      if (i === 1) wire += `: keep-alive${eol}${eol}`;
    });
    if (turn.streamError) {
      wire += `event: error\ndata: ${JSON.stringify({ error: turn.streamError })}\n\n`;
    } else {
      // The final message's JSON spread over two data: lines (joined with LF, still valid JSON).
      const json = JSON.stringify(turn.message);
      const cut = json.indexOf(',"role"') + 1;
      wire += `event: message\r\ndata: ${json.slice(0, cut)}\r\ndata: ${json.slice(cut)}\r\n\r\n`;
      wire += 'event: done\rdata: {}\r\r';
    }

    const bytes = Buffer.from(wire, 'utf8');
    let offset = 0;
    let step = 0;
    const sizes = [5, 13, 1, 29, 7, 2, 41, 3];
    while (offset < bytes.length) {
      const size = sizes[step % sizes.length];
      step += 1;
      if (res.destroyed) return;
      res.write(bytes.subarray(offset, offset + size));
      offset += size;
      await sleep(chunkDelayMs);
    }
    res.end();
  }

  async function handleApi(req, res, url, origin) {
    const route = `${req.method} ${url.pathname}`;

    if (req.method === 'OPTIONS') {
      state.preflights.push({
        path: url.pathname,
        origin,
        requestMethod: req.headers['access-control-request-method'] || '',
        requestHeaders: req.headers['access-control-request-headers'] || '',
      });
      if (!origin || !originAllowed(origin)) {
        res.writeHead(403, baseHeaders(true));
        return res.end();
      }
      res.writeHead(204, {
        ...baseHeaders(true),
        ...corsHeaders(origin),
        'access-control-allow-methods': 'GET, POST',
        'access-control-allow-headers': 'authorization, content-type',
        'access-control-max-age': '600',
      });
      return res.end();
    }

    // A browser always sends Origin on these cross-origin or POST requests.
    if (origin && !originAllowed(origin)) {
      return sendError(res, null, 403, 'forbidden', 'this origin may not use the widget');
    }

    if (route === 'POST /api/widget/session') {
      const body = await readJson(req);
      if (!body || body.public_key !== state.publicKey) return sendError(res, origin, 404, 'not_found', 'not found');
      const token = `agw_${randomBytes(24).toString('base64url')}`;
      const expiresAt = Date.now() + 3600_000;
      sessions.set(token, { publicKey: body.public_key, revoked: false, messages: [], expiresAt });
      state.sessionsCreated += 1;
      return sendJson(res, origin, 201, { token, expires_at: new Date(expiresAt).toISOString() });
    }

    if (route === 'POST /api/widget/session/end') {
      const session = bearer(req);
      if (!session) return sendError(res, origin, 401, 'unauthorized', 'authentication required');
      session.revoked = true;
      return sendJson(res, origin, 204);
    }

    if (route === 'GET /api/widget/messages') {
      const session = bearer(req);
      if (!session) return sendError(res, origin, 401, 'unauthorized', 'authentication required');
      return sendJson(res, origin, 200, { messages: session.messages });
    }

    if (route === 'POST /api/widget/messages') {
      const session = bearer(req);
      if (!session) return sendError(res, origin, 401, 'unauthorized', 'authentication required');
      const body = await readJson(req);
      const text = body && typeof body.text === 'string' ? body.text : null;
      if (text === null || !text.trim()) return sendError(res, origin, 400, 'bad_request', 'Please type a message first.');
      if ([...text].length > MAX_TEXT_CHARS) {
        return sendError(res, origin, 422, 'invalid', `Your message is too long (at most ${MAX_TEXT_CHARS} characters).`);
      }
      const override = state.nextTurn;
      state.nextTurn = null;
      if (override && override.status) {
        const extra = override.status === 429 ? { 'retry-after': '5' } : {};
        return sendError(res, origin, override.status, override.code || 'error', override.message || 'error', extra);
      }

      const now = () => new Date().toISOString();
      session.messages.push({ id: randomUUID(), role: 'visitor', content: text, created_at: now() });
      const reply = replyFor(text);
      const message = { id: randomUUID(), role: 'assistant', content: reply.content, created_at: now() };

      const wantsStream = (req.headers.accept || '').includes('text/event-stream');
      if (!wantsStream || (override && override.json)) {
        session.messages.push(message);
        return sendJson(res, origin, 200, { reply: message });
      }
      if (override && override.streamError) {
        return streamReply(res, { origin, deltas: ['Let me check '], streamError: override.streamError });
      }
      session.messages.push(message);
      return streamReply(res, { origin, deltas: reply.deltas || splitWords(reply.content), message });
    }

    return sendError(res, origin, 404, 'not_found', 'not found');
  }

  const server = createServer(async (req, res) => {
    const url = new URL(req.url, 'http://fake.invalid');
    const origin = req.headers.origin || null;
    state.requests.push({ method: req.method, path: url.pathname, origin, headers: { ...req.headers } });
    try {
      if (url.pathname.startsWith('/api/widget/')) return await handleApi(req, res, url, origin);
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { 'content-type': 'application/json', ...baseHeaders(false) });
        return res.end(JSON.stringify({ error: { code: 'method_not_allowed', message: 'method not allowed on this path' } }));
      }
      if (url.pathname === '/widget.js') {
        return await serveFile(res, 'widget.js', 'text/javascript; charset=utf-8', true);
      }
      if (url.pathname === '/demo') {
        return await serveFile(res, 'demo.html', 'text/html; charset=utf-8', false, (html) =>
          html
            .replaceAll('{{TENANT_NAME}}', escapeHtml(state.tenantName))
            .replaceAll('{{PUBLIC_KEY}}', escapeHtml(state.publicKey)),
        );
      }
      if (url.pathname === '/demo.css') {
        return await serveFile(res, 'demo.css', 'text/css; charset=utf-8', false);
      }
      res.writeHead(404, { 'content-type': 'application/json', ...baseHeaders(false) });
      return res.end(JSON.stringify({ error: { code: 'not_found', message: 'not found' } }));
    } catch (error) {
      if (res.headersSent) return res.destroy();
      const status = error.status || 500;
      res.writeHead(status, { 'content-type': 'application/json', ...baseHeaders(true), ...corsHeaders(origin) });
      return res.end(JSON.stringify({ error: { code: status === 500 ? 'internal' : 'bad_request', message: status === 500 ? 'internal error' : error.message } }));
    }
  });

  await new Promise((resolve) => server.listen(port, host, resolve));
  const address = server.address();
  const url = `http://${host}:${address.port}`;
  state.allowedOrigins.add(url); // the demo page is served from the API's own origin

  return {
    url,
    state,
    sessions,
    /** Every token stops working, as if the sessions expired or were revoked. */
    revokeAllSessions() {
      for (const session of sessions.values()) session.revoked = true;
    },
    allowOrigin(origin) {
      state.allowedOrigins.add(origin);
    },
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * A third-party website embedding the widget from another origin, with a strict
 * CSP of its own (Trusted Types included) and hostile global CSS.
 */
export async function startHostSite({ apiOrigin, publicKey, host = '127.0.0.1' }) {
  const csp = [
    "default-src 'self'",
    `script-src 'self' ${apiOrigin}`,
    `connect-src ${apiOrigin}`,
    "style-src 'self'",
    "img-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "require-trusted-types-for 'script'",
    "trusted-types 'none'",
  ].join('; ');
  const page = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Host site</title>
<link rel="stylesheet" href="/host.css"></head>
<body><h1>Some shop</h1><p class="copy">Host page content.</p>
<script src="${apiOrigin}/widget.js" data-public-key="${escapeHtml(publicKey)}" data-title="Shop help" data-accent="#0b7a4b" async></script>
</body></html>`;
  // Broad rules a careless site might have; none of them may reach the widget's inside.
  const css = `
* { font-family: "Comic Sans MS", cursive !important; font-size: 31px !important; line-height: 3 !important;
    color: rgb(255, 0, 0) !important; letter-spacing: 6px !important; box-sizing: content-box !important; }
html, body { background: rgb(255, 255, 0); }
button { display: none !important; }
div, section, p, textarea, form { border: 9px dotted lime !important; padding: 40px !important; margin: 30px !important; }
[hidden] { display: block !important; }
:root { --aw-accent: rgb(255, 0, 0); }
`;
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://host.invalid');
    if (url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': csp });
      return res.end(page);
    }
    if (url.pathname === '/host.css') {
      res.writeHead(200, { 'content-type': 'text/css; charset=utf-8' });
      return res.end(css);
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    return res.end('not found');
  });
  await new Promise((resolve) => server.listen(0, host, resolve));
  return {
    url: `http://${host}:${server.address().port}`,
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const port = Number(process.argv[2] || 8787);
  const fake = await startFakeServer({ port });
  process.stdout.write(`fake agentry widget server on ${fake.url}/demo (public key ${fake.state.publicKey})\n`);
}
