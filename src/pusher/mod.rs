//! Pusher Channels, protocol 7: the pure core of a Pusher-compatible service, so that
//! unmodified `pusher-js` clients and the official server SDKs (`pusher-http-node`,
//! `pusher-http-python`, Laravel broadcasting, …) can talk to Roomkeeper.
//!
//! Nothing here holds a socket, reads a clock or draws a random number: gateway Durable
//! Objects (which hold the client sockets) and the REST router call these functions with
//! the frame text, the request parts, `now_s` / `now_ms` and caller-supplied randomness, and
//! perform the effects themselves.
//!
//! # Layout
//!
//! - [`channel`]: channel names (charset, length) and their kinds — public, `private-`,
//!   `presence-`, `private-encrypted-`, the `cache-` variants and `#server-to-user-{id}` —
//!   and event names.
//! - [`sign`]: HMAC-SHA256 hex signatures — channel authorization (`key:signature`), user
//!   sign-in, webhook bodies — verified in constant time; socket ids.
//! - [`wire`]: the WebSocket frames: client → server decoding (with the size limit and
//!   Pusher's error codes), server → client encoding, and the close codes.
//! - [`presence`]: presence `channel_data` and sign-in `user_data` parsing, and the
//!   `presence` payload of `pusher_internal:subscription_succeeded`.
//! - [`authorize`]: whether a `pusher:subscribe` may join (and as which member), and whether
//!   a `pusher:signin` is genuine, composed from the three above.
//! - [`rest`]: REST API request authentication (`auth_signature`, `auth_timestamp`,
//!   `body_md5`) and its error type, mapped to Pusher's HTTP statuses in one place.
//! - [`rest_body`]: the REST bodies and query parameters — trigger, batch trigger, channel
//!   and user queries.
//! - [`apps`]: the configured apps (`PUSHER_APPS`), looked up by key and by id.
//! - [`webhook`]: webhook bodies (`time_ms`, `events`) and their signature headers.
//!
//! Where Pusher's documentation and its clients disagree, this module follows the documented
//! behaviour and what `pusher-js` 8.6 actually parses; each such choice is noted where it is
//! made.

pub mod apps;
pub mod authorize;
pub mod channel;
pub mod history;
pub mod presence;
pub mod rest;
pub mod rest_body;
pub mod shard;
pub mod sign;
pub mod webhook;
pub mod wire;

/// The protocol version this module speaks (the `protocol` query parameter of the WebSocket
/// URL). `pusher-js` 8 sends 7.
pub const PROTOCOL_VERSION: u32 = 7;

/// The service's limits, with Pusher's published defaults. One value is shared by every
/// function that enforces a limit, so a deployment can raise or lower them in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest channel name, in characters (Pusher: 164).
    pub max_channel_name_chars: usize,
    /// Longest event name, in characters (Pusher: 200).
    pub max_event_name_chars: usize,
    /// Largest event `data`, in bytes of its string form (Pusher: 10 KB). REST triggers
    /// over it get 413; client events over it get a `pusher:error`.
    pub max_event_data_bytes: usize,
    /// Largest client → server WebSocket frame, in bytes, checked before the frame is parsed.
    /// Twice the data limit plus 4 KiB: a client event whose data is sent as a JSON string
    /// has every quote escaped, and the envelope, `auth` and `channel_data` need room too.
    pub max_frame_bytes: usize,
    /// Most channels one socket may be subscribed to at once.
    pub max_channels_per_socket: usize,
    /// Most channels one REST trigger may name (Pusher: 100).
    pub max_channels_per_trigger: usize,
    /// Most events one `batch_events` request may carry (Pusher: 10).
    pub max_batch_events: usize,
    /// Most members a presence channel may hold (Pusher: 100).
    pub max_presence_members: usize,
    /// Largest presence `user_info`, in bytes of its JSON form (Pusher: 1 KB).
    pub max_user_info_bytes: usize,
    /// Client events a connection may send per second (Pusher: 10); the excess is refused
    /// with error 4301.
    pub client_events_per_second: u32,
    /// Seconds of silence after which a client should ping, sent in
    /// `pusher:connection_established` (Pusher: 120).
    pub activity_timeout_s: u32,
    /// Seconds the server waits for a `pusher:pong` before closing with 4201 (Pusher
    /// recommends 30).
    pub pong_timeout_s: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_channel_name_chars: 164,
            max_event_name_chars: 200,
            max_event_data_bytes: 10 * 1024,
            max_frame_bytes: 2 * 10 * 1024 + 4096,
            max_channels_per_socket: 100,
            max_channels_per_trigger: 100,
            max_batch_events: 10,
            max_presence_members: 100,
            max_user_info_bytes: 1024,
            client_events_per_second: 10,
            activity_timeout_s: 120,
            pong_timeout_s: 30,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_pushers_published_limits() {
        let l = Limits::default();
        assert_eq!(l.max_channel_name_chars, 164);
        assert_eq!(l.max_event_name_chars, 200);
        assert_eq!(l.max_event_data_bytes, 10240);
        assert_eq!(l.max_frame_bytes, 24576);
        assert_eq!(l.max_channels_per_socket, 100);
        assert_eq!(l.max_channels_per_trigger, 100);
        assert_eq!(l.max_batch_events, 10);
        assert_eq!(l.max_presence_members, 100);
        assert_eq!(l.max_user_info_bytes, 1024);
        assert_eq!(l.client_events_per_second, 10);
        assert_eq!(l.activity_timeout_s, 120);
        assert_eq!(l.pong_timeout_s, 30);
    }
}
