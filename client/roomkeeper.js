// Roomkeeper client library — the reference client for docs/PROTOCOL.md.
//
// An ES module with no dependencies and no build step:
//
//   import { RoomClient } from "/roomkeeper.js";
//   const room = new RoomClient({ room: "lobby", name: "ann" });
//   room.on("message", (m) => console.log(m.from.name, m.body));
//   room.on("presence", (members) => render(members));
//   room.on("status", (s) => console.log(s.state));          // connecting | open | reconnecting | closed
//   room.on("recovery", (r) => console.log(r.recovered));     // true: nothing missed; false: reloaded
//   room.connect();
//   const { offset } = await room.publish({ text: "hi" });    // resolves on the server's ack
//
// What it does for you:
// - reconnects with exponential backoff and full jitter (never for "do not reconnect" codes
//   4500–4999), and resumes from the last offset it saw (`since`), reporting whether the gap
//   was filled exactly (`recovered: true`) or the view was reloaded (`recovered: false`);
// - queues publishes while offline (bounded) and sends them on reconnect with the same ids, so
//   a publish whose ack was lost is de-duplicated by the server, not delivered twice;
// - turns acks into promises with timeouts; errors reject with the server's code;
// - keeps presence (members with connection counts) from welcome/joined/presence/left;
// - speaks JSON or MessagePack (`encoding: "msgpack"`), with a small built-in codec;
// - heartbeats with `{"type":"ping"}` (answered by the runtime without waking the room) and
//   treats a connection that answers nothing within `pongTimeoutMs` of a ping as dead;
// - reports the offset it has processed (`{"type":"seen","offset":N}`) every `seenEvery`
//   messages and on each heartbeat tick, so the room can close it with 4008 (too slow) if it
//   falls far behind, instead of queueing without bound; 4008 reconnects and recovers;
// - gives up on a connect attempt that has no `welcome` within `connectTimeoutMs`, and retries;
// - asks a token provider (`token: async () => jwt`) before every connect, so a token that
//   expired mid-session (close 4001) is replaced; with a static token, 4001 stops the client.

/** Close code: this connection fell more than `ROOM_MAX_LAG_MESSAGES` behind by its `seen`
 *  reports; reconnect and recover with `since` (docs/PROTOCOL.md, "Slow readers"). */
export const CLOSE_TOO_SLOW = 4008;

/**
 * Whether a client may reconnect on its own after close `code` (docs/PROTOCOL.md, "Close
 * codes"): 1xxx and 4000–4499 yes, 4500–4999 no; 4001 (token expired) only when the client can
 * get a fresh token (`canRefreshToken`), since reconnecting with the same token cannot succeed.
 */
export function shouldReconnect(code, { canRefreshToken = false } = {}) {
  if (code === 4001) return canRefreshToken;
  return !(code >= 4500 && code < 5000);
}

/**
 * The next step after close `code`: `"reconnect"` (with backoff, recovering with `since`),
 * `"refresh"` (ask the token provider for a fresh token, then reconnect) or `"stop"`.
 */
export function closeAction(code, { canRefreshToken = false } = {}) {
  if (!shouldReconnect(code, { canRefreshToken })) return "stop";
  return code === 4001 ? "refresh" : "reconnect";
}

/** Exponential backoff with full jitter: a random delay in [0, min(cap, base * 2^attempt)). */
export function backoffDelay(attempt, { baseMs = 500, capMs = 15000, random = Math.random } = {}) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 20));
  return Math.floor(random() * ceiling);
}

function uid() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  return Math.random().toString(36).slice(2) + Date.now().toString(36);
}

// ---------------------------------------------------------------------------------------------
// MessagePack: the subset the protocol uses (nil, bool, numbers, strings, binary, arrays, maps).

const te = new TextEncoder();
const td = new TextDecoder();

export const msgpack = {
  encode(value) {
    const out = [];
    const u8 = (b) => out.push(b & 0xff);
    const be = (n, bytes) => { for (let i = bytes - 1; i >= 0; i--) u8(Number((BigInt(n) >> BigInt(8 * i)) & 0xffn)); };
    const enc = (v) => {
      if (v === null || v === undefined) return u8(0xc0);
      if (v === false) return u8(0xc2);
      if (v === true) return u8(0xc3);
      if (typeof v === "number") {
        if (Number.isInteger(v) && v >= 0 && v < 2 ** 53) {
          if (v < 128) return u8(v);
          if (v < 256) { u8(0xcc); return u8(v); }
          if (v < 65536) { u8(0xcd); return be(v, 2); }
          if (v < 2 ** 32) { u8(0xce); return be(v, 4); }
          u8(0xcf); return be(v, 8);
        }
        if (Number.isInteger(v) && v < 0 && v >= -(2 ** 53)) {
          if (v >= -32) return u8(v);
          if (v >= -128) { u8(0xd0); return u8(v); }
          if (v >= -32768) { u8(0xd1); return be(v & 0xffff, 2); }
          if (v >= -(2 ** 31)) { u8(0xd2); return be(v >>> 0, 4); }
          u8(0xd3); return be(BigInt.asUintN(64, BigInt(v)), 8);
        }
        u8(0xcb);
        const b = new Uint8Array(new Float64Array([v]).buffer).reverse();
        return b.forEach(u8);
      }
      if (typeof v === "string") {
        const b = te.encode(v);
        if (b.length < 32) u8(0xa0 | b.length);
        else if (b.length < 256) { u8(0xd9); u8(b.length); }
        else if (b.length < 65536) { u8(0xda); be(b.length, 2); }
        else { u8(0xdb); be(b.length, 4); }
        return b.forEach(u8);
      }
      if (v instanceof Uint8Array) {
        if (v.length < 256) { u8(0xc4); u8(v.length); }
        else if (v.length < 65536) { u8(0xc5); be(v.length, 2); }
        else { u8(0xc6); be(v.length, 4); }
        return v.forEach(u8);
      }
      if (Array.isArray(v)) {
        if (v.length < 16) u8(0x90 | v.length);
        else if (v.length < 65536) { u8(0xdc); be(v.length, 2); }
        else { u8(0xdd); be(v.length, 4); }
        return v.forEach(enc);
      }
      if (typeof v === "object") {
        const keys = Object.keys(v).filter((k) => v[k] !== undefined);
        if (keys.length < 16) u8(0x80 | keys.length);
        else if (keys.length < 65536) { u8(0xde); be(keys.length, 2); }
        else { u8(0xdf); be(keys.length, 4); }
        return keys.forEach((k) => { enc(k); enc(v[k]); });
      }
      throw new TypeError(`cannot encode ${typeof v} as MessagePack`);
    };
    enc(value);
    return new Uint8Array(out);
  },

  decode(bytes) {
    const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    let p = 0;
    const need = (n) => { if (p + n > b.length) throw new RangeError("truncated MessagePack"); };
    const str = (n) => { need(n); const s = td.decode(b.subarray(p, p + n)); p += n; return s; };
    const bin = (n) => { need(n); const s = b.slice(p, p + n); p += n; return s; };
    const arr = (n) => { const a = []; for (let i = 0; i < n; i++) a.push(dec()); return a; };
    const map = (n) => { const o = {}; for (let i = 0; i < n; i++) { const k = dec(); o[k] = dec(); } return o; };
    const rd = (f, n) => { need(n); const v = dv[f](p); p += n; return v; };
    const u64 = () => { need(8); const v = dv.getBigUint64(p); p += 8; return Number(v); };
    const i64 = () => { need(8); const v = dv.getBigInt64(p); p += 8; return Number(v); };
    const dec = () => {
      need(1);
      const t = b[p++];
      if (t < 0x80) return t;
      if (t < 0x90) return map(t & 0x0f);
      if (t < 0xa0) return arr(t & 0x0f);
      if (t < 0xc0) return str(t & 0x1f);
      if (t >= 0xe0) return t - 256;
      switch (t) {
        case 0xc0: return null;
        case 0xc2: return false;
        case 0xc3: return true;
        case 0xc4: return bin(rd("getUint8", 1));
        case 0xc5: return bin(rd("getUint16", 2));
        case 0xc6: return bin(rd("getUint32", 4));
        case 0xca: return rd("getFloat32", 4);
        case 0xcb: return rd("getFloat64", 8);
        case 0xcc: return rd("getUint8", 1);
        case 0xcd: return rd("getUint16", 2);
        case 0xce: return rd("getUint32", 4);
        case 0xcf: return u64();
        case 0xd0: return rd("getInt8", 1);
        case 0xd1: return rd("getInt16", 2);
        case 0xd2: return rd("getInt32", 4);
        case 0xd3: return i64();
        case 0xd9: return str(rd("getUint8", 1));
        case 0xda: return str(rd("getUint16", 2));
        case 0xdb: return str(rd("getUint32", 4));
        case 0xdc: return arr(rd("getUint16", 2));
        case 0xdd: return arr(rd("getUint32", 4));
        case 0xde: return map(rd("getUint16", 2));
        case 0xdf: return map(rd("getUint32", 4));
        default: throw new RangeError(`unsupported MessagePack type 0x${t.toString(16)}`);
      }
    };
    const v = dec();
    if (p !== b.length) throw new RangeError("trailing bytes after MessagePack value");
    return v;
  },
};

// ---------------------------------------------------------------------------------------------

/** An error answered by the server (`error` frame or HTTP JSON error). */
export class RoomError extends Error {
  constructor(code, message, id) {
    super(`${code}: ${message}`);
    this.code = code;
    this.id = id;
  }
}

/**
 * A connection to one room that survives disconnects.
 *
 * Options: `room` (name or private id), `name` (display name), `token` (optional: a JWT
 * string, or a token provider — a function, sync or async, returning the JWT to use, called
 * before every connect with `{ attempt, reason }`, reason `"connect"`, `"reconnect"` or
 * `"token_expired"`; `getToken` is the same as a function-valued `token` and wins over it),
 * `meta` (member metadata), `encoding` ("json" | "msgpack"), `history` (messages to replay on
 * a fresh join), `baseUrl` (default: this page's origin), `ackTimeoutMs` (10 000),
 * `maxQueue` (publishes kept while offline, 100), `heartbeatMs` (25 000), `pongTimeoutMs`
 * (10 000: after a ping, how long to wait for the pong — any frame counts — before dropping
 * the connection and reconnecting), `connectTimeoutMs` (15 000: from opening the socket to the
 * `welcome`; longer and the attempt is abandoned and retried with backoff),
 * `seenEvery` (100: report the processed offset with a `seen` frame after this many messages,
 * besides on every heartbeat tick when it moved; 0 reports on heartbeat ticks only),
 * `backoff` ({ baseMs, capMs }), `WebSocket` (constructor, for non-browser use).
 */
export class RoomClient {
  constructor(opts) {
    if (!opts?.room) throw new TypeError("room is required");
    this.opts = {
      encoding: "json", history: 50, ackTimeoutMs: 10000, maxQueue: 100, heartbeatMs: 25000,
      pongTimeoutMs: 10000, connectTimeoutMs: 15000, seenEvery: 100, ...opts,
    };
    this.seenSent = -1; // the offset last reported with `seen` on this connection (-1: none)
    this.handlers = new Map();
    this.members = new Map();
    this.epoch = null;
    this.offset = 0;
    this.state = "idle";
    this.attempt = 0;
    this.pending = new Map(); // id -> { frame, resolve, reject, timer, sent }
    this.queue = []; // ids not yet sent (offline)
    this.ws = null;
    this.me = null;
    this.stopped = false;
    this.generation = 0; // bumped by every open() and close(): stale callbacks check it
    this.lastClose = null; // the code that ended the previous connection (for the token provider)
  }

  /** The token provider (`getToken`, or a function-valued `token`), or null for a static token. */
  get tokenProvider() {
    if (typeof this.opts.getToken === "function") return this.opts.getToken;
    return typeof this.opts.token === "function" ? this.opts.token : null;
  }

  /** Registers a handler: message, presence, status, recovery, welcome, error, closed. */
  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(fn);
    return () => this.handlers.get(event).delete(fn);
  }

  emit(event, payload) {
    for (const fn of this.handlers.get(event) ?? []) {
      try { fn(payload); } catch (e) { console.error(e); }
    }
  }

  setState(state, detail = {}) {
    this.state = state;
    this.emit("status", { state, ...detail });
  }

  url(token = typeof this.opts.token === "string" ? this.opts.token : undefined) {
    const base = this.opts.baseUrl ?? globalThis.location?.origin ?? "http://127.0.0.1:8787";
    const u = new URL(`/api/rooms/${encodeURIComponent(this.opts.room)}/ws`, base);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    if (token) u.searchParams.set("token", token);
    return u.toString();
  }

  /** Opens the connection (and keeps reopening it until `close()`). */
  connect() {
    this.stopped = false;
    this.open();
    return this;
  }

  /** Asks the token provider (if any) for this attempt's token, then opens the socket. */
  open() {
    const gen = ++this.generation;
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting", { attempt: this.attempt });
    const provider = this.tokenProvider;
    if (!provider) return this.openSocket(this.url());
    const reason = this.lastClose === 4001 ? "token_expired" : this.lastClose === null ? "connect" : "reconnect";
    Promise.resolve()
      .then(() => provider({ attempt: this.attempt, reason }))
      .then(
        (token) => {
          if (gen !== this.generation || this.stopped) return; // closed (or reopened) meanwhile
          this.openSocket(this.url(token));
        },
        (e) => {
          if (gen !== this.generation || this.stopped) return;
          this.emit("error", new RoomError("token_unavailable", `the token provider failed: ${e?.message ?? e}`));
          this.retry({ code: 1006, reason: "token provider failed" });
        },
      );
  }

  openSocket(url) {
    const WS = this.opts.WebSocket ?? globalThis.WebSocket;
    const protocols = this.opts.encoding === "msgpack" ? ["roomkeeper.v1.msgpack"] : ["roomkeeper.v1.json"];
    const ws = new WS(url, protocols);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.seenSent = -1; // a new connection has reported nothing
    // From here to the welcome: connectTimeoutMs, or this attempt is abandoned and retried.
    clearTimeout(this.connectTimer);
    this.connectTimer = setTimeout(() => this.abandon(ws, "connect timeout"), this.opts.connectTimeoutMs);
    ws.onopen = () => {
      const join = { type: "join", name: this.opts.name, meta: this.opts.meta };
      if (this.epoch) join.since = { epoch: this.epoch, offset: this.offset };
      join.history = this.opts.history;
      this.sendFrame(join);
      this.startHeartbeat();
    };
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = (ev) => this.closed(ev);
    ws.onerror = () => {}; // onclose follows
  }

  /**
   * Gives up on `ws` (connect timeout, no pong): detaches it, closes it without waiting for the
   * close handshake (a dead network never completes one) and reconnects as after a lost
   * connection (1006).
   */
  abandon(ws, reason) {
    if (this.ws !== ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    try { ws.close(4000, reason); } catch {}
    this.closed({ code: 1006, reason });
  }

  sendFrame(frame) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(this.opts.encoding === "msgpack" ? msgpack.encode(frame) : JSON.stringify(frame));
    return true;
  }

  startHeartbeat() {
    clearInterval(this.heartbeat);
    clearTimeout(this.pongTimer);
    this.pongTimer = null;
    const ws = this.ws;
    this.heartbeat = setInterval(() => {
      if (ws.readyState !== 1) return;
      ws.send('{"type":"ping"}');
      // Any frame before the deadline proves the connection alive (see receive()).
      this.pongTimer ??= setTimeout(() => this.abandon(ws, "pong timeout"), this.opts.pongTimeoutMs);
      // The ping must stay byte-exact (the runtime answers it), so the offset goes separately.
      if (this.offset > this.seenSent) this.reportSeen();
    }, this.opts.heartbeatMs);
  }

  /** Tells the room the offset processed so far (`seen`); only once joined (`welcome`). */
  reportSeen() {
    if (this.state !== "open" || this.offset === this.seenSent) return;
    if (this.sendFrame({ type: "seen", offset: this.offset })) this.seenSent = this.offset;
  }

  /** After messages were handled: reports when `seenEvery` more were processed. */
  maybeReportSeen() {
    const every = this.opts.seenEvery;
    if (every > 0 && this.offset - Math.max(this.seenSent, 0) >= every) this.reportSeen();
  }

  receive(data) {
    clearTimeout(this.pongTimer);
    this.pongTimer = null;
    let f;
    try {
      f = typeof data === "string" ? JSON.parse(data) : msgpack.decode(new Uint8Array(data));
    } catch (e) {
      this.emit("error", new RoomError("client_decode", String(e)));
      return;
    }
    this.handle(f);
    if (f.type === "message" || f.type === "batch") this.maybeReportSeen();
  }

  handle(f) {
    switch (f.type) {
      case "pong": return;
      case "welcome": return this.welcome(f);
      case "message":
        if (f.offset <= this.offset) return; // already seen (never expected; a safety net)
        this.offset = f.offset;
        return this.emit("message", f);
      case "batch": // the room's batch window coalesced several message frames into one
        for (const m of f.messages) this.handle(m);
        return;
      case "ack": return this.settle(f.id, null, f);
      case "joined":
      case "presence":
        this.members.set(f.member.id, f.member);
        return this.emit("presence", [...this.members.values()]);
      case "left":
        this.members.delete(f.member.id);
        return this.emit("presence", [...this.members.values()]);
      case "error": {
        const err = new RoomError(f.code, f.message, f.id);
        if (f.id && this.pending.has(f.id)) return this.settle(f.id, err);
        return this.emit("error", err);
      }
    }
  }

  welcome(f) {
    const resumed = this.epoch !== null;
    clearTimeout(this.connectTimer);
    this.attempt = 0;
    this.me = f.me;
    this.members = new Map(f.members.map((m) => [m.id, m]));
    if (resumed) {
      const recovered = f.recovered === true;
      if (!recovered) this.offset = 0; // reloaded: accept the history that follows as new
      this.emit("recovery", { recovered, replayed: f.replayed, epochChanged: f.epoch !== this.epoch });
    } else {
      this.offset = 0;
    }
    this.epoch = f.epoch;
    this.emit("welcome", f);
    this.emit("presence", [...this.members.values()]);
    this.setState("open", { room: f.room });
    // Resend everything not yet acknowledged, in order, with the same ids.
    const ids = [...this.pending.keys()];
    this.queue = [];
    for (const id of ids) this.sendFrame(this.pending.get(id).frame);
  }

  closed(ev) {
    clearInterval(this.heartbeat);
    clearTimeout(this.pongTimer);
    clearTimeout(this.connectTimer);
    this.pongTimer = null;
    this.ws = null;
    this.lastClose = ev.code;
    const action = this.stopped ? "stop" : closeAction(ev.code, { canRefreshToken: this.tokenProvider !== null });
    const reconnect = action !== "stop";
    this.emit("closed", { code: ev.code, reason: ev.reason, willReconnect: reconnect });
    if (!reconnect) {
      if (ev.code === 4001 && !this.stopped) {
        this.emit("error", new RoomError("token_expired",
          "the token expired and no token provider is configured (pass `token: async () => jwt`) — not reconnecting"));
      }
      this.setState("closed", { code: ev.code, reason: ev.reason });
      for (const id of [...this.pending.keys()]) this.settle(id, new RoomError("closed", `connection closed (${ev.code})`));
      return;
    }
    this.retry(ev);
  }

  retry(ev) {
    const delay = backoffDelay(this.attempt++, this.opts.backoff);
    this.setState("reconnecting", { attempt: this.attempt, delayMs: delay, code: ev.code, reason: ev.reason });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  settle(id, err, ack) {
    const p = this.pending.get(id);
    if (!p) return;
    clearTimeout(p.timer);
    this.pending.delete(id);
    err ? p.reject(err) : p.resolve({ offset: ack.offset, duplicate: ack.duplicate === true });
  }

  /**
   * Publishes a message; resolves with `{offset, duplicate}` when the server has stored it,
   * rejects with a RoomError (server code, or `timeout` / `queue_full` / `closed`).
   */
  publish(body, { id = uid(), timeoutMs = this.opts.ackTimeoutMs } = {}) {
    return new Promise((resolve, reject) => {
      if (this.pending.size >= this.opts.maxQueue) {
        reject(new RoomError("queue_full", `more than ${this.opts.maxQueue} publishes waiting`));
        return;
      }
      const frame = { type: "publish", body, id };
      const timer = setTimeout(() => this.settle(id, new RoomError("timeout", `no ack within ${timeoutMs} ms`)), timeoutMs);
      this.pending.set(id, { frame, resolve, reject, timer });
      if (this.state !== "open" || !this.sendFrame(frame)) this.queue.push(id);
    });
  }

  /** Publishes waiting for an ack or queued while offline. */
  get waiting() {
    return this.pending.size;
  }

  /** Closes for good (no reconnect). */
  close() {
    this.stopped = true;
    this.generation++;
    clearTimeout(this.retryTimer);
    clearTimeout(this.connectTimer);
    clearTimeout(this.pongTimer);
    clearInterval(this.heartbeat);
    this.ws?.close(1000, "bye");
  }

  /** Drops the socket without closing the client (it reconnects and recovers). For demos and tests. */
  drop() {
    this.ws?.close(4000, "dropped by client");
  }
}

/** Mints a local development token (only where ENVIRONMENT=local). */
export async function devToken(claims, baseUrl = globalThis.location?.origin) {
  const r = await fetch(new URL("/api/dev/token", baseUrl), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(claims),
  });
  const body = await r.json();
  if (!r.ok) throw new RoomError(body.error.code, body.error.message);
  return body.token;
}
