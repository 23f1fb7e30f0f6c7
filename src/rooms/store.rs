//! Where a room's ordered stream and de-duplication keys live: the [`Store`] trait, SQLite in
//! the object (`objects/rooms/store.rs`), [`MemoryStore`] in native tests.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::protocol::{MemberInfo, Message};

/// A storage failure, described for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage: {0}")]
pub struct StoreError(pub String);

/// Where a room's stream and de-duplication records live. Every method is synchronous because
/// Durable Object SQLite is; a write is durable before any frame sent after it leaves.
///
/// A de-duplication key is remembered with its message while the message is held, and for
/// at least the de-duplication window after it was published (until [`Store::dedupe_expire`]
/// once the message itself has been trimmed).
pub trait Store {
    /// Appends a message — unless `key` is given and already remembered: then nothing is
    /// written and the answer is the offset the key was first published at. In SQLite this is
    /// one statement (the check, the message and its key together).
    fn append_once(&mut self, m: &Message, key: Option<&str>) -> Result<Option<u64>, StoreError>;
    /// Appends messages whose keys were already checked (a batch window's held writes), in
    /// order; in SQLite as few statements as the bound-parameter limit allows.
    fn append_checked(&mut self, ms: &[(Message, Option<String>)]) -> Result<(), StoreError> {
        for (m, key) in ms {
            if let Some(first) = self.append_once(m, key.as_deref())? {
                return Err(StoreError(format!(
                    "held message {} repeats the key of {first}",
                    m.offset
                )));
            }
        }
        Ok(())
    }
    /// Messages with an offset above `after`, ascending, at most `limit`.
    fn after(&self, after: u64, limit: usize) -> Result<Vec<Message>, StoreError>;
    /// The latest `limit` messages, ascending.
    fn latest(&self, limit: usize) -> Result<Vec<Message>, StoreError>;
    /// The smallest offset still held, if any.
    fn first_offset(&self) -> Result<Option<u64>, StoreError>;
    /// Deletes messages with an offset at or below `offset` (their keys stay remembered).
    fn trim_through(&mut self, offset: u64) -> Result<(), StoreError>;
    /// Deletes messages accepted before `ts` (their keys stay remembered).
    fn trim_older(&mut self, ts: u64) -> Result<(), StoreError>;
    /// The offset recorded for a de-duplication key, if remembered.
    fn dedupe_get(&self, key: &str) -> Result<Option<u64>, StoreError>;
    /// Forgets the de-duplication keys of trimmed messages published before `ts`.
    fn dedupe_expire(&mut self, ts: u64) -> Result<(), StoreError>;
}

/// The integer SQLite stores for an offset or a time: `v`, saturated at `i64::MAX` (a plain
/// `as i64` turned `since=18446744073709551615` into -1, i.e. "everything").
pub fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One row of the `messages` table as SQL returns it (the body as stored: compact JSON).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StoredRow {
    /// The offset.
    pub seq: i64,
    /// Time of acceptance, ms.
    pub ts: i64,
    /// Sender id.
    pub from_id: String,
    /// Sender display name.
    pub from_name: String,
    /// The body as JSON text.
    pub body: String,
}

/// A stored row that could not be read back, for the log and the
/// `roomkeeper_room_unreadable_rows_total` counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The row's offset.
    pub offset: u64,
    /// Why it could not be decoded.
    pub reason: String,
}

/// Decodes stored rows into messages, in order. A row that cannot be decoded (say, a body
/// nested deeper than serde_json reads, stored before bodies were bounded) never fails the
/// page: it is left out and returned in the second list.
pub fn decode_rows(rows: Vec<StoredRow>) -> (Vec<Message>, Vec<Unreadable>) {
    let mut messages = Vec::with_capacity(rows.len());
    let mut unreadable = Vec::new();
    for r in rows {
        match serde_json::from_str(&r.body) {
            Ok(body) => messages.push(Message {
                offset: r.seq.max(0) as u64,
                ts: r.ts.max(0) as u64,
                from: MemberInfo {
                    id: r.from_id,
                    name: r.from_name,
                    meta: None,
                    conns: 0,
                },
                body,
            }),
            Err(e) => unreadable.push(Unreadable {
                offset: r.seq.max(0) as u64,
                reason: e.to_string(),
            }),
        }
    }
    (messages, unreadable)
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
    fn append_once(&mut self, m: &Message, key: Option<&str>) -> Result<Option<u64>, StoreError> {
        if let Some(k) = key {
            if let Some((first, _)) = self.dedupe.get(k) {
                return Ok(Some(*first));
            }
            self.dedupe.insert(k.to_string(), (m.offset, m.ts));
        }
        self.messages.insert(m.offset, m.clone());
        Ok(None)
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
    fn dedupe_expire(&mut self, ts: u64) -> Result<(), StoreError> {
        let held = &self.messages;
        self.dedupe
            .retain(|_, (o, t)| *t >= ts || held.contains_key(o));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_saturate_on_the_way_to_sql() {
        assert_eq!(sql_int(7), 7);
        assert_eq!(sql_int(i64::MAX as u64), i64::MAX);
        assert_eq!(sql_int(i64::MAX as u64 + 1), i64::MAX);
        assert_eq!(sql_int(u64::MAX), i64::MAX);
    }

    #[test]
    fn an_unreadable_row_is_skipped_not_fatal() {
        let row = |seq: i64, body: String| StoredRow {
            seq,
            ts: 5,
            from_id: "u".into(),
            from_name: "n".into(),
            body,
        };
        // Seen live: a body nested 200 deep, stored as JSON, failed every page it was on
        // ("recursion limit exceeded").
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let (messages, unreadable) = decode_rows(vec![
            row(1, "{\"text\":\"a\"}".into()),
            row(2, deep),
            row(3, "not json".into()),
            row(4, "[1]".into()),
        ]);
        let offsets: Vec<u64> = messages.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, vec![1, 4]);
        assert_eq!(messages[0].body, serde_json::json!({"text": "a"}));
        let bad: Vec<u64> = unreadable.iter().map(|u| u.offset).collect();
        assert_eq!(bad, vec![2, 3]);
        assert!(
            unreadable[0].reason.contains("recursion limit"),
            "{unreadable:?}"
        );
    }
}
