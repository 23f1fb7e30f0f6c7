//! Reliability: a crash of workerd in the middle of publishing, a panic inside a Durable
//! Object, and (opt-in, `ROOMKEEPER_SOAK=1`) a long soak with clients joining and leaving.
//!
//! Each test starts its own server: a crash or a panic resets the whole runtime, which would
//! disturb the tests sharing the default server.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::Ctx;
use roomkeeper_testkit::harness::{http, room, Client, Enc, Server, TempDir, DEV_API_KEY};
use roomkeeper_testkit::workerd;

/// Lets one connection publish quickly (the default is 20 per second).
const FAST_PUBLISH: &[(&str, &str)] = &[
    ("ROOM_PUBLISH_RATE", "2000"),
    ("ROOM_PUBLISH_BURST", "2000"),
    // The crash test's publisher is one token user: its user and room ceilings too.
    ("ROOM_PUBLISH_USER_RATE", "2000"),
    ("ROOM_PUBLISH_USER_BURST", "2000"),
    ("ROOM_PUBLISH_ROOM_RATE", "2000"),
    ("ROOM_PUBLISH_ROOM_BURST", "4000"),
];

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A socket that, unlike the harness client, survives its server dying: every failure ends
/// the socket's use quietly, and the test looks at what was received before.
async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
        .0
}

/// Joins (optionally resuming from `since`) and returns the welcome frame.
async fn join(ws: &mut Ws, name: &str, since: Option<(&str, u64)>) -> Value {
    let mut frame = json!({"type": "join", "name": name});
    if let Some((epoch, offset)) = since {
        frame["since"] = json!({"epoch": epoch, "offset": offset});
    }
    ws.send(WsMessage::Text(frame.to_string().into()))
        .await
        .expect("send join");
    let welcome = next(ws, Duration::from_secs(10))
        .await
        .expect("a welcome frame");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    welcome
}

/// The next JSON frame within `wait`; `None` on silence, close or error.
async fn next(ws: &mut Ws, wait: Duration) -> Option<Value> {
    next_from(ws, wait).await
}

async fn next_from<S>(stream: &mut S, wait: Duration) -> Option<Value>
where
    S: futures_util::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    loop {
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(Ok(WsMessage::Text(t)))) => return serde_json::from_str(&t).ok(),
            Ok(Some(Ok(WsMessage::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => {
                return None
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Message frames in a stream: `(offset, body)`, until silence for `quiet` or the end.
async fn read_messages(mut stream: SplitStream<Ws>, quiet: Duration) -> Vec<(u64, Value)> {
    let mut got = Vec::new();
    while let Some(f) = next_from(&mut stream, quiet).await {
        if f["type"] == "message" {
            got.push((f["offset"].as_u64().unwrap(), f["body"].clone()));
        }
    }
    got
}

fn publish_frame(i: usize) -> WsMessage {
    let f = json!({"type": "publish", "body": {"i": i}, "id": format!("c{i}")});
    WsMessage::Text(f.to_string().into())
}

/// Acknowledgements in a stream: id → offset, until silence or the end.
async fn read_acks(mut stream: SplitStream<Ws>, quiet: Duration) -> HashMap<String, u64> {
    let mut acks = HashMap::new();
    while let Some(f) = next_from(&mut stream, quiet).await {
        if f["type"] == "ack" {
            acks.insert(
                f["id"].as_str().unwrap().to_string(),
                f["offset"].as_u64().unwrap(),
            );
        }
    }
    acks
}

async fn history(base: &str, room: &str) -> Vec<(u64, Value)> {
    let r = http()
        .get(format!(
            "{base}/api/rooms/{room}/history?since=0&limit=1000"
        ))
        .bearer_auth(DEV_API_KEY)
        .send()
        .await
        .expect("GET history");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["offset"].as_u64().unwrap(), m["body"].clone()))
        .collect()
}

/// `kill -9` of the workerd runtime while a client publishes as fast as it is answered:
/// after a restart on the same state, every acknowledged message is there at its offset, a
/// reader resumes with no gap and no duplicate, and the publisher's retries of what it never
/// saw acknowledged are de-duplicated, so every message is stored exactly once.
pub async fn crash_mid_publishing_loses_nothing_acknowledged(_ctx: Arc<Ctx>) {
    const N: usize = 400;
    let persist = TempDir::new("crash");
    let mut server = Server::start_with(&persist.0, FAST_PUBLISH);
    let procs =
        workerd::wait_find(server.port, Duration::from_secs(20)).expect("find the workerd runtime");
    let r = room("crash");
    let url = format!("{}/api/rooms/{r}/ws", server.ws());
    // The publisher retries on a new connection after the crash: exactly-once across
    // connections is a token user's (anonymous de-duplication is per connection).
    let t = roomkeeper_testkit::harness::token(
        &server.http(),
        serde_json::json!({"sub": "crash-publisher", "rooms": [r]}),
    )
    .await;
    let pub_url = format!("{url}?token={t}");
    let mut publisher = connect(&pub_url).await;
    join(&mut publisher, "pub", None).await;
    let mut reader = connect(&url).await;
    let welcome = join(&mut reader, "reader", None).await;
    let epoch = welcome["epoch"].as_str().unwrap().to_string();

    let (mut sink, acks_stream): (SplitSink<Ws, WsMessage>, _) = publisher.split();
    let (_reader_sink, reader_stream) = reader.split();
    let quiet = Duration::from_secs(4);
    let acks = tokio::spawn(read_acks(acks_stream, quiet));
    let seen = tokio::spawn(read_messages(reader_stream, quiet));
    // Publish steadily; kill the runtime a third of the way in, and keep publishing into the
    // dead server for a moment, as a real client would.
    let mut sent = 0;
    let mut killed_at = None;
    while sent < N {
        if sink.send(publish_frame(sent)).await.is_err() {
            break;
        }
        sent += 1;
        if sent == N / 3 {
            // Crash with publishes in flight: no pause, the socket keeps being written.
            workerd::kill9(procs.runtime);
            killed_at = Some(sent);
        }
        if killed_at.is_some_and(|k| sent > k + 20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(killed_at.is_some(), "the crash happened mid-run");
    assert!(!workerd::alive(procs.runtime), "the runtime was killed");
    drop(sink);
    let acked = acks.await.unwrap();
    let seen = seen.await.unwrap();
    assert!(
        acked.len() >= 10,
        "some publishes were acknowledged before the crash ({})",
        acked.len()
    );

    server.stop();
    let server = Server::start_with(&persist.0, FAST_PUBLISH);
    let url = format!("{}/api/rooms/{r}/ws", server.ws());
    let pub_url = format!("{url}?token={t}");

    // 1. Every acknowledged message is stored, at the offset its ack gave.
    let stored: BTreeMap<u64, Value> = history(&server.http(), &r).await.into_iter().collect();
    for (id, offset) in &acked {
        let i: usize = id[1..].parse().unwrap();
        assert_eq!(
            stored.get(offset),
            Some(&json!({"i": i})),
            "acknowledged {id} at offset {offset} is stored"
        );
    }
    let total = stored.len() as u64;
    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>(),
        "the stored stream has no gap"
    );

    // 2. The reader resumes from its last offset: exactly the rest, then live traffic.
    let last = seen.last().map_or(0, |s| s.0);
    let mut reader = connect(&url).await;
    let w = join(&mut reader, "reader", Some((&epoch, last))).await;
    assert_eq!(w["recovered"], true, "{w}");
    assert_eq!(w["offset"], total);
    let mut offsets: Vec<u64> = seen.iter().map(|s| s.0).collect();
    for _ in 0..w["replayed"].as_u64().unwrap() {
        let f = next(&mut reader, Duration::from_secs(10)).await.unwrap();
        offsets.push(f["offset"].as_u64().unwrap());
    }

    // 3. The publisher retries everything it has no ack for, with the same ids.
    let mut publisher = connect(&pub_url).await;
    join(&mut publisher, "pub", None).await;
    let mut duplicates = 0;
    for i in (0..N).filter(|i| !acked.contains_key(&format!("c{i}"))) {
        publisher.send(publish_frame(i)).await.unwrap();
        let ack = loop {
            let f = next(&mut publisher, Duration::from_secs(10)).await.unwrap();
            if f["type"] == "ack" {
                break f;
            }
            assert_ne!(f["type"], "error", "{f}");
        };
        duplicates += usize::from(ack["duplicate"] == true);
    }
    let stored = history(&server.http(), &r).await;
    let mut bodies: Vec<u64> = stored
        .iter()
        .map(|(_, b)| b["i"].as_u64().unwrap())
        .collect();
    bodies.sort_unstable();
    assert_eq!(
        bodies,
        (0..N as u64).collect::<Vec<_>>(),
        "every message stored exactly once ({duplicates} retries were duplicates)"
    );
    eprintln!(
        "crash: killed workerd after {} publishes ({} acknowledged, {} seen by the reader, {} \
         stored); {} retried after the restart, {duplicates} of them already stored",
        killed_at.unwrap_or(0),
        acked.len(),
        seen.len(),
        total,
        N - acked.len(),
    );
    while offsets.len() < N {
        let Some(f) = next(&mut reader, Duration::from_secs(10)).await else {
            break;
        };
        if f["type"] == "message" {
            offsets.push(f["offset"].as_u64().unwrap());
        }
    }
    assert_eq!(
        offsets,
        (1..=N as u64).collect::<Vec<_>>(),
        "the reader saw every offset once, in order, across the crash"
    );
    drop(server);
}

/// A panic inside one Durable Object: the request that panicked never succeeds, the same
/// object answers the next request, and every other object keeps working — the Wasm instance
/// they share is reset (worker-build's shim), so a Room rebuilds its state from storage and
/// socket attachments, and its open sockets keep their session.
pub async fn a_panic_inside_an_object_leaves_nothing_broken(_ctx: Arc<Ctx>) {
    let persist = TempDir::new("panic");
    let server = Server::start(&persist.0);
    let base = server.http();
    let r = room("panic");
    let url = format!("{}/api/rooms/{r}/ws", server.ws());
    let (mut a, w) = Client::join(&url, Enc::Json, "a").await;
    let epoch = w["epoch"].as_str().unwrap().to_string();
    let (mut b, _) = Client::join(&url, Enc::Msgpack, "b").await;
    a.recv_type("joined").await;
    a.send(json!({"type": "publish", "body": "before", "id": "m1"}))
        .await;
    assert_eq!(b.recv_type("message").await["offset"], 1);
    a.recv_type("ack").await;

    let status = |path: String| async move {
        let r = http().get(path).send().await.expect("GET status");
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let bench = format!("{base}/api/bench/raw/{r}");
    let (code, before) = status(format!("{bench}/status")).await;
    assert_eq!(code, 200, "{before}");
    // With worker-build's default panic=abort, the panic traps inside the future that would
    // have answered, so this request gets no answer at all (measured: it hangs until the
    // caller gives up); what matters is that it never succeeds and that the next one works.
    let panicked = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .post(format!("{bench}/panic"))
        .send()
        .await;
    match panicked {
        Ok(r) => assert!(r.status().is_server_error(), "{}", r.status()),
        Err(e) => assert!(e.is_timeout(), "{e}"),
    }

    // The object that panicked answers the next request: a fresh instance.
    let (code, after) = status(format!("{bench}/status")).await;
    assert_eq!(code, 200, "{after}");
    assert_ne!(
        before["instance"], after["instance"],
        "rebuilt after the panic"
    );

    // The room's sockets still work, and its stream continues where it was.
    a.send(json!({"type": "publish", "body": "after", "id": "m2"}))
        .await;
    let m = b.recv_type("message").await;
    assert_eq!(
        (m["offset"].as_u64(), m["body"].as_str()),
        (Some(2), Some("after"))
    );
    let m = a.recv_type("message").await;
    assert_eq!(m["offset"], 2);
    assert_eq!(a.recv_type("ack").await["offset"], 2);
    // And a newcomer recovers the whole stream.
    let (mut c, w) = Client::join_with(
        &url,
        Enc::Json,
        json!({"type": "join", "name": "c", "since": {"epoch": epoch, "offset": 0}}),
    )
    .await;
    assert_eq!(
        (w["recovered"].as_bool(), w["replayed"].as_u64()),
        (Some(true), Some(2))
    );
    assert_eq!(c.recv().await["body"], "before");
    assert_eq!(c.recv().await["body"], "after");
    drop(server);
}

/// The soak, opt-in (`ROOMKEEPER_SOAK=1`; `ROOMKEEPER_SOAK_SECS`, default 600): a room at a
/// fixed rate while clients keep joining and leaving. Long-lived subscribers must see every
/// offset exactly once; each short-lived one must see a contiguous run from its welcome; every
/// publish must be acknowledged exactly once; workerd's resident memory must stay flat.
pub async fn soak_no_loss_no_duplicates_flat_memory(_ctx: Arc<Ctx>) {
    let secs: u64 = std::env::var("ROOMKEEPER_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    const RATE: u64 = 50;
    const STEADY: usize = 10;
    let persist = TempDir::new("soak");
    let server = Server::start_with(&persist.0, FAST_PUBLISH);
    let procs = workerd::wait_find(server.port, Duration::from_secs(20)).expect("workerd");
    let r = room("soak");
    let url = format!("{}/api/rooms/{r}/ws", server.ws());
    let mut steady = Vec::new();
    for i in 0..STEADY {
        let mut ws = connect(&url).await;
        join(&mut ws, &format!("steady{i}"), None).await;
        let (_sink, stream) = ws.split();
        steady.push((
            _sink,
            tokio::spawn(read_messages(stream, Duration::from_secs(15))),
        ));
    }
    let mut publisher = connect(&url).await;
    join(&mut publisher, "pub", None).await;
    let (mut sink, acks_stream) = publisher.split();
    let acks = tokio::spawn(read_acks(acks_stream, Duration::from_secs(15)));

    // Churn: every second one short-lived client joins; each stays for a few seconds.
    let churn_url = url.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn_stop = Arc::clone(&stop);
    let churn = tokio::spawn(async move {
        let mut checked = 0usize;
        #[allow(clippy::type_complexity)]
        let mut alive: Vec<(tokio::task::JoinHandle<Vec<(u64, Value)>>, u64)> = Vec::new();
        let mut n = 0;
        while !churn_stop.load(std::sync::atomic::Ordering::Relaxed) {
            let mut ws = connect(&churn_url).await;
            let w = join(&mut ws, &format!("churn{n}"), None).await;
            n += 1;
            let from = w["offset"].as_u64().unwrap();
            let stay = Duration::from_millis(2000 + (n % 5) * 700);
            let handle = tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + stay;
                let mut got = Vec::new();
                while let Ok(Some(f)) =
                    tokio::time::timeout_at(deadline, next(&mut ws, Duration::from_secs(15))).await
                {
                    if f["type"] == "message" {
                        got.push((f["offset"].as_u64().unwrap(), Value::Null));
                    }
                }
                let _ = ws.close(None).await;
                got
            });
            alive.push((handle, from));
            tokio::time::sleep(Duration::from_secs(1)).await;
            // Check the ones that are done: a contiguous run right after their welcome.
            let (done, rest): (Vec<_>, Vec<_>) =
                alive.into_iter().partition(|(h, _)| h.is_finished());
            alive = rest;
            for (h, from) in done {
                let got = h.await.unwrap();
                let offsets: Vec<u64> = got.iter().map(|g| g.0).collect();
                let want: Vec<u64> = (from + 1..=from + offsets.len() as u64).collect();
                assert_eq!(
                    offsets, want,
                    "a short-lived client saw a gap or a duplicate"
                );
                checked += 1;
            }
        }
        for (h, from) in alive {
            let offsets: Vec<u64> = h.await.unwrap().iter().map(|g| g.0).collect();
            let want: Vec<u64> = (from + 1..=from + offsets.len() as u64).collect();
            assert_eq!(offsets, want);
            checked += 1;
        }
        checked
    });

    // Warm up for a minute's worth of traffic before the first memory reading, then publish
    // at a fixed rate for the rest of the soak.
    let start = Instant::now();
    let cpu_start = workerd::cpu_us(procs.runtime).unwrap_or(0);
    let total = secs * RATE;
    let mut rss_start = None;
    for i in 0..total as usize {
        let due = start + Duration::from_millis(i as u64 * 1000 / RATE);
        tokio::time::sleep_until(due.into()).await;
        sink.send(publish_frame(i)).await.expect("publish");
        if rss_start.is_none() && start.elapsed() >= Duration::from_secs(secs.min(60) / 2) {
            rss_start = workerd::rss_kib(procs.runtime);
        }
    }
    let rss_end = workerd::rss_kib(procs.runtime).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let churned = churn.await.unwrap();
    let acked = acks.await.unwrap();
    assert_eq!(acked.len() as u64, total, "every publish acknowledged once");
    let mut ack_offsets: Vec<u64> = acked.values().copied().collect();
    ack_offsets.sort_unstable();
    assert_eq!(ack_offsets, (1..=total).collect::<Vec<_>>());
    for (_sink, h) in steady {
        let offsets: Vec<u64> = h.await.unwrap().iter().map(|g| g.0).collect();
        assert_eq!(
            offsets,
            (1..=total).collect::<Vec<_>>(),
            "a steady subscriber saw a gap or a duplicate"
        );
    }
    let rss_start = rss_start.unwrap();
    let cpu = workerd::cpu_us(procs.runtime).unwrap_or(0) - cpu_start;
    eprintln!(
        "soak: {secs} s, {total} messages at {RATE}/s, {STEADY} steady subscribers, \
         {churned} short-lived clients; workerd RSS {:.1} MiB at warm-up, {:.1} MiB at the \
         end; workerd CPU {:.1} s ({:.1} % of a core)",
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        cpu as f64 / 1e6,
        cpu as f64 / 1e4 / secs as f64,
    );
    assert!(
        rss_end < rss_start + rss_start / 2,
        "workerd memory grew from {rss_start} KiB to {rss_end} KiB"
    );
    drop(server);
}
