//! Notifications over D1 and the queue: storing one per idempotency key, `POST /api/notify`,
//! `GET /api/notify/:id`, and the delivery job that performs what the core's delivery
//! state machine decides.

use serde::{Deserialize, Serialize};
use serde_json::{json as j, Value};
use wasm_bindgen::JsValue;
use worker::{D1Database, Env, Fetch, Headers, Method, Request, RequestInit, Response};

use super::jobs::{enqueue, log, metric, push_ops, Job};
use super::store::{db, num, opt_str};
use crate::glue::router::{internal, json, now_ms, setting};
use crate::http::bodies;
use crate::http::error::ApiError;
use crate::metrics::Delta;
use crate::services::notify::{
    self, Attempted, DeliveryPolicy, DeliveryState, DeliveryStatus, Destinations, Effect,
    Notification, Record,
};

/// The notification id for an idempotency key: stable, URL-safe, 26 characters.
fn notification_id(key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("n_{hex}")
}

/// Stores a notification (once per idempotency key) and queues its first delivery.
/// Returns its id and whether it was new.
pub(crate) async fn create_notification(
    env: &Env,
    n: Notification,
) -> Result<(String, bool), ApiError> {
    let id = notification_id(&n.idempotency_key());
    let db = db(env)?;
    let now = now_ms();
    let result = db
        .prepare(
            "INSERT OR IGNORE INTO notifications (id, created_at, template, channel, payload, status, attempts) \
             VALUES (?, ?, ?, ?, ?, 'queued', 0)",
        )
        .bind(&[
            JsValue::from_str(&id),
            num(now as f64),
            JsValue::from_str(n.template().name()),
            JsValue::from_str(n.channel().as_str()),
            JsValue::from_str(&n.encode()),
        ])
        .map_err(internal)?
        .run()
        .await
        .map_err(internal)?;
    let inserted = result
        .meta()
        .map_err(internal)?
        .and_then(|m| m.changes)
        .unwrap_or(0)
        > 0;
    if inserted {
        metric(
            env,
            "roomkeeper_notifications_total",
            "template",
            n.template().name(),
        )
        .await;
        enqueue(
            env,
            &Job::Deliver {
                notification_id: id.clone(),
                attempt: 1,
            },
            0,
        )
        .await?;
        push_ops(
            env,
            format!("notification:{id}:queued"),
            j!({"kind": "notification", "id": id, "template": n.template().name(),
                "channel": n.channel().as_str(), "status": "queued"}),
        )
        .await;
    }
    Ok((id, inserted))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyRequest {
    template: String,
    data: Value,
}

/// `POST /api/notify` `{"template", "data"}`: queue a notification (idempotent per subject).
pub(crate) async fn notify(
    mut req: Request,
    env: &Env,
    _key: Option<&str>,
) -> Result<Response, ApiError> {
    let r: NotifyRequest = bodies::parse_json(&req.bytes().await.map_err(internal)?)?;
    let n = Notification::from_parts(&r.template, r.data)
        .map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
    let (id, inserted) = create_notification(env, n).await?;
    json(
        202,
        &j!({"id": id, "duplicate": !inserted, "status": if inserted { "queued" } else { "existing" }}),
    )
}

#[derive(Deserialize)]
struct NotificationRow {
    id: String,
    created_at: f64,
    template: String,
    channel: String,
    payload: String,
    status: String,
    attempts: f64,
    delivered_at: Option<f64>,
    last_error: Option<String>,
}

#[derive(Deserialize, Serialize)]
struct AttemptRow {
    attempt: f64,
    at: f64,
    status: Option<f64>,
    outcome: String,
    error: Option<String>,
}

async fn load_notification(db: &D1Database, id: &str) -> Result<Option<NotificationRow>, ApiError> {
    db.prepare(
        "SELECT id, created_at, template, channel, payload, status, attempts, delivered_at, last_error \
         FROM notifications WHERE id = ?",
    )
    .bind(&[JsValue::from_str(id)])
    .map_err(internal)?
    .first(None)
    .await
    .map_err(internal)
}

/// `GET /api/notify/:id`: status and every attempt.
pub(crate) async fn get_notification(env: &Env, id: &str) -> Result<Response, ApiError> {
    let db = db(env)?;
    let n = load_notification(&db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("notification_not_found", "no such notification"))?;
    let attempts: Vec<AttemptRow> = db
        .prepare("SELECT attempt, at, status, outcome, error FROM notification_attempts WHERE notification_id = ? ORDER BY id")
        .bind(&[JsValue::from_str(id)])
        .map_err(internal)?
        .all()
        .await
        .map_err(internal)?
        .results()
        .map_err(internal)?;
    json(
        200,
        &j!({
            "id": n.id,
            "created_at_ms": n.created_at as u64,
            "template": n.template,
            "channel": n.channel,
            "status": n.status,
            "attempts": n.attempts as u64,
            "delivered_at_ms": n.delivered_at.map(|d| d as u64),
            "last_error": n.last_error,
            "payload": serde_json::from_str::<Value>(&n.payload).unwrap_or(Value::Null),
            "history": attempts.iter().map(|a| j!({
                "attempt": a.attempt as u64, "at_ms": a.at as u64,
                "status": a.status.map(|s| s as u64), "outcome": a.outcome, "error": a.error,
            })).collect::<Vec<_>>(),
        }),
    )
}

/// Delivery policy from `NOTIFY_BACKOFF_BASE_MS`, `NOTIFY_BACKOFF_MAX_MS` and
/// `NOTIFY_MAX_ATTEMPTS` (defaults in [`notify::DeliveryPolicy::DEFAULT`]).
fn delivery_policy(env: &Env) -> DeliveryPolicy {
    let n = |name: &str| setting(env, name).and_then(|v| v.trim().parse::<u64>().ok());
    let d = DeliveryPolicy::DEFAULT;
    DeliveryPolicy {
        base_ms: n("NOTIFY_BACKOFF_BASE_MS").unwrap_or(d.base_ms),
        max_ms: n("NOTIFY_BACKOFF_MAX_MS").unwrap_or(d.max_ms),
        max_attempts: n("NOTIFY_MAX_ATTEMPTS")
            .map(|v| v.clamp(1, 50) as u32)
            .unwrap_or(d.max_attempts),
    }
}

/// The delivery job: one attempt, then what the core's state machine
/// ([`notify::apply`]) decides — recorded, and done, a delayed retry, or the dead-letter
/// state.
pub(super) async fn deliver(env: &Env, id: &str, attempt: u32) -> Result<(), ApiError> {
    let db = db(env)?;
    let Some(row) = load_notification(&db, id).await? else {
        log("deliver_missing", id);
        return Ok(());
    };
    // Delivered or dead already, or this attempt recorded (a duplicate job): never deliver twice.
    let state = DeliveryState {
        status: DeliveryStatus::parse(&row.status),
        attempts: row.attempts as u32,
    };
    if !state.should_attempt(attempt) {
        return Ok(());
    }
    let n = Notification::decode(row.payload.as_bytes()).map_err(internal)?;
    let destinations = match setting(env, "NOTIFY_DESTINATIONS") {
        Some(cfg) => Destinations::parse(&cfg).map_err(|e| ApiError::Config {
            message: format!("NOTIFY_DESTINATIONS: {e}"),
        })?,
        None => Destinations::parse("{}").map_err(internal)?,
    };
    let now = now_ms();
    // No destination for the channel is a configuration choice (e.g. local demo: ops room
    // only), not a failure: the state machine records it as `skipped`, never retried.
    let result = match destinations.get(n.channel()) {
        None => Attempted::NoDestination,
        Some(url) => {
            let headers = Headers::new();
            headers
                .set("Content-Type", "application/json")
                .map_err(internal)?;
            headers.set("Idempotency-Key", id).map_err(internal)?;
            let mut init = RequestInit::new();
            init.with_method(Method::Post)
                .with_headers(headers)
                .with_body(Some(JsValue::from_str(&n.render().to_string())));
            let request = Request::new_with_init(url.as_str(), &init).map_err(internal)?;
            match Fetch::Request(request).send().await {
                Ok(resp) => Attempted::Answered {
                    status: resp.status_code(),
                    retry_after_ms: resp
                        .headers()
                        .get("Retry-After")
                        .ok()
                        .flatten()
                        .and_then(|h| notify::parse_retry_after(&h)),
                },
                Err(e) => Attempted::NetworkError(e.to_string()),
            }
        }
    };
    let (_, effects) = notify::apply(&delivery_policy(env), n.template(), attempt, result, now);
    for effect in effects {
        match effect {
            Effect::Record(r) => record_attempt(&db, id, &r).await?,
            Effect::Enqueue { attempt, delay_s } => {
                enqueue(
                    env,
                    &Job::Deliver {
                        notification_id: id.to_string(),
                        attempt,
                    },
                    delay_s,
                )
                .await?
            }
            Effect::Count { outcome } => {
                crate::glue::ops::add(
                    env,
                    vec![Delta::new(
                        "roomkeeper_deliveries_total",
                        &[("outcome", outcome)],
                        1,
                    )],
                )
                .await
            }
            // A dead delivery is an alert — the state machine leaves alerts themselves out.
            Effect::AlertDead {
                attempts,
                last_error,
            } => {
                if let Ok(config) = crate::config::Config::from_lookup(|k| setting(env, k)) {
                    crate::glue::ops::raise_alert(
                        env,
                        &config,
                        "delivery_dead",
                        &format!("delivery-dead:{id}"),
                        notify::Severity::Warning,
                        format!(
                            "Notification delivery failed: {} to {}",
                            row.template, row.channel
                        ),
                        Some(format!(
                            "{attempts} attempt(s); last error: {}",
                            last_error.as_deref().unwrap_or("unknown")
                        )),
                    )
                    .await;
                }
            }
            Effect::PushOps {
                attempt,
                status,
                http_status,
                error,
            } => {
                push_ops(
                    env,
                    format!("delivery:{id}:{attempt}"),
                    j!({"kind": "delivery", "id": id, "template": row.template,
                        "channel": row.channel, "attempt": attempt, "status": status.as_str(),
                        "http_status": http_status, "error": error}),
                )
                .await
            }
        }
    }
    Ok(())
}

/// Writes an attempt row and the notification's new state in one D1 batch.
async fn record_attempt(db: &D1Database, id: &str, r: &Record) -> Result<(), ApiError> {
    let status = r.status.as_str();
    db.batch(vec![
        db.prepare(
            "INSERT INTO notification_attempts (notification_id, attempt, at, status, outcome, error) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&[
            JsValue::from_str(id),
            num(r.attempt),
            num(r.at_ms as f64),
            r.http_status.map(num).unwrap_or(JsValue::NULL),
            JsValue::from_str(r.outcome),
            opt_str(r.error.as_deref()),
        ])
        .map_err(internal)?,
        db.prepare(
            "UPDATE notifications SET status = ?, attempts = ?, last_error = ?, \
             delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END WHERE id = ?",
        )
        .bind(&[
            JsValue::from_str(status),
            num(r.attempt),
            opt_str(r.error.as_deref()),
            JsValue::from_str(status),
            num(r.at_ms as f64),
            JsValue::from_str(id),
        ])
        .map_err(internal)?,
    ])
    .await
    .map_err(internal)?;
    Ok(())
}
