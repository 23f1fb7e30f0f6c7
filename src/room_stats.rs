//! Per-room figures: what one room has taken in, stored, delivered and refused.
//!
//! A Room object counts as it works ([`RoomStats::record`]), answers them in
//! `GET /api/rooms/:room` (`stats`), and saves them in its own storage at most once per
//! [`FLUSH_MS`] (an alarm makes sure the last counts of a burst are saved too), so they
//! survive hibernation, eviction and restarts; a crash loses at most the last [`FLUSH_MS`] of
//! counts. At the same time the room sends what it counted since its last save to the
//! service-wide Metrics object ([`RoomStats::take_deltas`]), one call per room per flush
//! instead of one per message.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::Delta;

/// How often, at most, a busy room saves its figures and sends them to the Metrics object.
pub const FLUSH_MS: u64 = 1_000;

/// Prometheus name: messages stored by rooms (not counting duplicates).
pub const MESSAGES: &str = "roomkeeper_room_messages_total";
/// Prometheus name: retried publishes answered as duplicates.
pub const DUPLICATES: &str = "roomkeeper_room_duplicates_total";
/// Prometheus name: messages sent to subscribers (one per message per receiver).
pub const DELIVERIES: &str = "roomkeeper_room_deliveries_total";
/// Prometheus name: bytes of WebSocket frames rooms received.
pub const BYTES_IN: &str = "roomkeeper_room_bytes_in_total";
/// Prometheus name: frames refused with an error frame, by code.
pub const REFUSALS: &str = "roomkeeper_room_refusals_total";

/// Something a room did that its figures count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A WebSocket frame of this many bytes arrived.
    FrameIn(usize),
    /// A new message was stored and sent to this many receivers.
    Message {
        /// Connections it was sent to.
        receivers: usize,
    },
    /// A publish was a retry of a stored message.
    Duplicate,
    /// A frame was refused with this error code.
    Refused(&'a str),
    /// A rejoin with `since` was answered: `true` recovered, `false` reloaded.
    Rejoin(bool),
    /// A connection was accepted.
    Opened,
    /// A connection closed.
    Closed,
}

/// Counters of one room.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Messages stored (duplicates excluded).
    pub messages: u64,
    /// Publishes answered as duplicates.
    pub duplicates: u64,
    /// Messages sent to receivers: one per message per connection it went to.
    pub deliveries: u64,
    /// Bytes of WebSocket frames received.
    pub bytes_in: u64,
    /// Frames refused with an error frame, by error code.
    pub refusals: BTreeMap<String, u64>,
    /// Rejoins that recovered exactly what was missed.
    pub recovered: u64,
    /// Rejoins told to reload (`recovered: false`).
    pub reloaded: u64,
    /// Connections accepted.
    pub connections_opened: u64,
    /// Connections closed.
    pub connections_closed: u64,
}

impl Counts {
    fn record(&mut self, event: Event<'_>) {
        match event {
            Event::FrameIn(n) => self.bytes_in += n as u64,
            Event::Message { receivers } => {
                self.messages += 1;
                self.deliveries += receivers as u64;
            }
            Event::Duplicate => self.duplicates += 1,
            Event::Refused(code) => *self.refusals.entry(code.to_string()).or_default() += 1,
            Event::Rejoin(true) => self.recovered += 1,
            Event::Rejoin(false) => self.reloaded += 1,
            Event::Opened => self.connections_opened += 1,
            Event::Closed => self.connections_closed += 1,
        }
    }
}

/// A room's figures: the totals (saved) and what was counted since the last flush.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomStats {
    /// Everything counted since the room's first stored figures.
    pub total: Counts,
    /// Counted since the last flush (not yet saved nor sent to the Metrics object).
    pending: Counts,
    /// When the totals were last saved (ms since the Unix epoch).
    saved_ms: u64,
}

impl RoomStats {
    /// Figures loaded from storage (`None`: a room without saved figures).
    pub fn load(saved: Option<Counts>, now_ms: u64) -> Self {
        Self {
            total: saved.unwrap_or_default(),
            pending: Counts::default(),
            saved_ms: now_ms,
        }
    }

    /// Counts one event.
    pub fn record(&mut self, event: Event<'_>) {
        self.total.record(event);
        self.pending.record(event);
    }

    /// Whether anything was counted since the last flush.
    pub fn dirty(&self) -> bool {
        self.pending != Counts::default()
    }

    /// When the pending counts are due to be flushed, if there are any: [`FLUSH_MS`] after
    /// the last save.
    pub fn due_at(&self) -> Option<u64> {
        self.dirty().then_some(self.saved_ms + FLUSH_MS)
    }

    /// Ends the pending period at `now_ms`: returns the totals to save and the counts of the
    /// period as Metrics deltas (labelled with nothing room-specific: the service-wide
    /// exposition stays bounded however many rooms there are).
    pub fn take_deltas(&mut self, now_ms: u64) -> (Counts, Vec<Delta>) {
        let p = std::mem::take(&mut self.pending);
        self.saved_ms = now_ms;
        let mut deltas = Vec::new();
        let mut add = |name: &str, labels: &[(&str, &str)], n: u64| {
            if n > 0 {
                deltas.push(Delta::new(name, labels, n as i64));
            }
        };
        add(MESSAGES, &[], p.messages);
        add(DUPLICATES, &[], p.duplicates);
        add(DELIVERIES, &[], p.deliveries);
        add(BYTES_IN, &[], p.bytes_in);
        for (code, n) in &p.refusals {
            add(REFUSALS, &[("code", code)], *n);
        }
        (self.total.clone(), deltas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_event_in_totals_and_pending() {
        let mut s = RoomStats::load(None, 1_000);
        assert!(!s.dirty());
        assert_eq!(s.due_at(), None);
        s.record(Event::Opened);
        s.record(Event::FrameIn(40));
        s.record(Event::Message { receivers: 3 });
        s.record(Event::Message { receivers: 2 });
        s.record(Event::Duplicate);
        s.record(Event::Refused("rate_limited"));
        s.record(Event::Refused("rate_limited"));
        s.record(Event::Refused("malformed"));
        s.record(Event::Rejoin(true));
        s.record(Event::Rejoin(false));
        s.record(Event::Closed);
        assert_eq!(s.due_at(), Some(1_000 + FLUSH_MS));
        let want = Counts {
            messages: 2,
            duplicates: 1,
            deliveries: 5,
            bytes_in: 40,
            refusals: [("malformed".into(), 1), ("rate_limited".into(), 2)].into(),
            recovered: 1,
            reloaded: 1,
            connections_opened: 1,
            connections_closed: 1,
        };
        assert_eq!(s.total, want);
        let (saved, deltas) = s.take_deltas(1_500);
        assert_eq!(saved, want);
        assert_eq!(
            deltas,
            vec![
                Delta::new(MESSAGES, &[], 2),
                Delta::new(DUPLICATES, &[], 1),
                Delta::new(DELIVERIES, &[], 5),
                Delta::new(BYTES_IN, &[], 40),
                Delta::new(REFUSALS, &[("code", "malformed")], 1),
                Delta::new(REFUSALS, &[("code", "rate_limited")], 2),
            ]
        );
        assert!(!s.dirty());
    }

    #[test]
    fn totals_carry_over_a_reload_and_deltas_only_the_new_period() {
        let mut s = RoomStats::load(None, 0);
        s.record(Event::Message { receivers: 10 });
        let (saved, _) = s.take_deltas(10);
        // The object is evicted and loads its saved figures.
        let mut s = RoomStats::load(Some(saved), 5_000);
        s.record(Event::Message { receivers: 4 });
        assert_eq!(s.due_at(), Some(5_000 + FLUSH_MS));
        let (saved, deltas) = s.take_deltas(5_100);
        assert_eq!((saved.messages, saved.deliveries), (2, 14));
        assert_eq!(
            deltas,
            vec![Delta::new(MESSAGES, &[], 1), Delta::new(DELIVERIES, &[], 4)]
        );
        let (_, none) = s.take_deltas(6_000);
        assert!(none.is_empty(), "nothing new, nothing sent");
    }

    #[test]
    fn saved_counts_round_trip_as_json() {
        let mut c = Counts::default();
        c.record(Event::Refused("too_large"));
        c.record(Event::FrameIn(7));
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Counts>(&text).unwrap(), c);
    }
}
