//! Counters of the calls the objects (`objects/`) make into the runtime, per isolate: events handled, SQL
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
    /// An internal call to an object (`fetch` on a stub: the router's, a gateway's, a room's).
    Internal,
    /// A room's delivery call to a gateway shard (`GatewayDeliver`).
    ShardDelivery,
    /// A frame carried by one of those calls (frames per call: how much one call batches).
    ShardFrame,
}

/// The counters' names, in [`Call`] order (as `snapshot` reports them).
pub const NAMES: [&str; 10] = [
    "events",
    "statements",
    "sends",
    "to_js",
    "attachment_reads",
    "attachment_writes",
    "background",
    "internal_calls",
    "shard_calls",
    "shard_frames",
];

thread_local! {
    static COUNTS: [Cell<u64>; 10] = const { [const { Cell::new(0) }; 10] };
}

/// Counts one call.
pub fn note(call: Call) {
    note_n(call, 1);
}

/// Counts `n` of a kind at once.
pub fn note_n(call: Call, n: u64) {
    COUNTS.with(|c| {
        let slot = &c[call as usize];
        slot.set(slot.get() + n);
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
