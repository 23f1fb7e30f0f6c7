//! The Room Durable Object: one per room.
//!
//! It accepts sockets with the hibernation API, keeps each socket's [`Session`] in the
//! socket's attachment, and stores the room's ordered stream and de-duplication keys in its
//! SQLite storage ([`SqlStore`]). After an eviction or a restart the next event finds `core`
//! empty and rebuilds it from storage and attachments.
//!
//! Effects from [`crate::rooms::room::Room`] are performed in order. SQLite writes are synchronous and
//! workerd's output gate holds outgoing frames until they are durable, so a message is never
//! delivered or acknowledged before it is stored.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use serde::Deserialize;
use worker::{
    durable_object, DurableObject, Env, Error, Request, Response, ResponseBuilder, Result, State,
    WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

use crate::glue::http::{failure_response, internal, json, log_error, now_ms, read_json};
use crate::glue::rooms::ROOM_KEY_HEADER;
use crate::glue::settings;
use crate::http::bodies::RoomBroadcast;
use crate::http::error::ApiError;
use crate::http::route::PRIVATE_ROOM_ID_LEN;
use crate::internal::{Binding, Op};
use crate::metrics::{self, Delta, ROOM_CONNECTIONS};
use crate::objects::alarm::{self, Alarm};
use crate::objects::rooms::shards::{self, is_channel, Outbox};
use crate::objects::rooms::store::{take_unreadable, SqlStore};
use crate::objects::rooms::window::Batch;
use crate::objects::socket::{auto_pong, finish_close, send_js, to_js};
use crate::obs;
use crate::probe::{note, Call};
use crate::rooms::history::HistoryQuery;
use crate::rooms::limits::RoomLimits;
use crate::rooms::names::display_name;
use crate::rooms::protocol::{Encoded, Encoding, MemberInfo, RawFrame, ServerFrame};
use crate::rooms::room::{Audience, Effect, PublishError, Room as Core};
use crate::rooms::session::{Admission, Session, ADMISSION_HEADER};
use crate::rooms::stats::{Event, RoomStats, Saved};
use crate::rooms::store::StoreError;

/// The Room object.
#[durable_object]
pub struct Room {
    pub(super) state: State,
    pub(super) env: Env,
    /// The core, loaded on first use after construction (or after waking).
    pub(super) core: RefCell<Option<Core>>,
    /// Open sockets by connection id, rebuilt with the core.
    pub(super) sockets: RefCell<HashMap<String, WebSocket>>,
    /// The scheduled alarm as last seen: `None` = not yet read from storage.
    alarm: Alarm,
    /// `LOG_LEVEL`, read with the core.
    log_level: Cell<obs::Level>,
    /// Messages waiting for the batch window to close (`ROOM_BATCH_WINDOW_MS`).
    batch: Batch,
    /// The room's figures (`GET /api/rooms/:room`), loaded with the core; shared with the
    /// timer that saves them when a save is deferred.
    stats: Rc<RefCell<RoomStats>>,
    /// Whether that timer is armed.
    save_armed: Rc<Cell<bool>>,
    /// Whether this instance ran the schema statements: once per object lifetime.
    schema_ready: Cell<bool>,
    /// Frames waiting for the gateway shards that hold subscribers ([`shards`]).
    pub(super) outbox: Outbox,
}

/// Meta key of the room's saved figures ([`crate::rooms::stats::Counts`] as JSON).
const STATS_META: &str = "stats";

impl DurableObject for Room {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            core: RefCell::new(None),
            sockets: RefCell::new(HashMap::new()),
            alarm: Alarm::default(),
            log_level: Cell::new(obs::Level::Info),
            batch: Batch::default(),
            stats: Rc::default(),
            save_armed: Rc::default(),
            schema_ready: Cell::new(false),
            outbox: Outbox::default(),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        note(Call::Event);
        let rid = crate::glue::http::request_id(&req);
        let result = self.handle(req).await;
        // Any request is an event: it reports figures that are due (e.g. an idle room's), and
        // saves what changed at once (requests are rare beside socket messages).
        self.flush_stats(true);
        match result {
            Ok(r) => Ok(r),
            Err(e) => failure_response(&e, rid.as_deref()),
        }
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        note(Call::Event);
        self.ensure_loaded()
            .map_err(|e| Error::RustError(e.to_string()))?;
        note(Call::AttachmentRead);
        let Some(session) = ws.deserialize_attachment::<Session>()? else {
            return Ok(());
        };
        let len = match &message {
            WebSocketIncomingMessage::String(s) => s.len(),
            WebSocketIncomingMessage::Binary(b) => b.len(),
        };
        self.stats.borrow_mut().record(Event::FrameIn(len));
        let raw = match &message {
            WebSocketIncomingMessage::String(s) => RawFrame::Text(s),
            WebSocketIncomingMessage::Binary(b) => RawFrame::Binary(b),
        };
        let effects = if self.batch_window() > 0 {
            // The batch window holds this message's writes for the window's one commit.
            let mut store = self.batch.store(self.store());
            self.with_core(|c| c.receive(&mut store, &session.conn, raw, now_ms()))
        } else {
            let mut store = self.store();
            self.with_core(|c| c.receive(&mut store, &session.conn, raw, now_ms()))
        };
        self.note_unreadable();
        self.perform(effects).await
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _clean: bool,
    ) -> Result<()> {
        if let Ok(Some(s)) = ws.deserialize_attachment::<Session>() {
            let fields = serde_json::json!({"conn": s.conn, "user": s.user, "code": code});
            self.log(obs::Level::Info, "close", None, fields);
        }
        self.forget(&ws, code as u16).await?;
        finish_close(&ws, code, "closed");
        self.flush_stats(true);
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: Error) -> Result<()> {
        self.forget(&ws, 1006).await?;
        self.flush_stats(true);
        Ok(())
    }

    async fn alarm(&self) -> Result<Response> {
        note(Call::Event);
        self.alarm.fired();
        self.ensure_loaded()
            .map_err(|e| Error::RustError(e.to_string()))?;
        let mut store = self.store();
        let effects = self
            .with_core(|c| c.maintain(&mut store, now_ms()))
            .map_err(|e| Error::RustError(e.to_string()))?;
        self.perform(effects).await?;
        self.flush_stats(true);
        Response::empty()
    }
}

impl Room {
    pub(super) fn store(&self) -> SqlStore {
        SqlStore(self.state.storage().sql())
    }

    /// The store with its tables created: the schema statements run once per object lifetime,
    /// not on every request.
    fn schema(&self) -> std::result::Result<SqlStore, StoreError> {
        let store = self.store();
        if !self.schema_ready.get() {
            store.schema()?;
            store
                .0
                .exec(shards::SCHEMA, None)
                .map_err(|e| StoreError(e.to_string()))?;
            self.schema_ready.set(true);
            self.count(vec![Delta::new(
                "roomkeeper_object_schema_runs_total",
                &[("store", "room")],
                1,
            )]);
        }
        Ok(store)
    }

    /// Logs and counts the stored rows the last reads skipped as unreadable.
    pub(super) fn note_unreadable(&self) {
        let skipped = take_unreadable();
        if skipped.is_empty() {
            return;
        }
        let room = self.with_core(|c| c.key().to_string());
        for u in &skipped {
            let fields = serde_json::json!({"room": room, "offset": u.offset, "reason": u.reason});
            self.log(obs::Level::Error, "unreadable_row", None, fields);
        }
        self.count(vec![Delta::new(
            "roomkeeper_room_unreadable_rows_total",
            &[],
            skipped.len() as i64,
        )]);
    }

    async fn handle(&self, req: Request) -> std::result::Result<Response, ApiError> {
        settings::config(&self.env)?;
        let op = Op::decode(Binding::Room, &req.path())
            .ok_or_else(|| ApiError::not_found("not_found", "no such room operation"))?;
        if op == Op::RoomInit {
            let store = self.schema().map_err(internal)?;
            store.set_meta("private", "1").map_err(internal)?;
            return Response::empty()
                .map(|r| r.with_status(204))
                .map_err(internal);
        }
        // The object cannot learn its own name, so the router tells it on every request.
        let key = req
            .headers()
            .get(ROOM_KEY_HEADER)
            .ok()
            .flatten()
            .ok_or_else(|| ApiError::bad_request("not_routed", "reach rooms through the router"))?;
        self.ensure_known(&key)?;
        match op {
            Op::RoomSocket => self.accept(&req),
            Op::RoomBroadcast => self.broadcast_http(req).await,
            Op::RoomInfo => {
                let mut info =
                    serde_json::to_value(self.with_core(|c| c.info())).map_err(internal)?;
                info["stats"] =
                    serde_json::to_value(self.stats.borrow().total()).map_err(internal)?;
                info["connection_list"] = self.with_core(|c| c.connection_list()).into();
                info["calls"] = crate::probe::snapshot();
                json(200, &info)
            }
            Op::RoomHistory => self.history(&req),
            Op::RoomClose => self.close_all(req).await,
            Op::RoomCloseConnection => self.close_one(req).await,
            Op::RoomSubscribe => self.subscribe(req).await,
            Op::RoomUnsubscribe => self.unsubscribe(req).await,
            Op::RoomFrame => self.via_frame(req).await,
            _ => Err(ApiError::not_found("not_found", "no such room operation")),
        }
    }

    /// Records the room's key on first contact; refuses private ids that were never created.
    fn ensure_known(&self, key: &str) -> std::result::Result<(), ApiError> {
        let store = self.schema().map_err(internal)?;
        if key.len() == PRIVATE_ROOM_ID_LEN
            && !is_channel(key)
            && store.meta("private").map_err(internal)?.is_none()
        {
            return Err(ApiError::not_found(
                "room_not_found",
                "no such private room",
            ));
        }
        if store.meta("key").map_err(internal)?.is_none() {
            store.set_meta("key", key).map_err(internal)?;
        }
        self.ensure_loaded().map_err(internal)
    }

    fn accept(&self, req: &Request) -> std::result::Result<Response, ApiError> {
        let admission: Admission = req
            .headers()
            .get(ADMISSION_HEADER)
            .ok()
            .flatten()
            .and_then(|h| serde_json::from_str(&h).ok())
            .ok_or_else(|| ApiError::bad_request("not_admitted", "connect through the router"))?;
        if !self.with_core(|c| c.has_room_for_connection()) {
            return Err(ApiError::conflict(
                "room_full",
                "the room has reached its connection limit",
            ));
        }
        let pair = WebSocketPair::new().map_err(internal)?;
        let conn = uuid::Uuid::new_v4().simple().to_string();
        let conn_id = conn.clone();
        let session = admission.session(&conn);
        self.state
            .accept_websocket_with_tags(&pair.server, &[conn.as_str()]);
        pair.server
            .serialize_attachment(&session)
            .map_err(internal)?;
        auto_pong(&self.state).map_err(internal)?;
        self.sockets.borrow_mut().insert(conn, pair.server);
        self.stats.borrow_mut().record(Event::Opened);
        self.count(vec![
            Delta::new(
                "roomkeeper_ws_connections_opened_total",
                &[("kind", "room")],
                1,
            ),
            Delta::new(ROOM_CONNECTIONS, &[("room", &admission.room)], 1),
        ]);
        if let Some(Effect::AlarmAt(t)) = self.with_core(|c| c.attach(session)) {
            let storage = self.state.storage();
            let known = self.alarm.known();
            self.state.wait_until(async move {
                // Token expiry must close the socket even if nothing else happens.
                let _ = alarm::ensure(&storage, known, t).await;
            });
            self.alarm.forget();
        }
        let request_id = crate::glue::http::request_id(req);
        self.log(
            obs::Level::Info,
            "connect",
            request_id.as_deref(),
            serde_json::json!({"room": admission.room, "conn": conn_id, "user": admission.user,
                "anonymous": admission.anonymous, "encoding": admission.enc.as_str()}),
        );
        let mut builder = ResponseBuilder::new().with_status(101);
        if let Some(p) = &admission.subprotocol {
            builder = builder
                .with_header("Sec-WebSocket-Protocol", p)
                .map_err(internal)?;
        }
        Ok(builder.with_websocket(pair.client).empty())
    }

    async fn broadcast_http(&self, mut req: Request) -> std::result::Result<Response, ApiError> {
        let b: RoomBroadcast = read_json(&mut req).await?;
        let limits = self.with_core(|c| *c.limits());
        let name = display_name(b.name.as_deref().unwrap_or("api"), limits.max_name_chars)
            .map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
        let from = MemberInfo {
            id: b
                .sender
                .clone()
                .unwrap_or_else(|| format!("api:{}", b.key_name.as_deref().unwrap_or("key"))),
            name,
            meta: None,
            conns: 0,
        };
        let key = b.idempotency_key.as_deref();
        let dedupe = key.map(|k| format!("api/{k}"));
        let now = now_ms();
        let result = if self.batch_window() > 0 {
            let mut store = self.batch.store(self.store());
            self.with_core(|c| c.publish(&mut store, from, b.body, key, dedupe.as_deref(), now))
        } else {
            let mut store = self.store();
            self.with_core(|c| c.publish(&mut store, from, b.body, key, dedupe.as_deref(), now))
        };
        match result {
            Ok((published, effects)) => {
                self.perform(effects).await.map_err(internal)?;
                // The answer promises the message is stored: write it now even if its batch
                // is still open (the output gate holds the answer until the write is durable).
                self.batch.flush_writes(&mut self.store());
                json(
                    200,
                    &serde_json::json!({
                        "offset": published.offset,
                        "duplicate": published.duplicate,
                        "epoch": self.with_core(|c| c.epoch().to_string()),
                        "subscribers": self.with_core(|c| c.connections()),
                        "members": self.with_core(|c| c.members().len()),
                    }),
                )
            }
            Err(PublishError::TooLarge { .. }) => Err(ApiError::PayloadTooLarge {
                limit: limits.max_body_bytes,
            }),
            Err(e @ PublishError::TooDeep) => Err(ApiError::Unprocessable {
                code: "too_deep",
                message: e.to_string(),
            }),
            Err(e @ PublishError::InvalidId) => Err(ApiError::bad_request(
                "invalid_idempotency_key",
                e.to_string(),
            )),
            // The room's publish ceiling (`ROOM_PUBLISH_ROOM_RATE`): 429 with `Retry-After`.
            Err(PublishError::RateLimited(l)) => Err(ApiError::RateLimited {
                retry_after_ms: l.retry_after_ms,
                policy_headers: Vec::new(),
            }),
            Err(PublishError::Store(e)) => Err(internal(e)),
        }
    }

    fn history(&self, req: &Request) -> std::result::Result<Response, ApiError> {
        let url = req.url().map_err(internal)?;
        let q = HistoryQuery::parse(url.query_pairs())?;
        let mut store = self.store();
        self.batch.flush_writes(&mut store);
        let page = self
            .with_core(|c| c.history(&store, q.since, q.limit))
            .map_err(internal)?;
        self.note_unreadable();
        json(200, &page)
    }

    /// Builds the core from storage and socket attachments if this instance has not yet.
    fn ensure_loaded(&self) -> std::result::Result<(), StoreError> {
        if self.batch.take_failed() {
            // Held writes of a batch failed: memory is ahead of storage, so start over.
            *self.core.borrow_mut() = None;
        }
        if self.core.borrow().is_some() {
            return Ok(());
        }
        let store = self.schema()?;
        let key = store.meta("key")?.unwrap_or_default();
        let epoch = match store.meta("epoch")? {
            Some(e) => e,
            None => {
                let e = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
                store.set_meta("epoch", &e)?;
                e
            }
        };
        let last_offset = store
            .one::<i64>("SELECT MAX(seq) AS v FROM messages", vec![])?
            .unwrap_or(0) as u64;
        // The offset must never go back even if history was trimmed to nothing.
        let last_offset = last_offset.max(
            store
                .one::<i64>("SELECT MAX(seq) AS v FROM dedupe", vec![])?
                .unwrap_or(0) as u64,
        );
        let last_offset = last_offset.max(
            store
                .meta("last_offset")?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        );
        // A malformed setting refuses the event (the router reports it as `config_error`
        // first); it never falls back to defaults.
        let config = settings::config(&self.env).map_err(|e| StoreError(e.to_string()))?;
        let limits = shards::limits(&key, &config);
        self.log_level.set(config.log_level);
        let mut core = Core::new(key, epoch, last_offset, limits);
        let mut sockets = self.sockets.borrow_mut();
        for ws in self.state.get_websockets() {
            if let Ok(Some(session)) = ws.deserialize_attachment::<Session>() {
                sockets.insert(session.conn.clone(), ws);
                core.attach(session);
            }
        }
        // Subscribers held by gateway shards have no socket here: their sessions are stored.
        for session in shards::load(&store.0).map_err(|e| StoreError(e.to_string()))? {
            core.attach(session);
        }
        *self.core.borrow_mut() = Some(core);
        let saved: Option<Saved> = store
            .meta(STATS_META)?
            .and_then(|v| serde_json::from_str(&v).ok());
        *self.stats.borrow_mut() = RoomStats::load(saved, now_ms());
        Ok(())
    }

    pub(super) fn with_core<T>(&self, f: impl FnOnce(&mut Core) -> T) -> T {
        let mut guard = self.core.borrow_mut();
        f(guard.as_mut().expect("ensure_loaded ran first"))
    }

    async fn forget(&self, ws: &WebSocket, code: u16) -> Result<()> {
        self.ensure_loaded()
            .map_err(|e| Error::RustError(e.to_string()))?;
        let Some(session) = ws.deserialize_attachment::<Session>()? else {
            return Ok(());
        };
        self.sockets.borrow_mut().remove(&session.conn);
        self.count_close(&session.conn, code);
        let effects = self.with_core(|c| c.detach(&session.conn));
        self.perform(effects).await
    }

    /// Counts a connection's close once: only while the core still holds its session.
    fn count_close(&self, conn: &str, code: u16) {
        if self.with_core(|c| c.session(conn).is_none()) {
            return;
        }
        self.stats.borrow_mut().record(Event::Closed);
        let room = self.with_core(|c| c.key().to_string());
        self.count(vec![
            Delta::new(
                "roomkeeper_ws_connections_closed_total",
                &[("kind", "room"), ("class", metrics::close_class(code))],
                1,
            ),
            Delta::new(ROOM_CONNECTIONS, &[("room", &room)], -1),
        ]);
    }

    /// Counts what an effect does in the room's figures ([`Event::of_effect`]).
    fn observe(&self, effect: &Effect) {
        let event = Event::of_effect(effect, |to, except| {
            self.with_core(|c| c.audience_len(to, except))
        });
        if let Some(event) = event {
            self.stats.borrow_mut().record(event);
        }
    }

    /// Saves the room's figures if they changed and the last save is
    /// [`crate::rooms::stats::FLUSH_MS`] old (or `promptly`: after a request, a close or an
    /// alarm), else arms a one-shot timer for the rest of that second — so a busy room writes
    /// its figures once a second, not once per socket message, and an idle one is not
    /// hibernated before they are saved; reports what is new to the Metrics object once a
    /// second too.
    fn flush_stats(&self, promptly: bool) {
        let now = now_ms();
        let deltas = self.stats.borrow_mut().take_deltas(now);
        let due = self.stats.borrow().save_due_in(now);
        match due {
            Some(wait) if promptly || wait == 0 => save_figures(&self.stats, &self.store(), now),
            Some(wait) if !self.save_armed.replace(true) => {
                let (stats, armed, store) =
                    (self.stats.clone(), self.save_armed.clone(), self.store());
                self.state.wait_until(async move {
                    worker::Delay::from(std::time::Duration::from_millis(wait)).await;
                    armed.set(false);
                    save_figures(&stats, &store, now_ms());
                });
            }
            _ => {}
        }
        if let Some(d) = deltas.filter(|d| !d.is_empty()) {
            self.count(d);
        }
    }

    /// Sends counter deltas to the Metrics object without holding up the event.
    fn count(&self, deltas: Vec<Delta>) {
        let env = self.env.clone();
        note(Call::Background);
        self.state
            .wait_until(async move { crate::glue::ops::metrics::add(&env, deltas).await });
    }

    /// `POST /__close {"reason"}` (admin): closes every connection with 4000.
    async fn close_all(&self, mut req: Request) -> std::result::Result<Response, ApiError> {
        #[derive(Deserialize)]
        struct Body {
            reason: String,
        }
        let b: Body = read_json(&mut req).await?;
        let conns: Vec<String> = self.sockets.borrow().keys().cloned().collect();
        let effects = conns
            .iter()
            .map(|c| Effect::Close {
                conn: c.clone(),
                code: crate::rooms::protocol::close::ROOM_CLOSED,
                reason: b.reason.clone(),
            })
            .collect();
        self.perform(effects).await.map_err(internal)?;
        json(200, &serde_json::json!({ "closed": conns.len() }))
    }

    /// `POST /__close_conn {"conn","reason"}` (admin): closes one connection with 4000.
    async fn close_one(&self, mut req: Request) -> std::result::Result<Response, ApiError> {
        #[derive(Deserialize)]
        struct Body {
            conn: String,
            reason: String,
        }
        let b: Body = read_json(&mut req).await?;
        let user = self
            .with_core(|c| c.session(&b.conn).map(|s| s.user.clone()))
            .filter(|_| self.sockets.borrow().contains_key(&b.conn))
            .ok_or_else(|| {
                ApiError::not_found(
                    "connection_not_found",
                    "no such open connection in this room",
                )
            })?;
        let effects = vec![Effect::Close {
            conn: b.conn.clone(),
            code: crate::rooms::protocol::close::ROOM_CLOSED,
            reason: b.reason,
        }];
        self.perform(effects).await.map_err(internal)?;
        json(
            200,
            &serde_json::json!({ "closed": true, "conn": b.conn, "user": user }),
        )
    }

    pub(super) async fn perform(&self, effects: Vec<Effect>) -> Result<()> {
        let mut alarm_at: Option<u64> = None;
        let limits = self.core.borrow().as_ref().map(|c| *c.limits());
        let window_ms = limits.map_or(0, |l| l.batch_window_ms);
        for effect in effects {
            self.observe(&effect);
            if window_ms > 0 && self.batched(&effect, window_ms, limits) {
                continue;
            }
            match effect {
                Effect::Send { conn, frame } => {
                    if let ServerFrame::Welcome {
                        recovered: Some(r), ..
                    } = &frame
                    {
                        let outcome = if *r { "recovered" } else { "reloaded" };
                        self.count(vec![Delta::new(
                            "roomkeeper_recoveries_total",
                            &[("outcome", outcome)],
                            1,
                        )]);
                    }
                    if self.to_shard(&conn, &frame) {
                        continue;
                    }
                    let sockets = self.sockets.borrow();
                    let enc = self.with_core(|c| c.session(&conn).map(|s| s.enc));
                    if let (Some(ws), Some(enc)) = (sockets.get(&conn), enc) {
                        send(ws, &frame.encode(enc));
                    }
                }
                Effect::Broadcast { frame, to, except } => {
                    self.broadcast(&frame, to, except.as_deref())
                }
                Effect::Save(session) => {
                    if session.via.is_some() {
                        shards::save(&self.store().0, &session)?;
                    } else if let Some(ws) = self.sockets.borrow().get(&session.conn) {
                        note(Call::AttachmentWrite);
                        ws.serialize_attachment(&session)?;
                    }
                }
                Effect::Close { conn, code, reason } => {
                    self.count_close(&conn, code);
                    self.close_remote(&conn, code, &reason)?;
                    if let Some(ws) = self.sockets.borrow_mut().remove(&conn) {
                        let _ = ws.close(Some(code), Some(reason));
                    }
                    // A forced close announces the departure at once; the close event
                    // that follows finds the session already gone.
                    for e in self.with_core(|c| c.detach(&conn)) {
                        if let Effect::Broadcast { frame, to, except } = e {
                            self.broadcast(&frame, to, except.as_deref());
                        }
                    }
                }
                Effect::AlarmAt(t) => alarm_at = Some(alarm_at.map_or(t, |a| a.min(t))),
            }
        }
        self.flush_stats(false);
        if let Some(t) = alarm_at {
            self.schedule_alarm(t).await?;
        }
        Ok(())
    }

    fn log(
        &self,
        level: obs::Level,
        event: &str,
        request_id: Option<&str>,
        fields: serde_json::Value,
    ) {
        crate::glue::http::log(self.log_level.get(), level, event, request_id, fields);
    }

    /// Sends one frame to an audience, encoding it once per encoding in use, not once per
    /// receiver.
    pub(super) fn broadcast(&self, frame: &ServerFrame, to: Audience, except: Option<&str>) {
        let sockets = self.sockets.borrow();
        let guard = self.core.borrow();
        let Some(core) = guard.as_ref() else { return };
        for (enc, conns) in core.audience(to, except) {
            if conns.is_empty() {
                continue;
            }
            // One JS value for every receiver: the frame crosses into JS once, not per socket.
            let value = to_js(&frame.encode(enc));
            for conn in conns {
                if let Some(ws) = sockets.get(conn) {
                    // A socket that closed under us is not an error: its close event follows.
                    let _ = send_js(ws, &value);
                }
            }
        }
        // Subscribers held by gateway shards: one delivery per shard, not per subscriber.
        let via = core.shards_of(to, except);
        drop(guard);
        drop(sockets);
        self.to_shards(frame, via, except);
    }

    /// The sockets of the room's subscribers, grouped by encoding (a batch's receivers).
    fn subscriber_sockets(&self) -> Vec<(Encoding, Vec<WebSocket>)> {
        let sockets = self.sockets.borrow();
        let core = self.core.borrow();
        let Some(core) = core.as_ref() else {
            return Vec::new();
        };
        core.audience(Audience::Subscribers, None)
            .into_iter()
            .map(|(enc, conns)| {
                let group = conns.iter().filter_map(|c| sockets.get(*c).cloned());
                (enc, group.collect())
            })
            .collect()
    }

    /// Whether any subscriber of the room is held by a gateway shard.
    fn has_shard_subscribers(&self) -> bool {
        self.with_core(|c| !c.shards_of(Audience::Subscribers, None).is_empty())
    }

    /// `ROOM_BATCH_WINDOW_MS` of this room (0: off).
    fn batch_window(&self) -> u64 {
        self.core
            .borrow()
            .as_ref()
            .map_or(0, |c| c.limits().batch_window_ms)
    }

    /// With the batch window on: queues a message broadcast or an acknowledgement that must
    /// follow the open batch (returns true: nothing more to do), or sends the open batch
    /// before any other frame leaves (returns false: perform the effect as usual).
    fn batched(&self, effect: &Effect, window_ms: u64, limits: Option<RoomLimits>) -> bool {
        match effect {
            Effect::Broadcast {
                frame: frame @ ServerFrame::Message(_),
                to: Audience::Subscribers,
                except: None,
            } => {
                // Subscribers held by gateway shards (v2 sockets, Pusher channels) take
                // messages one by one: a room with any does not batch.
                if self.has_shard_subscribers() {
                    self.batch.flush(&mut self.store());
                    return false;
                }
                let max = limits.map_or(1, |l| l.batch_max_messages);
                let store = self.store();
                let receivers = || self.subscriber_sockets();
                self.batch
                    .push(&self.state, &store, frame, window_ms, max, receivers);
                true
            }
            Effect::Send {
                conn,
                frame: frame @ ServerFrame::Ack { .. },
            } if self.batch.is_open() => {
                let enc = self.with_core(|c| c.session(conn).map(|s| s.enc));
                if let (Some(ws), Some(enc)) = (self.sockets.borrow().get(conn).cloned(), enc) {
                    self.batch.after(ws, frame.encode(enc));
                    return true;
                }
                // Not a socket of this object (a shard-held publisher): sent as usual, after
                // the batch.
                self.batch.flush(&mut self.store());
                false
            }
            Effect::Save(_) | Effect::AlarmAt(_) => false,
            _ => {
                self.batch.flush(&mut self.store());
                false
            }
        }
    }

    /// Makes sure an alarm fires no later than `t`.
    async fn schedule_alarm(&self, t: u64) -> Result<()> {
        self.alarm.no_later_than(&self.state.storage(), t).await
    }
}

/// Writes the figures if they changed since the last save.
fn save_figures(stats: &RefCell<RoomStats>, store: &SqlStore, now: u64) {
    let Some(saved) = stats.borrow_mut().take_save(now) else {
        return;
    };
    let result = serde_json::to_string(&saved)
        .map_err(|e| StoreError(e.to_string()))
        .and_then(|v| store.set_meta(STATS_META, &v));
    if let Err(e) = result {
        log_error("room_figures_not_saved", &e.to_string());
    }
}

fn send(ws: &WebSocket, frame: &Encoded) {
    // A socket that closed under us is not an error for the room: its close event follows.
    let _ = send_js(ws, &to_js(frame));
}
