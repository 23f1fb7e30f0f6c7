// @roomkeeper/client as a package: `npm pack` makes a tarball of exactly the library, it
// installs into a scratch project without the network, imports under its own name (root and
// `./msgpack` exports), works there (a codec round trip, a Client), and its types resolve
// through `exports` for a TypeScript consumer. And the declarations name exactly what the
// module exports at runtime.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import * as lib from "../../client/roomkeeper/index.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const pkgDir = join(root, "client", "roomkeeper");
const npm = (args, cwd) => execFileSync("npm", args, { cwd, encoding: "utf8", env: { ...process.env, npm_config_update_notifier: "false" } });

test("the declarations name exactly the runtime exports", () => {
  const dts = readFileSync(join(pkgDir, "index.d.ts"), "utf8");
  const declared = new Set([...dts.matchAll(/^export declare (?:class|function|const) (\w+)/gm)].map((m) => m[1]));
  for (const m of dts.matchAll(/^export \{([^}]+)\} from/gm)) {
    for (const name of m[1].split(",").map((s) => s.trim())) if (/^[a-z]/.test(name)) declared.add(name); // values, not types
  }
  assert.deepEqual([...declared].sort(), Object.keys(lib).sort());
});

test("npm pack output installs in a scratch project, imports by name and type-checks", () => {
  const scratch = mkdtempSync(join(tmpdir(), "roomkeeper-pack-"));
  try {
    const out = JSON.parse(npm(["pack", "--json", "--pack-destination", scratch], pkgDir));
    const files = out[0].files.map((f) => f.path).sort();
    assert.ok(files.includes("index.js") && files.includes("index.d.ts") && files.includes("package.json"), files.join(", "));
    assert.ok(files.every((f) => !f.includes("/") && /\.(js|d\.ts|json|md)$/.test(f)), `only the library: ${files}`);
    const tarball = join(scratch, out[0].filename);

    const app = join(scratch, "app");
    execFileSync("mkdir", ["-p", app]);
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "scratch-app", private: true, type: "module" }));
    npm(["install", "--offline", "--no-audit", "--no-fund", "--loglevel=error", tarball], app);
    const installed = JSON.parse(readFileSync(join(app, "node_modules", "@roomkeeper", "client", "package.json"), "utf8"));
    assert.equal(installed.name, "@roomkeeper/client");

    writeFileSync(join(app, "main.js"), `
      import { Client, RoomClient, msgpack } from "@roomkeeper/client";
      import { decode, encode } from "@roomkeeper/client/msgpack";
      const frame = { type: "message", room: "r", offset: 3, body: { t: "é" } };
      if (JSON.stringify(decode(encode(frame))) !== JSON.stringify(frame)) throw new Error("codec");
      if (msgpack.encode(1)[0] !== 1) throw new Error("msgpack export");
      const c = new Client({ baseUrl: "http://127.0.0.1:9", protocol: "v2" });
      const room = c.room("lobby");
      console.log(JSON.stringify({ room: room.name, state: room.state, mode: c.mode, rc: typeof RoomClient }));
    `);
    const ran = JSON.parse(execFileSync("node", ["main.js"], { cwd: app, encoding: "utf8" }));
    assert.deepEqual(ran, { room: "lobby", state: "subscribing", mode: "v2", rc: "function" });

    writeFileSync(join(app, "typed.ts"), `
      import { Client, type Room } from "@roomkeeper/client";
      import { encode } from "@roomkeeper/client/msgpack";
      const room: Room = new Client({ protocol: "auto" }).room("lobby", { name: "ann" });
      room.on("message", (m) => m.offset.toFixed());
      const b: Uint8Array = encode(room.name);
      void b;
    `);
    writeFileSync(join(app, "tsconfig.json"), JSON.stringify({
      compilerOptions: { target: "es2022", module: "nodenext", moduleResolution: "nodenext", lib: ["es2022", "dom"], strict: true, noEmit: true, types: [] },
      files: ["typed.ts"],
    }));
    execFileSync(join(root, "node_modules", ".bin", "tsc"), ["-p", app], { cwd: app, encoding: "utf8" });
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
});
