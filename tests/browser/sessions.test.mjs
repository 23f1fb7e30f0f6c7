// The voice agent, chatbot and ops dashboard pages in real Chromium against real workerd.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { artifacts, launchBrowser, newPage, screenshot, startServer } from "./harness.mjs";
import { startProvider } from "./provider.mjs";

const DEV_KEY = "roomkeeper-local-dev-api-key";
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

// ---- a WAV for Chromium's fake microphone ----------------------------------------------------

const RATE = 16000;
/** Bursts in the file, ms: the file is LOOP_MS long and Chromium plays it in a loop. */
const BURSTS = [[1000, 1200], [3600, 1200]];
const LOOP_MS = 6000;

/**
 * Speech-like bursts in silence, as `roomkeeper::voice::synth::speech_like` makes them: five
 * harmonics (1/k) of a gliding 110–200 Hz fundamental, a 4 Hz syllable envelope, 10 ms edges,
 * −12 dBFS peak. Faint noise (−70 dBFS) stands in for a quiet room.
 */
function speechWav() {
  const n = (ms) => Math.round((ms * RATE) / 1000);
  const pcm = new Int16Array(n(LOOP_MS));
  let seed = 1987;
  const noise = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff - 0.5; };
  for (let i = 0; i < pcm.length; i++) pcm[i] = Math.round(noise() * 2 * 0.0003 * 32767);
  const norm = 0.25 / [1, 2, 3, 4, 5].reduce((a, k) => a + 1 / k, 0);
  BURSTS.forEach(([start, dur], b) => {
    const f0 = 110 + 30 * (b % 4);
    const len = n(dur);
    const edge = n(10);
    let phase = 0;
    for (let i = 0; i < len; i++) {
      const t = i / RATE;
      const f = f0 * (1 + 0.05 * Math.sin(2 * Math.PI * 0.7 * t));
      phase = (phase + (2 * Math.PI * f) / RATE) % (2 * Math.PI);
      let voice = 0;
      for (let k = 1; k <= 5; k++) voice += Math.sin(k * phase) / k;
      const syllable = 0.6 + 0.4 * Math.cos(2 * Math.PI * 4 * t);
      const fromEdge = Math.min(i, len - 1 - i);
      const ramp = fromEdge < edge ? 0.5 - 0.5 * Math.cos((Math.PI * fromEdge) / edge) : 1;
      pcm[n(start) + i] = Math.round(Math.max(-1, Math.min(1, norm * voice * syllable * ramp)) * 32767);
    }
  });
  const data = Buffer.from(pcm.buffer);
  const h = Buffer.alloc(44);
  h.write("RIFF", 0); h.writeUInt32LE(36 + data.length, 4); h.write("WAVE", 8);
  h.write("fmt ", 12); h.writeUInt32LE(16, 16); h.writeUInt16LE(1, 20); h.writeUInt16LE(1, 22);
  h.writeUInt32LE(RATE, 24); h.writeUInt32LE(RATE * 2, 28); h.writeUInt16LE(2, 32); h.writeUInt16LE(16, 34);
  h.write("data", 36); h.writeUInt32LE(data.length, 40);
  const path = join(artifacts, "fake-mic.wav");
  writeFileSync(path, Buffer.concat([h, data]));
  return path;
}

// ---- tests -----------------------------------------------------------------------------------

test("voice page: the fake microphone's bursts become speech events and utterances", async () => {
  const wav = speechWav();
  const voiceBrowser = await launchBrowser([
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    `--use-file-for-fake-audio-capture=${wav}`,
    "--autoplay-policy=no-user-gesture-required",
  ]);
  try {
    const page = await newPage(voiceBrowser);
    await page.goto(`${server.url}/voice.html?session=mic-${process.pid}`);
    await page.waitForSelector('#status[data-state="open"]');
    await page.click("#mic");
    await page.waitForSelector('#turn[data-turn="listening"]');
    // Three utterances: the first may be cut by where the looping file was when capture began;
    // the next two are whole 1.2 s bursts.
    await page.waitForFunction(() => document.querySelectorAll("#conversation li[data-utterance]").length >= 3, null, { timeout: 30_000 });
    await page.click("#mic"); // stop
    const utterances = await page.$$eval("#conversation li[data-utterance]", (lis) => lis.map((li) => Number(li.dataset.durationMs)));
    for (const d of utterances.slice(1, 3)) {
      assert.ok(d >= 1000 && d <= 1700, `a 1.2 s burst is one utterance of about its length: ${utterances}`);
    }
    const starts = await page.$$eval("#events li.speech-start", (lis) => lis.length);
    const ends = await page.$$eval("#events li.speech-end", (lis) => lis.length);
    assert.ok(starts >= 3 && ends >= 3, `speech start/end events shown: ${starts}/${ends}`);
    // Speech ends are a loop apart (the file repeats every LOOP_MS with two bursts in it).
    const endsAt = await page.$$eval("#events li.speech-end", (lis) => lis.map((li) => Number(li.dataset.at)));
    const gap = endsAt[2] - endsAt[0];
    assert.ok(Math.abs(gap - LOOP_MS) <= 200, `speech ends ${endsAt}: one loop (${LOOP_MS} ms) between the 1st and 3rd`);
    // No provider here: said plainly, and nothing is transcribed or invented.
    assert.equal(await page.isVisible("#provider-note"), true);
    // Nor a voice: the page says the browser speaks the replies instead.
    assert.equal(await page.isVisible("#speaker-note"), true);
    assert.match(await page.textContent("#speaker-note"), /no voice.*browser's own speech synthesis/s);
    assert.equal(await page.getAttribute("#speaker", "data-mode"), "browser");
    assert.equal(await page.$$eval("#conversation li.agent", (l) => l.length), 0, "no reply to untranscribed audio");
    const level = await page.$eval("#level", (m) => m.value);
    assert.ok(level <= 0 && level >= -60);
    // A typed question is answered from the knowledge base, streamed.
    await page.fill("#text", "how much commission do you charge");
    await page.press("#text", "Enter");
    await page.waitForSelector("#conversation li.agent[data-done=true]");
    const reply = await page.textContent("#conversation li.agent[data-done=true]");
    assert.match(reply, /1\.2%/);
    assert.match(reply, /Source:/);
    await screenshot(page, "voice");
    assert.deepEqual(page.errors, [], `no console errors: ${page.errors}`);
    await page.context().close();
  } finally {
    await voiceBrowser.close();
  }
});

test("voice page with a provider: the agent's speech plays, and the turn's stage timings show", async () => {
  const provider = await startProvider();
  const spoken = await startServer({ vars: { LLM_BASE_URL: provider.url, LLM_TIMEOUT_MS: "15000" } });
  const voiceBrowser = await launchBrowser([
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    `--use-file-for-fake-audio-capture=${speechWav()}`,
    "--autoplay-policy=no-user-gesture-required",
  ]);
  try {
    const page = await newPage(voiceBrowser);
    await page.goto(`${spoken.url}/voice.html`);
    await page.fill("#session", `speaks-${process.pid}`);
    await page.click("#connect-btn");
    await page.waitForSelector('#status[data-state="open"]');
    await page.waitForSelector('#speaker[data-mode="server"]');
    assert.equal(await page.isVisible("#speaker-note"), false, "the server speaks: no fallback note");
    await page.click("#mic");
    // A burst of the fake microphone is transcribed and answered, and the answer is spoken.
    await page.waitForSelector("#conversation li.agent[data-done=true]", { timeout: 30_000 });
    await page.waitForFunction(() => window.voicePlayback.chunks >= 2, null, { timeout: 30_000 });
    await page.waitForSelector("#timings[data-first-audio-ms]", { timeout: 30_000 });
    const state = await page.evaluate(() => ({ ...window.voicePlayback, ctx: document.querySelector("#speaker").dataset.state }));
    assert.ok(state.samples > 16000, `at least a second of speech was scheduled: ${JSON.stringify(state)}`);
    assert.equal(state.mode, "server");
    const t = await page.$eval("#timings", (el) => ({ ...el.dataset }));
    for (const k of ["transcriptMs", "firstTokenMs", "replyMs", "firstAudioMs"]) assert.ok(Number(t[k]) >= 0, `${k} in ${JSON.stringify(t)}`);
    assert.ok(Number(t.firstTokenMs) <= Number(t.firstAudioMs), JSON.stringify(t));
    assert.match(await page.textContent("#timings"), /first audio \(voice to voice\): \d+ ms/);
    await page.click("#mic"); // stop
    await screenshot(page, "voice-speaking");
    assert.ok(provider.calls.some((c) => c.path === "/v1/audio/speech"), "the speech endpoint was called");
    assert.deepEqual(page.errors, [], `no console errors: ${page.errors}`);
    await page.context().close();
  } finally {
    await voiceBrowser.close();
    await spoken.close();
    await provider.close();
  }
});

test("chatbot: a support question is answered with its source", async () => {
  const page = await newPage(browser, { width: 390, height: 844 }); // phone width
  await page.goto(`${server.url}/chat.html?session=support-${process.pid}`);
  await page.waitForSelector('#status[data-state="open"]');
  await page.focus("#text");
  await page.keyboard.type("how much commission do you charge?");
  await page.keyboard.press("Enter");
  await page.waitForSelector("#chat li.bot[data-done=true]");
  const answer = await page.textContent("#chat li.bot[data-done=true] > span");
  assert.match(answer, /1\.2%/);
  const sources = await page.$$eval("#chat li.bot[data-done=true] ul.sources li", (lis) => lis.map((li) => li.dataset.doc));
  assert.equal(sources[0], "fees-and-commission");
  await screenshot(page, "chat-phone-width");
  assert.deepEqual(page.errors, [], `no console errors: ${page.errors}`);
  await page.context().close();
});

test("chatbot lead flow completes and the lead appears on the ops dashboard", async () => {
  const ops = await newPage(browser);
  await ops.goto(`${server.url}/ops.html`);
  // The feed is private: without a key the dashboard does not even connect.
  assert.equal(await ops.getAttribute("#status", "data-state"), "idle");
  await ops.fill("#api-key", DEV_KEY);
  await ops.press("#api-key", "Enter");
  await ops.waitForSelector('#status[data-state="open"]');
  const chat = await newPage(browser);
  await chat.goto(`${server.url}/chat.html?session=lead-${process.pid}`);
  await chat.waitForSelector('#status[data-state="open"]');
  const email = `browser-${process.pid}@example.com`;
  const turns = ["I want to sell my house", "I'm Jane Browser", `my email is ${email}`,
    "the house is at 12 High Street, Leeds", "within 3 months", "Yes"];
  for (const [i, t] of turns.entries()) {
    await chat.fill("#text", t);
    await chat.press("#text", "Enter");
    if (i < turns.length - 1) {
      await chat.waitForFunction((n) => document.querySelectorAll("#chat li.bot[data-done=true]").length >= n, i + 1);
    }
  }
  await chat.waitForSelector("#chat li.lead");
  const leadId = await chat.$eval("#chat li.lead", (li) => li.dataset.lead);
  assert.ok(leadId);
  const transcript = await chat.textContent("#chat");
  assert.ok(!transcript.includes("too short"), "the digits of the email address are not a phone number");
  assert.match(transcript, new RegExp(`Email: ${email}`));
  await screenshot(chat, "chat-lead");
  // The ops dashboard (already open) shows the lead once it is valued and scored.
  await ops.waitForSelector(`#feed li[data-kind="lead"][data-lead="${leadId}"]`, { timeout: 60_000 });
  const row = await ops.textContent(`#feed li[data-kind="lead"][data-lead="${leadId}"]`);
  assert.match(row, /Jane Browser/);
  assert.match(row, /score \d+/);
  // The HTTP panels with the same key: a valuation, a lock and a limit.
  await ops.click("#val-btn");
  await ops.waitForSelector("#val-out[data-value]");
  assert.ok(Number(await ops.getAttribute("#val-out", "data-value")) > 0);
  await ops.click("#lock-form button");
  await ops.waitForFunction(() => document.querySelector("#lock-out")?.textContent.includes("held"));
  assert.match(await ops.textContent("#lock-out"), /heldno/);
  await ops.click("#limit-form button");
  await ops.waitForFunction(() => document.querySelector("#limit-out")?.textContent.includes("remaining"));
  assert.match(await ops.textContent("#limit-out"), /remaining\d+ of \d+/);
  await screenshot(ops, "ops");
  for (const p of [ops, chat]) assert.deepEqual(p.errors, [], `no console errors: ${p.errors}`);
  await ops.context().close();
  await chat.context().close();
});
