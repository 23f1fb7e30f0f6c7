//! Write-behind for a room's batch window.
//!
//! With `ROOM_BATCH_WINDOW_MS` on, a room sends the messages of one window together
//! (`objects/batch.rs`). It also *stores* them together: every storage commit costs the same
//! however much it writes (locally it is an fsync on the object's thread), so one commit per
//! window instead of one per message. [`WriteBehind`] is the [`Store`] the room core sees
//! while a window is open: writes go to [`PendingWrites`] in memory, and reads are answered as
//! if they had been written — a de-duplication key is looked up among the held writes first,
//! and any other read (a replay, a history page) first applies the held writes. The glue
//! applies them with [`PendingWrites::apply`] before the batch's frames (and the
//! acknowledgements of its messages) leave, and the runtime's output gate holds those frames
//! until the commit is durable: nothing is delivered or acknowledged before it is stored, as
//! without the window.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::rooms::protocol::Message;
use crate::rooms::store::{Store, StoreError};

/// Writes held until the window closes, in the order the core made them.
#[derive(Debug, Default, Clone)]
pub struct PendingWrites {
    ops: Vec<Write>,
    /// De-duplication keys among the held writes, so a retry within the window is recognised.
    dedupe: HashMap<String, u64>,
}

#[derive(Debug, Clone)]
enum Write {
    /// A message and its de-duplication key, already checked.
    Append(Message, Option<String>),
    TrimThrough(u64),
}

impl PendingWrites {
    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Messages held.
    pub fn messages(&self) -> usize {
        self.ops
            .iter()
            .filter(|w| matches!(w, Write::Append(..)))
            .count()
    }

    /// Applies every held write to `store`, in order, and forgets them. On a failure the
    /// writes not yet applied are forgotten too (the caller reloads the room from storage).
    pub fn apply(&mut self, store: &mut dyn Store) -> Result<(), StoreError> {
        self.dedupe.clear();
        let ops = std::mem::take(&mut self.ops);
        // Only the last trim matters: it covers every earlier one.
        let last_trim = ops.iter().rev().find_map(|w| match w {
            Write::TrimThrough(o) => Some(*o),
            _ => None,
        });
        let appends: Vec<(Message, Option<String>)> = ops
            .into_iter()
            .filter_map(|w| match w {
                Write::Append(m, key) => Some((m, key)),
                Write::TrimThrough(_) => None,
            })
            .collect();
        // The window's messages in as few statements as storage allows.
        store.append_checked(&appends)?;
        if let Some(o) = last_trim {
            store.trim_through(o)?;
        }
        Ok(())
    }
}

/// A [`Store`] that holds writes in `pending` and reads through to `inner`.
pub struct WriteBehind<'a, S: Store> {
    pending: &'a RefCell<PendingWrites>,
    inner: RefCell<S>,
}

impl<'a, S: Store> WriteBehind<'a, S> {
    /// Holds writes in `pending`; `inner` is the real storage.
    pub fn new(pending: &'a RefCell<PendingWrites>, inner: S) -> Self {
        Self {
            pending,
            inner: RefCell::new(inner),
        }
    }

    /// The real storage back.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }

    /// Applies the held writes before a read that needs them.
    fn settle(&self) -> Result<(), StoreError> {
        if self.pending.borrow().is_empty() {
            return Ok(());
        }
        self.pending
            .borrow_mut()
            .apply(&mut *self.inner.borrow_mut())
    }

    fn hold(&self, w: Write) {
        self.pending.borrow_mut().ops.push(w);
    }
}

impl<S: Store> Store for WriteBehind<'_, S> {
    fn append_once(&mut self, m: &Message, key: Option<&str>) -> Result<Option<u64>, StoreError> {
        if let Some(k) = key {
            if let Some(first) = self.dedupe_get(k)? {
                return Ok(Some(first));
            }
            self.pending
                .borrow_mut()
                .dedupe
                .insert(k.to_string(), m.offset);
        }
        self.hold(Write::Append(m.clone(), key.map(str::to_string)));
        Ok(None)
    }

    fn after(&self, after: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
        self.settle()?;
        self.inner.borrow().after(after, limit)
    }

    fn latest(&self, limit: usize) -> Result<Vec<Message>, StoreError> {
        self.settle()?;
        self.inner.borrow().latest(limit)
    }

    fn first_offset(&self) -> Result<Option<u64>, StoreError> {
        self.settle()?;
        self.inner.borrow().first_offset()
    }

    fn trim_through(&mut self, offset: u64) -> Result<(), StoreError> {
        self.hold(Write::TrimThrough(offset));
        Ok(())
    }

    fn trim_older(&mut self, ts: u64) -> Result<(), StoreError> {
        self.settle()?;
        self.inner.borrow_mut().trim_older(ts)
    }

    fn dedupe_get(&self, key: &str) -> Result<Option<u64>, StoreError> {
        if let Some(o) = self.pending.borrow().dedupe.get(key) {
            return Ok(Some(*o));
        }
        self.inner.borrow().dedupe_get(key)
    }

    fn dedupe_expire(&mut self, ts: u64) -> Result<(), StoreError> {
        self.settle()?;
        self.inner.borrow_mut().dedupe_expire(ts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::limits::RoomLimits;
    use crate::rooms::protocol::{Encoding, MemberInfo, RawFrame};
    use crate::rooms::room::Room;
    use crate::rooms::session::Session;
    use crate::rooms::store::MemoryStore;
    use proptest::prelude::*;

    fn from() -> MemberInfo {
        MemberInfo {
            id: "u".into(),
            name: "u".into(),
            meta: None,
            conns: 0,
        }
    }

    #[test]
    fn held_writes_are_invisible_to_storage_until_applied_but_visible_to_the_core() {
        let limits = RoomLimits {
            history_max_messages: 3,
            ..RoomLimits::default()
        };
        let mut room = Room::new("k", "e", 0, limits);
        let pending = RefCell::new(PendingWrites::default());
        let mut store = WriteBehind::new(&pending, MemoryStore::default());
        {
            for i in 0..5 {
                let id = format!("m{i}");
                let key = format!("anon/{id}");
                room.publish(&mut store, from(), i.into(), Some(&id), Some(&key), 10)
                    .unwrap();
            }
            // A retry within the window is recognised without touching storage.
            let (p, _) = room
                .publish(
                    &mut store,
                    from(),
                    0.into(),
                    Some("m0"),
                    Some("anon/m0"),
                    10,
                )
                .unwrap();
            assert!(p.duplicate);
            assert_eq!(p.offset, 1);
        }
        let mut real = store.into_inner();
        assert!(real.messages.is_empty(), "nothing written before apply");
        assert_eq!(pending.borrow().messages(), 5);
        pending.borrow_mut().apply(&mut real).unwrap();
        // Storage deletes beyond the bound in batches; what is read is exactly the bound.
        assert_eq!(real.messages.len(), 5);
        let page = room.history(&real, 0, 10).unwrap();
        let offsets: Vec<u64> = page.messages.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, [3, 4, 5]);
        assert_eq!(page.first_offset, 3);
        assert_eq!(real.dedupe.len(), 5);
        assert!(pending.borrow().is_empty());
    }

    #[test]
    fn a_replay_within_the_window_sees_the_held_messages() {
        let mut room = Room::new("k", "e", 0, RoomLimits::default());
        let pending = RefCell::new(PendingWrites::default());
        let mut store = WriteBehind::new(&pending, MemoryStore::default());
        for i in 0..4 {
            room.publish(&mut store, from(), i.into(), None, None, 10)
                .unwrap();
        }
        room.attach(Session::new("c1", "u1", Encoding::Json));
        let fx = room.receive(
            &mut store,
            "c1",
            RawFrame::Text(r#"{"type":"join","name":"a","history":10}"#),
            20,
        );
        let replayed = fx
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    crate::rooms::room::Effect::Send {
                        frame: crate::rooms::protocol::ServerFrame::Message(_),
                        ..
                    }
                )
            })
            .count();
        assert_eq!(replayed, 4);
        assert!(pending.borrow().is_empty(), "the read applied the writes");
    }

    proptest! {
        /// Whatever the sequence of publishes (with repeated ids) and flush points, storage
        /// ends up exactly as with write-through, and every publish gets the same answer.
        #[test]
        fn write_behind_equals_write_through(
            ops in proptest::collection::vec((proptest::option::of(0u8..12), any::<bool>()), 1..120),
        ) {
            let limits = RoomLimits { history_max_messages: 20, ..RoomLimits::default() };
            let mut direct_room = Room::new("k", "e", 0, limits);
            let mut direct = MemoryStore::default();
            let mut held_room = Room::new("k", "e", 0, limits);
            let pending = RefCell::new(PendingWrites::default());
            let mut real = MemoryStore::default();
            for (id, flush) in ops {
                let id = id.map(|i| format!("m{i}"));
                let key = id.as_ref().map(|i| format!("anon/{i}"));
                let a = direct_room
                    .publish(&mut direct, from(), 1.into(), id.as_deref(), key.as_deref(), 5)
                    .unwrap()
                    .0;
                let mut store = WriteBehind::new(&pending, std::mem::take(&mut real));
                let b = held_room
                    .publish(&mut store, from(), 1.into(), id.as_deref(), key.as_deref(), 5)
                    .unwrap()
                    .0;
                real = store.into_inner();
                prop_assert_eq!(a, b);
                if flush {
                    pending.borrow_mut().apply(&mut real).unwrap();
                }
            }
            pending.borrow_mut().apply(&mut real).unwrap();
            prop_assert_eq!(&direct.messages, &real.messages);
            let mut d: Vec<_> = direct.dedupe.iter().map(|(k, v)| (k.clone(), v.0)).collect();
            let mut r: Vec<_> = real.dedupe.iter().map(|(k, v)| (k.clone(), v.0)).collect();
            d.sort();
            r.sort();
            prop_assert_eq!(d, r);
        }
    }
}
