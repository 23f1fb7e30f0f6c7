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
    /// The room's last offset when each connection joined: its replay is not counted.
    floors: HashMap<String, u64>,
}

impl Lag {
    /// `conn` joined when the room's last offset was `offset`: a report below it counts as it
    /// (what was replayed on joining, or a fresh client's 0, is not lag).
    pub fn joined(&mut self, conn: &str, offset: u64) {
        self.floors.insert(conn.to_string(), offset);
    }

    /// `conn` has processed everything through `offset`. Reports never go back, and one beyond
    /// the head (`head`, the room's last offset) counts as the head.
    pub fn report(&mut self, conn: &str, offset: u64, head: u64) {
        let floor = self.floors.get(conn).copied().unwrap_or(0);
        let offset = offset.max(floor).min(head);
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
        self.floors.remove(conn);
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
            self.forget(c);
        }
        slow
    }
}

/// A protocol v2 socket's reads across its rooms, as its gateway shard sees them.
#[derive(Debug, Clone, Default)]
struct SocketReads {
    /// Room → (the last offset reported, the last offset handed on to the socket).
    rooms: HashMap<String, (u64, u64)>,
    /// Σ (handed − reported) over `rooms`: what the socket holds unread by its own word.
    behind: u64,
}

/// Slow readers among a gateway shard's protocol v2 sockets. A socket is one stream whatever
/// rooms it is in, so what is bounded is its lag summed over the rooms it reported for: when a
/// delivery would take that sum past `ROOM_MAX_LAG_MESSAGES`, the socket is closed with 4008
/// instead of being handed the delivery. Rooms a socket never reported for are not counted.
#[derive(Debug, Clone, Default)]
pub struct MuxLag {
    sockets: HashMap<String, SocketReads>,
    /// Room → the sockets that reported for it.
    rooms: HashMap<String, std::collections::BTreeSet<String>>,
}

impl MuxLag {
    /// `socket` has processed `room` through `offset`, having joined it at `start` and been
    /// handed it through `handed`. Reports never go back, one below `start` counts as `start`
    /// (the replay on joining is not lag) and one beyond `handed` as `handed`.
    pub fn report(&mut self, socket: &str, room: &str, offset: u64, (start, handed): (u64, u64)) {
        let offset = offset.max(start);
        let reads = self.sockets.entry(socket.to_string()).or_default();
        match reads.rooms.get_mut(room) {
            Some((seen, had)) => {
                let read = offset.min(*had);
                if read > *seen {
                    reads.behind -= read - *seen;
                    *seen = read;
                }
            }
            None => {
                let seen = offset.min(handed);
                reads.behind += handed - seen;
                reads.rooms.insert(room.to_string(), (seen, handed));
            }
        }
        self.rooms
            .entry(room.to_string())
            .or_default()
            .insert(socket.to_string());
    }

    /// How far `socket` is behind by its own reports, summed over its rooms.
    pub fn behind(&self, socket: &str) -> u64 {
        self.sockets.get(socket).map_or(0, |r| r.behind)
    }

    /// `room` is about to be handed on through `head`: the reporting sockets that would then
    /// be more than `max` messages behind (none when `max` is 0), in id order. They are
    /// forgotten, since they are about to be closed; the others' reads move to `head`.
    pub fn advance(&mut self, room: &str, head: u64, max: u64) -> Vec<String> {
        let Some(sockets) = self.rooms.get(room) else {
            return Vec::new();
        };
        let mut slow = Vec::new();
        for s in sockets {
            let Some(reads) = self.sockets.get_mut(s) else {
                continue;
            };
            if let Some((_, had)) = reads.rooms.get_mut(room) {
                if head > *had {
                    reads.behind += head - *had;
                    *had = head;
                }
            }
            if max > 0 && reads.behind > max {
                slow.push(s.clone());
            }
        }
        for s in &slow {
            self.forget(s);
        }
        slow
    }

    /// The socket left `room`.
    pub fn forget_room(&mut self, socket: &str, room: &str) {
        if let Some(reads) = self.sockets.get_mut(socket) {
            if let Some((seen, had)) = reads.rooms.remove(room) {
                reads.behind -= had.saturating_sub(seen);
            }
            if reads.rooms.is_empty() {
                self.sockets.remove(socket);
            }
        }
        self.leave(socket, room);
    }

    /// The socket closed.
    pub fn forget(&mut self, socket: &str) {
        if let Some(reads) = self.sockets.remove(socket) {
            for room in reads.rooms.keys() {
                self.leave(socket, room);
            }
        }
    }

    fn leave(&mut self, socket: &str, room: &str) {
        if let Some(set) = self.rooms.get_mut(room) {
            set.remove(socket);
            if set.is_empty() {
                self.rooms.remove(room);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_reader_is_closed_past_the_bound_by_its_own_report() {
        let mut lag = Lag::default();
        assert!(lag.too_slow(100, 3).is_empty(), "never reported: unbounded");
        lag.report("a", 10, 10);
        lag.report("a", 5, 10);
        assert_eq!(lag.seen("a"), Some(10), "reports never go back");
        lag.report("b", 99, 12);
        assert_eq!(
            lag.seen("b"),
            Some(12),
            "a report past the head is the head"
        );
        assert!(lag.too_slow(13, 3).is_empty());
        assert_eq!(lag.too_slow(14, 3), vec!["a".to_string()]);
        assert_eq!(lag.seen("a"), None, "forgotten once closed");
        assert!(lag.too_slow(1000, 0).is_empty(), "0 turns it off");
        lag.joined("c", 500);
        lag.report("c", 0, 600);
        assert_eq!(
            lag.seen("c"),
            Some(500),
            "what came before the join is not lag"
        );
    }

    #[test]
    fn a_sockets_lag_is_summed_over_the_rooms_it_reported_for() {
        let mut lag = MuxLag::default();
        lag.report("s", "a", 10, (0, 10));
        lag.report("s", "b", 3, (0, 5));
        assert_eq!(lag.behind("s"), 2);
        assert!(lag.advance("a", 12, 4).is_empty(), "2 + 2 is not past 4");
        assert_eq!(lag.behind("s"), 4);
        assert!(
            lag.advance("c", 1000, 4).is_empty(),
            "unreported rooms do not count"
        );
        assert_eq!(lag.advance("b", 6, 4), vec!["s".to_string()]);
        assert_eq!(lag.behind("s"), 0, "forgotten once closed");
        assert!(lag.advance("a", 100, 4).is_empty());
    }

    #[test]
    fn reports_never_go_back_nor_past_what_was_handed() {
        let mut lag = MuxLag::default();
        lag.report("s", "a", 7, (0, 10));
        assert_eq!(lag.behind("s"), 3);
        lag.report("s", "a", 2, (0, 10));
        assert_eq!(lag.behind("s"), 3, "a report never goes back");
        lag.report("s", "a", 50, (0, 10));
        assert_eq!(
            lag.behind("s"),
            0,
            "a report past what was handed counts as it"
        );
        assert!(
            lag.advance("a", 9, 1).is_empty(),
            "an older head moves nothing"
        );
        assert_eq!(lag.behind("s"), 0);
        lag.report("t", "a", 0, (40, 45));
        assert_eq!(
            lag.behind("t"),
            5,
            "what came before the subscribe is not lag"
        );
    }

    #[test]
    fn leaving_a_room_drops_its_share_and_zero_turns_it_off() {
        let mut lag = MuxLag::default();
        lag.report("s", "a", 0, (0, 5));
        lag.report("s", "b", 0, (0, 5));
        lag.report("t", "a", 0, (0, 0));
        assert_eq!(lag.behind("s"), 10);
        lag.forget_room("s", "a");
        assert_eq!(lag.behind("s"), 5);
        assert!(lag.advance("a", 1000, 0).is_empty(), "0 turns it off");
        assert_eq!(lag.behind("t"), 1000);
        assert_eq!(lag.behind("s"), 5, "s left a: not moved by it");
        lag.forget("t");
        assert!(lag.advance("a", 2000, 1).is_empty());
    }
}
