//! The end-to-end harness: builds the Worker once, starts real workerd through `wrangler dev`
//! on free loopback ports with a fresh persist directory, and gives tests real WebSocket and
//! HTTP clients. A [`Server`] stops its whole process group when dropped, so a failing test
//! never leaves workerd behind.
//!
//! Every path (scripts, `node_modules/.bin/wrangler`, `target/e2e-logs`) is taken from the
//! repository root, [`root`], whichever crate links this one.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for an expected frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// The project root (the repository, where `Cargo.toml`, `scripts/` and `node_modules/` are):
/// two levels above this crate's own manifest directory, `tests/support/`.
pub fn root() -> &'static Path {
    let here: &'static Path = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(Path::parent)
        .expect("the test kit lives in tests/support/ under the repository root")
}

/// Builds the Worker once (skipped when `ROOMKEEPER_SKIP_BUILD=1`, for quick reruns).
pub fn build_worker() {
    if std::env::var("ROOMKEEPER_SKIP_BUILD").as_deref() == Ok("1") {
        return;
    }
    let status = Command::new("bash")
        .arg("scripts/build.sh")
        .current_dir(root())
        .status()
        .expect("run scripts/build.sh");
    assert!(status.success(), "building the Worker failed");
}

/// A free loopback port (bound and released; good enough for a test run).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `$TMPDIR/roomkeeper-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "roomkeeper-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `wrangler dev` (and its workerd), stopped on drop.
pub struct Server {
    child: Option<Child>,
    /// The HTTP port on 127.0.0.1.
    pub port: u16,
    /// Where wrangler's output goes.
    pub log: PathBuf,
}

impl Server {
    /// Starts `wrangler dev` on a free port with state under `persist`, and waits until
    /// `/health` answers.
    pub fn start(persist: &Path) -> Self {
        Self::start_with(persist, &[])
    }

    /// Starts a server with extra `--var NAME:VALUE` settings (e.g. tighter limits).
    pub fn start_with(persist: &Path, vars: &[(&str, &str)]) -> Self {
        // D1 schema and demo sales, as `make dev` has them (idempotent on a restart).
        let status = Command::new("bash")
            .arg("scripts/db.sh")
            .arg(persist)
            .current_dir(root())
            .status()
            .expect("run scripts/db.sh");
        assert!(status.success(), "applying D1 migrations failed");
        // A free port can be taken by another process (a client socket's ephemeral port)
        // between choosing it and wrangler binding it: then start again on another one.
        for attempt in 1.. {
            let (child, port, log) =
                spawn_wrangler(root(), persist, vars, &root().join("target/e2e-logs"));
            let mut server = Self {
                child: Some(child),
                port,
                log,
            };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(tail) if attempt < 3 && tail.contains("Address already in use") => {
                    server.stop();
                }
                Err(tail) => panic!("wrangler dev exited early:\n{tail}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Waits until `/health` answers; the log's tail if wrangler exited first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let url = format!("{}/health", self.http());
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!("({status}):\n{}", self.log_tail()));
            }
            if let Ok(body) = blocking_get(&url) {
                // Up, whether healthy or answering a configuration error (tests of bad settings
                // start servers that can only answer errors).
                if body.contains("\"ok\"") || body.contains("\"config_error\"") {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "wrangler dev did not answer /health in time:\n{}",
            self.log_tail()
        );
    }

    /// Base HTTP URL.
    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Base WebSocket URL.
    pub fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The last lines of wrangler's output (for failure messages).
    pub fn log_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Stops wrangler and workerd (the whole process group): TERM, then KILL.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_group(child);
        }
    }
}

/// Spawns `wrangler dev` from the tree at `dir` on free HTTP and inspector ports on
/// 127.0.0.1, with state under `persist`, extra `--var NAME:VALUE` settings, and its output in
/// a log file under `log_dir`, in a process group of its own (see [`stop_group`]). Answers the
/// child, its HTTP port and the log's path; waiting until it serves is the caller's.
pub fn spawn_wrangler(
    dir: &Path,
    persist: &Path,
    vars: &[(&str, &str)],
    log_dir: &Path,
) -> (Child, u16, PathBuf) {
    spawn_runtime(dir, persist, vars, log_dir, true)
}

/// As [`spawn_wrangler`]; with `inspector` false the Worker runs through `scripts/serve.mjs`
/// (wrangler's own `startWorker` API, the same runtime and local state) without wrangler's
/// inspector proxy, whose relaying of DevTools events costs a core under load (BENCHMARKS.md).
pub fn spawn_runtime(
    dir: &Path,
    persist: &Path,
    vars: &[(&str, &str)],
    log_dir: &Path,
    inspector: bool,
) -> (Child, u16, PathBuf) {
    let port = free_port();
    std::fs::create_dir_all(log_dir).expect("create log dir");
    let log = log_dir.join(format!("wrangler-{port}.log"));
    let out = std::fs::File::create(&log).expect("create log file");
    let err = out.try_clone().expect("clone log file");
    let mut command = if inspector {
        let mut c = Command::new(dir.join("node_modules/.bin/wrangler"));
        c.args(["dev", "--ip", "127.0.0.1", "--port", &port.to_string()])
            .args(["--inspector-port", &free_port().to_string()])
            .arg("--persist-to")
            .arg(persist)
            .args(["--show-interactive-dev-session=false", "--log-level", "log"]);
        c
    } else {
        let mut c = Command::new("node");
        c.arg(root().join("scripts/serve.mjs"))
            .args(["--port", &port.to_string()])
            .arg("--persist-to")
            .arg(persist);
        c
    };
    let child = command
        .args(
            vars.iter()
                .flat_map(|(k, v)| ["--var".to_string(), format!("{k}:{v}")]),
        )
        .current_dir(dir)
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CI", "true")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .expect("spawn wrangler dev (run scripts/setup.sh first)");
    (child, port, log)
}

/// Stops a process and its group (wrangler and the workerd it started): TERM, then KILL after
/// up to 5 s.
pub fn stop_group(mut child: Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    let _ = child.wait();
}

/// `GET /api/metrics.json` with the development API key.
pub async fn metrics(base: &str) -> Value {
    let r = http()
        .get(format!("{base}/api/metrics.json"))
        .bearer_auth(DEV_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal blocking GET used only to poll readiness (no runtime needed).
fn blocking_get(url: &str) -> std::io::Result<String> {
    use std::io::Write;
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    // Read until the body shows up; workerd may keep the connection open despite `close`.
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.ends_with(b"}") {
                    break;
                }
            }
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Runs an async test body on its own runtime.
pub fn run<F: std::future::Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// A unique room name for a test.
pub fn room(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Frame encoding a test client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enc {
    /// JSON text frames.
    Json,
    /// MessagePack binary frames (negotiated by subprotocol).
    Msgpack,
}

/// A real WebSocket client.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    enc: Enc,
}

/// Why a connection attempt failed: the HTTP status and body the server answered with.
#[derive(Debug)]
pub struct Refused {
    /// HTTP status.
    pub status: u16,
    /// Response body (the JSON error).
    pub body: Value,
}

impl Client {
    /// Connects to `url` with the given encoding and extra headers; panics on refusal.
    pub async fn connect(url: &str, enc: Enc) -> Self {
        Self::try_connect(url, enc, &[])
            .await
            .unwrap_or_else(|r| panic!("connect {url} refused: {r:?}"))
    }

    /// Connects, returning the refusal (status and JSON body) instead of panicking.
    pub async fn try_connect(
        url: &str,
        enc: Enc,
        headers: &[(&str, &str)],
    ) -> Result<Self, Refused> {
        let mut req = url.into_client_request().expect("valid ws url");
        let msgpack = msgpack_subprotocol(url);
        if enc == Enc::Msgpack {
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(msgpack));
        }
        for (k, v) in headers {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, resp)) => {
                if enc == Enc::Msgpack {
                    assert_eq!(
                        resp.headers()
                            .get("Sec-WebSocket-Protocol")
                            .and_then(|v| v.to_str().ok()),
                        Some(msgpack),
                        "server must echo the negotiated subprotocol"
                    );
                }
                Ok(Self { ws, enc })
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let body = match resp
                    .body()
                    .as_ref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                {
                    Some(b) => b,
                    // tungstenite keeps only the body bytes that came with the headers; ask
                    // again over plain HTTP for the whole error body.
                    None => replay_upgrade(url, enc, headers).await,
                };
                Err(Refused { status, body })
            }
            Err(e) => panic!("connect {url}: {e}"),
        }
    }

    /// Connects and joins with a display name; returns the client and its welcome frame.
    pub async fn join(url: &str, enc: Enc, name: &str) -> (Self, Value) {
        Self::join_with(url, enc, serde_json::json!({"type": "join", "name": name})).await
    }

    /// Connects and sends the given join frame; returns the client and its welcome frame.
    pub async fn join_with(url: &str, enc: Enc, join: Value) -> (Self, Value) {
        let mut c = Self::connect(url, enc).await;
        c.send(join).await;
        let welcome = c.recv().await;
        assert_eq!(
            welcome["type"], "welcome",
            "expected welcome, got {welcome}"
        );
        (c, welcome)
    }

    /// Sends a frame in this client's encoding.
    pub async fn send(&mut self, v: Value) {
        let msg = match self.enc {
            Enc::Json => WsMessage::Text(v.to_string().into()),
            Enc::Msgpack => WsMessage::Binary(rmp_serde::to_vec_named(&v).unwrap().into()),
        };
        self.ws.send(msg).await.expect("send frame");
    }

    /// Sends a raw WebSocket message as is.
    pub async fn send_raw(&mut self, m: WsMessage) {
        self.ws.send(m).await.expect("send raw frame");
    }

    /// The next data frame, decoded; panics after [`FRAME_TIMEOUT`]. Asserts the frame kind
    /// matches the encoding (text for JSON, binary for MessagePack).
    pub async fn recv(&mut self) -> Value {
        match self.try_recv(FRAME_TIMEOUT).await {
            Some(v) => v,
            None => panic!("no frame within {FRAME_TIMEOUT:?}"),
        }
    }

    /// Waits (at most `within`) for the server to end this session because its token expired:
    /// asserts a `token_expired` error frame with a message came first, then close 4001.
    /// Other frames in between are skipped.
    pub async fn expect_token_expiry(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let mut warned = None;
        while tokio::time::Instant::now() < deadline {
            let Some(f) = self.try_recv(Duration::from_secs(5)).await else {
                continue;
            };
            if f["type"] == "__close" {
                assert_eq!(f["code"], 4001, "{f}");
                // The protocol promises the error frame before the close: it must arrive.
                let warned: Value = warned.expect("a token_expired error frame before the close");
                assert!(warned["message"].as_str().is_some_and(|m| !m.is_empty()));
                return;
            }
            if f["type"] == "error" {
                assert_eq!(f["code"], "token_expired", "{f}");
                warned = Some(f);
            }
        }
        panic!("the session was not closed within {within:?} of its token's expiry");
    }

    /// The next data frame within `wait`, or `None`.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match next {
                Some(Ok(WsMessage::Text(t))) => {
                    assert_eq!(self.enc, Enc::Json, "text frame on a MessagePack socket");
                    return Some(serde_json::from_str(&t).expect("server sent valid JSON"));
                }
                // A voice session's chunk of speech (`RKS1` header, then PCM): described.
                Some(Ok(WsMessage::Binary(b)))
                    if self.enc == Enc::Json && b.starts_with(b"RKS1") =>
                {
                    assert!(
                        b.len() >= 16 && b.len() % 2 == 0,
                        "a speech frame of {} bytes",
                        b.len()
                    );
                    let pcm: Vec<i16> = b[16..]
                        .chunks_exact(2)
                        .map(|c| i16::from_le_bytes([c[0], c[1]]))
                        .collect();
                    return Some(serde_json::json!({
                        "type": "__audio",
                        "turn": u64::from_le_bytes(b[4..12].try_into().unwrap()),
                        "seq": u32::from_le_bytes(b[12..16].try_into().unwrap()),
                        "samples": pcm.len(),
                        "peak": pcm.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0),
                    }));
                }
                Some(Ok(WsMessage::Binary(b))) => {
                    assert_eq!(self.enc, Enc::Msgpack, "binary frame on a JSON socket");
                    return Some(rmp_serde::from_slice(&b).expect("server sent valid MessagePack"));
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    return Some(serde_json::json!({
                        "type": "__close",
                        "code": frame.as_ref().map(|f| u16::from(f.code)),
                        "reason": frame.as_ref().map(|f| f.reason.to_string()),
                    }))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("websocket error: {e}"),
                None => return None,
            }
        }
    }

    /// Waits for the next frame of type `t`, skipping presence and message frames on the
    /// way; any other frame (an error, a close) fails the test.
    pub async fn recv_type(&mut self, t: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == t {
                return v;
            }
            let skippable = ["joined", "left", "presence", "message"];
            assert!(
                skippable.iter().any(|s| v["type"] == *s),
                "expected {t}, got {v}"
            );
        }
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The MessagePack subprotocol of the protocol `url` speaks: v2 on `/api/ws`, else v1.
fn msgpack_subprotocol(url: &str) -> &'static str {
    if url.contains("/api/ws") {
        "roomkeeper.v2.msgpack"
    } else {
        "roomkeeper.v1.msgpack"
    }
}

/// Repeats a refused upgrade request over plain HTTP and returns its JSON body.
async fn replay_upgrade(url: &str, enc: Enc, headers: &[(&str, &str)]) -> Value {
    let mut req = http()
        .get(url.replacen("ws://", "http://", 1))
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    if enc == Enc::Msgpack {
        req = req.header("Sec-WebSocket-Protocol", msgpack_subprotocol(url));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match req.send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// An HTTP client with no proxy and short timeouts.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client")
}

/// The local development API key (from wrangler.toml's `[vars]`).
pub const DEV_API_KEY: &str = "roomkeeper-local-dev-api-key";

/// Mints a connection token through the local dev endpoint.
pub async fn token(base: &str, body: Value) -> String {
    let r = http()
        .post(format!("{base}/api/dev/token"))
        .json(&body)
        .send()
        .await
        .expect("POST /api/dev/token");
    assert_eq!(r.status().as_u16(), 200, "dev token endpoint");
    let v: Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// The WebSocket URL of the operators' `ops` feed on the server at `http`/`ws`, with a fresh
/// operator token (`POST /api/admin/ops-token` with the dev key, which has the admin scope).
pub async fn ops_feed_url(http_base: &str, ws_base: &str) -> String {
    let r = http()
        .post(format!("{http_base}/api/admin/ops-token"))
        .bearer_auth(DEV_API_KEY)
        .send()
        .await
        .expect("POST /api/admin/ops-token");
    assert_eq!(r.status().as_u16(), 200, "ops token");
    let v: Value = r.json().await.unwrap();
    format!(
        "{ws_base}/api/rooms/ops/ws?token={}",
        v["token"].as_str().unwrap()
    )
}

/// Runs `sql` on the local D1 of a stopped server (`wrangler d1 execute --json`).
pub fn d1_execute(persist: &std::path::Path, sql: &str) -> Value {
    let out = std::process::Command::new(root().join("node_modules/.bin/wrangler"))
        .args(["d1", "execute", "DB", "--local", "--json", "--persist-to"])
        .arg(persist)
        .args(["--command", sql])
        .current_dir(root())
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CI", "true")
        .output()
        .expect("run wrangler d1 execute");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("wrangler --json output")
}

/// One count (a column named `n`) from the local D1 of a stopped server.
pub fn d1_count(persist: &std::path::Path, sql: &str) -> u64 {
    d1_execute(persist, sql)[0]["results"][0]["n"]
        .as_u64()
        .expect("a count named n")
}

/// One HTTP/1.1 request as the local stand-in servers read it ([`read_request`]).
pub struct HttpRequest {
    /// Request path.
    pub path: String,
    /// Header names (lower-case) and values.
    pub headers: Vec<(String, String)>,
    /// Body, `Content-Length` bytes of it.
    pub body: Vec<u8>,
}

/// Reads one request (request line, headers, a `Content-Length` body) from a connection of
/// a local stand-in server; `None` when the connection ends before a request line.
pub fn read_request(reader: &mut impl std::io::BufRead) -> Option<HttpRequest> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim().split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "content-length" {
                len = v.parse().unwrap_or(0);
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0u8; len];
    let _ = reader.read_exact(&mut body);
    Some(HttpRequest {
        path,
        headers,
        body,
    })
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request path.
    pub path: String,
    /// Header names (lower-case) and values.
    pub headers: Vec<(String, String)>,
    /// Body, parsed as JSON (Null if it was not JSON).
    pub body: Value,
    /// The status the receiver answered with.
    pub status: u16,
}

/// A real local HTTP server standing in for a third-party webhook receiver (Slack, say). It
/// answers 500 to the first `fail_first` requests (all of them if `None`), then 200, and
/// records every request. It runs on its own thread until the process ends.
pub struct Receiver {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Starts a receiver that fails the first `fail_first` requests (`None`: always fails).
    pub fn start(fail_first: Option<usize>) -> Self {
        use std::io::{BufReader, Write};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let shared = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(stream);
                let Some(HttpRequest {
                    path,
                    headers,
                    body,
                }) = read_request(&mut reader)
                else {
                    continue;
                };
                let mut log = shared.lock().unwrap();
                let ok = fail_first.is_some_and(|n| log.len() >= n);
                let status = if ok { 200 } else { 500 };
                log.push(Received {
                    path,
                    headers,
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    status,
                });
                drop(log);
                let mut stream = reader.into_inner();
                let reply = if ok { "ok" } else { "fail" };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} {reply}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            }
        });
        Self { url, log }
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the requests received, or panics after `wait`.
    pub async fn wait_for(
        &self,
        wait: Duration,
        pred: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "receiver never saw what was expected: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_the_repository_root() {
        let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains("name = \"roomkeeper\""),
            "{}",
            root().display()
        );
        assert!(root().join("scripts/build.sh").is_file());
        assert!(root().join("wrangler.toml").is_file());
    }
}
