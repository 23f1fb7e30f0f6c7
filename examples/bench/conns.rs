//! Connections: a connect storm (connects/s and time to welcome) and resident memory per
//! 1,000 idle connections.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::fanout::{self, Target};
use crate::stats::Samples;
use crate::Ctx;
use roomkeeper_testkit::workerd;

/// What a connect storm measured.
pub struct Storm {
    /// Connections that reached their welcome.
    pub ok: usize,
    /// Connections refused or failed.
    pub failed: usize,
    /// First failure, for the report.
    pub first_failure: Option<String>,
    /// Connect start → welcome received, every successful connection.
    pub to_welcome: Samples,
    /// Wall time of the whole storm.
    pub wall: Duration,
    /// workerd runtime CPU over the storm.
    pub cpu: crate::stats::CpuDelta,
}

/// Opens `n` connections into one fresh room, `parallel` at a time, each joining and waiting
/// for its welcome; keeps them open until all are in, then closes them.
pub async fn storm(ctx: &Ctx, n: usize, parallel: usize, anonymous: bool) -> Storm {
    let room = ctx.room("storm");
    let cpu0 = crate::stats::Cpu::now(&ctx.workerd);
    let start = Instant::now();
    let results: Vec<(Duration, Result<_, String>)> = futures_util::stream::iter(0..n)
        .map(|i| {
            let room = room.clone();
            async move {
                let t0 = Instant::now();
                let r = if anonymous {
                    open_anonymous(ctx, &room, i).await
                } else {
                    fanout::open(ctx, Target::Room, &room, i).await
                };
                (t0.elapsed(), r)
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let wall = start.elapsed();
    let cpu = cpu0.since(&ctx.workerd);
    let mut out = Storm {
        ok: 0,
        failed: 0,
        first_failure: None,
        to_welcome: Samples::default(),
        wall,
        cpu,
    };
    let mut sockets = Vec::new();
    for (t, r) in results {
        match r {
            Ok(ws) => {
                out.ok += 1;
                out.to_welcome.0.push(t.as_micros() as u64);
                sockets.push(ws);
            }
            Err(e) => {
                out.failed += 1;
                out.first_failure.get_or_insert(e);
            }
        }
    }
    close_all(sockets).await;
    out
}

/// An anonymous connection: every join is announced to everyone already in (presence).
async fn open_anonymous(ctx: &Ctx, room: &str, i: usize) -> Result<fanout::WsStream, String> {
    let url = format!("{}/api/rooms/{room}/ws", ctx.ws);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let join = format!(r#"{{"type":"join","name":"a{i}"}}"#);
    ws.send(WsMessage::Text(join.into()))
        .await
        .map_err(|e| format!("join: {e}"))?;
    fanout::welcome(&mut ws).await?;
    Ok(ws)
}

/// Closes sockets politely, a few at a time.
pub async fn close_all(sockets: Vec<fanout::WsStream>) {
    futures_util::stream::iter(sockets)
        .for_each_concurrent(64, |mut ws| async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
        })
        .await;
}

/// Resident memory of idle connections.
pub struct Memory {
    /// Connections held.
    pub connections: usize,
    /// Runtime RSS before connecting, KiB.
    pub before_kib: u64,
    /// Runtime RSS with every connection joined, KiB.
    pub open_kib: u64,
    /// Runtime RSS after the connections idled `idle` (the object may have hibernated), KiB.
    pub idle_kib: u64,
    /// How long they idled.
    pub idle: Duration,
    /// Whether a message still reached every connection after idling.
    pub delivered_after_idle: usize,
}

/// Holds `n` joined, idle connections in one room and reads workerd's resident memory.
pub async fn memory(ctx: &Ctx, n: usize, idle: Duration) -> Result<Memory, String> {
    let rss = || workerd::rss_kib(ctx.workerd.runtime).unwrap_or(0);
    let before_kib = rss();
    let room = ctx.room("idle");
    let mut sockets = fanout::open_many(ctx, Target::Room, &room, n, 50).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let open_kib = rss();
    // Idle, answering nothing: the runtime may evict the object and keep the sockets.
    tokio::time::sleep(idle).await;
    let idle_kib = rss();
    // One message must still reach every idle connection.
    let publish = r#"{"type":"publish","body":{"s":0,"t":0},"id":"after-idle"}"#;
    sockets[0]
        .send(WsMessage::Text(publish.into()))
        .await
        .map_err(|e| format!("publish: {e}"))?;
    let mut delivered = 0;
    for ws in sockets.iter_mut() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await {
            if let WsMessage::Text(t) = m {
                if t.contains(r#""type":"message""#) {
                    delivered += 1;
                    break;
                }
            }
        }
    }
    close_all(sockets).await;
    Ok(Memory {
        connections: n,
        before_kib,
        open_kib,
        idle_kib,
        idle,
        delivered_after_idle: delivered,
    })
}
