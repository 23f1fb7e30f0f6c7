// What the client unit tests share: a WebSocket stand-in the test drives by hand, and bounded
// waits. `close()` never fires onclose by itself (a dead network: the close handshake never
// completes), so the client must not depend on it.

/** A FakeSocket class (extend it to parse `sent`) and the list of every socket made. */
export function fakeWebSocket(Base = FakeSocket) {
  const sockets = [];
  class Tracked extends Base {
    constructor(url, protocols) {
      super(url, protocols);
      this.index = sockets.length;
      sockets.push(this);
    }
  }
  return { WebSocket: Tracked, sockets };
}

export class FakeSocket {
  constructor(url, protocols) {
    this.url = new URL(url);
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    this.closedBy = null;
  }
  send(data) { this.sent.push(data); }
  close(code, reason) { this.closedBy ??= { code, reason }; this.readyState = 2; }
  // driven by the test:
  accept() { this.readyState = 1; this.onopen?.({}); }
  frame(f) { this.onmessage?.({ data: JSON.stringify(f) }); }
  serverClose(code, reason = "") { this.readyState = 3; this.onclose?.({ code, reason }); }
}

/** Waits until `pred()` holds, at most `ms`. */
export async function waitFor(what, pred, ms = 2000) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
