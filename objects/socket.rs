//! What every object that holds sockets shares: the heartbeat auto-response, completing a
//! closing handshake, and sending one JS value to many sockets.
//!
//! `WebSocket::send_with_str` converts the Rust string into a new JS string on every call, so
//! a broadcast to N sockets converted the same frame N times. Here a frame is converted once
//! ([`to_js`]) and that same value is handed to every socket ([`send_js`]); what remains per
//! socket is the runtime's own send.

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::{State, WebSocket, WebSocketRequestResponsePair};

use crate::probe::{note, Call};
use crate::rooms::protocol::{close, Encoded, HEARTBEAT_PING, HEARTBEAT_PONG};

/// Answers the heartbeat ([`HEARTBEAT_PING`] → [`HEARTBEAT_PONG`]) on every socket of the
/// object without waking it.
pub fn auto_pong(state: &State) -> worker::Result<()> {
    let pair = WebSocketRequestResponsePair::new(HEARTBEAT_PING, HEARTBEAT_PONG)
        .map_err(|e| worker::Error::RustError(format!("{e:?}")))?;
    state.set_websocket_auto_response(&pair);
    Ok(())
}

/// Completes the closing handshake after the peer closed with `code` (see
/// [`close::reply_code`]); the socket may already be gone, which is fine.
pub fn finish_close(ws: &WebSocket, code: usize, reason: &str) {
    let code = u16::try_from(code).unwrap_or(close::NORMAL);
    let _ = ws.close(Some(close::reply_code(code)), Some(reason));
}

#[wasm_bindgen]
extern "C" {
    /// A runtime `WebSocket`, seen only through its `send`.
    type SendTarget;

    /// `WebSocket.prototype.send(value)` with any JS value (a string, an `ArrayBuffer` or a
    /// typed array), so one value can be reused for every socket.
    #[wasm_bindgen(method, catch, js_name = send)]
    fn send(this: &SendTarget, data: &JsValue) -> std::result::Result<(), JsValue>;
}

/// Sends an already converted frame (see [`to_js`]) on one socket.
pub fn send_js(ws: &WebSocket, data: &JsValue) -> std::result::Result<(), JsValue> {
    note(Call::Send);
    let inner: &worker::web_sys::WebSocket = ws.as_ref();
    inner.unchecked_ref::<SendTarget>().send(data)
}

/// Converts an encoded frame into the JS value a socket sends: a string for a text frame, a
/// `Uint8Array` (a copy the runtime owns, so Rust may free its buffer) for a binary one.
pub fn to_js(frame: &Encoded) -> JsValue {
    note(Call::ToJs);
    match frame {
        Encoded::Text(t) => JsValue::from_str(t),
        Encoded::Binary(b) => js_sys::Uint8Array::from(b.as_slice()).into(),
    }
}
