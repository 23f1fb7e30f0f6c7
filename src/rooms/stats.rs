//! Per-room figures: what one room has taken in, stored, delivered and refused.
//!
//! A Room object counts as it works ([`RoomStats::record`]), answers them in
//! `GET /api/rooms/:room` (`stats`), and saves them in its own storage at most once per
//! [`FLUSH_MS`] ([`RoomStats::save_due_in`], [`RoomStats::take_save`]): with the first event
//! a second after the last save, or by a one-shot timer armed for the rest of that second, so a
//! busy room writes one statement a second for its figures instead of one per message. A
//! pending timer keeps the object from hibernating, so the figures survive hibernation and
//! eviction exactly; a crash loses at most the last second of them (never a message). What it has
//! counted since it last reported to the service-wide Metrics object is sent there at most once
//! per [`FLUSH_MS`], at the next event ([`RoomStats::take_deltas`]): one call per busy room per
//! second instead of one per message, and no timer of its own. The saved figures include what
//! was already reported, so counts not yet reported when the object was evicted are reported
//! after it wakes, not lost.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::{
    Delta, ROOM_BYTES_IN as BYTES_IN, ROOM_DELIVERIES as DELIVERIES, ROOM_DUPLICATES as DUPLICATES,
    ROOM_MESSAGES as MESSAGES, ROOM_REFUSALS as REFUSALS,
};
use crate::rooms::protocol::ServerFrame;
use crate::rooms::room::{Audience, Effect};

/// How often, at most, a busy room saves its figures and sends them to the Metrics object.
pub const FLUSH_MS: u64 = 1_000;

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

impl<'a> Event<'a> {
    /// What an effect of the room core counts as, if anything. `receivers` gives the size
    /// of a broadcast's audience (who, and which connection is left out).
    pub fn of_effect(
        effect: &'a Effect,
        receivers: impl FnOnce(Audience, Option<&str>) -> usize,
    ) -> Option<Self> {
        match effect {
            Effect::Broadcast {
                frame: ServerFrame::Message(_),
                to,
                except,
            } => Some(Event::Message {
                receivers: receivers(*to, except.as_deref()),
            }),
            Effect::Send { frame, .. } => match frame {
                ServerFrame::Ack {
                    duplicate: true, ..
                } => Some(Event::Duplicate),
                ServerFrame::Error { code, .. } => Some(Event::Refused(code)),
                ServerFrame::Welcome {
                    recovered: Some(r), ..
                } => Some(Event::Rejoin(*r)),
                _ => None,
            },
            _ => None,
        }
    }
}

/// What a room saves: its totals and the part of them already reported to the Metrics object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// Everything counted.
    pub total: Counts,
    /// The totals as last reported to the Metrics object.
    #[serde(default)]
    pub reported: Counts,
}

/// A room's figures in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomStats {
    saved: Saved,
    /// When the figures were last reported (ms since the Unix epoch).
    reported_ms: u64,
    /// Changed since last saved.
    changed: bool,
    /// When the figures were last saved (ms since the Unix epoch; `None`: not in this lifetime).
    saved_ms: Option<u64>,
}

impl RoomStats {
    /// Figures loaded from storage (`None`: a room without saved figures).
    pub fn load(saved: Option<Saved>, now_ms: u64) -> Self {
        Self {
            saved: saved.unwrap_or_default(),
            reported_ms: now_ms,
            changed: false,
            saved_ms: None,
        }
    }

    /// Everything counted.
    pub fn total(&self) -> &Counts {
        &self.saved.total
    }

    /// Counts one event.
    pub fn record(&mut self, event: Event<'_>) {
        self.saved.total.record(event);
        self.changed = true;
    }

    /// The figures to save, if they changed since the last save (saved at `now_ms`).
    pub fn take_save(&mut self, now_ms: u64) -> Option<Saved> {
        let changed = std::mem::take(&mut self.changed);
        if changed {
            self.saved_ms = Some(now_ms);
        }
        changed.then(|| self.saved.clone())
    }

    /// When the figures must be saved: `None` if they did not change, else in how many ms
    /// (0: now, the last save being at least [`FLUSH_MS`] old).
    pub fn save_due_in(&self, now_ms: u64) -> Option<u64> {
        self.changed.then(|| {
            self.saved_ms
                .map_or(0, |t| (t + FLUSH_MS).saturating_sub(now_ms))
        })
    }

    /// What was counted since the last report, as Metrics deltas, if there is any and the last
    /// report is at least [`FLUSH_MS`] old. The room metrics carry no room label, so the
    /// service-wide exposition stays bounded however many rooms there are. Reporting changes
    /// what must be saved.
    pub fn take_deltas(&mut self, now_ms: u64) -> Option<Vec<Delta>> {
        let (t, r) = (&self.saved.total, &self.saved.reported);
        if t == r || now_ms < self.reported_ms + FLUSH_MS {
            return None;
        }
        let mut deltas = Vec::new();
        let mut add = |name: &str, labels: &[(&str, &str)], n: u64| {
            if n > 0 {
                deltas.push(Delta::new(name, labels, n as i64));
            }
        };
        add(MESSAGES, &[], t.messages.saturating_sub(r.messages));
        add(DUPLICATES, &[], t.duplicates.saturating_sub(r.duplicates));
        add(DELIVERIES, &[], t.deliveries.saturating_sub(r.deliveries));
        add(BYTES_IN, &[], t.bytes_in.saturating_sub(r.bytes_in));
        for (code, n) in &t.refusals {
            let before = r.refusals.get(code).copied().unwrap_or(0);
            add(REFUSALS, &[("code", code)], n.saturating_sub(before));
        }
        self.saved.reported = self.saved.total.clone();
        self.reported_ms = now_ms;
        self.changed = true;
        Some(deltas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effects_map_to_the_events_they_count() {
        let refused = Effect::Send {
            conn: "c".into(),
            frame: ServerFrame::error("rate_limited", "slow down", None),
        };
        assert_eq!(
            Event::of_effect(&refused, |_, _| unreachable!()),
            Some(Event::Refused("rate_limited"))
        );
        let dup = Effect::Send {
            conn: "c".into(),
            frame: ServerFrame::Ack {
                id: "m".into(),
                offset: 3,
                duplicate: true,
            },
        };
        assert_eq!(Event::of_effect(&dup, |_, _| 0), Some(Event::Duplicate));
        let fresh = Effect::Send {
            conn: "c".into(),
            frame: ServerFrame::Ack {
                id: "m".into(),
                offset: 3,
                duplicate: false,
            },
        };
        assert_eq!(Event::of_effect(&fresh, |_, _| 0), None);
        let closing = Effect::AlarmAt(5);
        assert_eq!(Event::of_effect(&closing, |_, _| 0), None);
    }

    #[test]
    fn counts_every_event_and_saves_each_change() {
        let mut s = RoomStats::load(None, 1_000);
        assert_eq!(s.take_save(1_000), None, "nothing changed");
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
        assert_eq!(s.total(), &want);
        assert_eq!(s.take_save(1_000).unwrap().total, want);
        assert_eq!(s.take_save(1_000), None, "saved once per change");
        // Not reported before FLUSH_MS has passed since the last report…
        assert_eq!(s.take_deltas(1_000 + FLUSH_MS - 1), None);
        // …then all of it, once.
        assert_eq!(
            s.take_deltas(1_000 + FLUSH_MS),
            Some(vec![
                Delta::new(MESSAGES, &[], 2),
                Delta::new(DUPLICATES, &[], 1),
                Delta::new(DELIVERIES, &[], 5),
                Delta::new(BYTES_IN, &[], 40),
                Delta::new(REFUSALS, &[("code", "malformed")], 1),
                Delta::new(REFUSALS, &[("code", "rate_limited")], 2),
            ])
        );
        assert_eq!(
            s.take_save(2_000).unwrap().reported,
            want,
            "the report is saved"
        );
        assert_eq!(
            s.take_deltas(10 * FLUSH_MS),
            None,
            "nothing new, nothing sent"
        );
    }

    #[test]
    fn figures_are_saved_at_most_once_a_second() {
        let mut s = RoomStats::load(None, 0);
        assert_eq!(s.save_due_in(10), None, "nothing to save");
        s.record(Event::Message { receivers: 3 });
        assert_eq!(
            s.save_due_in(10),
            Some(0),
            "the first change is saved at once"
        );
        assert!(s.take_save(10).is_some());
        s.record(Event::Message { receivers: 3 });
        assert_eq!(
            s.save_due_in(400),
            Some(FLUSH_MS - 390),
            "then a second after that"
        );
        assert_eq!(s.save_due_in(10 + FLUSH_MS), Some(0));
        let saved = s.take_save(10 + FLUSH_MS).unwrap();
        assert_eq!(saved.total.messages, 2);
        assert_eq!(s.save_due_in(10 + FLUSH_MS), None);
    }

    #[test]
    fn counts_not_yet_reported_when_evicted_are_reported_after_waking() {
        let mut s = RoomStats::load(None, 0);
        s.record(Event::Message { receivers: 10 });
        assert!(s.take_deltas(FLUSH_MS).is_some());
        s.record(Event::Message { receivers: 4 });
        s.record(Event::Refused("too_large"));
        let saved = s.take_save(FLUSH_MS).unwrap();
        // Evicted before reporting the last two events; the object wakes later.
        let mut s = RoomStats::load(Some(saved), 50_000);
        assert_eq!((s.total().messages, s.total().deliveries), (2, 14));
        assert_eq!(
            s.take_deltas(50_000 + FLUSH_MS),
            Some(vec![
                Delta::new(MESSAGES, &[], 1),
                Delta::new(DELIVERIES, &[], 4),
                Delta::new(REFUSALS, &[("code", "too_large")], 1),
            ])
        );
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
