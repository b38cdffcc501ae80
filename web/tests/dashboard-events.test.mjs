// The dashboard's event-stream client (web/app/events.js) in Node: the SSE
// parser over awkward chunking, and LiveEvents against a local stream that
// ends, to see it reconnect with Last-Event-ID and the dashboard token.
//
//   node --test tests/dashboard-events.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';

// events.js reads the token from sessionStorage and fetches a relative URL.
const storage = new Map([['agentry-dashboard:token', 'agd_test-token']]);
globalThis.sessionStorage = {
  getItem: (key) => (storage.has(key) ? storage.get(key) : null),
  setItem: (key, value) => storage.set(key, String(value)),
  removeItem: (key) => storage.delete(key),
};

const { SseParser, LiveEvents } = await import('../app/events.js');

function parseAll(chunks) {
  const events = [];
  const parser = new SseParser((event) => events.push(event));
  for (const chunk of chunks) parser.push(chunk);
  return events;
}

test('the parser dispatches events however the stream is cut', () => {
  const stream = ': keep-alive\n\nid: 7\nevent: conversation\ndata: {"conversation":{"id":"c1","state":"waiting"}}\n\n'
    + 'event: message\r\nid: 8\r\ndata: {"conversation_id":"c1",\r\ndata: "message":{"id":"m1"}}\r\n\r\n'
    + 'data: no event name\rdata:second line\r\r: a lone CR ends a line only once the next character shows it is no CRLF\n';
  const whole = parseAll([stream]);
  assert.deepEqual(whole, [
    { event: 'conversation', data: '{"conversation":{"id":"c1","state":"waiting"}}', id: '7' },
    { event: 'message', data: '{"conversation_id":"c1",\n"message":{"id":"m1"}}', id: '8' },
    { event: 'message', data: 'no event name\nsecond line', id: '8' },
  ]);
  // One character at a time, and a CRLF split between two chunks.
  assert.deepEqual(parseAll([...stream]), whole);
  const at = stream.indexOf('\r\n') + 1;
  assert.deepEqual(parseAll([stream.slice(0, at), stream.slice(at)]), whole);
});

test('a comment-only stream or an event without data dispatches nothing', () => {
  assert.deepEqual(parseAll([': keep-alive\n\n: keep-alive\n\nevent: conversation\n\n']), []);
});

test('LiveEvents reconnects after the stream ends, with Last-Event-ID and the token', async () => {
  const requests = [];
  const server = createServer((req, res) => {
    requests.push({ url: req.url, auth: req.headers.authorization, accept: req.headers.accept, last: req.headers['last-event-id'] });
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
    if (requests.length === 1) {
      res.write(': keep-alive\n\n');
      res.end('id: 41\nevent: conversation\ndata: {"conversation":{"id":"c1","state":"waiting"}}\n\n');
    } else {
      res.write('id: 42\nevent: message\ndata: {"conversation_id":"c1","message":{"id":"m1","content":"hi","human":true}}\n\n');
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  const realFetch = globalThis.fetch;
  globalThis.fetch = (url, init) => realFetch(new URL(url, base), init);
  const seen = [];
  const states = [];
  const live = new LiveEvents({
    conversation: (data) => seen.push(['conversation', data.conversation.state]),
    message: (data) => seen.push(['message', data.message.content, data.message.human]),
    status: (state) => states.push(state),
  });
  try {
    live.start();
    const deadline = Date.now() + 10_000;
    while (seen.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  } finally {
    live.stop();
    globalThis.fetch = realFetch;
    server.closeAllConnections();
    server.close();
  }
  assert.deepEqual(seen, [['conversation', 'waiting'], ['message', 'hi', true]]);
  assert.equal(requests[0].url, '/api/v1/events');
  assert.equal(requests[0].auth, 'Bearer agd_test-token');
  assert.equal(requests[0].accept, 'text/event-stream');
  assert.equal(requests[0].last, undefined, 'the first connection resumes from nothing');
  assert.equal(requests[1].last, '41', 'the reconnection resumes after the last id seen');
  assert.deepEqual(states.slice(0, 3), ['live', 'reconnecting', 'live']);
});
