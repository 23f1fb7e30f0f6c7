//! One connection to a room: its [`Session`] (kept in the socket's attachment), its
//! [`Perms`], and the router's [`Admission`] that opens it.

use serde::{Deserialize, Serialize};

use super::protocol::{Encoding, MemberInfo};

/// What a session may do, from its token (anonymous sessions may do everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Perms {
    /// May publish messages.
    pub publish: bool,
    /// Receives messages (and history).
    pub subscribe: bool,
    /// Sees the member list and join/leave events, and is seen in them (without it a connection
    /// is invisible to the others).
    pub presence: bool,
}

impl Perms {
    /// Every permission.
    pub const ALL: Self = Self {
        publish: true,
        subscribe: true,
        presence: true,
    };
}

/// One connection's state. It is small and serializable because the glue keeps it in the
/// socket's hibernation attachment (at most 2 KiB), so it survives the object being evicted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Connection id, unique within the room.
    pub conn: String,
    /// User id (a token's `sub`, or a random `anon-…` id).
    pub user: String,
    /// Whether the user is anonymous (no token).
    pub anonymous: bool,
    /// Display name from the token, if it carried one (it wins over the `join` name).
    pub token_name: Option<String>,
    /// Display name, set by `join`; `None` until then.
    pub name: Option<String>,
    /// Member metadata (compact JSON), set by `join`.
    pub meta: Option<String>,
    /// Frame encoding of this connection.
    pub enc: Encoding,
    /// Permissions.
    pub perms: Perms,
    /// When the token expires (ms since the Unix epoch), if there is one.
    pub expires_ms: Option<u64>,
    /// The gateway shard that holds this subscriber's socket, for a subscriber that is not a
    /// socket of the room's own object (a Pusher channel's subscribers): frames for it go to
    /// that object, one delivery per shard, not to a socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

impl Session {
    /// A fresh, not yet joined session.
    pub fn new(conn: impl Into<String>, user: impl Into<String>, enc: Encoding) -> Self {
        Self {
            conn: conn.into(),
            user: user.into(),
            anonymous: true,
            token_name: None,
            name: None,
            meta: None,
            enc,
            perms: Perms::ALL,
            expires_ms: None,
            via: None,
        }
    }

    pub(crate) fn joined(&self) -> bool {
        self.name.is_some()
    }

    pub(crate) fn member(&self, conns: u32) -> Option<MemberInfo> {
        self.name.as_ref().map(|name| MemberInfo {
            id: self.user.clone(),
            name: name.clone(),
            meta: self
                .meta
                .as_deref()
                .and_then(|m| serde_json::from_str(m).ok()),
            conns,
        })
    }

    /// The de-duplication key of a publish id: per user for a token's subject; per connection
    /// for an anonymous one (its user id is new on every connection), so no anonymous client
    /// can make another's publish come back as a duplicate by reusing its id.
    pub(crate) fn dedupe_key(&self, id: &str) -> String {
        if self.anonymous {
            format!("anon:{}/{id}", self.conn)
        } else {
            format!("user:{}/{id}", self.user)
        }
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
    /// Whether the client is anonymous.
    pub anonymous: bool,
    /// Display name from the token.
    pub name: Option<String>,
    /// Permissions from the token.
    pub perms: Perms,
    /// Token expiry, ms since the Unix epoch.
    pub expires_ms: Option<u64>,
}

impl Admission {
    /// The session this admission opens.
    pub fn session(&self, conn: impl Into<String>) -> Session {
        Session {
            conn: conn.into(),
            user: self.user.clone(),
            anonymous: self.anonymous,
            token_name: self.name.clone(),
            name: None,
            meta: None,
            enc: self.enc,
            perms: self.perms,
            expires_ms: self.expires_ms,
            via: None,
        }
    }
}

/// Name of the internal header carrying the JSON [`Admission`].
pub const ADMISSION_HEADER: &str = "X-Roomkeeper-Admission";
