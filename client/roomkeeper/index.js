// @roomkeeper/client — the Roomkeeper client library (docs/PROTOCOL.md). An ES module with no
// dependencies and no build step; in a browser page it is served at /roomkeeper/index.js (and
// /roomkeeper.js), from a bundler it is `import { Client } from "@roomkeeper/client"`.
//
// - `Client`: one socket for many rooms (protocol v2), falling back to a socket per room (v1)
//   on a server without v2. `RoomClient`: one room, one socket (v1).
// - `Connection`: the reconnecting socket both use, for other Roomkeeper sockets (the chatbot).
// - Reconnects with backoff and full jitter, resumes every room from its last offset, queues
//   publishes while offline and resends them with the same ids (the server de-duplicates),
//   turns acks into promises, keeps presence, heartbeats, asks a token provider before every
//   connect, speaks JSON or MessagePack.
// - Every client object is an EventTarget: `addEventListener(type, e => e.detail)`, or
//   `on(type, detail => …)`, which answers a function that removes the listener.

export { Client, Room } from "./client.js";
export { Connection, PING } from "./connection.js";
export { Emitter } from "./events.js";
export { decode, encode, msgpack } from "./msgpack.js";
export { backoffDelay, CLOSE_TOKEN_EXPIRED, CLOSE_TOO_SLOW, closeAction, RoomError, shouldReconnect } from "./policy.js";
export { DEFAULTS, RoomClient } from "./room.js";
export { Outbox, RoomCursor } from "./state.js";

import { RoomError } from "./policy.js";

/** Mints a local development token (only where ENVIRONMENT=local). */
export async function devToken(claims, baseUrl = globalThis.location?.origin) {
  const r = await fetch(new URL("/api/dev/token", baseUrl), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(claims),
  });
  const body = await r.json();
  if (!r.ok) throw new RoomError(body.error.code, body.error.message);
  return body.token;
}
