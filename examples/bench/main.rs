//! Roomkeeper's load generator: benchmark scenarios against real local workerd, each printing
//! a markdown table row (see `BENCHMARKS.md` for the figures and what they mean).
//!
//! ```text
//! cargo run --release --example bench -- [--only fanout,gateway,saturation,storm,http,limiter,locks,memory,voice,speaking,batch]
//!                                        [--full] [--via-proxy] [--out FILE]
//! ```
//!
//! It starts its own `wrangler dev` on a fresh state directory (the Worker must be built:
//! `scripts/bench.sh` does both) with settings that let one connection publish as fast as the
//! scenario asks (`ROOM_PUBLISH_RATE`) and rate-limit policies that never refuse the load
//! generator. Traffic goes to 127.0.0.1 only, and every loop is bounded in count and time.
//!
//! # Layout
//!
//! - `fanout`: subscribers that tally every delivery; fixed-rate and saturation runs against a
//!   Room or the raw baseline object.
//! - `conns`: connect storm and memory per idle connection.
//! - `api`: HTTP broadcast, rate-limit checks, lock round trips.
//! - `voice`: concurrent voice sessions streaming real-time audio; VAD latency.
//! - `speaking`: the voice-to-voice latency Roomkeeper adds, with a provider that answers at
//!   once, at 1 and 100 sessions.
//! - `stats`: percentiles, CPU snapshots, tables.
//! - `roomkeeper_testkit::workerd` (shared with the end-to-end tests): finding and measuring
//!   workerd processes; `roomkeeper_testkit::harness` for the server's ports and tokens.
//!
//! Server CPU is the workerd runtime's utime + stime (`/proc/<pid>/stat`) over a run, divided
//! by the deliveries (or requests) of that run. By default the load generator talks to the
//! runtime's own loopback port, bypassing the proxy `wrangler dev` puts in front of it (there
//! is no such proxy in production); `--via-proxy` goes through the proxy instead.

mod api;
mod conns;
mod fanout;
mod server;
mod speaking;
mod stats;
mod voice;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fanout::{Outcome, Saturate, Spec, Target};
use roomkeeper_testkit::{harness, workerd};
use stats::{thousands, Table};

/// Settings of the bench server: a connection may publish as fast as a scenario offers, and
/// the router's rate limits never refuse the load generator.
const BENCH_VARS: &[(&str, &str)] = &[
    ("ROOM_PUBLISH_RATE", "10000"),
    ("ROOM_PUBLISH_BURST", "10000"),
    // The bench measures what a room sustains: no per-user or per-room ceiling in the way
    // (every bench connection is the same user, `bench`).
    ("ROOM_PUBLISH_USER_RATE", "0"),
    ("ROOM_PUBLISH_ROOM_RATE", "0"),
    // The gateway scenario's publishers send client events as fast as it offers (its shard
    // count is `--shards`, one by default).
    ("PUSHER_CLIENT_EVENTS_PER_SECOND", "10000"),
    (
        "LIMIT_POLICIES",
        r#"{"connect":{"rate":1000000,"period_ms":1000,"burst":1000000},"api":{"rate":1000000,"period_ms":1000,"burst":1000000}}"#,
    ),
];

/// What every scenario needs.
pub struct Ctx {
    /// `http://127.0.0.1:PORT` (the runtime's own port unless `--via-proxy`).
    pub http: String,
    /// `ws://127.0.0.1:PORT`.
    pub ws: String,
    /// The server's workerd processes.
    pub workerd: workerd::Workerd,
    /// A connection token for user `bench` in every room, permissions publish + subscribe
    /// (no presence, so a thousand joins do not become a million presence frames).
    pub token: String,
    /// Keeps room, key and lock names of this run apart from earlier runs.
    pub run: String,
    /// HTTP client for the API scenarios.
    pub http_client: reqwest::Client,
    /// How long [`Ctx::settle`] waits for the rest of the machine to be quiet.
    pub quiet_wait: Duration,
}

impl Ctx {
    /// A fresh name for a room, key or lock.
    pub fn room(&self, tag: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        format!("{tag}-{}-{}", self.run, N.fetch_add(1, Ordering::Relaxed))
    }

    /// Waits until the runtime is idle (under 2.5 % of a core over 300 ms, so a run does not
    /// pay for the previous one's closing connections) and, for up to `quiet_wait` more, until
    /// the rest of the machine is quiet too (under 25 % of a core): the cores are shared.
    pub async fn settle(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let quiet_deadline = deadline + self.quiet_wait;
        while tokio::time::Instant::now() < quiet_deadline {
            let c = stats::Cpu::now(&self.workerd);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let d = c.since(&self.workerd);
            let idle = d.runtime_us < 7_500;
            if idle && (d.other_share() < 0.25 || tokio::time::Instant::now() > deadline) {
                return;
            }
        }
    }
}

struct Args {
    only: Option<Vec<String>>,
    sizes: Option<Vec<usize>>,
    rate: Option<f64>,
    windows: Option<Vec<u64>>,
    /// `PUSHER_GATEWAY_SHARDS` of the bench server (default 1).
    shards: Option<String>,
    /// Alternating pairs per size in the `single` scenario (default: 3 at 100, else 1).
    pairs: Option<usize>,
    /// An unpacked cloudflare/workers-chat-demo snapshot (the `peers` scenario).
    chat_demo: Option<std::path::PathBuf>,
    /// The sockudo binary (the `peers` scenario; default `.tools/sockudo/bin/sockudo`).
    sockudo: Option<std::path::PathBuf>,
    /// Extra settings (`--var NAME=VALUE`) of the main bench server.
    vars: Vec<(String, String)>,
    full: bool,
    via_proxy: bool,
    out: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        only: None,
        sizes: None,
        rate: None,
        windows: None,
        shards: None,
        pairs: None,
        chat_demo: None,
        sockudo: None,
        vars: Vec::new(),
        full: false,
        via_proxy: false,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--only" => {
                a.only = it
                    .next()
                    .map(|s| s.split(',').map(str::to_string).collect())
            }
            "--sizes" => {
                a.sizes = it
                    .next()
                    .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
            }
            "--rate" => a.rate = it.next().and_then(|r| r.parse().ok()),
            "--chat-demo" => a.chat_demo = it.next().map(Into::into),
            "--sockudo" => a.sockudo = it.next().map(Into::into),
            "--pairs" => a.pairs = it.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0),
            "--shards" => a.shards = it.next().filter(|n| n.parse::<u32>().is_ok()),
            "--windows" => {
                a.windows = it
                    .next()
                    .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
            }
            "--var" => match it.next().as_deref().and_then(|v| v.split_once('=')) {
                Some((k, v)) => a.vars.push((k.to_string(), v.to_string())),
                None => {
                    eprintln!("--var takes NAME=VALUE\n{}", include_str!("usage.txt"));
                    std::process::exit(2);
                }
            },
            "--full" => a.full = true,
            "--quick" => a.full = false,
            "--via-proxy" => a.via_proxy = true,
            "--no-inspector" => {
                server::INSPECTOR.store(false, std::sync::atomic::Ordering::Relaxed)
            }
            "--out" => a.out = it.next(),
            "--help" | "-h" => {
                println!("{}", include_str!("usage.txt"));
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown argument {other}\n{}", include_str!("usage.txt"));
                std::process::exit(2);
            }
        }
    }
    a
}

fn wanted(a: &Args, name: &str) -> bool {
    a.only.as_ref().is_none_or(|o| o.iter().any(|s| s == name))
}

/// Starts a bench server with extra settings and builds the context for it.
async fn start(extra: &[(&str, &str)], via_proxy: bool, full: bool) -> (server::Server, Ctx) {
    let mut vars = BENCH_VARS.to_vec();
    vars.extend_from_slice(extra);
    let server = server::Server::start(&vars);
    let w = workerd::wait_find(server.port, Duration::from_secs(20))
        .expect("find the workerd processes of the bench server");
    let port = match (via_proxy, w.direct_port) {
        (false, Some(p)) => p,
        _ => server.port,
    };
    let http = format!("http://127.0.0.1:{port}");
    let token = harness::token(
        &http,
        serde_json::json!({"sub": "bench", "rooms": ["*"], "perms": ["publish", "subscribe"], "ttl_s": 7200}),
    )
    .await;
    let ctx = Ctx {
        ws: format!("ws://127.0.0.1:{port}"),
        http,
        workerd: w,
        token,
        run: format!("{:x}", std::process::id()),
        http_client: reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client"),
        quiet_wait: Duration::from_secs(if full { 30 } else { 5 }),
    };
    println!(
        "bench server {vars:?}: {} (workerd runtime pid {}, proxy pid {}, {})",
        ctx.http,
        ctx.workerd.runtime,
        ctx.workerd.proxy,
        if ctx.http.ends_with(&format!(":{}", server.port)) {
            "through wrangler's proxy"
        } else {
            "direct to the runtime"
        }
    );
    (server, ctx)
}

fn fanout_row(t: &mut Table, spec: &Spec, o: &mut Outcome, note: &str) {
    t.row(vec![
        spec.target.name().into(),
        spec.subscribers.to_string(),
        format!("{:.0}", o.achieved_rate),
        thousands(o.delivered as f64),
        thousands(o.deliveries_per_s()),
        o.latency.cell(),
        format!("{} / {}", o.loss(), o.duplicates),
        format!(
            "{:.2} ({:.0} % sys)",
            o.cpu.per(o.delivered),
            o.cpu.runtime_sys_us as f64 * 100.0 / o.cpu.runtime_us.max(1) as f64
        ),
        format!("{:.0} %", o.cpu.runtime_share() * 100.0),
        format!("{:.2}", o.cpu.me_us as f64 / o.delivered.max(1) as f64),
        note.into(),
    ]);
}

fn check(o: &Outcome) -> String {
    let mut notes = Vec::new();
    if o.late > 0 {
        notes.push(format!("{} deliveries later than the drain time", o.late));
    }
    if o.cpu.proxy_us * 20 > o.cpu.runtime_us && o.sent > 0 {
        notes.push(format!(
            "wrangler proxy {:.1} µs/delivery more",
            o.cpu.proxy_us as f64 / o.delivered.max(1) as f64
        ));
    }
    if o.cpu.other_share() > 0.05 {
        notes.push(format!(
            "other load {:.0} % of a core",
            o.cpu.other_share() * 100.0
        ));
    }
    if o.out_of_order > 0 {
        notes.push(format!("{} out of order", o.out_of_order));
    }
    if o.errors > 0 {
        notes.push(format!(
            "{} errors ({})",
            o.errors,
            o.first_error.as_deref().unwrap_or("?")
        ));
    }
    notes.join("; ")
}

/// A fan-out row's notes: [`check`]'s, after "saturated" for a saturated run.
fn run_note(spec: &Spec, o: &Outcome) -> String {
    let note = check(o);
    match (spec.saturate, note.is_empty()) {
        (None, _) => note,
        (Some(_), true) => "saturated".into(),
        (Some(_), false) => format!("saturated; {note}"),
    }
}

const FANOUT_COLUMNS: &[&str] = &[
    "target",
    "subscribers",
    "msgs/s",
    "deliveries",
    "deliveries/s",
    "latency p50 / p99 / max (ms)",
    "loss / dup",
    "server CPU µs/delivery",
    "workerd core use",
    "loadgen CPU µs/delivery",
    "notes",
];

/// Columns of a runtime-calls table (`roomkeeper::probe::NAMES`, per message).
const CALLS_COLUMNS: &[&str] = &[
    "target",
    "subscribers",
    "msgs/s",
    "events",
    "SQL statements",
    "sends",
    "frames to JS",
    "attachment reads",
    "attachment writes",
    "background tasks",
    "internal calls",
    "shard calls",
    "frames per shard call",
];

/// The sizes of a scenario that `--sizes` keeps, each with its rate (or `--rate`).
fn chosen(a: &Args, sizes: &[(usize, f64)]) -> Vec<(usize, f64)> {
    sizes
        .iter()
        .filter(|(n, _)| a.sizes.as_ref().is_none_or(|s| s.contains(n)))
        .map(|&(n, rate)| (n, a.rate.unwrap_or(rate)))
        .collect()
}

/// Columns of a ratio table; `subject` and `base` head the two CPU columns.
fn ratio_columns(subject: &'static str, base: &'static str) -> Vec<&'static str> {
    vec![
        "subscribers",
        "msgs/s",
        "pairs",
        subject,
        base,
        "ratio (each pair)",
        "median ratio",
        "target",
    ]
}

/// Fixed-rate runs of two targets on the same server, alternating (base first, then subject
/// first, …) so that slow drift in the machine's background load favours neither; the ratio
/// of server CPU per delivery is taken per pair, and its median reported.
struct Pairs {
    base: Target,
    subject: Target,
    subscribers: usize,
    /// Connections that publish, round-robin.
    publishers: usize,
    rate: f64,
    /// Saturated runs instead of the fixed rate.
    saturate: Option<Saturate>,
    pairs: usize,
    duration: Duration,
}

impl Pairs {
    /// The pace column: the fixed rate, or the saturated run's message count.
    fn pace(&self) -> String {
        match self.saturate {
            Some(sat) => format!("saturated ({} msgs)", sat.messages),
            None => format!("{:.0}", self.rate),
        }
    }

    /// Runs the pairs into `runs` (every run) and `ratio` (the pairs' ratios); `calls`, if
    /// given, gets the subject's runtime calls per message of every run.
    async fn run(
        &self,
        ctx: &Ctx,
        runs: &mut Table,
        ratio: &mut Table,
        mut calls: Option<&mut Table>,
        goal: &str,
    ) {
        let n = self.subscribers;
        // One unmeasured run of each target first: the first runs on a fresh server also pay
        // for compiling the code they reach (V8 tiers Wasm up as it runs), which would favour
        // whichever target goes second.
        for target in [self.base, self.subject] {
            let warm = Spec {
                target,
                // Compiling is what it is for: a room of at most 100 is enough.
                subscribers: n.min(100),
                publishers: self.publishers.min(n.min(100)),
                rate: self.rate,
                duration: Duration::from_secs(1),
                drain: Duration::from_secs(5),
                saturate: Some(Saturate {
                    messages: 200,
                    window: 32,
                }),
            };
            let _ = fanout::run(ctx, &warm).await;
        }
        let (mut subject, mut base, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for p in 0..self.pairs {
            let order = if p % 2 == 0 {
                [self.base, self.subject]
            } else {
                [self.subject, self.base]
            };
            let mut per = [f64::NAN; 2];
            for target in order {
                let spec = Spec {
                    target,
                    subscribers: n,
                    publishers: self.publishers,
                    rate: self.rate,
                    duration: self.duration,
                    drain: Duration::from_secs(5),
                    saturate: self.saturate,
                };
                let k = usize::from(target == self.subject);
                match fanout::run(ctx, &spec).await {
                    Ok(mut o) => {
                        per[k] = o.cpu.per(o.delivered);
                        if let (Some(t), false) = (calls.as_deref_mut(), o.calls.is_empty()) {
                            let mut row = vec![target.name().into(), n.to_string(), self.pace()];
                            let v: Vec<f64> = o.calls.iter().map(|(_, v)| *v).collect();
                            row.extend(v[..v.len() - 1].iter().map(|x| format!("{x:.2}")));
                            // The last two: shard calls per message, frames per shard call.
                            let (calls, frames) = (v[v.len() - 2], v[v.len() - 1]);
                            row.push(if calls > 0.0 {
                                format!("{:.2}", frames / calls)
                            } else {
                                "—".into()
                            });
                            t.row(row);
                        }
                        let note = run_note(&spec, &o);
                        fanout_row(runs, &spec, &mut o, &note);
                    }
                    Err(e) => runs.row(vec![
                        target.name().into(),
                        n.to_string(),
                        format!("failed: {e}"),
                    ]),
                }
            }
            base.push(format!("{:.1}", per[0]));
            subject.push(format!("{:.1}", per[1]));
            ratios.push(per[1] / per[0]);
        }
        let cells: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        ratios.sort_by(|a, b| a.total_cmp(b));
        ratio.row(vec![
            n.to_string(),
            self.pace(),
            self.pairs.to_string(),
            subject.join(", "),
            base.join(", "),
            cells.join(", "),
            format!("**{:.2}×**", ratios[ratios.len() / 2]),
            goal.into(),
        ]);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let started = std::time::Instant::now();
    let a = args();
    let secs = |quick: u64, full: u64| Duration::from_secs(if a.full { full } else { quick });
    let main_set = [
        "fanout",
        "single",
        "gateway",
        "saturation",
        "storm",
        "health",
        "http",
        "limiter",
        "locks",
        "memory",
        "voice",
        "peers",
    ];
    let (server, ctx) = if main_set.iter().any(|s| wanted(&a, s)) {
        let mut vars = vec![("PUSHER_GATEWAY_SHARDS", a.shards.as_deref().unwrap_or("1"))];
        vars.extend(a.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let (server, ctx) = start(&vars, a.via_proxy, a.full).await;
        (Some(server), Some(ctx))
    } else {
        (None, None)
    };
    let mut tables: Vec<Table> = Vec::new();

    if let (true, Some(ctx)) = (wanted(&a, "fanout"), &ctx) {
        let mut t = Table::new("Fan-out, fixed rate", FANOUT_COLUMNS);
        let mut ratio = Table::new(
            "Room vs raw baseline, server CPU per delivery (alternating runs, same server)",
            &ratio_columns("Room µs (each run)", "raw µs (each run)"),
        );
        // The quick set: rooms of 10 and 100; `--full` (or `--sizes`) also 1,000.
        let sizes: &[(usize, f64)] = if a.full || a.sizes.is_some() {
            &[(10, 200.0), (100, 200.0), (1000, 20.0)]
        } else {
            &[(10, 200.0), (100, 200.0)]
        };
        let pairs = |n: usize| if n == 100 || a.full { 3 } else { 1 };
        let goal = |n: usize| if n == 100 { "≤ 1.15×" } else { "—" };
        for (n, rate) in chosen(&a, sizes) {
            let runs = Pairs {
                base: Target::Raw,
                subject: Target::Room,
                subscribers: n,
                publishers: n.min(10),
                rate,
                saturate: None,
                pairs: pairs(n),
                duration: secs(5, 20),
            };
            runs.run(ctx, &mut t, &mut ratio, None, goal(n)).await;
        }
        tables.push(t);
        tables.push(ratio);
    }

    if let (true, Some(ctx)) = (wanted(&a, "single"), &ctx) {
        // The per-message path: one publisher, so every message is its own event with no
        // other publisher's wake-ups to share; saturated (as fast as the room takes it) and at
        // a fixed rate, beside the raw object.
        let mut t = Table::new(
            "One publisher: saturated and fixed rate, Room and raw baseline",
            FANOUT_COLUMNS,
        );
        let mut ratio = Table::new(
            "One publisher: Room vs raw baseline, server CPU per delivery (alternating runs, same server)",
            &ratio_columns("Room µs (each run)", "raw µs (each run)"),
        );
        let mut calls = Table::new(
            "One publisher: the Room's runtime calls per message (GET /api/rooms/:room `calls`, the isolate's)",
            CALLS_COLUMNS,
        );
        // The quick set: 100 subscribers, one pair per pace; `--full` (or `--sizes`) all three.
        let sizes: &[(usize, f64)] = if a.full || a.sizes.is_some() {
            &[(10, 200.0), (100, 200.0), (1000, 20.0)]
        } else {
            &[(100, 200.0)]
        };
        let quick_pairs = if a.full || a.sizes.is_some() { 3 } else { 1 };
        for (n, rate) in chosen(&a, sizes) {
            // Saturated: 1,000 messages (100 into 1,000 subscribers), at most 32 in flight.
            let messages = if n >= 1000 { 100 } else { 1000 };
            let paces = [
                Some(Saturate {
                    messages,
                    window: 32,
                }),
                None,
            ];
            for saturate in paces {
                let runs = Pairs {
                    base: Target::Raw,
                    subject: Target::Room,
                    subscribers: n,
                    publishers: 1,
                    rate,
                    saturate,
                    pairs: a.pairs.unwrap_or(if n == 100 { quick_pairs } else { 1 }),
                    duration: secs(5, 10),
                };
                let goal = if n == 100 { "≤ 1.15×" } else { "—" };
                runs.run(ctx, &mut t, &mut ratio, Some(&mut calls), goal)
                    .await;
            }
        }
        tables.push(t);
        tables.push(ratio);
        tables.push(calls);
    }

    if let (true, Some(ctx)) = (wanted(&a, "gateway"), &ctx) {
        let shards = a.shards.as_deref().unwrap_or("1");
        let mut t = Table::new(
            format!("Pusher gateway (client events on one private channel, {shards} shard(s)) and the Room's own sockets, fixed rate"),
            FANOUT_COLUMNS,
        );
        let mut ratio = Table::new(
            format!("Pusher gateway ({shards} shard(s)) vs direct Room, server CPU per delivery (alternating runs, same server)"),
            &ratio_columns("gateway µs (each run)", "Room µs (each run)"),
        );
        let mut calls = Table::new(
            format!("Pusher gateway ({shards} shard(s)): runtime calls per client event (the isolate's `calls`)"),
            CALLS_COLUMNS,
        );
        // The quick set: 100 subscribers; `--full` (or `--sizes`) also 1,000 and 2,000.
        let sizes: &[(usize, f64)] = if a.full || a.sizes.is_some() {
            &[(100, 200.0), (1000, 20.0), (2000, 10.0)]
        } else {
            &[(100, 200.0)]
        };
        for (n, rate) in chosen(&a, sizes) {
            let runs = Pairs {
                base: Target::Room,
                subject: Target::Gateway,
                subscribers: n,
                publishers: n.min(10),
                rate,
                saturate: None,
                pairs: 3,
                duration: secs(3, 20),
            };
            let goal = if n == 100 { "≤ 1.3×" } else { "—" };
            runs.run(ctx, &mut t, &mut ratio, Some(&mut calls), goal)
                .await;
        }
        tables.push(t);
        tables.push(ratio);
        tables.push(calls);
    }

    // Peers need someone else's code or binary: only when asked for (`--only peers`, a path,
    // or `--full`), so the quick set stays quick.
    let asked = a.only.is_some() || a.chat_demo.is_some() || a.sockudo.is_some() || a.full;
    if let (true, true, Some(ctx)) = (wanted(&a, "peers"), asked, &ctx) {
        peers(&a, ctx, &mut tables).await;
    }

    if let (true, Some(ctx)) = (wanted(&a, "saturation"), &ctx) {
        let mut t = Table::new(
            "Fan-out saturation (highest step with zero loss and p99 ≤ 100 ms; steps ×1.5)",
            &[
                "target",
                "subscribers",
                "msgs/s offered → sent",
                "deliveries/s",
                "latency p50 / p99 / max (ms)",
                "loss (late)",
                "server CPU µs/delivery",
                "workerd core use",
                "sustained",
                "other load",
            ],
        );
        // The quick set saturates a room of 100; `--full` (or `--sizes`) also 10 and 1,000.
        let sizes = a.sizes.clone().unwrap_or_else(|| {
            if a.full {
                vec![10, 100, 1000]
            } else {
                vec![100]
            }
        });
        for (target, subscribers) in sizes
            .iter()
            .flat_map(|&n| [(Target::Raw, n), (Target::Room, n)])
        {
            // First step: 5,000 deliveries/s into 10 (a Room's cost is per message there),
            // 20,000 into 100, 10,000 into 1,000.
            let mut rate = match subscribers {
                0..=10 => 500.0,
                11..=100 => 200.0,
                n => 10_000.0 / n as f64,
            };
            for _ in 0..if a.full { 8 } else { 5 } {
                let spec = Spec {
                    target,
                    subscribers,
                    publishers: subscribers.min(10),
                    rate,
                    duration: secs(3, 6),
                    drain: Duration::from_secs(3),
                    saturate: None,
                };
                let Ok(mut o) = fanout::run(ctx, &spec).await else {
                    break;
                };
                let p99 = o.latency.ms(0.99);
                let ok =
                    o.loss() == 0 && o.late == 0 && p99 <= 100.0 && o.achieved_rate >= rate * 0.95;
                t.row(vec![
                    target.name().into(),
                    subscribers.to_string(),
                    format!("{rate:.0} → {:.0}", o.achieved_rate),
                    thousands(o.deliveries_per_s()),
                    o.latency.cell(),
                    format!("{} ({} late)", o.loss(), o.late),
                    format!("{:.2}", o.cpu.per(o.delivered)),
                    format!("{:.0} %", o.cpu.runtime_share() * 100.0),
                    if ok { "yes".into() } else { "**no**".into() },
                    other(&o.cpu),
                ]);
                if !ok {
                    break;
                }
                rate *= 1.5;
            }
        }
        tables.push(t);
    }

    if let (true, Some(ctx)) = (wanted(&a, "storm"), &ctx) {
        let mut t = Table::new(
            "Connect storm (connect, join, welcome)",
            &[
                "connections",
                "parallel",
                "presence",
                "connects/s",
                "time to welcome p50 / p99 / max (ms)",
                "failed",
                "server CPU ms/connect",
                "other load",
            ],
        );
        for (n, parallel, anonymous) in [(1000usize, 50usize, false), (200, 50, true)] {
            ctx.settle().await;
            let mut s = conns::storm(ctx, n, parallel, anonymous).await;
            t.row(vec![
                n.to_string(),
                parallel.to_string(),
                if anonymous {
                    "yes (anonymous: every join announced to all)".into()
                } else {
                    "no (token without presence)".into()
                },
                format!("{:.0}", s.ok as f64 / s.wall.as_secs_f64()),
                s.to_welcome.cell(),
                match &s.first_failure {
                    Some(f) => format!("{} ({f})", s.failed),
                    None => "0".into(),
                },
                format!("{:.2}", s.cpu.per(s.ok as u64) / 1000.0),
                other(&s.cpu),
            ]);
        }
        tables.push(t);
    }

    if let (true, Some(ctx)) = (wanted(&a, "http"), &ctx) {
        let mut t = Table::new(
            "HTTP broadcast (POST /api/rooms/:room/broadcast, 10 subscribers)",
            &[
                "clients",
                "requests/s",
                "request p50 / p99 / max (ms)",
                "to delivery p50 / p99 / max (ms)",
                "loss / dup",
                "failed",
                "server CPU µs/request",
                "other load",
            ],
        );
        ctx.settle().await;
        match api::http_broadcast(ctx, 10, 8, secs(5, 15), 50_000).await {
            Ok((mut o, mut l)) => t.row(vec![
                "8".into(),
                format!("{:.0}", l.per_s()),
                l.latency.cell(),
                o.latency.cell(),
                format!("{} / {}", o.loss(), o.duplicates),
                l.failed.to_string(),
                format!("{:.0}", o.cpu.per(l.ok)),
                other(&o.cpu),
            ]),
            Err(e) => t.row(vec![format!("failed: {e}")]),
        }
        tables.push(t);
    }

    if let (true, Some(ctx)) = (wanted(&a, "health"), &ctx) {
        let mut t = Table::new(
            "Router floor: a minimal workers-rs route and GET /health (no object, no API key)",
            &[
                "route",
                "clients",
                "requests/s",
                "p50 / p99 / max (ms)",
                "failed",
                "server CPU µs/request",
                "other load",
            ],
        );
        for (name, path) in [
            ("minimal route (`/api/bench/floor`)", "/api/bench/floor"),
            ("`GET /health`", "/health"),
        ] {
            ctx.settle().await;
            let mut l = api::get(ctx, path, 16, secs(5, 15)).await;
            t.row(vec![
                name.into(),
                "16".into(),
                format!("{:.0}", l.per_s()),
                l.latency.cell(),
                failed(&l),
                format!("{:.0}", l.cpu.per(l.ok)),
                other(&l.cpu),
            ]);
        }
        tables.push(t);
    }

    if let (true, Some(ctx)) = (wanted(&a, "limiter"), &ctx) {
        let mut t = Table::new(
            "Rate-limit checks (POST /api/limits/api/:key)",
            &[
                "keys",
                "clients",
                "checks/s",
                "p50 / p99 / max (ms)",
                "failed",
                "server CPU µs/check",
                "target",
                "other load",
            ],
        );
        for contended in [false, true] {
            ctx.settle().await;
            let mut l = api::limiter(ctx, 16, secs(5, 15), contended).await;
            t.row(vec![
                if contended {
                    "one (contended)"
                } else {
                    "one per client"
                }
                .into(),
                "16".into(),
                format!("{:.0}", l.per_s()),
                l.latency.cell(),
                failed(&l),
                format!("{:.0}", l.cpu.per(l.ok)),
                "≥ 2,000 checks/s".into(),
                other(&l.cpu),
            ]);
        }
        tables.push(t);
    }

    if let (true, Some(ctx)) = (wanted(&a, "locks"), &ctx) {
        // Where one uncontended lock request's latency goes: the same client, one request at
        // a time, on each layer under it — the minimal route, the router alone, a router
        // request into an object that commits (a limit check), then the lock cycle.
        let mut floor = Table::new(
            "One client, one request at a time: the layers under a lock request",
            &[
                "request",
                "requests",
                "p50 / p99 / max (ms)",
                "failed",
                "server CPU µs/request",
                "other load",
                "target",
            ],
        );
        // The layers under it only when asked for (`--only locks`) or with `--full`: the
        // quick set stays under 5 minutes.
        let layers: &[(&str, Option<&str>)] = if a.full || a.only.is_some() {
            &[
                (
                    "minimal route (`/api/bench/floor`)",
                    Some("/api/bench/floor"),
                ),
                ("`GET /health`", Some("/health")),
                ("rate-limit check (object call + commit)", None),
            ]
        } else {
            &[]
        };
        for &(name, path) in layers {
            ctx.settle().await;
            let mut l = match path {
                Some(path) => api::get(ctx, path, 1, secs(3, 10)).await,
                None => api::limiter(ctx, 1, secs(3, 10), false).await,
            };
            floor.row(vec![
                name.into(),
                l.ok.to_string(),
                l.latency.cell(),
                failed(&l),
                format!("{:.0}", l.cpu.per(l.ok)),
                other(&l.cpu),
                "—".into(),
            ]);
        }
        ctx.settle().await;
        // The lock table below has no one-client row: this is it.
        let mut l = api::locks(ctx, 1, secs(4, 10), false).await;
        for (name, samples) in [
            ("lock acquire", &mut l.latency),
            ("lock release", &mut l.latency2),
        ] {
            floor.row(vec![
                name.into(),
                l.ok.to_string(),
                samples.cell(),
                failed_count(l.failed, &l.first_failure),
                format!("{:.0}", l.cpu.per(2 * l.ok)),
                other(&l.cpu),
                "p99 ≤ 10 ms (uncontended)".into(),
            ]);
        }
        tables.push(floor);

        let mut t = Table::new(
            "Lock round trips (acquire then release)",
            &[
                "locks",
                "clients",
                "cycles/s",
                "acquire p50 / p99 / max (ms)",
                "release p50 / p99 / max (ms)",
                "failed",
                "target",
                "other load",
            ],
        );
        for (clients, contended) in [(16usize, false), (8, true)] {
            ctx.settle().await;
            let mut l = api::locks(ctx, clients, secs(4, 10), contended).await;
            t.row(vec![
                if contended {
                    "one (contended, wait ≤ 10 s)"
                } else {
                    "one per client (uncontended)"
                }
                .into(),
                clients.to_string(),
                format!("{:.0}", l.per_s()),
                l.latency.cell(),
                l.latency2.cell(),
                failed(&l),
                if contended {
                    "—".into()
                } else {
                    "p99 ≤ 10 ms".into()
                },
                other(&l.cpu),
            ]);
        }
        tables.push(t);
    }

    if let (true, Some(ctx)) = (wanted(&a, "memory"), &ctx) {
        let mut t = Table::new(
            "Memory: workerd runtime resident set, idle connections in one room",
            &[
                "connections",
                "RSS before (MiB)",
                "RSS open (MiB)",
                "per 1,000 open (MiB)",
                "RSS after idle (MiB)",
                "per 1,000 after idle (MiB)",
                "delivered after idle",
            ],
        );
        ctx.settle().await;
        match conns::memory(ctx, 1000, secs(20, 60)).await {
            Ok(m) => {
                let mib = |k: u64| k as f64 / 1024.0;
                let per = |k: u64| {
                    (k as f64 - m.before_kib as f64) / 1024.0 * 1000.0 / m.connections as f64
                };
                t.row(vec![
                    m.connections.to_string(),
                    format!("{:.1}", mib(m.before_kib)),
                    format!("{:.1}", mib(m.open_kib)),
                    format!("{:.1}", per(m.open_kib)),
                    format!("{:.1} ({} s)", mib(m.idle_kib), m.idle.as_secs()),
                    format!("{:.1}", per(m.idle_kib)),
                    format!("{} / {}", m.delivered_after_idle, m.connections),
                ]);
            }
            Err(e) => t.row(vec![format!("failed: {e}")]),
        }
        tables.push(t);
    }

    if let (true, Some(ctx)) = (wanted(&a, "voice"), &ctx) {
        let mut t = Table::new(
            "Voice: concurrent sessions streaming real-time audio (16 kHz PCM16, 20 ms frames)",
            &[
                "sessions",
                "frames sent",
                "frames/s handled",
                "refused",
                "utterances (detected / sent)",
                "VAD latency p50 / p99 / max (ms, incl. hangover)",
                "p50 after the hangover (ms)",
                "server CPU ms per audio second",
                "workerd core use",
                "other load",
            ],
        );
        let sizes: &[usize] = if a.full { &[10, 50, 100] } else { &[10, 50] };
        for &n in sizes {
            ctx.settle().await;
            match voice::run(ctx, n).await {
                Ok(mut o) => {
                    let p50 = o.vad_latency.ms(0.5);
                    t.row(vec![
                        o.sessions.to_string(),
                        thousands(o.frames as f64),
                        format!("{:.0}", o.frames_per_s()),
                        match &o.first_error {
                            Some(e) => format!("{} ({e})", o.refused),
                            None => o.refused.to_string(),
                        },
                        format!("{} / {}", o.utterances, n * voice::BURSTS.len()),
                        o.vad_latency.cell(),
                        format!("{:.1}", p50 - f64::from(voice::hangover_ms())),
                        format!("{:.2}", o.cpu_ms_per_audio_s()),
                        format!("{:.0} %", o.cpu.runtime_share() * 100.0),
                        other(&o.cpu),
                    ]);
                }
                Err(e) => t.row(vec![n.to_string(), format!("failed: {e}")]),
            }
        }
        tables.push(t);
    }

    drop(server);

    if wanted(&a, "speaking") {
        let provider = speaking::Provider::start();
        let (server, ctx) = start(
            &[
                ("LLM_BASE_URL", provider.url.as_str()),
                ("LLM_TIMEOUT_MS", "30000"),
            ],
            a.via_proxy,
            a.full,
        )
        .await;
        let mut t = Table::new(
            "Speaking: voice-to-voice latency Roomkeeper adds (a provider that answers at once; one burst per session)",
            &[
                "sessions",
                "turns end",
                "spoken",
                "voice to voice, last word sent → first chunk received p50 / p99 / max (ms, incl. the 300 ms hangover)",
                "speech_end received → first chunk received p50 / p99 / max (ms)",
                "server stages p50: transcript / first token / first audio (ms)",
                "server timings.first_audio_ms p50 / p99 / max (ms)",
                "provider's own time per turn (ms: transcription + reply + first sentence's speech)",
                "added by Roomkeeper after speech_end p50 / p99 (ms)",
                "workerd core use",
                "other load",
            ],
        );
        for (n, stagger) in [(1usize, 0u32), (100, 0), (100, 2000)] {
            ctx.settle().await;
            match speaking::run(&ctx, &provider, n, stagger).await {
                Ok(mut o) => {
                    let provider_ms = [
                        "/v1/audio/transcriptions",
                        "/v1/chat/completions",
                        "/v1/audio/speech",
                    ]
                    .iter()
                    .map(|p| provider.mean_us(p).0)
                    .sum::<f64>()
                        / 1000.0;
                    let (p50, p99) = (o.after_end.ms(0.5), o.after_end.ms(0.99));
                    t.row(vec![
                        n.to_string(),
                        match (n, stagger) {
                            (1, _) => "-".to_string(),
                            (_, 0) => "together (the same 20 ms)".to_string(),
                            (_, s) => format!("spread over {s} ms"),
                        },
                        match &o.first_error {
                            Some(e) => format!("{} / {} ({e})", o.spoken, o.sessions),
                            None => format!("{} / {}", o.spoken, o.sessions),
                        },
                        o.voice_to_voice.cell(),
                        o.after_end.cell(),
                        format!(
                            "{:.0} / {:.0} / {:.0}",
                            o.server_transcript.ms(0.5),
                            o.server_first_token.ms(0.5),
                            o.server_first_audio.ms(0.5)
                        ),
                        o.server_first_audio.cell(),
                        format!("{provider_ms:.2}"),
                        format!("{:.1} / {:.1}", p50 - provider_ms, p99 - provider_ms),
                        format!("{:.0} %", o.cpu.runtime_share() * 100.0),
                        other(&o.cpu),
                    ]);
                }
                Err(e) => t.row(vec![n.to_string(), format!("failed: {e}")]),
            }
        }
        drop(server);
        tables.push(t);
    }

    if wanted(&a, "batch") {
        let mut t = Table::new(
            "Fan-out with the batch window on (100 subscribers; one server per window)",
            &[
                "window (ms)",
                "msgs/s",
                "deliveries",
                "frames/delivery",
                "latency p50 / p99 / max (ms)",
                "loss / dup",
                "server CPU µs/delivered message",
                "workerd core use",
                "target",
                "notes",
            ],
        );
        let windows: Vec<u64> = match &a.windows {
            Some(w) => w.clone(),
            None if a.full => vec![10, 25, 50, 100],
            None => vec![25],
        };
        for window in windows {
            let w = window.to_string();
            let (server, ctx) =
                start(&[("ROOM_BATCH_WINDOW_MS", w.as_str())], a.via_proxy, a.full).await;
            for rate in a.rate.map_or(vec![200.0, 1000.0], |r| vec![r]) {
                let spec = Spec {
                    target: Target::Room,
                    subscribers: 100,
                    publishers: 10,
                    rate,
                    duration: secs(6, 15),
                    drain: Duration::from_secs(5),
                    saturate: None,
                };
                match fanout::run(&ctx, &spec).await {
                    Ok(mut o) => {
                        let p99 = o.latency.ms(0.99);
                        let cpu = o.cpu.per(o.delivered);
                        let met = cpu <= 3.0 && p99 <= window as f64 + 15.0 && o.loss() == 0;
                        t.row(vec![
                            w.clone(),
                            format!("{:.0}", o.achieved_rate),
                            thousands(o.delivered as f64),
                            format!("{:.3}", o.frames as f64 / o.delivered.max(1) as f64),
                            o.latency.cell(),
                            format!("{} / {}", o.loss(), o.duplicates),
                            format!("{cpu:.2}"),
                            format!("{:.0} %", o.cpu.runtime_share() * 100.0),
                            format!(
                                "≤ 3 µs, p99 ≤ {} ms: {}",
                                window + 15,
                                if met { "met" } else { "**missed**" }
                            ),
                            check(&o),
                        ]);
                    }
                    Err(e) => t.row(vec![w.clone(), format!("failed: {e}")]),
                }
            }
            drop(ctx);
            drop(server);
        }
        tables.push(t);
    }

    println!(
        "\nall scenarios took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let all: String = tables.iter().map(Table::render).collect();
    println!("\n---- all results ----\n{all}");
    if let Some(path) = &a.out {
        std::fs::write(path, &all).expect("write --out file");
    }
}

/// The rest of the machine's CPU use during a run, as a share of one core.
/// A context for a peer server: its own ports, its process's CPU as the "runtime".
fn peer_ctx(ctx: &Ctx, port: u16, w: workerd::Workerd) -> Ctx {
    Ctx {
        http: format!("http://127.0.0.1:{port}"),
        ws: format!("ws://127.0.0.1:{port}"),
        workerd: w,
        token: ctx.token.clone(),
        run: ctx.run.clone(),
        http_client: ctx.http_client.clone(),
        quiet_wait: ctx.quiet_wait,
    }
}

/// Runs `runs` (a name, the server, the target) one after another, `rounds` times, starting
/// each round one further along so no target always goes first; the first run of each is an
/// unmeasured warm-up. Returns µs of server CPU per delivery per target, and adds every run's
/// row to `t`.
async fn rounds(
    runs: &[(&Ctx, Target)],
    spec: &Spec,
    rounds: usize,
    t: &mut Table,
) -> Vec<Vec<f64>> {
    let mut per = vec![Vec::new(); runs.len()];
    for &(ctx, target) in runs {
        let warm = Spec {
            target,
            saturate: Some(Saturate {
                messages: 200,
                window: 32,
            }),
            ..spec.clone()
        };
        let _ = fanout::run(ctx, &warm).await;
    }
    for r in 0..rounds {
        for k in 0..runs.len() {
            let i = (k + r) % runs.len();
            let (ctx, target) = runs[i];
            let spec = Spec {
                target,
                ..spec.clone()
            };
            match fanout::run(ctx, &spec).await {
                Ok(mut o) => {
                    per[i].push(o.cpu.per(o.delivered));
                    let note = run_note(&spec, &o);
                    fanout_row(t, &spec, &mut o, &note);
                }
                Err(e) => {
                    per[i].push(f64::NAN);
                    t.row(vec![target.name().into(), format!("failed: {e}")]);
                }
            }
        }
    }
    per
}

fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Peers in the same run, as ratios: cloudflare/workers-chat-demo beside the raw object and
/// the Room (one publisher, 100 subscribers), and sockudo beside the Pusher gateway.
async fn peers(a: &Args, ctx: &Ctx, tables: &mut Vec<Table>) {
    let mut t = Table::new("Peers: every run", FANOUT_COLUMNS);
    let mut ratio = Table::new(
        "Peers: server CPU per delivery, median of 3 rounds, and the ratio to the baseline of the same rounds",
        &["comparison", "subscribers", "msgs/s", "µs per delivery (median)", "ratio to the first (median of rounds)"],
    );
    let secs = |q: u64, f: u64| Duration::from_secs(if a.full { f } else { q });
    let paces = [
        Some(Saturate {
            messages: 1000,
            window: 32,
        }),
        None,
    ];
    let mut add = |name: &str, targets: &[&str], spec: &Spec, per: &[Vec<f64>]| {
        let meds: Vec<String> = targets
            .iter()
            .zip(per)
            .map(|(n, v)| format!("{n} {:.1}", median(v)))
            .collect();
        let ratios: Vec<String> = targets
            .iter()
            .zip(per)
            .skip(1)
            .map(|(n, v)| {
                let r: Vec<f64> = v.iter().zip(&per[0]).map(|(x, b)| x / b).collect();
                format!("{n} **{:.2}×**", median(&r))
            })
            .collect();
        let pace = match spec.saturate {
            Some(s) => format!("saturated ({} msgs)", s.messages),
            None => format!("{:.0}", spec.rate),
        };
        ratio.row(vec![
            name.into(),
            spec.subscribers.to_string(),
            pace,
            meds.join(", "),
            ratios.join(", "),
        ]);
    };
    match &a.chat_demo {
        None => println!("peers: no --chat-demo DIR given, so workers-chat-demo is left out"),
        Some(dir) => match server::Server::start_chat_demo(dir) {
            Err(e) => println!("peers: workers-chat-demo did not start: {e}"),
            Ok(demo) => {
                let (path, marker) = demo.probe;
                let w = workerd::find_serving(demo.port, path, marker)
                    .expect("find the workers-chat-demo workerd");
                let port = w.direct_port.unwrap_or(demo.port);
                let dctx = peer_ctx(ctx, port, w);
                for saturate in paces {
                    let spec = Spec {
                        target: Target::Raw,
                        subscribers: 100,
                        publishers: 1,
                        rate: 200.0,
                        duration: secs(5, 10),
                        drain: Duration::from_secs(5),
                        saturate,
                    };
                    let runs = [
                        (ctx, Target::Raw),
                        (&dctx, Target::ChatDemo),
                        (ctx, Target::Room),
                    ];
                    let per = rounds(&runs, &spec, 3, &mut t).await;
                    let names = ["raw", "workers-chat-demo", "Room"];
                    add("raw object, workers-chat-demo, Room", &names, &spec, &per);
                }
                drop(demo);
            }
        },
    }
    let sockudo = a
        .sockudo
        .clone()
        .or_else(|| std::env::var_os("SOCKUDO").map(Into::into))
        .unwrap_or_else(|| harness::root().join(".tools/sockudo/bin/sockudo"));
    if !sockudo.exists() {
        println!(
            "peers: no sockudo at {} (scripts/sockudo.sh installs it), so it is left out",
            sockudo.display()
        );
    } else {
        match server::Sockudo::start(&sockudo, fanout::PUSHER_APP) {
            Err(e) => println!("peers: sockudo did not start: {e}"),
            Ok(s) => {
                let w = workerd::Workerd {
                    proxy: 0,
                    runtime: s.pid(),
                    direct_port: None,
                };
                let sctx = peer_ctx(ctx, s.port, w);
                for (saturate, publishers) in [(paces[0], 1), (None, 10)] {
                    let spec = Spec {
                        target: Target::Gateway,
                        subscribers: 100,
                        publishers,
                        rate: 200.0,
                        duration: secs(4, 10),
                        drain: Duration::from_secs(5),
                        saturate,
                    };
                    let runs = [(&sctx, Target::Sockudo), (ctx, Target::Gateway)];
                    let per = rounds(&runs, &spec, 3, &mut t).await;
                    let name = format!("sockudo, Pusher gateway ({publishers} publisher(s))");
                    add(&name, &["sockudo", "gateway"], &spec, &per);
                }
            }
        }
    }
    tables.push(t);
    tables.push(ratio);
}

fn other(c: &stats::CpuDelta) -> String {
    format!("{:.0} %", c.other_share() * 100.0)
}

fn failed(l: &api::Load) -> String {
    failed_count(l.failed, &l.first_failure)
}

fn failed_count(failed: u64, first: &Option<String>) -> String {
    match first {
        Some(f) => format!("{failed} ({f})"),
        None => "0".into(),
    }
}
