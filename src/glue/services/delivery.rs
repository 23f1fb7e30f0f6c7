//! The delivery job (wasm32 only): one attempt at a notification's webhook, then what the
//! core's delivery state machine ([`notify::apply`]) decides — recorded, done, a delayed
//! retry, or the dead-letter state (which raises an alert).

use serde_json::json as j;
use wasm_bindgen::JsValue;
use worker::{D1Database, Env, Fetch, Headers, Method, Request, RequestInit};

use super::jobs::{enqueue, log, push_ops, Job};
use super::notify::load_notification;
use crate::glue::d1::{db, num, opt_str};
use crate::glue::http::{internal, now_ms};
use crate::glue::ops::alerts::raise_alert;
use crate::glue::ops::metrics::add;
use crate::glue::settings;
use crate::http::error::ApiError;
use crate::metrics::Delta;
use crate::services::notify::{
    self, Attempted, DeliveryState, DeliveryStatus, Effect, Notification, Record,
};

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
    let config = settings::config(env)?;
    let destinations = settings::notify_destinations(env)?;
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
    let (_, effects) = notify::apply(&config.delivery, n.template(), attempt, result, now);
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
                add(
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
                raise_alert(
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
