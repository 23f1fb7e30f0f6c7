// A WebSocket that stays connected: the reconnect loop every Roomkeeper socket shares (rooms
// v1, the multiplexed v2 socket, the chatbot). It knows nothing about frames; its owner sends
// the handshake on `open`, reads `frame`s, and calls `ready()` once the server has answered.
//
// - asks the token provider (if any) before every connect, with the reason, so a token that
//   expired (close 4001) is replaced; with a static token 4001 stops;
// - abandons an attempt that is not `ready()` within `connectTimeoutMs`, and retries;
// - heartbeats with `{"type":"ping"}` every `heartbeatMs` (the runtime answers it without
//   waking an object) and drops a connection that sends nothing for `pongTimeoutMs` after a
//   ping;
// - reconnects with exponential backoff and full jitter, never after 4500–4999.

import { emit, Emitter } from "./events.js";
import { backoffDelay, CLOSE_TOKEN_EXPIRED, closeAction, RoomError } from "./policy.js";

/** The heartbeat frame, byte-exact: the runtime answers exactly this text with a pong. */
export const PING = '{"type":"ping"}';

/**
 * Options: `url(token)` (required: the socket URL for this attempt's token), `protocols`
 * (subprotocols to offer), `token` (a JWT, or a provider `({attempt, reason}) => jwt | Promise`,
 * reason `"connect"`, `"reconnect"` or `"token_expired"`), `getToken` (a provider; wins over
 * `token`), `connectTimeoutMs` (15 000), `heartbeatMs` (25 000), `pongTimeoutMs` (10 000),
 * `backoff` ({ baseMs, capMs }), `WebSocket` (a constructor, for Node or tests).
 *
 * Events: `status` {state, attempt?, delayMs?, code?, reason?} with state `connecting`,
 * `open`, `reconnecting` or `closed`; `open` {protocol} (send the handshake now); `frame`
 * (the data, a string or an ArrayBuffer); `tick` (a heartbeat went out); `closed`
 * {code, reason, willReconnect}; `error` (a RoomError).
 */
export class Connection extends Emitter {
  #o;
  #ws = null;
  #gen = 0; // bumped by every attempt and by close(): stale callbacks compare it
  #attempt = 0;
  #state = "idle";
  #stopped = false;
  #lastClose = null;
  #connectTimer = null;
  #retryTimer = null;
  #heartbeat = null;
  #pongTimer = null;

  constructor(opts) {
    super();
    if (typeof opts?.url !== "function") throw new TypeError("url is required");
    this.#o = { connectTimeoutMs: 15000, heartbeatMs: 25000, pongTimeoutMs: 10000, ...opts };
  }

  /** `idle`, `connecting`, `open`, `reconnecting` or `closed`. */
  get state() { return this.#state; }

  /** The subprotocol the server chose on the current socket ("" when none or not open). */
  get protocol() { return this.#ws?.protocol ?? ""; }

  /** Reconnect backoff, `{ baseMs, capMs }`; may be changed at any time. */
  get backoff() { return this.#o.backoff; }
  set backoff(b) { this.#o.backoff = b; }

  /** Whether a fresh token can be had for each connect. */
  get canRefreshToken() { return this.#provider() !== null; }

  /** Opens the connection, and keeps reopening it until `close()`. */
  connect() {
    if (!this.#stopped && this.#state !== "idle" && this.#state !== "closed") return this; // already at it
    this.#stopped = false;
    this.#open();
    return this;
  }

  /** The owner's handshake succeeded: the connection is open (`detail` goes with the status). */
  ready(detail = {}) {
    clearTimeout(this.#connectTimer);
    this.#attempt = 0;
    this.#setState("open", detail);
  }

  /** Sends `data` when the socket is open; answers whether it was sent. */
  send(data) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(data);
    return true;
  }

  /** Closes for good: no reconnect. */
  close(code = 1000, reason = "bye") {
    const wasActive = !this.#stopped && this.#state !== "idle" && this.#state !== "closed";
    this.#stopped = true;
    this.#gen++;
    this.#clearTimers();
    clearTimeout(this.#retryTimer);
    const ws = this.#detach();
    if (ws) try { ws.close(code, reason); } catch {}
    if (!wasActive) return;
    this.#lastClose = code;
    emit(this, "closed", { code, reason, willReconnect: false });
    this.#setState("closed", { code, reason });
  }

  /** Drops the current socket without stopping: it reconnects as after a lost connection. */
  drop(reason = "dropped by client") {
    if (this.#ws) this.#abandon(this.#ws, reason);
  }

  #provider() {
    if (typeof this.#o.getToken === "function") return this.#o.getToken;
    return typeof this.#o.token === "function" ? this.#o.token : null;
  }

  #setState(state, detail = {}) {
    this.#state = state;
    emit(this, "status", { state, ...detail });
  }

  #open() {
    const gen = ++this.#gen;
    this.#setState(this.#attempt === 0 ? "connecting" : "reconnecting", { attempt: this.#attempt });
    const provider = this.#provider();
    if (!provider) {
      this.#openSocket(this.#o.url(typeof this.#o.token === "string" ? this.#o.token : undefined));
      return;
    }
    const reason = this.#lastClose === CLOSE_TOKEN_EXPIRED ? "token_expired" : this.#lastClose === null ? "connect" : "reconnect";
    Promise.resolve()
      .then(() => provider({ attempt: this.#attempt, reason }))
      .then(
        (token) => {
          if (gen !== this.#gen || this.#stopped) return; // closed (or reopened) meanwhile
          this.#openSocket(this.#o.url(token));
        },
        (e) => {
          if (gen !== this.#gen || this.#stopped) return;
          emit(this, "error", new RoomError("token_unavailable", `the token provider failed: ${e?.message ?? e}`));
          this.#retry({ code: 1006, reason: "token provider failed" });
        },
      );
  }

  #openSocket(url) {
    const WS = this.#o.WebSocket ?? globalThis.WebSocket;
    const ws = new WS(url, this.#o.protocols);
    ws.binaryType = "arraybuffer";
    this.#ws = ws;
    // From here to ready(): connectTimeoutMs, or this attempt is abandoned and retried.
    clearTimeout(this.#connectTimer);
    this.#connectTimer = setTimeout(() => this.#abandon(ws, "connect timeout"), this.#o.connectTimeoutMs);
    ws.onopen = () => {
      this.#startHeartbeat(ws);
      emit(this, "open", { protocol: ws.protocol ?? "" });
    };
    ws.onmessage = (ev) => {
      // Any frame before the deadline proves the connection alive.
      clearTimeout(this.#pongTimer);
      this.#pongTimer = null;
      emit(this, "frame", ev.data);
    };
    ws.onclose = (ev) => {
      if (this.#ws === ws) this.#closed(ev);
    };
    ws.onerror = () => {}; // onclose follows
  }

  #startHeartbeat(ws) {
    clearInterval(this.#heartbeat);
    clearTimeout(this.#pongTimer);
    this.#pongTimer = null;
    this.#heartbeat = setInterval(() => {
      if (ws.readyState !== 1) return;
      ws.send(PING);
      this.#pongTimer ??= setTimeout(() => this.#abandon(ws, "pong timeout"), this.#o.pongTimeoutMs);
      emit(this, "tick");
    }, this.#o.heartbeatMs);
  }

  /** Detaches the current socket (its callbacks no longer reach this object) and answers it. */
  #detach() {
    const ws = this.#ws;
    if (ws) ws.onopen = ws.onmessage = ws.onclose = null;
    this.#ws = null;
    return ws;
  }

  /**
   * Gives up on `ws` (connect timeout, no pong, drop): detaches it, closes it without waiting
   * for the close handshake (a dead network never completes one) and goes on as after a lost
   * connection (1006).
   */
  #abandon(ws, reason) {
    if (this.#ws !== ws) return;
    this.#detach();
    try { ws.close(4000, reason); } catch {}
    this.#closed({ code: 1006, reason });
  }

  #clearTimers() {
    clearInterval(this.#heartbeat);
    clearTimeout(this.#pongTimer);
    clearTimeout(this.#connectTimer);
    this.#pongTimer = null;
  }

  #closed(ev) {
    this.#clearTimers();
    this.#ws = null;
    this.#lastClose = ev.code;
    const action = this.#stopped ? "stop" : closeAction(ev.code, { canRefreshToken: this.canRefreshToken });
    const willReconnect = action !== "stop";
    emit(this, "closed", { code: ev.code, reason: ev.reason, willReconnect });
    if (willReconnect) return this.#retry(ev);
    if (ev.code === CLOSE_TOKEN_EXPIRED && !this.#stopped) {
      emit(this, "error", new RoomError("token_expired",
        "the token expired and no token provider is configured (pass `token: async () => jwt`) — not reconnecting"));
    }
    this.#setState("closed", { code: ev.code, reason: ev.reason });
  }

  #retry(ev) {
    const delay = backoffDelay(this.#attempt++, this.#o.backoff);
    this.#setState("reconnecting", { attempt: this.#attempt, delayMs: delay, code: ev.code, reason: ev.reason });
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#open(), delay);
  }
}
