// RoomClient: one room over its own socket (protocol v1, docs/PROTOCOL.md). The multiplexed
// `Client` (client.js) uses it per room when a server has no v2.

import { Connection } from "./connection.js";
import { emit, Emitter } from "./events.js";
import { RoomError, uid } from "./policy.js";
import { Outbox, RoomCursor } from "./state.js";
import { decodeFrame, encodeFrame, socketUrl, subprotocol } from "./wire.js";

/** The defaults of every option with one. */
export const DEFAULTS = Object.freeze({
  encoding: "json", history: 50, ackTimeoutMs: 10000, maxQueue: 100, heartbeatMs: 25000,
  pongTimeoutMs: 10000, connectTimeoutMs: 15000, seenEvery: 100,
});

/**
 * A connection to one room that survives disconnects.
 *
 * Options: `room` (required: a name or a private id), `name`, `meta`, `token` (a JWT or a
 * token provider; see Connection), `getToken`, `encoding` ("json" | "msgpack"), `history`
 * (messages replayed on a fresh join, 50), `baseUrl`, `ackTimeoutMs`, `maxQueue`,
 * `heartbeatMs`, `pongTimeoutMs`, `connectTimeoutMs`, `seenEvery` (report the processed
 * offset with `seen` after this many messages, and on heartbeat ticks; 0: ticks only),
 * `backoff`, `WebSocket`.
 *
 * Events (listeners get `event.detail`; `on(type, fn)` passes it directly): `status`,
 * `welcome`, `message`, `presence` (the members), `recovery` {recovered, replayed,
 * epochChanged}, `error` (RoomError), `closed` {code, reason, willReconnect}.
 */
export class RoomClient extends Emitter {
  #o;
  #conn;
  #cursor = new RoomCursor();
  #outbox;
  #seenSent = -1; // the offset last reported with `seen` on this connection (-1: none)

  constructor(opts) {
    super();
    if (!opts?.room) throw new TypeError("room is required");
    this.#o = { ...DEFAULTS, ...opts };
    this.#outbox = new Outbox({ maxQueue: this.#o.maxQueue });
    const path = `/api/rooms/${encodeURIComponent(this.#o.room)}/ws`;
    this.#conn = new Connection({
      ...this.#o,
      url: (token) => socketUrl(this.#o.baseUrl, path, token),
      protocols: [subprotocol(1, this.#o.encoding)],
    });
    const c = this.#conn;
    c.on("status", (s) => emit(this, "status", s));
    c.on("error", (e) => emit(this, "error", e));
    c.on("open", () => this.#join());
    c.on("frame", (data) => this.#receive(data));
    c.on("tick", () => this.#reportSeen());
    c.on("closed", (e) => {
      emit(this, "closed", e);
      if (!e.willReconnect) this.#outbox.failAll(new RoomError("closed", `connection closed (${e.code})`));
    });
  }

  /** The room's name or private id. */
  get room() { return this.#o.room; }
  /** `idle`, `connecting`, `open`, `reconnecting` or `closed`. */
  get state() { return this.#conn.state; }
  /** This connection's member, once joined. */
  get me() { return this.#cursor.me; }
  /** The room's members, each once. */
  get members() { return this.#cursor.members; }
  /** The room's epoch (null before the first welcome). */
  get epoch() { return this.#cursor.epoch; }
  /** The offset of the last message handed to `message` listeners. */
  get offset() { return this.#cursor.offset; }
  /** Publishes waiting for an ack, or queued while offline. */
  get waiting() { return this.#outbox.size; }
  /** Reconnect backoff `{ baseMs, capMs }`; may be changed at any time. */
  get backoff() { return this.#conn.backoff; }
  set backoff(b) { this.#conn.backoff = b; }

  /** Opens the connection (and keeps reopening it until `close()`). */
  connect() {
    this.#conn.connect();
    return this;
  }

  /**
   * Publishes a message; resolves with `{offset, duplicate}` once the room has stored it,
   * rejects with a RoomError (the server's code, or `timeout`, `queue_full`, `closed`). While
   * offline it waits in the queue and goes out on reconnect, with the same `id`.
   */
  publish(body, { id = uid(), timeoutMs = this.#o.ackTimeoutMs } = {}) {
    const frame = { type: "publish", body, id };
    const acked = this.#outbox.add(frame, timeoutMs);
    if (this.state === "open" && this.#outbox.has(id)) this.#send(frame);
    return acked;
  }

  /** Closes for good (no reconnect); publishes still waiting fail with `closed`. */
  close() {
    this.#conn.close(1000, "bye");
  }

  /** Drops the socket without closing the client: it reconnects and recovers (demos, tests). */
  drop() {
    this.#conn.drop();
  }

  #send(frame) {
    return this.#conn.send(encodeFrame(this.#o.encoding, frame));
  }

  #join() {
    this.#seenSent = -1; // a new connection has reported nothing
    const join = { type: "join", name: this.#o.name, meta: this.#o.meta };
    const since = this.#cursor.since;
    if (since) join.since = since;
    join.history = this.#o.history;
    this.#send(join);
  }

  #receive(data) {
    let f;
    try {
      f = decodeFrame(data);
    } catch (e) {
      emit(this, "error", new RoomError("client_decode", String(e)));
      return;
    }
    this.#handle(f);
    if (f.type === "message" || f.type === "batch") this.#maybeReportSeen();
  }

  #handle(f) {
    switch (f.type) {
      case "welcome": return this.#welcome(f);
      case "message":
        if (this.#cursor.accept(f)) emit(this, "message", f);
        return;
      case "batch": // the room's batch window coalesced several message frames into one
        for (const m of f.messages) this.#handle(m);
        return;
      case "ack": this.#outbox.settle(f.id, null, f); return;
      case "joined":
      case "presence":
      case "left":
        emit(this, "presence", this.#cursor.presence(f));
        return;
      case "error": {
        const err = new RoomError(f.code, f.message, f.id);
        if (f.id && this.#outbox.settle(f.id, err)) return;
        emit(this, "error", err);
        return;
      }
      default: return; // pong, and frames a newer server may add
    }
  }

  #welcome(f) {
    const report = this.#cursor.welcome(f);
    if (report) emit(this, "recovery", report);
    emit(this, "welcome", f);
    emit(this, "presence", this.#cursor.members);
    this.#conn.ready({ room: f.room });
    // Everything not yet acknowledged goes again, in order, with the same ids.
    for (const frame of this.#outbox.frames()) this.#send(frame);
  }

  /** Tells the room the offset processed so far (`seen`); only once joined. */
  #reportSeen() {
    const offset = this.#cursor.read;
    if (this.state !== "open" || offset === this.#seenSent) return;
    if (offset <= this.#seenSent) return;
    if (this.#send({ type: "seen", offset })) this.#seenSent = offset;
  }

  /** After messages were handled: reports when `seenEvery` more were processed. */
  #maybeReportSeen() {
    const every = this.#o.seenEvery;
    if (every > 0 && this.#cursor.read - Math.max(this.#seenSent, 0) >= every) this.#reportSeen();
  }
}
