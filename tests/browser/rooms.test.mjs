// The rooms demo page in real Chromium against real workerd.
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { launchBrowser, newPage, root, screenshot, startServer } from "./harness.mjs";

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

async function join_(page, room, name) {
  await page.goto(`${server.url}/?room=${room}&name=${name}`);
  await page.waitForSelector('#status[data-state="open"]');
}

async function offsets(page) {
  return page.$$eval("#log li[data-offset]", (lis) => lis.map((li) => Number(li.dataset.offset)));
}

async function texts(page) {
  return page.$$eval("#log li[data-offset]", (lis) => lis.map((li) => li.childNodes[1].textContent));
}

async function send(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
  await page.waitForFunction((t) => [...document.querySelectorAll("#log li[data-offset]")].some((li) => li.textContent.includes(t)), text);
}

test("two pages chat in one room: presence shows both, messages in order in both", async () => {
  const room = `chat-${process.pid}`;
  const ann = await newPage(browser);
  const bob = await newPage(browser, { width: 390, height: 844 }); // a phone-width screen
  await join_(ann, room, "Ann");
  await join_(bob, room, "Bob");
  for (const p of [ann, bob]) {
    await p.waitForFunction(() => document.querySelectorAll("#members li").length === 2);
    const names = await p.$$eval("#members li", (lis) => lis.map((li) => li.firstChild.textContent));
    assert.deepEqual(names.sort(), ["Ann", "Bob"]);
  }
  await send(ann, "hello from Ann");
  await send(bob, "hi Ann, Bob here");
  await send(ann, "third message");
  for (const p of [ann, bob]) {
    await p.waitForFunction(() => document.querySelectorAll("#log li[data-offset]").length === 3);
    assert.deepEqual(await texts(p), ["hello from Ann", "hi Ann, Bob here", "third message"]);
    assert.deepEqual(await offsets(p), [1, 2, 3]);
  }
  // Keyboard only: Tab reaches the message box and Enter sends.
  await ann.focus("#text");
  await ann.keyboard.type("typed with the keyboard");
  await ann.keyboard.press("Enter");
  await bob.waitForFunction(() => document.querySelectorAll("#log li[data-offset]").length === 4);
  const shot = await screenshot(ann, "rooms-two-pages");
  await screenshot(bob, "rooms-phone-width");
  mkdirSync(join(root, "docs", "screenshots"), { recursive: true });
  copyFileSync(shot, join(root, "artifacts", "browser", "rooms.png"));
  assert.deepEqual(ann.errors, [], `no console errors: ${ann.errors}`);
  assert.deepEqual(bob.errors, [], `no console errors: ${bob.errors}`);
  await ann.context().close();
  await bob.context().close();
});

test("a cut socket reconnects and shows exactly what it missed; a server restart too", async () => {
  const room = `cut-${process.pid}`;
  const ann = await newPage(browser);
  const bob = await newPage(browser);
  await join_(ann, room, "Ann");
  await join_(bob, room, "Bob");
  await send(ann, "before the cut");
  await bob.waitForFunction(() => document.querySelectorAll("#log li[data-offset]").length === 1);
  // Make Ann's reconnect wait ~3 s (a fixed "random"), then cut her socket.
  await ann.evaluate(() => { Math.random = () => 0.99; window.roomClient.opts.backoff = { baseMs: 3000, capMs: 3000 }; window.roomClient.drop(); });
  await ann.waitForSelector('#status[data-state="reconnecting"]');
  for (const t of ["missed one", "missed two", "missed three"]) await send(bob, t);
  await ann.waitForSelector('#status[data-state="open"]', { timeout: 15000 });
  await ann.waitForFunction(() => document.querySelectorAll("#log li[data-offset]").length === 4);
  assert.deepEqual(await texts(ann), ["before the cut", "missed one", "missed two", "missed three"]);
  assert.equal(await ann.textContent("#recovery"), "recovered 3 missed");
  await screenshot(ann, "rooms-recovered");

  // Now the whole server restarts on the same state: both pages come back, nothing doubles.
  await server.restart();
  for (const p of [ann, bob]) await p.waitForSelector('#status[data-state="open"]', { timeout: 30000 });
  await send(bob, "after the restart");
  for (const p of [ann, bob]) {
    await p.waitForFunction(() => document.querySelectorAll("#log li[data-offset]").length === 5);
    const offs = await offsets(p);
    assert.deepEqual(offs, [1, 2, 3, 4, 5], "no gap, no duplicate");
    assert.deepEqual((await texts(p)).at(-1), "after the restart");
  }
  assert.deepEqual(ann.errors.filter((e) => !e.includes("WebSocket")), [], `no console errors: ${ann.errors}`);
  await ann.context().close();
  await bob.context().close();
});
