//! Notifications over D1 and the queue: storing one per idempotency key (and queueing its
//! delivery, [`super::delivery`]), `POST /api/notify` and `GET /api/notify/:id`.

use serde::{Deserialize, Serialize};
use serde_json::{json as j, Value};
use wasm_bindgen::JsValue;
use worker::{D1Database, Env, Request, Response};

use super::jobs::{enqueue, metric, push_ops, Job};
use crate::glue::d1::{self, db, num};
use crate::glue::http::{internal, json, now_ms, read_json};
use crate::http::error::ApiError;
use crate::services::notify::Notification;

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
    let r: NotifyRequest = read_json(&mut req).await?;
    let n = Notification::from_parts(&r.template, r.data)
        .map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
    let (id, inserted) = create_notification(env, n).await?;
    json(
        202,
        &j!({"id": id, "duplicate": !inserted, "status": if inserted { "queued" } else { "existing" }}),
    )
}

#[derive(Deserialize)]
pub(super) struct NotificationRow {
    pub(super) id: String,
    pub(super) created_at: f64,
    pub(super) template: String,
    pub(super) channel: String,
    pub(super) payload: String,
    pub(super) status: String,
    pub(super) attempts: f64,
    pub(super) delivered_at: Option<f64>,
    pub(super) last_error: Option<String>,
}

#[derive(Deserialize, Serialize)]
struct AttemptRow {
    attempt: f64,
    at: f64,
    status: Option<f64>,
    outcome: String,
    error: Option<String>,
}

pub(super) async fn load_notification(
    db: &D1Database,
    id: &str,
) -> Result<Option<NotificationRow>, ApiError> {
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
    let attempts: Vec<AttemptRow> = d1::all(
        &db,
        "SELECT attempt, at, status, outcome, error FROM notification_attempts \
         WHERE notification_id = ? ORDER BY id",
        &[JsValue::from_str(id)],
    )
    .await?;
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
