//! Operability glue (wasm32 only): metrics in and out, the admin endpoints, and alerts.
//!
//! Objects send counters to the `Metrics` object with `add` (through `wait_until`, so an event
//! is never slowed by its own bookkeeping). The router instead sums its per-request counters in
//! the isolate's memory ([`count`]) and sends them in one call at most every
//! [`metrics::FLUSH_INTERVAL_MS`]; each batch carries an id the Metrics object remembers, so a
//! retried batch is never counted twice. A metrics read flushes its own isolate first. Alerts are notifications of the `alert` template,
//! throttled per kind by the `alerts` rate-limit policy so an incident cannot flood the ops
//! channel; suppressed ones are still counted.

use std::cell::RefCell;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json as j, Value};
use wasm_bindgen::JsValue;
use worker::{Context, Delay, Env, Headers, Method as WMethod, Request, RequestInit, Response};

use crate::config::Config;
use crate::glue::router::{internal, json, log, now_ms, room_fetch};
use crate::http::error::ApiError;
use crate::http::route::RoomKey;
use crate::metrics::{self, Delta, Sample};
use crate::obs;
use crate::services::notify::{AlertNotice, Notification, Severity};

/// Metrics object binding.
const METRICS: &str = "METRICS";

/// Header carrying a flush batch's id, so the Metrics object applies each batch once.
pub(crate) const BATCH_ID_HEADER: &str = "X-Metrics-Batch";

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

async fn metrics_call(env: &Env, path: &str, body: Option<String>) -> Result<Response, ApiError> {
    metrics_call_with(env, path, body, None).await
}

async fn metrics_call_with(
    env: &Env,
    path: &str,
    body: Option<String>,
    batch: Option<&str>,
) -> Result<Response, ApiError> {
    let ns = env.durable_object(METRICS).map_err(internal)?;
    let stub = ns
        .id_from_name(crate::objects::metrics::GLOBAL)
        .map_err(internal)?
        .get_stub()
        .map_err(internal)?;
    let mut init = RequestInit::new();
    if let Some(b) = body {
        init.with_method(WMethod::Post)
            .with_body(Some(JsValue::from_str(&b)));
    }
    if let Some(id) = batch {
        let headers = Headers::new();
        headers.set(BATCH_ID_HEADER, id).map_err(internal)?;
        init.with_headers(headers);
    }
    let req = Request::new_with_init(&format!("https://metrics.internal{path}"), &init)
        .map_err(internal)?;
    stub.fetch_with_request(req).await.map_err(internal)
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
    let failure = match metrics_call_with(env, "/__add", Some(body), batch).await {
        Ok(r) if r.status_code() < 300 => return true,
        Ok(r) => format!("status {}", r.status_code()),
        Err(e) => e.to_string(),
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
    let mut r = metrics_call(env, "/__all", None).await?;
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
/// `GET /api/admin/sessions`: voice and chat sessions with open sockets, from the registry the
/// session objects keep in the Metrics object.
pub(crate) async fn admin_sessions(env: &Env) -> Result<Response, ApiError> {
    let mut r = metrics_call(env, "/__sessions", None).await?;
    let v: Value = r.json().await.map_err(internal)?;
    json(200, &v)
}

/// Reads `{"reason"}` (1–[`MAX_CLOSE_REASON_BYTES`] bytes) from an admin request.
async fn close_reason(req: &mut Request) -> Result<String, ApiError> {
    let c: CloseRequest = crate::http::bodies::parse_json(&req.bytes().await.map_err(internal)?)?;
    if c.reason.trim().is_empty() || c.reason.len() > MAX_CLOSE_REASON_BYTES {
        return Err(ApiError::bad_request(
            "invalid_reason",
            format!("reason is 1-{MAX_CLOSE_REASON_BYTES} bytes"),
        ));
    }
    Ok(c.reason)
}

/// `POST /api/admin/rooms/:room/connections/:conn/close {"reason"}`: closes one connection
/// (ids as `GET /api/rooms/:room` lists them) with 4000 and the reason; audited. 404
/// `connection_not_found` if the room has no such open connection.
pub(crate) async fn admin_close_connection(
    mut req: Request,
    env: &Env,
    key: &RoomKey,
    conn: &str,
    key_name: Option<&str>,
) -> Result<Response, ApiError> {
    let reason = close_reason(&mut req).await?;
    let mut r = room_fetch(
        env,
        key,
        "/__close_conn",
        Some(j!({"conn": conn, "reason": reason}).to_string()),
    )
    .await?;
    let status = r.status_code();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if status != 200 {
        return json(status, &v);
    }
    let actor = format!("api:{}", key_name.unwrap_or("key"));
    audit(
        env,
        &format!("room:{}", key.as_str()),
        "connection_closed",
        &actor,
        &j!({"reason": reason, "conn": conn, "user": v["user"]}),
    )
    .await?;
    json(200, &v)
}

/// `POST /api/admin/locks/:name/release {"reason"}`: the operator override of a lock. Ends the
/// live lease whatever its token (the holder's token becomes stale; the next waiter, if any,
/// is granted with a larger one) and records who, why and whose lease in the audit trail.
pub(crate) async fn admin_lock_release(
    mut req: Request,
    env: &Env,
    name: &str,
    key_name: Option<&str>,
) -> Result<Response, ApiError> {
    let reason = close_reason(&mut req).await?;
    let (status, v) = crate::glue::coordination::call(
        env,
        crate::glue::coordination::LOCK_BINDING,
        name,
        "force_release",
        Some(String::new()),
    )
    .await?;
    if status != 200 {
        return json(status, &v);
    }
    let actor = format!("api:{}", key_name.unwrap_or("key"));
    audit(
        env,
        &format!("lock:{name}"),
        "lock_override",
        &actor,
        &j!({"reason": reason, "released": v["released"], "holder": v["holder"],
            "token": v["token"]}),
    )
    .await?;
    json(200, &v)
}

pub(crate) async fn admin_rooms(env: &Env) -> Result<Response, ApiError> {
    let mut r = metrics_call(env, "/__rooms", None).await?;
    let v: Value = r.json().await.map_err(internal)?;
    json(200, &v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseRequest {
    reason: String,
}

/// Longest close reason (WebSocket close reasons are at most 123 bytes).
pub const MAX_CLOSE_REASON_BYTES: usize = 100;

/// `POST /api/admin/rooms/:room/close {"reason"}`: closes every connection with 4000 and the
/// reason (clients may reconnect later), and audits who did it.
pub(crate) async fn admin_close_room(
    mut req: Request,
    env: &Env,
    key: &RoomKey,
    key_name: Option<&str>,
) -> Result<Response, ApiError> {
    let reason = close_reason(&mut req).await?;
    let mut r = room_fetch(
        env,
        key,
        "/__close",
        Some(j!({"reason": reason}).to_string()),
    )
    .await?;
    let status = r.status_code();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if status != 200 {
        return json(status, &v);
    }
    let actor = format!("api:{}", key_name.unwrap_or("key"));
    audit(
        env,
        &format!("room:{}", key.as_str()),
        "room_closed",
        &actor,
        &j!({"reason": reason, "closed": v["closed"]}),
    )
    .await?;
    json(200, &v)
}

/// Writes one audit row.
pub(crate) async fn audit(
    env: &Env,
    subject: &str,
    action: &str,
    actor: &str,
    detail: &Value,
) -> Result<(), ApiError> {
    env.d1("DB")
        .map_err(internal)?
        .prepare("INSERT INTO audit (at, subject, action, actor, detail) VALUES (?, ?, ?, ?, ?)")
        .bind(&[
            JsValue::from_f64(now_ms() as f64),
            JsValue::from_str(subject),
            JsValue::from_str(action),
            JsValue::from_str(actor),
            JsValue::from_str(&detail.to_string()),
        ])
        .map_err(internal)?
        .run()
        .await
        .map_err(internal)?;
    Ok(())
}

#[derive(Deserialize)]
struct AuditRow {
    id: f64,
    at: f64,
    subject: String,
    action: String,
    actor: String,
    detail: Option<String>,
}

/// Most audit rows one page returns.
pub const MAX_AUDIT_PAGE: usize = 500;

/// `GET /api/admin/audit?subject=&limit=`: newest first.
pub(crate) async fn admin_audit(req: Request, env: &Env) -> Result<Response, ApiError> {
    let url = req.url().map_err(internal)?;
    let mut subject = None;
    let mut limit = 100usize;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "subject" => subject = Some(v.into_owned()),
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_AUDIT_PAGE).contains(l))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_query",
                            format!("limit is 1-{MAX_AUDIT_PAGE}"),
                        )
                    })?
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("unknown parameter {other:?}"),
                ))
            }
        }
    }
    let db = env.d1("DB").map_err(internal)?;
    let stmt = match &subject {
        Some(s) => db
            .prepare("SELECT id, at, subject, action, actor, detail FROM audit WHERE subject = ? ORDER BY id DESC LIMIT ?")
            .bind(&[JsValue::from_str(s), JsValue::from_f64(limit as f64)]),
        None => db
            .prepare("SELECT id, at, subject, action, actor, detail FROM audit ORDER BY id DESC LIMIT ?")
            .bind(&[JsValue::from_f64(limit as f64)]),
    }
    .map_err(internal)?;
    let rows: Vec<AuditRow> = stmt
        .all()
        .await
        .map_err(internal)?
        .results()
        .map_err(internal)?;
    let entries: Vec<Value> = rows
        .iter()
        .map(|r| {
            j!({"id": r.id as u64, "at_ms": r.at as u64, "subject": r.subject, "action": r.action,
                "actor": r.actor, "detail": r.detail.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok())})
        })
        .collect();
    json(200, &j!({ "entries": entries }))
}

thread_local! {
    static REFUSALS: RefCell<metrics::SpikeDetector> = RefCell::new(metrics::SpikeDetector::default());
}

/// Counts a `rate_limited` refusal in this isolate; the one that makes the window's count reach
/// `REFUSAL_ALERT_THRESHOLD` ([`metrics::REFUSAL_ALERT_THRESHOLD`] by default) raises a
/// `refusals_spiking` alert in the background.
pub(crate) fn refusal_spike(env: &Env, ctx: &Context, config: &Config) {
    let threshold = crate::glue::router::setting(env, "REFUSAL_ALERT_THRESHOLD")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(metrics::REFUSAL_ALERT_THRESHOLD);
    let now = now_ms();
    let fire = REFUSALS.with(|d| {
        d.borrow_mut()
            .record(now, metrics::REFUSAL_SPIKE_WINDOW_MS, threshold)
    });
    if fire {
        let (env, config) = (env.clone(), config.clone());
        ctx.wait_until(async move {
            raise_alert(
                &env,
                &config,
                "refusals_spiking",
                &format!("refusals:{now}"),
                Severity::Warning,
                format!(
                    "{threshold} rate-limit refusals within {} s",
                    metrics::REFUSAL_SPIKE_WINDOW_MS / 1000
                ),
                Some("see roomkeeper_refusals_total{code=\"rate_limited\"}".into()),
            )
            .await;
        });
    }
}

/// Records one provider call (`op`: `transcribe` or `generate`, from the `kind` of session):
/// `roomkeeper_provider_calls_total{kind,op,outcome}` and the time it took in
/// `roomkeeper_provider_latency_ms_total{kind,op}`; a failure also raises a `provider_failing`
/// alert (throttled like every alert). Run it in the background of the event.
pub(crate) async fn provider_call(env: &Env, kind: &str, op: &str, ms: u64, error: Option<String>) {
    let outcome = if error.is_some() { "error" } else { "ok" };
    add(
        env,
        vec![
            Delta::new(
                "roomkeeper_provider_calls_total",
                &[("kind", kind), ("op", op), ("outcome", outcome)],
                1,
            ),
            Delta::new(
                "roomkeeper_provider_latency_ms_total",
                &[("kind", kind), ("op", op)],
                ms as i64,
            ),
        ],
    )
    .await;
    if let Some(e) = error {
        let Ok(config) = Config::from_lookup(|k| crate::glue::router::setting(env, k)) else {
            return;
        };
        raise_alert(
            env,
            &config,
            "provider_failing",
            &format!("provider:{kind}:{op}:{}", now_ms()),
            Severity::Warning,
            format!("AI provider failing: {kind} {op}"),
            Some(e),
        )
        .await;
    }
}

/// Raises an alert of `kind` unless the `alerts` policy says this kind has alerted enough
/// lately; either way it is counted. Returns whether it was sent.
pub(crate) async fn raise_alert(
    env: &Env,
    config: &Config,
    kind: &str,
    id: &str,
    severity: Severity,
    title: String,
    detail: Option<String>,
) -> bool {
    let allowed =
        crate::glue::coordination::enforce(env, config, "alerts", &format!("alert:{kind}"))
            .await
            .is_ok();
    let outcome = if allowed { "sent" } else { "suppressed" };
    add(
        env,
        vec![Delta::new(
            "roomkeeper_alerts_total",
            &[("kind", kind), ("outcome", outcome)],
            1,
        )],
    )
    .await;
    if allowed {
        let notice = AlertNotice {
            id: id.to_string(),
            severity,
            title,
            detail,
        };
        if let Err(e) =
            crate::glue::services::create_notification(env, Notification::Alert(notice)).await
        {
            log(
                obs::Level::Info,
                obs::Level::Error,
                "alert_failed",
                None,
                j!({"kind": kind, "detail": e.to_string()}),
            );
        }
    }
    allowed
}
