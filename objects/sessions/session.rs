//! What the two session objects ([`super::voice::Voice`], [`super::chat::Chat`]) share: the
//! router's side of `GET /api/voice/:session/ws` and `GET /api/chat/:session/ws`, socket
//! acceptance, a small key-value table in the object's SQLite storage, background tasks, and
//! the provider choice.
//!
//! One object per user and session id: the object's name is `<user>:<session>`, so two users
//! with the same session id never share a conversation, and a user's own session survives
//! reconnects. Anonymous users get a fresh random id per connection, so an anonymous session is
//! effectively per connection (docs/SESSIONS.md).

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use worker::{
    Env, Request, Response, ResponseBuilder, SqlStorage, SqlStorageValue, State, WebSocket,
    WebSocketPair,
};

use std::rc::Rc;

use crate::config::Config;
use crate::glue::http::{error_response, internal};
use crate::glue::settings;
use crate::http::error::ApiError;
use crate::internal::{Binding, Op};
use crate::metrics::{Delta, ROOM_CONNECTIONS};
use crate::objects::socket::finish_close;
use crate::obs;
use crate::rooms::protocol::close;
use crate::sessions::admission::{SessionAdmission, SESSION_HEADER};
use crate::sessions::providers::Backend;

/// Inside an object: accepts the socket of a forwarded upgrade with the hibernation API,
/// storing the admission as its attachment. Earlier sockets of the same session are closed
/// with 4000 (`replaced`): one live socket per session keeps replies in one place.
pub(crate) fn accept(
    state: &State,
    env: &Env,
    req: &Request,
    kind: &str,
    backend: &Backend,
    hello: Option<String>,
) -> Result<Response, ApiError> {
    let raw = req
        .headers()
        .get(SESSION_HEADER)
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("not_found", "no such operation"))?;
    let mut admission: SessionAdmission = serde_json::from_str(&raw).map_err(internal)?;
    admission.conn = uuid::Uuid::new_v4().simple().to_string();
    for old in state.get_websockets() {
        count_closed(
            state,
            env,
            kind,
            &old,
            crate::rooms::protocol::close::ROOM_CLOSED,
        );
        let _ = old.close(
            Some(crate::rooms::protocol::close::ROOM_CLOSED),
            Some("replaced"),
        );
    }
    let pair = WebSocketPair::new().map_err(internal)?;
    state.accept_web_socket(&pair.server);
    pair.server
        .serialize_attachment(&admission)
        .map_err(internal)?;
    crate::objects::socket::auto_pong(state).map_err(internal)?;
    if let Some(hello) = hello {
        let _ = pair.server.send_with_str(hello);
    }
    count(
        state,
        env,
        vec![
            Delta::new(
                "roomkeeper_ws_connections_opened_total",
                &[("kind", kind)],
                1,
            ),
            Delta::new(
                ROOM_CONNECTIONS,
                &[("room", &registry_name(kind, &admission))],
                1,
            ),
        ],
    );
    let request_id = crate::glue::http::request_id(req);
    crate::glue::http::log(
        obs::Level::Info,
        obs::Level::Info,
        "connect",
        request_id.as_deref(),
        serde_json::json!({"kind": kind, "session": admission.session, "conn": admission.conn,
            "user": admission.user, "anonymous": admission.anonymous, "provider": backend.name()}),
    );
    Ok(ResponseBuilder::new()
        .with_status(101)
        .with_websocket(pair.client)
        .empty())
}

/// The session's name in the active-session registry (`GET /api/admin/sessions`), kept in the
/// Metrics object beside the rooms: `<kind>/<user>:<session>` (room names never contain `/`).
fn registry_name(kind: &str, a: &SessionAdmission) -> String {
    format!("{kind}/{}:{}", a.user, a.session)
}

/// Sends counter deltas to the Metrics object in the background of the event.
pub(crate) fn count(state: &State, env: &Env, deltas: Vec<Delta>) {
    let env = env.clone();
    state.wait_until(async move { crate::glue::ops::metrics::add(&env, deltas).await });
}

/// Counts a session socket's close once (the attachment's connection id is cleared, so a
/// later close or error event of the same socket is not counted again).
pub(crate) fn count_closed(state: &State, env: &Env, kind: &str, ws: &WebSocket, code: u16) {
    let Some(mut a) = admission(ws) else { return };
    if a.conn.is_empty() {
        return;
    }
    count(
        state,
        env,
        vec![
            Delta::new(
                "roomkeeper_ws_connections_closed_total",
                &[("kind", kind), ("class", crate::metrics::close_class(code))],
                1,
            ),
            Delta::new(ROOM_CONNECTIONS, &[("room", &registry_name(kind, &a))], -1),
        ],
    );
    a.conn.clear();
    let _ = ws.serialize_attachment(&a);
}

/// The admission stored on a socket.
pub(crate) fn admission(ws: &WebSocket) -> Option<SessionAdmission> {
    ws.deserialize_attachment().ok().flatten()
}

/// The object's settings and provider. A malformed setting never falls back to a default:
/// every request to the object is refused with `config_error` ([`refuse_misconfigured`]),
/// as the router's are, so these defaults only stand in for an object that will not serve.
pub(crate) fn configured(env: &Env) -> (Rc<Config>, Backend) {
    match settings::config(env) {
        Ok(c) => {
            let backend = c.backend(env.ai("AI").is_ok());
            (c, backend)
        }
        Err(_) => (
            Rc::new(Config::from_lookup(|_| None).expect("defaults parse")),
            Backend::Builtin,
        ),
    }
}

/// Checks an internal request to a session object: the settings parse and the operation is
/// the socket upgrade; otherwise the error response to answer with.
pub(crate) fn refuse_misconfigured(env: &Env, req: &Request, binding: Binding) -> Option<Response> {
    let refusal = match settings::config(env) {
        Err(e) => e,
        Ok(_) if Op::decode(binding, &req.path()) == Some(Op::SessionSocket) => return None,
        Ok(_) => ApiError::not_found("not_found", "no such session operation"),
    };
    error_response(&refusal).ok()
}

/// Counts a session socket's close and completes the closing handshake.
pub(crate) fn closed(state: &State, env: &Env, kind: &str, ws: &WebSocket, code: usize) {
    let code = close::reply_code(u16::try_from(code).unwrap_or(close::NORMAL));
    count_closed(state, env, kind, ws, code);
    finish_close(ws, usize::from(code), "closed");
}

/// A small key-value table (`kv`) of JSON values in an object's SQLite storage.
#[derive(Clone)]
pub(crate) struct Kv {
    sql: SqlStorage,
    /// For counting schema runs (`roomkeeper_object_schema_runs_total{store="kv"}`).
    state: Rc<worker::worker_sys::DurableObjectState>,
    env: Env,
}

#[derive(Deserialize)]
struct Row {
    v: String,
}

impl Kv {
    const SCHEMA: &'static str =
        "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)";

    /// The key-value table of the object whose state and environment these are.
    pub fn new(state: &State, env: &Env) -> Self {
        Self {
            sql: state.storage().sql(),
            state: Rc::new(raw_state(state)),
            env: env.clone(),
        }
    }

    /// Runs `q`, creating the table first only if it is missing: the schema statement runs
    /// once in the storage's lifetime (on the first statement), not on every get and put.
    fn exec(&self, q: &str, b: Vec<SqlStorageValue>) -> worker::Result<worker::SqlCursor> {
        match self.sql.exec(q, Some(b.clone())) {
            Err(e) if e.to_string().contains("no such table") => {
                self.sql.exec(Self::SCHEMA, None)?;
                let env = self.env.clone();
                let delta =
                    Delta::new("roomkeeper_object_schema_runs_total", &[("store", "kv")], 1);
                spawn(&self.state, async move {
                    crate::glue::ops::metrics::add(&env, vec![delta]).await
                });
                self.sql.exec(q, Some(b))
            }
            other => other,
        }
    }

    /// The value under `key`, if any (and it parses).
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let rows: Vec<Row> = self
            .exec("SELECT v FROM kv WHERE k = ?", vec![key.into()])
            .ok()?
            .to_array()
            .ok()?;
        rows.into_iter()
            .next()
            .and_then(|r| serde_json::from_str(&r.v).ok())
    }

    /// Stores `value` under `key`.
    pub fn put<T: Serialize>(&self, key: &str, value: &T) -> worker::Result<()> {
        let v =
            serde_json::to_string(value).map_err(|e| worker::Error::RustError(e.to_string()))?;
        self.exec(
            "INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
            vec![key.into(), v.into()],
        )?;
        Ok(())
    }
}

/// An owned handle on the runtime's state object, for [`spawn`] from background tasks.
pub(crate) fn raw_state(state: &State) -> worker::worker_sys::DurableObjectState {
    use worker::wasm_bindgen::JsCast;
    let v: &worker::wasm_bindgen::JsValue = state.as_raw().as_ref();
    v.clone().unchecked_into()
}

/// Runs `fut` in the background of the object's current event: the handler returns at once
/// (so later frames keep flowing) and the runtime keeps the object alive until it completes.
pub(crate) fn spawn(
    state: &worker::worker_sys::DurableObjectState,
    fut: impl Future<Output = ()> + 'static,
) {
    let promise = worker::wasm_bindgen_futures::future_to_promise(async move {
        fut.await;
        Ok(worker::wasm_bindgen::JsValue::UNDEFINED)
    });
    let _ = state.wait_until(&promise);
}
