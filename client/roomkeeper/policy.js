// When to reconnect, how long to wait, and the client's error type (docs/PROTOCOL.md, "Close
// codes"). Pure functions: the unit tests in tests/client/ drive them directly.

/** Close code: this connection fell more than `ROOM_MAX_LAG_MESSAGES` behind by its `seen`
 *  reports; reconnect and recover with `since` (docs/PROTOCOL.md, "Slow readers"). */
export const CLOSE_TOO_SLOW = 4008;

/** Close code: the token expired mid-session; reconnect only with a fresh token. */
export const CLOSE_TOKEN_EXPIRED = 4001;

/**
 * Whether a client may reconnect on its own after close `code`: 1xxx and 4000–4499 yes,
 * 4500–4999 no; 4001 (token expired) only when the client can get a fresh token
 * (`canRefreshToken`), since reconnecting with the same token cannot succeed.
 */
export function shouldReconnect(code, { canRefreshToken = false } = {}) {
  if (code === CLOSE_TOKEN_EXPIRED) return canRefreshToken;
  return !(code >= 4500 && code < 5000);
}

/**
 * The next step after close `code`: `"reconnect"` (with backoff, recovering with `since`),
 * `"refresh"` (ask the token provider for a fresh token, then reconnect) or `"stop"`.
 */
export function closeAction(code, { canRefreshToken = false } = {}) {
  if (!shouldReconnect(code, { canRefreshToken })) return "stop";
  return code === CLOSE_TOKEN_EXPIRED ? "refresh" : "reconnect";
}

/** Exponential backoff with full jitter: a random delay in [0, min(cap, base * 2^attempt)). */
export function backoffDelay(attempt, { baseMs = 500, capMs = 15000, random = Math.random } = {}) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 20));
  return Math.floor(random() * ceiling);
}

/** An error answered by the server (`error` frame or HTTP JSON error), or one of the client's
 *  own: `timeout`, `queue_full`, `closed`, `token_unavailable`, `token_expired`,
 *  `client_decode`. `room` names the room it concerns, when one does. */
export class RoomError extends Error {
  constructor(code, message, id, room) {
    super(`${code}: ${message}`);
    this.name = "RoomError";
    this.code = code;
    this.id = id;
    this.room = room;
  }
}

/** A fresh id for a publish (idempotency key). */
export function uid() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  return Math.random().toString(36).slice(2) + Date.now().toString(36);
}
