//! Webhooks: the events Pusher reports to an app's server, their body and their signature.
//!
//! A webhook is a `POST` of `{"time_ms": …, "events": [{"name": …, …}, …]}` with headers
//! `Content-Type: application/json`, `X-Pusher-Key: <app key>` and `X-Pusher-Signature:
//! hex(HMAC-SHA256(secret, body))`, which `pusher-http-node`'s `WebHook.isValid` and the
//! other SDKs check. Event kinds, by `name`:
//!
//! | name | fields |
//! |---|---|
//! | `channel_occupied` | `channel` |
//! | `channel_vacated` | `channel` |
//! | `member_added` | `channel`, `user_id` |
//! | `member_removed` | `channel`, `user_id` |
//! | `client_event` | `channel`, `event`, `data`, `socket_id`, `user_id` (presence only) |
//! | `cache_miss` | `channel` |
//! | `subscription_count` | `channel`, `subscription_count` |

use serde::{Deserialize, Serialize};

use super::sign::{sign_webhook, verify_hex};

/// One webhook event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum WebhookEvent {
    /// A channel got its first subscriber.
    ChannelOccupied {
        /// The channel.
        channel: String,
    },
    /// A channel lost its last subscriber.
    ChannelVacated {
        /// The channel.
        channel: String,
    },
    /// A user joined a presence channel (their first socket on it).
    MemberAdded {
        /// The channel.
        channel: String,
        /// The member.
        user_id: String,
    },
    /// A user left a presence channel (their last socket on it).
    MemberRemoved {
        /// The channel.
        channel: String,
        /// The member.
        user_id: String,
    },
    /// A client sent a `client-` event.
    ClientEvent {
        /// The channel.
        channel: String,
        /// The event name.
        event: String,
        /// The event data, as relayed.
        data: String,
        /// The sender.
        socket_id: String,
        /// The sender's user id, on presence channels.
        #[serde(skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
    },
    /// A subscription to an empty cache channel.
    CacheMiss {
        /// The channel.
        channel: String,
    },
    /// A channel's subscription count changed.
    SubscriptionCount {
        /// The channel.
        channel: String,
        /// The new count.
        subscription_count: u64,
    },
}

/// The kinds of [`WebhookEvent`], for an app's webhook filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookKind {
    /// [`WebhookEvent::ChannelOccupied`] and [`WebhookEvent::ChannelVacated`]: Pusher's
    /// "channel existence" webhook.
    ChannelExistence,
    /// [`WebhookEvent::MemberAdded`] and [`WebhookEvent::MemberRemoved`]: "presence".
    Presence,
    /// [`WebhookEvent::ClientEvent`].
    ClientEvent,
    /// [`WebhookEvent::CacheMiss`].
    CacheMiss,
    /// [`WebhookEvent::SubscriptionCount`].
    SubscriptionCount,
}

impl WebhookEvent {
    /// The kind a webhook filter selects this event by.
    pub fn kind(&self) -> WebhookKind {
        match self {
            Self::ChannelOccupied { .. } | Self::ChannelVacated { .. } => {
                WebhookKind::ChannelExistence
            }
            Self::MemberAdded { .. } | Self::MemberRemoved { .. } => WebhookKind::Presence,
            Self::ClientEvent { .. } => WebhookKind::ClientEvent,
            Self::CacheMiss { .. } => WebhookKind::CacheMiss,
            Self::SubscriptionCount { .. } => WebhookKind::SubscriptionCount,
        }
    }
}

/// The webhook body for `events` observed at `time_ms`.
pub fn body(time_ms: u64, events: &[WebhookEvent]) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        time_ms: u64,
        events: &'a [WebhookEvent],
    }
    serde_json::to_string(&Body { time_ms, events }).expect("strings and integers serialise")
}

/// The headers of a webhook request carrying `body` for the app with `key` and `secret`.
pub fn headers(key: &str, secret: &str, body: &str) -> [(&'static str, String); 3] {
    [
        ("Content-Type", "application/json".to_string()),
        ("X-Pusher-Key", key.to_string()),
        ("X-Pusher-Signature", sign_webhook(secret, body.as_bytes())),
    ]
}

/// Whether `signature` is the `X-Pusher-Signature` of `body` under `secret` (constant time),
/// as a receiving SDK checks it.
pub fn verify(secret: &str, body: &str, signature: &str) -> bool {
    verify_hex(secret, body.as_bytes(), signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn bodies_list_events_by_name() {
        let events = vec![
            WebhookEvent::ChannelOccupied {
                channel: "a".into(),
            },
            WebhookEvent::ChannelVacated {
                channel: "a".into(),
            },
            WebhookEvent::MemberAdded {
                channel: "presence-a".into(),
                user_id: "1".into(),
            },
            WebhookEvent::MemberRemoved {
                channel: "presence-a".into(),
                user_id: "1".into(),
            },
            WebhookEvent::ClientEvent {
                channel: "private-a".into(),
                event: "client-x".into(),
                data: r#"{"a":1}"#.into(),
                socket_id: "1.2".into(),
                user_id: None,
            },
            WebhookEvent::CacheMiss {
                channel: "cache-a".into(),
            },
            WebhookEvent::SubscriptionCount {
                channel: "a".into(),
                subscription_count: 3,
            },
        ];
        assert_eq!(
            parse(&body(1_700_000_000_123, &events)),
            json!({"time_ms": 1_700_000_000_123u64, "events": [
                {"name": "channel_occupied", "channel": "a"},
                {"name": "channel_vacated", "channel": "a"},
                {"name": "member_added", "channel": "presence-a", "user_id": "1"},
                {"name": "member_removed", "channel": "presence-a", "user_id": "1"},
                {"name": "client_event", "channel": "private-a", "event": "client-x",
                 "data": "{\"a\":1}", "socket_id": "1.2"},
                {"name": "cache_miss", "channel": "cache-a"},
                {"name": "subscription_count", "channel": "a", "subscription_count": 3},
            ]})
        );
        let kinds: Vec<_> = events.iter().map(WebhookEvent::kind).collect();
        use WebhookKind::*;
        assert_eq!(
            kinds,
            vec![
                ChannelExistence,
                ChannelExistence,
                Presence,
                Presence,
                ClientEvent,
                CacheMiss,
                SubscriptionCount
            ]
        );
    }

    #[test]
    fn presence_client_events_name_the_user() {
        let e = WebhookEvent::ClientEvent {
            channel: "presence-a".into(),
            event: "client-x".into(),
            data: "hi".into(),
            socket_id: "1.2".into(),
            user_id: Some("7".into()),
        };
        assert_eq!(parse(&body(1, &[e]))["events"][0]["user_id"], "7");
    }

    #[test]
    fn headers_sign_the_exact_body() {
        let b = body(
            1,
            &[WebhookEvent::CacheMiss {
                channel: "cache-a".into(),
            }],
        );
        let h = headers("key", "secret", &b);
        assert_eq!(h[0], ("Content-Type", "application/json".to_string()));
        assert_eq!(h[1], ("X-Pusher-Key", "key".to_string()));
        assert_eq!(h[2].0, "X-Pusher-Signature");
        assert_eq!(
            h[2].1,
            crate::pusher::sign::hmac_sha256_hex("secret", b.as_bytes())
        );
        assert!(verify("secret", &b, &h[2].1));
        assert!(!verify("other", &b, &h[2].1));
        assert!(!verify("secret", &format!("{b} "), &h[2].1));
    }

    #[test]
    fn kinds_deserialise_from_snake_case() {
        let k: Vec<WebhookKind> = serde_json::from_str(
            r#"["channel_existence","presence","client_event","cache_miss","subscription_count"]"#,
        )
        .unwrap();
        assert_eq!(k.len(), 5);
        assert!(serde_json::from_str::<WebhookKind>(r#""nope""#).is_err());
    }
}
