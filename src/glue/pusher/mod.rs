//! The Pusher Channels edge of the router: `GET /app/{key}` sockets go to one of the app's
//! gateway shards (objects/pusher/), and the signed REST API (`/apps/{id}/…`) publishes into
//! the channels' rooms. Answers and errors are Pusher's (plain-text REST errors, close codes),
//! not the native API's JSON.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use worker::{Env, Request, Response, WebSocketPair};

use crate::config::Config;
use crate::http::bodies::RoomBroadcast;
use crate::http::error::ApiError;
use crate::internal::{Binding, Op};
use crate::obs;
use crate::pusher::apps::App;
use crate::pusher::history;
use crate::pusher::rest::{self, RestError, SignedRequest};
use crate::pusher::rest_body::{self, ChannelStats};
use crate::pusher::shard::socket_sender;
use crate::pusher::wire::{self, close};
use crate::rooms::shards::channel_key;

use super::http::{internal, now_ms, read_body};
use super::rooms::channel_call;
use super::stub::{stub, Call};

mod apps;
mod webhooks;
pub(crate) use apps::apps;
pub(crate) use webhooks::{deliver_webhook, webhook, webhook_dead_letters};

/// Internal header: the gateway shard's own object name.
pub(crate) const SHARD_HEADER: &str = "X-Roomkeeper-Shard";
/// Internal header: the app a gateway socket belongs to.
pub(crate) const APP_HEADER: &str = "X-Roomkeeper-Pusher-App";

/// The oldest protocol version a socket may ask for (`?protocol=`); older ones, and sockets
/// that name none, are closed with 4007 / 4008 right after the upgrade.
pub const MIN_PROTOCOL: u32 = 5;

/// Most gateway shards an app may have (`PUSHER_GATEWAY_SHARDS` ≤ 1024; the socket id's first
/// number modulo this is its shard).
pub const MAX_SHARDS: u32 = 1024;

/// Largest REST request body (a full `batch_events` of maximal events fits).
pub const MAX_REST_BODY_BYTES: usize = 256 * 1024;

/// `PUSHER_GATEWAY_SHARDS`: gateway objects per app (1–1024, [`Config::pusher_shards`]).
pub(crate) fn shards(env: &Env) -> Result<u32, ApiError> {
    Ok(super::settings::config(env)?.pusher_shards)
}

/// Whether the router hands this path to the Pusher edge.
/// (`/users/{id}/terminate_connections` without the `/apps/{id}` prefix is the path the
/// Python SDK 3.3.4 sends; its app is the one of its `auth_key`.)
pub(crate) fn owns(path: &str) -> bool {
    path.starts_with("/app/") || path.starts_with("/apps/") || path.starts_with("/users/")
}

/// Handles a Pusher request: a socket or a REST call.
pub(crate) async fn handle(
    req: Request,
    env: &Env,
    config: &Config,
    request_id: &str,
) -> Result<Response, ApiError> {
    let path = req.path();
    if let Some(key) = path.strip_prefix("/app/") {
        let key = key.to_string();
        super::http::require_upgrade(&req)?;
        // A socket spends the client address's `connect` budget, as native sockets do.
        let ip = super::coordination::client_ip(&req);
        super::coordination::enforce(env, config, "connect", &format!("ip:{ip}")).await?;
        return socket(req, env, &key, request_id).await;
    }
    match rest_call(req, env).await {
        Ok(r) => Ok(r),
        Err(e) => rest_error(&e),
    }
}

/// `GET /app/{key}`: an unknown key gets a socket that is closed at once with 4001 (what
/// pusher-js expects: do not reconnect), a disabled app 4003; otherwise the socket goes to
/// one of the app's shards, chosen at random so one app's sockets spread over all of them.
async fn socket(
    req: Request,
    env: &Env,
    key: &str,
    request_id: &str,
) -> Result<Response, ApiError> {
    let apps = apps(env)?;
    let url = req.url().map_err(internal)?;
    let protocol = url
        .query_pairs()
        .find(|(k, _)| k == "protocol")
        .map(|(_, v)| v.to_string());
    let supported = |v: &str| {
        v.parse::<u32>()
            .is_ok_and(|v| (MIN_PROTOCOL..=crate::pusher::PROTOCOL_VERSION).contains(&v))
    };
    let refusal = match (apps.by_key(key), protocol.as_deref()) {
        (_, None) => Some((
            close::NO_PROTOCOL,
            "No protocol version supplied".to_string(),
        )),
        (_, Some(v)) if !supported(v) => Some((
            close::UNSUPPORTED_PROTOCOL,
            format!("Unsupported protocol version {v}"),
        )),
        (None, _) => Some((
            close::APP_NOT_FOUND,
            format!("App key {key} not in this cluster"),
        )),
        (Some(app), _) if !app.enabled => {
            Some((close::APP_DISABLED, "App is disabled".to_string()))
        }
        (Some(_), _) => None,
    };
    if let Some((code, message)) = refusal {
        let pair = WebSocketPair::new().map_err(internal)?;
        pair.server.accept().map_err(internal)?;
        let _ = pair
            .server
            .send_with_str(wire::error_frame(Some(code), &message));
        let _ = pair.server.close(Some(code), Some(&message));
        return Response::from_websocket(pair.client).map_err(internal);
    }
    let app = apps.by_key(key).expect("checked above");
    let n = shards(env)?;
    let pick = (js_sys::Math::random() * f64::from(n)) as u32 % n;
    let name = format!("{}:{pick}", app.id);
    let response = Call::new(Op::GatewaySocket)
        .headers_from(req.headers(), |k| {
            !k.eq_ignore_ascii_case(SHARD_HEADER) && !k.eq_ignore_ascii_case(APP_HEADER)
        })?
        .header(SHARD_HEADER, &name)?
        .header(APP_HEADER, &app.id)?
        .header(obs::REQUEST_ID_HEADER, request_id)?
        .send(&stub(env, Binding::Gateway, &name)?)
        .await
        .map_err(internal)?;
    super::http::owned(response).await
}

/// A REST error as Pusher answers it: the status and a plain-text message.
fn rest_error(e: &RestError) -> Result<Response, ApiError> {
    let mut r = Response::ok(e.body())
        .map_err(internal)?
        .with_status(e.status());
    r.headers_mut()
        .set("Content-Type", e.content_type())
        .map_err(internal)?;
    Ok(r)
}

fn unexpected(e: impl std::fmt::Display) -> RestError {
    super::http::log_error("pusher_rest", &e.to_string());
    RestError::Forbidden("internal error".into())
}

/// A signed REST call: authenticated against the app of its path, then dispatched.
async fn rest_call(mut req: Request, env: &Env) -> Result<Response, RestError> {
    let path = req.path();
    let mut segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let url = req.url().map_err(unexpected)?;
    let query = rest::parse_query(url.query().unwrap_or(""))?;
    let apps = apps(env).map_err(unexpected)?;
    let app = if segments.first() == Some(&"users") {
        // The Python SDK's terminate path: the app is the one whose key signed it.
        let key = query
            .iter()
            .find(|(k, _)| k == "auth_key")
            .map(|(_, v)| v.as_str());
        let app = key
            .and_then(|k| apps.by_key(k))
            .ok_or(RestError::AppNotFound)?;
        segments.splice(0..0, ["apps", app.id.as_str()]);
        app.clone()
    } else {
        let app_id = segments.get(1).copied().unwrap_or_default();
        apps.by_id(app_id).ok_or(RestError::AppNotFound)?.clone()
    };
    if !app.enabled {
        return Err(RestError::AppDisabled);
    }
    let body = read_body(&mut req, MAX_REST_BODY_BYTES)
        .await
        .map_err(|e| match e {
            ApiError::PayloadTooLarge { .. } => {
                RestError::PayloadTooLarge(format!("body over {MAX_REST_BODY_BYTES} bytes"))
            }
            other => RestError::BadRequest(other.to_string()),
        })?;
    let method = req.method().to_string();
    let signed = SignedRequest {
        method: &method,
        path: &path,
        query: &query,
        body: &body,
    };
    rest::authenticate(&signed, &app.key, &app.secret, now_ms() / 1000)?;
    let limits = super::settings::config(env)
        .map_err(unexpected)?
        .pusher
        .clone();
    let rest: Vec<&str> = segments[2..].to_vec();
    match (method.as_str(), rest.as_slice()) {
        ("POST", ["events"]) => {
            let t = rest_body::parse_trigger(&body, &limits)?;
            let mut stats = Vec::new();
            for channel in &t.channels {
                let s = trigger(env, &app, channel, &t.name, &t.data, t.socket_id.as_deref());
                stats.push((channel.clone(), s.await?));
            }
            json_ok(&rest_body::trigger_response(t.info, &stats))
        }
        ("POST", ["batch_events"]) => {
            let batch = rest_body::parse_batch(&body, &limits)?;
            let mut entries = Vec::new();
            for t in batch {
                let mut stats = ChannelStats::default();
                for channel in &t.channels {
                    let s = trigger(env, &app, channel, &t.name, &t.data, t.socket_id.as_deref());
                    stats = s.await?;
                }
                entries.push((t.info, stats));
            }
            json_ok(&rest_body::batch_response(&entries))
        }
        ("GET", ["channels", name]) => {
            let (t, info) = rest_body::channel_query(name, &query, &limits)?;
            let room = room_info(env, &app, name).await?;
            let stats = stats_of(&room, t.is_presence());
            json_ok(&rest_body::channel_response(info, stats))
        }
        ("GET", ["channels", name, "history"]) => {
            let q = history::history_query(name, &query, &limits)?;
            let page = room_history(env, &app, name, q).await?;
            json_ok(&history::history_response(name, &page))
        }
        ("GET", ["channels", name, "users"]) => {
            rest_body::users_channel(name, &limits)?;
            let room = room_info(env, &app, name).await?;
            let ids = room["members"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["id"].as_str());
            json_ok(&rest_body::users_response(ids))
        }
        ("POST", ["users", user, "terminate_connections"]) => {
            rest_body::validate_user_id(user, &limits)?;
            let body = serde_json::json!({ "user_id": user }).to_string();
            for answer in each_shard(env, &app, Call::new(Op::GatewayTerminate).body(body)).await {
                answer?;
            }
            json_ok(&serde_json::json!({}))
        }
        ("GET", ["channels"]) => {
            let q = rest_body::channels_query(&query)?;
            // Every shard reports its share; counts add up, presence users are merged.
            let mut merged: BTreeMap<String, (u64, BTreeSet<String>)> = BTreeMap::new();
            for answer in each_shard(env, &app, Call::new(Op::GatewayChannels)).await {
                for c in answer?["channels"].as_array().into_iter().flatten() {
                    let Some(name) = c["name"].as_str() else {
                        continue;
                    };
                    let e = merged.entry(name.to_string()).or_default();
                    e.0 += c["subscriptions"].as_u64().unwrap_or(0);
                    let users = c["users"].as_array().into_iter().flatten();
                    e.1.extend(users.filter_map(|u| u.as_str().map(str::to_string)));
                }
            }
            let list: Vec<(String, ChannelStats)> = merged
                .into_iter()
                .map(|(name, (subs, users))| {
                    let presence = name.starts_with("presence-");
                    let stats = ChannelStats {
                        subscription_count: subs,
                        user_count: presence.then_some(users.len() as u64),
                    };
                    (name, stats)
                })
                .collect();
            json_ok(&rest_body::channels_response(&q, &list))
        }
        _ => Err(RestError::NotFound(format!("no route for {method} {path}"))),
    }
}

/// Closes the app's sockets with 4200 — on every shard, or on `shard` only — and answers
/// `(200, {closed})`, or 404 for an unknown app or shard.
pub(crate) async fn reconnect(
    env: &Env,
    app_id: &str,
    shard: Option<u32>,
) -> Result<(u16, Value), ApiError> {
    let not_found = |what: String| {
        Ok((
            404,
            serde_json::json!({"error": "not_found", "message": what}),
        ))
    };
    let apps = apps(env)?;
    let Some(app) = apps.by_id(app_id) else {
        return not_found(format!("no Pusher app {app_id}"));
    };
    let call = Call::new(Op::GatewayReconnect).body("{}".to_string());
    let answers = match shard {
        // Any shard that can exist (1024 at most), so that after lowering the shard count
        // the shards past it can still be emptied.
        Some(i) if i >= MAX_SHARDS => return not_found(format!("shards are 0-{}", MAX_SHARDS - 1)),
        Some(i) => vec![shard_call(env, app, i, call).await],
        None => each_shard(env, app, call).await,
    };
    let mut closed = 0;
    for a in answers {
        closed += a.map_err(|e| internal(e.to_string()))?["closed"]
            .as_u64()
            .unwrap_or(0);
    }
    Ok((200, serde_json::json!({ "closed": closed })))
}

/// Sends `call` to every gateway shard of the app at once; their JSON answers, in shard order.
async fn each_shard(env: &Env, app: &App, call: Call) -> Vec<Result<Value, RestError>> {
    let n = match shards(env) {
        Ok(n) => n,
        Err(e) => return vec![Err(unexpected(e))],
    };
    let calls = (0..n).map(|i| shard_call(env, app, i, call.clone()));
    futures_util::future::join_all(calls).await
}

/// Sends `call` to the app's gateway shard `i`; its JSON answer.
async fn shard_call(env: &Env, app: &App, i: u32, call: Call) -> Result<Value, RestError> {
    let name = format!("{}:{i}", app.id);
    let s = stub(env, Binding::Gateway, &name).map_err(unexpected)?;
    let mut r = call.send(&s).await.map_err(unexpected)?;
    if r.status_code() != 200 {
        return Err(unexpected(format!(
            "shard {name} answered {}",
            r.status_code()
        )));
    }
    r.json::<Value>().await.map_err(unexpected)
}

fn json_ok(v: &Value) -> Result<Response, RestError> {
    Response::from_json(v).map_err(unexpected)
}

/// A page of a channel room's history (`RoomHistory`).
async fn room_history(
    env: &Env,
    app: &App,
    channel: &str,
    q: history::HistoryQuery,
) -> Result<Value, RestError> {
    let call = Call::new(Op::RoomHistory).query(&format!("since={}&limit={}", q.since, q.limit));
    room_json(env, app, channel, call).await
}

/// A channel room's info (`RoomInfo`): its subscribers and presence members.
async fn room_info(env: &Env, app: &App, channel: &str) -> Result<Value, RestError> {
    room_json(env, app, channel, Call::new(Op::RoomInfo)).await
}

/// Sends `call` to a channel's Room; its JSON answer (anything but 200 is unexpected).
async fn room_json(env: &Env, app: &App, channel: &str, call: Call) -> Result<Value, RestError> {
    let key = channel_key(&app.id, channel);
    let mut r = channel_call(env, &key, call).await.map_err(unexpected)?;
    if r.status_code() != 200 {
        return Err(unexpected(format!(
            "room {key} answered {}",
            r.status_code()
        )));
    }
    r.json().await.map_err(unexpected)
}

/// What `info` reports of a channel, from its room's figures.
fn stats_of(room: &Value, presence: bool) -> ChannelStats {
    ChannelStats {
        subscription_count: room["connections"].as_u64().unwrap_or(0),
        user_count: presence.then(|| room["members"].as_array().map_or(0, |m| m.len() as u64)),
    }
}

/// Publishes one event into a channel's room; the room delivers it to the shards. Answers
/// the channel's figures as the room had them when it accepted the event.
async fn trigger(
    env: &Env,
    app: &App,
    channel: &str,
    event: &str,
    data: &str,
    socket_id: Option<&str>,
) -> Result<ChannelStats, RestError> {
    let key = channel_key(&app.id, channel);
    let b = RoomBroadcast {
        body: serde_json::json!({"event": event, "data": data}),
        name: Some("api".into()),
        idempotency_key: None,
        key_name: Some("pusher".into()),
        sender: socket_id.map(socket_sender),
    };
    let body = serde_json::to_string(&b).map_err(unexpected)?;
    let call = Call::new(Op::RoomBroadcast).body(body);
    let mut r = channel_call(env, &key, call).await.map_err(unexpected)?;
    match r.status_code() {
        200 => {
            let v: Value = r.json().await.map_err(unexpected)?;
            Ok(ChannelStats {
                subscription_count: v["subscribers"].as_u64().unwrap_or(0),
                user_count: channel
                    .starts_with("presence-")
                    .then(|| v["members"].as_u64().unwrap_or(0)),
            })
        }
        413 => Err(RestError::PayloadTooLarge(format!(
            "event too large for channel {channel}"
        ))),
        429 => Err(RestError::Forbidden(format!(
            "channel {channel} is over its publish rate"
        ))),
        s => {
            let text = r.text().await.unwrap_or_default();
            Err(unexpected(format!("room {key} answered {s}: {text}")))
        }
    }
}
