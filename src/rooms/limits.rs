//! A room's limits: every one a setting (`ROOM_*`, the README's configuration table), with
//! the defaults of [`RoomLimits::default`].

use serde::{Deserialize, Serialize};

use crate::coordination::limiter::Policy;

/// Per-room limits. Each is a setting (see the README's configuration table) with the default
/// given by [`RoomLimits::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomLimits {
    /// Largest accepted frame, in bytes (checked before parsing). Default 16 KiB.
    pub max_frame_bytes: usize,
    /// Largest message body as compact JSON, in bytes. Default 8 KiB.
    pub max_body_bytes: usize,
    /// Longest display name, in characters. Default 32.
    pub max_name_chars: usize,
    /// Largest member metadata as compact JSON, in bytes. Default 256.
    pub max_meta_bytes: usize,
    /// Most distinct members (users) in a room. Default 1000.
    pub max_members: usize,
    /// Most open connections to a room. Default 2000.
    pub max_connections: usize,
    /// History kept, by count. Default 1000.
    pub history_max_messages: u64,
    /// History kept, by age in ms. Default 24 h.
    pub history_max_age_ms: u64,
    /// How long a client message id is remembered for de-duplication, in ms. Default 10 min.
    pub dedupe_window_ms: u64,
    /// Publishes per second allowed on one connection (sustained). Default 20.
    pub publish_rate: u32,
    /// Publishes allowed at once on one connection. Default 40.
    pub publish_burst: u32,
    /// Publishes per second allowed across all of one user's connections (sustained); 0 turns
    /// the per-user ceiling off. Anonymous connections are each their own user. Default 40.
    pub publish_user_rate: u32,
    /// Publishes allowed at once across one user's connections. Default 80.
    pub publish_user_burst: u32,
    /// Publishes per second allowed into the room from everyone, sockets and HTTP broadcasts
    /// together (sustained); 0 turns the room ceiling off. Default 1000.
    pub publish_room_rate: u32,
    /// Publishes allowed at once into the room. Default 2000.
    pub publish_room_burst: u32,
    /// How many messages a connection that reports what it has processed (`seen`) may fall
    /// behind the head before it is closed with 4008 instead of being sent more; 0 turns the
    /// bound off. Default 1000.
    pub max_lag_messages: u64,
    /// Refused frames in a row after which the connection is closed with 4500. Default 20.
    pub max_strikes: u32,
    /// Batch window in ms: messages a socket would receive within it are coalesced into one
    /// `batch` frame. 0 (the default) sends every message in its own frame.
    pub batch_window_ms: u64,
    /// Most messages in one batch frame; a full batch is sent at once. Default 64.
    pub batch_max_messages: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 16 * 1024,
            max_body_bytes: 8 * 1024,
            max_name_chars: 32,
            max_meta_bytes: 256,
            max_members: 1000,
            max_connections: 2000,
            history_max_messages: 1000,
            history_max_age_ms: 24 * 3600 * 1000,
            dedupe_window_ms: 10 * 60 * 1000,
            publish_rate: 20,
            publish_burst: 40,
            publish_user_rate: 40,
            publish_user_burst: 80,
            publish_room_rate: 1000,
            publish_room_burst: 2000,
            max_lag_messages: 1000,
            max_strikes: 20,
            batch_window_ms: 0,
            batch_max_messages: 64,
        }
    }
}

impl RoomLimits {
    pub(crate) fn publish_policy(&self) -> Policy {
        Policy::new(self.publish_rate.max(1), 1000, self.publish_burst.max(1))
            .unwrap_or_else(|_| Policy::new(20, 1000, 40).expect("default policy is valid"))
    }
}
