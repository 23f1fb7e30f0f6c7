//! The Gateway Durable Object: one of N shards per Pusher app. It holds client sockets with
//! the hibernation API, speaks the Pusher wire protocol (`src/pusher/wire.rs`), keeps each
//! socket's subscriptions (SQLite table `subs`, since 100 channel names do not fit in a
//! socket attachment), subscribes its sockets to the channels' rooms and hands the rooms'
//! ordered deliveries on to its sockets ([`crate::pusher::shard::Shard`]).

use std::cell::RefCell;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use worker::{
    durable_object, DurableObject, Env, Request, Response, ResponseBuilder, Result, State,
    WebSocket, WebSocketIncomingMessage, WebSocketPair, WebSocketRequestResponsePair,
};

use crate::glue::http::{failure_response, internal, log_error, now_ms};
use crate::glue::pusher::{apps, APP_HEADER, SHARD_HEADER};
use crate::glue::rooms::channel_call;
use crate::glue::settings;
use crate::glue::stub::Call;
use crate::http::bodies::RoomBroadcast;
use crate::http::error::ApiError;
use crate::internal::{Binding, Op};
use crate::objects::alarm::Alarm;
use crate::objects::sessions::session::{raw_state, spawn};
use crate::objects::socket::finish_close;
use crate::pusher::apps::App;
use crate::pusher::authorize::{self, Admitted, SubscribeRequest};
use crate::pusher::presence::{presence_data, Member, SigninUser};
use crate::pusher::shard::{channel_frame, socket_sender, Sends, Shard};
use crate::pusher::webhook::WebhookEvent;
use crate::pusher::wire::{self, close, ClientEventRate, ClientFrame};
use crate::pusher::{sign, Limits};
use crate::rooms::lag::MuxLag;
use crate::rooms::multiplex::{msgpack_of, MuxAdmission, NATIVE_APP};
use crate::rooms::protocol::Encoding;
use crate::rooms::session::{Perms, Session};
use crate::rooms::shards::{channel_key, Subscribe, SubscribeAnswer};

/// What a socket's attachment holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Attachment {
    pub(super) socket_id: String,
    pub(super) app_id: String,
    /// The user it signed in as (`pusher:signin`): id and `user_info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) user: Option<(String, Option<serde_json::Value>)>,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS subs (socket TEXT NOT NULL, channel TEXT NOT NULL, \
     start INTEGER NOT NULL, user TEXT, PRIMARY KEY (socket, channel))",
    "CREATE TABLE IF NOT EXISTS handed (channel TEXT PRIMARY KEY, last INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS natives (socket TEXT PRIMARY KEY, admission TEXT NOT NULL)",
];

/// The Gateway object.
#[durable_object]
pub struct Gateway {
    pub(super) state: State,
    pub(super) env: Env,
    /// Subscriptions, loaded on first use after construction (or after waking).
    pub(super) shard: RefCell<Option<Shard>>,
    /// Open sockets by socket id, rebuilt with the shard.
    pub(super) sockets: RefCell<HashMap<String, WebSocket>>,
    /// Client event budgets and refusals in a row, per socket (in memory only).
    rates: RefCell<HashMap<String, (ClientEventRate, u32)>>,
    /// The sweep alarm (`PUSHER_GATEWAY_SWEEP_SECONDS`), as last seen.
    pub(super) sweep_alarm: Alarm,
    /// Admissions of the v2 sockets (`natives` table), as read.
    pub(super) natives: RefCell<HashMap<String, MuxAdmission>>,
    /// Refused frames in a row, per v2 socket (in memory only).
    pub(super) strikes: RefCell<HashMap<String, u32>>,
    /// What each v2 socket reported it has read, per room (in memory only).
    pub(super) reads: RefCell<MuxLag>,
}

/// Rate refusals of client events in a row after which a socket is closed with 4301.
pub const MAX_CLIENT_EVENT_REFUSALS: u32 = 10;

/// How long a cache channel's last event is served to new subscribers (Pusher: 30 minutes).
pub const CACHE_TTL_MS: u64 = 30 * 60 * 1000;

impl DurableObject for Gateway {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            shard: RefCell::new(None),
            sockets: RefCell::new(HashMap::new()),
            rates: RefCell::new(HashMap::new()),
            sweep_alarm: Alarm::default(),
            natives: RefCell::new(HashMap::new()),
            strikes: RefCell::new(HashMap::new()),
            reads: RefCell::new(MuxLag::default()),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let rid = crate::glue::http::request_id(&req);
        match self.handle(req).await {
            Ok(r) => Ok(r),
            Err(e) => failure_response(&e, rid.as_deref()),
        }
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        self.ensure_loaded()?;
        let Some(a) = ws.deserialize_attachment::<Attachment>()? else {
            return Ok(());
        };
        if a.app_id == NATIVE_APP {
            return self.native_message(&ws, &a, message).await;
        }
        let WebSocketIncomingMessage::String(text) = message else {
            let _ = ws.send_with_str(wire::error_frame(None, "binary frames are not supported"));
            return Ok(());
        };
        let limits = settings::config(&self.env)
            .map_err(|e| worker::Error::RustError(e.to_string()))?
            .pusher
            .clone();
        match wire::decode(&text, &limits) {
            Ok(ClientFrame::Ping) => {
                let _ = ws.send_with_str(wire::pong_frame());
            }
            Ok(ClientFrame::Pong) => {}
            Ok(ClientFrame::Subscribe {
                channel,
                channel_type,
                auth,
                channel_data,
            }) => {
                let req = SubscribeRequest {
                    channel: &channel,
                    channel_type,
                    auth: auth.as_deref(),
                    channel_data: channel_data.as_deref(),
                };
                self.subscribe(&ws, &a, &req, &limits).await?;
            }
            Ok(ClientFrame::Unsubscribe { channel }) => {
                self.unsubscribe(&a, &[channel])?;
            }
            Ok(ClientFrame::ClientEvent {
                event,
                channel,
                data,
            }) => {
                self.client_event(&ws, &a, &event, &channel, &data, &limits)
                    .await?;
            }
            Ok(ClientFrame::Signin { auth, user_data }) => {
                self.signin(&ws, &a, &auth, &user_data, &limits)?;
            }
            Err(e) => {
                let _ = ws.send_with_str(wire::error_frame(e.code(), &e.to_string()));
            }
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
        self.forget(&ws)?;
        finish_close(&ws, code, "closed");
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        self.forget(&ws)
    }

    async fn alarm(&self) -> Result<Response> {
        self.on_sweep_alarm().await?;
        Response::empty()
    }
}

impl Gateway {
    async fn handle(&self, req: Request) -> std::result::Result<Response, ApiError> {
        let op = Op::decode(Binding::Gateway, &req.path())
            .ok_or_else(|| ApiError::not_found("not_found", "no such gateway operation"))?;
        self.ensure_loaded().map_err(internal)?;
        match op {
            Op::GatewaySocket => {
                let accepted = self.accept(&req)?;
                // A v2 socket's token expiry is this object's alarm too.
                self.arm_expiry().await.map_err(internal)?;
                Ok(accepted)
            }
            Op::GatewayDeliver => self.deliver(req).await,
            Op::GatewayTerminate => self.terminate(req).await,
            Op::GatewayReconnect => self.reconnect_all(),
            Op::GatewayChannels => self.channels(),
            _ => Err(ApiError::not_found(
                "not_found",
                "no such gateway operation",
            )),
        }
    }

    pub(super) fn sql(&self) -> worker::SqlStorage {
        self.state.storage().sql()
    }

    /// Loads the subscriptions and sockets after construction (or waking from hibernation).
    pub(super) fn ensure_loaded(&self) -> Result<()> {
        if self.shard.borrow().is_some() {
            return Ok(());
        }
        let sql = self.sql();
        for q in SCHEMA {
            sql.exec(q, None)?;
        }
        #[derive(Deserialize)]
        struct Row {
            socket: String,
            channel: String,
            start: i64,
            user: Option<String>,
        }
        let rows: Vec<Row> = sql
            .exec("SELECT socket, channel, start, user FROM subs", None)?
            .to_array()?;
        let mut shard = Shard::new();
        for r in rows {
            let from = r.start.max(0) as u64;
            shard.restore(&r.channel, &r.socket, from, r.user.as_deref());
        }
        #[derive(Deserialize)]
        struct Handed {
            channel: String,
            last: i64,
        }
        let handed: Vec<Handed> = sql
            .exec("SELECT channel, last FROM handed", None)?
            .to_array()?;
        for h in handed {
            shard.restore_last(&h.channel, h.last.max(0) as u64);
        }
        #[derive(Deserialize)]
        struct Native {
            socket: String,
            admission: String,
        }
        let natives: Vec<Native> = sql
            .exec("SELECT socket, admission FROM natives", None)?
            .to_array()?;
        self.natives.borrow_mut().extend(
            natives
                .into_iter()
                .filter_map(|n| Some((n.socket, serde_json::from_str(&n.admission).ok()?))),
        );
        let mut sockets = self.sockets.borrow_mut();
        for ws in self.state.get_websockets() {
            if let Ok(Some(a)) = ws.deserialize_attachment::<Attachment>() {
                sockets.insert(a.socket_id, ws);
            }
        }
        drop(sockets);
        *self.shard.borrow_mut() = Some(shard);
        // Sockets a reset or restart cut without a close event leave their channels now.
        self.sweep()
    }

    pub(super) fn with_shard<T>(&self, f: impl FnOnce(&mut Shard) -> T) -> T {
        let mut guard = self.shard.borrow_mut();
        f(guard.as_mut().expect("ensure_loaded ran first"))
    }

    /// The shard's own object name (`{app id}:{index}`), as the router told it first.
    pub(super) fn name(&self) -> Result<String> {
        #[derive(Deserialize)]
        struct V {
            v: String,
        }
        let rows: Vec<V> = self
            .sql()
            .exec("SELECT v FROM meta WHERE k = 'name'", None)?
            .to_array()?;
        rows.into_iter()
            .next()
            .map(|r| r.v)
            .ok_or_else(|| worker::Error::RustError("gateway name unknown".into()))
    }

    /// `GatewaySocket`: accepts the socket, gives it a socket id and says so.
    fn accept(&self, req: &Request) -> std::result::Result<Response, ApiError> {
        let header =
            |name: &str| {
                req.headers().get(name).ok().flatten().ok_or_else(|| {
                    ApiError::bad_request("not_routed", "connect through the router")
                })
            };
        let (name, app_id) = (header(SHARD_HEADER)?, header(APP_HEADER)?);
        self.sql()
            .exec(
                "INSERT INTO meta (k, v) VALUES ('name', ?) ON CONFLICT(k) DO NOTHING",
                Some(vec![name.clone().into()]),
            )
            .map_err(internal)?;
        if app_id == NATIVE_APP {
            return self.accept_native(req, &name);
        }
        let pair = WebSocketPair::new().map_err(internal)?;
        let socket_id = self.new_socket_id(&name);
        self.state.accept_web_socket(&pair.server);
        let a = Attachment {
            socket_id: socket_id.clone(),
            app_id,
            user: None,
        };
        pair.server.serialize_attachment(&a).map_err(internal)?;
        // pusher-js's ping, answered by the runtime without waking the object.
        if let Ok(p) = WebSocketRequestResponsePair::new(&wire::ping_frame(), &wire::pong_frame()) {
            self.state.set_websocket_auto_response(&p);
        }
        let config = settings::config(&self.env)?;
        // The app's connection quota, shared evenly by its shards: past it, 4004 (pusher-js
        // does not reconnect).
        let app = apps(&self.env)?.by_id(&a.app_id).cloned();
        let quota = app.and_then(|app| app.max_connections).map(|max| {
            let shards = u64::from(config.pusher_shards);
            max.div_ceil(shards)
        });
        let held = self.sockets.borrow().len() as u64;
        // Past the app's quota, 4004 (pusher-js stays away); past this shard's capacity, 4100
        // (pusher-js reconnects after a delay, to a shard picked afresh).
        let refusal = if quota.is_some_and(|q| held >= q) {
            Some((
                close::OVER_CONNECTION_QUOTA,
                "over the app's connection quota",
            ))
        } else if held >= config.pusher_shard_capacity {
            Some((close::OVER_CAPACITY, "this shard is full; reconnect later"))
        } else {
            None
        };
        if let Some((code, why)) = refusal {
            let _ = pair
                .server
                .send_with_str(wire::error_frame(Some(code), why));
            let _ = pair.server.close(Some(code), Some(why));
            return Ok(ResponseBuilder::new()
                .with_status(101)
                .with_websocket(pair.client)
                .empty());
        }
        let _ = pair
            .server
            .send_with_str(wire::connection_established_frame(
                &socket_id,
                config.pusher.activity_timeout_s,
            ));
        self.sockets.borrow_mut().insert(socket_id, pair.server);
        Ok(ResponseBuilder::new()
            .with_status(101)
            .with_websocket(pair.client)
            .empty())
    }

    /// A fresh socket id: its first part modulo 1024 is the shard's index, so a socket id
    /// tells which shard holds the socket (`PUSHER_GATEWAY_SHARDS` is at most 1024).
    pub(super) fn new_socket_id(&self, name: &str) -> String {
        let index: u64 = name
            .rsplit(':')
            .next()
            .and_then(|i| i.parse().ok())
            .unwrap_or(0);
        let random = || (js_sys::Math::random() * 1e12) as u64;
        sign::socket_id(random() * 1024 + index, random())
    }

    pub(super) fn app(&self, app_id: &str) -> Result<App> {
        let apps = apps(&self.env).map_err(|e| worker::Error::RustError(e.to_string()))?;
        apps.by_id(app_id)
            .cloned()
            .ok_or_else(|| worker::Error::RustError(format!("app {app_id} is gone")))
    }

    /// `pusher:subscribe`: authorised here, joined in the channel's room.
    async fn subscribe(
        &self,
        ws: &WebSocket,
        a: &Attachment,
        req: &SubscribeRequest<'_>,
        limits: &Limits,
    ) -> Result<()> {
        let channel = req.channel.to_string();
        let refuse = |message: &str, status: u16| {
            let _ = ws.send_with_str(wire::subscription_error_frame(&channel, message, status));
        };
        if self.with_shard(|s| s.is_subscribed(&channel, &a.socket_id)) {
            return Ok(()); // pusher-js resubscribes what it has; already done
        }
        if self.with_shard(|s| s.count_of(&a.socket_id)) >= limits.max_channels_per_socket {
            refuse(
                &format!(
                    "at most {} channels per connection",
                    limits.max_channels_per_socket
                ),
                403,
            );
            return Ok(());
        }
        let app = self.app(&a.app_id)?;
        let signed_in = a.user.as_ref().map(|(id, info)| SigninUser {
            id: id.clone(),
            user_info: info.clone(),
            watchlist: Vec::new(),
        });
        let admitted = authorize::subscribe(
            &app.key,
            &app.secret,
            &a.socket_id,
            req,
            signed_in.as_ref(),
            limits,
        );
        let member = match admitted {
            Ok(Admitted::Channel) => None,
            Ok(Admitted::Member(m)) => Some(m),
            Err(e) => {
                refuse(&e.to_string(), e.status());
                return Ok(());
            }
        };
        let presence = member.is_some();
        let mut session = Session::new(
            a.socket_id.clone(),
            member
                .as_ref()
                .map_or(a.socket_id.clone(), |m| m.user_id.clone()),
            Encoding::Json,
        );
        session.perms = Perms {
            publish: false,
            subscribe: true,
            presence,
        };
        session.via = Some(self.name()?);
        let cache = req.channel_type.is_cache();
        let sub = Subscribe {
            session,
            name: member
                .as_ref()
                .map_or(a.socket_id.clone(), |m| m.user_id.clone()),
            meta: member.as_ref().and_then(|m| m.user_info.clone()),
            history: cache.then_some(1),
            since: None,
        };
        let user = member.as_ref().map(|m| m.user_id.clone());
        self.with_shard(|s| s.subscribing(&channel, &a.socket_id, user.as_deref()));
        let answer = match self.room_subscribe(&app, &channel, &sub).await {
            Ok(answer) => answer,
            Err(e) => {
                log_error("pusher_subscribe", &e.to_string());
                // The room may have taken the subscriber before the call failed.
                self.forget_in_room(a, &channel);
                SubscribeAnswer {
                    subscribed: false,
                    frames: Vec::new(),
                }
            }
        };
        // Unsubscribed or closed while the room answered: undone there, nothing sent here.
        if !self.with_shard(|s| s.is_pending(&channel, &a.socket_id)) {
            if answer.subscribed {
                self.forget_in_room(a, &channel);
            }
            return Ok(());
        }
        let welcome = answer.frames.iter().find(|f| f["type"] == "welcome");
        let (true, Some(welcome)) = (answer.subscribed, welcome) else {
            self.with_shard(|s| s.unsubscribe(&channel, &a.socket_id));
            let refusal = answer.frames.iter().find(|f| f["type"] == "error");
            let why = refusal
                .and_then(|f| f["message"].as_str())
                .unwrap_or("the channel is unavailable")
                .to_string();
            // A full presence channel is a refusal (403), anything else the channel's trouble.
            let full = refusal.is_some_and(|f| f["code"] == "room_full");
            refuse(&why, if full { 403 } else { 503 });
            return Ok(());
        };
        let from = welcome["offset"].as_u64().unwrap_or(0);
        let data = presence.then(|| {
            let members: Vec<Member> = welcome["members"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| Member {
                    user_id: m["id"].as_str().unwrap_or_default().to_string(),
                    user_info: m.get("meta").cloned().filter(|v| !v.is_null()),
                })
                .collect();
            presence_data(&members)
        });
        self.sql().exec(
            "INSERT INTO subs (socket, channel, start, user) VALUES (?, ?, ?, ?) \
             ON CONFLICT(socket, channel) DO UPDATE SET start = excluded.start, user = excluded.user",
            Some(vec![
                a.socket_id.clone().into(),
                channel.clone().into(),
                (from as i64).into(),
                user.map_or(worker::SqlStorageValue::Null, Into::into),
            ]),
        )?;
        let ok = wire::subscription_succeeded_frame(&channel, data.as_ref());
        let mut sends = self.with_shard(|s| s.subscribed(&channel, &a.socket_id, from, ok));
        if cache {
            // A cache channel's last event (within its TTL) follows the success, or a miss.
            let last = answer.frames.iter().rev().find(|f| {
                f["type"] == "message"
                    && f["ts"]
                        .as_u64()
                        .is_some_and(|ts| now_ms().saturating_sub(ts) <= CACHE_TTL_MS)
            });
            let frame = match last.and_then(|f| channel_frame(&channel, f)) {
                Some((text, _)) => text,
                None => {
                    let miss = WebhookEvent::CacheMiss {
                        channel: channel.clone(),
                    };
                    self.raise(&a.app_id, miss);
                    wire::cache_miss_frame(&channel)
                }
            };
            // The cached event goes first, before anything held for the socket.
            sends.insert(1, (a.socket_id.clone(), frame));
        }
        self.send_all(sends);
        // After the sends: no await may come between the pending check and `subscribed`.
        self.arm_sweep().await
    }

    async fn room_subscribe(
        &self,
        app: &App,
        channel: &str,
        sub: &Subscribe,
    ) -> std::result::Result<SubscribeAnswer, String> {
        let key = channel_key(&app.id, channel);
        let body = serde_json::to_string(sub).map_err(|e| e.to_string())?;
        let call = Call::new(Op::RoomSubscribe).body(body);
        let mut r = channel_call(&self.env, &key, call)
            .await
            .map_err(|e| e.to_string())?;
        if r.status_code() != 200 {
            return Err(format!("room answered {}", r.status_code()));
        }
        r.json().await.map_err(|e| e.to_string())
    }

    /// A `client-` event: only from a subscribed socket, only when the app allows them, at most
    /// `client_events_per_second`; published into the channel's stream as from this socket,
    /// so it is never echoed back to it. Refusals are `pusher:error`s; after
    /// [`MAX_CLIENT_EVENT_REFUSALS`] rate refusals in a row the socket is closed with 4301.
    async fn client_event(
        &self,
        ws: &WebSocket,
        a: &Attachment,
        event: &str,
        channel: &str,
        data: &str,
        limits: &Limits,
    ) -> Result<()> {
        let refuse = |code: Option<u16>, message: &str| {
            let _ = ws.send_with_str(wire::error_frame(code, message));
        };
        let app = self.app(&a.app_id)?;
        if !app.client_events {
            refuse(None, "client events are not enabled for this app");
            return Ok(());
        }
        if !self.with_shard(|s| s.is_active(channel, &a.socket_id)) {
            refuse(
                None,
                &format!("subscribe to {channel} before sending client events"),
            );
            return Ok(());
        }
        let allowed = {
            let mut rates = self.rates.borrow_mut();
            let (rate, refusals) = rates.entry(a.socket_id.clone()).or_default();
            match rate.allow(now_ms(), limits) {
                Ok(()) => {
                    *refusals = 0;
                    Ok(())
                }
                Err(e) => {
                    *refusals += 1;
                    Err((e, *refusals))
                }
            }
        };
        if let Err((e, refusals)) = allowed {
            if refusals >= MAX_CLIENT_EVENT_REFUSALS {
                let _ = ws.close(
                    Some(close::CLIENT_EVENT_REJECTED),
                    Some("client event rate"),
                );
            } else {
                refuse(e.code(), &e.to_string());
            }
            return Ok(());
        }
        let user_id = self.with_shard(|s| s.user_of(channel, &a.socket_id).map(str::to_string));
        let mut body = serde_json::json!({"event": event, "data": data});
        if let Some(u) = user_id {
            body["user_id"] = u.into();
        }
        let b = RoomBroadcast {
            body,
            name: Some("client".into()),
            idempotency_key: None,
            key_name: Some("client".into()),
            sender: Some(socket_sender(&a.socket_id)),
        };
        let key = channel_key(&a.app_id, channel);
        let sent = async {
            let body = serde_json::to_string(&b).map_err(|e| e.to_string())?;
            let call = Call::new(Op::RoomBroadcast).body(body);
            let r = channel_call(&self.env, &key, call)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<u16, String>(r.status_code())
        };
        match sent.await {
            Ok(200) => self.raise(
                &a.app_id,
                WebhookEvent::ClientEvent {
                    channel: channel.to_string(),
                    event: event.to_string(),
                    data: data.to_string(),
                    socket_id: a.socket_id.clone(),
                    user_id: b.body["user_id"].as_str().map(str::to_string),
                },
            ),
            Ok(413) => refuse(None, "client event too large"),
            Ok(429) => refuse(
                Some(close::CLIENT_EVENT_REJECTED),
                "the channel is over its rate",
            ),
            Ok(s) => refuse(None, &format!("client event not delivered ({s})")),
            Err(e) => {
                log_error("pusher_client_event", &e);
                refuse(None, "client event not delivered");
            }
        }
        Ok(())
    }

    /// A socket closed: it leaves every channel.
    pub(super) fn forget(&self, ws: &WebSocket) -> Result<()> {
        self.ensure_loaded()?;
        let Some(a) = ws.deserialize_attachment::<Attachment>()? else {
            return Ok(());
        };
        self.sockets.borrow_mut().remove(&a.socket_id);
        self.rates.borrow_mut().remove(&a.socket_id);
        if a.app_id == NATIVE_APP {
            self.forget_native(&a.socket_id)?;
        }
        let channels = self.with_shard(|s| s.channels_of(&a.socket_id));
        self.unsubscribe(&a, &channels)
    }

    /// Raises a webhook event of the app in the background (the job queue delivers it).
    fn raise(&self, app_id: &str, event: WebhookEvent) {
        let (env, app) = (self.env.clone(), app_id.to_string());
        spawn(&raw_state(&self.state), async move {
            crate::glue::pusher::webhook(&env, &app, vec![event]).await
        });
    }

    pub(super) fn send_all(&self, sends: Sends) {
        let sockets = self.sockets.borrow();
        let mut packed = HashMap::new();
        for (socket, frame) in sends {
            if let Some(ws) = sockets.get(&socket) {
                // A socket that closed under us is not an error: its close event follows.
                let msgpack = self
                    .natives
                    .borrow()
                    .get(&socket)
                    .is_some_and(|a| a.enc == Encoding::Msgpack);
                match msgpack.then(|| msgpack_of(&mut packed, &frame)).flatten() {
                    Some(bytes) => {
                        let _ = ws.send_with_bytes(bytes);
                    }
                    None => {
                        let _ = ws.send_with_str(frame);
                    }
                }
            }
        }
    }
}
