// The multiplexed Client (client/roomkeeper/client.js) against a scripted fake socket: many
// rooms on one v2 socket, frames routed by room, per-room recovery after a cut, the offline
// queue per room, refusals, leaving, the v1 fallback (a server that answers 404 on /api/ws),
// and a public surface without internals. Every wait is bounded.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Client, Room, RoomError, msgpack } from "../../client/roomkeeper/index.js";
import { FakeSocket, fakeWebSocket, sleep, waitFor } from "./support.mjs";

/** Frames the client sent, decoded; v2 server frames to script. */
class V2Socket extends FakeSocket {
  send(data) { this.sent.push(typeof data === "string" ? JSON.parse(data) : msgpack.decode(data)); }
  ready() { this.frame({ type: "ready", protocol: 2, conn: `c${this.index}`, user: { id: "u", name: "ann" } }); }
  subscribed(room, extra = {}) {
    this.frame({ type: "subscribed", room, conn: "c", me: { id: "u", name: "ann", conns: 1 }, members: [{ id: "u", name: "ann", conns: 1 }], epoch: `E-${room}`, offset: 0, replayed: 0, ...extra });
  }
  of(type) { return this.sent.filter((f) => f.type === type); }
}

const FAST = { backoff: { baseMs: 1, capMs: 1 }, baseUrl: "http://127.0.0.1:9", heartbeatMs: 60000 };
const msg = (room, offset, from = "bo") => ({ type: "message", room, offset, from: { id: from, name: from }, body: { n: offset }, ts: 0 });

function client(opts = {}) {
  const fake = fakeWebSocket(V2Socket);
  const c = new Client({ name: "ann", WebSocket: fake.WebSocket, ...FAST, ...opts });
  return { c, sockets: fake.sockets };
}

function record(room) {
  const got = { message: [], recovery: [], status: [], error: [], presence: [] };
  for (const k of Object.keys(got)) room.on(k, (d) => got[k].push(d));
  return got;
}

test("three rooms share one socket to /api/ws; frames reach only their room, in order", async () => {
  const { c, sockets } = client({ protocol: "v2" });
  const rooms = ["a", "b", "c"].map((n) => c.room(n));
  const got = rooms.map(record);
  c.connect();
  assert.equal(sockets.length, 1, "one socket for every room");
  const s = sockets[0];
  assert.equal(s.url.pathname, "/api/ws");
  assert.deepEqual(s.protocols, ["roomkeeper.v2.json"]);
  s.accept();
  assert.equal(s.of("subscribe").length, 0, "nothing before ready");
  s.ready();
  assert.deepEqual(s.of("subscribe").map((f) => [f.room, f.name, f.since]), [["a", "ann", undefined], ["b", "ann", undefined], ["c", "ann", undefined]]);
  for (const n of ["a", "b", "c"]) s.subscribed(n);
  assert.deepEqual(rooms.map((r) => r.state), ["open", "open", "open"]);
  for (let i = 1; i <= 3; i++) for (const n of ["c", "a", "b"]) s.frame(msg(n, i));
  s.frame(msg("a", 2)); // a repeat: not delivered twice
  s.frame(msg("nowhere", 1)); // a room this client is not in: ignored
  for (const g of got) assert.deepEqual(g.message.map((m) => m.offset), [1, 2, 3]);
  assert.deepEqual(got[1].message.map((m) => m.room), ["b", "b", "b"]);
  assert.equal(c.state, "open");
  assert.equal(c.conn, "c0");
  c.close();
  assert.deepEqual(rooms.map((r) => r.state), ["closed", "closed", "closed"]);
});

test("a cut socket resubscribes every room with its own since and reports each recovery", async () => {
  const { c, sockets } = client({ protocol: "v2" });
  const a = c.room("a");
  const b = c.room("b");
  const ga = record(a);
  const gb = record(b);
  c.connect();
  sockets[0].accept();
  sockets[0].ready();
  sockets[0].subscribed("a");
  sockets[0].subscribed("b");
  sockets[0].frame(msg("a", 1));
  sockets[0].frame(msg("a", 2));
  sockets[0].frame(msg("b", 1));
  sockets[0].serverClose(1006);
  assert.equal(a.state, "reconnecting");
  await waitFor("a reconnect", () => sockets.length === 2);
  const s = sockets[1];
  s.accept();
  s.ready();
  assert.deepEqual(s.of("subscribe").map((f) => [f.room, f.since]), [["a", { epoch: "E-a", offset: 2 }], ["b", { epoch: "E-b", offset: 1 }]]);
  s.subscribed("a", { recovered: true, replayed: 1 });
  s.frame(msg("a", 3));
  s.subscribed("b", { epoch: "E-b2", recovered: false, replayed: 1 });
  s.frame(msg("b", 1, "history"));
  assert.deepEqual(ga.recovery, [{ recovered: true, replayed: 1, epochChanged: false }]);
  assert.deepEqual(gb.recovery, [{ recovered: false, replayed: 1, epochChanged: true }]);
  assert.deepEqual(ga.message.map((m) => m.offset), [1, 2, 3]);
  assert.deepEqual(gb.message.map((m) => [m.offset, m.from.id]), [[1, "bo"], [1, "history"]], "reloaded: history counts as new");
  c.close();
});

test("publishes made offline wait per room and go out after that room's subscribed, with the same id", async () => {
  const { c, sockets } = client({ protocol: "v2", encoding: "msgpack" });
  const a = c.room("a");
  const early = a.publish({ text: "queued" }, { id: "p1" });
  c.connect();
  const s = sockets[0];
  assert.deepEqual(s.protocols, ["roomkeeper.v2.msgpack"]);
  s.accept();
  s.ready();
  assert.equal(s.of("publish").length, 0, "not before the room is subscribed");
  s.subscribed("a");
  assert.deepEqual(s.of("publish"), [{ type: "publish", room: "a", body: { text: "queued" }, id: "p1" }]);
  s.serverClose(1006); // the ack is lost with the socket
  await waitFor("a reconnect", () => sockets.length === 2);
  sockets[1].accept();
  sockets[1].ready();
  sockets[1].subscribed("a", { recovered: true });
  assert.deepEqual(sockets[1].of("publish").map((f) => f.id), ["p1"], "sent again with its id");
  sockets[1].frame({ type: "ack", room: "a", id: "p1", offset: 4, duplicate: true });
  assert.deepEqual(await early, { offset: 4, duplicate: true });
  assert.equal(a.waiting, 0);
  c.close();
});

test("a room's refusal ends that room only; an unavailable room is subscribed again", async () => {
  const { c, sockets } = client({ protocol: "v2" });
  const ok = c.room("ok");
  const no = c.room("secret");
  const flaky = c.room("flaky");
  const gno = record(no);
  c.connect();
  const s = sockets[0];
  s.accept();
  s.ready();
  s.subscribed("ok");
  s.frame({ type: "error", room: "secret", code: "room_forbidden", message: "not for this token" });
  s.frame({ type: "error", room: "flaky", code: "unavailable", message: "try again" });
  assert.equal(no.state, "closed");
  assert.equal(gno.error[0].code, "room_forbidden");
  assert.ok(gno.error[0] instanceof RoomError && gno.error[0].room === "secret");
  await assert.rejects(no.publish("x"), (e) => e.code === "closed");
  assert.equal(ok.state, "open");
  await waitFor("flaky subscribed again", () => s.of("subscribe").filter((f) => f.room === "flaky").length === 2);
  s.subscribed("flaky");
  assert.equal(flaky.state, "open");
  assert.deepEqual(c.rooms.map((r) => r.name).sort(), ["flaky", "ok"], "a refused room is forgotten");
  // A publish refused by its room rejects with the room's code.
  const p = ok.publish("big", { id: "x1" });
  s.frame({ type: "error", room: "ok", code: "too_large", message: "no", id: "x1" });
  await assert.rejects(p, (e) => e.code === "too_large" && e.room === "ok");
  c.close();
});

test("leave unsubscribes one room; the socket and the other rooms go on", () => {
  const { c, sockets } = client({ protocol: "v2" });
  const a = c.room("a");
  const b = c.room("b");
  c.connect();
  const s = sockets[0];
  s.accept();
  s.ready();
  s.subscribed("a");
  s.subscribed("b");
  a.leave();
  assert.deepEqual(s.of("unsubscribe"), [{ type: "unsubscribe", room: "a" }]);
  assert.equal(a.state, "closed");
  assert.equal(b.state, "open");
  assert.equal(s.closedBy, null);
  assert.notEqual(c.room("a"), a, "joining again makes a new Room");
  assert.equal(c.room("b"), b, "the same name answers the same Room");
  c.close();
});

test("auto: a server without /api/ws (404) gets one v1 socket per room; queued publishes move along", async () => {
  const probes = [];
  const { c, sockets } = client({ fetch: async (u) => { probes.push(String(u)); return { status: 404 }; } });
  const a = c.room("a");
  const b = c.room("b");
  const ga = record(a);
  const modes = [];
  c.on("mode", (m) => modes.push(m));
  const queued = a.publish({ text: "early" }, { id: "q1" });
  c.connect();
  sockets[0].serverClose(1006); // the upgrade failed: an old server answered 404
  await waitFor("the fallback", () => c.mode === "v1");
  assert.deepEqual(probes, ["http://127.0.0.1:9/api/ws"]);
  assert.equal(modes[0].mode, "v1");
  await waitFor("a socket per room", () => sockets.length === 3);
  const [sa, sb] = [sockets[1], sockets[2]];
  assert.deepEqual([sa.url.pathname, sb.url.pathname], ["/api/rooms/a/ws", "/api/rooms/b/ws"]);
  assert.deepEqual(sa.protocols, ["roomkeeper.v1.json"]);
  sa.accept();
  sa.frame({ type: "welcome", protocol: 1, room: "a", conn: "x", me: { id: "u", name: "ann", conns: 1 }, members: [], epoch: "E", offset: 0, replayed: 0 });
  assert.equal(a.state, "open");
  assert.deepEqual(sa.of("publish").map((f) => f.id), ["q1"], "the publish queued for v2 went out on v1 with its id");
  sa.frame({ type: "ack", id: "q1", offset: 1 });
  assert.deepEqual(await queued, { offset: 1, duplicate: false });
  sa.frame({ type: "message", offset: 1, from: { id: "u", name: "ann" }, body: {}, ts: 0 });
  assert.deepEqual(ga.message.map((m) => m.offset), [1]);
  assert.equal(b.state, "subscribing");
  c.close();
  assert.equal(a.state, "closed");
});

test("auto: a v2 server that only failed once is not taken for an old one", async () => {
  const { c, sockets } = client({ fetch: async () => ({ status: 426 }) });
  c.room("a");
  c.connect();
  sockets[0].serverClose(1006);
  await waitFor("a v2 retry", () => sockets.length === 2);
  await sleep(20);
  assert.equal(c.mode, "v2");
  assert.equal(sockets[1].url.pathname, "/api/ws");
  c.close();
});

test("the public surface: EventTarget events, no internals", async () => {
  const { c, sockets } = client({ protocol: "v2" });
  assert.ok(c instanceof EventTarget);
  const r = c.room("a");
  assert.ok(r instanceof EventTarget && r instanceof Room);
  assert.throws(() => new Room(Symbol("roomkeeper.room"), {}), TypeError, "only a Client makes Rooms");
  let detail;
  r.addEventListener("subscribed", (e) => { detail = e.detail; });
  c.connect();
  sockets[0].accept();
  sockets[0].ready();
  sockets[0].subscribed("a");
  assert.equal(detail.room, "a");
  const own = (o) => [...Object.getOwnPropertyNames(o), ...Object.getOwnPropertyNames(Object.getPrototypeOf(o))];
  for (const name of ["emit", "open", "settle", "sendFrame", "forget", "handle", "ws", "opts", "pending"]) {
    assert.ok(!own(c).includes(name), `Client has no ${name}`);
    assert.ok(!own(r).includes(name), `Room has no ${name}`);
  }
  assert.deepEqual(Object.getOwnPropertySymbols(Object.getPrototypeOf(r)).length, 1, "only the module's own relink symbol");
  c.close();
});

test("4001 on the v2 socket: a fresh token from the provider, and every room recovers", async () => {
  let n = 0;
  const { c, sockets } = client({ protocol: "v2", token: async () => `t${++n}` });
  const a = c.room("a");
  c.connect();
  await waitFor("the first socket", () => sockets.length === 1);
  assert.equal(sockets[0].url.searchParams.get("token"), "t1");
  sockets[0].accept();
  sockets[0].ready();
  sockets[0].subscribed("a");
  sockets[0].frame(msg("a", 1));
  sockets[0].frame({ type: "error", code: "token_expired", message: "your token expired" });
  sockets[0].serverClose(4001, "token expired");
  await waitFor("a reconnect", () => sockets.length === 2);
  assert.equal(sockets[1].url.searchParams.get("token"), "t2");
  sockets[1].accept();
  sockets[1].ready();
  assert.deepEqual(sockets[1].of("subscribe")[0].since, { epoch: "E-a", offset: 1 });
  assert.equal(a.state, "subscribing");
  c.close();
});

test("4001 with a static token stops the client and ends every room", () => {
  const { c, sockets } = client({ protocol: "v2", token: "static" });
  const a = c.room("a");
  const errors = [];
  c.on("error", (e) => errors.push(e.code));
  c.connect();
  sockets[0].accept();
  sockets[0].ready();
  sockets[0].subscribed("a");
  sockets[0].serverClose(4001, "token expired");
  assert.equal(c.state, "closed");
  assert.equal(a.state, "closed");
  assert.ok(errors.includes("token_expired"), `errors: ${errors}`);
});

test("v2 read reports: one seen frame for every room that moved, every seenEvery messages across rooms and on ticks", async () => {
  const { c, sockets } = client({ protocol: "v2", seenEvery: 3, heartbeatMs: 30, pongTimeoutMs: 10000 });
  for (const n of ["a", "b", "c"]) c.room(n);
  c.connect();
  try {
    const s = sockets[0];
    s.accept();
    s.ready();
    s.subscribed("a");
    s.subscribed("b", { offset: 700 }); // a fresh reader of a busy room: not 700 behind
    s.subscribed("c");
    s.frame(msg("a", 1));
    s.frame(msg("b", 701));
    assert.deepEqual(s.of("seen"), [], "fewer than seenEvery messages on the socket");
    s.frame(msg("a", 2));
    assert.deepEqual(s.of("seen"), [{ type: "seen", rooms: { a: 2, b: 701, c: 0 } }], "every open room, once, so each is bounded");
    s.frame(msg("c", 1));
    await waitFor("a report on the heartbeat tick", () => s.of("seen").length === 2);
    assert.deepEqual(s.of("seen")[1], { type: "seen", rooms: { c: 1 } }, "only what moved");
    await sleep(80);
    assert.equal(s.of("seen").length, 2, "nothing moved: no report");
    // Cut: the next socket has reported nothing, and a room is reported once subscribed again.
    s.serverClose(4008, "too slow");
    await waitFor("a reconnect", () => sockets.length === 2);
    const t = sockets[1];
    t.accept();
    t.ready();
    assert.deepEqual(t.of("subscribe").map((f) => [f.room, f.since?.offset]), [["a", 2], ["b", 701], ["c", 1]], "4008 recovers with since");
    t.subscribed("a", { epoch: "E-a", offset: 2, recovered: true });
    await waitFor("a report on the new socket", () => t.of("seen").length === 1);
    assert.deepEqual(t.of("seen")[0], { type: "seen", rooms: { a: 2 } }, "only open rooms");
  } finally {
    c.close();
  }
});

test("a room that closes its subscription: 4000–4499 subscribes again with since, 4500 ends that room only", async () => {
  const { c, sockets } = client({ protocol: "v2" });
  const a = c.room("a");
  const b = c.room("b");
  const closedA = [];
  const closedB = [];
  a.on("closed", (e) => closedA.push(e));
  b.on("closed", (e) => closedB.push(e));
  c.connect();
  try {
    const s = sockets[0];
    s.accept();
    s.ready();
    s.subscribed("a");
    s.subscribed("b");
    s.frame(msg("a", 1));
    s.frame({ type: "unsubscribed", room: "a", code: 4000, reason: "closed by an operator" });
    assert.deepEqual(closedA, [{ code: 4000, reason: "closed by an operator", willReconnect: true }]);
    assert.equal(a.state, "subscribing");
    await waitFor("a subscribes again", () => s.of("subscribe").length === 3);
    assert.deepEqual([s.of("subscribe")[2].room, s.of("subscribe")[2].since], ["a", { epoch: "E-a", offset: 1 }]);
    s.subscribed("a", { recovered: true, offset: 1 });
    assert.equal(a.state, "open");
    const failed = b.publish({ x: 1 });
    s.frame({ type: "unsubscribed", room: "b", code: 4500, reason: "too many refused frames" });
    await assert.rejects(failed, (e) => e.code === "closed" && e.room === "b");
    assert.equal(b.state, "closed");
    assert.deepEqual(closedB, [{ code: 4500, reason: "too many refused frames", willReconnect: false }]);
    assert.deepEqual(c.rooms.map((r) => r.name), ["a"], "b is forgotten; a goes on");
    c.close();
    assert.equal(closedA.at(-1).willReconnect, false, "the client closed: a ends too");
  } finally {
    c.close();
  }
});
