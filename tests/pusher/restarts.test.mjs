// Pusher channels across object resets: a panic resets the Wasm instance every object of the
// Worker shares (gateway shards and channel rooms lose their memory; hibernated sockets stay
// connected), and a restart of the whole runtime (sockets cut). Connected sockets keep getting
// every accepted event once, in order; cut ones are reconnected and resubscribed by pusher-js.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { startServer } from "../browser/harness.mjs";
import {
  LOCAL_APP as APP, connected, pusherClient, serverSdk, subscribed, timeout, waitFor, disconnectAll,
} from "./helpers.mjs";

let server;
// A short sweep, so that a restarted gateway forgets its cut sockets within the test.
before(async () => { server = await startServer({ vars: { PUSHER_GATEWAY_SWEEP_SECONDS: "2" } }); });
after(async () => { await server?.close(); });
afterEach(disconnectAll);

const client = (options) => pusherClient(server.port, APP.key, options);
const rest = () => serverSdk(server.port, APP);

/** Triggers `n` events from `first` one after another; the numbers the server accepted. */
async function stream(channel, first, n, during) {
  const accepted = [];
  for (let i = first; i < first + n; i++) {
    if (i === first + Math.floor(n / 3) && during) during();
    try {
      const r = await rest().trigger(channel, "tick", { i });
      if (r.status === 200) accepted.push(i);
    } catch { /* refused or cut: not accepted */ }
  }
  return accepted;
}

test("a reset of every object mid-stream: each connected socket gets every accepted event once, in order", async () => {
  const channel = `reset-${process.pid}`;
  const clients = [client(), client(), client(), client()];
  await Promise.all(clients.map(connected));
  const got = clients.map(() => []);
  await Promise.all(clients.map(async (p, k) => {
    const ch = p.subscribe(channel);
    ch.bind("tick", (d) => got[k].push(d.i));
    await subscribed(ch);
  }));
  // The bench object's instance id shows the reset happened (its Wasm instance is the one
  // the gateways and rooms share).
  const bench = `${server.url}/api/bench/raw/reset-${process.pid}`;
  const instance = async () => (await (await fetch(`${bench}/status`)).json()).instance;
  const before = await instance();
  const panic = () => fetch(`${bench}/panic`, { method: "POST", signal: AbortSignal.timeout(5000) })
    .catch(() => {});
  const accepted = await stream(channel, 0, 60, panic);
  assert.notEqual(await instance(), before, "the objects were reset");
  assert.ok(accepted.length >= 50, `accepted ${accepted.length} of 60`);
  // Events after the reset arrive, and the gap of anything lost in flight is filled.
  const last = accepted[accepted.length - 1];
  await waitFor(() => got.every((g) => g.includes(last)), () => JSON.stringify(got.map((g) => g.length)), 15000);
  for (const [k, g] of got.entries()) {
    assert.deepEqual(g, [...new Set(g)], `client ${k}: no duplicates`);
    assert.deepEqual(g, [...g].sort((a, b) => a - b), `client ${k}: in order`);
    for (const i of accepted) assert.ok(g.includes(i), `client ${k} missed accepted event ${i}`);
    assert.equal(clients[k].connection.state, "connected");
  }
  clients.forEach((p) => p.disconnect());
});

test("a runtime restart cuts the sockets: pusher-js reconnects, resubscribes and gets new events", async () => {
  const channel = `restart-${process.pid}`;
  const p = client();
  await connected(p);
  const ch = p.subscribe(channel);
  const got = [];
  ch.bind("tick", (d) => got.push(d.i));
  await subscribed(ch);
  await stream(channel, 0, 3);
  await waitFor(() => got.length === 3, () => JSON.stringify(got), 5000);
  const resubscribed = new Promise((resolve) => ch.bind("pusher:subscription_succeeded", resolve));
  await server.restart();
  await resubscribed;
  const accepted = await stream(channel, 3, 3);
  assert.deepEqual(accepted, [3, 4, 5]);
  await waitFor(() => got.length === 6, () => JSON.stringify(got), 10000);
  assert.deepEqual(got, [0, 1, 2, 3, 4, 5]);
  p.disconnect();
});

/** A pusher-js client that signs presence subscriptions as `user`. */
function member(user) {
  const sdk = rest();
  return client({
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) =>
        cb(null, sdk.authorizeChannel(socketId, channelName, { user_id: user, user_info: { n: user } })),
    },
  });
}

test("a runtime restart leaves no member behind: the cut sockets' subscriptions are swept", async () => {
  const channel = `presence-restart-${process.pid}`;
  const ann = member("ann");
  const bo = member("bo");
  try {
    await presenceAfterRestart(channel, ann, bo);
  } finally {
    ann.disconnect();
    bo.disconnect();
  }
});

async function presenceAfterRestart(channel, ann, bo) {
  await Promise.all([connected(ann), connected(bo)]);
  const annCh = ann.subscribe(channel);
  await subscribed(annCh);
  const boCh = bo.subscribe(channel);
  assert.equal((await subscribed(boCh)).count, 2);
  const removed = [];
  boCh.bind("pusher:member_removed", (m) => removed.push(m.id));
  const again = (ch) => new Promise((resolve) => ch.bind("pusher:subscription_succeeded", resolve));
  const back = [again(annCh), again(boCh)];
  // Both sockets are cut without a close reaching their gateways; pusher-js reconnects
  // (new socket ids, perhaps on other shards) and resubscribes.
  await server.restart();
  await Promise.all(back);
  const sdk = rest();
  const users = async () =>
    (await (await sdk.get({ path: `/channels/${channel}/users` })).json()).users.map((u) => u.id).sort();
  assert.deepEqual(await users(), ["ann", "bo"]);
  // Ann leaves: with the old sockets swept she is gone, and Bo is told once.
  ann.disconnect();
  await waitFor(async () => removed.includes("ann"), () => `removed ${JSON.stringify(removed)}`, 15000);
  await waitFor(async () => JSON.stringify(await users()) === JSON.stringify(["bo"]), "only bo is left", 15000);
  assert.deepEqual(removed, ["ann"]);
  bo.disconnect();
  // Bo leaves too: the channel is vacated (no stale subscription keeps it occupied).
  const occupied = async () =>
    (await (await sdk.get({ path: `/channels/${channel}`, params: { info: "subscription_count" } })).json()).occupied;
  await waitFor(async () => (await occupied()) === false, "the channel is vacated", 15000);
}

test("an operator's reconnect closes the app's sockets with 4200: pusher-js reconnects at once and resubscribes", async () => {
  const channel = `drain-${process.pid}`;
  const p = client();
  const { WebSocket } = createRequire(import.meta.url)("ws");
  const raw = new WebSocket(`ws://127.0.0.1:${server.port}/app/${APP.key}?protocol=7`);
  const rawClosed = new Promise((resolve) => raw.on("close", (code) => resolve(code)));
  const rawOpen = new Promise((resolve) => raw.once("message", resolve));
  try {
    const first = await connected(p);
    const ch = p.subscribe(channel);
    const got = [];
    ch.bind("tick", (d) => got.push(d.i));
    await subscribed(ch);
    await timeout(rawOpen, "the raw socket's connection_established");
    const resubscribed = new Promise((resolve) => ch.bind("pusher:subscription_succeeded", resolve));
    const admin = (body, key = "roomkeeper-local-dev-api-key") => fetch(`${server.url}/api/admin/pusher/apps/${APP.id}/reconnect`, {
      method: "POST", body: JSON.stringify(body),
      headers: { "content-type": "application/json", ...(key ? { Authorization: `Bearer ${key}` } : {}) },
    });
    assert.equal((await admin({ reason: "rebalance" }, null)).status, 401);
    assert.equal((await admin({ reason: "rebalance", shard: 1024 })).status, 404);
    assert.equal((await admin({ reason: "" })).status, 400);
    const r = await admin({ reason: "rebalance" });
    assert.equal(r.status, 200);
    assert.ok((await r.json()).closed >= 2, "both sockets closed");
    // `ws` reports a close once the TCP connection ends, which the local runtime leaves to
    // the client: once the close frame is in (CLOSING), end it and read the frame's code.
    await waitFor(() => raw.readyState === raw.CLOSING, "the raw socket's close frame", 5000);
    raw.terminate();
    assert.equal(await timeout(rawClosed, "the raw socket's close"), 4200);
    await timeout(resubscribed, "resubscribed after 4200", 5000);
    const second = await connected(p);
    assert.notEqual(second, first, "a new connection");
    const accepted = await stream(channel, 0, 3);
    assert.deepEqual(accepted, [0, 1, 2]);
    await waitFor(() => got.length === 3, () => JSON.stringify(got), 5000);
    assert.deepEqual(got, [0, 1, 2]);
    const audit = await (await fetch(`${server.url}/api/admin/audit?subject=pusher:${APP.id}`, {
      headers: { Authorization: "Bearer roomkeeper-local-dev-api-key" },
    })).json();
    assert.equal(audit.entries[0].action, "pusher_reconnect");
    assert.equal(audit.entries[0].detail.reason, "rebalance");
  } finally {
    p.disconnect();
    raw.close();
  }
});
