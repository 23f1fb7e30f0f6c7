//! The admin endpoints (wasm32 only): closing rooms and connections, the lock override, the
//! registries of rooms and sessions, and the audit trail. Every admin action that changes
//! something goes through [`audited`]: the object acts, and only a success is recorded, with
//! who did it and why.

use serde::Deserialize;
use serde_json::{json as j, Value};
use wasm_bindgen::JsValue;
use worker::{Env, Request, Response};

use crate::glue::coordination;
use crate::glue::d1;
use crate::glue::http::{internal, json, list_query, now_ms, read_json};
use crate::glue::rooms::room_call;
use crate::glue::stub::Call;
use crate::http::error::ApiError;
use crate::http::route::RoomKey;
use crate::internal::Op;

use super::metrics::registry;

/// Longest close reason (WebSocket close reasons are at most 123 bytes).
pub const MAX_CLOSE_REASON_BYTES: usize = 100;

/// Most audit rows one page returns.
pub const MAX_AUDIT_PAGE: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseRequest {
    reason: String,
    /// One Pusher gateway shard only (`reconnect`), by index.
    #[serde(default)]
    shard: Option<u32>,
}

/// Reads `{"reason"}` (1–[`MAX_CLOSE_REASON_BYTES`] bytes) from an admin request.
async fn close_reason(req: &mut Request) -> Result<String, ApiError> {
    close_request(req).await.map(|c| c.reason)
}

async fn close_request(req: &mut Request) -> Result<CloseRequest, ApiError> {
    let c: CloseRequest = read_json(req).await?;
    if c.reason.trim().is_empty() || c.reason.len() > MAX_CLOSE_REASON_BYTES {
        return Err(ApiError::bad_request(
            "invalid_reason",
            format!("reason is 1-{MAX_CLOSE_REASON_BYTES} bytes"),
        ));
    }
    Ok(c)
}

/// `POST /api/admin/pusher/apps/:id/reconnect {"reason", "shard"?}`: closes the app's Pusher
/// sockets — of every gateway shard, or of one — with 4200, so that clients reconnect at once
/// (to shards picked afresh: the way to spread sockets after `PUSHER_GATEWAY_SHARDS` changed,
/// or to empty a shard); audited.
pub(crate) async fn admin_pusher_reconnect(
    mut req: Request,
    env: &Env,
    app_id: &str,
    key_name: Option<&str>,
) -> Result<Response, ApiError> {
    let c = close_request(&mut req).await?;
    let answer = crate::glue::pusher::reconnect(env, app_id, c.shard).await?;
    let reason = c.reason;
    let action = Action {
        subject: format!("pusher:{app_id}"),
        action: "pusher_reconnect",
        key_name,
        detail: &|v| j!({"reason": reason, "shard": c.shard, "closed": v["closed"]}),
    };
    audited(env, action, answer).await
}

/// What one admin action did, for the audit trail.
struct Action<'a> {
    subject: String,
    action: &'static str,
    key_name: Option<&'a str>,
    /// The audit detail, from the object's answer.
    detail: &'a dyn Fn(&Value) -> Value,
}

/// Answers an object's `(status, body)` for an admin action: a failure is passed on as is;
/// a success is audited (who, what, why) before it is answered.
async fn audited(
    env: &Env,
    action: Action<'_>,
    (status, v): (u16, Value),
) -> Result<Response, ApiError> {
    if status != 200 {
        return json(status, &v);
    }
    let actor = format!("api:{}", action.key_name.unwrap_or("key"));
    let detail = (action.detail)(&v);
    audit(env, &action.subject, action.action, &actor, &detail).await?;
    json(200, &v)
}

/// A room's answer to an admin call, as `(status, body)`.
async fn room_answer(env: &Env, key: &RoomKey, call: Call) -> Result<(u16, Value), ApiError> {
    let mut r = room_call(env, key, call).await?;
    let status = r.status_code();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// `POST /api/admin/rooms/:room/close {"reason"}`: closes every connection with 4000 and the
/// reason (clients may reconnect later), and audits who did it.
pub(crate) async fn admin_close_room(
    mut req: Request,
    env: &Env,
    key: &RoomKey,
    key_name: Option<&str>,
) -> Result<Response, ApiError> {
    let reason = close_reason(&mut req).await?;
    let call = Call::new(Op::RoomClose).body(j!({ "reason": reason }).to_string());
    let answer = room_answer(env, key, call).await?;
    let action = Action {
        subject: format!("room:{}", key.as_str()),
        action: "room_closed",
        key_name,
        detail: &|v| j!({"reason": reason, "closed": v["closed"]}),
    };
    audited(env, action, answer).await
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
    let call =
        Call::new(Op::RoomCloseConnection).body(j!({ "conn": conn, "reason": reason }).to_string());
    let answer = room_answer(env, key, call).await?;
    let action = Action {
        subject: format!("room:{}", key.as_str()),
        action: "connection_closed",
        key_name,
        detail: &|v| j!({"reason": reason, "conn": conn, "user": v["user"]}),
    };
    audited(env, action, answer).await
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
    let answer = coordination::call(env, Op::LockForceRelease, name, None).await?;
    let action = Action {
        subject: format!("lock:{name}"),
        action: "lock_override",
        key_name,
        detail: &|v| {
            j!({"reason": reason, "released": v["released"], "holder": v["holder"],
                "token": v["token"]})
        },
    };
    audited(env, action, answer).await
}

/// `GET /api/admin/rooms`: rooms with open connections.
pub(crate) async fn admin_rooms(env: &Env) -> Result<Response, ApiError> {
    registry(env, Op::MetricsRooms).await
}

/// `GET /api/admin/sessions`: voice and chat sessions with open sockets, from the registry the
/// session objects keep in the Metrics object.
pub(crate) async fn admin_sessions(env: &Env) -> Result<Response, ApiError> {
    registry(env, Op::MetricsSessions).await
}

/// Writes one audit row.
pub(crate) async fn audit(
    env: &Env,
    subject: &str,
    action: &str,
    actor: &str,
    detail: &Value,
) -> Result<(), ApiError> {
    d1::db(env)?
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

/// `GET /api/admin/audit?subject=&limit=`: newest first.
pub(crate) async fn admin_audit(req: Request, env: &Env) -> Result<Response, ApiError> {
    let (filter, limit) = list_query(&req, "subject", MAX_AUDIT_PAGE)?;
    let db = d1::db(env)?;
    let rows: Vec<AuditRow> =
        match &filter {
            Some(s) => {
                d1::all(
                    &db,
                    "SELECT id, at, subject, action, actor, detail FROM audit WHERE subject = ? \
                 ORDER BY id DESC LIMIT ?",
                    &[JsValue::from_str(s), JsValue::from_f64(limit as f64)],
                )
                .await?
            }
            None => d1::all(
                &db,
                "SELECT id, at, subject, action, actor, detail FROM audit ORDER BY id DESC LIMIT ?",
                &[JsValue::from_f64(limit as f64)],
            )
            .await?,
        };
    let entries: Vec<Value> = rows
        .iter()
        .map(|r| {
            j!({"id": r.id as u64, "at_ms": r.at as u64, "subject": r.subject, "action": r.action,
                "actor": r.actor, "detail": r.detail.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok())})
        })
        .collect();
    json(200, &j!({ "entries": entries }))
}
