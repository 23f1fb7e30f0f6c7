//! Work done after the response: the [`Job`]s that travel on the queue, enqueueing, the ops
//! room push, counters and the JSON log line every job step writes.

use serde::{Deserialize, Serialize};
use serde_json::{json as j, Value};
use worker::Env;

use crate::glue::http::internal;
use crate::glue::rooms::room_call;
use crate::glue::stub::Call;
use crate::http::bodies::RoomBroadcast;
use crate::http::error::ApiError;
use crate::http::route::{RoomKey, OPS_ROOM};
use crate::internal::Op;
use crate::metrics::Delta;

/// Queue binding.
const JOBS: &str = "JOBS";

/// A background job. Travels as a JSON string (a JS object body would lose its fields).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub(crate) enum Job {
    /// Value, score and route a stored lead, then notify.
    Enrich { lead_id: String },
    /// Deliver a notification to its webhook (attempt numbers start at 1).
    Deliver {
        notification_id: String,
        attempt: u32,
    },
    /// Deliver a Pusher app's webhook body to one of its URLs (attempt numbers start at 1).
    PusherWebhook {
        app_id: String,
        url: String,
        body: String,
        attempt: u32,
    },
}

/// Sends a job to the queue, delivered after `delay_s` seconds.
pub(crate) async fn enqueue(env: &Env, job: &Job, delay_s: u32) -> Result<(), ApiError> {
    let body = serde_json::to_string(job).map_err(internal)?;
    let queue = env.queue(JOBS).map_err(internal)?;
    let msg = worker::MessageBuilder::new(body)
        .delay_seconds(delay_s)
        .build();
    queue.send(msg).await.map_err(internal)
}

/// Pushes an event to the ops room. The key makes a retried job's push a no-op.
pub(super) async fn push_ops(env: &Env, key: String, event: Value) {
    let b = RoomBroadcast {
        body: event,
        name: Some("roomkeeper".into()),
        idempotency_key: Some(key),
        key_name: Some("system".into()),
        sender: None,
    };
    let body = match serde_json::to_string(&b) {
        Ok(b) => b,
        Err(_) => return,
    };
    let call = Call::new(Op::RoomBroadcast).body(body);
    if let Err(e) = room_call(env, &RoomKey::Named(OPS_ROOM.into()), call).await {
        log("ops_push_failed", &e.log_text());
    }
}

/// Adds one to a counter with one label.
pub(super) async fn metric(env: &Env, name: &str, label: &str, value: &str) {
    crate::glue::ops::metrics::add(env, vec![Delta::new(name, &[(label, value)], 1)]).await;
}

/// Writes one JSON log line `{"level":"info","event":…,"detail":…}`.
pub(super) fn log(event: &str, detail: &str) {
    worker::console_log!(
        "{}",
        j!({"level": "info", "event": event, "detail": detail})
    );
}
