//! The routing Worker: the `fetch` entry point.
//!
//! It reads configuration (once per isolate), answers CORS preflights, routes with
//! [`crate::http::route::parse`], authenticates API keys and hands each route to the glue of
//! its capability: rooms, sessions, coordination, services and ops. Every refusal is an
//! [`ApiError`] rendered in [`error_response`], the one place errors become HTTP.

use serde_json::{json as j, Value};
use worker::{event, Context, Env, Request, Response, Result};

use crate::auth;
use crate::config::Config;
use crate::http::bodies::{self, DevTokenRequest, MultiBroadcast, RoomBroadcast};
use crate::http::cors;
use crate::http::error::ApiError;
use crate::http::route::{self, Method, Route, OPS_ROOM};
use crate::internal::Op;
use crate::metrics::Delta;
use crate::obs;

use super::admission::unauthorized;
use super::http::{
    error_response, internal, json, log, now_ms, read_body, require_upgrade, with_headers,
};
use super::rooms::{broadcast_many, create_room, reserved, room_call, room_socket};
use super::settings::{api_keys, auth_secret, config as settings};
use super::stub::Call;

/// Lifetime of an operator token (`POST /api/admin/ops-token`), seconds: the dashboard asks
/// for a fresh one on every (re)connect.
pub const OPS_TOKEN_TTL_S: u64 = 3600;

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    if let Some(floor) = super::bench::floor(&req, &env) {
        return floor;
    }
    let started = now_ms();
    // The URL, the headers and the method cross from JS once each.
    let url = req.url()?;
    let self_origin = url.origin().ascii_serialization();
    let path = url.path().to_string();
    let headers = req.headers();
    let origin = headers.get("Origin")?;
    let incoming = headers.get(obs::REQUEST_ID_HEADER)?;
    let request_id = obs::request_id(incoming.as_deref(), fresh_request_id);
    let method = req.method().to_string();
    let (config, result) = match settings(&env) {
        Ok(config) => {
            let at = Target {
                method: Method::parse(&method),
                path: &path,
                origin: origin.as_deref(),
                self_origin: &self_origin,
                request_id: &request_id,
            };
            let r = handle(req, &env, &config, &at).await;
            (Some(config), r)
        }
        Err(e) => (None, Err(e)),
    };
    let mut fields = serde_json::json!({"method": method, "path": path});
    let mut response = match result {
        Ok(r) => r,
        Err(e) => {
            fields["code"] = j!(e.code());
            // An unexpected failure's detail is logged here, on the line with the request id.
            if let Some(detail) = e.detail() {
                fields["detail"] = j!(detail);
            }
            error_response(&e)?
        }
    };
    let status = response.status_code();
    fields["status"] = j!(status);
    fields["ms"] = j!(now_ms().saturating_sub(started));
    let min = config.as_ref().map_or(obs::Level::Info, |c| c.log_level);
    let label = route::parse(Method::parse(&method), &path).map_or("unmatched", |r| r.label());
    let mut deltas = vec![Delta::new(
        "roomkeeper_requests_total",
        &[("route", label), ("status", &status.to_string())],
        1,
    )];
    if let Some(code) = fields.get("code").and_then(Value::as_str) {
        deltas.push(Delta::new(
            "roomkeeper_refusals_total",
            &[("code", code)],
            1,
        ));
    }
    if fields.get("code").and_then(Value::as_str) == Some("rate_limited") {
        if let Some(config) = &config {
            super::ops::alerts::refusal_spike(&env, &ctx, config);
        }
    }
    // Summed in the isolate and flushed later: bookkeeping never slows the request down.
    super::ops::metrics::count(&env, &ctx, deltas);
    log(
        min,
        obs::level_for_status(status),
        "request",
        Some(&request_id),
        fields,
    );
    if status != 101 {
        let headers = response.headers_mut();
        headers.set(obs::REQUEST_ID_HEADER, &request_id)?;
        if let Some(config) = &config {
            for (k, v) in cors::response_headers(origin.as_deref(), &config.cors, &self_origin) {
                headers.set(k, &v)?;
            }
        }
    }
    Ok(response)
}

/// A request id for a request that brought none: a random prefix drawn once per isolate and
/// a counter (one `crypto.getRandomValues` per isolate, not per request).
fn fresh_request_id() -> String {
    thread_local! {
        static NEXT: std::cell::Cell<(u128, u32)> = const { std::cell::Cell::new((0, 0)) };
    }
    NEXT.with(|n| {
        let (mut prefix, count) = n.get();
        if prefix == 0 {
            prefix = uuid::Uuid::new_v4().as_u128() >> 32;
        }
        n.set((prefix, count.wrapping_add(1)));
        format!("{prefix:024x}{count:08x}")
    })
}

/// What the router read of a request once, for the routing below.
#[derive(Clone, Copy)]
struct Target<'a> {
    method: Method,
    path: &'a str,
    origin: Option<&'a str>,
    self_origin: &'a str,
    request_id: &'a str,
}

async fn handle(
    mut req: Request,
    env: &Env,
    config: &Config,
    at: &Target<'_>,
) -> std::result::Result<Response, ApiError> {
    let Target {
        method,
        path,
        origin,
        self_origin,
        request_id,
    } = *at;
    if method == Method::Options {
        let headers = cors::preflight(origin, &config.cors, self_origin)?;
        return Ok(with_headers(
            Response::empty().map_err(internal)?.with_status(204),
            &headers,
        ));
    }
    if super::pusher::owns(path) {
        return super::pusher::handle(req, env, config, request_id).await;
    }
    let route = route::parse(method, path)?;
    let key_name = match route.api_scope(method) {
        Some(scope) => {
            let authorization = req.headers().get("Authorization").map_err(internal)?;
            Some(
                api_keys(env)?
                    .authorize(authorization.as_deref(), scope)
                    .map_err(unauthorized)?
                    .to_string(),
            )
        }
        None => None,
    };
    if let Some(k) = key_name
        .as_ref()
        .filter(|_| route.charges_api_policy(method))
    {
        super::coordination::enforce(env, config, "api", &format!("apikey:{k}")).await?;
    }
    let socket = matches!(
        route,
        Route::RoomSocket(_) | Route::MuxSocket | Route::VoiceSocket(_) | Route::ChatSocket(_)
    );
    if socket {
        // Everything a socket request can be refused for without state comes first: nothing
        // is charged (no Limiter object is even created) for a request that is not one.
        if let Some(o) = origin {
            if !config.cors.allows(o, self_origin) {
                return Err(cors::origin_refused(o));
            }
        }
        require_upgrade(&req)?;
    }
    if route == Route::DevToken && !config.is_local() {
        return Err(ApiError::not_found(
            "not_found",
            "the dev token endpoint exists only locally",
        ));
    }
    // Public routes spend a per-address budget before they do or store anything.
    if let Some(policy) = route.address_policy(method) {
        let ip = super::coordination::client_ip(&req);
        super::coordination::enforce(env, config, policy, &format!("ip:{ip}")).await?;
    }
    match route {
        Route::Health => json(
            200,
            &j!({
                "status": "ok",
                "service": "roomkeeper",
                "version": env!("CARGO_PKG_VERSION"),
                "environment": config.environment,
            }),
        ),
        Route::CreateRoom => create_room(env).await,
        Route::RoomSocket(key) => room_socket(req, env, config, key, request_id).await,
        Route::MuxSocket => super::mux::mux_socket(req, env, config, request_id).await,
        r @ (Route::VoiceSocket(_) | Route::ChatSocket(_)) => {
            super::sessions::socket(req, env, config, &r, request_id).await
        }
        Route::RoomInfo(key) => room_call(env, &key, Call::new(Op::RoomInfo)).await,
        Route::RoomHistory(key) => {
            let query = req
                .url()
                .map_err(internal)?
                .query()
                .unwrap_or("")
                .to_string();
            room_call(env, &key, Call::new(Op::RoomHistory).query(&query)).await
        }
        Route::RoomBroadcast(key) if key.is_reserved() => Err(reserved(&key)),
        Route::RoomBroadcast(key) => {
            let mut b: RoomBroadcast =
                bodies::parse_json(&read_body(&mut req, bodies::MAX_API_BODY_BYTES).await?)?;
            if b.key_name.is_some() || b.sender.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "unknown field `key_name` or `sender`",
                ));
            }
            if b.idempotency_key.is_none() {
                b.idempotency_key = req.headers().get("Idempotency-Key").map_err(internal)?;
            }
            b.key_name = key_name;
            let body = serde_json::to_string(&b).map_err(internal)?;
            room_call(env, &key, Call::new(Op::RoomBroadcast).body(body)).await
        }
        Route::Broadcast => {
            let mut b: MultiBroadcast =
                bodies::parse_json(&read_body(&mut req, bodies::MAX_API_BODY_BYTES).await?)?;
            b.validate()?;
            if b.idempotency_key.is_none() {
                b.idempotency_key = req.headers().get("Idempotency-Key").map_err(internal)?;
            }
            broadcast_many(env, b, key_name).await
        }
        Route::DevToken => {
            let r: DevTokenRequest =
                bodies::parse_json(&read_body(&mut req, bodies::MAX_API_BODY_BYTES).await?)?;
            let now_s = now_ms() / 1000;
            let claims = r.claims(now_s)?;
            let secret = auth_secret(env)?;
            let token = auth::mint(&claims, secret.as_bytes());
            // Check the claims the way a connection will (just before expiry, so `ttl_s: 0`
            // still mints a deliberately expired token), so a bad request fails here.
            auth::verify_with(
                &token,
                secret.as_bytes(),
                claims.exp.saturating_sub(1),
                config.tokens,
            )
            .map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
            json(200, &j!({ "token": token, "exp": claims.exp }))
        }
        Route::LimitCheck { policy, key } => {
            super::coordination::limit_check(req, env, config, &policy, &key).await
        }
        Route::Lock { name, op } => super::coordination::lock(req, env, &name, op).await,
        Route::Valuation => super::services::valuation(req, env).await,
        Route::ValuationSales => super::services::import_sales(req, env).await,
        Route::Leads if method == Method::Post => {
            super::services::create_lead(req, env, config).await
        }
        Route::Leads => super::services::list_leads(req, env).await,
        Route::LeadsExport => super::services::export_leads(req, env).await,
        Route::Lead(id) if method == Method::Patch => {
            super::services::update_lead(req, env, &id, key_name.as_deref()).await
        }
        Route::Lead(id) => super::services::get_lead(env, &id).await,
        Route::Notify => super::services::notify(req, env, key_name.as_deref()).await,
        Route::Notification(id) => super::services::get_notification(env, &id).await,
        Route::Webhook(source) => super::services::webhook(req, env, &source).await,
        Route::Metrics { json } => super::ops::metrics::metrics(env, json).await,
        Route::AdminRooms => super::ops::admin::admin_rooms(env).await,
        Route::AdminCloseRoom(key) => {
            super::ops::admin::admin_close_room(req, env, &key, key_name.as_deref()).await
        }
        Route::AdminCloseConnection { room, conn } => {
            super::ops::admin::admin_close_connection(req, env, &room, &conn, key_name.as_deref())
                .await
        }
        Route::AdminSessions => super::ops::admin::admin_sessions(env).await,
        Route::AdminLockRelease(name) => {
            super::ops::admin::admin_lock_release(req, env, &name, key_name.as_deref()).await
        }
        Route::AdminAudit => super::ops::admin::admin_audit(req, env).await,
        Route::AdminPusherDeadWebhooks => super::pusher::webhook_dead_letters(req, env).await,
        Route::AdminPusherReconnect(app) => {
            super::ops::admin::admin_pusher_reconnect(req, env, &app, key_name.as_deref()).await
        }
        Route::AdminOpsToken => {
            let now_s = now_ms() / 1000;
            let claims = auth::Claims {
                sub: format!("operator:{}", key_name.as_deref().unwrap_or("key")),
                name: Some("operator".into()),
                rooms: vec![OPS_ROOM.into()],
                perms: vec![auth::Perm::Subscribe],
                exp: now_s + OPS_TOKEN_TTL_S.min(config.tokens.max_ttl_s),
                iat: Some(now_s),
                nbf: None,
                ops: true,
            };
            let token = auth::mint(&claims, auth_secret(env)?.as_bytes());
            json(
                200,
                &j!({ "token": token, "exp": claims.exp, "room": OPS_ROOM }),
            )
        }
        Route::BenchRaw { room, op } => super::bench::route(req, env, config, &room, op).await,
    }
}
