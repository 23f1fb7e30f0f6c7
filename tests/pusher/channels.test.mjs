// Pusher Channels compatibility, end to end: real workerd (wrangler dev), the real pusher-js
// 8.6.0 client in Node and the real `pusher` 5.3.4 server SDK, pinned in package.json.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

import { startServer } from "../browser/harness.mjs";

const require = createRequire(import.meta.url);
const PusherJs = require("pusher-js");
const PusherServer = require("pusher");

// The local app of wrangler.toml's [vars] PUSHER_APPS.
const APP = { id: "1", key: "roomkeeper-local-key", secret: "roomkeeper-local-secret" };

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.close(); });

function client(options = {}) {
  return new PusherJs(options.key ?? APP.key, {
    cluster: "local", wsHost: "127.0.0.1", wsPort: server.port, forceTLS: false,
    enabledTransports: ["ws"], disableStats: true, ...options,
  });
}

function rest() {
  return new PusherServer({ appId: APP.id, key: APP.key, secret: APP.secret, host: "127.0.0.1",
    port: String(server.port), useTLS: false });
}

function connected(p) {
  return new Promise((resolve, reject) => {
    p.connection.bind("connected", () => resolve(p.connection.socket_id));
    p.connection.bind("failed", () => reject(new Error("connection failed")));
  });
}

function subscribed(channel) {
  return new Promise((resolve, reject) => {
    channel.bind("pusher:subscription_succeeded", resolve);
    channel.bind("pusher:subscription_error", (e) => reject(new Error(JSON.stringify(e))));
  });
}

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
