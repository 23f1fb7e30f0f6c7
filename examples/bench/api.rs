//! HTTP scenarios: broadcast into a room over HTTP, rate-limit checks and lock round trips,
//! all through the router with the local development API key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fanout::{Outcome, Subscribers, Target};
use crate::stats::{now_us, Cpu, CpuDelta, Samples};
use crate::Ctx;

/// The local development API key (`wrangler.toml` `[vars]`).
pub const API_KEY: &str = "roomkeeper-local-dev-api-key";

/// Closed-loop load: what came back.
pub struct Load {
    /// Requests answered as expected.
    pub ok: u64,
    /// Requests answered otherwise (status, transport error).
    pub failed: u64,
    /// First unexpected answer.
    pub first_failure: Option<String>,
    /// Round-trip time of every expected answer.
    pub latency: Samples,
    /// Second latency series where a scenario has one (lock release).
    pub latency2: Samples,
    /// Wall time.
    pub wall: Duration,
    /// workerd runtime CPU.
    pub cpu: CpuDelta,
}

impl Load {
    /// Expected answers per second.
    pub fn per_s(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

async fn post(ctx: &Ctx, path: &str, body: &Value) -> Result<(u16, Value), String> {
    let r = ctx
        .http_client
        .post(format!("{}{path}", ctx.http))
        .bearer_auth(API_KEY)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("POST {path}: {e}"))?;
    let status = r.status().as_u16();
    let v = r.json().await.unwrap_or(Value::Null);
    Ok((status, v))
}

/// `POST /api/rooms/:room/broadcast` from `concurrency` clients as fast as they are answered,
/// for `duration` or `max` requests, into a room of `subscribers` connections. Returns the
/// deliveries (latency from request start to receipt) and the request round trips.
pub async fn http_broadcast(
    ctx: &Ctx,
    subscribers: usize,
    concurrency: usize,
    duration: Duration,
    max: usize,
) -> Result<(Outcome, Load), String> {
    let room = ctx.room("http");
    let subs = Subscribers::open(ctx, Target::Room, &room, subscribers, 0, max + 8).await?;
    ctx.settle().await;
    let next = AtomicU64::new(0);
    let cpu0 = Cpu::now(&ctx.workerd);
    let start = Instant::now();
    let first = now_us();
    let path = format!("/api/rooms/{room}/broadcast");
    let workers = (0..concurrency).map(|_| async {
        let mut lat = Samples::default();
        let (mut ok, mut failed, mut first_failure) = (0u64, 0u64, None);
        loop {
            let s = next.fetch_add(1, Ordering::Relaxed);
            if s as usize >= max || start.elapsed() >= duration {
                break;
            }
            let t = now_us();
            let body = json!({"body": {"s": s, "t": t}, "idempotency_key": format!("h{s}")});
            match post(ctx, &path, &body).await {
                Ok((200, _)) => {
                    ok += 1;
                    lat.0.push(now_us() - t);
                }
                Ok((status, v)) => {
                    failed += 1;
                    first_failure.get_or_insert(format!("{status} {v}"));
                }
                Err(e) => {
                    failed += 1;
                    first_failure.get_or_insert(e);
                }
            }
        }
        (lat, ok, failed, first_failure)
    });
    let results = futures_util::future::join_all(workers).await;
    let wall = start.elapsed();
    let mut load = Load {
        ok: 0,
        failed: 0,
        first_failure: None,
        latency: Samples::default(),
        latency2: Samples::default(),
        wall,
        cpu: cpu0.since(&ctx.workerd),
    };
    for (lat, ok, failed, ff) in results {
        load.latency.extend(lat);
        load.ok += ok;
        load.failed += failed;
        if load.first_failure.is_none() {
            load.first_failure = ff;
        }
    }
    let expected = load.ok * subscribers as u64;
    subs.wait(expected, Duration::from_secs(5)).await;
    let cpu = cpu0.since(&ctx.workerd);
    let active = Duration::from_micros(subs.last_seen().max(first) - first);
    let rate = load.ok as f64 / wall.as_secs_f64();
    let mut out = Outcome::new(load.ok, expected, cpu, active, rate);
    subs.finish(&mut out).await?;
    Ok((out, load))
}

/// Runs `concurrency` closed-loop workers for `duration`; `op(worker, i)` performs one
/// operation and returns its latencies (one or two) or a failure.
async fn closed_loop<'a, F, Fut>(
    ctx: &'a Ctx,
    concurrency: usize,
    duration: Duration,
    op: F,
) -> Load
where
    F: Fn(usize, u64) -> Fut + 'a,
    Fut: std::future::Future<Output = Result<(u64, Option<u64>), String>> + 'a,
{
    let cpu0 = Cpu::now(&ctx.workerd);
    let start = Instant::now();
    let op = &op;
    let workers = (0..concurrency).map(|w| async move {
        let mut out = (Samples::default(), Samples::default(), 0u64, 0u64, None);
        let mut i = 0;
        while start.elapsed() < duration {
            match op(w, i).await {
                Ok((a, b)) => {
                    out.0 .0.push(a);
                    if let Some(b) = b {
                        out.1 .0.push(b);
                    }
                    out.2 += 1;
                }
                Err(e) => {
                    out.3 += 1;
                    out.4.get_or_insert(e);
                }
            }
            i += 1;
        }
        out
    });
    let results = futures_util::future::join_all(workers).await;
    let wall = start.elapsed();
    let mut load = Load {
        ok: 0,
        failed: 0,
        first_failure: None,
        latency: Samples::default(),
        latency2: Samples::default(),
        wall,
        cpu: cpu0.since(&ctx.workerd),
    };
    for (a, b, ok, failed, ff) in results {
        load.latency.extend(a);
        load.latency2.extend(b);
        load.ok += ok;
        load.failed += failed;
        if load.first_failure.is_none() {
            load.first_failure = ff;
        }
    }
    load
}

/// `GET path` in a closed loop: `/health` is the router alone (no object, no API key), the
/// floor under every route; `/api/bench/floor` is a minimal workers-rs route in the same
/// Worker (the path read, an empty 204), the floor under the router itself.
pub async fn get(ctx: &Ctx, path: &str, concurrency: usize, duration: Duration) -> Load {
    let url = format!("{}{path}", ctx.http);
    let url = &url;
    closed_loop(ctx, concurrency, duration, |_, _| async move {
        let t = now_us();
        let r = ctx
            .http_client
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match r.status().as_u16() {
            200 | 204 => {
                let _ = r.bytes().await;
                Ok((now_us() - t, None))
            }
            s => Err(format!("{s}")),
        }
    })
    .await
}

/// Rate-limit checks (`POST /api/limits/api/:key`): each worker on its own key
/// (uncontended), or every worker on one key (contended: one object serialises them).
pub async fn limiter(ctx: &Ctx, concurrency: usize, duration: Duration, contended: bool) -> Load {
    let prefix = ctx.room("lim");
    closed_loop(ctx, concurrency, duration, |w, _| {
        let key = if contended {
            format!("{prefix}-hot")
        } else {
            format!("{prefix}-{w}")
        };
        async move {
            let t = now_us();
            match post(ctx, &format!("/api/limits/api/{key}"), &json!({"cost": 1})).await? {
                (200, _) => Ok((now_us() - t, None)),
                (s, v) => Err(format!("{s} {v}")),
            }
        }
    })
    .await
}

/// Lock round trips: acquire then release. Uncontended: each worker its own lock, `wait_ms`
/// 0; the two latency series are acquire and release. Contended: every worker on one lock,
/// waiting up to 10 s; the first series is acquire (including the wait), the second release.
pub async fn locks(ctx: &Ctx, concurrency: usize, duration: Duration, contended: bool) -> Load {
    let prefix = ctx.room("lk");
    closed_loop(ctx, concurrency, duration, |w, _| {
        let name = if contended {
            format!("{prefix}-hot")
        } else {
            format!("{prefix}-{w}")
        };
        async move {
            let wait_ms = if contended { 10_000 } else { 0 };
            let t = now_us();
            let body = json!({"owner": format!("w{w}"), "ttl_ms": 10_000, "wait_ms": wait_ms});
            let (s, v) = post(ctx, &format!("/api/locks/{name}/acquire"), &body).await?;
            if s != 200 {
                return Err(format!("acquire: {s} {v}"));
            }
            let acquired = now_us() - t;
            let t = now_us();
            let body = json!({"token": v["token"]});
            let (s, v) = post(ctx, &format!("/api/locks/{name}/release"), &body).await?;
            if s != 200 {
                return Err(format!("release: {s} {v}"));
            }
            Ok((acquired, Some(now_us() - t)))
        }
    })
    .await
}
