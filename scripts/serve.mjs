// Runs the Worker of the current directory like `wrangler dev`, but without wrangler's
// inspector proxy: the same local runtime (workerd through wrangler's own startWorker API),
// the same bindings and local state, no DevTools connection.
//
// Why: `wrangler dev` always attaches an inspector to the runtime and enables its Network
// domain, so every subrequest (every Durable Object call) produces DevTools events that
// wrangler's inspector proxy relays to wrangler's Node process, one HTTP request each. Under
// load that relay takes most of a core (BENCHMARKS.md, "The lock and wrangler's inspector").
// The benchmarks use this with `--no-inspector`; `make dev` keeps the inspector (DevTools).
//
// Usage: node scripts/serve.mjs --port P --persist-to DIR [--var NAME:VALUE]...
// Stops on SIGTERM or SIGINT.
import { unstable_startWorker } from "wrangler";

const args = process.argv.slice(2);
let port = 8787;
let persist = ".wrangler/state";
const bindings = {};
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  const next = () => {
    const v = args[++i];
    if (v === undefined) {
      console.error(`${a} needs a value`);
      process.exit(2);
    }
    return v;
  };
  if (a === "--port") port = Number(next());
  else if (a === "--persist-to") persist = next();
  else if (a === "--var") {
    const v = next();
    const at = v.indexOf(":");
    if (at < 1) {
      console.error(`--var takes NAME:VALUE, got ${v}`);
      process.exit(2);
    }
    bindings[v.slice(0, at)] = { type: "plain_text", value: v.slice(at + 1) };
  } else {
    console.error(`unknown argument ${a}`);
    process.exit(2);
  }
}

const worker = await unstable_startWorker({
  config: "wrangler.toml",
  bindings,
  dev: {
    server: { hostname: "127.0.0.1", port },
    inspector: false,
    persist,
    watch: false,
    logLevel: "log",
  },
});
await worker.ready;
console.log(`Ready on http://127.0.0.1:${port} (no inspector)`);

const stop = async () => {
  await worker.dispose().catch(() => {});
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
