//! Inbound webhooks: signature check, attempt log, and a verified payment event turned into
//! a `payment` notification.

use serde_json::{json as j, Value};
use wasm_bindgen::JsValue;
use worker::{Env, Request, Response};

use super::jobs::{log, metric};
use super::notify::create_notification;
use crate::glue::d1::{db, num, opt_str};
use crate::glue::http::{internal, json, now_ms, read_body};
use crate::glue::settings::webhook_secrets;
use crate::http::error::ApiError;
use crate::services::notify::{self, Notification, PaymentEvent};

/// `POST /api/webhooks/:source`: verifies the signature (secret per source from
/// `WEBHOOK_SECRETS`, a JSON object), logs every attempt, and turns a verified payment event
/// into a `payment` notification. Bad signatures are counted, kept in a log of at most
/// [`notify::MAX_REJECTED_WEBHOOKS`] rows (the newest) and refused, never processed.
pub(crate) async fn webhook(
    mut req: Request,
    env: &Env,
    source: &str,
) -> Result<Response, ApiError> {
    let secrets = webhook_secrets(env)?;
    let secret = secrets
        .get(source)
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::not_found("unknown_webhook_source", "no webhook source of that name")
        })?
        .to_string();
    let bytes = read_body(&mut req, notify::MAX_EVENT_BODY_BYTES).await?;
    let header = |name: &str| req.headers().get(name).ok().flatten().unwrap_or_default();
    let (ts, sig) = (
        header(notify::TIMESTAMP_HEADER),
        header(notify::SIGNATURE_HEADER),
    );
    let db = db(env)?;
    let now = now_ms();
    let record = |verified: bool, event_id: Option<&str>, outcome: &str| {
        db.prepare("INSERT OR IGNORE INTO webhook_events (at, source, event_id, verified, outcome) VALUES (?, ?, ?, ?, ?)")
            .bind(&[
                num(now as f64),
                JsValue::from_str(source),
                opt_str(event_id),
                num(u8::from(verified)),
                JsValue::from_str(outcome),
            ])
            .map_err(internal)
    };
    // A refusal is counted first, then kept in a bounded log: the row is inserted and every
    // unverified row but the newest MAX_REJECTED_WEBHOOKS pruned in one batch, so no number
    // of bad requests grows the table.
    let refuse = |code: &'static str| {
        let record = record(false, None, code);
        let db = &db;
        async move {
            log("webhook_refused", code);
            metric(env, "roomkeeper_webhook_events_total", "outcome", code).await;
            let prune = db
                .prepare(
                    "DELETE FROM webhook_events WHERE verified = 0 AND id <= \
                     (SELECT id FROM webhook_events WHERE verified = 0 \
                      ORDER BY id DESC LIMIT 1 OFFSET ?)",
                )
                .bind(&[num(notify::MAX_REJECTED_WEBHOOKS as f64)])
                .map_err(internal)?;
            db.batch(vec![record?, prune]).await.map_err(internal)?;
            Ok::<(), ApiError>(())
        }
    };
    if let Err(e) = notify::verify_signature(
        secret.as_bytes(),
        &ts,
        &sig,
        &bytes,
        now / 1000,
        notify::DEFAULT_TOLERANCE_S,
    ) {
        refuse(e.code()).await?;
        return Err(ApiError::unauthorized(e.code(), e.to_string()));
    }
    let event = match PaymentEvent::parse(&bytes) {
        Ok(ev) => ev,
        Err(e) => {
            refuse(e.code()).await?;
            return Err(ApiError::unprocessable(e.code(), e.to_string()));
        }
    };
    let fresh = record(true, Some(&event.id), "accepted")?
        .run()
        .await
        .map_err(internal)?
        .meta()
        .map_err(internal)?
        .and_then(|m| m.changes)
        .unwrap_or(0)
        > 0;
    metric(
        env,
        "roomkeeper_webhook_events_total",
        "outcome",
        if fresh { "accepted" } else { "duplicate" },
    )
    .await;
    if !fresh {
        return json(
            200,
            &j!({"accepted": true, "duplicate": true, "event": event.id}),
        );
    }
    let (id, _) = create_notification(env, Notification::Payment(event.clone())).await?;
    json(
        202,
        &j!({"accepted": true, "duplicate": false, "event": event.id, "notification": id}),
    )
}
