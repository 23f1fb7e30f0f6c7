//! Fan-out: N subscribers in one room, P of them also publishing at a fixed rate; every
//! subscriber checks what it receives.
//!
//! The same run goes either to a Room (`/api/rooms/:room/ws`, every message persisted,
//! ordered and acknowledged) or to the raw baseline object (`/api/bench/raw/:room/ws`, which
//! only rebroadcasts). Each published body carries a sequence number and the send time, so a
//! subscriber records the delivery latency and which sequence numbers it got: loss and
//! duplicates are counted per subscriber, and for the Room the offsets must strictly increase.
//!
//! The third target is the Pusher gateway (`/app/{key}`): every connection subscribes to one
//! private channel, and the publishers send client events (`client-t`), which the gateway
//! publishes into the channel's Room and the Room delivers back through the gateway shards —
//! the whole Pusher path, compared with a Room's own sockets. A client event is not echoed to
//! its sender, so each message has one receiver fewer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::stats::{now_us, Cpu, CpuDelta, Samples};
use crate::Ctx;

/// A client WebSocket.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;
/// The sending half of one.
pub type Sink = SplitSink<WsStream, WsMessage>;

/// Where the messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A Room object: parsed, persisted, ordered, acknowledged.
    Room,
    /// The raw baseline object: rebroadcast as is.
    Raw,
    /// A Pusher channel through the gateway: client events on a private channel.
    Gateway,
    /// A peer: a room of cloudflare/workers-chat-demo (JSON, `storage.put` per message), on
    /// its own `wrangler dev` (`--chat-demo`).
    ChatDemo,
    /// A peer: a private channel on sockudo, a native Pusher server (`--sockudo`), with the
    /// gateway's client events.
    Sockudo,
}

/// The local app of `wrangler.toml`'s `PUSHER_APPS` (client events on).
const PUSHER_KEY: &str = "roomkeeper-local-key";
const PUSHER_SECRET: &str = "roomkeeper-local-secret";
/// That app as `(id, key, secret)`, for a peer Pusher server.
pub const PUSHER_APP: (&str, &str, &str) = ("1", PUSHER_KEY, PUSHER_SECRET);

impl Target {
    /// Name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Room => "Room",
            Self::Raw => "raw baseline",
            Self::Gateway => "Pusher gateway",
            Self::ChatDemo => "workers-chat-demo",
            Self::Sockudo => "sockudo",
        }
    }

    /// Receivers of one message among `subscribers` (a client event skips its sender).
    pub fn receivers(self, subscribers: usize) -> usize {
        match self {
            Self::Gateway | Self::Sockudo => subscribers.saturating_sub(1),
            _ => subscribers,
        }
    }
}

/// One fan-out run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Room or raw baseline.
    pub target: Target,
    /// Connections in the room (publishers included).
    pub subscribers: usize,
    /// How many of them publish, round-robin.
    pub publishers: usize,
    /// Messages per second offered, all publishers together.
    pub rate: f64,
    /// How long messages are offered.
    pub duration: Duration,
    /// How long to wait after the last send for the last deliveries.
    pub drain: Duration,
    /// Instead of the fixed rate: publish a set number of messages as fast as the target
    /// takes them.
    pub saturate: Option<Saturate>,
}

/// A saturated run: `messages` published one after another, with at most `window` of them
/// not yet delivered to every receiver (so the backlog stays bounded and the run measures
/// what the target sustains, not how deep a socket buffer is).
#[derive(Debug, Clone, Copy)]
pub struct Saturate {
    /// Messages to publish.
    pub messages: u64,
    /// Messages that may be in flight at once.
    pub window: u64,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Messages published.
    pub sent: u64,
    /// Deliveries that should have happened (`sent × subscribers`).
    pub expected: u64,
    /// Distinct deliveries that happened.
    pub delivered: u64,
    /// Deliveries of a message a subscriber already had.
    pub duplicates: u64,
    /// Room only: message frames whose offset did not increase.
    pub out_of_order: u64,
    /// Room only: acknowledgements received by the publishers.
    pub acks: u64,
    /// Error frames received.
    pub errors: u64,
    /// First error frame, for the report.
    pub first_error: Option<String>,
    /// WebSocket frames received (differs from deliveries when messages are batched).
    pub frames: u64,
    /// Delivery latency: send → receive, every delivery.
    pub latency: Samples,
    /// CPU over the run (first send until the last delivery or the drain timeout).
    pub cpu: CpuDelta,
    /// Time from the first send to the last delivery.
    pub active: Duration,
    /// Publishing rate actually achieved.
    pub achieved_rate: f64,
    /// Room runs: the runtime calls per message (`GET /api/rooms/:room` `calls`, their change
    /// over the run less one info request's own, divided by the messages sent).
    pub calls: Vec<(String, f64)>,
    /// Deliveries that arrived only after the drain time (late, not lost; measured by waiting
    /// up to [`LATE_WAIT`] more, outside the CPU measurement).
    pub late: u64,
}

/// How long a run that fell behind keeps waiting to tell late deliveries from lost ones.
pub const LATE_WAIT: Duration = Duration::from_secs(15);

impl Outcome {
    /// Deliveries missing.
    pub fn loss(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }

    /// Deliveries per second over the active time.
    pub fn deliveries_per_s(&self) -> f64 {
        self.delivered as f64 / self.active.as_secs_f64().max(1e-9)
    }
}

/// Per-subscriber tally.
#[derive(Default)]
struct Tally {
    seen: Vec<bool>,
    delivered: u64,
    duplicates: u64,
    out_of_order: u64,
    last_offset: u64,
    acks: u64,
    errors: u64,
    first_error: Option<String>,
    frames: u64,
    latency: Vec<u64>,
    /// `(send time, latency)` of every delivery, kept only for `BENCH_TRACE`.
    trace: Option<Vec<(u64, u64)>>,
}

#[derive(Deserialize)]
struct Stamp {
    s: u64,
    t: u64,
}

/// Any frame the bench receives; fields it does not use are skipped.
#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    body: Option<Stamp>,
    #[serde(default)]
    s: Option<u64>,
    #[serde(default)]
    t: Option<u64>,
    #[serde(default)]
    messages: Option<Vec<Incoming>>,
    #[serde(default)]
    code: Option<String>,
    /// A Pusher frame's event name.
    #[serde(default)]
    event: Option<String>,
    /// A Pusher frame's data (a JSON string on channel events).
    #[serde(default)]
    data: Option<serde_json::Value>,
    /// A workers-chat-demo message's text.
    #[serde(default)]
    message: Option<String>,
}

impl Tally {
    fn stamp(&mut self, s: u64, t: u64, now: u64, progress: &AtomicU64) {
        let Some(slot) = self.seen.get_mut(s as usize) else {
            self.errors += 1;
            return;
        };
        if *slot {
            self.duplicates += 1;
            return;
        }
        *slot = true;
        self.delivered += 1;
        self.latency.push(now.saturating_sub(t));
        if let Some(trace) = &mut self.trace {
            trace.push((t, now.saturating_sub(t)));
        }
        progress.fetch_add(1, Ordering::Relaxed);
    }

    fn frame(&mut self, f: Incoming, now: u64, progress: &AtomicU64) {
        if let Some(event) = f.event.as_deref() {
            return self.pusher_frame(event, &f, now, progress);
        }
        // workers-chat-demo: `{name, message, timestamp}`, the message a string.
        if let Some(m) = f.message.as_deref() {
            match serde_json::from_str::<Stamp>(m) {
                Ok(st) => self.stamp(st.s, st.t, now, progress),
                Err(_) => self.errors += 1,
            }
            return;
        }
        match f.kind.as_deref() {
            None => {
                if let (Some(s), Some(t)) = (f.s, f.t) {
                    self.stamp(s, t, now, progress);
                }
            }
            Some("message") => {
                if let Some(o) = f.offset {
                    if o <= self.last_offset {
                        self.out_of_order += 1;
                    }
                    self.last_offset = o;
                }
                if let Some(b) = f.body {
                    self.stamp(b.s, b.t, now, progress);
                }
            }
            Some("batch") => {
                for m in f.messages.unwrap_or_default() {
                    self.frame(m, now, progress);
                }
            }
            Some("ack") => self.acks += 1,
            Some("error") => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = f.code;
                }
            }
            Some(_) => {}
        }
    }
}

impl Tally {
    fn pusher_frame(&mut self, event: &str, f: &Incoming, now: u64, progress: &AtomicU64) {
        if event == "pusher:error" {
            self.errors += 1;
            if self.first_error.is_none() {
                self.first_error = f.data.as_ref().map(|d| d.to_string());
            }
            return;
        }
        if !event.starts_with("client-") {
            return;
        }
        if let Some(o) = f.offset {
            if o <= self.last_offset {
                self.out_of_order += 1;
            }
            self.last_offset = o;
        }
        let stamp = match &f.data {
            Some(serde_json::Value::String(s)) => serde_json::from_str::<Stamp>(s).ok(),
            Some(v) => serde_json::from_value::<Stamp>(v.clone()).ok(),
            None => None,
        };
        match stamp {
            Some(st) => self.stamp(st.s, st.t, now, progress),
            None => self.errors += 1,
        }
    }
}

/// The private channel a gateway run uses for `room`.
pub fn channel_of(room: &str) -> String {
    format!("private-{room}")
}

/// Connects to the gateway and subscribes to the run's private channel (signed as the app's
/// auth endpoint would).
async fn open_pusher(ctx: &Ctx, room: &str) -> Result<WsStream, String> {
    let url = format!(
        "{}/app/{PUSHER_KEY}?protocol=7&client=bench&version=1",
        ctx.ws
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let established = next_text(&mut ws).await?;
    let v: serde_json::Value = serde_json::from_str(&established).map_err(|e| e.to_string())?;
    let data: serde_json::Value = serde_json::from_str(v["data"].as_str().unwrap_or("{}"))
        .map_err(|e| format!("connection_established: {e}"))?;
    let socket_id = data["socket_id"]
        .as_str()
        .ok_or_else(|| format!("expected connection_established, got {established}"))?;
    let channel = channel_of(room);
    let auth = roomkeeper::pusher::sign::sign_channel(
        PUSHER_KEY,
        PUSHER_SECRET,
        socket_id,
        &channel,
        None,
    );
    let subscribe = serde_json::json!({"event": "pusher:subscribe",
        "data": {"channel": channel, "auth": auth}});
    ws.send(WsMessage::Text(subscribe.to_string().into()))
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    let answer = next_text(&mut ws).await?;
    if !answer.contains("pusher_internal:subscription_succeeded") {
        return Err(format!("expected subscription_succeeded, got {answer}"));
    }
    Ok(ws)
}

/// The next text frame (within 30 s).
async fn next_text(ws: &mut WsStream) -> Result<String, String> {
    match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        Ok(Some(Ok(WsMessage::Text(t)))) => Ok(t.to_string()),
        Ok(other) => Err(format!("expected a text frame, got {other:?}")),
        Err(_) => Err("nothing within 30 s".into()),
    }
}

/// Opens one connection (and joins, for a Room); returns the socket ready for traffic.
pub async fn open(ctx: &Ctx, target: Target, room: &str, i: usize) -> Result<WsStream, String> {
    let url = match target {
        Target::Room => format!("{}/api/rooms/{room}/ws?token={}", ctx.ws, ctx.token),
        Target::Raw => format!("{}/api/bench/raw/{room}/ws", ctx.ws),
        Target::ChatDemo => format!("{}/api/room/{room}/websocket", ctx.ws),
        Target::Gateway | Target::Sockudo => return open_pusher(ctx, room).await,
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if target == Target::Room {
        let join = format!(r#"{{"type":"join","name":"s{i}"}}"#);
        ws.send(WsMessage::Text(join.into()))
            .await
            .map_err(|e| format!("join: {e}"))?;
        welcome(&mut ws).await?;
    }
    if target == Target::ChatDemo {
        // The first frame names the user; the room answers `{"ready":true}` after any
        // `{"joined":…}` of the others.
        let hello = format!(r#"{{"name":"s{i}"}}"#);
        ws.send(WsMessage::Text(hello.into()))
            .await
            .map_err(|e| format!("name: {e}"))?;
        loop {
            let t = next_text(&mut ws).await?;
            if t.contains(r#""ready""#) {
                break;
            }
            if t.contains(r#""error""#) {
                return Err(format!("workers-chat-demo refused: {t}"));
            }
        }
    }
    Ok(ws)
}

/// Waits for the welcome frame (anything else first is an error).
pub async fn welcome(ws: &mut WsStream) -> Result<(), String> {
    let next = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .map_err(|_| "no welcome within 30 s".to_string())?;
    match next {
        Some(Ok(WsMessage::Text(t))) if t.contains(r#""type":"welcome""#) => Ok(()),
        other => Err(format!("expected welcome, got {other:?}")),
    }
}

/// Opens `n` connections, at most `parallel` at a time.
pub async fn open_many(
    ctx: &Ctx,
    target: Target,
    room: &str,
    n: usize,
    parallel: usize,
) -> Result<Vec<WsStream>, String> {
    let results: Vec<Result<WsStream, String>> = futures_util::stream::iter(0..n)
        .map(|i| open(ctx, target, room, i))
        .buffer_unordered(parallel)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn read(
    mut stream: SplitStream<WsStream>,
    mut tally: Tally,
    progress: Arc<AtomicU64>,
    last_seen: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Tally {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            next = stream.next() => {
                let Some(Ok(msg)) = next else { break };
                let WsMessage::Text(text) = msg else { continue };
                let now = now_us();
                tally.frames += 1;
                match serde_json::from_str::<Incoming>(&text) {
                    Ok(f) => tally.frame(f, now, &progress),
                    Err(_) => tally.errors += 1,
                }
                last_seen.fetch_max(now, Ordering::Relaxed);
            }
        }
    }
    tally
}

/// Connected subscribers, each with a task tallying what it receives.
pub struct Subscribers {
    readers: Vec<tokio::task::JoinHandle<Tally>>,
    progress: Arc<AtomicU64>,
    last_seen: Arc<AtomicU64>,
    stop: tokio::sync::watch::Sender<bool>,
    /// The sending halves of the first `publishers` connections.
    pub sinks: Vec<Sink>,
}

impl Subscribers {
    /// Opens `n` connections into `room`; keeps the sending half of the first `publishers`.
    /// Each subscriber can tell apart sequence numbers below `capacity`.
    pub async fn open(
        ctx: &Ctx,
        target: Target,
        room: &str,
        n: usize,
        publishers: usize,
        capacity: usize,
    ) -> Result<Self, String> {
        let sockets = open_many(ctx, target, room, n, 50).await?;
        let progress = Arc::new(AtomicU64::new(0));
        let last_seen = Arc::new(AtomicU64::new(0));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut sinks = Vec::new();
        let mut readers = Vec::new();
        for (i, ws) in sockets.into_iter().enumerate() {
            let (sink, stream) = ws.split();
            if i < publishers {
                sinks.push(sink);
            }
            let tally = Tally {
                seen: vec![false; capacity],
                trace: std::env::var_os("BENCH_TRACE").map(|_| Vec::new()),
                ..Tally::default()
            };
            readers.push(tokio::spawn(read(
                stream,
                tally,
                Arc::clone(&progress),
                Arc::clone(&last_seen),
                stop_rx.clone(),
            )));
        }
        Ok(Self {
            readers,
            progress,
            last_seen,
            stop,
            sinks,
        })
    }

    /// Waits until `expected` deliveries happened or `drain` passed.
    pub async fn wait(&self, expected: u64, drain: Duration) {
        let deadline = tokio::time::Instant::now() + drain;
        while self.progress.load(Ordering::Relaxed) < expected
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Deliveries so far.
    pub fn delivered(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// When the last message frame arrived, µs on the [`now_us`] clock.
    pub fn last_seen(&self) -> u64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// Stops the readers, closes the connections and adds up their tallies into `out`.
    pub async fn finish(self, out: &mut Outcome) -> Result<(), String> {
        self.stop.send(true).ok();
        for (i, r) in self.readers.into_iter().enumerate() {
            let t = r.await.map_err(|e| format!("reader: {e}"))?;
            if let (0, Some(trace), Ok(path)) = (i, &t.trace, std::env::var("BENCH_TRACE")) {
                // Debugging aid: one subscriber's deliveries over time, as CSV.
                let csv: String = trace.iter().map(|(t, l)| format!("{t},{l}\n")).collect();
                let _ = std::fs::write(path, csv);
            }
            out.delivered += t.delivered;
            out.duplicates += t.duplicates;
            out.out_of_order += t.out_of_order;
            out.acks += t.acks;
            out.errors += t.errors;
            out.frames += t.frames;
            if out.first_error.is_none() {
                out.first_error = t.first_error;
            }
            out.latency.0.extend(t.latency);
        }
        for mut s in self.sinks {
            let _ = s.close().await;
        }
        Ok(())
    }
}

impl Outcome {
    /// An outcome before the subscribers' tallies are added.
    pub fn new(sent: u64, expected: u64, cpu: CpuDelta, active: Duration, rate: f64) -> Self {
        Self {
            sent,
            expected,
            delivered: 0,
            duplicates: 0,
            out_of_order: 0,
            acks: 0,
            errors: 0,
            first_error: None,
            frames: 0,
            latency: Samples::default(),
            cpu,
            active,
            achieved_rate: rate,
            calls: Vec::new(),
            late: 0,
        }
    }
}

/// The runtime call counts of the isolate (`calls` of `GET /api/rooms/:room`; a gateway run
/// asks a room of its own, as the counts are the isolate's); `None` for other targets.
async fn room_calls(
    ctx: &Ctx,
    target: Target,
    room: &str,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let room = match target {
        Target::Room => room.to_string(),
        Target::Gateway => format!("calls-{}", ctx.run),
        _ => return None,
    };
    let r = ctx
        .http_client
        .get(format!("{}/api/rooms/{room}", ctx.http))
        .bearer_auth(crate::api::API_KEY)
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    v.get("calls")?.as_object().cloned()
}

/// Runs one fan-out measurement on fresh connections in a fresh room.
pub async fn run(ctx: &Ctx, spec: &Spec) -> Result<Outcome, String> {
    let room = ctx.room(match spec.target {
        Target::Room => "fan",
        Target::Raw => "raw",
        Target::Gateway => "gw",
        Target::ChatDemo => "chat",
        Target::Sockudo => "sk",
    });
    let capacity = match spec.saturate {
        Some(sat) => sat.messages as usize + 8,
        None => (spec.rate * spec.duration.as_secs_f64() * 1.05) as usize + 8,
    };
    let mut subs = Subscribers::open(
        ctx,
        spec.target,
        &room,
        spec.subscribers,
        spec.publishers,
        capacity,
    )
    .await?;
    // Let the joins settle before measuring anything.
    ctx.settle().await;
    let calls0 = room_calls(ctx, spec.target, &room).await;
    let receivers = spec.target.receivers(spec.subscribers) as u64;
    let cpu0 = Cpu::now(&ctx.workerd);
    let start = tokio::time::Instant::now();
    let first_send = now_us();
    let interval = Duration::from_secs_f64(1.0 / spec.rate);
    let mut sent: u64 = 0;
    while (sent as usize) < capacity - 8 {
        match spec.saturate {
            Some(sat) => {
                // Wait while `window` messages are not yet everywhere (bounded: a stalled
                // target ends the run after the drain time).
                let deadline = tokio::time::Instant::now() + spec.drain;
                while sent * receivers > subs.delivered() + sat.window * receivers
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            None => {
                let due = start + interval * sent as u32;
                if due.duration_since(start) >= spec.duration {
                    break;
                }
                tokio::time::sleep_until(due).await;
            }
        }
        let t = now_us();
        let text = match spec.target {
            Target::Room => {
                format!(r#"{{"type":"publish","body":{{"s":{sent},"t":{t}}},"id":"p{sent}"}}"#)
            }
            Target::Raw => format!(r#"{{"s":{sent},"t":{t}}}"#),
            // Its message is a string (at most 256 characters): the stamp as JSON text.
            Target::ChatDemo => {
                serde_json::json!({"message": format!(r#"{{"s":{sent},"t":{t}}}"#)}).to_string()
            }
            Target::Gateway | Target::Sockudo => serde_json::json!({"event": "client-t",
                "channel": channel_of(&room), "data": {"s": sent, "t": t}})
            .to_string(),
        };
        let n = subs.sinks.len();
        subs.sinks[sent as usize % n]
            .send(WsMessage::Text(text.into()))
            .await
            .map_err(|e| format!("publish: {e}"))?;
        sent += 1;
    }
    let sending = start.elapsed();
    let expected = sent * receivers;
    subs.wait(expected, spec.drain).await;
    let cpu = cpu0.since(&ctx.workerd);
    let active = Duration::from_micros(subs.last_seen().max(first_send) - first_send);
    let on_time = subs.delivered();
    if on_time < expected {
        subs.wait(expected, LATE_WAIT).await;
    }
    let rate = sent as f64 / sending.as_secs_f64().max(1e-9);
    let mut out = Outcome::new(sent, expected, cpu, active, rate);
    if let Some(c0) = calls0 {
        let c1 = room_calls(ctx, spec.target, &room)
            .await
            .unwrap_or_default();
        let c2 = room_calls(ctx, spec.target, &room)
            .await
            .unwrap_or_default();
        out.calls = roomkeeper::probe::NAMES
            .iter()
            .map(|&name| {
                let at = |c: &serde_json::Map<String, serde_json::Value>| {
                    c.get(name).and_then(|v| v.as_f64()).unwrap_or(f64::NAN)
                };
                let v0 = at(&c0);
                // Less the info request's own calls (measured by a second one right after).
                let run = (at(&c1) - v0) - (at(&c2) - at(&c1));
                (name.to_string(), run / sent.max(1) as f64)
            })
            .collect();
    }
    subs.finish(&mut out).await?;
    out.late = out.delivered.saturating_sub(on_time);
    Ok(out)
}
