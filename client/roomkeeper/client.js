// Client: one socket, many rooms (protocol v2, docs/PROTOCOL.md "Protocol v2"), with v1 as a
// fallback — a server without `/api/ws` gets one RoomClient socket per room, behind the same
// Room objects, so the application code does not change.
//
//   const client = new Client({ token: async () => jwt });
//   const lobby = client.room("lobby", { name: "ann" });
//   lobby.on("message", (m) => render(m));
//   client.connect();
//   await lobby.publish({ text: "hi" });

import { Connection } from "./connection.js";
import { emit, Emitter } from "./events.js";
import { backoffDelay, RoomError, shouldReconnect, uid } from "./policy.js";
import { DEFAULTS, RoomClient } from "./room.js";
import { Outbox, RoomCursor } from "./state.js";
import { decodeFrame, encodeFrame, origin, socketUrl, subprotocol } from "./wire.js";

const KEY = Symbol("roomkeeper.room"); // only this module constructs Rooms
const RELINK = Symbol("roomkeeper.relink"); // only this module moves a Room to another socket
// What a Client offers its rooms, under symbols this module keeps: not part of its surface.
const SEND = Symbol("send");
const FORGET = Symbol("forget");
const READY = Symbol("ready");
const V1_STATUS = Symbol("v1Status");
const HANDLED = Symbol("handled");
const ROOM_FRAMES = new Set(["subscribed", "unsubscribed", "message", "batch", "ack", "joined", "presence", "left"]);

/**
 * One room of a Client: its events are a RoomClient's (`status`, `subscribed` — the
 * `subscribed` or v1 `welcome` frame —, `message`, `presence`, `recovery`, `error`, `closed`),
 * and so are `publish` and the getters. Made by `client.room(name)`.
 */
export class Room extends Emitter {
  #link;

  constructor(key, link) {
    super();
    if (key !== KEY) throw new TypeError("rooms are made by client.room(name)");
    this.#link = link;
  }

  /** The room's name or private id. */
  get name() { return this.#link.name; }
  /** `subscribing`, `open`, `reconnecting` or `closed` (left, refused, or the client closed). */
  get state() { return this.#link.state; }
  get me() { return this.#link.me; }
  get members() { return this.#link.members; }
  get epoch() { return this.#link.epoch; }
  get offset() { return this.#link.offset; }
  /** Publishes waiting for an ack, or queued until the room is (re)subscribed. */
  get waiting() { return this.#link.waiting; }

  /** As RoomClient's `publish`: resolves with `{offset, duplicate}` on the room's ack. */
  publish(body, opts = {}) { return this.#link.publish(body, opts); }

  /** Leaves the room; publishes still waiting fail with `closed`. */
  leave() { this.#link.leave(); }

  [RELINK](key, link) {
    if (key === KEY) this.#link = link;
  }
}

/** A room carried by the shared v2 socket. */
class MuxLink {
  state = "subscribing";
  #client;
  #o;
  #cursor = new RoomCursor();
  #outbox;
  #retry = 0;
  #retryTimer = null;
  #leaving = false;

  constructor(client, name, opts) {
    this.name = name;
    this.opts = opts;
    this.#client = client;
    this.#o = opts;
    this.#outbox = new Outbox({ maxQueue: opts.maxQueue });
    this.room = new Room(KEY, this);
  }

  get me() { return this.#cursor.me; }
  get members() { return this.#cursor.members; }
  get epoch() { return this.#cursor.epoch; }
  get offset() { return this.#cursor.offset; }
  /** The offset to report with `seen`. */
  get read() { return this.#cursor.read; }
  get waiting() { return this.#outbox.size; }
  /** Hands every publish still waiting to `publish(body, {id, timeoutMs})` (the fallback). */
  transfer(publish) { this.#outbox.transfer((f) => publish(f.body, { id: f.id, timeoutMs: this.#o.ackTimeoutMs })); }

  #setState(state, detail = {}) {
    this.state = state;
    emit(this.room, "status", { state, room: this.name, ...detail });
  }

  /** The socket is ready: (re)subscribe, recovering with `since` after the first time. */
  subscribe() {
    clearTimeout(this.#retryTimer);
    const f = { type: "subscribe", room: this.name, name: this.#o.name, meta: this.#o.meta, history: this.#o.history };
    const since = this.#cursor.since;
    if (since) f.since = since;
    if (this.state !== "subscribing") this.#setState("subscribing");
    this.#client[SEND](f);
  }

  /** The socket was lost (`closed` event `e`); it reconnects. */
  lost(e = {}) {
    clearTimeout(this.#retryTimer);
    if (this.state === "closed") return;
    emit(this.room, "closed", { code: e.code, reason: e.reason ?? "", willReconnect: true });
    if (this.state === "open" || this.state === "subscribing") this.#setState("reconnecting");
  }

  /** For good: the client closed or stopped, or the room refused or closed this socket. */
  end(err, detail = {}) {
    clearTimeout(this.#retryTimer);
    this.#outbox.failAll(err);
    if (this.state === "closed") return;
    emit(this.room, "closed", { code: detail.code ?? 1000, reason: detail.reason ?? err.message, willReconnect: false });
    this.#setState("closed", detail);
  }

  publish(body, { id = uid(), timeoutMs = this.#o.ackTimeoutMs } = {}) {
    if (this.state === "closed") return Promise.reject(new RoomError("closed", "this room was left or closed", id, this.name));
    const frame = { type: "publish", room: this.name, body, id };
    const acked = this.#outbox.add(frame, timeoutMs);
    if (this.state === "open" && this.#outbox.has(id)) this.#client[SEND](frame);
    return acked;
  }

  leave() {
    if (this.state === "closed") return;
    this.#leaving = true;
    if (this.#client[READY]) this.#client[SEND]({ type: "unsubscribe", room: this.name });
    this.#client[FORGET](this);
    this.end(new RoomError("closed", "left the room", undefined, this.name), { reason: "left" });
  }

  /** A frame naming this room. */
  handle(f) {
    switch (f.type) {
      case "subscribed": {
        this.#retry = 0;
        const report = this.#cursor.welcome(f);
        if (report) emit(this.room, "recovery", report);
        emit(this.room, "subscribed", f);
        emit(this.room, "presence", this.#cursor.members);
        this.#setState("open");
        for (const frame of this.#outbox.frames()) this.#client[SEND](frame);
        return;
      }
      case "message":
        // Only after `subscribed`: a frame of an earlier subscription of the same name (left
        // and joined again) is not this one's.
        if (this.state === "open" && this.#cursor.accept(f)) {
          emit(this.room, "message", f);
          this.#client[HANDLED]();
        }
        return;
      case "batch":
        for (const m of f.messages) this.handle(m);
        return;
      case "ack": this.#outbox.settle(f.id, null, f); return;
      case "joined":
      case "presence":
      case "left":
        if (this.state === "open") emit(this.room, "presence", this.#cursor.presence(f));
        return;
      case "unsubscribed":
        if (this.#leaving) this.end(new RoomError("closed", "left the room", undefined, this.name));
        else if (typeof f.code === "number") this.#closedByRoom(f);
        return;
      case "error": return this.#error(f);
      default: return;
    }
  }

  /**
   * The room closed this subscription (`unsubscribed` with a close code): 4000–4499 subscribe
   * again after a backoff, recovering with `since`; 4500 and up end the room.
   */
  #closedByRoom(f) {
    if (this.state === "closed") return;
    if (shouldReconnect(f.code)) {
      emit(this.room, "closed", { code: f.code, reason: f.reason ?? "", willReconnect: true });
      this.#setState("subscribing");
      this.#retryTimer = setTimeout(() => this.#client[READY] && this.subscribe(), backoffDelay(this.#retry++, this.#o.backoff));
      return;
    }
    const err = new RoomError("closed", f.reason || `closed by the room (${f.code})`, undefined, this.name);
    this.#client[FORGET](this);
    emit(this.room, "error", err);
    this.end(err, { code: f.code, reason: f.reason });
  }

  #error(f) {
    const err = new RoomError(f.code, f.message, f.id, this.name);
    if (f.id && this.#outbox.settle(f.id, err)) return;
    if (this.state === "subscribing") {
      if (f.code === "unavailable") {
        // Nothing was stored; the room could not be reached this time: subscribe again later.
        emit(this.room, "error", err);
        this.#retryTimer = setTimeout(() => this.#client[READY] && this.subscribe(), backoffDelay(this.#retry++, this.#o.backoff));
        return;
      }
      // Refused (room_forbidden, room_not_found, too_many_rooms, …): for good, not resubscribed.
      this.#client[FORGET](this);
      emit(this.room, "error", err);
      this.end(err, { code: f.code });
      return;
    }
    emit(this.room, "error", err);
  }
}

/** A room carried by its own v1 socket (the fallback). */
class V1Link {
  constructor(client, name, opts, room = null) {
    this.name = name;
    this.room = room ?? new Room(KEY, this);
    this.room[RELINK](KEY, this);
    this.client = client;
    this.rc = new RoomClient({ ...opts, room: name });
    for (const type of ["message", "presence", "recovery", "error", "closed"]) {
      this.rc.on(type, (d) => emit(this.room, type, d));
    }
    // A Room's states are the same whichever socket carries it.
    this.rc.on("status", (s) => emit(this.room, "status", { ...s, state: V1Link.roomState(s.state), room: name }));
    this.rc.on("welcome", (f) => emit(this.room, "subscribed", f));
    this.rc.on("status", () => client[V1_STATUS]());
  }
  static roomState(s) {
    return s === "connecting" || s === "idle" ? "subscribing" : s;
  }
  get state() { return V1Link.roomState(this.rc.state); }
  get me() { return this.rc.me; }
  get members() { return this.rc.members; }
  get epoch() { return this.rc.epoch; }
  get offset() { return this.rc.offset; }
  get waiting() { return this.rc.waiting; }
  publish(body, opts) { return this.rc.publish(body, opts); }
  leave() {
    this.client[FORGET](this);
    this.rc.close();
  }
}

/**
 * One connection to Roomkeeper for any number of rooms.
 *
 * Options: everything RoomClient takes but `room` (they become each room's defaults; `name`,
 * `meta` and `history` may also be given per room), and `protocol`: `"auto"` (default: v2,
 * and v1 if the server has no `/api/ws`), `"v2"` or `"v1"`; `fetch` (for the `"auto"` probe,
 * default `globalThis.fetch`).
 *
 * Events: `status` (as RoomClient's; in v1 mode the least-connected room's state), `ready`
 * {conn, user} (v2), `mode` {mode: "v1", reason} (fell back), `error`, `closed`.
 */
export class Client extends Emitter {
  #o;
  #conn = null;
  #links = new Map(); // room name -> MuxLink | V1Link
  #mode;
  #ready = null; // the v2 `ready` frame of the current socket
  #everReady = false;
  #seenSent = new Map(); // room -> the offset last reported with `seen` on this socket
  #unreported = 0; // messages handled since the last `seen`
  #probing = false;
  #connected = false;
  #v1State = "idle";

  constructor(opts = {}) {
    super();
    this.#o = { ...DEFAULTS, protocol: "auto", ...opts };
    if (!["auto", "v2", "v1"].includes(this.#o.protocol)) throw new TypeError(`protocol must be auto, v2 or v1, not ${this.#o.protocol}`);
    this.#mode = this.#o.protocol === "v1" ? "v1" : "v2";
    if (this.#mode === "v2") this.#conn = this.#connection();
  }

  /** `"v2"` (one socket) or `"v1"` (a socket per room). */
  get mode() { return this.#mode; }
  /** As RoomClient's `state`, for the shared socket (v1: the least-connected room's). */
  get state() { return this.#mode === "v2" ? this.#conn.state : this.#v1State; }
  /** The socket's id and user from the server's `ready` (v2; null before it). */
  get conn() { return this.#ready?.conn ?? null; }
  get user() { return this.#ready?.user ?? null; }
  /** The rooms joined and not left. */
  get rooms() { return [...this.#links.values()].map((l) => l.room); }
  /** Reconnect backoff `{ baseMs, capMs }` of every socket; may be changed at any time. */
  get backoff() { return this.#o.backoff; }
  set backoff(b) {
    this.#o.backoff = b;
    if (this.#conn) this.#conn.backoff = b;
    for (const l of this.#links.values()) if (l.rc) l.rc.backoff = b;
  }

  /**
   * The room `name` (a name or private id), joined now or on connect: `opts` are `name`,
   * `meta`, `history`, `maxQueue`, `ackTimeoutMs`. The same name answers the same Room until
   * it is left.
   */
  room(name, opts = {}) {
    if (!name) throw new TypeError("room name is required");
    const have = this.#links.get(name);
    if (have) return have.room;
    const link = this.#mode === "v2" ? new MuxLink(this, name, { ...this.#o, ...opts }) : this.#v1Link(name, opts);
    this.#links.set(name, link);
    if (this.#mode === "v2" && this[READY]) link.subscribe();
    if (link.rc && this.#connected) link.rc.connect();
    return link.room;
  }

  /** Connects (and keeps reconnecting until `close()`). */
  connect() {
    this.#connected = true;
    if (this.#mode === "v2") this.#conn.connect();
    else for (const l of this.#links.values()) l.rc.connect();
    return this;
  }

  /** Closes every socket for good; every room ends `closed`. */
  close() {
    this.#connected = false;
    if (this.#mode === "v2") this.#conn.close(1000, "bye");
    else for (const l of this.#links.values()) l.rc.close();
  }

  /** Drops the socket(s) without closing: they reconnect and every room recovers. */
  drop() {
    if (this.#mode === "v2") this.#conn.drop();
    else for (const l of this.#links.values()) l.rc.drop();
  }

  // ---- for the rooms (under module-private symbols) --------------------------------------

  /** Whether the v2 socket has had its `ready`. */
  get [READY]() { return this.#ready !== null; }

  [SEND](frame) {
    return this.#conn?.send(encodeFrame(this.#o.encoding, frame)) ?? false;
  }

  [FORGET](link) {
    if (this.#links.get(link.name) === link) this.#links.delete(link.name);
    this.#seenSent.delete(link.name);
  }

  /** A room handled a message: report reads once `seenEvery` more were handled. */
  [HANDLED]() {
    const every = this.#o.seenEvery;
    if (every > 0 && ++this.#unreported >= every) this.#reportSeen();
  }

  /**
   * Tells the server how far each open room has been processed (one `seen` frame for every
   * room that moved), so a socket that falls behind is closed (4008) rather than buffered.
   */
  #reportSeen() {
    if (!this[READY]) return;
    const rooms = {};
    let any = false;
    for (const l of this.#links.values()) {
      if (l.state !== "open" || l.read <= (this.#seenSent.get(l.name) ?? -1)) continue;
      rooms[l.name] = l.read;
      any = true;
    }
    this.#unreported = 0;
    if (!any || !this[SEND]({ type: "seen", rooms })) return;
    for (const [name, offset] of Object.entries(rooms)) this.#seenSent.set(name, offset);
  }

  [V1_STATUS]() {
    const order = ["closed", "reconnecting", "connecting", "idle", "open"];
    const states = [...this.#links.values()].map((l) => l.rc?.state ?? "idle");
    const state = states.length ? states.reduce((a, b) => (order.indexOf(a) <= order.indexOf(b) ? a : b)) : "idle";
    if (state === this.#v1State) return;
    this.#v1State = state;
    emit(this, "status", { state });
  }

  // ---- v2 --------------------------------------------------------------------------------

  #connection() {
    const c = new Connection({
      ...this.#o,
      url: (token) => socketUrl(this.#o.baseUrl, "/api/ws", token),
      protocols: [subprotocol(2, this.#o.encoding)],
    });
    // After a fallback this socket is no longer the client's: its last events go nowhere.
    const mine = (fn) => (d) => { if (this.#conn === c) fn(d); };
    c.on("status", mine((s) => emit(this, "status", s)));
    c.on("error", mine((e) => emit(this, "error", e)));
    c.on("open", mine(() => {
      this.#ready = null;
      this.#seenSent.clear(); // a new socket has reported nothing
      this.#unreported = 0;
    }));
    c.on("tick", mine(() => this.#reportSeen()));
    c.on("frame", mine((data) => this.#receive(data)));
    c.on("closed", mine((e) => this.#lost(e)));
    return c;
  }

  #receive(data) {
    let f;
    try {
      f = decodeFrame(data);
    } catch (e) {
      emit(this, "error", new RoomError("client_decode", String(e)));
      return;
    }
    if (f.type === "ready") {
      this.#ready = f;
      this.#everReady = true;
      this.#conn.ready({ conn: f.conn });
      emit(this, "ready", { conn: f.conn, user: f.user });
      for (const l of this.#links.values()) l.subscribe();
      return;
    }
    if (typeof f.room === "string" && (ROOM_FRAMES.has(f.type) || f.type === "error")) {
      this.#links.get(f.room)?.handle(f);
      return;
    }
    if (f.type === "error") emit(this, "error", new RoomError(f.code, f.message, f.id));
  }

  #lost(e) {
    this.#ready = null;
    emit(this, "closed", e);
    if (!e.willReconnect) {
      const err = new RoomError("closed", `connection closed (${e.code})`);
      for (const l of [...this.#links.values()]) l.end(err, { code: e.code });
      return;
    }
    for (const l of this.#links.values()) l.lost(e);
    if (this.#o.protocol === "auto" && !this.#everReady) this.#probe();
  }

  /**
   * The socket never got a `ready`: ask the server over plain HTTP whether `/api/ws` exists.
   * A v2 server answers 426 (upgrade required) or a JSON error of its own; an older server
   * answers 404 — then every room moves to a v1 socket of its own, keeping its queue.
   */
  async #probe() {
    if (this.#probing) return;
    this.#probing = true;
    try {
      const fetchFn = this.#o.fetch ?? globalThis.fetch;
      const r = await fetchFn(new URL("/api/ws", origin(this.#o.baseUrl)));
      if (r.status === 404 && this.#mode === "v2" && !this.#everReady) this.#fallBack(`GET /api/ws answered ${r.status}`);
    } catch {
      // Unreachable: keep retrying v2 with backoff; the next failure probes again.
    } finally {
      this.#probing = false;
    }
  }

  #fallBack(reason) {
    const conn = this.#conn;
    this.#conn = null;
    this.#mode = "v1";
    // Stop the v2 socket without telling anyone it closed: the rooms go on over v1.
    conn.close(1000, "falling back to v1");
    const links = [...this.#links.values()];
    this.#links.clear();
    emit(this, "mode", { mode: "v1", reason });
    for (const old of links) {
      const link = new V1Link(this, old.name, old.opts, old.room);
      old.transfer((body, o) => link.publish(body, o)); // queued publishes keep their ids
      this.#links.set(old.name, link);
      if (this.#connected) link.rc.connect();
    }
  }

  #v1Link(name, opts) {
    return new V1Link(this, name, { ...this.#o, ...opts });
  }
}
