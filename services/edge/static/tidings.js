// Tidings browser client: one EventSource per tab, shared by every subscriber.
//
//   import { tidings } from "/static/tidings.js";
//   const client = tidings({ url: "/api/events/stream" });
//   const stop = client.subscribe("history_update", (data) => reload(data));
//   client.onReset(() => refetchEverything());
//   client.onState((state) => console.log("stream", state));
//
// The stream opens with the first subscriber and closes with the last one,
// and on `pagehide`. It never opens inside an iframe, where the top page
// owns the tab's stream (browsers allow six HTTP/1.1 connections per
// origin). While the EventSource reconnects by itself it sends
// `Last-Event-ID`; when the browser gives up (a 401 for an expired token, a
// 429, a 503) the client opens a new EventSource after a growing delay and
// passes the last id as `lastEventId`, fetching a new token first when
// `token` is given.

const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30000;

/** States a client goes through, as reported to `onState` listeners. */
export const STATES = Object.freeze([
  "idle", // no subscriber, no connection
  "connecting", // opening, or reconnecting after a drop
  "open", // events flow
  "closed", // the browser gave up; a new attempt is scheduled
  "disabled", // inside an iframe: this page opens no stream
]);

const clients = new Map();

/**
 * Return the tab's client for `options.url`, creating it on first use.
 *
 * Options: `url` (default "/api/events/stream"), `token` (an async function
 * returning a stream token), `params` (extra query parameters),
 * `withCredentials` (send cookies to another origin).
 */
export function tidings(options = {}) {
  const url = options.url ?? "/api/events/stream";
  let client = clients.get(url);
  if (!client) {
    client = new TidingsClient({ ...options, url });
    clients.set(url, client);
  }
  return client;
}

export class TidingsClient {
  constructor({ url = "/api/events/stream", token = null, params = {}, withCredentials = false } = {}) {
    this.url = url;
    this.tokenProvider = token;
    this.params = params;
    this.withCredentials = withCredentials;
    this.state = inIframe() ? "disabled" : "idle";
    this.lastEventId = "";
    this.sourcesOpened = 0;
    this._listeners = new Map(); // event type -> Set of listeners
    this._resetListeners = new Set();
    this._stateListeners = new Set();
    this._source = null;
    this._retryMs = RETRY_MIN_MS;
    this._retryTimer = null;
    this._attempt = 0;
    this._onPageHide = () => this._disconnect("idle");
    this._onPageShow = (event) => {
      if (event.persisted && this._subscriberCount() > 0) this._connect();
    };
    addEventListener("pagehide", this._onPageHide);
    addEventListener("pageshow", this._onPageShow);
  }

  /** Call `listener(data, event)` for each event of `type`; returns an unsubscribe function. */
  subscribe(type, listener) {
    let listeners = this._listeners.get(type);
    if (!listeners) {
      listeners = new Set();
      this._listeners.set(type, listeners);
      if (this._source && type !== "reset") this._source.addEventListener(type, this._dispatch);
    }
    const entry = { listener };
    listeners.add(entry);
    if (!this._source && !this._retryTimer) this._connect();
    let active = true;
    return () => {
      if (!active) return;
      active = false;
      listeners.delete(entry);
      if (listeners.size === 0) {
        this._listeners.delete(type);
        if (this._source && type !== "reset") this._source.removeEventListener(type, this._dispatch);
      }
      if (this._subscriberCount() === 0) this._disconnect("idle");
    };
  }

  /** Call `callback(data)` when the server sends `reset`: the page must refetch its state. */
  onReset(callback) {
    this._resetListeners.add(callback);
    return () => this._resetListeners.delete(callback);
  }

  /** Call `callback(state)` now and on every change of connection state. */
  onState(callback) {
    this._stateListeners.add(callback);
    callback(this.state);
    return () => this._stateListeners.delete(callback);
  }

  /** Close the stream and forget every subscriber. */
  close() {
    this._listeners.clear();
    this._disconnect("idle");
    removeEventListener("pagehide", this._onPageHide);
    removeEventListener("pageshow", this._onPageShow);
    if (clients.get(this.url) === this) clients.delete(this.url);
  }

  _subscriberCount() {
    let count = 0;
    for (const listeners of this._listeners.values()) count += listeners.size;
    return count;
  }

  async _connect() {
    if (this.state === "disabled" || this._source) return;
    const attempt = ++this._attempt;
    this._setState("connecting");
    const query = new URLSearchParams(this.params);
    if (this.tokenProvider) {
      try {
        query.set("token", await this.tokenProvider());
      } catch (error) {
        if (attempt === this._attempt) this._scheduleRetry();
        return;
      }
      if (attempt !== this._attempt || this._subscriberCount() === 0) return;
    }
    if (this.lastEventId) query.set("lastEventId", this.lastEventId);
    const separator = this.url.includes("?") ? "&" : "?";
    const target = query.toString() ? `${this.url}${separator}${query}` : this.url;
    const source = new EventSource(target, { withCredentials: this.withCredentials });
    this.sourcesOpened += 1;
    this._source = source;
    source.onopen = () => {
      this._retryMs = RETRY_MIN_MS;
      this._setState("open");
    };
    source.onerror = () => {
      if (source !== this._source) return;
      if (source.readyState === EventSource.CLOSED) {
        this._source = null;
        this._scheduleRetry();
      } else {
        this._setState("connecting");
      }
    };
    source.addEventListener("reset", this._dispatchReset);
    for (const type of this._listeners.keys()) {
      if (type !== "reset") source.addEventListener(type, this._dispatch);
    }
  }

  _scheduleRetry() {
    this._setState("closed");
    const delay = this._retryMs * (0.5 + Math.random() / 2);
    this._retryMs = Math.min(this._retryMs * 2, RETRY_MAX_MS);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (this._subscriberCount() > 0) this._connect();
    }, delay);
  }

  _disconnect(state) {
    this._attempt += 1;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    if (this._source) {
      this._source.close();
      this._source = null;
    }
    if (this.state !== "disabled") this._setState(state);
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    for (const callback of [...this._stateListeners]) callback(state);
  }

  _remember(event) {
    if (event.lastEventId) this.lastEventId = event.lastEventId;
  }

  _dispatch = (event) => {
    this._remember(event);
    const listeners = this._listeners.get(event.type);
    if (!listeners) return;
    const data = parse(event.data);
    for (const { listener } of [...listeners]) listener(data, event);
  };

  _dispatchReset = (event) => {
    this._remember(event);
    const data = parse(event.data);
    for (const callback of [...this._resetListeners]) callback(data, event);
    for (const { listener } of [...(this._listeners.get("reset") ?? [])]) listener(data, event);
  };
}

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function inIframe() {
  try {
    return window.self !== window.top;
  } catch {
    return true; // A cross-origin parent hides `top`: still a frame.
  }
}
