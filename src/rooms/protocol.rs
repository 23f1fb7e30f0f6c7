//! The WebSocket wire format, protocol v1 (documented in `docs/PROTOCOL.md`).
//!
//! One set of frame types serves both encodings: JSON text frames (the default) and
//! MessagePack binary frames (negotiated with the `roomkeeper.v1.msgpack` subprotocol or
//! `?encoding=msgpack`). Decoding is two-step — bytes to a generic value, then to a typed
//! frame — so the client learns *which* thing was wrong: unparseable bytes (`malformed`), an
//! unknown `type` (`unknown_type`) or a field of the wrong shape (`invalid_frame`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Version announced in the welcome frame.
pub const PROTOCOL_VERSION: u32 = 1;
/// Subprotocol selecting JSON text frames.
pub const SUBPROTOCOL_JSON: &str = "roomkeeper.v1.json";
/// Subprotocol selecting MessagePack binary frames.
pub const SUBPROTOCOL_MSGPACK: &str = "roomkeeper.v1.msgpack";

/// How frames on one socket are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// JSON in text frames.
    Json,
    /// MessagePack (maps with field names) in binary frames.
    Msgpack,
}

impl Encoding {
    /// Short name used in socket tags and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Msgpack => "msgpack",
        }
    }

    /// Picks the encoding from the `Sec-WebSocket-Protocol` offer and the `encoding` query
    /// parameter. Returns the encoding and the subprotocol to echo in the 101 response (a
    /// browser fails the connection unless one it offered is echoed).
    pub fn negotiate(
        offered: Option<&str>,
        query: Option<&str>,
    ) -> Result<(Self, Option<&'static str>), NegotiationError> {
        if let Some(offered) = offered.filter(|o| !o.trim().is_empty()) {
            for p in offered.split(',').map(str::trim) {
                match p {
                    SUBPROTOCOL_MSGPACK => return Ok((Self::Msgpack, Some(SUBPROTOCOL_MSGPACK))),
                    SUBPROTOCOL_JSON => return Ok((Self::Json, Some(SUBPROTOCOL_JSON))),
                    _ => {}
                }
            }
            return Err(NegotiationError::UnsupportedSubprotocol);
        }
        match query {
            None | Some("json") => Ok((Self::Json, None)),
            Some("msgpack") => Ok((Self::Msgpack, None)),
            Some(_) => Err(NegotiationError::UnsupportedEncoding),
        }
    }
}

/// Why an upgrade request's encoding could not be agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// `Sec-WebSocket-Protocol` offered nothing this server speaks.
    #[error("no supported subprotocol offered; use roomkeeper.v1.json or roomkeeper.v1.msgpack")]
    UnsupportedSubprotocol,
    /// `?encoding=` named something other than `json` or `msgpack`.
    #[error("encoding must be json or msgpack")]
    UnsupportedEncoding,
}

/// A frame as it arrives from the socket.
#[derive(Debug, Clone, Copy)]
pub enum RawFrame<'a> {
    /// A text frame.
    Text(&'a str),
    /// A binary frame.
    Binary(&'a [u8]),
}

impl RawFrame<'_> {
    /// Size on the wire, in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::Text(t) => t.len(),
            Self::Binary(b) => b.len(),
        }
    }

    /// Whether the frame is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A frame a client sends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Enter the room; answered by `welcome` (and replayed messages, if asked for).
    Join {
        /// Display name shown to other members (a token's name wins over it).
        #[serde(default)]
        name: Option<String>,
        /// Small member metadata object shown in presence.
        #[serde(default)]
        meta: Option<Value>,
        /// Resume from this stream position: replay exactly what was missed.
        #[serde(default)]
        since: Option<StreamPos>,
        /// Replay up to this many latest messages (fresh joins, or a failed recovery).
        #[serde(default)]
        history: Option<usize>,
    },
    /// Send a message to everyone in the room.
    Publish {
        /// Any JSON value (for the chat demo `{"text":"…"}`), bounded in size.
        body: Value,
        /// Optional client message id, echoed in the ack and used to de-duplicate retries.
        #[serde(default)]
        id: Option<String>,
    },
    /// The client has processed every message through `offset` (sent periodically, never
    /// answered): what bounds how far behind a slow reader may fall (`ROOM_MAX_LAG_MESSAGES`).
    Seen {
        /// The offset of the last message processed.
        offset: u64,
    },
}

/// Frame `type` values a client may send, for telling `unknown_type` from `invalid_frame`.
pub const CLIENT_FRAME_TYPES: &[&str] = &["join", "publish", "seen"];

/// Why an incoming frame was refused (sent back as an `error` frame with this code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame is larger than the configured frame limit.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Frame size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not valid JSON / MessagePack, or not an object.
    #[error("frame is not a valid {0} object")]
    Malformed(&'static str),
    /// A text frame on a MessagePack socket or a binary frame on a JSON socket.
    #[error("{0}")]
    WrongFrameKind(&'static str),
    /// The frame nests arrays and objects deeper than [`MAX_FRAME_DEPTH`] levels.
    #[error("frame nests deeper than {limit} levels (message bodies: {MAX_BODY_DEPTH})")]
    TooDeep {
        /// The limit on the frame's nesting.
        limit: usize,
    },
    /// `type` is missing or not one this protocol knows.
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    /// The type is known but a field is missing or has the wrong type.
    #[error("invalid {kind} frame: {detail}")]
    Invalid {
        /// The frame type.
        kind: String,
        /// What serde said was wrong.
        detail: String,
    },
}

impl FrameError {
    /// The stable error code sent to the client.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } | Self::TooDeep { .. } => "too_large",
            Self::Malformed(_) => "malformed",
            Self::WrongFrameKind(_) => "wrong_frame_kind",
            Self::UnknownType(_) => "unknown_type",
            Self::Invalid { .. } => "invalid_frame",
        }
    }
}

/// Deepest nesting of arrays and objects accepted in a message body or `meta`, the same for
/// both encodings (`docs/PROTOCOL.md`): `1` and `"a"` nest 0 levels, `[1]` and `{"a":1}` one,
/// `[[1]]` two. Far below serde_json's own limit of 128, so whatever is accepted, stored as
/// JSON, reads back.
pub const MAX_BODY_DEPTH: usize = 32;
/// Deepest nesting of a whole frame: the frame object around a body at [`MAX_BODY_DEPTH`].
pub const MAX_FRAME_DEPTH: usize = MAX_BODY_DEPTH + 1;

/// How deeply `value` nests arrays and objects (see [`MAX_BODY_DEPTH`]); counted without
/// recursion, so any value that could be built can be measured.
pub fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        deepest = deepest.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    deepest
}

/// Decodes one client frame, enforcing the frame size limit before parsing anything and the
/// nesting limit ([`MAX_FRAME_DEPTH`]) on what was parsed.
pub fn decode(
    encoding: Encoding,
    raw: RawFrame<'_>,
    max_frame_bytes: usize,
) -> Result<ClientFrame, FrameError> {
    decode_as(encoding, raw, max_frame_bytes, CLIENT_FRAME_TYPES)
}

/// [`decode`] for any frame type: `types` are the `type` values `T` knows (any other is
/// `unknown_type`); the size, kind and nesting rules are the same for every protocol version.
pub fn decode_as<T: serde::de::DeserializeOwned>(
    encoding: Encoding,
    raw: RawFrame<'_>,
    max_frame_bytes: usize,
    types: &[&str],
) -> Result<T, FrameError> {
    if raw.len() > max_frame_bytes {
        return Err(FrameError::TooLarge {
            size: raw.len(),
            limit: max_frame_bytes,
        });
    }
    let value: Value =
        match (encoding, raw) {
            (Encoding::Json, RawFrame::Text(t)) => {
                serde_json::from_str(t).map_err(|e| match e.to_string() {
                    m if m.starts_with("recursion limit exceeded") => too_deep(),
                    _ => FrameError::Malformed("JSON"),
                })?
            }
            (Encoding::Msgpack, RawFrame::Binary(b)) => {
                // Bounded while parsing: rmp-serde would otherwise recurse 1024 levels deep.
                let mut de = rmp_serde::Deserializer::from_read_ref(b);
                de.set_max_depth(MAX_FRAME_DEPTH + 1);
                Value::deserialize(&mut de).map_err(|e| match e {
                    rmp_serde::decode::Error::DepthLimitExceeded => too_deep(),
                    _ => FrameError::Malformed("MessagePack"),
                })?
            }
            (Encoding::Json, RawFrame::Binary(_)) => return Err(FrameError::WrongFrameKind(
                "binary frame on a JSON connection; negotiate roomkeeper.v1.msgpack to send binary",
            )),
            (Encoding::Msgpack, RawFrame::Text(_)) => {
                return Err(FrameError::WrongFrameKind(
                    "text frame on a MessagePack connection; send binary frames",
                ))
            }
        };
    if depth(&value) > MAX_FRAME_DEPTH {
        return Err(too_deep());
    }
    let kind = match value.get("type") {
        _ if !value.is_object() => {
            return Err(FrameError::Malformed(match encoding {
                Encoding::Json => "JSON",
                Encoding::Msgpack => "MessagePack",
            }))
        }
        Some(Value::String(t)) if types.contains(&t.as_str()) => t.clone(),
        Some(Value::String(t)) => return Err(FrameError::UnknownType(t.clone())),
        _ => return Err(FrameError::UnknownType(String::new())),
    };
    serde_json::from_value(value).map_err(|e| FrameError::Invalid {
        kind,
        detail: e.to_string(),
    })
}

fn too_deep() -> FrameError {
    FrameError::TooDeep {
        limit: MAX_FRAME_DEPTH,
    }
}

/// A member as other members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Stable user id (anonymous users get a random one per connection).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Member metadata from `join`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
    /// Open connections of this user in the room (presence only; omitted when 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub conns: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A position in a room's stream, for recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPos {
    /// The room's epoch when the client last saw it.
    pub epoch: String,
    /// The last offset the client received.
    pub offset: u64,
}

/// A message as delivered and stored: the room's ordered stream entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Position in the room's stream; strictly increasing, starting at 1.
    pub offset: u64,
    /// Who sent it.
    pub from: MemberInfo,
    /// The payload, as published.
    pub body: Value,
    /// Server time of acceptance, milliseconds since the Unix epoch.
    pub ts: u64,
}

/// A frame the server sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Answer to `join`: who you are and who is here.
    Welcome {
        /// Protocol version, [`PROTOCOL_VERSION`].
        protocol: u32,
        /// Room key as addressed.
        room: String,
        /// This connection's id.
        conn: String,
        /// You, as others see you.
        me: MemberInfo,
        /// Members present, you included.
        members: Vec<MemberInfo>,
        /// The room's epoch: changes when the room's stream is reset.
        epoch: String,
        /// The last offset in the room's stream (0 when empty).
        offset: u64,
        /// With `since`: true when exactly the missed messages follow, false when the gap
        /// could not be filled (other epoch, or trimmed) and the latest history follows.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// How many `message` frames follow this welcome as replay.
        replayed: usize,
    },
    /// A message in the room's stream.
    Message(Message),
    /// Answer to a `publish` that carried an id.
    Ack {
        /// The client's message id.
        id: String,
        /// The offset the message was given.
        offset: u64,
        /// True when this id was already published: nothing new was appended.
        #[serde(default, skip_serializing_if = "is_false")]
        duplicate: bool,
    },
    /// Someone joined.
    Joined {
        /// The member.
        member: MemberInfo,
    },
    /// A member's connection count changed (another tab joined or left).
    Presence {
        /// The member, with its new connection count.
        member: MemberInfo,
    },
    /// Someone left (their last connection closed).
    Left {
        /// The member.
        member: MemberInfo,
    },
    /// A refused frame or a problem with the connection.
    Error {
        /// Stable code (see `docs/PROTOCOL.md`).
        code: String,
        /// Human-readable explanation.
        message: String,
        /// The client message id the error answers, when it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
}

/// An encoded frame, ready to send on every socket of one encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

impl ServerFrame {
    /// Encodes the frame once for one encoding.
    pub fn encode(&self, encoding: Encoding) -> Encoded {
        match encoding {
            Encoding::Json => Encoded::Text(
                serde_json::to_string(self).expect("server frames always serialize to JSON"),
            ),
            Encoding::Msgpack => Encoded::Binary(
                rmp_serde::to_vec_named(self)
                    .expect("server frames always serialize to MessagePack"),
            ),
        }
    }

    /// An error frame.
    pub fn error(code: &str, message: impl Into<String>, id: Option<String>) -> Self {
        Self::Error {
            code: code.to_string(),
            message: message.into(),
            id,
        }
    }
}

/// Joins already encoded `message` frames into one `batch` frame of the same encoding,
/// `{"type":"batch","messages":[…]}`, without encoding the messages again. Rooms with a batch
/// window (`ROOM_BATCH_WINDOW_MS`) coalesce the messages a socket would get within the window
/// into one such frame, because each socket send costs about the same whatever it carries.
pub fn encode_batch(encoding: Encoding, frames: &[Encoded]) -> Encoded {
    match encoding {
        Encoding::Json => {
            let len = frames.iter().map(|f| f.len() + 1).sum::<usize>() + 32;
            let mut out = String::with_capacity(len);
            out.push_str(r#"{"type":"batch","messages":["#);
            for (i, f) in frames.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if let Encoded::Text(t) = f {
                    out.push_str(t);
                }
            }
            out.push_str("]}");
            Encoded::Text(out)
        }
        Encoding::Msgpack => {
            // fixmap(2) {"type": "batch", "messages": array(n)} followed by the n encoded maps.
            let mut out = Vec::with_capacity(frames.iter().map(Encoded::len).sum::<usize>() + 32);
            out.extend_from_slice(b"\x82\xa4type\xa5batch\xa8messages");
            let n = frames.len();
            if n < 16 {
                out.push(0x90 | n as u8);
            } else if n <= u16::MAX as usize {
                out.push(0xdc);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            } else {
                out.push(0xdd);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
            for f in frames {
                if let Encoded::Binary(b) = f {
                    out.extend_from_slice(b);
                }
            }
            Encoded::Binary(out)
        }
    }
}

impl Encoded {
    /// Size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::Text(t) => t.len(),
            Self::Binary(b) => b.len(),
        }
    }

    /// Whether it is empty (never, for an encoded frame).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// WebSocket close codes (see `docs/PROTOCOL.md`). 4000–4499 mean "reconnect with backoff";
/// 4500–4999 mean "do not reconnect without changing something".
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (deploy, restart); reconnect.
    pub const GOING_AWAY: u16 = 1001;
    /// The room was closed by an operator; reconnect later.
    pub const ROOM_CLOSED: u16 = 4000;
    /// The token expired mid-session; refresh it and reconnect.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The connection fell more than `ROOM_MAX_LAG_MESSAGES` behind the head by its own `seen`
    /// reports; reconnect with `since` and recover.
    pub const TOO_SLOW: u16 = 4008;
    /// Too many protocol errors on this connection; do not reconnect as is.
    pub const POLICY_VIOLATION: u16 = 4500;
    /// A voice session's audio allowance is spent and audio kept coming; do not reconnect to
    /// stream until the allowance renews.
    pub const QUOTA_EXHAUSTED: u16 = 4529;
    /// Not authorised for this room; do not reconnect with the same credentials.
    pub const FORBIDDEN: u16 = 4503;
    /// The room is full; do not retry immediately.
    pub const ROOM_FULL: u16 = 4509;

    /// Whether a client should reconnect after this close code.
    pub fn should_reconnect(code: u16) -> bool {
        !(4500..5000).contains(&code)
    }

    /// The code to complete a closing handshake with after the peer closed with `code`:
    /// 1005 (no code given) and 1006 (no close frame) describe a close but may not be sent in
    /// one, so they are answered with 1000; any other code is echoed.
    pub fn reply_code(code: u16) -> u16 {
        if code == 1005 || code == 1006 {
            NORMAL
        } else {
            code
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn reserved_codes_are_never_sent_back() {
            assert_eq!(super::reply_code(1005), 1000);
            assert_eq!(super::reply_code(1006), 1000);
            assert_eq!(super::reply_code(1001), 1001);
            assert_eq!(super::reply_code(4000), 4000);
        }
    }
}

/// The heartbeat a client sends (every socket of the service, rooms and sessions alike),
/// answered by the runtime without waking the object (an auto-response matches the frame
/// byte for byte).
pub const HEARTBEAT_PING: &str = r#"{"type":"ping"}"#;
/// The heartbeat's answer.
pub const HEARTBEAT_PONG: &str = r#"{"type":"pong"}"#;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn j(s: &str) -> Result<ClientFrame, FrameError> {
        decode(Encoding::Json, RawFrame::Text(s), 1024)
    }

    #[test]
    fn decodes_join_and_publish() {
        assert_eq!(
            j(r#"{"type":"join","name":"ann"}"#),
            Ok(ClientFrame::Join {
                name: Some("ann".into()),
                meta: None,
                since: None,
                history: None
            })
        );
        assert_eq!(
            j(r#"{"type":"publish","body":{"text":"hi"},"id":"c1"}"#),
            Ok(ClientFrame::Publish {
                body: json!({"text":"hi"}),
                id: Some("c1".into())
            })
        );
    }

    #[test]
    fn error_kinds_are_distinguished() {
        assert_eq!(j("{nope").unwrap_err().code(), "malformed");
        assert_eq!(j("[1,2]").unwrap_err().code(), "malformed");
        assert_eq!(j(r#"{"type":"dance"}"#).unwrap_err().code(), "unknown_type");
        assert_eq!(j(r#"{"name":"x"}"#).unwrap_err().code(), "unknown_type");
        assert_eq!(
            j(r#"{"type":"join","name":5}"#).unwrap_err().code(),
            "invalid_frame"
        );
        assert_eq!(
            j(r#"{"type":"publish"}"#).unwrap_err().code(),
            "invalid_frame"
        );
        assert_eq!(
            j(r#"{"type":"join","since":{"epoch":"e"}}"#)
                .unwrap_err()
                .code(),
            "invalid_frame"
        );
        assert_eq!(
            j(r#"{"type":"join","name":"a","extra":1}"#)
                .unwrap_err()
                .code(),
            "invalid_frame"
        );
        let big = format!(r#"{{"type":"join","name":"{}"}}"#, "a".repeat(2000));
        assert_eq!(j(&big).unwrap_err().code(), "too_large");
    }

    #[test]
    fn frame_kind_must_match_encoding() {
        let e = decode(Encoding::Json, RawFrame::Binary(b"\x80"), 1024).unwrap_err();
        assert_eq!(e.code(), "wrong_frame_kind");
        let e = decode(Encoding::Msgpack, RawFrame::Text("{}"), 1024).unwrap_err();
        assert_eq!(e.code(), "wrong_frame_kind");
    }

    /// `levels` arrays nested around a number.
    fn nested(levels: usize) -> Value {
        (0..levels).fold(json!(1), |v, _| json!([v]))
    }

    fn publish_of(body: Value) -> Value {
        json!({"type": "publish", "body": body})
    }

    #[test]
    fn depth_counts_arrays_and_objects() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!("a")), 0);
        assert_eq!(depth(&json!([])), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": {}}]})), 4);
        assert_eq!(depth(&nested(MAX_BODY_DEPTH)), MAX_BODY_DEPTH);
        assert_eq!(depth(&publish_of(nested(5))), 6);
    }

    #[test]
    fn json_bodies_nest_up_to_the_limit() {
        let at = publish_of(nested(MAX_BODY_DEPTH)).to_string();
        let f = decode(Encoding::Json, RawFrame::Text(&at), 1 << 20).unwrap();
        assert!(matches!(f, ClientFrame::Publish { body, .. } if body == nested(MAX_BODY_DEPTH)));
        // One past the limit, and far past serde_json's own limit (128): the same refusal.
        for levels in [MAX_BODY_DEPTH + 1, 200] {
            let past = publish_of(nested(levels)).to_string();
            let e = decode(Encoding::Json, RawFrame::Text(&past), 1 << 20).unwrap_err();
            assert_eq!(
                e,
                FrameError::TooDeep {
                    limit: MAX_FRAME_DEPTH
                },
                "{levels}"
            );
            assert_eq!(e.code(), "too_large");
        }
        // A deep `meta` is bounded the same way.
        let meta = json!({"type": "join", "name": "a", "meta": {"m": nested(MAX_BODY_DEPTH)}});
        let e = decode(Encoding::Json, RawFrame::Text(&meta.to_string()), 1 << 20);
        assert_eq!(e.unwrap_err().code(), "too_large");
    }

    #[test]
    fn msgpack_bodies_nest_up_to_the_limit() {
        let enc = |v: &Value| rmp_serde::to_vec_named(v).unwrap();
        let at = enc(&publish_of(nested(MAX_BODY_DEPTH)));
        let f = decode(Encoding::Msgpack, RawFrame::Binary(&at), 1 << 20).unwrap();
        assert!(matches!(f, ClientFrame::Publish { body, .. } if body == nested(MAX_BODY_DEPTH)));
        // 200 levels were accepted once (rmp-serde allows 1024), then broke history reads.
        for levels in [MAX_BODY_DEPTH + 1, 200, 500] {
            let past = enc(&publish_of(nested(levels)));
            let e = decode(Encoding::Msgpack, RawFrame::Binary(&past), 1 << 20).unwrap_err();
            assert_eq!(
                e,
                FrameError::TooDeep {
                    limit: MAX_FRAME_DEPTH
                },
                "{levels}"
            );
        }
    }

    #[test]
    fn msgpack_round_trip() {
        #[derive(Serialize)]
        struct Publish<'a> {
            r#type: &'a str,
            body: Value,
            id: &'a str,
        }
        let bytes = rmp_serde::to_vec_named(&Publish {
            r#type: "publish",
            body: json!({"text":"hé","n":[1,2,3]}),
            id: "m1",
        })
        .unwrap();
        let f = decode(Encoding::Msgpack, RawFrame::Binary(&bytes), 1024).unwrap();
        assert_eq!(
            f,
            ClientFrame::Publish {
                body: json!({"text":"hé","n":[1,2,3]}),
                id: Some("m1".into())
            }
        );
        let out = ServerFrame::Ack {
            id: "m1".into(),
            offset: 7,
            duplicate: false,
        }
        .encode(Encoding::Msgpack);
        let Encoded::Binary(b) = out else {
            panic!("msgpack encodes binary")
        };
        let v: Value = rmp_serde::from_slice(&b).unwrap();
        assert_eq!(v, json!({"type":"ack","id":"m1","offset":7}));
        assert_eq!(
            decode(Encoding::Msgpack, RawFrame::Binary(b"\xc1"), 1024)
                .unwrap_err()
                .code(),
            "malformed"
        );
    }

    #[test]
    fn message_frame_is_flat() {
        let f = ServerFrame::Message(Message {
            offset: 3,
            from: MemberInfo {
                id: "u1".into(),
                name: "ann".into(),
                meta: None,
                conns: 0,
            },
            body: json!({"text":"hi"}),
            ts: 1700,
        });
        let Encoded::Text(t) = f.encode(Encoding::Json) else {
            panic!()
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(
            v,
            json!({"type":"message","offset":3,"from":{"id":"u1","name":"ann"},"body":{"text":"hi"},"ts":1700})
        );
    }

    #[test]
    fn batch_frames_hold_the_message_frames_unchanged() {
        let m = |offset| {
            ServerFrame::Message(Message {
                offset,
                from: MemberInfo {
                    id: "u1".into(),
                    name: "ann".into(),
                    meta: None,
                    conns: 0,
                },
                body: json!({"text": "hé", "n": offset}),
                ts: 1700,
            })
        };
        for n in [1u64, 2, 15, 16, 17, 300] {
            let frames: Vec<ServerFrame> = (1..=n).map(m).collect();
            let want = json!({
                "type": "batch",
                "messages": frames.iter().map(|f| serde_json::to_value(f).unwrap()).collect::<Vec<_>>(),
            });
            let json_frames: Vec<Encoded> =
                frames.iter().map(|f| f.encode(Encoding::Json)).collect();
            let Encoded::Text(t) = encode_batch(Encoding::Json, &json_frames) else {
                panic!("JSON batches are text")
            };
            assert_eq!(serde_json::from_str::<Value>(&t).unwrap(), want);
            let mp: Vec<Encoded> = frames.iter().map(|f| f.encode(Encoding::Msgpack)).collect();
            let Encoded::Binary(b) = encode_batch(Encoding::Msgpack, &mp) else {
                panic!("MessagePack batches are binary")
            };
            assert_eq!(
                rmp_serde::from_slice::<Value>(&b).unwrap(),
                want,
                "{n} messages"
            );
        }
    }

    #[test]
    fn negotiation() {
        assert_eq!(Encoding::negotiate(None, None), Ok((Encoding::Json, None)));
        assert_eq!(
            Encoding::negotiate(None, Some("msgpack")),
            Ok((Encoding::Msgpack, None))
        );
        assert_eq!(
            Encoding::negotiate(Some("foo, roomkeeper.v1.msgpack"), None),
            Ok((Encoding::Msgpack, Some(SUBPROTOCOL_MSGPACK)))
        );
        assert_eq!(
            Encoding::negotiate(Some("foo"), None),
            Err(NegotiationError::UnsupportedSubprotocol)
        );
        assert_eq!(
            Encoding::negotiate(None, Some("xml")),
            Err(NegotiationError::UnsupportedEncoding)
        );
    }

    #[test]
    fn close_code_classes() {
        assert!(close::should_reconnect(close::GOING_AWAY));
        assert!(close::should_reconnect(close::TOKEN_EXPIRED));
        assert!(!close::should_reconnect(close::POLICY_VIOLATION));
        assert!(!close::should_reconnect(close::FORBIDDEN));
    }
}
