//! The room's stream in the object's SQLite storage: the core's [`Store`] over `messages`,
//! `dedupe` and `meta` tables.

use serde::Deserialize;
use worker::{SqlStorage, SqlStorageValue};

use crate::rooms::protocol::{MemberInfo, Message};
use crate::rooms::store::{Store, StoreError};

/// The room's stream in the object's SQLite storage.
#[derive(Clone)]
pub struct SqlStore(pub SqlStorage);

#[derive(Deserialize)]
struct Row {
    seq: i64,
    ts: i64,
    from_id: String,
    from_name: String,
    body: String,
}

#[derive(Deserialize)]
struct One<T> {
    v: Option<T>,
}

fn store_err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl SqlStore {
    fn exec(
        &self,
        q: &str,
        b: Vec<SqlStorageValue>,
    ) -> std::result::Result<worker::SqlCursor, StoreError> {
        self.0.exec(q, Some(b)).map_err(store_err)
    }

    fn messages(
        &self,
        q: &str,
        b: Vec<SqlStorageValue>,
    ) -> std::result::Result<Vec<Message>, StoreError> {
        let rows: Vec<Row> = self.exec(q, b)?.to_array().map_err(store_err)?;
        rows.into_iter()
            .map(|r| {
                Ok(Message {
                    offset: r.seq as u64,
                    ts: r.ts as u64,
                    from: MemberInfo {
                        id: r.from_id,
                        name: r.from_name,
                        meta: None,
                        conns: 0,
                    },
                    body: serde_json::from_str(&r.body).map_err(store_err)?,
                })
            })
            .collect()
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
                (m.offset as i64).into(),
                (m.ts as i64).into(),
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
            vec![(after as i64).into(), (limit as i64).into()],
        )
    }

    fn latest(&self, limit: usize) -> std::result::Result<Vec<Message>, StoreError> {
        let mut v = self.messages(
            &format!("{COLUMNS} ORDER BY seq DESC LIMIT ?"),
            vec![(limit as i64).into()],
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
            vec![(offset as i64).into()],
        )
        .map(|_| ())
    }

    fn trim_older(&mut self, ts: u64) -> std::result::Result<(), StoreError> {
        self.exec(
            "DELETE FROM messages WHERE ts < ?",
            vec![(ts as i64).into()],
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
            vec![key.into(), (offset as i64).into(), (ts as i64).into()],
        )
        .map(|_| ())
    }

    fn dedupe_expire(&mut self, ts: u64) -> std::result::Result<(), StoreError> {
        self.exec("DELETE FROM dedupe WHERE ts < ?", vec![(ts as i64).into()])
            .map(|_| ())
    }
}
