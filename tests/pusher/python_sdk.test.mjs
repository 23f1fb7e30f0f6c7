// Pusher Channels compatibility with the pinned Python server SDK (`pusher` 3.3.4 in .venv):
// real workerd (wrangler dev), pusher-js 8.6.0 subscribers in Node, and the Python SDK run as
// a child process (tests/pusher/py/sdk.py) for triggers, channel queries and channel auth.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";

import { startServer, root } from "../browser/harness.mjs";
import {
  LOCAL_APP as APP, PusherServer, connected, pusherClient, subscribed, timeout, waitFor, disconnectAll,
} from "./helpers.mjs";

const PYTHON = join(root, ".venv", "bin", "python");
const SDK_PY = join(root, "tests", "pusher", "py", "sdk.py");
const WAIT = 8000;

let server;
const clients = [];
before(async () => { server = await startServer(); });
after(async () => {
  for (const c of clients) c.disconnect();
  await server?.close();
});
afterEach(disconnectAll);

/** Runs `calls` ([{method, args, kwargs}]) on the Python SDK; one result per call. */
function py(calls, { secret } = {}) {
  return new Promise((resolve, reject) => {
    const args = [SDK_PY, String(server.port), ...(secret ? [secret] : [])];
    const child = execFile(PYTHON, args, { timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`python failed: ${err.message}\n${stderr}`));
      try { resolve(JSON.parse(stdout)); } catch { reject(new Error(`bad python output: ${stdout}\n${stderr}`)); }
    });
    child.stdin.end(JSON.stringify(calls));
  });
}

/** One SDK call that must succeed; returns its result. */
async function py1(method, args = [], kwargs = {}) {
  const [r] = await py([{ method, args, kwargs }]);
  assert.ok(!("error" in r), `${method} raised ${r.error}: ${r.message}`);
  return r.ok;
}

function client(options = {}) {
  const p = pusherClient(server.port, APP.key, options);
  clients.push(p);
  return p;
}

/** Records every non-pusher: event of `channel` as [event, data]. */
function record(channel) {
  const got = [];
  channel.bind_global((event, data) => { if (!event.startsWith("pusher:")) got.push([event, data]); });
  return got;
}

const settle = (ms = 300) => new Promise((r) => setTimeout(r, ms));

/** A pusher-js client whose private/presence subscriptions are signed by the Python SDK. */
function pySigned(user, info) {
  return client({
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        const custom = channelName.startsWith("presence-") ? [{ user_id: user, user_info: info }] : [];
        py1("authenticate", [channelName, socketId, ...custom]).then((auth) => cb(null, auth), (e) => cb(e, null));
      },
    },
  });
}

const uniq = (name) => `${name}-${process.pid}-${Math.floor(Math.random() * 1e6)}`;

const EVENT = "App\\Events\\OrderShipped";
const TEXT = "Grüße, 東京, emoji 🚀, quote \" and backslash \\ and C:\\path\\n (not a newline)";

test("python trigger: one channel, events in order, non-ASCII and backslashes intact", async () => {
  const p = client();
  await connected(p);
  const room = uniq("py-orders");
  const ch = p.subscribe(room);
  await subscribed(ch);
  const got = record(ch);
  const calls = [];
  for (let i = 0; i < 12; i++) calls.push({ method: "trigger", args: [room, EVENT, { n: i, text: TEXT }] });
  calls.push({ method: "trigger", args: [room, "Ünïcode\\Event.名前", "plain string ✓ \\o/"] });
  const results = await py(calls);
  assert.deepEqual(results, calls.map(() => ({ ok: {} })), "every trigger answers {} as Pusher does");
  await waitFor(() => got.length === 13, "13 events");
  await settle();
  assert.equal(got.length, 13, "no duplicates");
  for (let i = 0; i < 12; i++) assert.deepEqual(got[i], [EVENT, { n: i, text: TEXT }]);
  assert.deepEqual(got[12], ["Ünïcode\\Event.名前", "plain string ✓ \\o/"]);
});

test("python trigger: several channels in one call, each subscriber once, in order; socket_id excludes", async () => {
  const rooms = [uniq("py-multi-a"), uniq("py-multi-b"), uniq("py-multi-c")];
  const [a, b] = [client(), client()];
  const [idA] = await Promise.all([connected(a), connected(b)]);
  // a on all three channels, b on the last two.
  const chA = rooms.map((r) => a.subscribe(r));
  const chB = rooms.slice(1).map((r) => b.subscribe(r));
  await Promise.all([...chA, ...chB].map(subscribed));
  const gotA = chA.map(record);
  const gotB = chB.map(record);
  const results = await py([
    { method: "trigger", args: [rooms, "multi", { n: 1 }] },
    { method: "trigger", args: [rooms, "multi", { n: 2 }] },
    { method: "trigger", args: [rooms, "multi", { n: 3 }], kwargs: { socket_id: idA } },
    { method: "trigger", args: [rooms, "multi", { n: 4 }] },
  ]);
  assert.deepEqual(results, [{ ok: {} }, { ok: {} }, { ok: {} }, { ok: {} }]);
  await waitFor(() => gotA.every((g) => g.length === 3) && gotB.every((g) => g.length === 4), "multi-channel events");
  await settle();
  for (const g of gotA) assert.deepEqual(g, [["multi", { n: 1 }], ["multi", { n: 2 }], ["multi", { n: 4 }]]);
  for (const g of gotB) assert.deepEqual(g, [1, 2, 3, 4].map((n) => ["multi", { n }]));
});

test("python trigger_batch: events reach their channels in batch order", async () => {
  const [r1, r2] = [uniq("py-batch-1"), uniq("py-batch-2")];
  const p = client();
  await connected(p);
  const [c1, c2] = [p.subscribe(r1), p.subscribe(r2)];
  await Promise.all([subscribed(c1), subscribed(c2)]);
  const [g1, g2] = [record(c1), record(c2)];
  const batch = [
    { channel: r1, name: EVENT, data: { i: 0, text: TEXT } },
    { channel: r2, name: "second", data: "raw ✓" },
    { channel: r1, name: "third", data: { i: 2 } },
    { channel: r1, name: EVENT, data: { i: 3 } },
  ];
  const result = await py1("trigger_batch", [batch]);
  assert.deepEqual(result, {}, "batch without info answers {} (Pusher: {} or {batch: [...]} with info)");
  await waitFor(() => g1.length === 3 && g2.length === 1, "batch events");
  await settle();
  assert.deepEqual(g1, [[EVENT, { i: 0, text: TEXT }], ["third", { i: 2 }], [EVENT, { i: 3 }]]);
  assert.deepEqual(g2, [["second", "raw ✓"]]);
});

test("python channel_info and users_info (GET with body_md5) on public and presence channels", async () => {
  const pub = uniq("py-info");
  const [a, b] = [client(), client()];
  await Promise.all([connected(a), connected(b)]);
  await Promise.all([subscribed(a.subscribe(pub)), subscribed(b.subscribe(pub))]);
  assert.deepEqual(await py1("channel_info", [pub], { attributes: ["subscription_count"] }),
    { occupied: true, subscription_count: 2 });
  assert.deepEqual(await py1("channel_info", [pub]), { occupied: true });
  assert.deepEqual(await py1("channel_info", [uniq("py-empty")], { attributes: ["subscription_count"] }),
    { occupied: false, subscription_count: 0 }, "an empty channel: not occupied, the asked count is 0");

  const room = `presence-${uniq("py-room")}`;
  const u1 = pySigned("u1", { name: "Ann ✓" });
  const u1b = pySigned("u1", { name: "Ann ✓" });
  const u2 = pySigned("u2", { name: "Bo" });
  await Promise.all([connected(u1), connected(u1b), connected(u2)]);
  for (const p of [u1, u1b, u2]) await subscribed(p.subscribe(room));
  assert.deepEqual(await py1("channel_info", [room], { attributes: ["user_count"] }),
    { occupied: true, user_count: 2 });
  assert.deepEqual(await py1("channel_info", [room], { attributes: ["user_count", "subscription_count"] }),
    { occupied: true, user_count: 2, subscription_count: 3 });
  const users = await py1("users_info", [room]);
  assert.deepEqual(Object.keys(users), ["users"]);
  assert.deepEqual(users.users.map((u) => u.id).sort(), ["u1", "u2"]);
  assert.deepEqual(users.users.map((u) => Object.keys(u)), [["id"], ["id"]], "users carry only their id");
  u2.disconnect();
  let last;
  const deadline = Date.now() + WAIT;
  do {
    last = await py1("users_info", [room]);
    if (last.users.length === 1) break;
    await settle(100);
  } while (Date.now() < deadline);
  assert.deepEqual(last, { users: [{ id: "u1" }] }, "u2 left");
});

test("python authenticate signs private and presence subscriptions for pusher-js", async () => {
  const node = new PusherServer({ appId: APP.id, key: APP.key, secret: APP.secret });
  const p = pySigned("py-user", { name: "Zoë" });
  const socketId = await connected(p);
  // The Python signature equals the Node SDK's (same string to sign, same HMAC).
  const desk = uniq("private-py-desk");
  assert.deepEqual(await py1("authenticate", [desk, socketId]), node.authorizeChannel(socketId, desk));
  const ch = p.subscribe(desk);
  await subscribed(ch);
  const got = record(ch);
  assert.deepEqual(await py1("trigger", [desk, "note", { text: TEXT }]), {});
  await waitFor(() => got.length === 1, "private event");
  assert.deepEqual(got, [["note", { text: TEXT }]]);

  const room = `presence-${uniq("py-auth")}`;
  const pres = p.subscribe(room);
  const members = await subscribed(pres);
  assert.equal(members.count, 1);
  assert.deepEqual(members.me, { id: "py-user", info: { name: "Zoë" } });
  assert.deepEqual(await py1("users_info", [room]), { users: [{ id: "py-user" }] });
});

test("a Python signature made with the wrong secret is refused and the socket stays usable", async () => {
  const p = client({
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        py([{ method: "authenticate", args: [channelName, socketId] }], { secret: "wrong-secret" })
          .then(([r]) => cb(null, r.ok), (e) => cb(e, null));
      },
    },
  });
  await connected(p);
  await assert.rejects(subscribed(p.subscribe(uniq("private-py-forged"))),
    { message: 'subscription_error {"error":"invalid signature","status":401,"type":"AuthError"}' });
  const pub = p.subscribe(uniq("py-after-forged"));
  await subscribed(pub);
  assert.equal(p.connection.state, "connected");
});

test("python SDK with a bad secret raises PusherBadAuth (HTTP 401) on POST and GET", async () => {
  const room = uniq("py-bad");
  const results = await py([
    { method: "trigger", args: [room, "e", { x: 1 }] },
    { method: "trigger_batch", args: [[{ channel: room, name: "e", data: "x" }]] },
    { method: "channel_info", args: [room], kwargs: { attributes: ["subscription_count"] } },
    { method: "users_info", args: [`presence-${room}`] },
  ], { secret: "wrong-secret" });
  assert.deepEqual(results.map((r) => r.error), ["PusherBadAuth", "PusherBadAuth", "PusherBadAuth", "PusherBadAuth"],
    JSON.stringify(results));
  // The same calls with the right secret succeed (so the failure above is the secret).
  const good = await py([
    { method: "trigger", args: [room, "e", { x: 1 }] },
    { method: "channel_info", args: [room] },
  ]);
  assert.deepEqual(good, [{ ok: {} }, { ok: { occupied: false } }]);
});

test("python SDK: a non-presence users_info is a 400 (PusherBadRequest)", async () => {
  const [r] = await py([{ method: "users_info", args: [uniq("py-not-presence")] }]);
  assert.equal(r.error, "PusherBadRequest", JSON.stringify(r));
});

test("python SDK: Pusher limits as the SDK sees them (413 data, 400 for 11 batch events, 101 channels refused by the SDK)", async () => {
  const room = uniq("py-limits");
  const p = client();
  await connected(p);
  const ch = p.subscribe(room);
  await subscribed(ch);
  const got = record(ch);
  const big = "x".repeat(10 * 1024 + 1); // over Pusher's 10 KB, under the SDK's own 30 KB check
  const eleven = Array.from({ length: 11 }, (_, i) => ({ channel: room, name: "b", data: String(i) }));
  const channels = Array.from({ length: 101 }, (_, i) => `${room}-${i}`);
  const results = await py([
    { method: "trigger", args: [room, "big", big] },
    { method: "trigger_batch", args: [eleven] },
    { method: "trigger", args: [room, "ok", "small"] },
  ]);
  assert.equal(results[0].error, "PusherBadStatus", JSON.stringify(results[0]));
  assert.match(results[0].message, /^413: /);
  assert.equal(results[1].error, "PusherBadRequest", JSON.stringify(results[1]));
  assert.deepEqual(results[2], { ok: {} });
  // 101 channels: the SDK itself refuses (ValueError) before sending.
  const [tooMany] = await py([{ method: "trigger", args: [channels, "e", "x"] }]);
  assert.equal(tooMany.error, "ValueError");
  await waitFor(() => got.length === 1, "the small event");
  await settle();
  assert.deepEqual(got, [["ok", "small"]], "nothing of the refused requests was delivered");
});
