//! The room's stream in the object's SQLite storage: the core's [`Store`] over `messages`,
//! `dedupe` and `meta` tables.

use std::cell::RefCell;

use serde::Deserialize;
use worker::{SqlStorage, SqlStorageValue};

use crate::rooms::protocol::Message;
use crate::rooms::store::{decode_rows, sql_int, Store, StoreError, StoredRow, Unreadable};

/// The room's stream in the object's SQLite storage.
#[derive(Clone)]
pub struct SqlStore(pub SqlStorage);

#[derive(Deserialize)]
struct One<T> {
    v: Option<T>,
}

fn store_err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

thread_local! {
    /// Rows the reads of the current event skipped as unreadable. An isolate runs one event
    /// at a time, and the Room takes them ([`take_unreadable`]) right after its synchronous
    /// reads, so they belong to that room.
    static UNREADABLE: RefCell<Vec<Unreadable>> = const { RefCell::new(Vec::new()) };
}

/// The rows skipped since the last call (to log and count).
pub fn take_unreadable() -> Vec<Unreadable> {
    UNREADABLE.with(|u| std::mem::take(&mut *u.borrow_mut()))
}

impl SqlStore {
    fn exec(
        &self,
        q: &str,
        b: Vec<SqlStorageValue>,
    ) -> std::result::Result<worker::SqlCursor, StoreError> {
        self.0.exec(q, Some(b)).map_err(store_err)
    }

    /// Messages of a query; a row that cannot be decoded is skipped and noted, never fatal.
    fn messages(
        &self,
        q: &str,
        b: Vec<SqlStorageValue>,
    ) -> std::result::Result<Vec<Message>, StoreError> {
        let rows: Vec<StoredRow> = self.exec(q, b)?.to_array().map_err(store_err)?;
        let (messages, unreadable) = decode_rows(rows);
        if !unreadable.is_empty() {
            UNREADABLE.with(|u| u.borrow_mut().extend(unreadable));
        }
        Ok(messages)
    }

    pub fn one<T: serde::de::DeserializeOwned>(
        &self,
        q: &str,
        b: Vec<SqlStorageValue>,
    ) -> std::result::Result<Option<T>, StoreError> {
        let rows: Vec<One<T>> = self.exec(q, b)?.to_array().map_err(store_err)?;
        Ok(rows.into_iter().next().and_then(|r| r.v))
    }

    pub fn schema(&self) -> std::result::Result<(), StoreError> {
        for q in [
            "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, \
             from_id TEXT NOT NULL, from_name TEXT NOT NULL, body TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS messages_ts ON messages (ts)",
            "CREATE TABLE IF NOT EXISTS dedupe (k TEXT PRIMARY KEY, seq INTEGER NOT NULL, ts INTEGER NOT NULL)",
        ] {
            self.exec(q, vec![])?;
        }
        Ok(())
    }

    pub fn meta(&self, key: &str) -> std::result::Result<Option<String>, StoreError> {
        self.one("SELECT v FROM meta WHERE k = ?", vec![key.into()])
    }

    pub fn set_meta(&self, key: &str, value: &str) -> std::result::Result<(), StoreError> {
        self.exec(
            "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
            vec![key.into(), value.into()],
        )
        .map(|_| ())
    }
}

const COLUMNS: &str = "SELECT seq, ts, from_id, from_name, body FROM messages";

impl Store for SqlStore {
    fn append(&mut self, m: &Message) -> std::result::Result<(), StoreError> {
        self.exec(
            "INSERT INTO messages (seq, ts, from_id, from_name, body) VALUES (?, ?, ?, ?, ?)",
            vec![
                sql_int(m.offset).into(),
                sql_int(m.ts).into(),
                m.from.id.as_str().into(),
                m.from.name.as_str().into(),
                serde_json::to_string(&m.body).map_err(store_err)?.into(),
            ],
        )
        .map(|_| ())
    }

    fn after(&self, after: u64, limit: usize) -> std::result::Result<Vec<Message>, StoreError> {
        self.messages(
            &format!("{COLUMNS} WHERE seq > ? ORDER BY seq LIMIT ?"),
            vec![sql_int(after).into(), sql_int(limit as u64).into()],
        )
    }

    fn latest(&self, limit: usize) -> std::result::Result<Vec<Message>, StoreError> {
        let mut v = self.messages(
            &format!("{COLUMNS} ORDER BY seq DESC LIMIT ?"),
            vec![sql_int(limit as u64).into()],
        )?;
        v.reverse();
        Ok(v)
    }

    fn first_offset(&self) -> std::result::Result<Option<u64>, StoreError> {
        Ok(self
            .one::<i64>("SELECT MIN(seq) AS v FROM messages", vec![])?
            .map(|v| v as u64))
    }

    fn trim_through(&mut self, offset: u64) -> std::result::Result<(), StoreError> {
        self.exec(
            "DELETE FROM messages WHERE seq <= ?",
            vec![sql_int(offset).into()],
        )
        .map(|_| ())
    }

    fn trim_older(&mut self, ts: u64) -> std::result::Result<(), StoreError> {
        self.exec(
            "DELETE FROM messages WHERE ts < ?",
            vec![sql_int(ts).into()],
        )
        .map(|_| ())
    }

    fn dedupe_get(&self, key: &str) -> std::result::Result<Option<u64>, StoreError> {
        Ok(self
            .one::<i64>("SELECT seq AS v FROM dedupe WHERE k = ?", vec![key.into()])?
            .map(|v| v as u64))
    }

    fn dedupe_put(
        &mut self,
        key: &str,
        offset: u64,
        ts: u64,
    ) -> std::result::Result<(), StoreError> {
        self.exec(
            "INSERT OR REPLACE INTO dedupe (k, seq, ts) VALUES (?, ?, ?)",
            vec![key.into(), sql_int(offset).into(), sql_int(ts).into()],
        )
        .map(|_| ())
    }

    fn dedupe_expire(&mut self, ts: u64) -> std::result::Result<(), StoreError> {
        self.exec("DELETE FROM dedupe WHERE ts < ?", vec![sql_int(ts).into()])
            .map(|_| ())
    }
}
