//! Protocol v2: one socket, many rooms (documented in `docs/PROTOCOL.md`, "Protocol v2").
//!
//! A v2 socket is held by a gateway shard, not by a room: the shard subscribes it to each room
//! it asks for as a subscriber `via` the shard (`src/rooms/shards.rs`), passes its publishes
//! to the room as that subscriber's frames, and hands the room's frames on with the room's
//! name added. So every rule of a room is the room's own, the same for v1 and v2: offsets,
//! history and recovery, presence, de-duplication, acknowledgements, rates and limits.
//!
//! This module is the pure part: the client frames and their decoding (the same size, kind
//! and nesting rules as v1), who may enter which room ([`MuxAdmission::admit_room`]), and how a
//! room's v1 frame becomes a v2 frame ([`room_frame`]).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::protocol::{decode_as, Encoded, Encoding, FrameError, RawFrame, StreamPos};
use super::session::{Perms, Session};
use crate::http::route::RoomKey;

/// Version announced in the `ready` frame.
pub const PROTOCOL_V2: u32 = 2;
/// Subprotocol selecting JSON text frames.
pub const SUBPROTOCOL_V2_JSON: &str = "roomkeeper.v2.json";
/// Subprotocol selecting MessagePack binary frames.
pub const SUBPROTOCOL_V2_MSGPACK: &str = "roomkeeper.v2.msgpack";

/// Internal header carrying a v2 socket's [`MuxAdmission`] from the router to its shard.
pub const MUX_ADMISSION_HEADER: &str = "X-Roomkeeper-Mux-Admission";
/// Internal header carrying the subprotocol the router agreed, for the shard to echo.
pub const MUX_SUBPROTOCOL_HEADER: &str = "X-Roomkeeper-Mux-Subprotocol";

/// The gateway "app" of v2 sockets: shard names are `native:{index}`.
pub const NATIVE_APP: &str = "native";

/// A frame a v2 client sends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Enter a room: v1's `join`, with the room named.
    Subscribe {
        /// The room (a public name or a private id).
        room: String,
        /// Display name in this room (a token's name wins over it).
        #[serde(default)]
        name: Option<String>,
        /// Member metadata in this room.
        #[serde(default)]
        meta: Option<Value>,
        /// Resume this room from this position.
        #[serde(default)]
        since: Option<StreamPos>,
        /// Replay up to this many latest messages.
        #[serde(default)]
        history: Option<usize>,
    },
    /// Leave a room.
    Unsubscribe {
        /// The room.
        room: String,
    },
    /// Publish into a room this socket is subscribed to.
    Publish {
        /// The room.
        room: String,
        /// The message body.
        body: Value,
        /// Client message id: acknowledged, and de-duplicated on retries.
        #[serde(default)]
        id: Option<String>,
    },
    /// Read reports: room → the offset of the last `message` of it processed (never
    /// answered; what bounds a slow reader, `ROOM_MAX_LAG_MESSAGES`).
    Seen {
        /// Room → offset.
        rooms: std::collections::BTreeMap<String, u64>,
    },
}

/// Frame `type` values a v2 client may send.
pub const CLIENT_FRAME_TYPES: &[&str] = &["subscribe", "unsubscribe", "publish", "seen"];

/// Decodes one v2 client frame (v1's rules: [`crate::rooms::protocol::decode`]).
pub fn decode(
    encoding: Encoding,
    raw: RawFrame<'_>,
    max_frame_bytes: usize,
) -> Result<ClientFrame, FrameError> {
    decode_as(encoding, raw, max_frame_bytes, CLIENT_FRAME_TYPES)
}

/// Picks the encoding of a v2 socket from the subprotocol offer and `?encoding=`, like v1's
/// [`Encoding::negotiate`] with the v2 subprotocol names.
pub fn negotiate(
    offered: Option<&str>,
    query: Option<&str>,
) -> Result<(Encoding, Option<&'static str>), String> {
    if let Some(offered) = offered.filter(|o| !o.trim().is_empty()) {
        for p in offered.split(',').map(str::trim) {
            match p {
                SUBPROTOCOL_V2_MSGPACK => return Ok((Encoding::Msgpack, Some(p_static(p)))),
                SUBPROTOCOL_V2_JSON => return Ok((Encoding::Json, Some(p_static(p)))),
                _ => {}
            }
        }
        return Err(format!(
            "no supported subprotocol offered; use {SUBPROTOCOL_V2_JSON} or {SUBPROTOCOL_V2_MSGPACK}"
        ));
    }
    match query {
        None | Some("json") => Ok((Encoding::Json, None)),
        Some("msgpack") => Ok((Encoding::Msgpack, None)),
        Some(_) => Err("encoding must be json or msgpack".into()),
    }
}

fn p_static(p: &str) -> &'static str {
    if p == SUBPROTOCOL_V2_MSGPACK {
        SUBPROTOCOL_V2_MSGPACK
    } else {
        SUBPROTOCOL_V2_JSON
    }
}

/// Who a v2 socket is, decided once by the router from its token: what every room it enters
/// is checked against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MuxAdmission {
    /// User id (a token's `sub`, or a random `anon-…` id).
    pub user: String,
    /// Whether the user is anonymous.
    pub anonymous: bool,
    /// Display name from the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Permissions from the token, in every room it opens.
    pub perms: Perms,
    /// The token's room patterns; `None` for an anonymous socket (every room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// An operator token (`"ops": true`): the reserved rooms open to it, to read only.
    #[serde(default)]
    pub ops: bool,
    /// When the token stops being valid (ms since the Unix epoch), if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// Frame encoding.
    pub enc: Encoding,
}

/// Why a socket may not enter a room: a stable code and a message (an `error` frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The code (v1's HTTP refusal codes of the same cases).
    pub code: &'static str,
    /// What to tell the client.
    pub message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl MuxAdmission {
    /// Whether this socket may enter `room`, and with which permissions there: v1's rules
    /// for the same token on `GET /api/rooms/:room/ws`.
    pub fn admit_room(&self, room: &str) -> Result<(RoomKey, Perms), Refusal> {
        let key = RoomKey::parse(room).map_err(|e| Refusal::new(e.code(), e.to_string()))?;
        if key.is_reserved() {
            return if self.ops {
                let read_only = Perms {
                    publish: false,
                    subscribe: true,
                    presence: false,
                };
                Ok((key, read_only))
            } else {
                Err(Refusal::new(
                    "reserved_room",
                    format!("{room} is the service's own feed: reading it needs an operator token"),
                ))
            };
        }
        let allowed = match &self.rooms {
            None => true,
            Some(patterns) => patterns
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => room.starts_with(prefix),
                    None => pattern == room,
                }),
        };
        if !allowed {
            return Err(Refusal::new(
                "room_forbidden",
                "your token does not open this room",
            ));
        }
        Ok((key, self.perms))
    }

    /// The room session of this socket in a room (connection id `conn`, held by `via`).
    pub fn session(&self, conn: &str, via: &str, perms: Perms) -> Session {
        let mut s = Session::new(conn, self.user.clone(), Encoding::Json);
        s.anonymous = self.anonymous;
        s.token_name = self.name.clone();
        s.perms = perms;
        s.via = Some(via.to_string());
        s
    }
}

/// The `ready` frame a v2 socket gets first: its connection id and who it is.
pub fn ready_frame(conn: &str, a: &MuxAdmission) -> Value {
    json!({"type": "ready", "protocol": PROTOCOL_V2, "conn": conn,
        "user": {"id": a.user, "name": a.name}})
}

/// An `error` frame, for a room or (with `room` `None`) for the socket.
pub fn error_frame(room: Option<&str>, code: &str, message: &str, id: Option<&str>) -> Value {
    let mut f = json!({"type": "error", "code": code, "message": message});
    if let Some(r) = room {
        f["room"] = r.into();
    }
    if let Some(id) = id {
        f["id"] = id.into();
    }
    f
}

/// A room's v1 frame (as its JSON shows it) as the v2 frame for a socket in `room`: every
/// frame gains `room`; `welcome` becomes `subscribed` (the same fields but `protocol`); a
/// `batch`'s messages stay in it. `None` for frames v2 does not carry.
pub fn room_frame(room: &str, frame: &Value) -> Option<Value> {
    let obj = frame.as_object()?;
    let kind = obj.get("type")?.as_str()?;
    let mut out = Map::new();
    match kind {
        "welcome" => {
            out.insert("type".into(), "subscribed".into());
            for (k, v) in obj {
                if k != "type" && k != "protocol" && k != "room" {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        // The room closed this subscriber (`closed`, "code: reason"): for a v2 socket that is
        // leaving the room, told as `unsubscribed` with the close code and reason.
        "error" if obj.get("code").and_then(Value::as_str) == Some("closed") => {
            let message = obj.get("message").and_then(Value::as_str).unwrap_or("");
            let (code, reason) = closed_code(message);
            out.insert("type".into(), "unsubscribed".into());
            out.insert("code".into(), code.into());
            out.insert("reason".into(), reason.into());
        }
        "message" | "batch" | "ack" | "joined" | "presence" | "left" | "error" => {
            out.extend(obj.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        _ => return None,
    }
    out.insert("room".into(), room.into());
    Some(Value::Object(out))
}

/// The close code and reason of a room's `closed` error message ("4500: too many refused
/// frames"); 4000 (closed by the room) when it names none.
pub fn closed_code(message: &str) -> (u16, &str) {
    match message.split_once(": ").map(|(c, r)| (c.parse::<u16>(), r)) {
        Some((Ok(code), reason)) => (code, reason),
        _ => (super::protocol::close::ROOM_CLOSED, message),
    }
}

/// Encodes a v2 frame for a socket's encoding.
pub fn encode(enc: Encoding, frame: &Value) -> Encoded {
    match enc {
        Encoding::Json => Encoded::Text(frame.to_string()),
        Encoding::Msgpack => Encoded::Binary(
            rmp_serde::to_vec_named(frame).expect("JSON values always encode as MessagePack"),
        ),
    }
}

/// The MessagePack form of a v2 frame's JSON text (a shard's deliveries are JSON text), once
/// per distinct text of one batch of sends.
pub fn msgpack_of(
    cache: &mut std::collections::HashMap<String, Vec<u8>>,
    text: &str,
) -> Option<Vec<u8>> {
    if let Some(b) = cache.get(text) {
        return Some(b.clone());
    }
    let v: Value = serde_json::from_str(text).ok()?;
    let b = rmp_serde::to_vec_named(&v).ok()?;
    cache.insert(text.to_string(), b.clone());
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(rooms: Option<Vec<&str>>) -> MuxAdmission {
        MuxAdmission {
            user: "u1".into(),
            anonymous: rooms.is_none(),
            name: Some("Ann".into()),
            perms: Perms::ALL,
            rooms: rooms.map(|r| r.into_iter().map(str::to_string).collect()),
            ops: false,
            expires_ms: None,
            enc: Encoding::Json,
        }
    }

    #[test]
    fn frames_decode_with_v1_rules() {
        let f = decode(
            Encoding::Json,
            RawFrame::Text(r#"{"type":"subscribe","room":"a","since":{"epoch":"e","offset":3}}"#),
            1024,
        )
        .unwrap();
        assert_eq!(
            f,
            ClientFrame::Subscribe {
                room: "a".into(),
                name: None,
                meta: None,
                since: Some(StreamPos {
                    epoch: "e".into(),
                    offset: 3
                }),
                history: None,
            }
        );
        let code = |t: &str| {
            decode(Encoding::Json, RawFrame::Text(t), 64)
                .unwrap_err()
                .code()
        };
        assert_eq!(code(r#"{"type":"join"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"publish","room":"a"}"#), "invalid_frame");
        assert_eq!(
            code(r#"{"type":"unsubscribe","room":"a","x":1}"#),
            "invalid_frame"
        );
        assert_eq!(code("{"), "malformed");
        assert_eq!(
            code(&format!(
                r#"{{"type":"publish","room":"{}"}}"#,
                "a".repeat(80)
            )),
            "too_large"
        );
        let packed =
            rmp_serde::to_vec_named(&json!({"type": "publish", "room": "a", "body": 1, "id": "x"}))
                .unwrap();
        assert_eq!(
            decode(Encoding::Msgpack, RawFrame::Binary(&packed), 1024).unwrap(),
            ClientFrame::Publish {
                room: "a".into(),
                body: json!(1),
                id: Some("x".into())
            }
        );
        let packed =
            rmp_serde::to_vec_named(&json!({"type": "seen", "rooms": {"a": 4, "b": 0}})).unwrap();
        assert_eq!(
            decode(Encoding::Msgpack, RawFrame::Binary(&packed), 1024).unwrap(),
            ClientFrame::Seen {
                rooms: [("a".to_string(), 4), ("b".to_string(), 0)].into()
            }
        );
        assert_eq!(code(r#"{"type":"seen","rooms":{"a":-1}}"#), "invalid_frame");
        assert_eq!(code(r#"{"type":"seen","offset":3}"#), "invalid_frame");
    }

    #[test]
    fn a_room_closing_its_subscriber_becomes_unsubscribed_with_the_code() {
        let closed =
            json!({"type": "error", "code": "closed", "message": "4500: too many refused frames"});
        assert_eq!(
            room_frame("lobby", &closed).unwrap(),
            json!({"type": "unsubscribed", "room": "lobby", "code": 4500,
                "reason": "too many refused frames"})
        );
        let plain = json!({"type": "error", "code": "closed", "message": "bye"});
        assert_eq!(room_frame("r", &plain).unwrap()["code"], 4000);
        let other = json!({"type": "error", "code": "forbidden", "message": "no"});
        assert_eq!(room_frame("r", &other).unwrap()["type"], "error");
    }

    #[test]
    fn negotiation_knows_only_v2_names() {
        assert_eq!(
            negotiate(Some("roomkeeper.v2.msgpack"), None).unwrap(),
            (Encoding::Msgpack, Some(SUBPROTOCOL_V2_MSGPACK))
        );
        assert_eq!(negotiate(None, None).unwrap(), (Encoding::Json, None));
        assert!(negotiate(Some("roomkeeper.v1.json"), None).is_err());
        assert!(negotiate(None, Some("xml")).is_err());
    }

    #[test]
    fn rooms_open_as_the_token_says() {
        let anon = admission(None);
        assert!(anon.admit_room("lobby").is_ok());
        assert_eq!(anon.admit_room("ops").unwrap_err().code, "reserved_room");
        assert_eq!(
            anon.admit_room("no spaces").unwrap_err().code,
            "invalid_room_name"
        );
        let t = admission(Some(vec!["team-*", "lobby"]));
        assert!(t.admit_room("team-red").is_ok());
        assert!(t.admit_room("lobby").is_ok());
        assert_eq!(t.admit_room("lobby2").unwrap_err().code, "room_forbidden");
        let ops = MuxAdmission {
            ops: true,
            ..admission(Some(vec![]))
        };
        let (_, perms) = ops.admit_room("ops").unwrap();
        assert!(perms.subscribe && !perms.publish && !perms.presence);
    }

    #[test]
    fn room_frames_gain_their_room() {
        let welcome = json!({"type": "welcome", "protocol": 1, "room": "a", "conn": "c",
            "epoch": "e", "offset": 4, "replayed": 0, "members": [], "me": {"id": "u"}});
        let s = room_frame("a", &welcome).unwrap();
        assert_eq!(s["type"], "subscribed");
        assert_eq!(s["room"], "a");
        assert_eq!(s["offset"], 4);
        assert!(s.get("protocol").is_none());
        let m = room_frame("a", &json!({"type": "message", "offset": 5, "body": 1})).unwrap();
        assert_eq!(
            (m["room"].as_str(), m["offset"].as_u64()),
            (Some("a"), Some(5))
        );
        assert!(room_frame("a", &json!({"type": "pong"})).is_none());
        let e = error_frame(Some("a"), "forbidden", "no", Some("i1"));
        assert_eq!(
            (e["room"].as_str(), e["id"].as_str()),
            (Some("a"), Some("i1"))
        );
        match encode(Encoding::Msgpack, &m) {
            Encoded::Binary(b) => {
                let back: Value = rmp_serde::from_slice(&b).unwrap();
                assert_eq!(back, m);
            }
            Encoded::Text(_) => panic!("msgpack encodes binary"),
        }
    }
}
