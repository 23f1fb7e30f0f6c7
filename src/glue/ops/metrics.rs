//! Metrics in and out (wasm32 only): objects send counters to the `Metrics` object with
//! [`add`] (through `wait_until`, so an event is never slowed by its own bookkeeping). The
//! router instead sums its per-request counters in the isolate's memory ([`count`]) and sends
//! them in one call at most every [`metrics::FLUSH_INTERVAL_MS`]; each batch carries an id the
//! Metrics object remembers, so a retried batch is never counted twice. A metrics read flushes
//! its own isolate first.

use std::cell::RefCell;
use std::time::Duration;

use serde_json::{json as j, Value};
use worker::{Context, Delay, Env, Headers, Response};

use crate::glue::http::{internal, json, log, now_ms};
use crate::glue::stub::{stub, Call};
use crate::http::error::ApiError;
use crate::internal::{Binding, Op};
use crate::metrics::{self, Delta, Sample, BATCH_ID_HEADER};
use crate::obs;

/// Most failed batches an isolate keeps for retry; past that the oldest is dropped (and
/// logged) rather than letting memory grow while the Metrics object is unreachable.
pub const MAX_RETRY_BATCHES: usize = 32;

/// How long a metrics read waits for this isolate's in-flight flushes to land (ms).
pub const FLUSH_WAIT_MS: u64 = 2000;

/// The isolate's flush bookkeeping.
#[derive(Default)]
struct Flusher {
    /// When the pending flush was scheduled (a schedule far older than the interval is taken
    /// as lost, e.g. if its `wait_until` was cut short, and replaced).
    scheduled_at_ms: Option<u64>,
    /// Batches being sent right now.
    in_flight: u32,
    /// Batches whose send failed, with their ids, retried by the next flush.
    retry: Vec<(String, Vec<Delta>)>,
}

thread_local! {
    static PENDING: RefCell<metrics::Pending> = RefCell::new(metrics::Pending::default());
    static FLUSHER: RefCell<Flusher> = RefCell::new(Flusher::default());
}

/// Adds the router's counters to the isolate's pending sums; the first addition after a flush
/// schedules the next flush [`metrics::FLUSH_INTERVAL_MS`] later through `wait_until`.
pub(crate) fn count(env: &Env, ctx: &Context, deltas: Vec<Delta>) {
    if deltas.is_empty() {
        return;
    }
    PENDING.with(|p| p.borrow_mut().add(deltas));
    let now = now_ms();
    let schedule = FLUSHER.with(|f| {
        let mut f = f.borrow_mut();
        let live = f
            .scheduled_at_ms
            .is_some_and(|t| now < t + 10 * metrics::FLUSH_INTERVAL_MS);
        if !live {
            f.scheduled_at_ms = Some(now);
        }
        !live
    });
    if schedule {
        let env = env.clone();
        ctx.wait_until(async move {
            Delay::from(Duration::from_millis(metrics::FLUSH_INTERVAL_MS)).await;
            FLUSHER.with(|f| f.borrow_mut().scheduled_at_ms = None);
            flush(&env).await;
        });
    }
}

/// Sends the isolate's pending counters (and any batches that failed before) to the Metrics
/// object. A failed batch keeps its id and is retried by the next flush.
pub(crate) async fn flush(env: &Env) {
    let deltas = PENDING.with(|p| p.borrow_mut().take());
    let mut batches = FLUSHER.with(|f| std::mem::take(&mut f.borrow_mut().retry));
    if !deltas.is_empty() {
        batches.push((uuid::Uuid::new_v4().simple().to_string(), deltas));
    }
    for (id, deltas) in batches {
        FLUSHER.with(|f| f.borrow_mut().in_flight += 1);
        let sent = send(env, Some(&id), &deltas).await;
        FLUSHER.with(|f| {
            let mut f = f.borrow_mut();
            f.in_flight -= 1;
            if !sent {
                if f.retry.len() >= MAX_RETRY_BATCHES {
                    let dropped = f.retry.remove(0);
                    log(
                        obs::Level::Info,
                        obs::Level::Error,
                        "metrics_dropped",
                        None,
                        j!({"batch": dropped.0, "deltas": dropped.1.len()}),
                    );
                }
                f.retry.push((id, deltas));
            }
        });
    }
}

/// Flushes this isolate and waits (up to [`FLUSH_WAIT_MS`]) for its in-flight batches, so a
/// read sees every count this isolate has made.
async fn flush_and_settle(env: &Env) {
    flush(env).await;
    let deadline = now_ms() + FLUSH_WAIT_MS;
    while FLUSHER.with(|f| f.borrow().in_flight) > 0 && now_ms() < deadline {
        Delay::from(Duration::from_millis(5)).await;
    }
}

/// Calls the one Metrics object.
async fn metrics_call(env: &Env, call: Call) -> Result<Response, ApiError> {
    let stub = stub(env, Binding::Metrics, metrics::OBJECT_NAME)?;
    call.send(&stub).await.map_err(internal)
}

/// Adds counter deltas. Failures are logged, never surfaced: metrics must not break traffic.
pub(crate) async fn add(env: &Env, deltas: Vec<Delta>) {
    if !deltas.is_empty() {
        send(env, None, &deltas).await;
    }
}

/// One `/__add` call; returns whether the Metrics object took the batch.
async fn send(env: &Env, batch: Option<&str>, deltas: &[Delta]) -> bool {
    let Ok(body) = serde_json::to_string(deltas) else {
        return false;
    };
    let mut call = Call::new(Op::MetricsAdd).body(body);
    if let Some(id) = batch {
        match call.header(BATCH_ID_HEADER, id) {
            Ok(c) => call = c,
            Err(_) => return false,
        }
    }
    let failure = match metrics_call(env, call).await {
        Ok(r) if r.status_code() < 300 => return true,
        Ok(r) => format!("status {}", r.status_code()),
        Err(e) => e.log_text(),
    };
    log(
        obs::Level::Info,
        obs::Level::Warn,
        "metrics_failed",
        None,
        j!({"detail": failure, "batch": batch}),
    );
    false
}

/// `GET /api/metrics` (Prometheus text exposition) or `/api/metrics.json`.
pub(crate) async fn metrics(env: &Env, as_json: bool) -> Result<Response, ApiError> {
    flush_and_settle(env).await;
    let mut r = metrics_call(env, Call::new(Op::MetricsAll)).await?;
    let samples: Vec<Sample> = r.json().await.map_err(internal)?;
    if as_json {
        return json(200, &metrics::json(&samples));
    }
    let headers = Headers::new();
    headers
        .set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        .map_err(internal)?;
    Ok(Response::ok(metrics::prometheus(&samples))
        .map_err(internal)?
        .with_headers(headers))
}

/// `GET /api/admin/rooms`: rooms with open connections.
/// One of the Metrics object's registries (rooms or sessions), answered as it is.
pub(crate) async fn registry(env: &Env, op: Op) -> Result<Response, ApiError> {
    let mut r = metrics_call(env, Call::new(op)).await?;
    let v: Value = r.json().await.map_err(internal)?;
    json(200, &v)
}
