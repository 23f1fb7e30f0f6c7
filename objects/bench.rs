//! The bench-only raw baseline object (`BenchRaw`): the cheapest possible fan-out, against
//! which the Room's cost is measured (`BENCHMARKS.md`).
//!
//! It accepts sockets with the hibernation API and rebroadcasts every frame it receives, as
//! is, to every socket it holds (the sender included, as the Room does): no parsing, no
//! storage, no acknowledgement. The frame is turned into a JS value once and that same value
//! is handed to every socket, so what remains is the runtime's own per-socket send cost.
//!
//! It is reached only through the router's bench routes (`/api/bench/raw/:room/…`), which
//! exist only when `ENVIRONMENT=local` or `BENCH_ROUTES=true`. Internal API:
//! - `GET /__ws`: a WebSocket upgrade.
//! - `GET /__status`: `{"sockets": N, "instance": X}` — `X` is a random number drawn when this
//!   object's Rust state was constructed (it changes when the state is rebuilt, e.g. after a
//!   panic reset the Wasm instance).
//! - `POST /__panic`: panics on purpose, to check what a panic leaves behind (see the
//!   reliability tests).

use std::cell::RefCell;

use wasm_bindgen::JsValue;
use worker::{
    durable_object, DurableObject, Env, Error, Method, Request, RequestInit, Response,
    ResponseBuilder, Result, State, WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

use crate::config::Config;
use crate::glue::http::internal;
use crate::glue::settings::setting;
use crate::http::error::ApiError;
use crate::http::route::RoomKey;
use crate::objects::socket::send_js;

/// Durable Object binding of the bench object (top-level `wrangler.toml` only).
const BENCH_BINDING: &str = "BENCH";

/// The router's side of `/api/bench/raw/:room/{ws,status,panic}`: a 404 unless
/// `ENVIRONMENT=local` or `BENCH_ROUTES=true`, else the request goes to the room's object.
pub(crate) async fn route(
    req: Request,
    env: &Env,
    config: &Config,
    room: &RoomKey,
    op: &str,
) -> std::result::Result<Response, ApiError> {
    let enabled = config.environment == "local"
        || setting(env, "BENCH_ROUTES").is_some_and(|v| v.trim() == "true");
    if !enabled {
        return Err(ApiError::not_found(
            "not_found",
            "bench routes exist only locally or with BENCH_ROUTES=true",
        ));
    }
    let upgrade = req.headers().get("Upgrade").map_err(internal)?;
    if op == "ws" && !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return Err(ApiError::UpgradeRequired);
    }
    let mut init = RequestInit::new();
    init.with_method(if op == "panic" {
        Method::Post
    } else {
        Method::Get
    })
    .with_headers(req.headers().clone());
    let fwd = Request::new_with_init(&format!("https://bench.internal/__{op}"), &init)
        .map_err(internal)?;
    let ns = env.durable_object(BENCH_BINDING).map_err(internal)?;
    let stub = ns
        .id_from_name(room.as_str())
        .and_then(|id| id.get_stub())
        .map_err(internal)?;
    let mut res = stub.fetch_with_request(fwd).await.map_err(internal)?;
    if res.status_code() == 101 {
        return Ok(res);
    }
    // An object's response has immutable headers; the router adds its own, so copy it.
    let status = res.status_code();
    let body = res.text().await.map_err(internal)?;
    Ok(Response::ok(body).map_err(internal)?.with_status(status))
}

/// The raw baseline object.
#[durable_object]
pub struct BenchRaw {
    state: State,
    /// Open sockets, fetched from the runtime on first use after waking; `None` = unknown.
    sockets: RefCell<Option<Vec<WebSocket>>>,
    /// Drawn at construction: tells one construction of this object's state from another.
    instance: f64,
}

impl DurableObject for BenchRaw {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            sockets: RefCell::new(None),
            instance: js_sys::Math::random(),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        match req.path().as_str() {
            "/__ws" => {
                let pair = WebSocketPair::new()?;
                self.state.accept_web_socket(&pair.server);
                if let Some(s) = self.sockets.borrow_mut().as_mut() {
                    s.push(pair.server);
                }
                Ok(ResponseBuilder::new()
                    .with_status(101)
                    .with_websocket(pair.client)
                    .empty())
            }
            "/__status" => Response::from_json(&serde_json::json!({
                "sockets": self.state.get_websockets().len(),
                "instance": self.instance,
            })),
            "/__panic" => panic!("deliberate panic in BenchRaw (bench route)"),
            _ => Response::error("no such bench operation", 404),
        }
    }

    async fn websocket_message(
        &self,
        _ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let value: JsValue = match &message {
            WebSocketIncomingMessage::String(s) => JsValue::from_str(s),
            WebSocketIncomingMessage::Binary(b) => js_sys::Uint8Array::from(b.as_slice()).into(),
        };
        let mut sockets = self.sockets.borrow_mut();
        let sockets = sockets.get_or_insert_with(|| self.state.get_websockets());
        for ws in sockets.iter() {
            // A socket closing under us is not an error: its close event follows.
            let _ = send_js(ws, &value);
        }
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _clean: bool,
    ) -> Result<()> {
        *self.sockets.borrow_mut() = None;
        let code = if code == 1005 || code == 1006 {
            1000
        } else {
            code as u16
        };
        let _ = ws.close(Some(code), Some("closed"));
        Ok(())
    }

    async fn websocket_error(&self, _ws: WebSocket, _error: Error) -> Result<()> {
        *self.sockets.borrow_mut() = None;
        Ok(())
    }
}
