// The ops dashboard: the `ops` room's live feed through RoomClient, and lock / limit / valuation
// panels over the HTTP API (docs/COORDINATION.md, docs/SERVICES.md).

import { RoomClient } from "/roomkeeper.js";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "roomkeeper-api-key";
const money = new Intl.NumberFormat("en-CA", { style: "currency", currency: "CAD", maximumFractionDigits: 0 });

// ---- live feed ------------------------------------------------------------------------------

const seen = new Set();

function describe(e) {
  switch (e.kind) {
    case "lead":
      return [`lead ${e.id}`, `${e.name} — score ${e.score} → ${e.channel}` +
        (e.estimated_value != null ? `, valued ${money.format(e.estimated_value)}` : "") +
        (e.timeline ? `, timeline ${e.timeline}` : "") + ` (${e.source})`];
    case "notification":
      return [`notification ${e.id}`, `${e.template}${e.channel ? ` to ${e.channel}` : ""}${e.status ? `: ${e.status}` : ""}`];
    case "delivery":
      return [`delivery ${e.id}`, `${e.template ?? ""} ${e.channel ?? ""}: ${e.outcome ?? e.status ?? ""}${e.attempt ? ` (attempt ${e.attempt})` : ""}`];
    case "alert":
      return [`alert`, `${e.title ?? e.alert ?? ""} ${e.detail ?? e.message ?? ""}`.trim()];
    default:
      return [e.kind ?? "event", JSON.stringify(e)];
  }
}

// Only what the service itself published counts: the `ops` room refuses every client publish,
// and the dashboard trusts nothing else either.
const SERVICE = "api:system";

function show(m) {
  if (m.from?.id !== SERVICE) return;
  if (seen.has(m.offset)) return;
  seen.add(m.offset);
  const e = typeof m.body === "object" && m.body ? m.body : { kind: "message", text: String(m.body) };
  const [who, text] = describe(e);
  const li = document.createElement("li");
  li.dataset.offset = m.offset;
  li.dataset.kind = e.kind ?? "";
  if (e.kind === "lead") li.dataset.lead = e.id;
  const b = document.createElement("span");
  b.className = "who";
  b.textContent = who;
  li.append(b, document.createTextNode(text));
  const t = document.createElement("span");
  t.className = "offset";
  t.textContent = new Date(m.ts ?? Date.now()).toLocaleTimeString();
  li.append(t);
  $("feed").prepend(li);
  $("feed-count").textContent = seen.size;
}

// The feed needs an operator token, minted by `POST /api/admin/ops-token` with an admin API
// key; the client asks for a fresh one before every (re)connect.
async function opsToken() {
  const r = await api("POST", "/api/admin/ops-token");
  if (!r.ok) throw new Error(`${r.status} ${r.json?.error?.code ?? ""}: ${r.json?.error?.message ?? "no ops token"}`);
  return r.json.token;
}

const client = new RoomClient({ room: "ops", name: "ops dashboard", history: 100, getToken: opsToken });
client.on("status", (s) => {
  $("status").dataset.state = s.state;
  $("status-text").textContent = {
    idle: "set an admin API key to see the live feed",
    connecting: "connecting to the ops room…",
    open: "live: ops room",
    reconnecting: "reconnecting…",
    closed: `disconnected (${s.code ?? ""}${s.reason ? `: ${s.reason}` : ""})`,
  }[s.state] ?? s.state;
});
client.on("recovery", (r) => {
  $("recovery").hidden = false;
  $("recovery").textContent = r.recovered ? `recovered ${r.replayed} missed` : "reloaded";
});
client.on("message", show);
client.on("error", (e) => console.warn("ops room:", e.message));
window.opsClient = client; // for the browser tests and the curious
let started = false;
function startFeed() {
  if (started || !key()) return;
  started = true;
  client.connect();
}

// ---- API key and HTTP panels ----------------------------------------------------------------

function key() {
  return sessionStorage.getItem(KEY_STORAGE);
}

function showKeyState() {
  $("key-state").textContent = key()
    ? "key set for this tab"
    : "no key set: the live feed, locks and limits need an admin key";
}

$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
  $("api-key").value = "";
  showKeyState();
  startFeed();
});
showKeyState();
startFeed();

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (key()) headers.Authorization = `Bearer ${key()}`;
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = await r.json().catch(() => ({}));
  return { ok: r.ok, status: r.status, json };
}

function table(id, rows) {
  $(id).replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.textContent = k;
    const td = document.createElement("td");
    td.textContent = v;
    tr.append(th, td);
    return tr;
  }));
}

function errorRows(r) {
  return [["error", `${r.status} ${r.json?.error?.code ?? ""}: ${r.json?.error?.message ?? ""}`]];
}

$("lock-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await api("GET", `/api/locks/${encodeURIComponent($("lock-name").value.trim())}`);
  if (!r.ok) return table("lock-out", errorRows(r));
  const l = r.json;
  table("lock-out", [
    ["held", l.held ? "yes" : "no"],
    ["holder", l.holder ?? "—"],
    ["expires", l.expires_at_ms ? new Date(l.expires_at_ms).toLocaleTimeString() : "—"],
    ["waiters", `${l.waiters ?? 0}${l.waiter_owners?.length ? ` (${l.waiter_owners.join(", ")})` : ""}`],
  ]);
});

$("limit-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  // Policy names and keys are URL-safe by their rules ([A-Za-z0-9_.:-]); the path is sent as is.
  const policy = $("limit-policy").value.trim();
  const k = $("limit-key").value.trim();
  // cost 0 only reads the bucket: looking does not spend.
  const r = await api("POST", `/api/limits/${policy}/${k}`, { cost: 0 });
  if (!r.ok) return table("limit-out", errorRows(r));
  const d = r.json;
  table("limit-out", [
    ["remaining", `${d.remaining} of ${d.limit}`],
    ["full again in", `${(d.reset_ms / 1000).toFixed(1)} s`],
  ]);
});

$("val-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const facts = {};
  for (const f of ["lotsize", "bedrooms", "bathrms", "stories", "garagepl"]) facts[f] = Number($(f).value);
  for (const f of ["driveway", "recroom", "fullbase", "gashw", "airco", "prefarea"]) facts[f] = $(f).checked;
  const r = await api("POST", "/api/valuation", facts);
  const out = $("val-out");
  if (!r.ok) {
    out.className = "error";
    out.textContent = `${r.json?.error?.code ?? r.status}: ${r.json?.error?.message ?? ""}`;
    return;
  }
  const v = r.json;
  out.className = "";
  out.dataset.value = v.value;
  out.textContent = `${money.format(v.value)} (80 % interval ${money.format(v.low)} – ${money.format(v.high)}), ` +
    `${v.comparables?.length ?? 0} comparable sales, model ${v.model_version}`;
});
