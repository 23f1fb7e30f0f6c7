//! Inbound webhooks: signature check, attempt log, and a verified payment event turned into
//! a `payment` notification.

use serde_json::{json as j, Value};
use wasm_bindgen::JsValue;
use worker::{Env, Request, Response};

use super::jobs::{log, metric};
use super::notify::create_notification;
use crate::glue::d1::{db, num, opt_str};
use crate::glue::http::{internal, json, now_ms};
use crate::glue::settings::webhook_secrets;
use crate::http::error::ApiError;
use crate::services::notify::{self, Notification, PaymentEvent};

/// `POST /api/webhooks/:source`: verifies the signature (secret per source from
/// `WEBHOOK_SECRETS`, a JSON object), logs every attempt, and turns a verified payment event
/// into a `payment` notification. Bad signatures are logged and refused, never processed.
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
    let bytes = req.bytes().await.map_err(internal)?;
    if bytes.len() > notify::MAX_EVENT_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: notify::MAX_EVENT_BODY_BYTES,
        });
    }
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
    if let Err(e) = notify::verify_signature(
        secret.as_bytes(),
        &ts,
        &sig,
        &bytes,
        now / 1000,
        notify::DEFAULT_TOLERANCE_S,
    ) {
        record(false, None, e.code())?
            .run()
            .await
            .map_err(internal)?;
        log("webhook_refused", e.code());
        metric(env, "roomkeeper_webhook_events_total", "outcome", e.code()).await;
        return Err(ApiError::unauthorized(e.code(), e.to_string()));
    }
    let event = match PaymentEvent::parse(&bytes) {
        Ok(ev) => ev,
        Err(e) => {
            record(false, None, e.code())?
                .run()
                .await
                .map_err(internal)?;
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
