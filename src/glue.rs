//! The routing Worker: the `fetch` entry point.
//!
//! It reads configuration, answers CORS preflights, routes with [`crate::route::parse`] and
//! hands room traffic to the Room Durable Object. Every refusal is an [`ApiError`] rendered in
//! [`error_response`], the one place errors become HTTP.

use worker::{
    event, Context, Env, Headers, Method as WMethod, Request, RequestInit, Response, Result,
};

use crate::config::Config;
use crate::cors;
use crate::error::ApiError;
use crate::protocol::Encoding;
use crate::room::{Admission, ADMISSION_HEADER};
use crate::route::{self, Method, RoomKey, Route};

/// Durable Object binding of the Room object.
pub(crate) const ROOM_BINDING: &str = "ROOM";

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let origin = req.headers().get("Origin")?;
    let self_origin = req
        .url()
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let config = match Config::from_lookup(|k| env.var(k).ok().map(|v| v.to_string())) {
        Ok(c) => c,
        Err(e) => {
            worker::console_error!(
                "{{\"level\":\"error\",\"event\":\"config_error\",\"setting\":\"{}\"}}",
                e.name
            );
            return error_response(&ApiError::Config {
                message: e.to_string(),
            });
        }
    };
    let result = handle(req, &env, &config, origin.as_deref(), &self_origin).await;
    let mut response = match result {
        Ok(r) => r,
        Err(e) => error_response(&e)?,
    };
    if response.status_code() != 101 {
        let headers = response.headers_mut();
        for (k, v) in cors::response_headers(origin.as_deref(), &config.cors, &self_origin) {
            headers.set(k, &v)?;
        }
    }
    Ok(response)
}

async fn handle(
    req: Request,
    env: &Env,
    config: &Config,
    origin: Option<&str>,
    self_origin: &str,
) -> std::result::Result<Response, ApiError> {
    let method = Method::parse(req.method().as_ref());
    if method == Method::Options {
        let headers = cors::preflight(origin, &config.cors, self_origin)?;
        return Ok(with_headers(
            Response::empty().map_err(internal)?.with_status(204),
            &headers,
        ));
    }
    match route::parse(method, &req.path())? {
        Route::Health => json(
            200,
            &serde_json::json!({
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
            room_socket(req, env, key).await
        }
    }
}

/// `POST /api/rooms`: a new private room whose id is the object's unique id.
async fn create_room(env: &Env) -> std::result::Result<Response, ApiError> {
    let ns = env.durable_object(ROOM_BINDING).map_err(internal)?;
    let id = ns.unique_id().map_err(internal)?;
    let hex = id.to_string();
    let stub = id.get_stub().map_err(internal)?;
    let mut init = RequestInit::new();
    init.with_method(WMethod::Post);
    let req = Request::new_with_init(&format!("https://room.internal/__init?room={hex}"), &init)
        .map_err(internal)?;
    let res = stub.fetch_with_request(req).await.map_err(internal)?;
    if res.status_code() != 204 {
        return Err(ApiError::Internal);
    }
    json(
        201,
        &serde_json::json!({ "room": hex, "ws": format!("/api/rooms/{hex}/ws") }),
    )
}

/// `GET /api/rooms/:room/ws`: checks the upgrade, negotiates the encoding, and forwards the
/// request with its [`Admission`] to the room's object, whose 101 response goes back as is.
async fn room_socket(
    req: Request,
    env: &Env,
    key: RoomKey,
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
    let admission = Admission {
        room: key.as_str().to_string(),
        enc,
        subprotocol: subprotocol.map(str::to_string),
        user: format!("anon-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
    };
    let stub = room_stub(env, &key)?;
    let mut fwd = req.clone_mut().map_err(internal)?;
    fwd.headers_mut()
        .and_then(|h| h.set(ADMISSION_HEADER, &serde_json::to_string(&admission)?))
        .map_err(internal)?;
    stub.fetch_with_request(fwd).await.map_err(internal)
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

/// Logs an unexpected failure and hides it behind a plain 500.
pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    worker::console_error!(
        "{}",
        serde_json::json!({"level": "error", "event": "internal_error", "detail": e.to_string()})
    );
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
