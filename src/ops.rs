//! Operability glue (wasm32 only): metrics in and out, the admin endpoints, and alerts.
//!
//! Counters go to the `Metrics` object with `add` (callers use `wait_until` so a request is
//! never slowed by its own bookkeeping). Alerts are notifications of the `alert` template,
//! throttled per kind by the `alerts` rate-limit policy so an incident cannot flood the ops
//! channel; suppressed ones are still counted.

use serde::Deserialize;
use serde_json::{json as j, Value};
use wasm_bindgen::JsValue;
use worker::{Env, Headers, Method as WMethod, Request, RequestInit, Response};

use crate::config::Config;
use crate::error::ApiError;
use crate::glue::{internal, json, log, now_ms, room_fetch};
use crate::metrics::{self, Delta, Sample};
use crate::notify::{AlertNotice, Notification, Severity};
use crate::obs;
use crate::route::RoomKey;

/// Metrics object binding.
const METRICS: &str = "METRICS";

async fn metrics_call(env: &Env, path: &str, body: Option<String>) -> Result<Response, ApiError> {
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
    let req = Request::new_with_init(&format!("https://metrics.internal{path}"), &init)
        .map_err(internal)?;
    stub.fetch_with_request(req).await.map_err(internal)
}

/// Adds counter deltas. Failures are logged, never surfaced: metrics must not break traffic.
pub(crate) async fn add(env: &Env, deltas: Vec<Delta>) {
    if deltas.is_empty() {
        return;
    }
    let Ok(body) = serde_json::to_string(&deltas) else {
        return;
    };
    if let Err(e) = metrics_call(env, "/__add", Some(body)).await {
        log(
            obs::Level::Info,
            obs::Level::Warn,
            "metrics_failed",
            None,
            j!({"detail": e.to_string()}),
        );
    }
}

/// `GET /api/metrics` (Prometheus text exposition) or `/api/metrics.json`.
pub(crate) async fn metrics(env: &Env, as_json: bool) -> Result<Response, ApiError> {
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
    let c: CloseRequest = crate::api::parse_json(&req.bytes().await.map_err(internal)?)?;
    if c.reason.trim().is_empty() || c.reason.len() > MAX_CLOSE_REASON_BYTES {
        return Err(ApiError::bad_request(
            "invalid_reason",
            format!("reason is 1-{MAX_CLOSE_REASON_BYTES} bytes"),
        ));
    }
    let mut r = room_fetch(
        env,
        key,
        "/__close",
        Some(j!({"reason": c.reason}).to_string()),
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
        &j!({"reason": c.reason, "closed": v["closed"]}),
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
    let allowed = crate::coord::enforce(env, config, "alerts", &format!("alert:{kind}"))
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
        if let Err(e) = crate::services::create_notification(env, Notification::Alert(notice)).await
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
