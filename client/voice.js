// The voice agent page: microphone → AudioWorklet (16 kHz PCM16 frames) → /api/voice/:session/ws.
// Protocol: docs/SESSIONS.md ("Voice wire protocol").

const $ = (id) => document.getElementById(id);
const RATE = 16000;
const PING_MS = 25_000;

let ws = null;
let audio = null; // { ctx, stream, node, source }
let pinger = null;
const replies = new Map(); // turn → <li> being streamed

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
    case "started":
      item("events", `streaming ${f.format.sample_rate} Hz ${f.format.encoding}`, "system");
      break;
    case "state":
      $("turn").textContent = f.state;
      $("turn").dataset.turn = f.state;
      break;
    case "speech_start":
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
      break;
    }
    case "reply_cancelled": {
      const li = replies.get(f.turn);
      if (li) { li.classList.add("cancelled"); li.dataset.cancelled = "true"; li.textContent += " — interrupted"; }
      replies.delete(f.turn);
      break;
    }
    case "usage":
      $("usage").textContent = `audio ${secs(f.audio_ms)} · tokens ${f.tokens}`;
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
  connect($("session").value.trim());
});

$("mic").addEventListener("click", async () => {
  if (audio) { stopMic(); return; }
  try {
    await startMic();
  } catch (err) {
    item("conversation", `microphone unavailable: ${err.message}`, "error");
  }
});

$("interrupt").addEventListener("click", () => send({ type: "interrupt" }));

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
