// The client's bookkeeping without any socket: backoff, the recovery cursor and the offline
// queue (client/roomkeeper/state.js, policy.js).
import assert from "node:assert/strict";
import { test } from "node:test";
import { backoffDelay, Outbox, RoomCursor, RoomError } from "../../client/roomkeeper/index.js";

test("backoff: full jitter below min(cap, base·2^attempt), growing then capped", () => {
  const top = (attempt) => backoffDelay(attempt, { baseMs: 100, capMs: 5000, random: () => 0.999999 });
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 30].map(top), [99, 199, 399, 799, 1599, 3199, 4999, 4999]);
  assert.equal(backoffDelay(3, { baseMs: 100, capMs: 5000, random: () => 0 }), 0, "full jitter reaches 0");
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(4, { baseMs: 100, capMs: 5000 });
    assert.ok(d >= 0 && d < 1600 && Number.isInteger(d), `delay ${d}`);
  }
  assert.ok(backoffDelay(1e9) < 15000, "huge attempt counts do not overflow past the default cap");
});

const welcome = (extra) => ({ type: "welcome", epoch: "E1", offset: 0, replayed: 0, me: { id: "u", name: "ann", conns: 1 }, members: [{ id: "u", name: "ann", conns: 1 }], ...extra });

test("cursor: a first join has no since; messages advance the offset once each", () => {
  const c = new RoomCursor();
  assert.equal(c.since, undefined);
  assert.equal(c.welcome(welcome()), null, "a first join is no recovery");
  assert.deepEqual(c.since, { epoch: "E1", offset: 0 });
  assert.equal(c.accept({ offset: 1 }), true);
  assert.equal(c.accept({ offset: 2 }), true);
  assert.equal(c.accept({ offset: 2 }), false, "a repeat is not new");
  assert.equal(c.accept({ offset: 1 }), false, "an older one is not new");
  assert.deepEqual(c.since, { epoch: "E1", offset: 2 });
});

test("cursor: a resume reports recovered exactly, or reloads from offset 0 on a gap or new epoch", () => {
  const c = new RoomCursor();
  c.welcome(welcome());
  c.accept({ offset: 5 });
  assert.deepEqual(c.welcome(welcome({ recovered: true, replayed: 3 })), { recovered: true, replayed: 3, epochChanged: false });
  assert.equal(c.offset, 5, "recovered: the offset stands; the replay continues from it");
  assert.equal(c.accept({ offset: 6 }), true);
  assert.deepEqual(c.welcome(welcome({ epoch: "E2", recovered: false, replayed: 2 })), { recovered: false, replayed: 2, epochChanged: true });
  assert.equal(c.offset, 0, "reloaded: the history that follows counts as new");
  assert.equal(c.accept({ offset: 1 }), true);
  assert.deepEqual(c.since, { epoch: "E2", offset: 1 });
});

test("cursor: a fresh reader resumes from the room's offset at its join, but a recovered replay is owed until processed", () => {
  const c = new RoomCursor();
  c.welcome(welcome({ offset: 900 }));
  assert.equal(c.offset, 0);
  assert.equal(c.read, 900, "nothing before the join is owed");
  assert.deepEqual(c.since, { epoch: "E1", offset: 900 }, "a cut before any message does not replay 1..900");
  c.accept({ offset: 901 });
  assert.deepEqual(c.since, { epoch: "E1", offset: 901 });
  // Recovered with a replay of 902..950: cut after 910, the rest is still owed.
  c.welcome(welcome({ offset: 950, recovered: true, replayed: 49 }));
  assert.equal(c.read, 901);
  c.accept({ offset: 910 });
  assert.deepEqual(c.since, { epoch: "E1", offset: 910 });
  // Not recovered: the latest history is all there is; nothing before the offset is owed.
  c.welcome(welcome({ epoch: "E2", offset: 70, recovered: false, replayed: 1 }));
  assert.equal(c.read, 70);
});

test("cursor: presence keeps each member once, by id", () => {
  const c = new RoomCursor();
  c.welcome(welcome());
  c.presence({ type: "joined", member: { id: "b", name: "bo", conns: 1 } });
  c.presence({ type: "presence", member: { id: "b", name: "bo", conns: 2 } });
  assert.deepEqual(c.members.map((m) => [m.id, m.conns]), [["u", 1], ["b", 2]]);
  c.presence({ type: "left", member: { id: "b" } });
  assert.deepEqual(c.members.map((m) => m.id), ["u"]);
});

test("outbox: publishes wait in order, bounded, and settle once", async () => {
  const o = new Outbox({ maxQueue: 2 });
  const a = o.add({ id: "a", body: 1 }, 10000);
  const b = o.add({ id: "b", body: 2 }, 10000);
  await assert.rejects(o.add({ id: "c", body: 3 }, 10000), (e) => e instanceof RoomError && e.code === "queue_full" && e.id === "c");
  assert.deepEqual(o.frames().map((f) => f.id), ["a", "b"], "oldest first, for the resend");
  assert.equal(o.settle("b", null, { offset: 7, duplicate: true }), true);
  assert.equal(o.settle("b", null, { offset: 8 }), false, "a second ack for the same id is ignored");
  assert.deepEqual(await b, { offset: 7, duplicate: true });
  assert.equal(o.size, 1);
  o.failAll(new RoomError("closed", "bye"));
  await assert.rejects(a, (e) => e.code === "closed");
  assert.equal(o.size, 0);
});

test("outbox: a publish with no ack in time rejects with timeout and leaves the queue", async () => {
  const o = new Outbox();
  const p = o.add({ id: "t", body: 0, room: "r" }, 20);
  await assert.rejects(p, (e) => e.code === "timeout" && e.id === "t" && e.room === "r");
  assert.equal(o.size, 0);
  assert.equal(o.settle("t", null, { offset: 1 }), false, "a late ack finds nothing");
});

test("outbox: transfer hands every waiting publish on, in order, and follows its outcome", async () => {
  const o = new Outbox();
  const a = o.add({ id: "a", body: "x" }, 10000);
  const b = o.add({ id: "b", body: "y" }, 10000);
  const moved = [];
  o.transfer((f) => { moved.push(f.id); return f.id === "a" ? Promise.resolve({ offset: 1, duplicate: false }) : Promise.reject(new RoomError("too_large", "no")); });
  assert.deepEqual(moved, ["a", "b"]);
  assert.equal(o.size, 0);
  assert.deepEqual(await a, { offset: 1, duplicate: false });
  await assert.rejects(b, (e) => e.code === "too_large");
});
