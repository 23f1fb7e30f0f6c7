//! Channel and event names: which names are valid, and what a channel's name says about it.
//!
//! A channel's kind is its name's prefix, as in Pusher: `private-` channels need a signed
//! authorization, `presence-` channels need one carrying the member's `channel_data`,
//! `private-encrypted-` channels carry end-to-end encrypted payloads the server cannot read,
//! and a `cache-` infix (`cache-`, `private-cache-`, `presence-cache-`,
//! `private-encrypted-cache-`) keeps the last event for new subscribers.
//! `#server-to-user-{user_id}` is the channel `pusher-js` subscribes to after a successful
//! `pusher:signin`; only a connection signed in as that user may join it.
//!
//! Names use Pusher's charset `[A-Za-z0-9_\-=@,.;]` (the server SDKs refuse anything else),
//! the `#server-to-user-` prefix being the one exception, and are at most
//! [`Limits::max_channel_name_chars`] characters. Event names are free-form printable text
//! (Laravel sends `App\Events\OrderShipped`), at most [`Limits::max_event_name_chars`].

use super::Limits;

/// The prefix of the channel a signed-in user receives `sendToUser` events on.
pub const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";

/// The prefix client event names must carry.
pub const CLIENT_EVENT_PREFIX: &str = "client-";

/// What a channel name says about the channel, apart from the cache flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// Anyone may subscribe; no authorization.
    Public,
    /// `private-…`: subscription needs `auth` signed over `socket_id:channel`.
    Private,
    /// `presence-…`: like private, and the signature also covers `channel_data`.
    Presence,
    /// `private-encrypted-…`: like private; payloads are opaque to the server and client
    /// events are refused.
    PrivateEncrypted,
    /// `#server-to-user-{id}`: only the connection signed in as `id` may subscribe.
    ServerToUser,
}

/// A validated channel name's classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelType {
    /// The kind, from the prefix.
    pub kind: ChannelKind,
    /// Whether the name has a cache prefix (`cache-`, `private-cache-`, …): the last event
    /// is kept and replayed to new subscribers, and a subscription to an empty cache channel
    /// gets `pusher:cache_miss`.
    pub cache: bool,
}

impl ChannelType {
    /// Whether `pusher:subscribe` must carry a valid `auth` signature.
    pub fn needs_auth(self) -> bool {
        matches!(
            self.kind,
            ChannelKind::Private | ChannelKind::Presence | ChannelKind::PrivateEncrypted
        )
    }

    /// Whether subscribers may send `client-` events: private and presence channels only
    /// (their cache variants included), never encrypted ones, whose payloads the server could
    /// not have authored, nor public or server-to-user ones.
    pub fn allows_client_events(self) -> bool {
        matches!(self.kind, ChannelKind::Private | ChannelKind::Presence)
    }

    /// Whether this is a presence channel (members, `channel_data`).
    pub fn is_presence(self) -> bool {
        self.kind == ChannelKind::Presence
    }

    /// Whether this is a cache channel.
    pub fn is_cache(self) -> bool {
        self.cache
    }
}

/// Prefixes in matching order (longest first where one extends another).
const PREFIXES: &[(&str, ChannelKind, bool)] = &[
    (
        "private-encrypted-cache-",
        ChannelKind::PrivateEncrypted,
        true,
    ),
    ("private-encrypted-", ChannelKind::PrivateEncrypted, false),
    ("private-cache-", ChannelKind::Private, true),
    ("private-", ChannelKind::Private, false),
    ("presence-cache-", ChannelKind::Presence, true),
    ("presence-", ChannelKind::Presence, false),
    ("cache-", ChannelKind::Public, true),
    (SERVER_TO_USER_PREFIX, ChannelKind::ServerToUser, false),
];

/// Why a channel or event name was refused. Messages quote no more than the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty, too long, or a character outside the charset.
    #[error("invalid channel name: 1-{max_chars} characters of A-Z a-z 0-9 _ - = @ , . ;")]
    Channel {
        /// The configured maximum.
        max_chars: usize,
    },
    /// Empty, too long, or a control character.
    #[error("invalid event name: 1-{max_chars} printable characters")]
    Event {
        /// The configured maximum.
        max_chars: usize,
    },
    /// A client event whose name lacks the `client-` prefix.
    #[error("client event names must start with 'client-'")]
    NotClientEvent,
    /// A name in Pusher's reserved namespaces (`pusher:`, `pusher_internal:`).
    #[error("event names starting with 'pusher:' or 'pusher_internal:' are reserved")]
    Reserved,
}

/// Whether `c` is in Pusher's channel-name charset `[A-Za-z0-9_\-=@,.;]`.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '@' | ',' | '.' | ';')
}

/// The classification of a name, without validating it.
pub fn classify(name: &str) -> ChannelType {
    PREFIXES
        .iter()
        .find(|(prefix, _, _)| name.starts_with(prefix))
        .map(|&(_, kind, cache)| ChannelType { kind, cache })
        .unwrap_or(ChannelType {
            kind: ChannelKind::Public,
            cache: false,
        })
}

/// Validates a channel name and classifies it. A `#server-to-user-` name needs a non-empty
/// user id of the charset after the prefix.
pub fn validate_channel(name: &str, limits: &Limits) -> Result<ChannelType, NameError> {
    let err = NameError::Channel {
        max_chars: limits.max_channel_name_chars,
    };
    let body = name.strip_prefix(SERVER_TO_USER_PREFIX).unwrap_or(name);
    if body.is_empty()
        || name.chars().count() > limits.max_channel_name_chars
        || !body.chars().all(is_name_char)
    {
        return Err(err);
    }
    Ok(classify(name))
}

/// The user id of a `#server-to-user-{id}` channel name, if it is one.
pub fn server_to_user_id(name: &str) -> Option<&str> {
    name.strip_prefix(SERVER_TO_USER_PREFIX)
        .filter(|id| !id.is_empty())
}

/// The `#server-to-user-` channel of `user_id`.
pub fn server_to_user_channel(user_id: &str) -> String {
    format!("{SERVER_TO_USER_PREFIX}{user_id}")
}

/// Validates an event name: 1 to the limit in characters, no control characters. Any other
/// text is allowed, backslashes included (`App\Events\OrderShipped`).
pub fn validate_event_name(name: &str, limits: &Limits) -> Result<(), NameError> {
    let chars = name.chars().count();
    if chars == 0 || chars > limits.max_event_name_chars || name.chars().any(char::is_control) {
        return Err(NameError::Event {
            max_chars: limits.max_event_name_chars,
        });
    }
    Ok(())
}

/// Validates the name of an event a server triggers over REST: a valid event name outside
/// the reserved `pusher:` and `pusher_internal:` namespaces, which `pusher-js` would treat as
/// protocol messages.
pub fn validate_server_event_name(name: &str, limits: &Limits) -> Result<(), NameError> {
    validate_event_name(name, limits)?;
    if name.starts_with("pusher:") || name.starts_with("pusher_internal:") {
        return Err(NameError::Reserved);
    }
    Ok(())
}

/// Validates the name of a client event: a valid event name starting with `client-`.
pub fn validate_client_event_name(name: &str, limits: &Limits) -> Result<(), NameError> {
    validate_event_name(name, limits)?;
    if !name.starts_with(CLIENT_EVENT_PREFIX) {
        return Err(NameError::NotClientEvent);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &str) -> (ChannelKind, bool) {
        let t = validate_channel(name, &Limits::default()).unwrap();
        (t.kind, t.cache)
    }

    #[test]
    fn prefixes_classify_channels() {
        use ChannelKind::*;
        assert_eq!(kind("my-channel"), (Public, false));
        assert_eq!(kind("cache-x"), (Public, true));
        assert_eq!(kind("private-x"), (Private, false));
        assert_eq!(kind("private-cache-x"), (Private, true));
        assert_eq!(kind("presence-x"), (Presence, false));
        assert_eq!(kind("presence-cache-x"), (Presence, true));
        assert_eq!(kind("private-encrypted-x"), (PrivateEncrypted, false));
        assert_eq!(kind("private-encrypted-cache-x"), (PrivateEncrypted, true));
        assert_eq!(kind("#server-to-user-42"), (ServerToUser, false));
        // A prefix only counts at the start.
        assert_eq!(kind("x-private-y"), (Public, false));
        assert_eq!(kind("privatex"), (Public, false));
    }

    #[test]
    fn auth_and_client_event_rules_follow_the_kind() {
        let t = |n: &str| classify(n);
        assert!(!t("public").needs_auth());
        assert!(!t("cache-a").needs_auth());
        assert!(t("private-a").needs_auth());
        assert!(t("private-cache-a").needs_auth());
        assert!(t("presence-a").needs_auth());
        assert!(t("private-encrypted-a").needs_auth());
        assert!(!t("#server-to-user-1").needs_auth());

        assert!(t("private-a").allows_client_events());
        assert!(t("private-cache-a").allows_client_events());
        assert!(t("presence-a").allows_client_events());
        assert!(t("presence-cache-a").allows_client_events());
        assert!(!t("public").allows_client_events());
        assert!(!t("private-encrypted-a").allows_client_events());
        assert!(!t("private-encrypted-cache-a").allows_client_events());
        assert!(!t("#server-to-user-1").allows_client_events());

        assert!(t("presence-cache-a").is_presence() && t("presence-cache-a").is_cache());
        assert!(!t("private-a").is_presence() && !t("private-a").is_cache());
    }

    #[test]
    fn names_use_the_charset_and_the_length_limit() {
        let l = Limits::default();
        assert!(validate_channel("A-z_0=9@,.;", &l).is_ok());
        for bad in [
            "",
            "a b",
            "a/b",
            "a#b",
            "é",
            "a:b",
            "#server-to-user-",
            "#x",
        ] {
            assert!(validate_channel(bad, &l).is_err(), "{bad:?}");
        }
        assert!(validate_channel(&"a".repeat(164), &l).is_ok());
        assert!(validate_channel(&"a".repeat(165), &l).is_err());
        assert_eq!(
            validate_channel("a b", &l).unwrap_err().to_string(),
            "invalid channel name: 1-164 characters of A-Z a-z 0-9 _ - = @ , . ;"
        );
        assert!(validate_channel("#server-to-user-a b", &l).is_err());
        assert_eq!(server_to_user_id("#server-to-user-u1"), Some("u1"));
        assert_eq!(server_to_user_id("#server-to-user-"), None);
        assert_eq!(server_to_user_id("private-u1"), None);
        assert_eq!(server_to_user_channel("u1"), "#server-to-user-u1");
    }

    #[test]
    fn event_names_are_printable_and_bounded() {
        let l = Limits::default();
        assert!(validate_event_name(r"App\Events\OrderShipped", &l).is_ok());
        assert!(validate_event_name("my event: ünïcode ✓", &l).is_ok());
        assert!(validate_event_name(&"e".repeat(200), &l).is_ok());
        assert!(validate_event_name(&"e".repeat(201), &l).is_err());
        assert!(validate_event_name("", &l).is_err());
        assert!(validate_event_name("a\nb", &l).is_err());

        assert!(validate_client_event_name("client-typing", &l).is_ok());
        assert_eq!(
            validate_client_event_name("typing", &l),
            Err(NameError::NotClientEvent)
        );
        assert!(validate_server_event_name("order-shipped", &l).is_ok());
        assert_eq!(
            validate_server_event_name("pusher:subscribe", &l),
            Err(NameError::Reserved)
        );
        assert_eq!(
            validate_server_event_name("pusher_internal:member_added", &l),
            Err(NameError::Reserved)
        );
    }
}
