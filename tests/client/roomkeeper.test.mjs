// Unit tests of client/roomkeeper.js in Node (no browser, no server): the close-code policy, and
// RoomClient's token provider, pong deadline and connect timeout driven through a scripted
// fake WebSocket (`opts.WebSocket`). Deadlines are tens of milliseconds; every wait is bounded.
import assert from "node:assert/strict";
import { test } from "node:test";
import * as rk from "../../client/roomkeeper.js";
import { FakeSocket, fakeWebSocket, sleep, waitFor } from "./support.mjs";

const { RoomClient, shouldReconnect } = rk;

/** v1 server frames to script, and what the client sent, by kind. */
class V1Socket extends FakeSocket {
  welcome(extra = {}) {
    this.frame({ type: "welcome", protocol: 1, room: "r", conn: `c${this.index}`, me: { id: "u", name: "ann", conns: 1 }, members: [], epoch: "E1", offset: 0, replayed: 0, ...extra });
  }
  get joins() { return this.sent.filter((d) => d.includes('"join"')).map((d) => JSON.parse(d)); }
  get pings() { return this.sent.filter((d) => d === '{"type":"ping"}').length; }
}

const FAST = { backoff: { baseMs: 1, capMs: 1 }, baseUrl: "http://127.0.0.1:9" };

function client(opts) {
  const fake = fakeWebSocket(V1Socket);
  const c = new RoomClient({ room: "r", name: "ann", WebSocket: fake.WebSocket, ...FAST, ...opts });
  const events = { status: [], closed: [], error: [] };
  for (const k of Object.keys(events)) c.on(k, (e) => events[k].push(e));
  return { c, sockets: fake.sockets, events };
}

// ---- the close-code policy -------------------------------------------------------------------

test("shouldReconnect: 4001 only with a token provider; 1xxx and 4000-4499 yes; 4500-4999 no", () => {
  assert.equal(shouldReconnect(4001), false, "an expired token must not be retried as is");
  assert.equal(shouldReconnect(4001, { canRefreshToken: true }), true);
  for (const code of [1000, 1001, 1006, 4000, 4499]) assert.equal(shouldReconnect(code), true, `code ${code}`);
  for (const code of [4500, 4503, 4509, 4999]) {
    assert.equal(shouldReconnect(code), false, `code ${code}`);
    assert.equal(shouldReconnect(code, { canRefreshToken: true }), false, `code ${code} with a provider`);
  }
});

test("closeAction: the next step per close code and token provider", () => {
  assert.equal(typeof rk.closeAction, "function", "closeAction is exported");
  const table = [
    [1000, false, "reconnect"], [1001, false, "reconnect"], [1006, false, "reconnect"], [4000, false, "reconnect"],
    [4001, false, "stop"], [4001, true, "refresh"],
    [4500, false, "stop"], [4503, true, "stop"], [4509, true, "stop"],
  ];
  for (const [code, canRefreshToken, want] of table) {
    assert.equal(rk.closeAction(code, { canRefreshToken }), want, `code ${code}, provider ${canRefreshToken}`);
  }
});

// ---- token provider --------------------------------------------------------------------------

test("a token provider is asked before every connect and its token is used; 4001 reconnects with a fresh one", async () => {
  let n = 0;
  const asked = [];
  const { c, sockets, events } = client({ token: async (ctx) => { asked.push(ctx); return `t${++n}`; } });
  c.connect();
  await waitFor("the first socket", () => sockets.length === 1);
  assert.equal(sockets[0].url.searchParams.get("token"), "t1");
  sockets[0].accept();
  sockets[0].welcome();
  sockets[0].frame({ type: "message", offset: 7, from: { id: "u", name: "bo" }, body: {}, ts: 1 });
  sockets[0].serverClose(4001, "token expired");
  await waitFor("a reconnect", () => sockets.length === 2);
  assert.equal(sockets[1].url.searchParams.get("token"), "t2", "the reconnect carries the fresh token");
  assert.deepEqual(asked.map((a) => a.reason), ["connect", "token_expired"]);
  sockets[1].accept();
  assert.deepEqual(sockets[1].joins[0].since, { epoch: "E1", offset: 7 }, "recovers with since");
  assert.equal(events.closed[0].willReconnect, true);
  // An ordinary drop asks again too (every connect gets the provider's current token).
  sockets[1].welcome({ recovered: true });
  sockets[1].serverClose(1006);
  await waitFor("another reconnect", () => sockets.length === 3);
  assert.equal(sockets[2].url.searchParams.get("token"), "t3");
  assert.equal(asked[2].reason, "reconnect");
  c.close();
});

test("getToken works as the provider too, beside a static token it replaces", async () => {
  const { c, sockets } = client({ token: "static", getToken: () => "fresh" });
  c.connect();
  await waitFor("the first socket", () => sockets.length === 1);
  assert.equal(sockets[0].url.searchParams.get("token"), "fresh");
  c.close();
});

test("4001 with a static token (or none) stops and reports token_expired instead of retrying forever", async () => {
  for (const token of ["static", undefined]) {
    const { c, sockets, events } = client({ token });
    c.connect();
    await waitFor("the first socket", () => sockets.length === 1);
    assert.equal(sockets[0].url.searchParams.get("token"), token ?? null, "a static token is still sent as ?token=");
    sockets[0].accept();
    sockets[0].welcome();
    sockets[0].serverClose(4001, "token expired");
    await sleep(60); // far beyond the 1 ms backoff
    assert.equal(sockets.length, 1, `no reconnect (token ${token})`);
    assert.equal(c.state, "closed");
    assert.equal(events.closed.at(-1).willReconnect, false);
    assert.equal(events.error.at(-1)?.code, "token_expired", "a clear error is surfaced");
    assert.equal(events.status.at(-1).code, 4001);
  }
});

test("a failing token provider is reported and retried with backoff", async () => {
  let calls = 0;
  const { c, sockets, events } = client({ token: async () => { if (++calls === 1) throw new Error("auth server down"); return "ok"; } });
  c.connect();
  await waitFor("a socket after the retry", () => sockets.length === 1);
  assert.equal(sockets[0].url.searchParams.get("token"), "ok");
  assert.equal(events.error[0].code, "token_unavailable");
  c.close();
});

test("close() while the token provider is pending opens no socket", async () => {
  let release;
  const { c, sockets } = client({ token: () => new Promise((r) => { release = r; }) });
  c.connect();
  await waitFor("the provider call", () => release);
  c.close();
  release("late");
  await sleep(30);
  assert.equal(sockets.length, 0);
});

// ---- pong deadline ---------------------------------------------------------------------------

test("no pong within pongTimeoutMs: the socket is abandoned and the client reconnects with since", async () => {
  const { c, sockets, events } = client({ heartbeatMs: 20, pongTimeoutMs: 40 });
  c.connect();
  await waitFor("the first socket", () => sockets.length === 1);
  sockets[0].accept();
  sockets[0].welcome();
  sockets[0].frame({ type: "message", offset: 3, from: { id: "u", name: "bo" }, body: {}, ts: 1 });
  // The server (or the network) goes silent: pings get no answer, and close() never completes.
  await waitFor("a reconnect after the pong deadline", () => sockets.length === 2, 1500);
  assert.ok(sockets[0].pings >= 1, "a ping was sent");
  assert.ok(sockets[0].closedBy, "the silent socket was closed by the client");
  const closed = events.closed.at(-1);
  assert.equal(closed.willReconnect, true);
  assert.match(closed.reason, /pong/);
  sockets[1].accept();
  assert.deepEqual(sockets[1].joins[0].since, { epoch: "E1", offset: 3 });
  c.close();
});

test("answered pings keep the connection", async () => {
  const { c, sockets } = client({ heartbeatMs: 20, pongTimeoutMs: 40 });
  c.connect();
  await waitFor("the first socket", () => sockets.length === 1);
  const s = sockets[0];
  s.accept();
  s.welcome();
  const send = s.send.bind(s);
  s.send = (d) => { send(d); if (d === '{"type":"ping"}') setTimeout(() => s.frame({ type: "pong" }), 5); };
  await sleep(250);
  assert.ok(s.pings >= 5, `pinged ${s.pings} times`);
  assert.equal(sockets.length, 1, "no reconnect while pongs come");
  assert.equal(s.closedBy, null);
  c.close();
});

// ---- connect timeout -------------------------------------------------------------------------

test("a socket that never opens is abandoned after connectTimeoutMs and retried with backoff", async () => {
  const { c, sockets, events } = client({ connectTimeoutMs: 40 });
  c.connect();
  await waitFor("a retry after the connect timeout", () => sockets.length === 2, 1500);
  assert.ok(sockets[0].closedBy, "the hung attempt was closed");
  assert.match(events.closed.at(-1).reason, /connect timeout/);
  assert.equal(events.closed.at(-1).willReconnect, true);
  assert.ok(events.status.some((s) => s.state === "reconnecting" && s.delayMs !== undefined), "with backoff");
  c.close();
});

test("an open socket with no welcome within connectTimeoutMs is abandoned and retried", async () => {
  const { c, sockets } = client({ connectTimeoutMs: 40 });
  c.connect();
  await waitFor("the first socket", () => sockets.length === 1);
  sockets[0].accept(); // open, join sent, but no welcome ever comes
  assert.equal(sockets[0].joins.length, 1);
  await waitFor("a retry", () => sockets.length === 2, 1500);
  assert.ok(sockets[0].closedBy);
  c.close();
});

test("a welcome in time disarms the connect timeout", async () => {
  const { c, sockets } = client({ connectTimeoutMs: 40, heartbeatMs: 10000 });
  c.connect();
  await waitFor("the first socket", () => sockets.length === 1);
  sockets[0].accept();
  sockets[0].welcome();
  await sleep(120);
  assert.equal(sockets.length, 1);
  assert.equal(sockets[0].closedBy, null);
  assert.equal(c.state, "open");
  c.close();
});

// ---- slow readers: `seen` reports and close 4008 ---------------------------------------------

const seens = (s) => s.sent.filter((d) => d.includes('"seen"')).map((d) => JSON.parse(d));
const msg = (offset) => ({ type: "message", offset, from: { id: "u2", name: "bob" }, body: offset, ts: 0 });

test("the client reports the offset it processed with seen: every seenEvery messages and on heartbeat ticks", async () => {
  const { c, sockets } = client({ seenEvery: 3, heartbeatMs: 30, pongTimeoutMs: 10000 });
  const handled = [];
  c.on("message", (m) => handled.push(m.offset));
  c.connect();
  try {
    const s = sockets[0];
    s.accept();
    await sleep(40);
    assert.deepEqual(seens(s), [], "nothing to report before the welcome (it would be refused not_joined)");
    s.welcome();
    s.frame(msg(1));
    s.frame(msg(2));
    assert.deepEqual(seens(s), [], "fewer than seenEvery messages");
    s.frame(msg(3));
    assert.deepEqual(seens(s), [{ type: "seen", offset: 3 }], "after the third message was handled");
    assert.deepEqual(handled, [1, 2, 3], "reported only what the handlers already saw");
    // A batch counts its messages; the report follows the whole batch.
    s.frame({ type: "batch", messages: [msg(4), msg(5), msg(6), msg(7)] });
    assert.deepEqual(seens(s).at(-1), { type: "seen", offset: 7 });
    // A heartbeat tick reports progress short of seenEvery; the ping itself stays byte-exact.
    s.frame(msg(8));
    await waitFor("a seen on the heartbeat tick", () => seens(s).at(-1).offset === 8);
    assert.ok(s.pings >= 1 && s.sent.includes('{"type":"ping"}'));
    const before = seens(s).length;
    await sleep(80);
    assert.equal(seens(s).length, before, "no report when nothing moved");
  } finally {
    c.close();
  }
});

test("a fresh reader reports the room's offset at its welcome, not 0: it has read nothing, yet is not behind", async () => {
  const { c, sockets } = client({ seenEvery: 2, heartbeatMs: 30, pongTimeoutMs: 10000 });
  c.connect();
  try {
    const s = sockets[0];
    s.accept();
    s.welcome({ offset: 5000 });
    await waitFor("a seen on the heartbeat tick", () => seens(s).length === 1);
    assert.deepEqual(seens(s), [{ type: "seen", offset: 5000 }]);
    s.frame(msg(5001));
    s.frame(msg(5002));
    await waitFor("the next report", () => seens(s).at(-1).offset === 5002);
  } finally {
    c.close();
  }
});

test("close 4008 (too slow) reconnects and recovers with since", async () => {
  assert.equal(rk.CLOSE_TOO_SLOW, 4008);
  assert.equal(rk.closeAction(4008), "reconnect");
  const { c, sockets, events } = client({ heartbeatMs: 10000 });
  c.connect();
  sockets[0].accept();
  sockets[0].welcome();
  sockets[0].frame(msg(1));
  sockets[0].frame(msg(2));
  sockets[0].serverClose(4008, "too slow");
  assert.equal(events.closed.at(-1).willReconnect, true);
  await waitFor("a reconnect", () => sockets.length === 2);
  sockets[1].accept();
  assert.deepEqual(sockets[1].joins[0].since, { epoch: "E1", offset: 2 });
  c.close();
});
