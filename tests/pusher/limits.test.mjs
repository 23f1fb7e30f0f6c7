// Pusher limits as settings, on a server of its own (one gateway shard, so quotas are exact):
// the app's connection quota (4004), channels per socket, event data size and the protocol
// version check (4007 / 4008), with pusher-js 8.6.0, the Node SDK and raw sockets.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

import { startServer } from "../browser/harness.mjs";
import { connected, pusherClient, serverSdk, subscribed, waitFor, disconnectAll } from "./helpers.mjs";

const require = createRequire(import.meta.url);
const { WebSocket } = require("ws");

const APP = { id: "9", key: "small-key", secret: "small-secret" };
// An app without a quota: only the shard's capacity (PUSHER_MAX_SOCKETS_PER_SHARD) applies.
const ROOMY = { id: "10", key: "roomy-key", secret: "roomy-secret" };
let server;
before(async () => {
  server = await startServer({ vars: {
    PUSHER_APPS: JSON.stringify([{ ...APP, max_connections: 2 }, ROOMY]),
    PUSHER_MAX_SOCKETS_PER_SHARD: "3",
    PUSHER_GATEWAY_SHARDS: "1",
    PUSHER_MAX_CHANNELS_PER_SOCKET: "3",
    PUSHER_MAX_EVENT_DATA_BYTES: "100",
  } });
});
after(async () => { await server?.close(); });
afterEach(disconnectAll);

/** A raw socket's close code and the frames it got before. */
function rawClose(query, key = APP.key) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/app/${key}${query}`);
    const frames = [];
    ws.on("message", (m) => frames.push(JSON.parse(m.toString())));
    ws.on("close", (code) => resolve({ code, frames }));
  });
}

test("a socket without a protocol version gets 4008, an unsupported one 4007", async () => {
  const none = await rawClose("");
  assert.equal(none.code, 4008);
  assert.equal(none.frames[0]?.data?.code, 4008, JSON.stringify(none.frames));
  const old = await rawClose("?protocol=3");
  assert.equal(old.code, 4007);
});

test("the app's connection quota: the third socket gets 4004 and pusher-js stays away", async () => {
  const [a, b] = [pusherClient(server.port, APP.key), pusherClient(server.port, APP.key)];
  await Promise.all([connected(a), connected(b)]);
  const c = pusherClient(server.port, APP.key);
  const states = [];
  c.connection.bind("state_change", ({ current }) => states.push(current));
  const error = await new Promise((resolve) => c.connection.bind("error", resolve));
  assert.equal(error.error?.data?.code, 4004, JSON.stringify(error));
  await new Promise((r) => setTimeout(r, 1000));
  assert.deepEqual(states, ["disconnected"]);
  // A place frees up when a socket leaves.
  a.disconnect();
  await new Promise((r) => setTimeout(r, 500));
  const d = pusherClient(server.port, APP.key);
  await connected(d);
  [b, c, d].forEach((p) => p.disconnect());
});

test("channels per socket and event data size follow their settings", async () => {
  await new Promise((r) => setTimeout(r, 500));
  const p = pusherClient(server.port, APP.key);
  await connected(p);
  for (const name of ["one", "two", "three"]) await subscribed(p.subscribe(name));
  await assert.rejects(subscribed(p.subscribe("four")), /403/);
  const sdk = serverSdk(server.port, APP);
  const got = [];
  p.channel("one").bind("e", (d) => got.push(d));
  await sdk.trigger("one", "e", "x".repeat(100));
  await assert.rejects(sdk.trigger("one", "e", "x".repeat(101)), (e) => e.status === 413);
  await waitFor(() => got.length === 1, "the event of 100 bytes");
  assert.equal(got[0].length, 100);
  p.disconnect();
});

test("a full shard closes the next socket with 4100: pusher-js backs off and gets in once there is room", async () => {
  const held = [1, 2, 3].map(() => pusherClient(server.port, ROOMY.key));
  try {
    await Promise.all(held.map(connected));
    const full = await rawClose("?protocol=7", ROOMY.key);
    assert.equal(full.code, 4100);
    assert.equal(full.frames[0]?.data?.code, 4100, JSON.stringify(full.frames));
    // pusher-js reads 4100 as "back off, then retry": it keeps trying and gets in once a
    // socket leaves.
    const late = pusherClient(server.port, ROOMY.key);
    held.push(late);
    const states = [];
    late.connection.bind("state_change", ({ current }) => states.push(current));
    await new Promise((r) => setTimeout(r, 1500));
    assert.notEqual(late.connection.state, "connected");
    assert.ok(!states.includes("failed"), JSON.stringify(states));
    held[0].disconnect();
    await connected(late);
  } finally {
    held.forEach((p) => p.disconnect());
  }
});
