// Behaviour comparison, Roomkeeper vs sockudo 5.2.0: the same named probes against each server,
// printed as a Markdown table (and written to artifacts/sockudo-compare.md). Every cell is what
// the run observed; only the "Pusher expects" column is written by hand, from the Pusher docs and
// pusher-js. A report, not a test: it exits 0 whatever the servers answer, 1 if the harness broke,
// 2 if sockudo is not installed (scripts/sockudo.sh installs it).
import { spawn, execFile } from "node:child_process";
import { createHash, createHmac } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { startServer, freePort, root } from "../../browser/harness.mjs";
import { LOCAL_APP as APP, connected, pusherClient, serverSdk, subscribed, timeout, waitFor } from "../helpers.mjs";

const { WebSocket } = createRequire(import.meta.url)("ws");
const SOCKUDO = process.env.SOCKUDO ?? join(root, ".tools", "sockudo", "bin", "sockudo");
const PYTHON = join(root, ".venv", "bin", "python");
const SDK_PY = join(root, "tests", "pusher", "py", "sdk.py");
const PROBE_MS = 8000; // one probe's budget; a probe past it reports "timed out"
const SHORT = 1500; // how long to wait for something that should not happen (an echo, a relay)
const TEXT = "Grüße 東京 🚀 \"quoted\" back\\slash C:\\path\\n {\"json\":true}";

// ---- servers -------------------------------------------------------------------------------

/** sockudo on a free loopback port with the local app; resolves once /up/1 answers. */
async function startSockudo() {
  const port = await freePort();
  const log = join(mkdtempSync(join(tmpdir(), "sockudo-")), "sockudo.log");
  const fd = openSync(log, "a");
  const child = spawn(SOCKUDO, [], { stdio: ["ignore", fd, fd], env: { ...process.env, HOST: "127.0.0.1",
    PORT: String(port), METRICS_ENABLED: "false", SOCKUDO_DEFAULT_APP_ID: APP.id,
    SOCKUDO_DEFAULT_APP_KEY: APP.key, SOCKUDO_DEFAULT_APP_SECRET: APP.secret,
    SOCKUDO_DEFAULT_APP_ENABLE_CLIENT_MESSAGES: "true", SOCKUDO_DEFAULT_APP_ENABLE_USER_AUTHENTICATION: "true",
    // Its default of 20 socket upgrades a minute per address would refuse the probes' own
    // sockets (about 40 from 127.0.0.1): a limit of the harness, not a protocol difference.
    RATE_LIMITER_WS_MAX_REQUESTS: "10000" } });
  const url = `http://127.0.0.1:${port}`;
  const up = async () => {
    if (child.exitCode !== null) throw new Error(`sockudo exited:\n${readFileSync(log, "utf8").slice(-2000)}`);
    try { return (await fetch(`${url}/up/${APP.id}`)).ok; } catch { return false; }
  };
  await waitFor(up, `sockudo /up/1 (log: ${log})`, 30_000);
  const close = async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
    await exited;
    clearTimeout(timer);
  };
  return { port, url, close };
}

// ---- probe context: clients that are cleaned up after each probe --------------------------

function parseData(d) {
  if (typeof d !== "string") return d;
  try { return JSON.parse(d); } catch { return d; }
}

/** A raw protocol-7 socket that records every frame; `seen(pred)` waits for a matching one. */
function rawSocket(port, key) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/app/${key}?protocol=7&client=js&version=8.6.0`);
  const s = { ws, frames: [], code: null };
  ws.on("message", (m) => s.frames.push(JSON.parse(m.toString())));
  // An upgrade refused over HTTP never opens: record its status as the "close code".
  ws.on("unexpected-response", (req, res) => { s.code = `refused HTTP ${res.statusCode}`; req.destroy(); });
  ws.on("close", (code) => { s.code ??= code; });
  ws.on("error", () => {});
  /** The first frame from index `from` on that matches `pred`, waiting up to `ms`. */
  s.seen = async (pred, what, ms = 3000, from = 0) => {
    const find = () => s.frames.slice(from).find(pred);
    await waitFor(find, what, ms);
    return find();
  };
  s.send = (event, data, channel) => ws.send(JSON.stringify({ event, data, ...(channel ? { channel } : {}) }));
  s.ready = () => s.seen((f) => f.event === "pusher:connection_established", "connection_established")
    .then((f) => parseData(f.data).socket_id);
  s.closed = (ms = 3000) => waitFor(() => s.code !== null, "close", ms).then(() => s.code);
  /** Subscribes and resolves with the answering frame (success, subscription_error or error). */
  s.subscribe = (channel, extra = {}) => {
    s.send("pusher:subscribe", { channel, ...extra });
    return s.seen((f) => f.channel === channel && /subscription_(succeeded|error)/.test(f.event)
      || f.event === "pusher:error", `subscribe ${channel}`);
  };
  return s;
}

function context(t) {
  const open = [];
  const sdk = serverSdk(t.port, APP);
  let n = 0;
  return {
    sdk,
    url: t.url,
    name: (prefix = "") => `${prefix}cmp-${process.pid}-${t.tag}-${++n}-${Math.floor(Math.random() * 1e6)}`,
    raw: (key = APP.key) => { const s = rawSocket(t.port, key); open.push(() => s.ws.terminate()); return s; },
    client: (options, key = APP.key) => { const p = pusherClient(t.port, key, options); open.push(() => p.disconnect()); return p; },
    /** A pusher-js client whose channels the Node SDK signs, as `user` on presence channels. */
    signedAs(user) {
      return this.client({ channelAuthorization: { customHandler: ({ socketId, channelName }, cb) =>
        cb(null, channelName.startsWith("presence-")
          ? sdk.authorizeChannel(socketId, channelName, { user_id: user, user_info: { name: user } })
          : sdk.authorizeChannel(socketId, channelName)) } });
    },
    cleanup: () => open.forEach((close) => { try { close(); } catch {} }),
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- REST: raw signed requests (the SDKs would refuse some of these before sending) ---------

/** Fetches `path` signed per the Pusher REST auth spec; `over` replaces or adds query params. */
async function signedFetch(base, method, path, { body = "", over = {}, secret = APP.secret } = {}) {
  const params = { auth_key: APP.key, auth_timestamp: String(Math.floor(Date.now() / 1000)), auth_version: "1.0",
    ...(body ? { body_md5: createHash("md5").update(body).digest("hex") } : {}), ...over };
  const query = Object.keys(params).sort().map((k) => `${k}=${params[k]}`).join("&");
  const auth_signature = createHmac("sha256", secret).update(`${method}\n${path}\n${query}`).digest("hex");
  const url = `${base}${path}?${new URLSearchParams({ ...params, auth_signature })}`;
  const r = await fetch(url, { method, body: body || undefined, headers: { "Content-Type": "application/json" } });
  return `HTTP ${r.status}${r.ok ? "" : ` ${(await r.text()).split("\n")[0].slice(0, 70)}`}`;
}

const trigger = (channel, data) => JSON.stringify({ name: "e", channels: [channel], data });

/** Runs one call on the pinned Python SDK (tests/pusher/py/sdk.py) against `port`. */
function python(port, method, args) {
  return new Promise((resolve, reject) => {
    const child = execFile(PYTHON, [SDK_PY, String(port)], { timeout: PROBE_MS - 1000 }, (err, out, stderr) => {
      if (err) return reject(new Error(`python: ${err.message} ${stderr}`));
      resolve(JSON.parse(out)[0]);
    });
    child.stdin.end(JSON.stringify([{ method, args }]));
  });
}

// ---- probes ---------------------------------------------------------------------------------

/** Waits for the frame of `event` on `s`, or says what came instead; only frames that arrive
 *  from now on count (call it right after sending), so an earlier error is not taken for one. */
async function answer(s, event, ms = 2000) {
  const from = s.frames.length;
  try {
    const f = await s.seen((x) => x.event === event || x.event === "pusher:error", event, ms, from);
    if (f.event === event) return event;
    const d = parseData(f.data);
    return `pusher:error ${d?.code ?? ""} ${d?.message ?? ""}`.trim();
  } catch { return "no answer"; }
}

/** Subscribes a raw socket to a fresh public channel and returns [socket, channel]. */
async function rawOn(c, prefix = "") {
  const s = c.raw();
  await s.ready();
  const channel = c.name(prefix);
  await s.subscribe(channel);
  return [s, channel];
}

/** A raw socket signed in as `user`; resolves with the socket and the sign-in's answer. */
async function signedInRaw(c, user) {
  const s = c.raw();
  const id = await s.ready();
  s.send("pusher:signin", c.sdk.authenticateUser(id, { id: user, user_info: { name: user } }));
  return [s, await answer(s, "pusher:signin_success")];
}

const PROBES = [
  ["unknown app key", "close 4001", async (c) => {
    const s = c.raw("no-such-key");
    const code = await s.closed();
    const err = s.frames.find((f) => f.event === "pusher:error");
    return `${typeof code === "number" ? "close " : ""}${code}${err ? ` (pusher:error ${parseData(err.data)?.code})` : ""}`;
  }],
  ["unknown app key, pusher-js after 2.5 s", "→ disconnected; state disconnected (no retry)", async (c) => {
    const p = c.client({}, "no-such-key");
    const states = []; // from "connecting" on: pusher-js starts connecting as it is built
    p.connection.bind("state_change", ({ current }) => states.push(current));
    await sleep(2500);
    return `${states.map((x) => `→ ${x}`).join(" ") || "no change"}; state ${p.connection.state}`;
  }],
  ["connection_established", "socket_id `N.N`, activity_timeout 120", async (c) => {
    const s = c.raw();
    await s.ready();
    const d = parseData(s.frames[0].data);
    const shape = /^\d+\.\d+$/.test(d.socket_id) ? "`N.N`" : `\`${d.socket_id}\``;
    return `socket_id ${shape}, activity_timeout ${d.activity_timeout}`;
  }],
  ["pusher:ping", "pusher:pong", async (c) => {
    const s = c.raw();
    await s.ready();
    s.send("pusher:ping", {});
    return answer(s, "pusher:pong");
  }],
  ["public subscribe + SDK trigger (string data)", "received, data intact", async (c) => {
    const [s, channel] = await rawOn(c);
    await c.sdk.trigger(channel, "text", TEXT);
    const f = await s.seen((x) => x.event === "text", "the event");
    return f.data === TEXT ? "received, data intact" : `received, data changed: ${String(f.data).slice(0, 50)}`;
  }],
  ["event name `App\\Events\\OrderShipped`", "delivered verbatim", async (c) => {
    const [s, channel] = await rawOn(c);
    const name = "App\\Events\\OrderShipped";
    await c.sdk.trigger(channel, name, {});
    const f = await s.seen((x) => x.channel === channel && x.event !== "pusher_internal:subscription_succeeded", "the event");
    return f.event === name ? "delivered verbatim" : `delivered as \`${f.event}\``;
  }],
  ["private channel, bad auth", "pusher:subscription_error; socket usable", async (c) => {
    const s = c.raw();
    await s.ready();
    const f = await s.subscribe(c.name("private-"), { auth: `${APP.key}:${"0".repeat(64)}` });
    const d = parseData(f.data);
    const status = d?.status ?? d?.code;
    s.send("pusher:ping", {});
    const usable = (await answer(s, "pusher:pong")) === "pusher:pong" && s.code === null ? "socket usable" : `socket ${s.code ? `closed ${s.code}` : "silent"}`;
    return `${f.event}${status ? ` (${status})` : ""}; ${usable}`;
  }],
  ["presence, two users", "count 2, member_added ub", async (c) => {
    const [a, b] = [c.signedAs("ua"), c.signedAs("ub")];
    await Promise.all([connected(a), connected(b)]);
    const room = c.name("presence-");
    const ca = a.subscribe(room);
    await subscribed(ca);
    const added = new Promise((r) => ca.bind("pusher:member_added", (m) => r(m.id)));
    const members = await subscribed(b.subscribe(room));
    return `count ${members.count}, member_added ${await timeout(added, "member_added", 3000).catch(() => "none")}`;
  }],
  ["presence client event: receiver's `user_id`", "user_id present", async (c) => {
    const [a, b] = [c.signedAs("ua"), c.signedAs("ub")];
    await Promise.all([connected(a), connected(b)]);
    const room = c.name("presence-");
    const [ca, cb] = [a.subscribe(room), b.subscribe(room)];
    await Promise.all([subscribed(ca), subscribed(cb)]);
    const got = new Promise((r) => cb.bind("client-typing", (d, meta) => r(meta?.user_id)));
    ca.trigger("client-typing", { on: true });
    const user = await timeout(got, "client event", 3000);
    return user ? `user_id present (${user})` : "user_id absent";
  }],
  ["client event echoed to sender?", "not echoed", async (c) => {
    const [a, b] = [c.signedAs("ua"), c.signedAs("ub")];
    await Promise.all([connected(a), connected(b)]);
    const room = c.name("private-");
    const [ca, cb] = [a.subscribe(room), b.subscribe(room)];
    await Promise.all([subscribed(ca), subscribed(cb)]);
    let echoed = false;
    ca.bind("client-x", () => { echoed = true; });
    const got = new Promise((r) => cb.bind("client-x", () => r(true)));
    ca.trigger("client-x", { n: 1 });
    const other = await timeout(got, "client event", 3000).catch(() => false);
    await sleep(SHORT);
    return `${echoed ? "echoed" : "not echoed"}; other subscriber ${other ? "received" : "did not receive"}`;
  }],
  ["client event on a public channel", "refused (pusher:error), not relayed", async (c) => {
    const [a, channel] = await rawOn(c);
    const b = c.raw();
    await b.ready();
    await b.subscribe(channel);
    a.send("client-x", { n: 1 }, channel);
    await sleep(SHORT);
    const err = a.frames.find((f) => f.event === "pusher:error");
    const relayed = b.frames.some((f) => f.event === "client-x");
    const d = parseData(err?.data);
    return `${err ? `pusher:error ${d?.code ?? "null"} "${String(d?.message).slice(0, 50)}"` : "no error"}; ${relayed ? "relayed" : "not relayed"}`;
  }],
  ["GET /channels/{name} with body_md5 (Python SDK channel_info)", "HTTP 200", async (c) => {
    const r = await python(c.port, "channel_info", [c.name(), ["subscription_count"]]);
    return "ok" in r ? `HTTP 200 ${JSON.stringify(r.ok)}` : `${r.error}: ${r.message.slice(0, 70)}`;
  }],
  ["REST auth_timestamp now−700 s", "HTTP 401", (c) =>
    signedFetch(c.url, "POST", `/apps/${APP.id}/events`, { body: trigger(c.name(), "{}"),
      over: { auth_timestamp: String(Math.floor(Date.now() / 1000) - 700) } })],
  ["REST bad signature", "HTTP 401", (c) =>
    signedFetch(c.url, "POST", `/apps/${APP.id}/events`, { body: trigger(c.name(), "{}"), secret: "wrong-secret" })],
  ["REST event data 10 KiB + 1 byte", "HTTP 413", (c) =>
    signedFetch(c.url, "POST", `/apps/${APP.id}/events`, { body: trigger(c.name(), "x".repeat(10 * 1024 + 1)) })],
  ["REST batch of 11 events", "HTTP 400", (c) => {
    const batch = Array.from({ length: 11 }, (_, i) => ({ channel: c.name(), name: "e", data: String(i) }));
    return signedFetch(c.url, "POST", `/apps/${APP.id}/batch_events`, { body: JSON.stringify({ batch }) });
  }],
  ["cache channel, no event yet", "pusher:cache_miss", async (c) => {
    const [s] = await rawOn(c, "cache-");
    // The miss may come with the subscription itself, so every frame counts here.
    return s.seen((x) => x.event === "pusher:cache_miss", "cache_miss", 2000).then(() => "pusher:cache_miss",
      () => `no cache_miss (got ${s.frames.map((f) => f.event).join(", ")})`);
  }],
  ["GET /channels?filter_by_prefix=presence-&info=user_count", "`{\"user_count\":2}`, public channel not listed", async (c) => {
    const [a, b, p] = [c.signedAs("l1"), c.signedAs("l2"), c.client()];
    await Promise.all([a, b, p].map(connected));
    const [room, pub] = [c.name("presence-"), c.name()];
    await Promise.all([subscribed(a.subscribe(room)), subscribed(b.subscribe(room)), subscribed(p.subscribe(pub))]);
    const r = await c.sdk.get({ path: "/channels", params: { filter_by_prefix: "presence-", info: "user_count" } });
    const { channels = {} } = await r.json();
    return `HTTP ${r.status} \`${JSON.stringify(channels[room] ?? null)}\`, public ${channels[pub] ? "listed" : "not listed"}`;
  }],
  ["trigger with info=subscription_count", "`{\"channels\":{ch:{\"subscription_count\":1}}}`", async (c) => {
    const [, channel] = await rawOn(c);
    const r = await c.sdk.trigger(channel, "e", {}, { info: "subscription_count" });
    return `HTTP ${r.status} \`${(await r.text()).replaceAll(channel, "ch")}\``;
  }],
  ["pusher:signin", "pusher:signin_success", async (c) => (await signedInRaw(c, c.name("u-")))[1]],
  ["sendToUser to a signed-in pusher-js", "received", async (c) => {
    const user = c.name("u-");
    const p = c.client({ userAuthentication: { customHandler: ({ socketId }, cb) =>
      cb(null, c.sdk.authenticateUser(socketId, { id: user, user_info: {} })) } });
    await connected(p);
    p.signin();
    await timeout(p.user.signinDonePromise, "signin", 3000);
    await waitFor(() => p.user.serverToUserChannel?.subscribed, "#server-to-user subscribed", 3000);
    const got = new Promise((r) => p.user.bind("notice", r));
    await c.sdk.sendToUser(user, "notice", { hi: 1 });
    return JSON.stringify(await timeout(got, "notice", 3000)) === '{"hi":1}' ? "received" : "received, data differs";
  }],
  ["terminate_connections", "the user's socket closed (docs name no code)", async (c) => {
    const user = c.name("u-");
    const [s, signin] = await signedInRaw(c, user);
    if (signin !== "pusher:signin_success") return `n/a: signin answered ${signin}`;
    await c.sdk.terminateUserConnections(user);
    const code = await s.closed().catch(() => null);
    const err = s.frames.find((f) => f.event === "pusher:error");
    return code === null ? "still open after 3 s"
      : `closed ${code}${err ? ` (pusher:error ${parseData(err.data)?.code})` : ""}`;
  }],
];

// ---- running and reporting ------------------------------------------------------------------

/** One probe's observed value: its result, or what went wrong (an SDK error's HTTP status). */
async function observe(t, run) {
  const c = { ...context(t), port: t.port };
  try {
    return await timeout(Promise.resolve().then(() => run(c)), "probe", PROBE_MS);
  } catch (e) {
    return e.status ? `HTTP ${e.status} ${String(e.body ?? "").split("\n")[0].slice(0, 70)}` : `error: ${e.message.slice(0, 80)}`;
  } finally {
    c.cleanup();
  }
}

async function runAll(t) {
  const out = [];
  for (const [name, , run] of PROBES) {
    out.push(await observe(t, run));
    console.error(`[${t.tag}] ${name}: ${out.at(-1)}`);
  }
  return out;
}

/** A table cell; ids and timestamps that change on every run are masked, so runs diff cleanly. */
const cell = (s) => String(s).replaceAll("|", "\\|").replaceAll("\n", " ")
  .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, "<uuid>").replace(/\b1\d{9}\b/g, "<unix time>");

function table(rk, sk) {
  const rows = PROBES.map(([name, expected], i) => `| ${cell(name)} | ${cell(expected)} | ${cell(rk[i])} | ${cell(sk[i])} |`);
  return ["| probe | Pusher (docs / pusher-js) expects | Roomkeeper | sockudo 5.2.0 |", "|---|---|---|---|", ...rows].join("\n");
}

async function main() {
  if (!existsSync(SOCKUDO)) {
    console.error(`sockudo not found at ${SOCKUDO}. Install it with scripts/sockudo.sh, or:\n` +
      "  apt-get install -y protobuf-compiler\n" +
      "  cargo install sockudo --version 5.2.0 --no-default-features --features local --root .tools/sockudo\n" +
      "then run SOCKUDO=.tools/sockudo/bin/sockudo node tests/pusher/compare/sockudo.mjs");
    process.exit(2);
  }
  const servers = [];
  // The whole run is bounded: a hang anywhere stops the servers and exits 1.
  const watchdog = setTimeout(async () => {
    console.error("harness timed out");
    await Promise.allSettled(servers.map((s) => s.close()));
    process.exit(1);
  }, 170_000);
  try {
    const [rk, sk] = await Promise.all([startServer(), startSockudo()]);
    servers.push(rk, sk);
    const [rkOut, skOut] = await Promise.all([runAll({ ...rk, tag: "rk" }), runAll({ ...sk, tag: "sk" })]);
    const md = `${table(rkOut, skOut)}\n`;
    mkdirSync(join(root, "artifacts"), { recursive: true });
    writeFileSync(join(root, "artifacts", "sockudo-compare.md"), md);
    console.log(md);
  } finally {
    clearTimeout(watchdog);
    await Promise.allSettled(servers.map((s) => s.close()));
  }
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
