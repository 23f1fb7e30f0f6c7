//! Counters of the calls the objects make into the runtime, per isolate: events handled, SQL
//! statements, socket sends, frames converted to JS values, attachment reads and writes, and
//! background tasks. Each is one `Cell` increment. A Room reports them with its figures
//! (`GET /api/rooms/:room`, `"calls"`), and the bench divides their change over a run by the
//! run's messages: what one message costs in crossings, beside its CPU (`BENCHMARKS.md`).
//!
//! They count the isolate, not one object: every object of the Worker that runs in this
//! isolate adds to them, so a per-message figure is only meaningful while one room is busy.

use std::cell::Cell;

/// What is counted.
#[derive(Debug, Clone, Copy)]
pub enum Call {
    /// A socket message, request or alarm handled by a Room.
    Event,
    /// A SQL statement executed (`sql.exec`).
    Statement,
    /// A frame handed to a socket's `send`.
    Send,
    /// A frame converted into a JS value (once per frame, not per receiver).
    ToJs,
    /// A socket attachment read (`deserializeAttachment`).
    AttachmentRead,
    /// A socket attachment written (`serializeAttachment`).
    AttachmentWrite,
    /// A background task started (`waitUntil`).
    Background,
}

const NAMES: [&str; 7] = [
    "events",
    "statements",
    "sends",
    "to_js",
    "attachment_reads",
    "attachment_writes",
    "background",
];

thread_local! {
    static COUNTS: [Cell<u64>; 7] = const { [const { Cell::new(0) }; 7] };
}

/// Counts one call.
pub fn note(call: Call) {
    COUNTS.with(|c| {
        let slot = &c[call as usize];
        slot.set(slot.get() + 1);
    });
}

/// The counts so far, by name.
pub fn snapshot() -> serde_json::Value {
    COUNTS.with(|c| {
        let map: serde_json::Map<String, serde_json::Value> = NAMES
            .iter()
            .zip(c.iter())
            .map(|(n, v)| (n.to_string(), v.get().into()))
            .collect();
        map.into()
    })
}
