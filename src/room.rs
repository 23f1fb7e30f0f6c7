//! The room state machine.
//!
//! A [`Room`] knows its sessions (one per socket), its epoch and the last offset of its
//! ordered stream. Every input — a socket connecting, a frame arriving, a socket closing —
//! goes through a method that returns [`Effect`]s; the Durable Object glue performs them in
//! order (append to storage, then send), so the core never touches a socket or a clock.
//!
//! The core does not know what a subscriber is: a session is an id with a name and an
//! encoding. Client sockets are one kind; relays or multiplexing gateways can be others.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::protocol::{
    decode, ClientFrame, Encoding, FrameError, MemberInfo, Message, RawFrame, ServerFrame,
    PROTOCOL_VERSION,
};

/// Default largest accepted frame, in bytes.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024;
/// Default largest message body (as compact JSON), in bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024;
/// Default longest display name, in characters.
pub const DEFAULT_MAX_NAME_CHARS: usize = 32;
/// Longest client message id, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 64;

/// Per-room limits; each is a documented setting with the default above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomLimits {
    /// Largest accepted frame, in bytes (checked before parsing).
    pub max_frame_bytes: usize,
    /// Largest message body as compact JSON, in bytes.
    pub max_body_bytes: usize,
    /// Longest display name, in characters.
    pub max_name_chars: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_name_chars: DEFAULT_MAX_NAME_CHARS,
        }
    }
}

/// One connection's state. It is small and serializable because the glue keeps it in the
/// socket's hibernation attachment, so it survives the object being evicted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Connection id, unique within the room.
    pub conn: String,
    /// User id.
    pub user: String,
    /// Display name, set by `join`; `None` until then.
    pub name: Option<String>,
    /// Frame encoding of this connection.
    pub enc: Encoding,
}

impl Session {
    fn member(&self) -> Option<MemberInfo> {
        self.name.as_ref().map(|name| MemberInfo {
            id: self.user.clone(),
            name: name.clone(),
        })
    }
}

/// What the router decided about a connection before handing it to the room object: the
/// room, the encoding and who is connecting. It travels in an internal request header that
/// the router always overwrites, so a client cannot forge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    /// Room key as addressed (name or private id).
    pub room: String,
    /// Negotiated frame encoding.
    pub enc: Encoding,
    /// Subprotocol to echo in the 101 response, if the client offered one.
    pub subprotocol: Option<String>,
    /// User id of the connecting client.
    pub user: String,
}

/// Name of the internal header carrying the JSON [`Admission`].
pub const ADMISSION_HEADER: &str = "X-Roomkeeper-Admission";

/// Something the glue must do, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Durably append a message to the room's stream (before anything that follows).
    Append(Message),
    /// Send a frame to one connection.
    Send {
        /// Target connection.
        conn: String,
        /// The frame.
        frame: ServerFrame,
    },
    /// Send a frame to every joined connection, optionally but one; encoded once per encoding.
    Broadcast {
        /// The frame.
        frame: ServerFrame,
        /// A connection to skip.
        except: Option<String>,
    },
    /// Store the session's new state in its socket attachment.
    Save(Session),
}

/// A room: sessions, epoch and stream position.
#[derive(Debug, Clone)]
pub struct Room {
    key: String,
    epoch: String,
    last_offset: u64,
    sessions: BTreeMap<String, Session>,
    limits: RoomLimits,
}

impl Room {
    /// A room as loaded from storage: its epoch and the last offset it gave out.
    pub fn new(
        key: impl Into<String>,
        epoch: impl Into<String>,
        last_offset: u64,
        limits: RoomLimits,
    ) -> Self {
        Self {
            key: key.into(),
            epoch: epoch.into(),
            last_offset,
            sessions: BTreeMap::new(),
            limits,
        }
    }

    /// The last offset given out (0 for an empty stream).
    pub fn last_offset(&self) -> u64 {
        self.last_offset
    }

    /// The room's epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The session with this connection id.
    pub fn session(&self, conn: &str) -> Option<&Session> {
        self.sessions.get(conn)
    }

    /// Joined members, one entry per connection, in connection-id order.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.sessions.values().filter_map(Session::member).collect()
    }

    /// Adds a session without effects: a new socket (not yet joined) or one restored from its
    /// attachment after the object woke from hibernation.
    pub fn attach(&mut self, session: Session) {
        self.sessions.insert(session.conn.clone(), session);
    }

    /// A socket closed: forget it and tell the others if it had joined.
    pub fn detach(&mut self, conn: &str) -> Vec<Effect> {
        match self.sessions.remove(conn).and_then(|s| s.member()) {
            Some(member) => vec![Effect::Broadcast {
                frame: ServerFrame::Left { member },
                except: None,
            }],
            None => Vec::new(),
        }
    }

    /// A frame arrived on `conn`.
    pub fn receive(&mut self, conn: &str, raw: RawFrame<'_>, now_ms: u64) -> Vec<Effect> {
        let Some(session) = self.sessions.get(conn) else {
            return Vec::new();
        };
        match decode(session.enc, raw, self.limits.max_frame_bytes) {
            Ok(ClientFrame::Join { name }) => self.join(conn, name),
            Ok(ClientFrame::Publish { body, id }) => self.publish(conn, body, id, now_ms),
            Err(e) => vec![refuse(conn, &e, None)],
        }
    }

    fn join(&mut self, conn: &str, name: String) -> Vec<Effect> {
        let session = self
            .sessions
            .get_mut(conn)
            .expect("caller checked the session");
        if session.name.is_some() {
            return vec![error(
                conn,
                "already_joined",
                "this connection has already joined",
                None,
            )];
        }
        let name = name.trim();
        let chars = name.chars().count();
        if chars == 0 || chars > self.limits.max_name_chars || name.chars().any(char::is_control) {
            return vec![error(
                conn,
                "invalid_name",
                format!(
                    "display names are 1-{} characters without control characters",
                    self.limits.max_name_chars
                ),
                None,
            )];
        }
        session.name = Some(name.to_string());
        let saved = session.clone();
        let me = saved.member().expect("just named");
        vec![
            Effect::Save(saved),
            Effect::Send {
                conn: conn.to_string(),
                frame: ServerFrame::Welcome {
                    protocol: PROTOCOL_VERSION,
                    room: self.key.clone(),
                    conn: conn.to_string(),
                    me: me.clone(),
                    members: self.members(),
                    epoch: self.epoch.clone(),
                    offset: self.last_offset,
                },
            },
            Effect::Broadcast {
                frame: ServerFrame::Joined { member: me },
                except: Some(conn.to_string()),
            },
        ]
    }

    fn publish(
        &mut self,
        conn: &str,
        body: serde_json::Value,
        id: Option<String>,
        now_ms: u64,
    ) -> Vec<Effect> {
        let Some(from) = self.sessions.get(conn).and_then(Session::member) else {
            return vec![error(conn, "not_joined", "send join before publish", id)];
        };
        if let Some(cid) = &id {
            if cid.is_empty() || cid.len() > MAX_CLIENT_ID_LEN {
                return vec![error(
                    conn,
                    "invalid_id",
                    format!("message ids are 1-{MAX_CLIENT_ID_LEN} bytes"),
                    None,
                )];
            }
        }
        let size = serde_json::to_string(&body)
            .map(|s| s.len())
            .unwrap_or(usize::MAX);
        if size > self.limits.max_body_bytes {
            return vec![error(
                conn,
                "too_large",
                format!(
                    "message body of {size} bytes exceeds the limit of {} bytes",
                    self.limits.max_body_bytes
                ),
                id,
            )];
        }
        self.last_offset += 1;
        let message = Message {
            offset: self.last_offset,
            from,
            body,
            ts: now_ms,
        };
        let mut effects = vec![
            Effect::Append(message.clone()),
            Effect::Broadcast {
                frame: ServerFrame::Message(message),
                except: None,
            },
        ];
        if let Some(id) = id {
            effects.push(Effect::Send {
                conn: conn.to_string(),
                frame: ServerFrame::Ack {
                    id,
                    offset: self.last_offset,
                },
            });
        }
        effects
    }

    /// Connection ids of joined sessions, grouped by encoding, for one-encode-per-group sends.
    pub fn audience(&self, except: Option<&str>) -> [(Encoding, Vec<&str>); 2] {
        let mut json = Vec::new();
        let mut msgpack = Vec::new();
        for s in self.sessions.values() {
            if s.name.is_none() || Some(s.conn.as_str()) == except {
                continue;
            }
            match s.enc {
                Encoding::Json => json.push(s.conn.as_str()),
                Encoding::Msgpack => msgpack.push(s.conn.as_str()),
            }
        }
        [(Encoding::Json, json), (Encoding::Msgpack, msgpack)]
    }
}

fn error(conn: &str, code: &str, message: impl Into<String>, id: Option<String>) -> Effect {
    Effect::Send {
        conn: conn.to_string(),
        frame: ServerFrame::error(code, message, id),
    }
}

fn refuse(conn: &str, e: &FrameError, id: Option<String>) -> Effect {
    error(conn, e.code(), e.to_string(), id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn room() -> Room {
        let mut r = Room::new("lobby", "e1", 0, RoomLimits::default());
        for (c, u) in [("c1", "u1"), ("c2", "u2")] {
            r.attach(Session {
                conn: c.into(),
                user: u.into(),
                name: None,
                enc: Encoding::Json,
            });
        }
        r
    }

    fn text(r: &mut Room, conn: &str, s: &str) -> Vec<Effect> {
        r.receive(conn, RawFrame::Text(s), 1000)
    }

    fn codes(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send {
                    frame: ServerFrame::Error { code, .. },
                    ..
                } => Some(code.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn join_welcomes_and_announces() {
        let mut r = room();
        text(&mut r, "c1", r#"{"type":"join","name":"ann"}"#);
        let fx = text(&mut r, "c2", r#"{"type":"join","name":" bob "}"#);
        assert!(matches!(&fx[0], Effect::Save(s) if s.name.as_deref() == Some("bob")));
        match &fx[1] {
            Effect::Send {
                conn,
                frame:
                    ServerFrame::Welcome {
                        members,
                        offset,
                        epoch,
                        ..
                    },
            } => {
                assert_eq!(conn, "c2");
                assert_eq!(members.len(), 2);
                assert_eq!((*offset, epoch.as_str()), (0, "e1"));
            }
            other => panic!("expected welcome, got {other:?}"),
        }
        assert!(
            matches!(&fx[2], Effect::Broadcast { frame: ServerFrame::Joined { .. }, except: Some(c) } if c == "c2")
        );
    }

    #[test]
    fn publish_appends_then_broadcasts_then_acks() {
        let mut r = room();
        text(&mut r, "c1", r#"{"type":"join","name":"ann"}"#);
        let fx = text(
            &mut r,
            "c1",
            r#"{"type":"publish","body":{"text":"hi"},"id":"m1"}"#,
        );
        assert_eq!(fx.len(), 3);
        assert!(
            matches!(&fx[0], Effect::Append(m) if m.offset == 1 && m.body == json!({"text":"hi"}) && m.ts == 1000)
        );
        assert!(
            matches!(&fx[1], Effect::Broadcast { frame: ServerFrame::Message(m), except: None } if m.from.name == "ann")
        );
        assert!(matches!(
            &fx[2],
            Effect::Send {
                frame: ServerFrame::Ack { offset: 1, .. },
                ..
            }
        ));
        let fx = text(&mut r, "c1", r#"{"type":"publish","body":"again"}"#);
        assert_eq!(fx.len(), 2, "no ack without an id");
        assert_eq!(r.last_offset(), 2);
    }

    #[test]
    fn refusals_leave_state_untouched() {
        let mut r = room();
        assert_eq!(
            codes(&text(&mut r, "c1", r#"{"type":"publish","body":1}"#)),
            ["not_joined"]
        );
        assert_eq!(
            codes(&text(&mut r, "c1", r#"{"type":"join","name":""}"#)),
            ["invalid_name"]
        );
        let long = format!(r#"{{"type":"join","name":"{}"}}"#, "x".repeat(33));
        assert_eq!(codes(&text(&mut r, "c1", &long)), ["invalid_name"]);
        text(&mut r, "c1", r#"{"type":"join","name":"ann"}"#);
        assert_eq!(
            codes(&text(&mut r, "c1", r#"{"type":"join","name":"ann"}"#)),
            ["already_joined"]
        );
        let big = format!(r#"{{"type":"publish","body":"{}"}}"#, "x".repeat(9000));
        assert_eq!(codes(&text(&mut r, "c1", &big)), ["too_large"]);
        assert_eq!(codes(&text(&mut r, "c1", "garbage")), ["malformed"]);
        assert_eq!(r.last_offset(), 0, "nothing refused took an offset");
    }

    #[test]
    fn detach_announces_only_joined() {
        let mut r = room();
        text(&mut r, "c1", r#"{"type":"join","name":"ann"}"#);
        assert!(r.detach("c2").is_empty());
        assert!(
            matches!(&r.detach("c1")[0], Effect::Broadcast { frame: ServerFrame::Left { member }, .. } if member.name == "ann")
        );
        assert!(r.members().is_empty());
    }

    #[test]
    fn audience_groups_by_encoding_and_skips_unjoined() {
        let mut r = room();
        r.attach(Session {
            conn: "c3".into(),
            user: "u3".into(),
            name: Some("cat".into()),
            enc: Encoding::Msgpack,
        });
        text(&mut r, "c1", r#"{"type":"join","name":"ann"}"#);
        let [(_, json), (_, mp)] = r.audience(None);
        assert_eq!(json, ["c1"]);
        assert_eq!(mp, ["c3"]);
        let [(_, json), _] = r.audience(Some("c1"));
        assert!(json.is_empty());
    }
}
