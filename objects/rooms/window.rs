//! The Room object's side of its batch window: the decisions are the core's
//! ([`crate::rooms::window::Window`]); here a timer closes the window, the held writes are
//! stored and the frames are sent.
//!
//! The window's messages are also stored together ([`crate::rooms::write_behind::WriteBehind`]): their
//! writes are held and applied just before the batch is sent, in one storage commit, and the
//! runtime's output gate holds the batch and the acks until that commit is durable. A message
//! lost in a crash before its window closed was never delivered nor acknowledged, so its
//! sender retries it (with its id, de-duplicated as always).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use worker::{State, WebSocket};

use crate::objects::rooms::store::SqlStore;
use crate::objects::socket::{send_js, to_js};
use crate::rooms::protocol::{Encoded, Encoding, ServerFrame};
use crate::rooms::store::Store;
use crate::rooms::window::{Pushed, Window};
use crate::rooms::write_behind::{PendingWrites, WriteBehind};

/// A room's open batch, shared with the timer that closes its window.
#[derive(Clone, Default)]
pub struct Batch {
    window: Rc<RefCell<Window<WebSocket>>>,
    writes: Rc<RefCell<PendingWrites>>,
    /// A held write failed: the room must reload its state from storage.
    failed: Rc<Cell<bool>>,
}

impl Batch {
    /// Whether a batch is open (its window has not closed yet).
    pub fn is_open(&self) -> bool {
        self.window.borrow().is_open()
    }

    /// The store the room core uses while the window is on: writes are held for the batch.
    pub fn store(&self, inner: SqlStore) -> WriteBehind<'_, SqlStore> {
        WriteBehind::new(&self.writes, inner)
    }

    /// Applies the held writes now (before an answer that promises durability, such as the
    /// HTTP broadcast's offset, or before reading storage directly); the frames stay held.
    pub fn flush_writes(&self, store: &mut dyn Store) {
        if let Err(e) = self.writes.borrow_mut().apply(store) {
            self.failed(&e);
        }
    }

    /// Adds a message (see [`Window::push`]); when it opens a batch, a timer sends the batch
    /// `window_ms` later, and a full batch leaves at once.
    pub fn push(
        &self,
        state: &State,
        store: &SqlStore,
        frame: &ServerFrame,
        window_ms: u64,
        max: usize,
        receivers: impl FnOnce() -> Vec<(Encoding, Vec<WebSocket>)>,
    ) {
        let pushed = self.window.borrow_mut().push(frame, max, receivers);
        match pushed {
            Pushed::Full => self.flush(&mut store.clone()),
            Pushed::Opened { generation } => {
                let batch = self.clone();
                let mut store = store.clone();
                state.wait_until(async move {
                    worker::Delay::from(Duration::from_millis(window_ms)).await;
                    if batch.window.borrow().is_current(generation) {
                        batch.flush(&mut store);
                    }
                });
            }
            Pushed::Added => {}
        }
    }

    fn failed(&self, e: &crate::rooms::store::StoreError) {
        self.failed.set(true);
        worker::console_error!(
            "{}",
            serde_json::json!({"level": "error", "event": "batch_write_failed", "detail": e.to_string()})
        );
    }

    /// Whether held writes failed since the last call: the room's in-memory state is then
    /// ahead of its storage and must be rebuilt from it.
    pub fn take_failed(&self) -> bool {
        self.failed.replace(false)
    }

    /// Holds a frame (an acknowledgement) until the open batch has been sent.
    pub fn after(&self, ws: WebSocket, frame: Encoded) {
        self.window.borrow_mut().hold(ws, frame);
    }

    /// Stores the held writes, then sends the open batch, if any, converted to JS once per
    /// frame; then the held frames. If the writes fail nothing is sent: those messages are
    /// neither delivered nor acknowledged, and their senders retry.
    pub fn flush(&self, store: &mut dyn Store) {
        let stored = self.writes.borrow_mut().apply(store);
        let Some(flush) = self.window.borrow_mut().take() else {
            return;
        };
        if let Err(e) = stored {
            self.failed(&e);
            return;
        }
        for (frame, receivers) in flush.frames {
            let value = to_js(&frame);
            for ws in &receivers {
                // A socket that closed meanwhile is not an error: its close event follows.
                let _ = send_js(ws, &value);
            }
        }
        for (ws, frame) in flush.after {
            let _ = send_js(&ws, &to_js(&frame));
        }
    }
}
