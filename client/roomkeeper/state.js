// The bookkeeping of one room, whichever socket carries it: where the reader is (epoch and
// offset, for recovery), who is here (presence), and the publishes not yet acknowledged (the
// offline queue). No sockets and no timers but the ack deadlines: the unit tests in
// tests/client/ drive these classes frame by frame.

import { RoomError } from "./policy.js";

/** Where a reader is in one room's stream, and who is in the room. */
export class RoomCursor {
  /** The room's epoch from the last welcome/subscribed (null before the first). */
  epoch = null;
  /** The offset of the last message processed (0 before any). */
  offset = 0;
  /** This connection's own member, from the last welcome/subscribed. */
  me = null;
  #members = new Map();
  #floor = 0; // the room's offset at the last welcome/subscribed

  /**
   * The offset to report with `seen`: the last message processed, or the room's offset at
   * the last welcome if that is later (a fresh reader has read nothing, yet is not behind).
   */
  get read() {
    return Math.max(this.offset, this.#floor);
  }

  /** What to send as `since` on the next join/subscribe, or undefined on a first one. */
  get since() {
    return this.epoch === null ? undefined : { epoch: this.epoch, offset: this.read };
  }

  /** The members, each once, with their connection counts. */
  get members() {
    return [...this.#members.values()];
  }

  /**
   * Applies a `welcome` (v1) or `subscribed` (v2). On a resume, answers the recovery report
   * `{recovered, replayed, epochChanged}` — with `recovered: false` the offset restarts at 0,
   * so the history that follows is taken as new; on a first join, answers null.
   */
  welcome(f) {
    const resumed = this.epoch !== null;
    let report = null;
    this.me = f.me ?? null;
    this.#members = new Map((f.members ?? []).map((m) => [m.id, m]));
    if (resumed) {
      const recovered = f.recovered === true;
      if (!recovered) this.offset = 0;
      report = { recovered, replayed: f.replayed ?? 0, epochChanged: f.epoch !== this.epoch };
    } else {
      this.offset = 0;
    }
    this.epoch = f.epoch;
    // A recovered resume replays what was missed: until it is processed, the reader is where
    // it was. Otherwise (a first join, or not recovered) nothing before the room's offset is
    // owed to the reader.
    this.#floor = report?.recovered ? this.offset : typeof f.offset === "number" ? f.offset : 0;
    return report;
  }

  /** A `message`: true when it is new (beyond the offset processed), which it then becomes. */
  accept(m) {
    if (typeof m.offset !== "number" || m.offset <= this.offset) return false;
    this.offset = m.offset;
    return true;
  }

  /** A `joined`, `presence` or `left` frame; answers the members after it. */
  presence(f) {
    if (f.type === "left") this.#members.delete(f.member.id);
    else this.#members.set(f.member.id, f.member);
    return this.members;
  }
}

/**
 * Publishes waiting for their ack, in the order they were made, bounded by `maxQueue`. Each is
 * kept with its frame (and id) until acknowledged, refused, timed out or failed, so every
 * reconnect can send all of them again with the same ids: a publish whose ack was lost is
 * de-duplicated by the server (`duplicate: true`), never delivered twice.
 */
export class Outbox {
  #pending = new Map(); // id -> { frame, resolve, reject, timer }
  #max;

  constructor({ maxQueue = 100 } = {}) {
    this.#max = maxQueue;
  }

  /** How many publishes wait for an ack. */
  get size() {
    return this.#pending.size;
  }

  /** Whether `id` waits for an ack. */
  has(id) {
    return this.#pending.has(id);
  }

  /**
   * Keeps `frame` (which has an `id`) until settled; answers the promise of its ack
   * `{offset, duplicate}`. Rejects at once with `queue_full` when `maxQueue` wait already, and
   * with `timeout` after `timeoutMs`.
   */
  add(frame, timeoutMs) {
    return new Promise((resolve, reject) => {
      if (this.#pending.size >= this.#max) {
        reject(new RoomError("queue_full", `more than ${this.#max} publishes waiting`, frame.id, frame.room));
        return;
      }
      const timer = setTimeout(
        () => this.settle(frame.id, new RoomError("timeout", `no ack within ${timeoutMs} ms`, frame.id, frame.room)),
        timeoutMs,
      );
      this.#pending.set(frame.id, { frame, resolve, reject, timer });
    });
  }

  /** The frames still waiting, oldest first (to send again after a reconnect). */
  frames() {
    return [...this.#pending.values()].map((p) => p.frame);
  }

  /** Settles `id` with an error, or with the server's `ack`; false when it was not waiting. */
  settle(id, err, ack) {
    const p = this.#pending.get(id);
    if (!p) return false;
    clearTimeout(p.timer);
    this.#pending.delete(id);
    if (err) p.reject(err);
    else p.resolve({ offset: ack.offset, duplicate: ack.duplicate === true });
    return true;
  }

  /** Moves everything still waiting to `publish(frame) → Promise` (another socket's queue),
   *  oldest first; each promise made here settles as that one does. */
  transfer(publish) {
    for (const [id, p] of [...this.#pending]) {
      clearTimeout(p.timer);
      this.#pending.delete(id);
      publish(p.frame).then(p.resolve, p.reject);
    }
  }

  /** Fails everything still waiting with `err`. */
  failAll(err) {
    for (const id of [...this.#pending.keys()]) this.settle(id, err);
  }
}
