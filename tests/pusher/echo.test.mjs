// Laravel Echo 2.5.0 (broadcaster 'pusher') on pusher-js 8.6.0 against real workerd
// (wrangler dev); events come from the `pusher` 5.3.4 Node SDK, which also signs channel auth
// in a custom authorizer, so no /broadcasting/auth endpoint is needed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import Echo from "laravel-echo";

import { startServer } from "../browser/harness.mjs";
import { LOCAL_APP as APP, PusherJs, serverSdk, timeout, waitFor } from "./helpers.mjs";

let server;
let sdk;
const echoes = [];
before(async () => {
  server = await startServer();
  sdk = serverSdk(server.port, APP);
});
after(async () => {
  for (const e of echoes) e.disconnect();
  await server?.close();
});

/** Signs a channel for `user` with the Node SDK (presence gets user_id and user_info). */
function sign(socketId, channelName, user) {
  return channelName.startsWith("presence-")
    ? sdk.authorizeChannel(socketId, channelName, { user_id: user.id, user_info: user.info })
    : sdk.authorizeChannel(socketId, channelName);
}

/**
 * An Echo client. `style: 'authorizer'` uses the authorizer option as Laravel's docs show it
 * ((channel, options) => ({authorize(socketId, callback)})); otherwise pusher-js 8's
 * channelAuthorization.customHandler.
 */
function echo(user = { id: "anon", info: {} }, style = "customHandler") {
  const auth = style === "authorizer"
    ? { authorizer: (channel) => ({ authorize: (socketId, cb) => cb(null, sign(socketId, channel.name, user)) }) }
    : { channelAuthorization: { customHandler: ({ socketId, channelName }, cb) => cb(null, sign(socketId, channelName, user)) } };
  const e = new Echo({
    broadcaster: "pusher", key: APP.key, cluster: "local", wsHost: "127.0.0.1", wsPort: server.port,
    forceTLS: false, enabledTransports: ["ws"], disableStats: true, Pusher: PusherJs, ...auth,
  });
  echoes.push(e);
  return e;
}

/** Resolves when the Echo channel is subscribed; rejects on a subscription error. */
function ready(channel) {
  return timeout(new Promise((resolve, reject) => {
    channel.subscribed(resolve).error((e) => reject(new Error(`subscription error ${JSON.stringify(e)}`)));
  }), `subscribed ${channel.name}`);
}

const settle = (ms = 300) => new Promise((r) => setTimeout(r, ms));
const uniq = (name) => `${name}-${process.pid}-${Math.floor(Math.random() * 1e6)}`;

test("Echo.channel().listen: '.App\\Events\\X' verbatim, 'X' and 'Sub.X' under the App.Events namespace", async () => {
  const e = echo();
  const name = uniq("orders");
  const got = [];
  const ch = e.channel(name)
    .listen(".App\\Events\\OrderShipped", (d) => got.push(["dot", d]))
    .listen("OrderShipped", (d) => got.push(["ns", d]))
    .listen("Orders.Paid", (d) => got.push(["sub", d]))
    .listen(".OrderShipped", (d) => got.push(["bare", d]));
  await ready(ch);
  assert.match(e.socketId(), /^\d+\.\d+$/);
  const note = "Grüße \\ 東京 \"q\"";
  await sdk.trigger(name, "App\\Events\\OrderShipped", { order: 1, note });
  await sdk.trigger(name, "App\\Events\\Orders\\Paid", { order: 1 });
  await sdk.trigger(name, "OrderShipped", { order: 2 });
  await sdk.trigger(name, "App.Events.OrderShipped", { order: 3 }); // dotted on the wire: no listener
  await sdk.trigger(name, "App\\Events\\OrderShipped", { order: 4 });
  await waitFor(() => got.length === 6, "6 listener calls");
  await settle();
  assert.deepEqual(got, [
    ["dot", { order: 1, note }], ["ns", { order: 1, note }],
    ["sub", { order: 1 }],
    ["bare", { order: 2 }],
    ["dot", { order: 4 }], ["ns", { order: 4 }],
  ]);
});

test("Echo.listen shorthand and stopListening", async () => {
  const e = echo();
  const name = uniq("shipping");
  const got = [];
  const cb = (d) => got.push(d.n);
  const ch = e.listen(name, "OrderShipped", cb);
  await ready(ch);
  for (let n = 0; n < 10; n++) await sdk.trigger(name, "App\\Events\\OrderShipped", { n });
  await waitFor(() => got.length === 10, "10 events");
  ch.stopListening("OrderShipped", cb);
  await sdk.trigger(name, "App\\Events\\OrderShipped", { n: 99 });
  await settle();
  assert.deepEqual(got, [...Array(10).keys()]);
});

test("Echo.private('desk') subscribes private-desk (both authorizer styles) and gets SDK events", async () => {
  const desk = uniq("desk");
  const a = echo({ id: "a", info: {} }, "authorizer");
  const b = echo({ id: "b", info: {} }, "customHandler");
  const [ca, cb] = [a.private(desk), b.private(desk)];
  assert.equal(ca.name, `private-${desk}`);
  const [gotA, gotB] = [[], []];
  ca.listen("Note", (d) => gotA.push(d));
  cb.listen(".note.raw", (d) => gotB.push(d));
  await Promise.all([ready(ca), ready(cb)]);
  const info = await (await sdk.get({ path: `/channels/private-${desk}`, params: { info: "subscription_count" } })).json();
  assert.deepEqual(info, { occupied: true, subscription_count: 2 });
  await sdk.trigger(`private-${desk}`, "App\\Events\\Note", { text: "one" });
  await sdk.trigger(`private-${desk}`, "note.raw", "two");
  await sdk.trigger(`private-${desk}`, "App\\Events\\Note", { text: "three" });
  await waitFor(() => gotA.length === 2 && gotB.length === 1, "private events");
  await settle();
  assert.deepEqual(gotA, [{ text: "one" }, { text: "three" }]);
  assert.deepEqual(gotB, ["two"]);
});

test("Echo.private whisper / listenForWhisper: client-typing to the others, never to the sender", async () => {
  const desk = uniq("desk-w");
  const [a, b] = [echo({ id: "a", info: {} }), echo({ id: "b", info: {} })];
  const [ca, cb] = [a.private(desk), b.private(desk)];
  const [gotA, gotB] = [[], []];
  ca.listenForWhisper("typing", (d) => gotA.push(d));
  cb.listenForWhisper("typing", (d) => gotB.push(d));
  await Promise.all([ready(ca), ready(cb)]);
  ca.whisper("typing", { name: "Ann", n: 1 });
  ca.whisper("typing", { name: "Ann", n: 2 });
  cb.whisper("typing", { name: "Bo ✓", n: 3 });
  await waitFor(() => gotA.length === 1 && gotB.length === 2, "whispers");
  await settle();
  assert.deepEqual(gotB, [{ name: "Ann", n: 1 }, { name: "Ann", n: 2 }]);
  assert.deepEqual(gotA, [{ name: "Bo ✓", n: 3 }]);
});

test("Echo.join: here, joining, leaving, whisper and SDK events on a presence channel", async () => {
  const room = uniq("room");
  const ann = { id: "u-ann", info: { name: "Ann" } };
  const bo = { id: "u-bo", info: { name: "Bo 東京" } };
  const a = echo(ann);
  const log = [];
  const ja = a.join(room)
    .here((members) => log.push(["here", members]))
    .joining((m) => log.push(["joining", m]))
    .leaving((m) => log.push(["leaving", m]))
    .listenForWhisper("typing", (d) => log.push(["whisper", d]))
    .listen("RoomUpdated", (d) => log.push(["event", d]));
  assert.equal(ja.name, `presence-${room}`);
  await ready(ja);
  await waitFor(() => log.length === 1, "here");
  assert.deepEqual(log, [["here", [{ name: "Ann" }]]]);

  const b = echo(bo);
  const hereB = [];
  const whispersB = [];
  const jb = b.join(room).here((m) => hereB.push(m)).listenForWhisper("typing", (d) => whispersB.push(d));
  await ready(jb);
  await waitFor(() => log.length === 2 && hereB.length === 1, "joining and here");
  assert.deepEqual(log[1], ["joining", { name: "Bo 東京" }]);
  assert.deepEqual(hereB[0].sort((x, y) => x.name.localeCompare(y.name)), [{ name: "Ann" }, { name: "Bo 東京" }]);

  const users = await (await sdk.get({ path: `/channels/presence-${room}/users` })).json();
  assert.deepEqual(users.users.map((u) => u.id).sort(), ["u-ann", "u-bo"]);

  jb.whisper("typing", { typing: true });
  await sdk.trigger(`presence-${room}`, "App\\Events\\RoomUpdated", { topic: "Pläne" });
  await waitFor(() => log.length === 4, "whisper and event");
  assert.deepEqual(log.slice(2).sort((x, y) => x[0].localeCompare(y[0])),
    [["event", { topic: "Pläne" }], ["whisper", { typing: true }]]);

  b.leave(room);
  await waitFor(() => log.length === 5, "leaving");
  await settle();
  assert.deepEqual(log[4], ["leaving", { name: "Bo 東京" }]);
  assert.equal(log.length, 5);
  assert.deepEqual(whispersB, [], "the whisperer does not hear itself");
});
