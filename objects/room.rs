//! The Room Durable Object: one per room.
//!
//! It accepts sockets with the hibernation API, keeps each socket's [`Session`] in the
//! socket's attachment, and stores the room's ordered stream in its SQLite storage. After an
//! eviction the next event finds `room` empty and rebuilds it from storage and attachments.
//!
//! Effects from [`crate::room::Room`] are performed in order. SQLite writes are synchronous and
//! workerd's output gate holds outgoing frames until they are durable, so a message is never
//! delivered or acknowledged before it is stored.

use std::cell::RefCell;
use std::collections::HashMap;

use serde::Deserialize;
use worker::{
    durable_object, DurableObject, Env, Error, Request, Response, ResponseBuilder, Result,
    SqlStorageValue, State, WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

use crate::config::Config;
use crate::error::ApiError;
use crate::glue::{error_response, internal};
use crate::protocol::{close, Encoded, RawFrame, ServerFrame};
use crate::room::{Admission, Effect, Room as Core, Session, ADMISSION_HEADER};

/// Request sent by the auto-response heartbeat, answered without waking the object.
pub const HEARTBEAT_PING: &str = r#"{"type":"ping"}"#;
/// The heartbeat's answer.
pub const HEARTBEAT_PONG: &str = r#"{"type":"pong"}"#;

/// The Room object.
#[durable_object]
pub struct Room {
    state: State,
    env: Env,
    /// The core, loaded on first use after construction (or after waking).
    core: RefCell<Option<Core>>,
    /// Open sockets by connection id, rebuilt with the core.
    sockets: RefCell<HashMap<String, WebSocket>>,
}

#[derive(Deserialize)]
struct Meta {
    v: String,
}

#[derive(Deserialize)]
struct Last {
    last: Option<i64>,
}

impl DurableObject for Room {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            core: RefCell::new(None),
            sockets: RefCell::new(HashMap::new()),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let path = req.path();
        let result = if path == "/__init" {
            self.init()
        } else if path.ends_with("/ws") {
            self.accept(&req)
        } else {
            Err(ApiError::not_found("not_found", "no such room operation"))
        };
        result.or_else(|e| error_response(&e))
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        self.ensure_loaded()?;
        let Some(session) = ws.deserialize_attachment::<Session>()? else {
            return Ok(());
        };
        let raw = match &message {
            WebSocketIncomingMessage::String(s) => RawFrame::Text(s),
            WebSocketIncomingMessage::Binary(b) => RawFrame::Binary(b),
        };
        let effects = self.with_core(|c| c.receive(&session.conn, raw, now_ms()));
        self.perform(effects)
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _clean: bool,
    ) -> Result<()> {
        self.forget(&ws)?;
        // Complete the closing handshake; the socket may already be gone, which is fine.
        let code = if code == 1005 || code == 1006 {
            close::NORMAL
        } else {
            code as u16
        };
        let _ = ws.close(Some(code), Some("closed"));
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: Error) -> Result<()> {
        self.forget(&ws)
    }
}

impl Room {
    fn sql_exec(&self, query: &str, bindings: Vec<SqlStorageValue>) -> Result<worker::SqlCursor> {
        self.state.storage().sql().exec(query, Some(bindings))
    }

    fn schema(&self) -> Result<()> {
        let sql = self.state.storage().sql();
        sql.exec(
            "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
            None,
        )?;
        sql.exec(
            "CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, \
             from_id TEXT NOT NULL, from_name TEXT NOT NULL, body TEXT NOT NULL)",
            None,
        )?;
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Option<String>> {
        let rows: Vec<Meta> = self
            .sql_exec("SELECT v FROM meta WHERE k = ?", vec![key.into()])?
            .to_array()?;
        Ok(rows.into_iter().next().map(|m| m.v))
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.sql_exec(
            "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
            vec![key.into(), value.into()],
        )?;
        Ok(())
    }

    /// Marks a private room as created, so that sockets may join it.
    fn init(&self) -> std::result::Result<Response, ApiError> {
        self.schema().map_err(internal)?;
        self.set_meta("private", "1").map_err(internal)?;
        Response::empty()
            .map(|r| r.with_status(204))
            .map_err(internal)
    }

    fn accept(&self, req: &Request) -> std::result::Result<Response, ApiError> {
        let admission: Admission = req
            .headers()
            .get(ADMISSION_HEADER)
            .ok()
            .flatten()
            .and_then(|h| serde_json::from_str(&h).ok())
            .ok_or_else(|| ApiError::bad_request("not_admitted", "connect through the router"))?;
        // The object cannot learn its own name, so the first connection records it.
        self.schema().map_err(internal)?;
        if self.meta("key").map_err(internal)?.is_none() {
            self.set_meta("key", &admission.room).map_err(internal)?;
        }
        self.ensure_loaded().map_err(internal)?;
        let private_id = admission.room.len() == crate::route::PRIVATE_ROOM_ID_LEN;
        if private_id && self.meta("private").map_err(internal)?.is_none() {
            return Err(ApiError::not_found(
                "room_not_found",
                "no such private room",
            ));
        }
        let pair = WebSocketPair::new().map_err(internal)?;
        let conn = uuid::Uuid::new_v4().simple().to_string();
        let session = Session {
            conn: conn.clone(),
            user: admission.user,
            name: None,
            enc: admission.enc,
        };
        self.state
            .accept_websocket_with_tags(&pair.server, &[conn.as_str(), admission.enc.as_str()]);
        pair.server
            .serialize_attachment(&session)
            .map_err(internal)?;
        self.state.set_websocket_auto_response(
            &worker::WebSocketRequestResponsePair::new(HEARTBEAT_PING, HEARTBEAT_PONG)
                .map_err(|e| internal(format!("{e:?}")))?,
        );
        self.sockets.borrow_mut().insert(conn, pair.server);
        self.with_core(|c| c.attach(session));
        let mut builder = ResponseBuilder::new().with_status(101);
        if let Some(p) = &admission.subprotocol {
            builder = builder
                .with_header("Sec-WebSocket-Protocol", p)
                .map_err(internal)?;
        }
        Ok(builder.with_websocket(pair.client).empty())
    }

    /// Builds the core from storage and socket attachments if this instance has not yet.
    fn ensure_loaded(&self) -> Result<()> {
        if self.core.borrow().is_some() {
            return Ok(());
        }
        self.schema()?;
        let key = self.meta("key")?.unwrap_or_default();
        let epoch = match self.meta("epoch")? {
            Some(e) => e,
            None => {
                let e = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
                self.set_meta("epoch", &e)?;
                e
            }
        };
        let last: Vec<Last> = self
            .sql_exec("SELECT MAX(seq) AS last FROM messages", vec![])?
            .to_array()?;
        let last_offset = last.first().and_then(|l| l.last).unwrap_or(0) as u64;
        let limits = Config::from_lookup(|k| self.env.var(k).ok().map(|v| v.to_string()))
            .map(|c| c.room)
            .unwrap_or_default();
        let mut core = Core::new(key, epoch, last_offset, limits);
        let mut sockets = self.sockets.borrow_mut();
        for ws in self.state.get_websockets() {
            if let Ok(Some(session)) = ws.deserialize_attachment::<Session>() {
                sockets.insert(session.conn.clone(), ws);
                core.attach(session);
            }
        }
        *self.core.borrow_mut() = Some(core);
        Ok(())
    }

    fn with_core<T>(&self, f: impl FnOnce(&mut Core) -> T) -> T {
        let mut guard = self.core.borrow_mut();
        f(guard.as_mut().expect("ensure_loaded ran first"))
    }

    fn forget(&self, ws: &WebSocket) -> Result<()> {
        self.ensure_loaded()?;
        let Some(session) = ws.deserialize_attachment::<Session>()? else {
            return Ok(());
        };
        self.sockets.borrow_mut().remove(&session.conn);
        let effects = self.with_core(|c| c.detach(&session.conn));
        self.perform(effects)
    }

    fn perform(&self, effects: Vec<Effect>) -> Result<()> {
        for effect in effects {
            match effect {
                Effect::Append(m) => {
                    self.sql_exec(
                        "INSERT INTO messages (seq, ts, from_id, from_name, body) VALUES (?, ?, ?, ?, ?)",
                        vec![
                            (m.offset as i64).into(),
                            (m.ts as i64).into(),
                            m.from.id.as_str().into(),
                            m.from.name.as_str().into(),
                            serde_json::to_string(&m.body)?.into(),
                        ],
                    )?;
                }
                Effect::Send { conn, frame } => {
                    let sockets = self.sockets.borrow();
                    if let (Some(ws), Some(enc)) = (
                        sockets.get(&conn),
                        self.with_core(|c| c.session(&conn).map(|s| s.enc)),
                    ) {
                        send(ws, &frame.encode(enc));
                    }
                }
                Effect::Broadcast { frame, except } => self.broadcast(&frame, except.as_deref()),
                Effect::Save(session) => {
                    if let Some(ws) = self.sockets.borrow().get(&session.conn) {
                        ws.serialize_attachment(&session)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends one frame to the room, encoding it once per encoding in use.
    fn broadcast(&self, frame: &ServerFrame, except: Option<&str>) {
        let sockets = self.sockets.borrow();
        let core = self.core.borrow();
        let Some(core) = core.as_ref() else { return };
        for (enc, conns) in core.audience(except) {
            if conns.is_empty() {
                continue;
            }
            let encoded = frame.encode(enc);
            for conn in conns {
                if let Some(ws) = sockets.get(conn) {
                    send(ws, &encoded);
                }
            }
        }
    }
}

fn send(ws: &WebSocket, frame: &Encoded) {
    // A socket that closed under us is not an error for the room: its close event follows.
    let _ = match frame {
        Encoded::Text(t) => ws.send_with_str(t),
        Encoded::Binary(b) => ws.send_with_bytes(b),
    };
}

fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}
