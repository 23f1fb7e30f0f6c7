//! Slow readers: how far behind the room's head each connection says it is.
//!
//! workerd does not implement `WebSocket.bufferedAmount` (cloudflare/workerd#988), so the
//! object cannot see what it has queued for a socket that stopped reading: every message sent
//! to it waits in the runtime's memory. Clients therefore report the last offset they have
//! processed with a `seen` frame, and a connection that has reported at least once and is more
//! than `ROOM_MAX_LAG_MESSAGES` behind when a message is delivered is closed with 4008
//! (`too_slow`) instead of being sent more; it reconnects with `since` and recovers.
//!
//! A connection that never reports is not bounded here. Reports are kept in memory only: after
//! the object wakes from hibernation a connection is unbounded again until its next report.

use std::collections::HashMap;

/// The last offset each reporting connection has processed.
#[derive(Debug, Clone, Default)]
pub struct Lag {
    seen: HashMap<String, u64>,
}

impl Lag {
    /// `conn` has processed everything through `offset`. Reports never go back, and one beyond
    /// the head (`head`, the room's last offset) counts as the head.
    pub fn report(&mut self, conn: &str, offset: u64, head: u64) {
        let offset = offset.min(head);
        let seen = self.seen.entry(conn.to_string()).or_insert(offset);
        *seen = (*seen).max(offset);
    }

    /// The last offset `conn` reported, if it ever did.
    pub fn seen(&self, conn: &str) -> Option<u64> {
        self.seen.get(conn).copied()
    }

    /// The connection closed.
    pub fn forget(&mut self, conn: &str) {
        self.seen.remove(conn);
    }

    /// The reporting connections more than `max` messages behind `head` (none when `max` is 0),
    /// in id order; they are forgotten, since they are about to be closed.
    pub fn too_slow(&mut self, head: u64, max: u64) -> Vec<String> {
        if max == 0 {
            return Vec::new();
        }
        let mut slow: Vec<String> = self
            .seen
            .iter()
            .filter(|(_, &seen)| head.saturating_sub(seen) > max)
            .map(|(c, _)| c.clone())
            .collect();
        slow.sort();
        for c in &slow {
            self.seen.remove(c);
        }
        slow
    }
}
