// The node's JSON API and its WebSocket event stream.

// APIError is a failed request: status 0 and code "offline" when the node
// did not answer at all, else the node's status and its error code (the
// UI translates the code; message is the node's English text).
export class APIError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code || '';
  }
}

// A status without a JSON error body (a proxy's 502, say) still gets a
// code, as the node would give it.
const statusCode = { 400: 'bad_request', 401: 'unauthorized', 403: 'forbidden', 404: 'not_found', 409: 'conflict', 413: 'too_large', 423: 'locked', 501: 'unavailable', 503: 'cancelled' };

export async function api(method, path, body) {
  const init = { method, credentials: 'same-origin', cache: 'no-store', headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch('/api/v1' + path, init);
  } catch (e) {
    throw new APIError(0, 'offline', 'offline');
  }
  return answer(res);
}

// answer reads a response: its JSON (null for 204), or an APIError.
export async function answer(res) {
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const code = (data && data.code) || statusCode[res.status] || (res.status >= 500 ? 'internal' : 'bad_request');
    throw new APIError(res.status, (data && data.error) || res.statusText, code);
  }
  return data;
}

export const get = (p) => api('GET', p);
export const post = (p, b = {}) => api('POST', p, b);
export const put = (p, b = {}) => api('PUT', p, b);
export const del = (p) => api('DELETE', p);

// EventStream keeps one WebSocket open, reconnecting with backoff. It
// resumes with the sequence number of the last event it handed over, so
// the node replays exactly what was missed; a "gap" (the node no longer
// has it) or the very first connection asks the app to refetch all.
export class EventStream {
  constructor(onFrame, onState) {
    this.onFrame = onFrame;
    this.onState = onState;
    this.cursor = null;
    this.instance = '';
    this.delay = 500;
    this.ws = null;
    this.closed = false;
    this.watchdog = null;
    addEventListener('online', () => this.reconnectSoon(0));
  }

  start() { this.connect(); }

  connect() {
    if (this.closed) return;
    this.onState(this.cursor === null ? 'connecting' : 'reconnecting');
    const q = this.cursor === null ? '' : `?since=${this.cursor}&instance=${encodeURIComponent(this.instance)}`;
    const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/v1/ws${q}`);
    this.ws = ws;
    ws.onmessage = (m) => {
      let f;
      try { f = JSON.parse(m.data); } catch { return; }
      this.alive();
      if (f.kind === 'hello') {
        const fresh = this.cursor === null;
        this.cursor = f.seq || 0;
        this.instance = f.instance || '';
        this.delay = 500;
        this.onState('online');
        this.onFrame({ kind: fresh ? 'resync' : 'resumed' });
        return;
      }
      if (f.kind === 'ping') return;
      if (f.seq) this.cursor = f.seq;
      this.onFrame(f);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearTimeout(this.watchdog);
      if (e.code === 1008 || e.code === 4401) this.onState('unauthorized');
      else this.onState('offline');
      this.reconnectSoon(this.delay);
      this.delay = Math.min(this.delay * 2, 10000);
    };
  }

  // alive re-arms the watchdog: the node pings every 20 s, so 45 s of
  // silence means the link is dead even if the socket has not noticed.
  alive() {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => this.ws && this.ws.close(), 45000);
  }

  reconnectSoon(ms) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => { if (!this.ws) this.connect(); }, ms);
  }
}
