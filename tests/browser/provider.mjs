// A real local OpenAI-compatible server for the browser tests (the AI backend is what is truly
// outside): /v1/audio/transcriptions answers a fixed transcript, /v1/chat/completions streams
// a two-sentence reply as server-sent events, /v1/audio/speech speaks its input with Debian's
// espeak-ng (a WAV). Bound to 127.0.0.1 on a free port; `close()` stops it.
import { execFile } from "node:child_process";
import { createServer } from "node:http";

const REPLY = ["Happy to help. ", "We value homes ", "in your area for free, ", "and we can come round this week."];

export async function startProvider() {
  const calls = [];
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      const body = Buffer.concat(chunks);
      calls.push({ path: req.url, bytes: body.length });
      if (req.url === "/v1/audio/transcriptions") {
        res.writeHead(200, { "Content-Type": "application/json" });
        res.end(JSON.stringify({ text: "I would like a valuation" }));
      } else if (req.url === "/v1/chat/completions") {
        res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
        for (const piece of REPLY) {
          res.write(`data: ${JSON.stringify({ choices: [{ delta: { content: piece } }] })}\n\n`);
          await new Promise((r) => setTimeout(r, 80));
        }
        res.end("data: [DONE]\n\n");
      } else if (req.url === "/v1/audio/speech") {
        const { input } = JSON.parse(body.toString("utf8"));
        execFile("espeak-ng", ["--stdout", "--", input], { encoding: "buffer", maxBuffer: 16 << 20 }, (err, wav) => {
          if (err) { res.writeHead(500); res.end("espeak-ng failed"); return; }
          res.writeHead(200, { "Content-Type": "audio/wav", "Content-Length": wav.length });
          res.end(wav);
        });
      } else {
        res.writeHead(404);
        res.end();
      }
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  return { url: `http://127.0.0.1:${port}`, calls, close: () => new Promise((r) => server.close(r)) };
}
