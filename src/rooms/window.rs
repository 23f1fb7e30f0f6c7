//! A room's batch window (`ROOM_BATCH_WINDOW_MS`, off by default): which frames leave
//! together, and when.
//!
//! Each socket send costs the runtime about the same whatever it carries, so with the window
//! on, the messages a socket would receive within it leave together as one `batch` frame
//! (`docs/PROTOCOL.md`). The first message opens a batch: the room's subscribers at that
//! moment become its receivers (grouped by encoding) and the glue arms a timer for the
//! window. A batch of `ROOM_BATCH_MAX_MESSAGES` leaves at once. Anything else the room sends —
//! a welcome, presence, an error, a close — first sends the open batch, so every socket still
//! sees frames in the room's order and a joiner never gets a message its welcome already
//! counted. Acknowledgements of batched messages wait for the batch ([`Window::hold`]): a
//! sender always gets its own message before the ack.
//!
//! [`Window`] is generic over what a receiver is (a socket in the object, anything in tests);
//! the glue (`objects/rooms/window.rs`) only arms timers, stores the held writes
//! ([`super::write_behind`]) and sends what [`Window::take`] hands back.

use super::protocol::{encode_batch, Encoded, Encoding, ServerFrame};

/// Receivers of one encoding and the messages encoded for them.
type Group<R> = (Encoding, Vec<R>, Vec<Encoded>);

/// What adding a message did to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// It opened a batch: close it after the window unless batch `generation` is gone by
    /// then ([`Window::is_current`]).
    Opened {
        /// The new batch's generation.
        generation: u64,
    },
    /// It joined the open batch.
    Added,
    /// The batch is full: send it now.
    Full,
}

/// What leaves when a batch closes: one frame per group (a lone message as itself, more as
/// one `batch` frame) to each of its receivers, then the held frames.
#[derive(Debug)]
pub struct Flush<R> {
    /// Each frame with its receivers.
    pub frames: Vec<(Encoded, Vec<R>)>,
    /// Frames held until the batch was sent, with their receivers.
    pub after: Vec<(R, Encoded)>,
}

/// The open batch, if any.
#[derive(Debug)]
pub struct Window<R> {
    /// Bumped by every [`Window::take`], so the timer of an earlier batch leaves a newer one
    /// alone.
    generation: u64,
    /// Messages in the open batch (0: no batch is open).
    count: usize,
    groups: Vec<Group<R>>,
    after: Vec<(R, Encoded)>,
}

impl<R> Default for Window<R> {
    fn default() -> Self {
        Self {
            generation: 0,
            count: 0,
            groups: Vec::new(),
            after: Vec::new(),
        }
    }
}

impl<R> Window<R> {
    /// Whether a batch is open.
    pub fn is_open(&self) -> bool {
        self.count > 0
    }

    /// Whether batch `generation` is still the open one (its timer should close it).
    pub fn is_current(&self, generation: u64) -> bool {
        self.generation == generation && self.is_open()
    }

    /// Adds a message. When it opens a batch, `receivers` gives the audience at this moment
    /// (receivers per encoding); a batch of `max` messages is [`Pushed::Full`].
    pub fn push(
        &mut self,
        frame: &ServerFrame,
        max: usize,
        receivers: impl FnOnce() -> Vec<(Encoding, Vec<R>)>,
    ) -> Pushed {
        let opened = self.count == 0;
        if opened {
            self.groups = receivers()
                .into_iter()
                .filter(|(_, rs)| !rs.is_empty())
                .map(|(enc, rs)| (enc, rs, Vec::new()))
                .collect();
        }
        for (enc, _, messages) in self.groups.iter_mut() {
            messages.push(frame.encode(*enc));
        }
        self.count += 1;
        if self.count >= max {
            Pushed::Full
        } else if opened {
            Pushed::Opened {
                generation: self.generation,
            }
        } else {
            Pushed::Added
        }
    }

    /// Holds a frame (an acknowledgement) until the open batch has been sent.
    pub fn hold(&mut self, receiver: R, frame: Encoded) {
        self.after.push((receiver, frame));
    }

    /// Closes the open batch: what to send, or `None` if nothing is open or held.
    pub fn take(&mut self) -> Option<Flush<R>> {
        if self.count == 0 && self.after.is_empty() {
            return None;
        }
        self.generation += 1;
        self.count = 0;
        let frames = std::mem::take(&mut self.groups)
            .into_iter()
            .filter_map(|(enc, receivers, mut messages)| {
                let frame = match messages.len() {
                    0 => return None,
                    1 => messages.pop()?,
                    _ => encode_batch(enc, &messages),
                };
                Some((frame, receivers))
            })
            .collect();
        Some(Flush {
            frames,
            after: std::mem::take(&mut self.after),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::protocol::{MemberInfo, Message};
    use serde_json::json;

    fn message(offset: u64) -> ServerFrame {
        ServerFrame::Message(Message {
            offset,
            ts: 1,
            from: MemberInfo {
                id: "u".into(),
                name: "U".into(),
                meta: None,
                conns: 0,
            },
            body: json!({ "n": offset }),
        })
    }

    fn text(e: &Encoded) -> String {
        match e {
            Encoded::Text(t) => t.clone(),
            Encoded::Binary(_) => panic!("binary"),
        }
    }

    #[test]
    fn the_first_message_opens_and_the_audience_is_fixed_then() {
        let mut w: Window<&str> = Window::default();
        assert!(!w.is_open());
        let p = w.push(&message(1), 8, || vec![(Encoding::Json, vec!["a", "b"])]);
        assert_eq!(p, Pushed::Opened { generation: 0 });
        assert!(w.is_open() && w.is_current(0));
        // Later messages keep the audience of the first one.
        let p = w.push(&message(2), 8, || panic!("audience read again"));
        assert_eq!(p, Pushed::Added);
        let f = w.take().unwrap();
        assert_eq!(f.frames.len(), 1);
        assert_eq!(f.frames[0].1, vec!["a", "b"]);
        let batch: serde_json::Value = serde_json::from_str(&text(&f.frames[0].0)).unwrap();
        assert_eq!(batch["type"], "batch");
        assert_eq!(batch["messages"].as_array().unwrap().len(), 2);
        // The old timer no longer closes anything.
        assert!(!w.is_current(0));
        assert!(w.take().is_none());
    }

    #[test]
    fn a_lone_message_leaves_as_itself_and_a_full_batch_at_once() {
        let mut w: Window<u8> = Window::default();
        w.push(&message(1), 2, || vec![(Encoding::Json, vec![1])]);
        let f = w.take().unwrap();
        let lone: serde_json::Value = serde_json::from_str(&text(&f.frames[0].0)).unwrap();
        assert_eq!(lone["type"], "message");
        w.push(&message(2), 2, || vec![(Encoding::Json, vec![1])]);
        assert_eq!(
            w.push(&message(3), 2, || vec![(Encoding::Json, vec![1])]),
            Pushed::Full
        );
    }

    #[test]
    fn held_frames_follow_the_batch_and_empty_groups_are_dropped() {
        let mut w: Window<u8> = Window::default();
        w.push(&message(1), 8, || {
            vec![(Encoding::Json, vec![1]), (Encoding::Msgpack, vec![])]
        });
        w.hold(1, Encoded::Text("ack".into()));
        let f = w.take().unwrap();
        assert_eq!(f.frames.len(), 1, "the MessagePack group had no receivers");
        assert_eq!(f.after.len(), 1);
        // Held frames alone still flush.
        w.hold(2, Encoded::Text("ack".into()));
        let f = w.take().unwrap();
        assert!(f.frames.is_empty());
        assert_eq!(f.after[0].0, 2);
    }
}
