// RoomClient (client/roomkeeper.js) in real Chromium against a scripted WebSocket server on
// 127.0.0.1 that misbehaves on purpose — closes with 4001, never answers pings, never sends a
// welcome, never answers the upgrade — to check the token provider, the pong deadline and the
// connect timeout over real sockets. No workerd: the server speaks just enough of
// docs/PROTOCOL.md. Deadlines are a few hundred milliseconds; every wait is bounded.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { WebSocketServer } from "ws";
import { launchBrowser, newPage, root } from "./harness.mjs";

/**
 * Serves a blank page and /roomkeeper.js, and WebSockets at /api/rooms/:room/ws. The room name's
 * prefix picks the behaviour:
 *   answer-  welcome, one message (offset 1), pongs every ping
 *   silent-  welcome, one message, never a pong
 *   expire-  as answer-, but the room's first connection is closed with 4001 after its welcome
 *   mute-    accepts the socket, never sends a welcome
 *   hang-    never answers the HTTP upgrade
 * Every upgrade request is recorded in `conns` (room, token, join frames, pings received).
 */
function startFakeRoomServer() {
  const conns = [];
  const held = new Set();
  const server = http.createServer((req, res) => {
    if (req.url === "/") {
      res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>liveness</title>");
    } else if (req.url === "/roomkeeper.js" || /^\/roomkeeper\/[a-z]+\.js$/.test(req.url)) {
      // The library's address and its modules (client/roomkeeper/), as Workers assets serve them.
      res.writeHead(200, { "content-type": "text/javascript" }).end(readFileSync(join(root, "client", req.url)));
    } else {
      res.writeHead(404).end();
    }
  });
  const wss = new WebSocketServer({ noServer: true, handleProtocols: (offered) => [...offered][0] ?? false });
  server.on("upgrade", (req, socket, head) => {
    held.add(socket);
    socket.on("close", () => held.delete(socket));
    const u = new URL(req.url, "http://127.0.0.1");
    const room = decodeURIComponent(u.pathname.split("/")[3] ?? "");
    const kind = room.split("-")[0];
    const rec = { room, token: u.searchParams.get("token"), joins: [], pings: 0 };
    conns.push(rec);
    if (kind === "hang") return; // hold the TCP connection, never answer
    wss.handleUpgrade(req, socket, head, (ws) => {
      const nth = conns.filter((c) => c.room === room).indexOf(rec);
      ws.on("message", (data) => {
        const text = data.toString();
        if (text === '{"type":"ping"}') {
          rec.pings++;
          if (kind !== "silent") ws.send('{"type":"pong"}');
          return;
        }
        const f = JSON.parse(text);
        if (f.type !== "join") return;
        rec.joins.push(f);
        if (kind === "mute") return;
        const me = { id: "u1", name: f.name, conns: 1 };
        ws.send(JSON.stringify({
          type: "welcome", protocol: 1, room, conn: `c${conns.indexOf(rec)}`, me, members: [me], epoch: "E1",
          offset: 1, ...(f.since ? { recovered: f.since.offset === 1 } : {}), replayed: f.since ? 0 : 1,
        }));
        if (!f.since) ws.send(JSON.stringify({ type: "message", offset: 1, from: { id: "u2", name: "bo" }, body: { text: "hi" }, ts: Date.now() }));
        if (kind === "expire" && nth === 0) setTimeout(() => ws.close(4001, "token expired"), 100);
      });
    });
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      resolve({
        url: `http://127.0.0.1:${server.address().port}`,
        conns,
        of: (room) => conns.filter((c) => c.room === room),
        close: () => new Promise((r) => {
          for (const ws of wss.clients) ws.terminate();
          for (const s of held) s.destroy();
          server.close(r);
          server.closeAllConnections?.();
        }),
      });
    });
  });
}

let srv;
let browser;

before(async () => {
  srv = await startFakeRoomServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await srv?.close();
});

/** A page with one RoomClient (`window.c`); its events land in `window.events`. `provider`: use
 *  a token provider answering fresh-1, fresh-2, …; `opts` go to the RoomClient. */
async function openClient(opts, { provider = false } = {}) {
  const page = await newPage(browser);
  await page.goto(`${srv.url}/`);
  await page.evaluate(async ({ opts, provider }) => {
    const { RoomClient } = await import("/roomkeeper.js");
    window.events = [];
    let n = 0;
    const c = new RoomClient({ name: "ann", backoff: { baseMs: 20, capMs: 20 }, ...opts, ...(provider ? { token: async () => `fresh-${++n}` } : {}) });
    for (const e of ["status", "closed", "error", "recovery"]) {
      c.on(e, (p) => window.events.push({ event: e, state: p.state, code: p.code, reason: p.reason, willReconnect: p.willReconnect, recovered: p.recovered }));
    }
    window.c = c;
    c.connect();
  }, { opts, provider });
  return page;
}

async function waitFor(what, pred, ms = 8000) {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const events = (page) => page.evaluate(() => window.events);
const state = (page) => page.evaluate(() => window.c.state);

test("4001 with a token provider: reconnects with a fresh token from the provider and recovers with since", async () => {
  const room = "expire-provider";
  const page = await openClient({ room }, { provider: true });
  try {
    await waitFor("a second connection", () => srv.of(room).length >= 2 && srv.of(room)[1].joins.length === 1);
    await waitFor("open again", async () => (await state(page)) === "open" && (await events(page)).some((e) => e.event === "recovery"));
    const conns = srv.of(room);
    assert.deepEqual(conns.map((c) => c.token), ["fresh-1", "fresh-2"], "each connect asks the provider");
    assert.deepEqual(conns[1].joins[0].since, { epoch: "E1", offset: 1 });
    const ev = await events(page);
    assert.ok(ev.some((e) => e.event === "closed" && e.code === 4001 && e.willReconnect === true));
    assert.ok(ev.some((e) => e.event === "recovery" && e.recovered === true));
  } finally {
    await page.context().close();
  }
});

test("4001 with a static token: stops and reports token_expired, no reconnect loop", async () => {
  const room = "expire-static";
  const page = await openClient({ room, token: "static-jwt" });
  try {
    await waitFor("the 4001 close", async () => (await events(page)).some((e) => e.event === "closed"));
    await sleep(600); // 30 backoff periods
    assert.deepEqual(srv.of(room).map((c) => c.token), ["static-jwt"], "exactly one connection, with the static token");
    assert.equal(await state(page), "closed");
    const ev = await events(page);
    assert.ok(ev.some((e) => e.event === "error" && e.code === "token_expired"), JSON.stringify(ev));
    assert.ok(ev.some((e) => e.event === "closed" && e.code === 4001 && e.willReconnect === false));
  } finally {
    await page.context().close();
  }
});

test("no pong within pongTimeoutMs: the client drops the socket and reconnects with since", async () => {
  const room = "silent-1";
  const page = await openClient({ room, heartbeatMs: 200, pongTimeoutMs: 300 });
  try {
    await waitFor("a reconnect", () => srv.of(room).length >= 2 && srv.of(room)[1].joins.length === 1);
    const [first, second] = srv.of(room);
    assert.ok(first.pings >= 1, "the first connection was pinged");
    assert.deepEqual(second.joins[0].since, { epoch: "E1", offset: 1 }, "recovers from the last offset");
    const ev = await events(page);
    assert.ok(ev.some((e) => e.event === "closed" && /pong/.test(e.reason) && e.willReconnect), JSON.stringify(ev));
  } finally {
    await page.context().close();
  }
});

test("answered pings: the same settings keep one connection", async () => {
  const room = "answer-1";
  const page = await openClient({ room, heartbeatMs: 200, pongTimeoutMs: 300 });
  try {
    await waitFor("open", async () => (await state(page)) === "open");
    await sleep(1500);
    assert.equal(srv.of(room).length, 1);
    assert.ok(srv.of(room)[0].pings >= 5, `pinged ${srv.of(room)[0].pings} times`);
    assert.equal(await state(page), "open");
  } finally {
    await page.context().close();
  }
});

test("connect timeout: an upgrade never answered is abandoned and retried with backoff", async () => {
  const room = "hang-1";
  const page = await openClient({ room, connectTimeoutMs: 300 });
  try {
    await waitFor("a retried upgrade", () => srv.of(room).length >= 2);
    const ev = await events(page);
    assert.ok(ev.some((e) => e.event === "closed" && /connect timeout/.test(e.reason) && e.willReconnect), JSON.stringify(ev));
    assert.ok(ev.some((e) => e.event === "status" && e.state === "reconnecting"));
  } finally {
    await page.context().close();
  }
});

test("connect timeout: an open socket without a welcome is abandoned and retried", async () => {
  const room = "mute-1";
  const page = await openClient({ room, connectTimeoutMs: 300 });
  try {
    await waitFor("a second join", () => srv.of(room).length >= 2 && srv.of(room)[1].joins.length === 1);
    assert.equal(srv.of(room)[0].joins.length, 1, "the first socket opened and joined, then got no welcome");
    assert.notEqual(await state(page), "open");
  } finally {
    await page.context().close();
  }
});
