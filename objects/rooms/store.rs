//! The room's stream in the object's SQLite storage: the core's [`Store`] over `messages`,
//! `dedupe` and `meta` tables.
//!
//! A message's de-duplication key is a column of its row (`dkey`, unique where set), so one
//! statement checks the key, stores the message and remembers the key. When messages are
//! trimmed their keys move to `dedupe`, which the same statement also checks, and where they
//! stay for the de-duplication window.

use std::cell::RefCell;

use serde::Deserialize;
use worker::{SqlStorage, SqlStorageValue};

use crate::probe::{note, Call};
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
        note(Call::Statement);
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

    /// Creates the tables, or brings a room stored by an earlier version up to date (once per
    /// object lifetime; the version is kept in `meta` under [`SCHEMA_VERSION_KEY`]).
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
        let version: u32 = self
            .meta(SCHEMA_VERSION_KEY)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        if version < 2 {
            // Version 2: the key rides in the message's row. Keys of rooms stored before stay
            // in `dedupe`, which every publish still checks.
            // A column added by an interrupted earlier attempt is fine.
            if let Err(e) = self.exec("ALTER TABLE messages ADD COLUMN dkey TEXT", vec![]) {
                if !e.0.contains("duplicate column") {
                    return Err(e);
                }
            }
            self.exec(
                "CREATE UNIQUE INDEX IF NOT EXISTS messages_dkey ON messages (dkey) \
                 WHERE dkey IS NOT NULL",
                vec![],
            )?;
            self.set_meta(SCHEMA_VERSION_KEY, "2")?;
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

/// `meta` key of the storage layout's version (absent: 1, before keys rode in message rows).
pub const SCHEMA_VERSION_KEY: &str = "schema_version";

/// The columns of a message row, bound in this order.
const ROW_COLUMNS: &str = "seq, ts, from_id, from_name, body, dkey";
/// Bound values per row.
const ROW_VALUES: usize = 6;
/// Rows per multi-row insert: a statement binds at most 100 values.
const ROWS_PER_INSERT: usize = 100 / ROW_VALUES;

fn row_values(
    m: &Message,
    key: Option<&str>,
) -> std::result::Result<[SqlStorageValue; ROW_VALUES], StoreError> {
    Ok([
        sql_int(m.offset).into(),
        sql_int(m.ts).into(),
        m.from.id.as_str().into(),
        m.from.name.as_str().into(),
        serde_json::to_string(&m.body).map_err(store_err)?.into(),
        key.map_or(SqlStorageValue::Null, Into::into),
    ])
}

/// Keys of trimmed messages move to `dedupe` before their rows go.
const KEEP_KEYS: &str =
    "INSERT OR IGNORE INTO dedupe (k, seq, ts) SELECT dkey, seq, ts FROM messages";

impl Store for SqlStore {
    fn append_once(
        &mut self,
        m: &Message,
        key: Option<&str>,
    ) -> std::result::Result<Option<u64>, StoreError> {
        // One statement: inserted unless the key is in `dedupe` (trimmed messages' keys) or in
        // a held message's row (the unique index).
        let [seq, ts, from_id, from_name, body, dkey] = row_values(m, key)?;
        let cursor = self.exec(
            "INSERT INTO messages (seq, ts, from_id, from_name, body, dkey) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6 \
             WHERE ?6 IS NULL OR NOT EXISTS (SELECT 1 FROM dedupe WHERE k = ?6) \
             ON CONFLICT (dkey) WHERE dkey IS NOT NULL DO NOTHING",
            vec![seq, ts, from_id, from_name, body, dkey],
        )?;
        if cursor.rows_written() > 0 {
            return Ok(None);
        }
        // Only a repeated key leaves the row unwritten: answer its first offset.
        let first = match key {
            Some(k) => self.dedupe_get(k)?,
            None => None,
        };
        first
            .map(Some)
            .ok_or_else(|| StoreError(format!("message {} was not stored", m.offset)))
    }

    fn append_checked(
        &mut self,
        ms: &[(Message, Option<String>)],
    ) -> std::result::Result<(), StoreError> {
        for chunk in ms.chunks(ROWS_PER_INSERT) {
            let mut values = Vec::with_capacity(chunk.len() * ROW_VALUES);
            for (m, key) in chunk {
                values.extend(row_values(m, key.as_deref())?);
            }
            let rows = vec!["(?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            self.exec(
                &format!("INSERT INTO messages ({ROW_COLUMNS}) VALUES {rows}"),
                values,
            )?;
        }
        Ok(())
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
            &format!("{KEEP_KEYS} WHERE seq <= ? AND dkey IS NOT NULL"),
            vec![sql_int(offset).into()],
        )?;
        self.exec(
            "DELETE FROM messages WHERE seq <= ?",
            vec![sql_int(offset).into()],
        )
        .map(|_| ())
    }

    fn trim_older(&mut self, ts: u64) -> std::result::Result<(), StoreError> {
        self.exec(
            &format!("{KEEP_KEYS} WHERE ts < ? AND dkey IS NOT NULL"),
            vec![sql_int(ts).into()],
        )?;
        self.exec(
            "DELETE FROM messages WHERE ts < ?",
            vec![sql_int(ts).into()],
        )
        .map(|_| ())
    }

    fn dedupe_get(&self, key: &str) -> std::result::Result<Option<u64>, StoreError> {
        Ok(self
            .one::<i64>(
                "SELECT seq AS v FROM messages WHERE dkey = ?1 \
                 UNION ALL SELECT seq AS v FROM dedupe WHERE k = ?1 LIMIT 1",
                vec![key.into()],
            )?
            .map(|v| v as u64))
    }

    fn dedupe_expire(&mut self, ts: u64) -> std::result::Result<(), StoreError> {
        self.exec("DELETE FROM dedupe WHERE ts < ?", vec![sql_int(ts).into()])
            .map(|_| ())
    }
}
