// Pusher webhooks, end to end: real workerd with an app whose webhook URL is a real local
// HTTP server; each body is checked with the Node SDK's WebHook validator (pusher 5.3.4) and
// the Python SDK's validate_webhook (pusher 3.3.4), then its events are read.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { execFileSync } from "node:child_process";
import { join } from "node:path";

import { startServer, root } from "../browser/harness.mjs";
import { connected, pusherClient, serverSdk, subscribed, disconnectAll } from "./helpers.mjs";

const APP = { id: "7", key: "hooked-key", secret: "hooked-secret" };
// An app whose webhook receiver refuses everything with 410: its webhooks are dead at once.
const REFUSED = { id: "8", key: "refused-key", secret: "refused-secret" };
const received = [];
let server;
let hooks;

before(async () => {
  hooks = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => { body += c; });
    req.on("end", () => {
      if (req.url === "/gone") return res.writeHead(410).end("gone");
      received.push({ headers: req.headers, body });
      res.writeHead(200).end("ok");
    });
  });
  await new Promise((r) => hooks.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${hooks.address().port}/pusher`;
  const gone = `http://127.0.0.1:${hooks.address().port}/gone`;
  const apps = [{ ...APP, client_events: true, webhooks: [{ url }] }, { ...REFUSED, webhooks: [{ url: gone }] }];
  server = await startServer({ vars: { PUSHER_APPS: JSON.stringify(apps), PUSHER_WEBHOOK_DEAD_LETTERS: "3" } });
});
after(async () => { await server?.close(); hooks?.close(); });
afterEach(disconnectAll);

const sdk = () => serverSdk(server.port, APP);

function client(user) {
  const s = sdk();
  return pusherClient(server.port, APP.key, {
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => cb(null, channelName.startsWith("presence-")
        ? s.authorizeChannel(socketId, channelName, { user_id: user })
        : s.authorizeChannel(socketId, channelName)),
    },
  });
}

/** Every event received so far, after checking each body with both SDKs' validators. */
function events() {
  const out = [];
  for (const { headers, body } of received) {
    const hook = sdk().webhook({ headers, rawBody: body });
    assert.equal(hook.isValid(), true, `Node SDK refused ${body}`);
    const py = execFileSync(join(root, ".venv/bin/python"), ["-c",
      "import sys, json, pusher; p = pusher.Pusher(app_id=sys.argv[1], key=sys.argv[2], secret=sys.argv[3]);" +
      " print(json.dumps(p.validate_webhook(sys.argv[2], sys.argv[4], sys.argv[5]) is not None))",
      APP.id, APP.key, APP.secret, headers["x-pusher-signature"], body]).toString().trim();
    assert.equal(py, "true", `Python SDK refused ${body}`);
    out.push(...hook.getEvents());
  }
  return out;
}

async function until(pred, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const evs = events();
    if (pred(evs)) return evs;
    if (Date.now() > deadline) throw new Error(`webhooks so far: ${JSON.stringify(evs)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const named = (evs, name, channel) => evs.filter((e) => e.name === name && e.channel === channel);

test("occupied, member added and removed, client event, cache miss and vacated, each once", async () => {
  const room = `presence-hooks-${process.pid}`;
  const [a, a2, b] = [client("ann"), client("ann"), client("bob")];
  await Promise.all([a, a2, b].map(connected));
  const ca = a.subscribe(room);
  await subscribed(ca);
  await subscribed(a2.subscribe(room));
  const cb = b.subscribe(room);
  await subscribed(cb);
  cb.trigger("client-wave", { hi: true });
  const cache = a.subscribe(`cache-hooks-${process.pid}`);
  await subscribed(cache);
  let evs = await until((e) => named(e, "member_added", room).length === 2
    && named(e, "client_event", room).length === 1 && named(e, "cache_miss", `cache-hooks-${process.pid}`).length === 1);
  assert.equal(named(evs, "channel_occupied", room).length, 1);
  assert.deepEqual(named(evs, "member_added", room).map((e) => e.user_id).sort(), ["ann", "bob"]);
  const ce = named(evs, "client_event", room)[0];
  assert.deepEqual({ event: ce.event, data: JSON.parse(ce.data), user_id: ce.user_id, socket_id: ce.socket_id },
    { event: "client-wave", data: { hi: true }, user_id: "bob", socket_id: b.connection.socket_id });
  // ann's second socket leaving removes nobody; bob leaving removes bob; then everyone.
  a2.disconnect();
  b.disconnect();
  evs = await until((e) => named(e, "member_removed", room).length >= 1);
  a.disconnect();
  evs = await until((e) => named(e, "channel_vacated", room).length === 1);
  await new Promise((r) => setTimeout(r, 500));
  evs = events();
  assert.deepEqual(named(evs, "member_removed", room).map((e) => e.user_id).sort(), ["ann", "bob"]);
  assert.equal(named(evs, "channel_occupied", room).length, 1);
  assert.equal(named(evs, "channel_vacated", room).length, 1);
  for (const { headers } of received) assert.equal(headers["x-pusher-key"], APP.key);
});

/** The refused app's dead letters, newest first, as operators read them. */
async function deadLetters() {
  const admin = { headers: { Authorization: "Bearer roomkeeper-local-dev-api-key" } };
  const r = await fetch(`${server.url}/api/admin/pusher/webhooks/dead?app=${REFUSED.id}`, admin);
  assert.equal(r.status, 200);
  return (await r.json()).dead.map((d) => ({ ...d, events: JSON.parse(d.body).events }));
}

/** Waits for the dead letter of `name` on `channel`. */
async function deadFor(name, channel) {
  const deadline = Date.now() + 15000;
  for (;;) {
    const letters = await deadLetters();
    const letter = letters.find((d) => d.events.some((e) => e.name === name && e.channel === channel));
    if (letter) return letter;
    if (Date.now() > deadline) throw new Error(`no dead ${name} for ${channel}: ${JSON.stringify(letters)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

test("webhooks the receiver refuses are dead letters for operators, the newest PUSHER_WEBHOOK_DEAD_LETTERS kept", async () => {
  const p = pusherClient(server.port, REFUSED.key);
  const names = [1, 2, 3].map((i) => `dead-hooks-${i}-${process.pid}`);
  try {
    await connected(p);
    // One channel after the other: occupied, then vacated, each dead before the next event.
    for (const channel of names) {
      await subscribed(p.subscribe(channel));
      const occupied = await deadFor("channel_occupied", channel);
      assert.deepEqual(
        { app_id: occupied.app_id, reason: occupied.reason, attempts: occupied.attempts, last_status: occupied.last_status },
        { app_id: REFUSED.id, reason: "permanent_status", attempts: 1, last_status: 410 },
      );
      assert.ok(occupied.url.endsWith("/gone"));
      p.unsubscribe(channel);
      await deadFor("channel_vacated", channel);
    }
  } finally {
    p.disconnect();
  }
  // Six letters died; the server keeps three (the test server's setting): the newest.
  const kept = (await deadLetters()).map((d) => `${d.events[0].name} ${d.events[0].channel}`);
  assert.deepEqual(kept, [
    `channel_vacated ${names[2]}`, `channel_occupied ${names[2]}`, `channel_vacated ${names[1]}`,
  ]);
  assert.equal((await fetch(`${server.url}/api/admin/pusher/webhooks/dead`)).status, 401);
  // Nothing of the refused app reached the accepting receiver.
  assert.ok(received.every(({ headers }) => headers["x-pusher-key"] === APP.key));
});
