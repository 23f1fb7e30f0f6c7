// Browser test harness: real workerd (wrangler dev) on a free loopback port with a fresh
// persist directory, and Debian's Chromium driven by playwright-core (no browser download).
import { spawn, execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, openSync, rmSync, readFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const artifacts = join(root, "artifacts", "browser");
mkdirSync(artifacts, { recursive: true });

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Builds the Worker if no build exists (make test builds it in the Rust e2e run first). */
export function ensureBuilt() {
  if (!existsSync(join(root, "build", "worker", "shim.mjs"))) {
    execFileSync("bash", ["scripts/build.sh"], { cwd: root, stdio: "inherit" });
  }
}

async function waitHealthy(url, child, log) {
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`wrangler exited early:\n${readFileSync(log, "utf8").slice(-3000)}`);
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`wrangler did not answer ${url}:\n${readFileSync(log, "utf8").slice(-3000)}`);
}

/** A running `wrangler dev`; `restart()` stops it and starts it again on the same port and state. */
export async function startServer({ vars = {}, port } = {}) {
  ensureBuilt();
  const persist = mkdtempSync(join(tmpdir(), "roomkeeper-browser-"));
  execFileSync("bash", ["scripts/db.sh", persist], { cwd: root, stdio: "inherit" });
  const server = { port: port ?? (await freePort()), persist, child: null };
  server.url = `http://127.0.0.1:${server.port}`;
  server.start = async () => {
    const log = join(artifacts, `wrangler-${server.port}.log`);
    const fd = openSync(log, "a");
    const args = ["dev", "--ip", "127.0.0.1", "--port", String(server.port), "--inspector-port", String(await freePort()),
      "--persist-to", persist, "--show-interactive-dev-session=false"];
    for (const [k, v] of Object.entries(vars)) args.push("--var", `${k}:${v}`);
    server.child = spawn(join(root, "node_modules/.bin/wrangler"), args, {
      cwd: root, detached: true, stdio: ["ignore", fd, fd],
      env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true" },
    });
    await waitHealthy(`${server.url}/health`, server.child, log);
  };
  server.stop = async () => {
    const child = server.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    try { process.kill(-child.pid, "SIGTERM"); } catch {}
    const timer = setTimeout(() => { try { process.kill(-child.pid, "SIGKILL"); } catch {} }, 5000);
    await exited;
    clearTimeout(timer);
    // workerd may outlive wrangler for a moment: make sure the port is free again.
    for (let i = 0; i < 50 && (await portBusy(server.port)); i++) await new Promise((r) => setTimeout(r, 100));
  };
  server.restart = async () => { await server.stop(); await server.start(); };
  server.close = async () => { await server.stop(); rmSync(persist, { recursive: true, force: true }); };
  await server.start();
  return server;
}

function portBusy(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => { s.destroy(); resolve(true); });
    s.once("error", () => resolve(false));
  });
}

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** Headless Debian Chromium with the flags this machine needs (closed network, root). */
export async function launchBrowser(extraArgs = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", ...extraArgs],
  });
}

/** A page that records console errors and page errors, for a "no console errors" check. */
export async function newPage(browser, viewport = { width: 1100, height: 800 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.errors = [];
  page.on("console", (m) => { if (m.type() === "error") page.errors.push(m.text()); });
  page.on("pageerror", (e) => page.errors.push(String(e)));
  return page;
}

export async function screenshot(page, name) {
  const path = join(artifacts, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}
