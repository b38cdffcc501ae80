// The dashboard's live event stream: GET /api/v1/events read with fetch (an
// EventSource cannot send the Authorization header) and a streaming parser
// of the text/event-stream format. It reconnects with Last-Event-ID so no
// event between two connections is lost.

import { errorFrom, session } from './api.js';

/** Feeds chunks of an event stream; calls onEvent({event, data, id}) per dispatched event. */
export class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = '';
    this.reset();
    this.lastEventId = '';
  }

  reset() {
    this.event = '';
    this.data = [];
  }

  push(chunk) {
    this.buffer += chunk;
    // A line ends at CRLF, LF or CR; a trailing lone CR may be half a CRLF.
    for (;;) {
      const match = /\r\n|\n|\r(?!$)/.exec(this.buffer);
      if (!match) break;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      this.line(line);
    }
  }

  line(line) {
    if (line === '') {
      if (this.data.length) {
        this.onEvent({ event: this.event || 'message', data: this.data.join('\n'), id: this.lastEventId });
      }
      this.reset();
      return;
    }
    if (line.startsWith(':')) return; // a comment: keep-alive
    const colon = line.indexOf(':');
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'event') this.event = value;
    else if (name === 'data') this.data.push(value);
    else if (name === 'id' && !value.includes('\0')) this.lastEventId = value;
  }
}

/**
 * Keeps one stream open while signed in. handlers: { conversation(data), message(data),
 * status(state) } where state is 'live', 'reconnecting' or 'unavailable'.
 */
export class LiveEvents {
  constructor(handlers) {
    this.handlers = handlers;
    this.lastEventId = '';
    this.controller = null;
    this.stopped = true;
    this.failures = 0;
    this.timer = null;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.controller) this.controller.abort();
    this.controller = null;
  }

  status(state) {
    if (this.handlers.status) this.handlers.status(state);
  }

  retry(delayMs) {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delayMs);
  }

  async connect() {
    if (this.stopped || !session.token) return;
    this.controller = new AbortController();
    const headers = { accept: 'text/event-stream', authorization: 'Bearer ' + session.token };
    if (this.lastEventId) headers['last-event-id'] = this.lastEventId;
    let response;
    try {
      response = await fetch('/api/v1/events', { headers, signal: this.controller.signal, credentials: 'omit', cache: 'no-store' });
    } catch (error) {
      if (this.stopped) return;
      return this.failed();
    }
    if (!response.ok) {
      const error = await errorFrom(response);
      if (response.status === 401) {
        this.stop();
        if (this.handlers.unauthorized) this.handlers.unauthorized(error);
        return;
      }
      // 404 (a server without the stream) or 403: waiting does not help soon;
      // every attempt counts on the tenant's rate-limit tier, so back off far.
      if (response.status === 404 || response.status === 403) {
        this.status('unavailable');
        return this.retry(120_000);
      }
      if (response.status === 400 && this.lastEventId) {
        // The resume point is not one the server knows (any more): start afresh.
        this.lastEventId = '';
        this.status('reconnecting');
        return this.retry(1000);
      }
      if (response.status === 429) {
        const after = Number(response.headers.get('retry-after')) || 30;
        this.status('reconnecting');
        return this.retry(after * 1000);
      }
      return this.failed();
    }
    this.failures = 0;
    this.status('live');
    const parser = new SseParser((event) => this.dispatch(event));
    parser.lastEventId = this.lastEventId;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(value);
      }
    } catch {
      // The connection broke (or we aborted it); reconnect below.
    }
    if (this.stopped) return;
    this.failed(true);
  }

  failed(wasLive = false) {
    this.failures = wasLive ? 0 : this.failures + 1;
    this.status('reconnecting');
    // 1 s after a stream that ended (a deadline or a deploy), then 2, 4 … 60 s.
    const delay = Math.min(60_000, 1000 * 2 ** this.failures);
    this.retry(delay);
  }

  dispatch({ event, data, id }) {
    if (id) this.lastEventId = id;
    let parsed;
    try {
      parsed = JSON.parse(data);
    } catch {
      return;
    }
    const handler = this.handlers[event];
    if (handler) handler(parsed);
  }
}
