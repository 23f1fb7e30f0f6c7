//! Subscribers held by other objects: the calls between a room (a Pusher channel's stream)
//! and the gateway shards that hold its subscribers' sockets.
//!
//! A gateway shard subscribes one of its sockets with [`Subscribe`]: the room adds a session
//! whose `via` names the shard and joins it as it would a socket's `join`; the frames for that
//! subscriber (its welcome, or a refusal) come back in the [`SubscribeAnswer`]. From then on
//! the room's broadcasts reach the shard as [`Delivery`]s — one call per shard and batch, not
//! one per socket — in the room's order: a room sends a shard its next delivery only when the
//! previous one was answered, and what accumulates meanwhile goes out as one batch. A shard
//! that finds a gap in the offsets (a delivery lost to an eviction or a failed call) reads the
//! missing range from the room's history before it hands anything on.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::limits::RoomLimits;
use super::session::Session;

/// Most frames one delivery carries; more wait for the next call.
pub const MAX_DELIVERY_FRAMES: usize = 256;

/// Room keys of Pusher channels start with this (`pusher:{app id}:{channel}`); native room
/// names cannot contain `:`, so the two never meet.
pub const CHANNEL_PREFIX: &str = "pusher:";

/// The room key of an app's channel.
pub fn channel_key(app_id: &str, channel: &str) -> String {
    format!("{CHANNEL_PREFIX}{app_id}:{channel}")
}

/// The app id and channel name of a channel's room key.
pub fn parse_channel_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(CHANNEL_PREFIX)?.split_once(':')
}

/// The key of the room a shard of `app` subscribes its sockets to for `channel`: a Pusher
/// channel's room, or (v2 sockets, [`super::multiplex::NATIVE_APP`]) the room itself.
pub fn subscribed_key(app: &str, channel: &str) -> String {
    if app == super::multiplex::NATIVE_APP {
        channel.to_string()
    } else {
        channel_key(app, channel)
    }
}

/// What a shard calls the room with key `key`: a Pusher channel's name, or a native room's key.
pub fn shard_channel(key: &str) -> &str {
    parse_channel_key(key).map_or(key, |(_, channel)| channel)
}

/// Largest stored body of a channel's event (see [`channel_limits`]).
pub const CHANNEL_MAX_BODY_BYTES: usize = 24 * 1024;

/// A channel's room limits: the service's room limits, except that subscribers are not
/// sockets of the room (no connection cap), only presence channels count members (at most
/// `presence_max`), member information is a presence `user_info` (at most 1 KB) and there is
/// no batch window (deliveries to shards are batched instead).
pub fn channel_limits(
    room: &RoomLimits,
    presence: bool,
    presence_max: usize,
    max_data_bytes: usize,
) -> RoomLimits {
    RoomLimits {
        // The gateway and the REST API hold `data` to its limit (Pusher's 10 KB); the stored
        // body `{event, data, user_id}` may be twice that once `data`'s quotes are escaped.
        max_body_bytes: room
            .max_body_bytes
            .max(CHANNEL_MAX_BODY_BYTES)
            .max(2 * max_data_bytes + 1024),
        max_members: if presence { presence_max } else { usize::MAX },
        max_connections: usize::MAX,
        max_meta_bytes: 1024,
        max_name_chars: room.max_name_chars.max(200),
        batch_window_ms: 0,
        ..*room
    }
}

/// `RoomSubscribe`: a shard's socket subscribes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscribe {
    /// The subscriber: `conn` its socket id (unique: socket ids are random), `via` the
    /// shard's object name.
    pub session: Session,
    /// Its display name (a presence member's user id; the socket id otherwise).
    pub name: String,
    /// Member information shown to others (a presence channel's `user_info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
    /// Latest messages to replay in the answer (a cache channel asks for its last event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<usize>,
    /// Resume from this stream position (a v2 socket's per-room recovery): the answer's
    /// welcome says whether exactly the missed messages follow in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<super::protocol::StreamPos>,
}

/// `RoomFrame`: a frame of a shard-held subscriber (a v2 socket's `publish`), in v1's form,
/// handled as if its socket had sent it; what it causes reaches the subscriber through its
/// shard's deliveries, in the room's order (its `message`, then its `ack`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViaFrame {
    /// The subscriber's connection id in the room.
    pub conn: String,
    /// The frame, as v1 JSON text.
    pub frame: String,
}

/// The room's answer to [`Subscribe`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscribeAnswer {
    /// Whether the subscriber stays (false: it was refused and is not a subscriber).
    pub subscribed: bool,
    /// The frames for the subscriber, in order: its welcome (members, offset) or an error.
    pub frames: Vec<Value>,
}

/// `RoomUnsubscribe`: subscribers leave (a socket unsubscribed or closed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unsubscribe {
    /// Their connection ids in the room.
    pub conns: Vec<String>,
}

/// One frame of a [`Delivery`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivered {
    /// The room's frame (as its JSON encoding shows it).
    pub frame: Value,
    /// Only for this subscriber (a reply to it), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Not for this subscriber (the one that caused it), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except: Option<String>,
}

/// `GatewayDeliver`: frames of one room for one shard, in the room's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The room's key.
    pub room: String,
    /// The frames.
    pub frames: Vec<Delivered>,
}

/// A shard's answer to a [`Delivery`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryAnswer {
    /// Subscribers of this room the shard no longer holds (their sockets are gone): the room
    /// forgets them.
    #[serde(default)]
    pub gone: Vec<String>,
}

/// The offset a frame carries, if it is a stream message.
pub fn frame_offset(frame: &Value) -> Option<u64> {
    (frame["type"] == "message")
        .then(|| frame["offset"].as_u64())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::protocol::Encoding;

    #[test]
    fn calls_round_trip_through_json() {
        let mut session = Session::new("g1|123.456", "u1", Encoding::Json);
        session.via = Some("app-1:0".into());
        let s = Subscribe {
            session,
            name: "u1".into(),
            meta: Some(serde_json::json!({"n": 1})),
            history: None,
            since: None,
        };
        let back: Subscribe = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let d = Delivery {
            room: "pusher:1:news".into(),
            frames: vec![Delivered {
                frame: serde_json::json!({"type": "message", "offset": 7}),
                to: None,
                except: Some("g1|1.2".into()),
            }],
        };
        let text = serde_json::to_string(&d).unwrap();
        assert!(!text.contains("\"to\""), "{text}");
        assert_eq!(serde_json::from_str::<Delivery>(&text).unwrap(), d);
        assert_eq!(
            serde_json::from_str::<DeliveryAnswer>("{}").unwrap(),
            DeliveryAnswer::default()
        );
    }

    #[test]
    fn channel_keys_round_trip_and_never_look_like_room_names() {
        let k = channel_key("42", "presence-a:b");
        assert_eq!(parse_channel_key(&k), Some(("42", "presence-a:b")));
        assert_eq!(parse_channel_key("lobby"), None);
        // Room names are `[A-Za-z0-9._-]`: a key with `:` is never one.
        assert!(k.contains(':'));
    }

    #[test]
    fn channel_limits_count_members_on_presence_channels_only() {
        let base = RoomLimits::default();
        let public = channel_limits(&base, false, 100, 10240);
        assert_eq!(
            (
                public.max_members,
                public.max_connections,
                public.batch_window_ms
            ),
            (usize::MAX, usize::MAX, 0)
        );
        assert_eq!(channel_limits(&base, true, 100, 10240).max_members, 100);
        assert_eq!(public.max_body_bytes, CHANNEL_MAX_BODY_BYTES);
        assert_eq!(
            channel_limits(&base, false, 100, 100_000).max_body_bytes,
            201_024
        );
        assert_eq!(public.history_max_messages, base.history_max_messages);
    }

    #[test]
    fn only_messages_have_offsets() {
        assert_eq!(
            frame_offset(&serde_json::json!({"type": "message", "offset": 3})),
            Some(3)
        );
        assert_eq!(
            frame_offset(&serde_json::json!({"type": "joined", "offset": 3})),
            None
        );
    }

    #[test]
    fn a_session_without_via_serializes_as_before() {
        let s = Session::new("c", "u", Encoding::Json);
        assert!(!serde_json::to_string(&s).unwrap().contains("via"));
    }
}
