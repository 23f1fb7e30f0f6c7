// The chatbot widget: /api/chat/:session/ws (docs/SESSIONS.md, "Chat wire protocol").
// The socket is the client library's Connection, the reconnect loop every Roomkeeper socket
// shares: backoff with full jitter back to the same session (the conversation is kept by the
// session's object), heartbeats with a pong deadline, a connect timeout. A token in the page
// URL (`?token=`) makes the session resumable across page loads, otherwise the session is per
// connection (anonymous).

import { Connection } from "/roomkeeper/index.js";

const $ = (id) => document.getElementById(id);

const params = new URLSearchParams(location.search);
const session = params.get("session") ?? sessionStorage.getItem("chat-session") ?? `chat-${Math.random().toString(36).slice(2, 8)}`;
sessionStorage.setItem("chat-session", session);

let nextId = 1;
const bubbles = new Map(); // reply id → <li>

function item(text, cls, data = {}) {
  const li = document.createElement("li");
  li.className = cls;
  li.textContent = text;
  Object.assign(li.dataset, data);
  $("chat").append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function status(state, text) {
  $("status").dataset.state = state;
  $("status-text").textContent = text;
  for (const id of ["text", "say-btn", "qualify", "reset"]) $(id).disabled = state !== "open";
}

function bubble(id) {
  const key = id ?? "_";
  let li = bubbles.get(key);
  if (!li) {
    li = item("", "bot", id ? { reply: id } : {});
    li.append(document.createElement("span"));
    bubbles.set(key, li);
  }
  return li;
}

function onFrame(f) {
  switch (f.type) {
    case "reply_delta":
      bubble(f.id).firstChild.textContent += f.text;
      break;
    case "reply_done": {
      const li = bubble(f.id);
      li.firstChild.textContent = f.text;
      li.dataset.done = "true";
      if (f.sources?.length) {
        const ul = document.createElement("ul");
        ul.className = "sources";
        ul.setAttribute("aria-label", "Sources");
        for (const s of f.sources) {
          const src = document.createElement("li");
          src.textContent = `${s.title} — ${s.heading} (kb/${s.doc})`;
          src.dataset.doc = s.doc;
          ul.append(src);
        }
        li.append(ul);
      }
      bubbles.delete(f.id ?? "_");
      break;
    }
    case "lead_submitted":
      item(`Lead ${f.lead_id} submitted: it is being valued and scored — see the ops dashboard.`, "lead", { lead: f.lead_id });
      break;
    case "error":
      item(`${f.code}: ${f.message}`, "error", { code: f.code });
      break;
    default:
      break;
  }
}

const conn = new Connection({
  url: (token) => {
    const u = new URL(`/api/chat/${encodeURIComponent(session)}/ws`, location.href);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    if (token) u.searchParams.set("token", token);
    return u.toString();
  },
  token: params.get("token") ?? undefined,
});
// The chat protocol has no welcome frame: an open socket is a ready one.
conn.on("open", () => conn.ready());
conn.on("frame", (data) => onFrame(JSON.parse(data)));
conn.on("status", (s) => {
  const text = {
    connecting: "connecting…",
    open: `connected (session ${session})`,
    reconnecting: s.delayMs === undefined ? "reconnecting…" : `reconnecting in ${(s.delayMs / 1000).toFixed(1)} s`,
    closed: `disconnected (${s.code}${s.reason ? `: ${s.reason}` : ""}) — reload the page to start again`,
  }[s.state];
  status(s.state, text ?? s.state);
});
window.chatConnection = conn; // for the browser tests and the curious

function send(frame) {
  conn.send(JSON.stringify(frame));
}

$("say").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  $("text").value = "";
  const id = `m${nextId++}`;
  item(text, "user", { message: id });
  send({ type: "message", text, id });
});
$("qualify").addEventListener("click", () => {
  item("I'd like a valuation", "user");
  send({ type: "qualify" });
});
$("reset").addEventListener("click", () => {
  $("chat").replaceChildren();
  send({ type: "reset" });
});

conn.connect();
