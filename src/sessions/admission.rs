//! Who connected to which voice or chat session: decided by the router, carried to the
//! session's object in [`SESSION_HEADER`], and kept as the socket's attachment.

use serde::{Deserialize, Serialize};

use super::voice::AudioFormat;
use crate::http::client::address_key;

/// Internal header carrying a [`SessionAdmission`] from the router to the object.
pub const SESSION_HEADER: &str = "X-Roomkeeper-Session";

/// Who connected to which session, decided by the router.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionAdmission {
    /// User id: the token's subject, or `anon-…`.
    pub user: String,
    /// Whether the user is anonymous.
    pub anonymous: bool,
    /// The session id from the path.
    pub session: String,
    /// Connection id, given by the object when it accepts the socket.
    #[serde(default)]
    pub conn: String,
    /// Voice only: the format of the audio stream in progress, so an object evicted while the
    /// socket idled mid-stream resumes the stream instead of refusing audio as `not_started`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AudioFormat>,
}

impl SessionAdmission {
    /// The name of the session's object: `<user>:<session>`, so two users with the same
    /// session id never share a conversation.
    pub fn object_name(&self) -> String {
        format!("{}:{}", self.user, self.session)
    }
}

/// The quota object's name for a connecting user: the token's subject, or the client's address key (IPv6 by its /64)
/// for an anonymous connection (whose user id is new on every connection).
pub fn quota_name(user: &str, anonymous: bool, client_address: Option<&str>) -> String {
    if anonymous {
        format!("ip:{}", address_key(client_address))
    } else {
        format!("user:{user}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_quotas_are_per_address_and_ipv6_per_64() {
        assert_eq!(quota_name("ann", false, Some("10.0.0.1")), "user:ann");
        assert_eq!(quota_name("anon-1", true, Some("10.0.0.1")), "ip:10.0.0.1");
        assert_eq!(
            quota_name("anon-1", true, Some("2001:db8::1")),
            quota_name("anon-2", true, Some("2001:db8::ffff")),
        );
        assert_eq!(quota_name("anon-1", true, None), "ip:unknown");
    }
}
