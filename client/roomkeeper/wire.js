// Frames on the wire: URLs, encodings, decoding.

import { msgpack } from "./msgpack.js";

/** The service's origin: `baseUrl`, else this page's origin, else the local dev server. */
export function origin(baseUrl) {
  return baseUrl ?? globalThis.location?.origin ?? "http://127.0.0.1:8787";
}

/** The ws(s):// URL of `path` on `baseUrl`, with `?token=` when there is one. */
export function socketUrl(baseUrl, path, token) {
  const u = new URL(path, origin(baseUrl));
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  if (token) u.searchParams.set("token", token);
  return u.toString();
}

/** The subprotocol to offer for protocol `version` (1 or 2) and `encoding`. */
export function subprotocol(version, encoding) {
  return `roomkeeper.v${version}.${encoding === "msgpack" ? "msgpack" : "json"}`;
}

/** A frame as the socket sends it: JSON text, or MessagePack bytes. */
export function encodeFrame(encoding, frame) {
  return encoding === "msgpack" ? msgpack.encode(frame) : JSON.stringify(frame);
}

/** A received frame: text is JSON, binary is MessagePack. Throws on a malformed frame. */
export function decodeFrame(data) {
  return typeof data === "string" ? JSON.parse(data) : msgpack.decode(new Uint8Array(data));
}
