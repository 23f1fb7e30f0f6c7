//! The routing Worker: the `fetch` entry point.
//!
//! It reads configuration, answers CORS preflights, routes with [`crate::http::route::parse`],
//! authenticates (connection tokens for sockets, API keys for the HTTP API) and hands room
//! traffic to the Room Durable Object. Every refusal is an [`ApiError`] rendered in
//! [`error_response`], the one place errors become HTTP.

use futures_util::future::join_all;
use serde_json::{json as j, Value};
use worker::{
    event, Context, Env, Headers, Method as WMethod, Request, RequestInit, Response, Result,
};

use crate::auth::{self, ApiKeys, AuthError, Perm};
use crate::config::Config;
use crate::http::bodies::{self, DevTokenRequest, MultiBroadcast, RoomBroadcast};
use crate::http::cors;
use crate::http::error::ApiError;
use crate::http::route::{self, Method, RoomKey, Route};
use crate::metrics::Delta;
use crate::obs;
use crate::rooms::protocol::Encoding;
use crate::rooms::room::{Admission, Perms, ADMISSION_HEADER};

/// Durable Object binding of the Room object.
pub(crate) const ROOM_BINDING: &str = "ROOM";
/// Internal header telling a room object its own key.
pub(crate) const ROOM_KEY_HEADER: &str = "X-Roomkeeper-Room";

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// A setting from `[vars]` or a secret, whichever defines it.
pub(crate) fn setting(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .ok()
        .map(|v| v.to_string())
        .or_else(|| env.secret(name).ok().map(|v| v.to_string()))
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let started = now_ms();
    let origin = req.headers().get("Origin")?;
    let self_origin = req
        .url()
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let incoming = req.headers().get(obs::REQUEST_ID_HEADER)?;
    let request_id = obs::request_id(incoming.as_deref(), || {
        uuid::Uuid::new_v4().simple().to_string()
    });
    let (method, path) = (req.method().to_string(), req.path());
    let (config, result) = match Config::from_lookup(|k| setting(&env, k)) {
        Ok(config) => {
            let r = handle(
                req,
                &env,
                &config,
                origin.as_deref(),
                &self_origin,
                &request_id,
            )
            .await;
            (Some(config), r)
        }
        Err(e) => (
            None,
            Err(ApiError::Config {
                message: e.to_string(),
            }),
        ),
    };
    let mut fields = serde_json::json!({"method": method, "path": path});
    let mut response = match result {
        Ok(r) => r,
        Err(e) => {
            fields["code"] = j!(e.code());
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
            crate::glue::ops::refusal_spike(&env, &ctx, config);
        }
    }
    // Summed in the isolate and flushed later: bookkeeping never slows the request down.
    crate::glue::ops::count(&env, &ctx, deltas);
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

/// Writes one structured log line if `level` passes `min`.
pub(crate) fn log(
    min: obs::Level,
    level: obs::Level,
    event: &str,
    request_id: Option<&str>,
    fields: Value,
) {
    if let Some(line) = obs::line(min, level, event, request_id, fields) {
        match level {
            obs::Level::Error => worker::console_error!("{line}"),
            obs::Level::Warn => worker::console_warn!("{line}"),
            _ => worker::console_log!("{line}"),
        }
    }
}

async fn handle(
    mut req: Request,
    env: &Env,
    config: &Config,
    origin: Option<&str>,
    self_origin: &str,
    request_id: &str,
) -> std::result::Result<Response, ApiError> {
    let method = Method::parse(req.method().as_ref());
    if method == Method::Options {
        let headers = cors::preflight(origin, &config.cors, self_origin)?;
        return Ok(with_headers(
            Response::empty().map_err(internal)?.with_status(204),
            &headers,
        ));
    }
    let route = route::parse(method, &req.path())?;
    let key_name = if route.needs_api_key_for(method) {
        let authorization = req.headers().get("Authorization").map_err(internal)?;
        Some(
            api_keys(env)?
                .check(authorization.as_deref())
                .map_err(unauthorized)?
                .to_string(),
        )
    } else {
        None
    };
    if let Some(k) = key_name
        .as_ref()
        .filter(|_| route.charges_api_policy(method))
    {
        crate::glue::coordination::enforce(env, config, "api", &format!("apikey:{k}")).await?;
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
        Route::RoomSocket(key) => {
            if let Some(o) = origin {
                if !config.cors.allows(o, self_origin) {
                    return Err(cors::origin_refused(o));
                }
            }
            let ip = crate::glue::coordination::client_ip(&req);
            crate::glue::coordination::enforce(env, config, "connect", &format!("ip:{ip}")).await?;
            room_socket(req, env, config, key, request_id).await
        }
        r @ (Route::VoiceSocket(_) | Route::ChatSocket(_)) => {
            if let Some(o) = origin {
                if !config.cors.allows(o, self_origin) {
                    return Err(cors::origin_refused(o));
                }
            }
            let ip = crate::glue::coordination::client_ip(&req);
            crate::glue::coordination::enforce(env, config, "connect", &format!("ip:{ip}")).await?;
            crate::objects::sessions::session::socket(req, env, config, &r, request_id).await
        }
        Route::RoomInfo(key) => room_fetch(env, &key, "/__info", None).await,
        Route::RoomHistory(key) => {
            let query = req
                .url()
                .map_err(internal)?
                .query()
                .unwrap_or("")
                .to_string();
            room_fetch(env, &key, &format!("/__history?{query}"), None).await
        }
        Route::RoomBroadcast(key) => {
            let mut b: RoomBroadcast = bodies::parse_json(&body_bytes(&mut req).await?)?;
            if b.key_name.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "unknown field `key_name`",
                ));
            }
            if b.idempotency_key.is_none() {
                b.idempotency_key = req.headers().get("Idempotency-Key").map_err(internal)?;
            }
            b.key_name = key_name;
            let body = serde_json::to_string(&b).map_err(internal)?;
            room_fetch(env, &key, "/__broadcast", Some(body)).await
        }
        Route::Broadcast => {
            let mut b: MultiBroadcast = bodies::parse_json(&body_bytes(&mut req).await?)?;
            b.validate()?;
            if b.idempotency_key.is_none() {
                b.idempotency_key = req.headers().get("Idempotency-Key").map_err(internal)?;
            }
            broadcast_many(env, b, key_name).await
        }
        Route::DevToken => {
            if config.environment != "local" {
                return Err(ApiError::not_found(
                    "not_found",
                    "the dev token endpoint exists only locally",
                ));
            }
            let r: DevTokenRequest = bodies::parse_json(&body_bytes(&mut req).await?)?;
            let now_s = now_ms() / 1000;
            let claims = r.claims(now_s)?;
            let secret = auth_secret(env)?;
            let token = auth::mint(&claims, secret.as_bytes());
            // Check the claims the way a connection will (just before expiry, so `ttl_s: 0`
            // still mints a deliberately expired token), so a bad request fails here.
            auth::verify(&token, secret.as_bytes(), claims.exp.saturating_sub(1))
                .map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
            json(200, &j!({ "token": token, "exp": claims.exp }))
        }
        Route::LimitCheck { policy, key } => {
            crate::glue::coordination::limit_check(req, env, config, &policy, &key).await
        }
        Route::Lock { name, op } => crate::glue::coordination::lock(req, env, &name, op).await,
        Route::Valuation => crate::glue::services::valuation(req, env).await,
        Route::ValuationSales => crate::glue::services::import_sales(req, env).await,
        Route::Leads if method == Method::Post => {
            crate::glue::services::create_lead(req, env, config).await
        }
        Route::Leads => crate::glue::services::list_leads(req, env).await,
        Route::LeadsExport => crate::glue::services::export_leads(req, env).await,
        Route::Lead(id) if method == Method::Patch => {
            crate::glue::services::update_lead(req, env, &id, key_name.as_deref()).await
        }
        Route::Lead(id) => crate::glue::services::get_lead(env, &id).await,
        Route::Notify => crate::glue::services::notify(req, env, key_name.as_deref()).await,
        Route::Notification(id) => crate::glue::services::get_notification(env, &id).await,
        Route::Webhook(source) => crate::glue::services::webhook(req, env, &source).await,
        Route::Metrics { json } => crate::glue::ops::metrics(env, json).await,
        Route::AdminRooms => crate::glue::ops::admin_rooms(env).await,
        Route::AdminCloseRoom(key) => {
            crate::glue::ops::admin_close_room(req, env, &key, key_name.as_deref()).await
        }
        Route::AdminCloseConnection { room, conn } => {
            crate::glue::ops::admin_close_connection(req, env, &room, &conn, key_name.as_deref())
                .await
        }
        Route::AdminSessions => crate::glue::ops::admin_sessions(env).await,
        Route::AdminLockRelease(name) => {
            crate::glue::ops::admin_lock_release(req, env, &name, key_name.as_deref()).await
        }
        Route::AdminAudit => crate::glue::ops::admin_audit(req, env).await,
        Route::BenchRaw { room, op } => {
            crate::objects::bench::route(req, env, config, &room, op).await
        }
    }
}

fn unauthorized(e: AuthError) -> ApiError {
    ApiError::unauthorized(e.code(), e.to_string())
}

fn api_keys(env: &Env) -> std::result::Result<ApiKeys, ApiError> {
    let raw = setting(env, "API_KEYS").ok_or_else(|| ApiError::Config {
        message: "API_KEYS is not set".into(),
    })?;
    ApiKeys::parse(&raw).map_err(|e| ApiError::Config {
        message: format!("API_KEYS: {e}"),
    })
}

pub(crate) fn auth_secret(env: &Env) -> std::result::Result<String, ApiError> {
    let secret = setting(env, "AUTH_SECRET").ok_or_else(|| ApiError::Config {
        message: "AUTH_SECRET is not set".into(),
    })?;
    auth::check_secret(&secret).map_err(|e| ApiError::Config {
        message: format!("AUTH_SECRET: {e}"),
    })?;
    Ok(secret)
}

async fn body_bytes(req: &mut Request) -> std::result::Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get("Content-Length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > bodies::MAX_API_BODY_BYTES) {
        return Err(ApiError::PayloadTooLarge {
            limit: bodies::MAX_API_BODY_BYTES,
        });
    }
    req.bytes().await.map_err(internal)
}

/// Reads and parses a JSON body with a size limit (used by objects too).
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    req: &mut Request,
) -> std::result::Result<T, ApiError> {
    bodies::parse_json(&body_bytes(req).await?)
}

/// `POST /api/rooms`: a new private room whose id is the object's unique id.
async fn create_room(env: &Env) -> std::result::Result<Response, ApiError> {
    let ns = env.durable_object(ROOM_BINDING).map_err(internal)?;
    let id = ns.unique_id().map_err(internal)?;
    let hex = id.to_string();
    let stub = id.get_stub().map_err(internal)?;
    let mut init = RequestInit::new();
    init.with_method(WMethod::Post);
    let req = Request::new_with_init("https://room.internal/__init", &init).map_err(internal)?;
    let res = stub.fetch_with_request(req).await.map_err(internal)?;
    if res.status_code() != 204 {
        return Err(ApiError::Internal);
    }
    json(
        201,
        &j!({ "room": hex, "ws": format!("/api/rooms/{hex}/ws") }),
    )
}

/// Who is connecting: a verified token (from `Authorization: Bearer` or `?token=`), or an
/// anonymous user where anonymous access is on.
fn admit(
    req: &Request,
    env: &Env,
    config: &Config,
    key: &RoomKey,
    enc: Encoding,
    subprotocol: Option<&str>,
) -> std::result::Result<Admission, ApiError> {
    let header = req.headers().get("Authorization").map_err(internal)?;
    let url = req.url().map_err(internal)?;
    let token = auth::bearer(header.as_deref())
        .map(str::to_string)
        .or_else(|| {
            url.query_pairs()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        });
    let base = Admission {
        room: key.as_str().to_string(),
        enc,
        subprotocol: subprotocol.map(str::to_string),
        user: format!("anon-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        anonymous: true,
        name: None,
        perms: Perms::ALL,
        expires_ms: None,
    };
    let Some(token) = token else {
        if config.allow_anonymous {
            return Ok(base);
        }
        return Err(ApiError::unauthorized(
            "token_required",
            "this service needs a connection token (Authorization: Bearer or ?token=)",
        ));
    };
    let secret = auth_secret(env)?;
    let claims = auth::verify(&token, secret.as_bytes(), now_ms() / 1000).map_err(unauthorized)?;
    if !claims.allows_room(key.as_str()) {
        return Err(ApiError::forbidden(
            "room_forbidden",
            "your token does not open this room",
        ));
    }
    Ok(Admission {
        user: claims.sub.clone(),
        anonymous: false,
        name: claims.name.clone(),
        perms: Perms {
            publish: claims.can(Perm::Publish),
            subscribe: claims.can(Perm::Subscribe),
            presence: claims.can(Perm::Presence),
        },
        expires_ms: Some(claims.expires_at_ms()),
        ..base
    })
}

/// `GET /api/rooms/:room/ws`: checks the upgrade, negotiates the encoding, authenticates, and
/// forwards the request with its [`Admission`] to the room's object, whose 101 response goes
/// back as is.
async fn room_socket(
    req: Request,
    env: &Env,
    config: &Config,
    key: RoomKey,
    request_id: &str,
) -> std::result::Result<Response, ApiError> {
    let upgrade = req.headers().get("Upgrade").map_err(internal)?;
    if !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return Err(ApiError::UpgradeRequired);
    }
    let offered = req
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map_err(internal)?;
    let url = req.url().map_err(internal)?;
    let query_enc = url
        .query_pairs()
        .find(|(k, _)| k == "encoding")
        .map(|(_, v)| v.into_owned());
    let (enc, subprotocol) = Encoding::negotiate(offered.as_deref(), query_enc.as_deref())
        .map_err(|e| ApiError::bad_request("unsupported_encoding", e.to_string()))?;
    let admission = admit(&req, env, config, &key, enc, subprotocol)?;
    let headers = Headers::new();
    for (k, v) in req.headers().entries() {
        // Internal headers are the router's to set, never the caller's.
        if !k.eq_ignore_ascii_case(ADMISSION_HEADER) && !k.eq_ignore_ascii_case(ROOM_KEY_HEADER) {
            headers.set(&k, &v).map_err(internal)?;
        }
    }
    headers
        .set(
            ADMISSION_HEADER,
            &serde_json::to_string(&admission).map_err(internal)?,
        )
        .map_err(internal)?;
    headers
        .set(ROOM_KEY_HEADER, key.as_str())
        .map_err(internal)?;
    headers
        .set(obs::REQUEST_ID_HEADER, request_id)
        .map_err(internal)?;
    let mut init = RequestInit::new();
    init.with_method(WMethod::Get).with_headers(headers);
    let fwd = Request::new_with_init("https://room.internal/__ws", &init).map_err(internal)?;
    let response = room_stub(env, &key)?
        .fetch_with_request(fwd)
        .await
        .map_err(internal)?;
    owned(response).await
}

/// A response from an object has immutable headers; copy it (unless it is a WebSocket
/// upgrade, which is passed through as is) so CORS headers can be added.
pub(crate) async fn owned(mut r: Response) -> std::result::Result<Response, ApiError> {
    if r.status_code() == 101 {
        return Ok(r);
    }
    let status = r.status_code();
    let headers = Headers::new();
    for (k, v) in r.headers().entries() {
        headers.set(&k, &v).map_err(internal)?;
    }
    let body = r.bytes().await.map_err(internal)?;
    Ok(Response::from_bytes(body)
        .map_err(internal)?
        .with_status(status)
        .with_headers(headers))
}

/// Calls a room object's internal HTTP operation and returns its response as is.
pub(crate) async fn room_fetch(
    env: &Env,
    key: &RoomKey,
    path: &str,
    body: Option<String>,
) -> std::result::Result<Response, ApiError> {
    let headers = Headers::new();
    headers
        .set(ROOM_KEY_HEADER, key.as_str())
        .map_err(internal)?;
    let mut init = RequestInit::new();
    init.with_headers(headers);
    if let Some(b) = body {
        init.with_method(WMethod::Post)
            .with_body(Some(wasm_bindgen::JsValue::from_str(&b)));
    }
    let req =
        Request::new_with_init(&format!("https://room.internal{path}"), &init).map_err(internal)?;
    let response = room_stub(env, key)?
        .fetch_with_request(req)
        .await
        .map_err(internal)?;
    owned(response).await
}

/// `POST /api/broadcast`: the same message into each room, concurrently; one result per room
/// in request order, each an offset or that room's error.
async fn broadcast_many(
    env: &Env,
    b: MultiBroadcast,
    key_name: Option<String>,
) -> std::result::Result<Response, ApiError> {
    let one = RoomBroadcast {
        body: b.body,
        name: b.name,
        idempotency_key: b.idempotency_key,
        key_name,
    };
    let body = serde_json::to_string(&one).map_err(internal)?;
    let calls = b.rooms.iter().map(|room| {
        let body = body.clone();
        async move {
            let failed = |e: ApiError| {
                j!({
                    "room": room,
                    "error": {"code": e.code(), "message": e.to_string()},
                    "status": e.status(),
                })
            };
            let key = match RoomKey::parse(room) {
                Ok(k) => k,
                Err(e) => return failed(e),
            };
            match room_fetch(env, &key, "/__broadcast", Some(body)).await {
                Err(e) => failed(e),
                Ok(mut r) => {
                    let status = r.status_code();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    if status == 200 {
                        j!({ "room": room, "offset": v["offset"], "duplicate": v["duplicate"] })
                    } else {
                        j!({ "room": room, "error": v["error"], "status": status })
                    }
                }
            }
        }
    });
    let results = join_all(calls).await;
    let ok = results.iter().filter(|r| r.get("offset").is_some()).count();
    json(
        200,
        &j!({ "results": results, "delivered": ok, "failed": results.len() - ok }),
    )
}

/// The stub of a room's object: by name for public rooms, by id for private ones. A private id
/// that this namespace did not issue is a 404, not a 500.
fn room_stub(env: &Env, key: &RoomKey) -> std::result::Result<worker::Stub, ApiError> {
    let ns = env.durable_object(ROOM_BINDING).map_err(internal)?;
    let id = match key {
        RoomKey::Named(name) => ns.id_from_name(name).map_err(internal)?,
        RoomKey::Private(hex) => ns
            .id_from_string(hex)
            .map_err(|_| ApiError::not_found("room_not_found", "no such private room"))?,
    };
    id.get_stub().map_err(internal)
}

fn log_error(event: &str, detail: &str) {
    worker::console_error!(
        "{}",
        j!({"level": "error", "event": event, "detail": detail})
    );
}

/// Logs an unexpected failure and hides it behind a plain 500.
pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    log_error("internal_error", &e.to_string());
    ApiError::Internal
}

/// A JSON response with the given status.
pub(crate) fn json(
    status: u16,
    value: &impl serde::Serialize,
) -> std::result::Result<Response, ApiError> {
    Response::from_json(value)
        .map(|r| r.with_status(status))
        .map_err(internal)
}

/// The one place an [`ApiError`] becomes an HTTP response.
pub(crate) fn error_response(e: &ApiError) -> Result<Response> {
    if let ApiError::Config { message } = e {
        log_error("config_error", message);
    }
    let headers = Headers::new();
    headers.set("Content-Type", "application/json")?;
    for (k, v) in e.headers() {
        headers.set(k, &v)?;
    }
    Ok(Response::ok(e.body())?
        .with_status(e.status())
        .with_headers(headers))
}

fn with_headers(mut r: Response, headers: &[(&'static str, String)]) -> Response {
    let h = r.headers_mut();
    for (k, v) in headers {
        let _ = h.set(k, v);
    }
    r
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}
