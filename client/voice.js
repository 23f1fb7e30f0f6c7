// The voice agent page: microphone → AudioWorklet (16 kHz PCM16 frames) → /api/voice/:session/ws.
// Protocol: docs/SESSIONS.md ("Voice wire protocol").

const $ = (id) => document.getElementById(id);
const RATE = 16000;
const PING_MS = 25_000;

let ws = null;
let audio = null; // { ctx, stream, node, source }
let pinger = null;
const replies = new Map(); // turn → <li> being streamed

// ---- the agent's voice: the server's speech chunks, or the browser's own synthesis -------------
// `speech {turn, seq, sample_rate, …}` then a binary frame: "RKS1", turn (u64 LE), seq (u32 LE),
// 16-bit PCM. Chunks are scheduled back to back on one AudioContext; `speech_cancelled` stops
// that turn at once. window.voicePlayback is the playback state, for the browser tests.
const speaker = { ctx: null, at: 0, rate: RATE, sources: new Map(), browser: false };
const playback = { mode: "none", chunks: 0, samples: 0, playing: 0, turn: null, cancelled: [] };
window.voicePlayback = playback;

function speakerState() {
  const el = $("speaker");
  el.dataset.state = playback.playing > 0 ? "playing" : "idle";
  el.dataset.mode = playback.mode;
  el.textContent = playback.mode === "server"
    ? `${playback.playing > 0 ? "speaking" : "quiet"} · ${playback.chunks} chunks, ${secs((playback.samples / speaker.rate) * 1000)} of speech`
    : playback.mode === "browser" ? "replies are spoken by your browser's own voice" : "replies are not spoken";
}

function audioContext() {
  speaker.ctx ??= new AudioContext();
  if (speaker.ctx.state === "suspended") speaker.ctx.resume().catch(() => {});
  return speaker.ctx;
}

function playChunk(buf) {
  if (buf.byteLength < 16 || String.fromCharCode(...new Uint8Array(buf, 0, 4)) !== "RKS1") return;
  const view = new DataView(buf);
  const turn = Number(view.getBigUint64(4, true));
  const pcm = new Int16Array(buf.slice(16));
  const ctx = audioContext();
  const clip = ctx.createBuffer(1, Math.max(pcm.length, 1), speaker.rate);
  const ch = clip.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) ch[i] = pcm[i] / 32768;
  const src = ctx.createBufferSource();
  src.buffer = clip;
  src.connect(ctx.destination);
  const at = Math.max(ctx.currentTime, speaker.at);
  src.start(at);
  speaker.at = at + clip.duration;
  const list = speaker.sources.get(turn) ?? [];
  list.push(src);
  speaker.sources.set(turn, list);
  playback.chunks += 1;
  playback.samples += pcm.length;
  playback.playing += 1;
  playback.turn = turn;
  src.onended = () => { playback.playing -= 1; speakerState(); };
  speakerState();
}

/** Barge-in: stop this turn's speech (or, with no turn, everything) now. */
function stopSpeaking(turn) {
  for (const [t, list] of speaker.sources) {
    if (turn !== undefined && t !== turn) continue;
    for (const src of list) { try { src.stop(); } catch { /* already ended */ } }
    speaker.sources.delete(t);
  }
  if (speaker.ctx) speaker.at = speaker.ctx.currentTime;
  if (speaker.browser) speechSynthesis.cancel();
}

function showTimings(t) {
  const el = $("timings");
  const rows = [["transcript", t.transcript_ms], ["first token", t.first_token_ms], ["reply", t.reply_ms],
    ["first audio (voice to voice)", t.first_audio_ms], ["synthesis", t.synthesis_ms]];
  el.replaceChildren(...rows.filter(([, v]) => v !== undefined).map(([k, v]) => {
    const li = document.createElement("li");
    li.textContent = `${k}: ${v} ms`;
    return li;
  }));
  el.dataset.turn = t.turn;
  for (const [k, v] of Object.entries(t)) if (typeof v === "number") el.dataset[k.replace(/_(\w)/g, (_, c) => c.toUpperCase())] = v;
  $("timings-origin").textContent = t.origin === "text" ? "from the typed question" : "from the end of your speech";
}

function wsUrl(session) {
  const u = new URL(`/api/voice/${encodeURIComponent(session)}/ws`, location.href);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  const token = new URLSearchParams(location.search).get("token");
  if (token) u.searchParams.set("token", token);
  return u.toString();
}

function item(list, text, cls, data = {}) {
  const li = document.createElement("li");
  if (cls) li.className = cls;
  li.textContent = text;
  Object.assign(li.dataset, data);
  $(list).append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function status(state, text) {
  $("status").dataset.state = state;
  $("status-text").textContent = text;
  const open = state === "open";
  for (const id of ["text", "ask-btn", "mic"]) $(id).disabled = !open;
  $("interrupt").disabled = !open;
}

function send(frame) {
  if (ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
}

const secs = (ms) => `${(ms / 1000).toFixed(1)} s`;

function onFrame(f) {
  switch (f.type) {
    case "ready":
      speaker.browser = !f.speech && "speechSynthesis" in window;
      playback.mode = f.speech ? "server" : speaker.browser ? "browser" : "none";
      $("speaker-note").hidden = f.speech;
      $("speaker-note").textContent = f.speech ? "" : `${f.note ?? "The server does not speak."} ${speaker.browser ? "Replies are spoken by your browser's own speech synthesis instead (labelled so), not by the server." : "This browser has no speech synthesis either: replies are text only."}`;
      speakerState();
      break;
    case "speech":
      speaker.rate = f.sample_rate;
      break;
    case "speech_cancelled":
      playback.cancelled.push(f.turn);
      stopSpeaking(f.turn);
      item("events", `speech of turn ${f.turn} cancelled`, "speech-cancelled", { turn: f.turn });
      break;
    case "speech_done":
      break;
    case "timings":
      showTimings(f);
      break;
    case "started":
      item("events", `streaming ${f.format.sample_rate} Hz ${f.format.encoding}`, "system");
      break;
    case "state":
      $("turn").textContent = f.state;
      $("turn").dataset.turn = f.state;
      break;
    case "speech_start":
      if (speaker.browser) speechSynthesis.cancel();
      item("events", `speech started at ${secs(f.at_ms)}`, "speech-start", { at: f.at_ms });
      break;
    case "speech_end":
      item("events", `speech ended at ${secs(f.at_ms)} (${secs(f.duration_ms)})`, "speech-end", { at: f.at_ms });
      break;
    case "utterance": {
      const what = f.transcribed
        ? `“${f.transcript || "(no words heard)"}”`
        : `utterance ${f.id}: ${secs(f.duration_ms)} at ${Math.round(f.level_dbfs)} dBFS — not transcribed`;
      item("conversation", what, f.transcribed ? "user" : "user untranscribed", { utterance: f.id, durationMs: f.duration_ms });
      if (!f.transcribed) $("provider-note").hidden = false;
      break;
    }
    case "reply_delta": {
      let li = replies.get(f.turn);
      if (!li) {
        li = item("conversation", "", "agent", { turn: f.turn });
        replies.set(f.turn, li);
      }
      li.textContent += f.text;
      break;
    }
    case "reply_done": {
      const li = replies.get(f.turn) ?? item("conversation", "", "agent", { turn: f.turn });
      li.textContent = f.text;
      li.dataset.done = "true";
      replies.delete(f.turn);
      if (speaker.browser && f.text) {
        const u = new SpeechSynthesisUtterance(f.text);
        speechSynthesis.speak(u);
      }
      break;
    }
    case "reply_cancelled": {
      if (speaker.browser) speechSynthesis.cancel();
      const li = replies.get(f.turn);
      if (li) { li.classList.add("cancelled"); li.dataset.cancelled = "true"; li.textContent += " — interrupted"; }
      replies.delete(f.turn);
      break;
    }
    case "usage":
      $("usage").textContent = `audio ${secs(f.audio_ms)} · tokens ${f.tokens} · spoken ${f.speech_chars ?? 0} characters`;
      break;
    case "error":
      item("conversation", `${f.code}: ${f.message}`, "error", { code: f.code });
      break;
    case "pong":
      break;
    default:
      break;
  }
}

function connect(session) {
  disconnect();
  status("connecting", "connecting…");
  ws = new WebSocket(wsUrl(session));
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    status("open", `connected to voice session ${session}`);
    pinger = setInterval(() => send({ type: "ping" }), PING_MS);
  };
  ws.onmessage = (e) => {
    if (typeof e.data === "string") onFrame(JSON.parse(e.data));
    else playChunk(e.data);
  };
  ws.onclose = (e) => {
    clearInterval(pinger);
    stopMic(false);
    status("closed", `disconnected (${e.code}${e.reason ? `: ${e.reason}` : ""}) — press Connect to start again`);
  };
  window.voiceSocket = ws; // for the browser tests and the curious
}

function disconnect() {
  stopMic(false);
  if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, "bye");
  ws = null;
}

async function startMic() {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const ctx = new AudioContext();
  await ctx.audioWorklet.addModule("/pcm-worklet.js");
  const source = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, "pcm-frames", { numberOfInputs: 1, numberOfOutputs: 0 });
  node.port.onmessage = ({ data }) => {
    const db = data.rms > 0 ? Math.max(-60, 20 * Math.log10(data.rms)) : -60;
    $("level").value = db;
    $("level").textContent = `${Math.round(db)} dBFS`;
    if (ws?.readyState === WebSocket.OPEN) ws.send(data.pcm);
  };
  source.connect(node);
  audio = { ctx, stream, node, source };
  send({ type: "start", format: { encoding: "pcm16le", sample_rate: RATE, channels: 1 } });
  $("mic").textContent = "Stop microphone";
  $("mic").setAttribute("aria-pressed", "true");
}

function stopMic(tell = true) {
  if (!audio) return;
  audio.source.disconnect();
  audio.node.port.onmessage = null;
  audio.stream.getTracks().forEach((t) => t.stop());
  audio.ctx.close();
  audio = null;
  if (tell) send({ type: "stop" });
  $("mic").textContent = "Start microphone";
  $("mic").setAttribute("aria-pressed", "false");
  $("level").value = -60;
}

$("connect").addEventListener("submit", (e) => {
  e.preventDefault();
  audioContext(); // made in the click, so the browser lets it play
  connect($("session").value.trim());
});

$("mic").addEventListener("click", async () => {
  audioContext(); // a click: the browser lets it play
  if (audio) { stopMic(); return; }
  try {
    await startMic();
  } catch (err) {
    item("conversation", `microphone unavailable: ${err.message}`, "error");
  }
});

$("interrupt").addEventListener("click", () => {
  stopSpeaking();
  send({ type: "interrupt" });
});

$("ask").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  $("text").value = "";
  item("conversation", text, "user typed");
  send({ type: "text", text });
});

const params = new URLSearchParams(location.search);
$("session").value = params.get("session") ?? `voice-${Math.random().toString(36).slice(2, 8)}`;
if (params.has("session")) connect($("session").value);
