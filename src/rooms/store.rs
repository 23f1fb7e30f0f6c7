//! Where a room's ordered stream and de-duplication keys live: the [`Store`] trait, SQLite in
//! the object (`objects/rooms/store.rs`), [`MemoryStore`] in native tests.

use std::collections::{BTreeMap, HashMap};

use super::protocol::Message;

/// A storage failure, described for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage: {0}")]
pub struct StoreError(pub String);

/// Where a room's stream and de-duplication records live. Every method is synchronous because
/// Durable Object SQLite is; a write is durable before any frame sent after it leaves.
pub trait Store {
    /// Appends a message.
    fn append(&mut self, m: &Message) -> Result<(), StoreError>;
    /// Messages with an offset above `after`, ascending, at most `limit`.
    fn after(&self, after: u64, limit: usize) -> Result<Vec<Message>, StoreError>;
    /// The latest `limit` messages, ascending.
    fn latest(&self, limit: usize) -> Result<Vec<Message>, StoreError>;
    /// The smallest offset still held, if any.
    fn first_offset(&self) -> Result<Option<u64>, StoreError>;
    /// Deletes messages with an offset at or below `offset`.
    fn trim_through(&mut self, offset: u64) -> Result<(), StoreError>;
    /// Deletes messages accepted before `ts`.
    fn trim_older(&mut self, ts: u64) -> Result<(), StoreError>;
    /// The offset recorded for a de-duplication key, if remembered.
    fn dedupe_get(&self, key: &str) -> Result<Option<u64>, StoreError>;
    /// Remembers a de-duplication key.
    fn dedupe_put(&mut self, key: &str, offset: u64, ts: u64) -> Result<(), StoreError>;
    /// Forgets de-duplication keys recorded before `ts`.
    fn dedupe_expire(&mut self, ts: u64) -> Result<(), StoreError>;
}

/// An in-memory [`Store`] for native tests and tools.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    /// Messages by offset.
    pub messages: BTreeMap<u64, Message>,
    /// De-duplication keys: offset and time recorded.
    pub dedupe: HashMap<String, (u64, u64)>,
}

impl Store for MemoryStore {
    fn append(&mut self, m: &Message) -> Result<(), StoreError> {
        self.messages.insert(m.offset, m.clone());
        Ok(())
    }
    fn after(&self, after: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
        Ok(self
            .messages
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(_, m)| m.clone())
            .collect())
    }
    fn latest(&self, limit: usize) -> Result<Vec<Message>, StoreError> {
        let mut v: Vec<Message> = self.messages.values().rev().take(limit).cloned().collect();
        v.reverse();
        Ok(v)
    }
    fn first_offset(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.messages.keys().next().copied())
    }
    fn trim_through(&mut self, offset: u64) -> Result<(), StoreError> {
        self.messages = self.messages.split_off(&offset.saturating_add(1));
        Ok(())
    }
    fn trim_older(&mut self, ts: u64) -> Result<(), StoreError> {
        self.messages.retain(|_, m| m.ts >= ts);
        Ok(())
    }
    fn dedupe_get(&self, key: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.dedupe.get(key).map(|(o, _)| *o))
    }
    fn dedupe_put(&mut self, key: &str, offset: u64, ts: u64) -> Result<(), StoreError> {
        self.dedupe.insert(key.to_string(), (offset, ts));
        Ok(())
    }
    fn dedupe_expire(&mut self, ts: u64) -> Result<(), StoreError> {
        self.dedupe.retain(|_, (_, t)| *t >= ts);
        Ok(())
    }
}
