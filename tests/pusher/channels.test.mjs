// Pusher Channels compatibility, end to end: real workerd (wrangler dev), the real pusher-js
// 8.6.0 client in Node and the real `pusher` 5.3.4 server SDK, pinned in package.json.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

import { startServer } from "../browser/harness.mjs";
import {
  LOCAL_APP as APP, PusherServer, connected, pusherClient, serverSdk, subscribed, timeout, waitFor, disconnectAll,
} from "./helpers.mjs";

const require = createRequire(import.meta.url);

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.close(); });
afterEach(disconnectAll);

const client = (options = {}) => pusherClient(server.port, options.key ?? APP.key, options);
const rest = () => serverSdk(server.port, APP);

function collect(channel, event, n) {
  const got = [];
  return new Promise((resolve) => {
    channel.bind(event, (data) => { got.push(data); if (got.length === n) resolve(got); });
  });
}

test("pusher-js connects, subscribes to a public channel and receives SDK triggers in order", async () => {
  const p = client();
  const socketId = await connected(p);
  assert.match(socketId, /^\d+\.\d+$/);
  const ch = p.subscribe("orders");
  await subscribed(ch);
  const events = collect(ch, "App\\Events\\OrderShipped", 20);
  const sdk = rest();
  for (let i = 0; i < 20; i++) {
    const r = await sdk.trigger("orders", "App\\Events\\OrderShipped", { n: i });
    assert.equal(r.status, 200);
  }
  const got = await events;
  assert.deepEqual(got.map((d) => d.n), [...Array(20).keys()]);
  p.disconnect();
});

test("a trigger reaches every subscriber except the socket it names", async () => {
  const [a, b] = [client(), client()];
  const [idA] = await Promise.all([connected(a), connected(b)]);
  const [ca, cb] = [a.subscribe("news"), b.subscribe("news")];
  await Promise.all([subscribed(ca), subscribed(cb)]);
  const gotA = [];
  ca.bind("headline", (d) => gotA.push(d));
  const toB = collect(cb, "headline", 2);
  await rest().trigger("news", "headline", { n: 1 }, { socket_id: idA });
  await rest().trigger("news", "headline", { n: 2 });
  assert.deepEqual((await toB).map((d) => d.n), [1, 2]);
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(gotA.map((d) => d.n), [2], "the excluded socket got only the second");
  a.disconnect(); b.disconnect();
});

test("an unknown app key is closed with 4001 and pusher-js does not reconnect", async () => {
  const p = client({ key: "no-such-key" });
  const states = [];
  p.connection.bind("state_change", ({ current }) => states.push(current));
  const error = await new Promise((resolve) => p.connection.bind("error", resolve));
  assert.equal(error.error?.data?.code, 4001, JSON.stringify(error));
  await new Promise((r) => setTimeout(r, 1500));
  // pusher-js treats 4000-4099 as "refused": it goes to disconnected and does not retry.
  assert.deepEqual(states, ["disconnected"]);
  p.disconnect();
});

test("a private channel needs a valid signature; a bad one leaves the socket usable", async () => {
  const sdk = rest();
  const p = client({
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        if (channelName === "private-forged") cb(null, { auth: `${APP.key}:${"0".repeat(64)}` });
        else cb(null, sdk.authorizeChannel(socketId, channelName));
      },
    },
  });
  await connected(p);
  await assert.rejects(subscribed(p.subscribe("private-forged")), /AuthError|signature|401/);
  const ok = p.subscribe("private-desk");
  await subscribed(ok);
  const got = collect(ok, "note", 1);
  await sdk.trigger("private-desk", "note", "plain text");
  assert.deepEqual(await got, ["plain text"]);
  p.disconnect();
});

test("REST calls with a bad signature or an old timestamp are refused with 401", async () => {
  const bad = new PusherServer({ appId: APP.id, key: APP.key, secret: "wrong-secret", host: "127.0.0.1",
    port: String(server.port), useTLS: false });
  await assert.rejects(bad.trigger("orders", "e", {}), (e) => e.status === 401);
  const stale = new URL(`${server.url}/apps/${APP.id}/events`);
  stale.search = new URLSearchParams({ auth_key: APP.key, auth_timestamp: "1000", auth_version: "1.0",
    auth_signature: "0".repeat(64) }).toString();
  const r = await fetch(stale, { method: "POST", body: "{}", headers: { "Content-Type": "application/json" } });
  assert.equal(r.status, 401);
  assert.match(await r.text(), /timestamp/i);
});

/** A pusher-js client that signs private and presence channels with the SDK, as `user`. */
function signed(user, info = {}) {
  const sdk = rest();
  return client({
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        cb(null, channelName.startsWith("presence-")
          ? sdk.authorizeChannel(socketId, channelName, { user_id: user, user_info: info })
          : sdk.authorizeChannel(socketId, channelName));
      },
    },
  });
}

const shardOf = (socketId) => BigInt(socketId.split(".")[0]) % 1024n;

test("presence: one member per user across shards, member_added and member_removed once", async () => {
  // Two sockets of user u1 on different shards (the socket id tells the shard).
  const u1 = [];
  while (u1.length < 2) {
    const p = signed("u1", { name: "Ann" });
    const id = await connected(p);
    if (u1.length === 0 || shardOf(id) !== shardOf(u1[0].id)) u1.push({ p, id });
    else p.disconnect();
  }
  assert.notEqual(shardOf(u1[0].id), shardOf(u1[1].id));
  const room = `presence-team-${process.pid}`;
  const first = u1[0].p.subscribe(room);
  const members1 = await subscribed(first);
  assert.equal(members1.count, 1);
  assert.deepEqual(members1.me, { id: "u1", info: { name: "Ann" } });
  const added = [];
  const removed = [];
  first.bind("pusher:member_added", (m) => added.push(m.id));
  first.bind("pusher:member_removed", (m) => removed.push(m.id));
  // The same user on another shard: still one member, no member_added.
  const second = u1[1].p.subscribe(room);
  const members2 = await subscribed(second);
  assert.equal(members2.count, 1);
  // Another user: one member_added for it.
  const b = signed("u2", { name: "Bo" });
  await connected(b);
  const theirs = b.subscribe(room);
  const members3 = await subscribed(theirs);
  assert.equal(members3.count, 2);
  assert.deepEqual(Object.keys(members3.members).sort(), ["u1", "u2"]);
  await waitFor(() => added.length === 1);
  assert.deepEqual(added, ["u2"]);
  // The REST view agrees: two users, three subscriptions.
  const sdk = rest();
  const info = await (await sdk.get({ path: `/channels/${room}`, params: { info: "user_count,subscription_count" } })).json();
  assert.deepEqual(info, { occupied: true, user_count: 2, subscription_count: 3 });
  const users = await (await sdk.get({ path: `/channels/${room}/users` })).json();
  assert.deepEqual(users.users.map((u) => u.id).sort(), ["u1", "u2"]);
  // One of u1's sockets leaves: u1 is still a member. Then u2 leaves: member_removed once.
  u1[1].p.disconnect();
  b.disconnect();
  await waitFor(() => removed.length === 1);
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(removed, ["u2"]);
  u1[0].p.disconnect();
});


test("client events: to the other subscribers only, with user_id on presence channels", async () => {
  const [a, b] = [signed("ua"), signed("ub")];
  await Promise.all([connected(a), connected(b)]);
  const room = `presence-chat-${process.pid}`;
  const [ca, cb] = [a.subscribe(room), b.subscribe(room)];
  await Promise.all([subscribed(ca), subscribed(cb)]);
  const echoed = [];
  ca.bind("client-typing", (d) => echoed.push(d));
  const got = new Promise((resolve) => cb.bind("client-typing", (d, meta) => resolve({ d, meta })));
  assert.equal(ca.trigger("client-typing", { on: true }), true);
  const { d, meta } = await got;
  assert.deepEqual(d, { on: true });
  assert.equal(meta.user_id, "ua");
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(echoed, [], "never echoed to the sender");
  // Public channels take no client events: the server answers with an error.
  const pub = a.subscribe(`public-${process.pid}`);
  await subscribed(pub);
  const error = new Promise((resolve) => a.connection.bind("error", resolve));
  a.send_event("client-x", {}, `public-${process.pid}`);
  assert.match(JSON.stringify(await error), /client/i);
  a.disconnect(); b.disconnect();
});

test("client events over the rate get 4301 errors, then the socket is closed with 4301", async () => {
  const a = signed("flood");
  await connected(a);
  const ch = a.subscribe(`private-flood-${process.pid}`);
  await subscribed(ch);
  const codes = [];
  a.connection.bind("error", (e) => codes.push(e.error?.data?.code ?? e.data?.code));
  const closed = new Promise((resolve) => a.connection.bind("state_change", ({ current }) => {
    if (current === "disconnected" || current === "failed") resolve(current);
  }));
  for (let i = 0; i < 40; i++) ch.trigger("client-spam", { i });
  assert.equal(await closed, "disconnected");
  assert.ok(codes.filter((c) => c === 4301).length >= 9, JSON.stringify(codes));
  a.disconnect();
});

test("cache channels: a miss first, then the last event right after subscribing", async () => {
  const room = `cache-price-${process.pid}`;
  const p = client();
  await connected(p);
  const first = p.subscribe(room);
  const miss = new Promise((resolve) => first.bind("pusher:cache_miss", () => resolve(true)));
  await subscribed(first);
  assert.equal(await miss, true);
  await rest().trigger(room, "price", { usd: 1 });
  await rest().trigger(room, "price", { usd: 2 });
  const q = client();
  await connected(q);
  const second = q.subscribe(room);
  const last = new Promise((resolve) => second.bind("price", resolve));
  await subscribed(second);
  assert.deepEqual(await last, { usd: 2 });
  p.disconnect(); q.disconnect();
});

test("trigger info and channel info report subscriptions", async () => {
  const p = client();
  await connected(p);
  const room = `stats-${process.pid}`;
  await subscribed(p.subscribe(room));
  const r = await rest().trigger(room, "e", {}, { info: "subscription_count" });
  assert.deepEqual(await r.json(), { channels: { [room]: { subscription_count: 1 } } });
  const info = await (await rest().get({ path: `/channels/${room}`, params: { info: "subscription_count" } })).json();
  assert.deepEqual(info, { occupied: true, subscription_count: 1 });
  p.disconnect();
});

test("a channel's history over the signed REST API: what a socket missed, by offset", async () => {
  const room = `history-${process.pid}`;
  const p = client();
  try {
    await historyOf(room, p);
  } finally {
    p.disconnect();
  }
});

async function historyOf(room, p) {
  await connected(p);
  // Each event carries its offset in a field pusher-js drops; a raw socket shows it.
  const offsets = [];
  const { WebSocket } = require("ws");
  const raw = new WebSocket(`ws://127.0.0.1:${server.port}/app/${APP.key}?protocol=7`);
  const rawReady = new Promise((resolve) => raw.on("message", (m) => {
    const f = JSON.parse(m.toString());
    if (f.event === "pusher:connection_established") raw.send(JSON.stringify({ event: "pusher:subscribe", data: { channel: room } }));
    if (f.event === "pusher_internal:subscription_succeeded") resolve();
    if (f.event === "tick") offsets.push(f.offset);
  }));
  try {
    await timeout(rawReady, "the raw socket subscribed");
    await historyRead(room, p, offsets);
  } finally {
    raw.close();
  }
}

async function historyRead(room, p, offsets) {
  const got = [];
  const ch = p.subscribe(room);
  ch.bind("tick", (d) => got.push(d.i));
  await subscribed(ch);
  for (let i = 0; i < 5; i++) await rest().trigger(room, "tick", { i, text: "Grüße \\ ok" });
  await waitFor(() => got.length === 5 && offsets.length === 5, () => JSON.stringify([got, offsets]));
  const sdk = rest();
  const history = async (params) => sdk.get({ path: `/channels/${room}/history`, params });
  const all = await (await history({})).json();
  assert.equal(all.channel, room);
  assert.equal(all.truncated, false);
  assert.deepEqual(all.events.map((e) => JSON.parse(e.data).i), [0, 1, 2, 3, 4]);
  assert.deepEqual(all.events.map((e) => e.event), Array(5).fill("tick"));
  assert.equal(JSON.parse(all.events[0].data).text, "Grüße \\ ok");
  // The offsets are the ones the socket saw, so a client resumes from the last it kept.
  assert.deepEqual(all.events.map((e) => e.offset), offsets);
  const after = await (await history({ since: offsets[1], limit: 2 })).json();
  assert.deepEqual(after.events.map((e) => JSON.parse(e.data).i), [2, 3]);
  await assert.rejects(history({ limit: 0 }), (e) => e.status === 400);
  await assert.rejects(history({ since: "x" }), (e) => e.status === 400);
  const wrong = serverSdk(server.port, { ...APP, secret: "not-the-secret" });
  await assert.rejects(wrong.get({ path: `/channels/${room}/history` }), (e) => e.status === 401);
}

/** A pusher-js client that signs in as `user` through the SDK's authenticateUser. */
function signedIn(user) {
  const sdk = rest();
  return client({
    userAuthentication: {
      customHandler: ({ socketId }, cb) => cb(null, sdk.authenticateUser(socketId, { id: user, user_info: { n: user } })),
    },
  });
}

test("signin, events to a user on every socket of theirs, and terminating their connections", async () => {
  const user = `user-${process.pid}`;
  const [a, b, other] = [signedIn(user), signedIn(user), signedIn(`other-${process.pid}`)];
  await Promise.all([a, b, other].map(connected));
  const ready = (p) => new Promise((resolve) => p.user.signinDonePromise.then(resolve));
  [a, b, other].forEach((p) => p.signin());
  await Promise.all([a, b, other].map(ready));
  // pusher-js subscribes #server-to-user-{id} after signing in; wait for the channel.
  await waitFor(() => [a, b].every((p) => p.user.serverToUserChannel?.subscribed));
  const gotA = new Promise((resolve) => a.user.bind("notice", resolve));
  const gotB = new Promise((resolve) => b.user.bind("notice", resolve));
  const stray = [];
  other.user.bind("notice", (d) => stray.push(d));
  const r = await rest().sendToUser(user, "notice", { hi: 1 });
  assert.equal(r.status, 200);
  assert.deepEqual(await Promise.all([gotA, gotB]), [{ hi: 1 }, { hi: 1 }]);
  // Another user's server-to-user channel is refused (pusher-js will not even try: a raw socket).
  const { WebSocket } = require("ws");
  const raw = new WebSocket(`ws://127.0.0.1:${server.port}/app/${APP.key}?protocol=7`);
  const frames = [];
  raw.on("message", (m) => frames.push(JSON.parse(m.toString())));
  await waitFor(() => frames.length === 1);
  raw.send(JSON.stringify({ event: "pusher:subscribe", data: { channel: `#server-to-user-${user}` } }));
  await waitFor(() => frames.length === 2);
  assert.equal(frames[1].event, "pusher:subscription_error", JSON.stringify(frames[1]));
  raw.close();
  // Terminate: both of the user's sockets are closed, the others stay.
  const closed = (p) => new Promise((resolve) => p.connection.bind("state_change", ({ current }) => {
    if (current === "disconnected" || current === "unavailable" || current === "connecting") resolve(current);
  }));
  const [ca, cb] = [closed(a), closed(b)];
  const t = await rest().terminateUserConnections(user);
  assert.equal(t.status, 200);
  await Promise.all([ca, cb]);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(other.connection.state, "connected");
  assert.deepEqual(stray, []);
  [a, b, other].forEach((p) => p.disconnect());
});

test("GET /channels lists occupied channels, by prefix, with presence user counts", async () => {
  const tag = `list${process.pid}`;
  const ps = [signed("l1"), signed("l2"), client()];
  await Promise.all(ps.map(connected));
  await Promise.all([
    subscribed(ps[0].subscribe(`presence-${tag}`)),
    subscribed(ps[1].subscribe(`presence-${tag}`)),
    subscribed(ps[2].subscribe(`${tag}-public`)),
  ]);
  const sdk = rest();
  const all = await (await sdk.get({ path: "/channels" })).json();
  assert.ok(all.channels[`${tag}-public`], JSON.stringify(all));
  assert.ok(all.channels[`presence-${tag}`], JSON.stringify(all));
  const presence = await (await sdk.get({ path: "/channels", params: { filter_by_prefix: "presence-", info: "user_count" } })).json();
  assert.deepEqual(presence.channels[`presence-${tag}`], { user_count: 2 });
  assert.ok(!presence.channels[`${tag}-public`]);
  ps.forEach((p) => p.disconnect());
  // Once everyone left, the channels are no longer listed.
  const deadline = Date.now() + 5000;
  for (;;) {
    const after = await (await sdk.get({ path: "/channels" })).json();
    if (!after.channels[`${tag}-public`] && !after.channels[`presence-${tag}`]) break;
    assert.ok(Date.now() < deadline, JSON.stringify(after));
    await new Promise((r) => setTimeout(r, 200));
  }
});

test("private-encrypted channels: the SDK's ciphertext is relayed untouched and pusher-js decrypts it", async () => {
  // End-to-end encryption: the server never holds the key (32 bytes, base64).
  const masterKey = Buffer.alloc(32, 7).toString("base64");
  const sdk = new PusherServer({ appId: APP.id, key: APP.key, secret: APP.secret, host: "127.0.0.1",
    port: String(server.port), useTLS: false, encryptionMasterKeyBase64: masterKey });
  const p = client({
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => cb(null, sdk.authorizeChannel(socketId, channelName)),
    },
  });
  await connected(p);
  const name = `private-encrypted-vault-${process.pid}`;
  const ch = p.subscribe(name);
  await subscribed(ch);
  // A raw socket on the same channel sees what the server relays: ciphertext only.
  const { WebSocket } = require("ws");
  const raw = new WebSocket(`ws://127.0.0.1:${server.port}/app/${APP.key}?protocol=7`);
  const frames = [];
  raw.on("message", (m) => frames.push(JSON.parse(m.toString())));
  await waitFor(() => frames.length === 1);
  const rawId = JSON.parse(frames[0].data).socket_id;
  raw.send(JSON.stringify({ event: "pusher:subscribe",
    data: { channel: name, auth: sdk.authorizeChannel(rawId, name).auth } }));
  await waitFor(() => frames.some((f) => f.event === "pusher_internal:subscription_succeeded"));
  const got = collect(ch, "secret", 2);
  await sdk.trigger(name, "secret", { pin: 1234 });
  await sdk.trigger(name, "secret", { pin: 5678 });
  assert.deepEqual((await got).map((d) => d.pin), [1234, 5678]);
  await waitFor(() => frames.filter((f) => f.event === "secret").length === 2);
  for (const f of frames.filter((f) => f.event === "secret")) {
    const data = JSON.parse(f.data);
    assert.ok(data.ciphertext && data.nonce, f.data);
    assert.ok(!f.data.includes("1234") && !f.data.includes("5678"), f.data);
  }
  raw.close();
  // Client events are refused on encrypted channels.
  const error = new Promise((resolve) => p.connection.bind("error", resolve));
  p.send_event("client-x", {}, name);
  assert.match(JSON.stringify(await error), /client/i);
  p.disconnect();
});
