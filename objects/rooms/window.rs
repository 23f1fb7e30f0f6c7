//! A Room's batch window (`ROOM_BATCH_WINDOW_MS`, off by default).
//!
//! Each socket send costs the runtime about the same whatever it carries, so with the window
//! on, the messages a socket would receive within it leave together as one `batch` frame
//! (`docs/PROTOCOL.md`). The first message opens a batch: the room's subscribers at that
//! moment become its receivers and a timer closes the window. Anything else the room sends —
//! a welcome, presence, an error, a close — first sends the open batch, so every socket still
//! sees frames in the room's order and a joiner never gets a message its welcome already
//! counted. Acknowledgements of batched messages wait for the batch (a sender always gets its
//! own message before the ack).
//!
//! The window's messages are also stored together ([`crate::rooms::write_behind::WriteBehind`]): their
//! writes are held and applied just before the batch is sent, in one storage commit, and the
//! runtime's output gate holds the batch and the acks until that commit is durable. A message
//! lost in a crash before its window closed was never delivered nor acknowledged, so its
//! sender retries it (with its id, de-duplicated as always).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use worker::{State, WebSocket};

use crate::objects::rooms::store::SqlStore;
use crate::objects::socket::{send_js, to_js};
use crate::rooms::protocol::{encode_batch, Encoded, Encoding, ServerFrame};
use crate::rooms::store::Store;
use crate::rooms::write_behind::{PendingWrites, WriteBehind};

/// Receivers of one encoding and the messages encoded for them.
type Group = (Encoding, Vec<WebSocket>, Vec<Encoded>);

#[derive(Default)]
struct Pending {
    /// A held write failed: the room must reload its state from storage.
    failed: bool,
    /// Bumped by every flush, so the timer of an earlier batch leaves a newer one alone.
    generation: u64,
    /// Messages in the open batch (0: no batch is open).
    count: usize,
    /// Per encoding in use: the receivers and the messages.
    groups: Vec<Group>,
    /// Frames that must follow the batch: acknowledgements of its messages.
    after: Vec<(WebSocket, Encoded)>,
}

/// A room's open batch, shared with the timer that closes its window.
#[derive(Clone, Default)]
pub struct Batch(Rc<RefCell<Pending>>, Rc<RefCell<PendingWrites>>);

impl Batch {
    /// Whether a batch is open (its window has not closed yet).
    pub fn is_open(&self) -> bool {
        self.0.borrow().count > 0
    }

    /// The store the room core uses while the window is on: writes are held for the batch.
    pub fn store(&self, inner: SqlStore) -> WriteBehind<'_, SqlStore> {
        WriteBehind::new(&self.1, inner)
    }

    /// Applies the held writes now (before an answer that promises durability, such as the
    /// HTTP broadcast's offset, or before reading storage directly); the frames stay held.
    pub fn flush_writes(&self, store: &mut dyn Store) {
        if let Err(e) = self.1.borrow_mut().apply(store) {
            self.failed(&e);
        }
    }

    /// Adds a message. When it opens a batch, `receivers` gives the audience (sockets per
    /// encoding) and a timer is armed to send the batch `window_ms` later; a batch of `max`
    /// messages leaves at once.
    pub fn push(
        &self,
        state: &State,
        store: &SqlStore,
        frame: &ServerFrame,
        window_ms: u64,
        max: usize,
        receivers: impl FnOnce() -> Vec<(Encoding, Vec<WebSocket>)>,
    ) {
        let (opened, full, generation) = {
            let mut p = self.0.borrow_mut();
            let opened = p.count == 0;
            if opened {
                p.groups = receivers()
                    .into_iter()
                    .filter(|(_, sockets)| !sockets.is_empty())
                    .map(|(enc, sockets)| (enc, sockets, Vec::new()))
                    .collect();
            }
            for (enc, _, messages) in p.groups.iter_mut() {
                messages.push(frame.encode(*enc));
            }
            p.count += 1;
            (opened, p.count >= max, p.generation)
        };
        if full {
            self.flush(&mut store.clone());
        } else if opened {
            let batch = self.clone();
            let mut store = store.clone();
            state.wait_until(async move {
                worker::Delay::from(Duration::from_millis(window_ms)).await;
                if batch.0.borrow().generation == generation {
                    batch.flush(&mut store);
                }
            });
        }
    }

    fn failed(&self, e: &crate::rooms::store::StoreError) {
        self.0.borrow_mut().failed = true;
        worker::console_error!(
            "{}",
            serde_json::json!({"level": "error", "event": "batch_write_failed", "detail": e.to_string()})
        );
    }

    /// Whether held writes failed since the last call: the room's in-memory state is then
    /// ahead of its storage and must be rebuilt from it.
    pub fn take_failed(&self) -> bool {
        std::mem::take(&mut self.0.borrow_mut().failed)
    }

    /// Holds a frame (an acknowledgement) until the open batch has been sent.
    pub fn after(&self, ws: WebSocket, frame: Encoded) {
        self.0.borrow_mut().after.push((ws, frame));
    }

    /// Stores the held writes, then sends the open batch, if any: one frame per receiver (a
    /// lone message as itself, more as a `batch` frame), converted to JS once per encoding;
    /// then the held frames. If the writes fail nothing is sent: those messages are neither
    /// delivered nor acknowledged, and their senders retry.
    pub fn flush(&self, store: &mut dyn Store) {
        let stored = self.1.borrow_mut().apply(store);
        let (groups, after) = {
            let mut p = self.0.borrow_mut();
            if p.count == 0 && p.after.is_empty() {
                return;
            }
            p.generation += 1;
            p.count = 0;
            (std::mem::take(&mut p.groups), std::mem::take(&mut p.after))
        };
        if let Err(e) = stored {
            self.failed(&e);
            return;
        }
        for (enc, receivers, mut messages) in groups {
            let frame = match messages.len() {
                0 => continue,
                1 => messages.pop().expect("one message"),
                _ => encode_batch(enc, &messages),
            };
            let value = to_js(&frame);
            for ws in &receivers {
                // A socket that closed meanwhile is not an error: its close event follows.
                let _ = send_js(ws, &value);
            }
        }
        for (ws, frame) in after {
            let _ = send_js(&ws, &to_js(&frame));
        }
    }
}
