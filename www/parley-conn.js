// A WebSocket to the Parley broker that stays connected: reconnects with exponential
// backoff (1 s doubling to 30 s, with jitter), measures latency with an application
// ping every 10 s, and treats a ping left unanswered for a whole interval as a dead link.

export const BACKOFF_FIRST_MS = 1000;
export const BACKOFF_MAX_MS = 30000;
export const PING_EVERY_MS = 10000;

// The wait before reconnect attempt n (1, 2, ...): 1 s, 2 s, 4 s ... up to 30 s, each
// scaled by a random factor in [0.8, 1.2) so that many clients do not come back at once.
export function backoffDelay(attempt, random = Math.random) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** Math.max(0, attempt - 1));
  return Math.min(BACKOFF_MAX_MS, Math.round(base * (0.8 + 0.4 * random())));
}

// Events (CustomEvent detail):
//   "state"   {state, attempt, retryAt, latency}  state: connecting | open | waiting | stopped
//   "message" the parsed JSON object of each frame
//   "open"    {} after the socket opened
export class Connection extends EventTarget {
  constructor(urlFn) {
    super();
    this.urlFn = urlFn;          // () => the ws:// URL to use now (api_key included)
    this.ws = null;
    this.state = 'stopped';
    this.attempt = 0;            // failed attempts in a row
    this.retryAt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.pingSentAt = 0;         // performance.now() of the ping not yet answered, or 0
    this.latency = null;
    this.stopped = true;
  }

  start() {
    this.stopped = false;
    if (!this.ws) this.#open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.#stopPing();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
      try { ws.close(1000, 'bye'); } catch { /* already closed */ }
    }
    this.#setState('stopped');
  }

  // Closes the current socket (if any) and connects again at once.
  reconnectNow() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
      try { ws.close(1000, 'reconnecting'); } catch { /* already closed */ }
    }
    this.#stopPing();
    this.#open();
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  // Sends obj as JSON; false when not connected (the caller decides what to do).
  send(obj) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  ping() {
    if (!this.isOpen) return;
    if (this.pingSentAt) {
      // the last ping is still unanswered after a whole interval: the link is dead
      this.#lost();
      return;
    }
    this.pingSentAt = performance.now();
    this.send({ type: 'ping' });
  }

  #setState(state) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', {
      detail: { state, attempt: this.attempt, retryAt: this.retryAt, latency: this.latency },
    }));
  }

  #open() {
    let ws;
    this.#setState('connecting');
    try {
      ws = new WebSocket(this.urlFn());
    } catch (e) {
      this.#scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.pingSentAt = 0;
      this.#setState('open');
      this.dispatchEvent(new CustomEvent('open', { detail: {} }));
      this.#startPing();
    };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (msg && msg.type === 'connected') this.attempt = 0; // a real server: reset backoff
      if (msg && msg.type === 'pong' && this.pingSentAt) {
        this.latency = Math.round(performance.now() - this.pingSentAt);
        this.pingSentAt = 0;
        this.#setState('open');
      }
      this.dispatchEvent(new CustomEvent('message', { detail: msg }));
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.#lost();
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  #lost() {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
      try { ws.close(); } catch { /* already closed */ }
    }
    this.#stopPing();
    this.latency = null;
    if (!this.stopped) this.#scheduleRetry();
  }

  #scheduleRetry() {
    this.attempt += 1;
    const delay = backoffDelay(this.attempt);
    this.retryAt = Date.now() + delay;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => { if (!this.stopped) this.#open(); }, delay);
    this.#setState('waiting');
  }

  #startPing() {
    this.#stopPing();
    this.ping();
    this.pingTimer = setInterval(() => this.ping(), PING_EVERY_MS);
  }

  #stopPing() {
    clearInterval(this.pingTimer);
    this.pingTimer = null;
    this.pingSentAt = 0;
  }
}
