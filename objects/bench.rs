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
    durable_object, DurableObject, Env, Error, Request, Response, ResponseBuilder, Result, State,
    WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

use crate::internal::{Binding, Op};
use crate::objects::socket::{finish_close, send_js};

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
        match Op::decode(Binding::Bench, &req.path()) {
            Some(Op::BenchSocket) => {
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
            Some(Op::BenchStatus) => Response::from_json(&serde_json::json!({
                "sockets": self.state.get_websockets().len(),
                "instance": self.instance,
            })),
            Some(Op::BenchPanic) => panic!("deliberate panic in BenchRaw (bench route)"),
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
        finish_close(&ws, code, "closed");
        Ok(())
    }

    async fn websocket_error(&self, _ws: WebSocket, _error: Error) -> Result<()> {
        *self.sockets.borrow_mut() = None;
        Ok(())
    }
}
