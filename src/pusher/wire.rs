//! The WebSocket frames of protocol 7: what clients send, what the server sends back, and the
//! close codes.
//!
//! Every frame is a JSON text message `{"event": …, "channel"?: …, "data"?: …}`.
//!
//! **Client → server** ([`decode`]): `data` may be an object or a JSON string holding one
//! (`pusher-js` sends objects; other clients send strings), so both are accepted for
//! `pusher:subscribe` (`{channel, auth?, channel_data?}`), `pusher:unsubscribe`
//! (`{channel}`), `pusher:signin` (`{auth, user_data}`), `pusher:ping` and `pusher:pong`.
//! A `client-*` event's `data` is relayed as a string: a string is kept byte for byte, any
//! other JSON value is serialised compactly. Frames are bounded by
//! [`Limits::max_frame_bytes`] before they are parsed.
//!
//! **Server → client** (the `*_frame` functions): Pusher puts a JSON *string* in `data` for
//! `pusher:connection_established`, `pusher_internal:subscription_succeeded`,
//! `member_added`/`member_removed`, `subscription_count` and channel events, and an
//! *object* in `data` for `pusher:error` (`{message, code}`, `code` null for errors that do
//! not close the connection), `pusher:pong` and `pusher:signin_success` (`{user_data}`,
//! `user_data` itself a string, which `pusher-js` parses). `pusher:subscription_error` is
//! sent on the channel with the object `pusher-js` 8 emits for a failed authorization,
//! `{type, error, status}`, so one handler serves both. Channel events may carry `user_id`
//! (client events on presence channels) and an `offset`, this service's stream position of
//! the event: an extra field, which `pusher-js` ignores (its decoder copies only `event`,
//! `channel`, `data` and `user_id`).
//!
//! **Close codes** ([`close`]): 4000–4099 tell the client not to reconnect, 4100–4199 to
//! back off, 4200–4299 to reconnect at once; [`close_action`] is `pusher-js`'s reading.

use serde::Serialize;
use serde_json::{json, Value};

use super::channel::{self, ChannelType, NameError};
use super::presence::Member;
use super::Limits;

/// Pusher's close and error codes.
pub mod close {
    /// The app accepts TLS connections only; reconnect with `wss://`.
    pub const SSL_ONLY: u16 = 4000;
    /// No app has the key in the connection URL.
    pub const APP_NOT_FOUND: u16 = 4001;
    /// The app is disabled.
    pub const APP_DISABLED: u16 = 4003;
    /// The app is over its connection quota.
    pub const OVER_CONNECTION_QUOTA: u16 = 4004;
    /// The connection URL's path is not `/app/{key}`.
    pub const PATH_NOT_FOUND: u16 = 4005;
    /// The `version` query parameter is malformed.
    pub const INVALID_VERSION_FORMAT: u16 = 4006;
    /// The `protocol` query parameter names a version this server does not speak.
    pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
    /// No `protocol` query parameter.
    pub const NO_PROTOCOL: u16 = 4008;
    /// The connection is unauthorized (authorized-connections apps).
    pub const UNAUTHORIZED: u16 = 4009;
    /// The server is over capacity; reconnect after a delay.
    pub const OVER_CAPACITY: u16 = 4100;
    /// Generic: reconnect immediately.
    pub const RECONNECT_NOW: u16 = 4200;
    /// A `pusher:ping` got no `pusher:pong` in time.
    pub const PONG_NOT_RECEIVED: u16 = 4201;
    /// Closed after inactivity.
    pub const CLOSED_AFTER_INACTIVITY: u16 = 4202;
    /// A client event was rejected for exceeding the rate limit (sent as a `pusher:error`;
    /// the connection stays open).
    pub const CLIENT_EVENT_REJECTED: u16 = 4301;
}

/// What `pusher-js` does when a connection closes with a code (its `getCloseAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseAction {
    /// 4000: reconnect with TLS.
    TlsOnly,
    /// 4001–4099 and 4300 up: give up.
    Refused,
    /// 1002–1004 and 4100–4199: reconnect after a delay.
    Backoff,
    /// 4200–4299: reconnect at once.
    Retry,
    /// Anything else below 4000: the transport's normal handling.
    Default,
}

/// How `pusher-js` 8 reacts to close `code`.
pub fn close_action(code: u16) -> CloseAction {
    match code {
        1002..=1004 => CloseAction::Backoff,
        0..=3999 => CloseAction::Default,
        4000 => CloseAction::TlsOnly,
        4001..=4099 => CloseAction::Refused,
        4100..=4199 => CloseAction::Backoff,
        4200..=4299 => CloseAction::Retry,
        _ => CloseAction::Refused,
    }
}

/// A decoded client → server frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// `pusher:subscribe`.
    Subscribe {
        /// The channel, validated.
        channel: String,
        /// Its classification.
        channel_type: ChannelType,
        /// The `key:signature` authorization; `None` when absent or empty (public
        /// channels: `pusher-js` sends `""`).
        auth: Option<String>,
        /// The presence `channel_data` string, exactly as sent (it is what was signed).
        channel_data: Option<String>,
    },
    /// `pusher:unsubscribe`.
    Unsubscribe {
        /// The channel, validated.
        channel: String,
    },
    /// `pusher:ping`: answer with [`pong_frame`].
    Ping,
    /// `pusher:pong`: the answer to a server ping.
    Pong,
    /// `pusher:signin`.
    Signin {
        /// The `key:signature` over `socket_id::user::user_data`.
        auth: String,
        /// The `user_data` string, exactly as sent.
        user_data: String,
    },
    /// A `client-*` event on a private or presence channel.
    ClientEvent {
        /// The event name (starts with `client-`).
        event: String,
        /// The channel, validated and of a kind that allows client events.
        channel: String,
        /// The data to relay, as a string.
        data: String,
    },
}

/// Why a client frame was refused. None closes the connection: the gateway answers with
/// [`error_frame`]`(err.code(), &err.to_string())` and carries on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame is over [`Limits::max_frame_bytes`]; it was not parsed.
    #[error("frame larger than {max} bytes")]
    FrameTooLarge {
        /// The configured maximum.
        max: usize,
    },
    /// Not JSON, or a field is missing or of the wrong type; the detail names it.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// An event the server does not take from clients.
    #[error("unsupported event from client")]
    UnknownEvent,
    /// A bad channel or event name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A client event on a channel kind that does not allow them.
    #[error("client events are only allowed on private and presence channels")]
    ClientEventsNotAllowed,
    /// A client event's data is over [`Limits::max_event_data_bytes`].
    #[error("event data larger than {max} bytes")]
    DataTooLarge {
        /// The configured maximum.
        max: usize,
    },
    /// A client event over the per-connection rate ([`ClientEventRate`]).
    #[error("client event rejected due to rate limit ({per_second}/s)")]
    RateLimited {
        /// The configured rate.
        per_second: u32,
    },
}

impl WireError {
    /// The `code` of the `pusher:error` to send: 4301 for a rate-limited client event, null
    /// otherwise (Pusher sends null for errors that keep the connection open).
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::RateLimited { .. } => Some(close::CLIENT_EVENT_REJECTED),
            _ => None,
        }
    }
}

/// Decodes one client text frame.
pub fn decode(text: &str, limits: &Limits) -> Result<ClientFrame, WireError> {
    if text.len() > limits.max_frame_bytes {
        return Err(WireError::FrameTooLarge {
            max: limits.max_frame_bytes,
        });
    }
    let frame: Value = serde_json::from_str(text).map_err(|_| WireError::Malformed("not JSON"))?;
    let event = frame
        .get("event")
        .and_then(Value::as_str)
        .ok_or(WireError::Malformed("event"))?;
    let data = frame.get("data").unwrap_or(&Value::Null);
    match event {
        "pusher:ping" => Ok(ClientFrame::Ping),
        "pusher:pong" => Ok(ClientFrame::Pong),
        "pusher:subscribe" => {
            let data = object_data(data)?;
            let channel = channel_field(&data)?;
            let channel_type = channel::validate_channel(&channel, limits)?;
            let auth = optional_string(&data, "auth", "subscribe auth")?.filter(|a| !a.is_empty());
            let channel_data = optional_string(&data, "channel_data", "subscribe channel_data")?;
            Ok(ClientFrame::Subscribe {
                channel,
                channel_type,
                auth,
                channel_data,
            })
        }
        "pusher:unsubscribe" => {
            let data = object_data(data)?;
            let channel = channel_field(&data)?;
            channel::validate_channel(&channel, limits)?;
            Ok(ClientFrame::Unsubscribe { channel })
        }
        "pusher:signin" => {
            let data = object_data(data)?;
            let auth = optional_string(&data, "auth", "signin auth")?
                .ok_or(WireError::Malformed("signin auth"))?;
            let user_data = optional_string(&data, "user_data", "signin user_data")?
                .ok_or(WireError::Malformed("signin user_data"))?;
            Ok(ClientFrame::Signin { auth, user_data })
        }
        _ if event.starts_with(channel::CLIENT_EVENT_PREFIX) => {
            channel::validate_client_event_name(event, limits)?;
            let channel = frame
                .get("channel")
                .and_then(Value::as_str)
                .ok_or(WireError::Malformed("channel"))?;
            if !channel::validate_channel(channel, limits)?.allows_client_events() {
                return Err(WireError::ClientEventsNotAllowed);
            }
            let data = match data {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if data.len() > limits.max_event_data_bytes {
                return Err(WireError::DataTooLarge {
                    max: limits.max_event_data_bytes,
                });
            }
            Ok(ClientFrame::ClientEvent {
                event: event.to_string(),
                channel: channel.to_string(),
                data,
            })
        }
        _ => Err(WireError::UnknownEvent),
    }
}

/// A protocol message's `data` as an object: an object, or a string holding one.
fn object_data(data: &Value) -> Result<serde_json::Map<String, Value>, WireError> {
    let parsed;
    let value = match data {
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s).map_err(|_| WireError::Malformed("data"))?;
            &parsed
        }
        other => other,
    };
    value
        .as_object()
        .cloned()
        .ok_or(WireError::Malformed("data"))
}

fn channel_field(data: &serde_json::Map<String, Value>) -> Result<String, WireError> {
    data.get("channel")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or(WireError::Malformed("channel"))
}

fn optional_string(
    data: &serde_json::Map<String, Value>,
    field: &str,
    what: &'static str,
) -> Result<Option<String>, WireError> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(WireError::Malformed(what)),
    }
}

/// A per-connection client event budget: at most `per_second` events in each whole second.
/// Time comes in as `now_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientEventRate {
    second: u64,
    count: u32,
}

impl ClientEventRate {
    /// Counts one client event at `now_ms`, or refuses it when the second's budget is spent.
    pub fn allow(&mut self, now_ms: u64, limits: &Limits) -> Result<(), WireError> {
        let second = now_ms / 1000;
        if second != self.second {
            self.second = second;
            self.count = 0;
        }
        if self.count >= limits.client_events_per_second {
            return Err(WireError::RateLimited {
                per_second: limits.client_events_per_second,
            });
        }
        self.count += 1;
        Ok(())
    }
}

fn frame(event: &str, channel: Option<&str>, data: Option<Value>) -> String {
    let mut f = serde_json::Map::new();
    f.insert("event".into(), Value::String(event.into()));
    if let Some(c) = channel {
        f.insert("channel".into(), Value::String(c.into()));
    }
    if let Some(d) = data {
        f.insert("data".into(), d);
    }
    Value::Object(f).to_string()
}

/// `pusher:connection_established`; `data` is a JSON string of
/// `{"socket_id": …, "activity_timeout": …}`.
pub fn connection_established_frame(socket_id: &str, activity_timeout_s: u32) -> String {
    let data = json!({"socket_id": socket_id, "activity_timeout": activity_timeout_s});
    frame(
        "pusher:connection_established",
        None,
        Some(Value::String(data.to_string())),
    )
}

/// `pusher:error` with `{message, code}`; `code` null for errors that keep the connection
/// open.
pub fn error_frame(code: Option<u16>, message: &str) -> String {
    frame(
        "pusher:error",
        None,
        Some(json!({"message": message, "code": code})),
    )
}

/// `pusher:ping`, sent after [`Limits::activity_timeout_s`] of silence.
pub fn ping_frame() -> String {
    frame("pusher:ping", None, Some(json!({})))
}

/// `pusher:pong`, the answer to a client's `pusher:ping`.
pub fn pong_frame() -> String {
    frame("pusher:pong", None, Some(json!({})))
}

/// `pusher_internal:subscription_succeeded`; `presence` is [`super::presence::presence_data`]
/// for presence channels, `{}` is sent otherwise. `data` is a JSON string.
pub fn subscription_succeeded_frame(channel: &str, presence: Option<&Value>) -> String {
    let data = presence.map_or_else(|| "{}".to_string(), Value::to_string);
    frame(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        Some(Value::String(data)),
    )
}

/// `pusher:subscription_error` on `channel`, with the object `pusher-js` emits for failed
/// authorizations: `{"type": "AuthError", "error": …, "status": …}`.
pub fn subscription_error_frame(channel: &str, error: &str, status: u16) -> String {
    frame(
        "pusher:subscription_error",
        Some(channel),
        Some(json!({"type": "AuthError", "error": error, "status": status})),
    )
}

/// `pusher_internal:member_added`; `data` is a JSON string of `{user_id, user_info}`.
pub fn member_added_frame(channel: &str, member: &Member) -> String {
    let data = json!({"user_id": member.user_id, "user_info": member.user_info});
    frame(
        "pusher_internal:member_added",
        Some(channel),
        Some(Value::String(data.to_string())),
    )
}

/// `pusher_internal:member_removed`; `data` is a JSON string of `{user_id}`.
pub fn member_removed_frame(channel: &str, user_id: &str) -> String {
    let data = json!({"user_id": user_id});
    frame(
        "pusher_internal:member_removed",
        Some(channel),
        Some(Value::String(data.to_string())),
    )
}

/// `pusher_internal:subscription_count`; `data` is a JSON string of
/// `{"subscription_count": n}`.
pub fn subscription_count_frame(channel: &str, count: u64) -> String {
    let data = json!({"subscription_count": count});
    frame(
        "pusher_internal:subscription_count",
        Some(channel),
        Some(Value::String(data.to_string())),
    )
}

/// `pusher:cache_miss`: a subscription to a cache channel that holds no event yet.
pub fn cache_miss_frame(channel: &str) -> String {
    frame("pusher:cache_miss", Some(channel), None)
}

/// `pusher:signin_success`; `data` is `{"user_data": <the signed user_data string>}`.
pub fn signin_success_frame(user_data: &str) -> String {
    frame(
        "pusher:signin_success",
        None,
        Some(json!({"user_data": user_data})),
    )
}

/// An event delivered on a channel: from REST, from another client, or replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelEvent {
    /// The event name.
    pub event: String,
    /// The channel.
    pub channel: String,
    /// The data, exactly the string the publisher gave.
    pub data: String,
    /// The sender's user id: client events on presence channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// This service's stream offset of the event, for resuming; unknown to `pusher-js`,
    /// which ignores it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// The frame of a channel event.
pub fn channel_event_frame(event: &ChannelEvent) -> String {
    serde_json::to_string(event).expect("strings and integers serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pusher::channel::ChannelKind;

    fn l() -> Limits {
        Limits::default()
    }

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn subscribe_takes_object_or_string_data() {
        // pusher-js 8 sends an object, with auth "" for public channels.
        let f = decode(
            r#"{"event":"pusher:subscribe","data":{"auth":"","channel":"my-channel"}}"#,
            &l(),
        )
        .unwrap();
        assert_eq!(
            f,
            ClientFrame::Subscribe {
                channel: "my-channel".into(),
                channel_type: channel::classify("my-channel"),
                auth: None,
                channel_data: None,
            }
        );
        let f = decode(
            r#"{"event":"pusher:subscribe","data":"{\"channel\":\"presence-x\",\"auth\":\"k:s\",\"channel_data\":\"{\\\"user_id\\\":1}\"}"}"#,
            &l(),
        )
        .unwrap();
        match f {
            ClientFrame::Subscribe {
                channel,
                channel_type,
                auth,
                channel_data,
            } => {
                assert_eq!(channel, "presence-x");
                assert_eq!(channel_type.kind, ChannelKind::Presence);
                assert_eq!(auth.as_deref(), Some("k:s"));
                assert_eq!(channel_data.as_deref(), Some(r#"{"user_id":1}"#));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn protocol_frames_decode() {
        assert_eq!(
            decode(r#"{"event":"pusher:ping","data":{}}"#, &l()),
            Ok(ClientFrame::Ping)
        );
        assert_eq!(
            decode(r#"{"event":"pusher:pong"}"#, &l()),
            Ok(ClientFrame::Pong)
        );
        assert_eq!(
            decode(
                r#"{"event":"pusher:unsubscribe","data":{"channel":"private-a"}}"#,
                &l()
            ),
            Ok(ClientFrame::Unsubscribe {
                channel: "private-a".into()
            })
        );
        assert_eq!(
            decode(
                r#"{"event":"pusher:signin","data":{"auth":"k:s","user_data":"{\"id\":\"1\"}"}}"#,
                &l()
            ),
            Ok(ClientFrame::Signin {
                auth: "k:s".into(),
                user_data: r#"{"id":"1"}"#.into()
            })
        );
    }

    #[test]
    fn malformed_frames_are_refused_without_closing() {
        let cases = [
            ("not json", WireError::Malformed("not JSON")),
            (r#"{"data":{}}"#, WireError::Malformed("event")),
            (r#"{"event":7}"#, WireError::Malformed("event")),
            (
                r#"{"event":"pusher:subscribe"}"#,
                WireError::Malformed("data"),
            ),
            (
                r#"{"event":"pusher:subscribe","data":"nope"}"#,
                WireError::Malformed("data"),
            ),
            (
                r#"{"event":"pusher:subscribe","data":{}}"#,
                WireError::Malformed("channel"),
            ),
            (
                r#"{"event":"pusher:subscribe","data":{"channel":"a","auth":5}}"#,
                WireError::Malformed("subscribe auth"),
            ),
            (
                r#"{"event":"pusher:signin","data":{"auth":"k:s"}}"#,
                WireError::Malformed("signin user_data"),
            ),
            (r#"{"event":"hello"}"#, WireError::UnknownEvent),
            (
                r#"{"event":"pusher_internal:member_added"}"#,
                WireError::UnknownEvent,
            ),
        ];
        for (text, want) in cases {
            let got = decode(text, &l()).unwrap_err();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.code(), None);
        }
        assert!(matches!(
            decode(
                r#"{"event":"pusher:subscribe","data":{"channel":"a b"}}"#,
                &l()
            ),
            Err(WireError::Name(NameError::Channel { .. }))
        ));
    }

    #[test]
    fn frames_over_the_limit_are_not_parsed() {
        let limits = Limits {
            max_frame_bytes: 32,
            ..Limits::default()
        };
        let text = format!(r#"{{"event":"pusher:ping","x":"{}"}}"#, "a".repeat(10));
        assert_eq!(
            decode(&text, &limits),
            Err(WireError::FrameTooLarge { max: 32 })
        );
        assert!(decode(r#"{"event":"pusher:ping"}"#, &limits).is_ok());
    }

    #[test]
    fn client_events_keep_string_data_and_serialise_objects() {
        let f = decode(
            r#"{"event":"client-typing","channel":"private-a","data":"{\"a\": 1}"}"#,
            &l(),
        )
        .unwrap();
        assert_eq!(
            f,
            ClientFrame::ClientEvent {
                event: "client-typing".into(),
                channel: "private-a".into(),
                data: r#"{"a": 1}"#.into()
            }
        );
        let f = decode(
            r#"{"event":"client-typing","channel":"presence-a","data":{"a":1}}"#,
            &l(),
        )
        .unwrap();
        assert!(matches!(f, ClientFrame::ClientEvent { data, .. } if data == r#"{"a":1}"#));
    }

    #[test]
    fn client_events_need_a_private_or_presence_channel_and_bounded_data() {
        for ch in [
            "public",
            "private-encrypted-a",
            "#server-to-user-1",
            "cache-a",
        ] {
            let text = format!(r#"{{"event":"client-x","channel":"{ch}","data":{{}}}}"#);
            assert_eq!(
                decode(&text, &l()),
                Err(WireError::ClientEventsNotAllowed),
                "{ch}"
            );
        }
        assert_eq!(
            decode(r#"{"event":"client-x","data":{}}"#, &l()),
            Err(WireError::Malformed("channel"))
        );
        let big = format!(
            r#"{{"event":"client-x","channel":"private-a","data":"{}"}}"#,
            "a".repeat(10241)
        );
        assert_eq!(
            decode(&big, &l()),
            Err(WireError::DataTooLarge { max: 10240 })
        );
        let fits = format!(
            r#"{{"event":"client-x","channel":"private-a","data":"{}"}}"#,
            "a".repeat(10240)
        );
        assert!(decode(&fits, &l()).is_ok());
    }

    #[test]
    fn client_events_are_rate_limited_per_second_with_4301() {
        let mut rate = ClientEventRate::default();
        for _ in 0..10 {
            assert_eq!(rate.allow(5_000, &l()), Ok(()));
        }
        let err = rate.allow(5_999, &l()).unwrap_err();
        assert_eq!(err.code(), Some(4301));
        assert_eq!(
            err.to_string(),
            "client event rejected due to rate limit (10/s)"
        );
        assert_eq!(rate.allow(6_000, &l()), Ok(()));
    }

    #[test]
    fn connection_established_data_is_a_json_string() {
        let f = parse(&connection_established_frame("123.456", 120));
        assert_eq!(f["event"], "pusher:connection_established");
        let data: Value = parse(f["data"].as_str().unwrap());
        assert_eq!(
            data,
            json!({"socket_id": "123.456", "activity_timeout": 120})
        );
    }

    #[test]
    fn error_pong_and_signin_frames_carry_objects() {
        assert_eq!(
            parse(&error_frame(Some(4001), "Application does not exist")),
            json!({"event": "pusher:error", "data": {"message": "Application does not exist", "code": 4001}})
        );
        assert_eq!(
            parse(&error_frame(None, "x")),
            json!({"event": "pusher:error", "data": {"message": "x", "code": null}})
        );
        assert_eq!(
            parse(&pong_frame()),
            json!({"event": "pusher:pong", "data": {}})
        );
        assert_eq!(
            parse(&ping_frame()),
            json!({"event": "pusher:ping", "data": {}})
        );
        assert_eq!(
            parse(&signin_success_frame(r#"{"id":"1"}"#)),
            json!({"event": "pusher:signin_success", "data": {"user_data": "{\"id\":\"1\"}"}})
        );
        assert_eq!(
            parse(&subscription_error_frame(
                "private-a",
                "Invalid signature",
                401
            )),
            json!({"event": "pusher:subscription_error", "channel": "private-a",
                   "data": {"type": "AuthError", "error": "Invalid signature", "status": 401}})
        );
        assert_eq!(
            parse(&cache_miss_frame("cache-a")),
            json!({"event": "pusher:cache_miss", "channel": "cache-a"})
        );
    }

    #[test]
    fn channel_scoped_internal_frames_carry_json_strings() {
        let f = parse(&subscription_succeeded_frame("a", None));
        assert_eq!(f["data"], "{}");
        let presence = json!({"presence": {"ids": ["1"], "hash": {"1": null}, "count": 1}});
        let f = parse(&subscription_succeeded_frame("presence-a", Some(&presence)));
        assert_eq!(f["event"], "pusher_internal:subscription_succeeded");
        assert_eq!(f["channel"], "presence-a");
        assert_eq!(parse(f["data"].as_str().unwrap()), presence);

        let m = Member {
            user_id: "1".into(),
            user_info: Some(json!({"name": "Ada"})),
        };
        let f = parse(&member_added_frame("presence-a", &m));
        assert_eq!(
            parse(f["data"].as_str().unwrap()),
            json!({"user_id": "1", "user_info": {"name": "Ada"}})
        );
        let f = parse(&member_removed_frame("presence-a", "1"));
        assert_eq!(f["event"], "pusher_internal:member_removed");
        assert_eq!(parse(f["data"].as_str().unwrap()), json!({"user_id": "1"}));
        let f = parse(&subscription_count_frame("a", 3));
        assert_eq!(
            parse(f["data"].as_str().unwrap()),
            json!({"subscription_count": 3})
        );
    }

    #[test]
    fn channel_events_keep_the_exact_data_string() {
        let raw = r#"{"some":"data", "n": 1.50}"#;
        let e = ChannelEvent {
            event: r"App\Events\OrderShipped".into(),
            channel: "orders".into(),
            data: raw.into(),
            user_id: None,
            offset: Some(42),
        };
        let text = channel_event_frame(&e);
        let f = parse(&text);
        assert_eq!(f["data"].as_str().unwrap(), raw);
        assert_eq!(f["event"], r"App\Events\OrderShipped");
        assert_eq!(f["offset"], 42);
        assert!(f.get("user_id").is_none());
        let e = ChannelEvent {
            user_id: Some("7".into()),
            offset: None,
            ..e
        };
        let f = parse(&channel_event_frame(&e));
        assert_eq!(f["user_id"], "7");
        assert!(f.get("offset").is_none());
    }

    #[test]
    fn close_actions_follow_pusher_js() {
        use close::*;
        assert_eq!(close_action(SSL_ONLY), CloseAction::TlsOnly);
        for c in [
            APP_NOT_FOUND,
            APP_DISABLED,
            OVER_CONNECTION_QUOTA,
            PATH_NOT_FOUND,
            NO_PROTOCOL,
            UNAUTHORIZED,
        ] {
            assert_eq!(close_action(c), CloseAction::Refused, "{c}");
        }
        assert_eq!(close_action(OVER_CAPACITY), CloseAction::Backoff);
        for c in [RECONNECT_NOW, PONG_NOT_RECEIVED, CLOSED_AFTER_INACTIVITY] {
            assert_eq!(close_action(c), CloseAction::Retry, "{c}");
        }
        assert_eq!(close_action(CLIENT_EVENT_REJECTED), CloseAction::Refused);
        assert_eq!(close_action(1003), CloseAction::Backoff);
        assert_eq!(close_action(1000), CloseAction::Default);
        assert_eq!(close_action(1006), CloseAction::Default);
    }
}
