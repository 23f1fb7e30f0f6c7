//! Pusher webhooks: raised events become one queued job per webhook URL; each attempt is
//! signed with the app's secret and retried like a notification; a dead one is kept in D1
//! (`pusher_webhook_dead`, the newest `PUSHER_WEBHOOK_DEAD_LETTERS` per app), counted and
//! alerted, and operators read it with `GET /api/admin/pusher/webhooks/dead`.

use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;
use worker::{Env, Request, Response};

use crate::glue::d1;
use crate::glue::http::{internal, json, list_query, log_error, now_ms};
use crate::glue::ops::alerts::raise_alert;
use crate::glue::services::jobs::{enqueue, Job};
use crate::glue::settings;
use crate::http::error::ApiError;
use crate::metrics::Delta;
use crate::pusher::webhook::{self, WebhookEvent};
use crate::services::notify::{self, next_action, parse_retry_after, Action, Outcome};

use super::apps::apps;

/// Most dead letters one `GET /api/admin/pusher/webhooks/dead` answers.
pub const MAX_DEAD_PAGE: usize = 500;

/// Raises webhook events of an app: one queued job per webhook URL that wants any of them
/// (`PUSHER_APPS` `webhooks`), delivered with retries like notifications. Nothing when the app
/// has no webhooks.
pub(crate) async fn webhook(env: &Env, app_id: &str, events: Vec<WebhookEvent>) {
    let Ok(apps) = apps(env) else { return };
    let Some(app) = apps.by_id(app_id) else {
        return;
    };
    for target in &app.webhooks {
        let wanted: Vec<WebhookEvent> = events
            .iter()
            .filter(|e| target.wants(e.kind()))
            .cloned()
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let job = Job::PusherWebhook {
            app_id: app.id.clone(),
            url: target.url.clone(),
            body: webhook::body(now_ms(), &wanted),
            attempt: 1,
        };
        if let Err(e) = enqueue(env, &job, 0).await {
            log_error("pusher_webhook_enqueue", &e.to_string());
        }
    }
}

/// One attempt at a webhook (the queue consumer's job): signed with the app's secret, then
/// done, retried later (5xx, 408, 429, no answer; backoff as for notifications) or dead
/// (other 4xx, attempts exhausted: logged with its body, counted, and alerted).
pub(crate) async fn deliver_webhook(
    env: &Env,
    app_id: &str,
    url: &str,
    body: String,
    attempt: u32,
) -> Result<(), ApiError> {
    let apps = apps(env)?;
    let Some(app) = apps.by_id(app_id) else {
        return Ok(()); // the app is gone: nothing to sign with, nobody to tell
    };
    let headers = worker::Headers::new();
    for (k, v) in webhook::headers(&app.key, &app.secret, &body) {
        headers.set(k, &v).map_err(internal)?;
    }
    let mut init = worker::RequestInit::new();
    init.with_method(worker::Method::Post)
        .with_headers(headers)
        .with_body(Some(wasm_bindgen::JsValue::from_str(&body)));
    let request = Request::new_with_init(url, &init).map_err(internal)?;
    let outcome = match worker::Fetch::Request(request).send().await {
        Ok(r) => Outcome::Status {
            status: r.status_code(),
            retry_after_ms: r
                .headers()
                .get("Retry-After")
                .ok()
                .flatten()
                .and_then(|h| parse_retry_after(&h)),
        },
        Err(_) => Outcome::NetworkError,
    };
    let label = match next_action(attempt, outcome) {
        Action::Done => "delivered",
        Action::Retry { delay_ms } => {
            let job = Job::PusherWebhook {
                app_id: app_id.to_string(),
                url: url.to_string(),
                body,
                attempt: attempt + 1,
            };
            enqueue(env, &job, (delay_ms / 1000).max(1) as u32).await?;
            "retried"
        }
        Action::DeadLetter { reason } => {
            let status = match outcome {
                Outcome::Status { status, .. } => Some(status),
                Outcome::NetworkError => None,
            };
            let dead = DeadLetter {
                id: 0,
                at: now_ms(),
                app_id: app_id.to_string(),
                url: url.to_string(),
                reason: reason.to_string(),
                attempts: attempt,
                last_status: status,
                body,
            };
            keep_dead_letter(env, &dead).await;
            reason
        }
    };
    crate::glue::ops::metrics::add(
        env,
        vec![Delta::new(
            "roomkeeper_pusher_webhooks_total",
            &[("outcome", label)],
            1,
        )],
    )
    .await;
    Ok(())
}

/// A webhook that could not be delivered, as kept in D1 and listed to operators.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeadLetter {
    id: u64,
    /// When it was given up, ms since the epoch.
    at: u64,
    app_id: String,
    url: String,
    /// `permanent_status`, `unexpected_status` or `attempts_exhausted`.
    reason: String,
    attempts: u32,
    /// The last answer's HTTP status (none: no answer).
    last_status: Option<u16>,
    /// The signed body, as it was sent (`{time_ms, events}`).
    body: String,
}

/// Keeps a dead letter (the newest `PUSHER_WEBHOOK_DEAD_LETTERS` of its app stay), logs it and
/// raises a `pusher_webhook_dead` alert. Failures are logged: the letter is dead either way.
async fn keep_dead_letter(env: &Env, dead: &DeadLetter) {
    log_error(
        "pusher_webhook_dead",
        &serde_json::json!({"app": dead.app_id, "url": dead.url, "reason": dead.reason,
            "attempts": dead.attempts, "status": dead.last_status, "body": dead.body})
        .to_string(),
    );
    let Ok(config) = settings::config(env) else {
        return;
    };
    if let Err(e) = store_dead_letter(env, dead, config.pusher_dead_letters).await {
        log_error("pusher_webhook_dead_store", &e.to_string());
    }
    raise_alert(
        env,
        &config,
        "pusher_webhook_dead",
        &format!("pusher-webhook-dead:{}:{}", dead.app_id, dead.at),
        notify::Severity::Warning,
        format!("Pusher webhook dead for app {}", dead.app_id),
        Some(format!(
            "{} to {} after {} attempt(s)",
            dead.reason, dead.url, dead.attempts
        )),
    )
    .await;
}

async fn store_dead_letter(env: &Env, dead: &DeadLetter, keep: u64) -> Result<(), ApiError> {
    let db = d1::db(env)?;
    let insert = db
        .prepare(
            "INSERT INTO pusher_webhook_dead (at, app_id, url, reason, attempts, last_status, body) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&[
            d1::num(dead.at as f64),
            JsValue::from_str(&dead.app_id),
            JsValue::from_str(&dead.url),
            JsValue::from_str(&dead.reason),
            d1::num(dead.attempts),
            dead.last_status.map_or(JsValue::NULL, d1::num),
            JsValue::from_str(&dead.body),
        ])
        .map_err(internal)?;
    // The bound: only the newest `keep` of the app stay.
    let prune = db
        .prepare(
            "DELETE FROM pusher_webhook_dead WHERE app_id = ?1 AND id <= \
             (SELECT id FROM pusher_webhook_dead WHERE app_id = ?1 ORDER BY id DESC \
              LIMIT 1 OFFSET ?2)",
        )
        .bind(&[JsValue::from_str(&dead.app_id), d1::num(keep as f64)])
        .map_err(internal)?;
    db.batch(vec![insert, prune]).await.map_err(internal)?;
    Ok(())
}

/// `GET /api/admin/pusher/webhooks/dead?app=&limit=` (admin scope): the newest dead letters,
/// of one app or of all, newest first (`limit` 1–500, default 100).
pub(crate) async fn webhook_dead_letters(req: Request, env: &Env) -> Result<Response, ApiError> {
    let (filter, limit) = list_query(&req, "app", MAX_DEAD_PAGE)?;
    let db = d1::db(env)?;
    let columns = "id, at, app_id, url, reason, attempts, last_status, body";
    let rows: Vec<DeadLetter> = match &filter {
        Some(a) => {
            d1::all(
                &db,
                &format!(
                    "SELECT {columns} FROM pusher_webhook_dead WHERE app_id = ? \
                     ORDER BY id DESC LIMIT ?"
                ),
                &[JsValue::from_str(a), d1::num(limit as f64)],
            )
            .await?
        }
        None => {
            d1::all(
                &db,
                &format!("SELECT {columns} FROM pusher_webhook_dead ORDER BY id DESC LIMIT ?"),
                &[d1::num(limit as f64)],
            )
            .await?
        }
    };
    json(200, &serde_json::json!({ "dead": rows }))
}
