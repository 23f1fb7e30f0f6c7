// The rooms demo page in real Chromium against real workerd: several rooms over one v2 socket
// (client/roomkeeper/, Client), cut and recovered per room, and a server restart.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launchBrowser, newPage, screenshot, startServer } from "./harness.mjs";

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.close();
});

/** Opens the page in `rooms` as `name`; records every WebSocket the page opens in `page.sockets`. */
async function open(page, rooms, name) {
  page.sockets = [];
  page.on("websocket", (ws) => page.sockets.push(new URL(ws.url()).pathname));
  await page.goto(`${server.url}/?rooms=${rooms.join(",")}&name=${name}`);
  await page.waitForFunction((n) => document.querySelectorAll('.room[data-state="open"]').length === n, rooms.length);
}

const sel = (room) => `.room[data-room="${room}"]`;

async function offsets(page, room) {
  return page.$$eval(`${sel(room)} .log li[data-offset]`, (lis) => lis.map((li) => Number(li.dataset.offset)));
}

async function texts(page, room) {
  return page.$$eval(`${sel(room)} .log li[data-offset]`, (lis) => lis.map((li) => li.childNodes[1].textContent));
}

async function waitCount(page, room, n, timeout = 15000) {
  await page.waitForFunction(([s, n]) => document.querySelectorAll(`${s} .log li[data-offset]`).length === n, [sel(room), n], { timeout });
}

async function send(page, room, text) {
  await page.fill(`${sel(room)} .text`, text);
  await page.press(`${sel(room)} .text`, "Enter");
  await page.waitForFunction(([s, t]) => [...document.querySelectorAll(`${s} .log li[data-offset]`)].some((li) => li.textContent.includes(t)), [sel(room), text]);
}

test("two pages chat in one room: presence shows both, messages in order in both", async () => {
  const room = `chat-${process.pid}`;
  const ann = await newPage(browser);
  const bob = await newPage(browser, { width: 390, height: 844 }); // a phone-width screen
  await open(ann, [room], "Ann");
  await open(bob, [room], "Bob");
  for (const p of [ann, bob]) await p.waitForFunction((s) => document.querySelector(s)?.dataset.members === "Ann,Bob", sel(room));
  await send(ann, room, "hello from Ann");
  await send(bob, room, "hi Ann, Bob here");
  await send(ann, room, "third message");
  for (const p of [ann, bob]) {
    await waitCount(p, room, 3);
    assert.deepEqual(await texts(p, room), ["hello from Ann", "hi Ann, Bob here", "third message"]);
    assert.deepEqual(await offsets(p, room), [1, 2, 3]);
  }
  // Keyboard only: the message box takes typing and Enter sends.
  await ann.focus(`${sel(room)} .text`);
  await ann.keyboard.type("typed with the keyboard");
  await ann.keyboard.press("Enter");
  await waitCount(bob, room, 4);
  await screenshot(ann, "rooms-two-pages");
  await screenshot(bob, "rooms-phone-width");
  assert.deepEqual(ann.errors, [], `no console errors: ${ann.errors}`);
  assert.deepEqual(bob.errors, [], `no console errors: ${bob.errors}`);
  await ann.context().close();
  await bob.context().close();
});

test("three rooms on one socket: a cut socket recovers exactly what each room missed; a server restart too", async () => {
  const rooms = ["red", "green", "blue"].map((r) => `${r}-${process.pid}`);
  const ann = await newPage(browser, { width: 1280, height: 820 });
  const bob = await newPage(browser);
  await open(ann, rooms, "Ann");
  await open(bob, rooms, "Bob");
  assert.deepEqual(ann.sockets, ["/api/ws"], "one socket for three rooms");
  assert.equal(await ann.getAttribute("#status", "data-rooms"), "3");
  for (const r of rooms) await send(ann, r, `before the cut in ${r.split("-")[0]}`);
  for (const r of rooms) await waitCount(bob, r, 1);

  // Make Ann's reconnect wait ~3 s (a fixed "random"), then cut her one socket.
  await ann.evaluate(() => { Math.random = () => 0.99; window.rk.backoff = { baseMs: 3000, capMs: 3000 }; window.rk.drop(); });
  await ann.waitForSelector('#status[data-state="reconnecting"]');
  const missed = { [rooms[0]]: 1, [rooms[1]]: 3, [rooms[2]]: 2 };
  for (const r of rooms) for (let i = 1; i <= missed[r]; i++) await send(bob, r, `missed ${i} in ${r.split("-")[0]}`);
  await ann.waitForSelector('#status[data-state="open"]', { timeout: 15000 });
  for (const r of rooms) {
    await waitCount(ann, r, 1 + missed[r]);
    assert.deepEqual(await offsets(ann, r), Array.from({ length: 1 + missed[r] }, (_, i) => i + 1), `${r}: no gap, no duplicate`);
    assert.equal(await ann.textContent(`${sel(r)} .recovery`), `recovered ${missed[r]} missed`);
  }
  assert.deepEqual(ann.sockets, ["/api/ws", "/api/ws"], "the reconnect is one socket again");
  const shot = await screenshot(ann, "rooms-three-recovered");

  // The whole server restarts on the same state: both pages come back, nothing doubles.
  await server.restart();
  for (const p of [ann, bob]) await p.waitForFunction((n) => document.querySelectorAll('.room[data-state="open"]').length === n, rooms.length, { timeout: 30000 });
  for (const r of rooms) await send(bob, r, `after the restart in ${r.split("-")[0]}`);
  for (const p of [ann, bob]) {
    for (const r of rooms) {
      await waitCount(p, r, 2 + missed[r]);
      assert.deepEqual(await offsets(p, r), Array.from({ length: 2 + missed[r] }, (_, i) => i + 1), `${r}: no gap, no duplicate after the restart`);
    }
  }
  assert.ok(ann.sockets.every((s) => s === "/api/ws"), `only v2 sockets: ${ann.sockets}`);
  assert.deepEqual(ann.errors.filter((e) => !e.includes("WebSocket")), [], `no console errors: ${ann.errors}`);
  console.log(`screenshot: ${shot}`);
  await ann.context().close();
  await bob.context().close();
});
