//! The gateway's protocol v2 sockets (`GET /api/ws`, `src/rooms/multiplex.rs`): the same
//! Gateway object and the same subscription machinery as Pusher sockets, in shards of their
//! own (`native:{index}`), speaking the native frames with the room named in each.
//!
//! A socket's admission (who it is, which rooms its token opens) is kept in the `natives`
//! table, since a token's room patterns do not fit a socket attachment. Subscribing joins the
//! socket to the room as a subscriber held by this shard; a publish is handed to the room as
//! that subscriber's frame (`RoomFrame`), so the room's rules — rates, permissions,
//! de-duplication, acknowledgements — are v1's, and its `message` and `ack` come back through
//! the shard's deliveries in the room's order.

use serde::Deserialize;
use serde_json::{json, Value};
use worker::{
    Request, Response, ResponseBuilder, Result, WebSocket, WebSocketIncomingMessage, WebSocketPair,
    WebSocketRequestResponsePair,
};

use crate::glue::http::{internal, log_error};
use crate::glue::rooms::channel_call;
use crate::glue::settings;
use crate::glue::stub::Call;
use crate::http::error::ApiError;
use crate::internal::Op;
use crate::pusher::wire::close;
use crate::rooms::multiplex::{
    self, error_frame, ready_frame, room_frame, ClientFrame, MuxAdmission, MUX_ADMISSION_HEADER,
    MUX_SUBPROTOCOL_HEADER, NATIVE_APP,
};
use crate::rooms::protocol::{Encoded, Encoding, RawFrame};
use crate::rooms::shards::{frame_offset, Delivered, Subscribe, SubscribeAnswer, ViaFrame};

use super::gateway::{Attachment, Gateway};

/// Close code after `ROOM_MAX_STRIKES` refused frames in a row (v1's 4500).
const CLOSE_POLICY: u16 = 4500;
/// Close code when the socket's token expires (v1's 4001).
const TOKEN_EXPIRED: u16 = crate::rooms::protocol::close::TOKEN_EXPIRED;
/// Close code of a reader too far behind (v1's 4008).
const TOO_SLOW: u16 = crate::rooms::protocol::close::TOO_SLOW;

impl Gateway {
    /// `GatewaySocket` of a v2 socket: accepts it, records its admission, says `ready`.
    pub(super) fn accept_native(
        &self,
        req: &Request,
        name: &str,
    ) -> std::result::Result<Response, ApiError> {
        let header = |h: &str| req.headers().get(h).ok().flatten();
        let admission: MuxAdmission = header(MUX_ADMISSION_HEADER)
            .and_then(|a| serde_json::from_str(&a).ok())
            .ok_or_else(|| ApiError::bad_request("not_routed", "connect through the router"))?;
        let config = settings::config(&self.env)?;
        let pair = WebSocketPair::new().map_err(internal)?;
        let socket_id = self.new_socket_id(name);
        self.state.accept_web_socket(&pair.server);
        let a = Attachment {
            socket_id: socket_id.clone(),
            app_id: NATIVE_APP.to_string(),
            user: None,
        };
        pair.server.serialize_attachment(&a).map_err(internal)?;
        // v1's heartbeat, answered by the runtime without waking the object.
        if let Ok(p) = WebSocketRequestResponsePair::new(r#"{"type":"ping"}"#, r#"{"type":"pong"}"#)
        {
            self.state.set_websocket_auto_response(&p);
        }
        let mut response = ResponseBuilder::new().with_status(101);
        if let Some(p) = header(MUX_SUBPROTOCOL_HEADER) {
            response = response
                .with_header("Sec-WebSocket-Protocol", &p)
                .map_err(internal)?;
        }
        if self.sockets.borrow().len() as u64 >= config.pusher_shard_capacity {
            let why = "this gateway shard is full; reconnect later";
            send(
                &pair.server,
                admission.enc,
                &error_frame(None, "over_capacity", why, None),
            );
            let _ = pair.server.close(Some(close::OVER_CAPACITY), Some(why));
            return Ok(response.with_websocket(pair.client).empty());
        }
        self.sql()
            .exec(
                "INSERT INTO natives (socket, admission) VALUES (?, ?) \
                 ON CONFLICT(socket) DO UPDATE SET admission = excluded.admission",
                Some(vec![
                    socket_id.clone().into(),
                    serde_json::to_string(&admission).map_err(internal)?.into(),
                ]),
            )
            .map_err(internal)?;
        send(
            &pair.server,
            admission.enc,
            &ready_frame(&socket_id, &admission),
        );
        self.natives
            .borrow_mut()
            .insert(socket_id.clone(), admission);
        self.sockets.borrow_mut().insert(socket_id, pair.server);
        Ok(response.with_websocket(pair.client).empty())
    }

    /// The admission of a v2 socket this shard holds (read back after hibernation).
    pub(super) fn admission(&self, socket: &str) -> Result<Option<MuxAdmission>> {
        if let Some(a) = self.natives.borrow().get(socket) {
            return Ok(Some(a.clone()));
        }
        #[derive(Deserialize)]
        struct Row {
            admission: String,
        }
        let rows: Vec<Row> = self
            .sql()
            .exec(
                "SELECT admission FROM natives WHERE socket = ?",
                Some(vec![socket.into()]),
            )?
            .to_array()?;
        let Some(a) = rows
            .first()
            .and_then(|r| serde_json::from_str::<MuxAdmission>(&r.admission).ok())
        else {
            return Ok(None);
        };
        self.natives
            .borrow_mut()
            .insert(socket.to_string(), a.clone());
        Ok(Some(a))
    }

    /// Makes sure the alarm fires by the earliest token expiry among this shard's v2 sockets.
    pub(super) async fn arm_expiry(&self) -> Result<()> {
        let next = self
            .natives
            .borrow()
            .values()
            .filter_map(|a| a.expires_ms)
            .min();
        match next {
            Some(t) => {
                self.sweep_alarm
                    .no_later_than(&self.state.storage(), t)
                    .await
            }
            None => Ok(()),
        }
    }

    /// Closes every v2 socket whose token expired by `now_ms` as v1 closes a room session: a
    /// `token_expired` error frame, then close 4001 (refresh the token and reconnect). Answers
    /// how many were closed.
    pub(super) fn expire_natives(&self, now_ms: u64) -> Result<usize> {
        let expired: Vec<(String, Encoding)> = self
            .natives
            .borrow()
            .iter()
            .filter(|(_, a)| a.expires_ms.is_some_and(|e| e <= now_ms))
            .map(|(s, a)| (s.clone(), a.enc))
            .collect();
        for (socket, enc) in &expired {
            let ws = self.sockets.borrow().get(socket).cloned();
            match ws {
                Some(ws) => {
                    let why = "your token expired; refresh it and reconnect";
                    send(&ws, *enc, &error_frame(None, "token_expired", why, None));
                    let _ = ws.close(Some(TOKEN_EXPIRED), Some("token expired"));
                    // Its subscriptions and admission go now, not when (if) the close completes.
                    self.forget(&ws)?;
                }
                None => self.forget_native(socket)?,
            }
        }
        Ok(expired.len())
    }

    /// Closes the v2 sockets of `room` that would be more than `ROOM_MAX_LAG_MESSAGES` behind
    /// by their own `seen` reports once handed `frames` on: a `too_slow` error frame, then
    /// 4008, before the delivery (they recover it with `since`).
    pub(super) fn close_slow(&self, room: &str, frames: &[Delivered]) -> Result<()> {
        let last = self.with_shard(|s| s.last(room)).unwrap_or(0);
        let Some(head) = frames
            .iter()
            .filter_map(|d| frame_offset(&d.frame))
            .max()
            .filter(|h| *h > last)
        else {
            return Ok(());
        };
        let max = settings::config(&self.env)
            .map_err(|e| worker::Error::RustError(e.to_string()))?
            .room
            .max_lag_messages;
        let slow = self.reads.borrow_mut().advance(room, head, max);
        for socket in slow {
            let ws = self.sockets.borrow().get(&socket).cloned();
            let enc = self.natives.borrow().get(&socket).map(|a| a.enc);
            if let (Some(ws), Some(enc)) = (ws, enc) {
                let why = format!(
                    "more than {max} messages behind by your own seen reports; reconnect and recover"
                );
                send(&ws, enc, &error_frame(None, "too_slow", &why, None));
                let _ = ws.close(Some(TOO_SLOW), Some("too slow"));
                self.forget(&ws)?;
            }
        }
        Ok(())
    }

    /// A v2 socket closed: its admission goes with it.
    pub(super) fn forget_native(&self, socket: &str) -> Result<()> {
        self.natives.borrow_mut().remove(socket);
        self.strikes.borrow_mut().remove(socket);
        self.reads.borrow_mut().forget(socket);
        self.sql().exec(
            "DELETE FROM natives WHERE socket = ?",
            Some(vec![socket.into()]),
        )?;
        Ok(())
    }

    /// A frame from a v2 socket.
    pub(super) async fn native_message(
        &self,
        ws: &WebSocket,
        a: &Attachment,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let Some(adm) = self.admission(&a.socket_id)? else {
            let _ = ws.close(Some(1011), Some("unknown socket; reconnect"));
            return Ok(());
        };
        let limits = settings::config(&self.env)
            .map_err(|e| worker::Error::RustError(e.to_string()))?
            .room;
        let raw = match &message {
            WebSocketIncomingMessage::String(s) => RawFrame::Text(s),
            WebSocketIncomingMessage::Binary(b) => RawFrame::Binary(b),
        };
        let refused = match multiplex::decode(adm.enc, raw, limits.max_frame_bytes) {
            Err(e) => Some(error_frame(None, e.code(), &e.to_string(), None)),
            Ok(ClientFrame::Subscribe {
                room,
                name,
                meta,
                since,
                history,
            }) => {
                let sub = (name, meta, since, history);
                self.native_subscribe(a, &adm, &room, sub).await?
            }
            Ok(ClientFrame::Unsubscribe { room }) => {
                if self.with_shard(|s| s.is_subscribed(&room, &a.socket_id)) {
                    self.unsubscribe(a, std::slice::from_ref(&room))?;
                    send(ws, adm.enc, &json!({"type": "unsubscribed", "room": room}));
                    None
                } else {
                    Some(not_subscribed(&room, None))
                }
            }
            Ok(ClientFrame::Publish { room, body, id }) => {
                self.native_publish(a, &room, body, id).await
            }
            // Neither accepted nor refused: it does not touch the strikes. A room the socket
            // is not (or not yet) in is passed over: a report may cross an unsubscribe.
            Ok(ClientFrame::Seen { rooms }) => {
                for (room, offset) in rooms {
                    if let Some(handed) = self.with_shard(|s| s.handed(&room, &a.socket_id)) {
                        self.reads
                            .borrow_mut()
                            .report(&a.socket_id, &room, offset, handed);
                    }
                }
                return Ok(());
            }
        };
        let strikes = {
            let mut strikes = self.strikes.borrow_mut();
            let n = strikes.entry(a.socket_id.clone()).or_insert(0);
            *n = match &refused {
                None => 0,
                // The server's fault, not the client's: it leaves the count alone.
                Some(f) if f["code"] == "unavailable" => *n,
                Some(_) => *n + 1,
            };
            *n
        };
        if let Some(frame) = refused {
            send(ws, adm.enc, &frame);
            if strikes >= limits.max_strikes {
                let _ = ws.close(Some(CLOSE_POLICY), Some("too many refused frames"));
            }
        }
        Ok(())
    }

    /// `subscribe`: checked against the token here, joined in the room as this shard's
    /// subscriber; `subscribed` and the replay go out before anything held for the socket.
    /// Answers the refusal, if any.
    async fn native_subscribe(
        &self,
        a: &Attachment,
        adm: &MuxAdmission,
        room: &str,
        (name, meta, since, history): (
            Option<String>,
            Option<Value>,
            Option<crate::rooms::protocol::StreamPos>,
            Option<usize>,
        ),
    ) -> Result<Option<Value>> {
        let refuse =
            |code: &str, message: &str| Ok(Some(error_frame(Some(room), code, message, None)));
        if self.with_shard(|s| s.is_subscribed(room, &a.socket_id)) {
            return refuse("already_subscribed", "this socket is already in this room");
        }
        let max = settings::config(&self.env)
            .map_err(|e| worker::Error::RustError(e.to_string()))?
            .ws_max_rooms;
        if self.with_shard(|s| s.count_of(&a.socket_id)) >= max {
            return refuse(
                "too_many_rooms",
                &format!("at most {max} rooms per socket (WS_MAX_ROOMS_PER_SOCKET)"),
            );
        }
        let perms = match adm.admit_room(room) {
            Ok((_, perms)) => perms,
            Err(r) => return refuse(r.code, &r.message),
        };
        let session = adm.session(&a.socket_id, &self.name()?, perms);
        let sub = Subscribe {
            session,
            name: name
                .or_else(|| adm.name.clone())
                .unwrap_or_else(|| adm.user.clone()),
            meta,
            history,
            since,
        };
        self.with_shard(|s| s.subscribing(room, &a.socket_id, None));
        let answer = match self.room_subscribe_native(room, &sub).await {
            Ok(answer) => answer,
            Err((code, message)) => {
                self.with_shard(|s| s.unsubscribe(room, &a.socket_id));
                // The room may have taken the subscriber before the call failed.
                if code == "unavailable" {
                    self.forget_in_room(a, room);
                }
                return refuse(code, &message);
            }
        };
        // Left (unsubscribe, close, a slow or expired socket) while the room answered: the
        // room forgets the subscriber again, and the socket hears nothing more of it.
        if !self.with_shard(|s| s.is_pending(room, &a.socket_id)) {
            if answer.subscribed {
                self.forget_in_room(a, room);
            }
            return Ok(None);
        }
        match self.complete_subscribe(a, room, answer).await {
            Ok(refusal) => Ok(refusal),
            Err(e) => {
                log_error("ws_subscribe", &format!("{room}: {e}"));
                self.unsubscribe(a, &[room.to_string()])?;
                refuse("unavailable", "the room is unavailable; try again")
            }
        }
    }

    /// The room answered a pending `subscribe`: the refusal, or the subscription recorded and
    /// `subscribed`, the replay and what was held for the socket sent, in that order.
    async fn complete_subscribe(
        &self,
        a: &Attachment,
        room: &str,
        answer: SubscribeAnswer,
    ) -> Result<Option<Value>> {
        let welcome = answer.frames.iter().find(|f| f["type"] == "welcome");
        let (true, Some(welcome)) = (answer.subscribed, welcome) else {
            self.with_shard(|s| s.unsubscribe(room, &a.socket_id));
            let refusal = answer.frames.iter().find(|f| f["type"] == "error");
            return Ok(Some(match refusal.and_then(|f| room_frame(room, f)) {
                Some(f) => f,
                None => error_frame(Some(room), "unavailable", "the room is unavailable", None),
            }));
        };
        let from = welcome["offset"].as_u64().unwrap_or(0);
        self.sql().exec(
            "INSERT INTO subs (socket, channel, start, user) VALUES (?, ?, ?, NULL) \
             ON CONFLICT(socket, channel) DO UPDATE SET start = excluded.start",
            Some(vec![
                a.socket_id.clone().into(),
                room.into(),
                (from as i64).into(),
            ]),
        )?;
        let subscribed = room_frame(room, welcome).map(|f| f.to_string());
        let mut sends = self
            .with_shard(|s| s.subscribed(room, &a.socket_id, from, subscribed.unwrap_or_default()));
        // The replay follows `subscribed`, before anything held for the socket meanwhile.
        let replay = answer
            .frames
            .iter()
            .filter(|f| f["type"] == "message")
            .filter_map(|f| room_frame(room, f))
            .map(|f| (a.socket_id.clone(), f.to_string()));
        let rest = sends.split_off(1);
        sends.extend(replay);
        sends.extend(rest);
        self.send_all(sends);
        // After the sends: no await may come between the pending check and `subscribed`.
        if let Err(e) = self.arm_sweep().await {
            log_error("ws_subscribe_sweep", &e.to_string());
        }
        Ok(None)
    }

    async fn room_subscribe_native(
        &self,
        room: &str,
        sub: &Subscribe,
    ) -> std::result::Result<SubscribeAnswer, (&'static str, String)> {
        let unavailable = |e: String| {
            log_error("ws_subscribe", &e);
            (
                "unavailable",
                "the room is unavailable; try again".to_string(),
            )
        };
        let body = serde_json::to_string(sub).map_err(|e| unavailable(e.to_string()))?;
        let call = Call::new(Op::RoomSubscribe).body(body);
        let mut r = channel_call(&self.env, room, call)
            .await
            .map_err(|e| match e.status() {
                404 => ("room_not_found", e.to_string()),
                _ => unavailable(e.to_string()),
            })?;
        match r.status_code() {
            200 => r.json().await.map_err(|e| unavailable(e.to_string())),
            404 => Err(("room_not_found", "no such private room".to_string())),
            s => Err(unavailable(format!("room answered {s}"))),
        }
    }

    /// `publish`: handed to the room as this socket's frame there. Answers a refusal the
    /// gateway makes itself; the room's own (rates, permissions, sizes) come back as its
    /// `error` frames through the deliveries.
    async fn native_publish(
        &self,
        a: &Attachment,
        room: &str,
        body: Value,
        id: Option<String>,
    ) -> Option<Value> {
        if !self.with_shard(|s| s.is_active(room, &a.socket_id)) {
            return Some(not_subscribed(room, id.as_deref()));
        }
        let mut frame = json!({"type": "publish", "body": body});
        if let Some(id) = &id {
            frame["id"] = id.as_str().into();
        }
        let f = ViaFrame {
            conn: a.socket_id.clone(),
            frame: frame.to_string(),
        };
        let sent = async {
            let body = serde_json::to_string(&f).map_err(|e| e.to_string())?;
            let r = channel_call(&self.env, room, Call::new(Op::RoomFrame).body(body))
                .await
                .map_err(|e| e.to_string())?;
            Ok::<u16, String>(r.status_code())
        };
        match sent.await {
            Ok(s) if s < 300 => None,
            Ok(404) => Some(not_subscribed(room, id.as_deref())),
            Ok(s) => {
                log_error("ws_publish", &format!("{room}: room answered {s}"));
                Some(unavailable(room, id.as_deref()))
            }
            Err(e) => {
                log_error("ws_publish", &format!("{room}: {e}"));
                Some(unavailable(room, id.as_deref()))
            }
        }
    }
}

fn not_subscribed(room: &str, id: Option<&str>) -> Value {
    error_frame(
        Some(room),
        "not_subscribed",
        "subscribe to this room first",
        id,
    )
}

fn unavailable(room: &str, id: Option<&str>) -> Value {
    error_frame(
        Some(room),
        "unavailable",
        "the room could not take it; nothing was stored — retry",
        id,
    )
}

/// Sends a v2 frame in the socket's encoding.
pub(super) fn send(ws: &WebSocket, enc: Encoding, frame: &Value) {
    // A socket that closed under us is not an error: its close event follows.
    let _ = match multiplex::encode(enc, frame) {
        Encoded::Text(t) => ws.send_with_str(t),
        Encoded::Binary(b) => ws.send_with_bytes(b),
    };
}
