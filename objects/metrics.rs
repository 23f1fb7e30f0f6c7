//! The Metrics Durable Object: one per deployment (named `global`), summing counter deltas
//! into its SQLite storage so the figures survive restarts and every isolate sees the same
//! totals. It also keeps the registry of active rooms and sessions (connections per name)
//! for the admin view; a name leaves it when its last connection closes, so the registry is
//! bounded by the connections open now. Counter rows are bounded by their label sets, which
//! never carry a room, user or key.

use serde::Deserialize;
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use crate::internal::{Binding, Op};
use crate::metrics::{Delta, Sample, ROOM_CONNECTIONS};

/// How long applied router batch ids are remembered for de-duplicating retries (ms): far
/// longer than any retry of a batch takes.
const BATCH_MEMORY_MS: i64 = 3_600_000;

/// The Metrics object.
#[durable_object]
pub struct Metrics {
    state: State,
}

#[derive(Deserialize)]
struct Row {
    name: String,
    labels: String,
    value: f64,
}

#[derive(Deserialize)]
struct RoomRow {
    room: String,
    connections: f64,
    updated_at: f64,
}

impl DurableObject for Metrics {
    fn new(state: State, _env: Env) -> Self {
        Self { state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let sql = self.state.storage().sql();
        sql.exec(
            "CREATE TABLE IF NOT EXISTS counters (name TEXT NOT NULL, labels TEXT NOT NULL, \
             value INTEGER NOT NULL, PRIMARY KEY (name, labels))",
            None,
        )?;
        sql.exec(
            "CREATE TABLE IF NOT EXISTS rooms (room TEXT PRIMARY KEY, connections INTEGER NOT NULL, \
             updated_at INTEGER NOT NULL)",
            None,
        )?;
        match Op::decode(Binding::Metrics, &req.path()) {
            Some(Op::MetricsAdd) => {
                let deltas: Vec<Delta> = req.json().await?;
                let now = worker::Date::now().as_millis() as i64;
                // A router batch carries an id: a retried batch that already landed is skipped.
                if let Some(batch) = req.headers().get(crate::metrics::BATCH_ID_HEADER)? {
                    sql.exec(
                        "CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, at INTEGER NOT NULL)",
                        None,
                    )?;
                    sql.exec(
                        "DELETE FROM batches WHERE at < ?",
                        Some(vec![(now - BATCH_MEMORY_MS).into()]),
                    )?;
                    let seen: Vec<serde_json::Value> = sql
                        .exec(
                            "SELECT id FROM batches WHERE id = ?",
                            Some(vec![batch.as_str().into()]),
                        )?
                        .to_array()?;
                    if !seen.is_empty() {
                        return Response::empty();
                    }
                    sql.exec(
                        "INSERT INTO batches (id, at) VALUES (?, ?)",
                        Some(vec![batch.as_str().into(), now.into()]),
                    )?;
                }
                for d in deltas {
                    // `room_connections{room}` is not a counter: it keeps the registry of
                    // active rooms for the admin view.
                    if d.name == ROOM_CONNECTIONS {
                        if let Some(room) = d.labels.get("room") {
                            sql.exec(
                                "INSERT INTO rooms (room, connections, updated_at) VALUES (?, max(0, ?), ?) \
                                 ON CONFLICT(room) DO UPDATE SET connections = max(0, rooms.connections + ?), \
                                 updated_at = excluded.updated_at",
                                Some(vec![room.as_str().into(), d.delta.into(), now.into(), d.delta.into()]),
                            )?;
                            // A room or session with no open connection leaves the registry:
                            // it holds what is open now, never every name ever used.
                            sql.exec(
                                "DELETE FROM rooms WHERE room = ? AND connections <= 0",
                                Some(vec![room.as_str().into()]),
                            )?;
                        }
                        continue;
                    }
                    sql.exec(
                        "INSERT INTO counters (name, labels, value) VALUES (?, ?, ?) \
                         ON CONFLICT(name, labels) DO UPDATE SET value = value + excluded.value",
                        Some(vec![
                            d.name.as_str().into(),
                            d.label_key().into(),
                            d.delta.into(),
                        ]),
                    )?;
                }
                Response::empty()
            }
            Some(Op::MetricsAll) => {
                let rows: Vec<Row> = sql
                    .exec(
                        "SELECT name, labels, value FROM counters ORDER BY name, labels",
                        None,
                    )?
                    .to_array()?;
                let samples: Vec<Sample> = rows
                    .into_iter()
                    .map(|r| Sample {
                        name: r.name,
                        labels: r.labels,
                        value: r.value as i64,
                    })
                    .collect();
                Response::from_json(&samples)
            }
            Some(Op::MetricsRooms) => {
                let rows: Vec<RoomRow> = sql
                    .exec(
                        "SELECT room, connections, updated_at FROM rooms WHERE connections > 0 \
                         AND instr(room, '/') = 0 ORDER BY room",
                        None,
                    )?
                    .to_array()?;
                let rooms: Vec<serde_json::Value> = rows
                    .into_iter()
                    .map(|r| serde_json::json!({"room": r.room, "connections": r.connections as u64, "updated_at_ms": r.updated_at as u64}))
                    .collect();
                Response::from_json(&serde_json::json!({ "rooms": rooms }))
            }
            // Voice and chat sessions share the registry as `voice/<user>:<session>` and
            // `chat/<user>:<session>` (room names never contain `/`).
            Some(Op::MetricsSessions) => {
                let rows: Vec<RoomRow> = sql
                    .exec(
                        "SELECT room, connections, updated_at FROM rooms WHERE connections > 0 \
                         AND instr(room, '/') > 0 ORDER BY room",
                        None,
                    )?
                    .to_array()?;
                let sessions: Vec<serde_json::Value> = rows
                    .into_iter()
                    .filter_map(|r| {
                        let (kind, name) = r.room.split_once('/')?;
                        let (user, session) = name.rsplit_once(':')?;
                        Some(
                            serde_json::json!({"kind": kind, "user": user, "session": session,
                            "connections": r.connections as u64,
                            "updated_at_ms": r.updated_at as u64}),
                        )
                    })
                    .collect();
                Response::from_json(&serde_json::json!({ "sessions": sessions }))
            }
            _ => Response::error("not found", 404),
        }
    }
}
