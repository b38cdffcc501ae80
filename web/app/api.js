// The JSON API client: the dashboard token from sessionStorage on every
// request, and errors as ApiError carrying the server's {"error":{code,message}}.

const TOKEN_KEY = 'agentry-dashboard:token';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** Called with the ApiError of any 401, so the shell can send the user to sign in. */
let onUnauthorized = () => {};
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

/** Reads an error body; a body that is not ours still gives a readable message. */
export async function errorFrom(response) {
  let code = 'http_' + response.status;
  let message = `The server answered ${response.status} ${response.statusText || ''}`.trim();
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // Not JSON (a proxy's page, say): keep the generic message.
  }
  return new ApiError(response.status, code, message);
}

/**
 * api('GET', '/agents') → parsed JSON (or null for 204).
 * `body` is sent as JSON unless it is FormData. `query` is an object of
 * parameters; empty values are left out.
 */
export async function api(method, path, options = {}) {
  return request(method, path, options, 0);
}

// A read refused by the rate limiter is tried again once the limiter allows
// (`Retry-After`; the tenant's `standard` tier refills one request a second),
// with jitter so a page's parallel reads do not collide again, at most five
// times; a change is never repeated: its 429 is shown.
const MAX_READ_RETRIES = 5;
const MAX_RETRY_WAIT_SECS = 10;

async function request(method, path, { body, query, signal } = {}, attempt) {
  const url = new URL('/api/v1' + path, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, value);
  }
  const headers = { accept: 'application/json' };
  if (session.token) headers.authorization = 'Bearer ' + session.token;
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, { method, headers, body: payload, signal, credentials: 'omit' });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, 'network', 'The server could not be reached. Check your connection and try again.');
  }
  if (response.status === 429 && method === 'GET' && attempt < MAX_READ_RETRIES) {
    const wait = Number(response.headers.get('retry-after'));
    if (wait >= 0 && wait <= MAX_RETRY_WAIT_SECS) {
      const jitter = Math.random() * 1000 * (attempt + 1);
      await new Promise((resolve) => setTimeout(resolve, Math.max(wait, 1) * 1000 + jitter));
      return request(method, path, { body, query, signal }, attempt + 1);
    }
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    if (response.status === 401 && path !== '/auth/login') onUnauthorized(error);
    throw error;
  }
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}
