// Shared by the Pusher tests: the local app, pinned clients pointed at a test server, and
// bounded waits (every wait has a deadline, so a lost event fails instead of hanging).
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
export const PusherJs = require("pusher-js");
export const PusherServer = require("pusher");

/** The local app of wrangler.toml's [vars] PUSHER_APPS. */
export const LOCAL_APP = { id: "1", key: "roomkeeper-local-key", secret: "roomkeeper-local-secret" };

/** How long a wait may take by default, ms. */
export const WAIT = 10000;

/** Every client made by `pusherClient`, until `disconnectAll`. */
const made = new Set();

/** A pusher-js 8.6.0 client of `key` on the server listening on `port`. */
export function pusherClient(port, key, options = {}) {
  const p = new PusherJs(key, {
    cluster: "local", wsHost: "127.0.0.1", wsPort: port, forceTLS: false,
    enabledTransports: ["ws"], disableStats: true, ...options,
  });
  made.add(p);
  return p;
}

/** Disconnects every client made so far (each test file runs it after each test): a test
 *  that fails skips its own cleanup, and a connected pusher-js would keep Node running. */
export function disconnectAll() {
  for (const p of made) p.disconnect();
  made.clear();
}

/** The Node server SDK (pusher 5.3.4) for `app` on the server listening on `port`. */
export function serverSdk(port, app, extra = {}) {
  return new PusherServer({ appId: app.id, key: app.key, secret: app.secret, host: "127.0.0.1",
    port: String(port), useTLS: false, ...extra });
}

/** `promise`, or a rejection naming `what` after `ms`. */
export function timeout(promise, what, ms = WAIT) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

/** Resolves with the socket id once `p` is connected. */
export function connected(p) {
  if (p.connection.state === "connected") return Promise.resolve(p.connection.socket_id);
  return timeout(new Promise((resolve, reject) => {
    p.connection.bind("connected", () => resolve(p.connection.socket_id));
    p.connection.bind("failed", () => reject(new Error("connection failed")));
  }), "connected");
}

/** Resolves with the subscription data once `channel` is subscribed; rejects on an error. */
export function subscribed(channel) {
  return timeout(new Promise((resolve, reject) => {
    channel.bind("pusher:subscription_succeeded", resolve);
    channel.bind("pusher:subscription_error", (e) => reject(new Error(`subscription_error ${JSON.stringify(e)}`)));
  }), `subscribed ${channel.name}`);
}

/** Polls `cond` until it holds; `what` (a string or a function giving one) names it. */
export async function waitFor(cond, what = "condition", ms = WAIT) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${typeof what === "function" ? what() : what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
