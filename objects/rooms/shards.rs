//! The room's subscribers held by gateway shards: their sessions (kept in the room's SQLite
//! table `remote`, since they have no socket attachment here) and the outbox that delivers
//! frames to each shard in order, one call at a time, batching what accumulates while a call
//! is in flight (`src/rooms/shards.rs` has the calls).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use worker::{Env, SqlStorage, State};

use crate::config::Config;
use crate::glue::http::log_error;
use crate::glue::rooms::ROOM_KEY_HEADER;
use crate::glue::stub::{stub, Call};
use crate::internal::{Binding, Op};
use crate::objects::sessions::session::{raw_state, spawn};
use crate::probe;
use crate::rooms::limits::RoomLimits;
use crate::rooms::session::Session;
use crate::rooms::shards::{
    channel_limits, parse_channel_key, Delivered, Delivery, DeliveryAnswer, Unsubscribe,
    CHANNEL_PREFIX, MAX_DELIVERY_FRAMES,
};

/// Attempts of one delivery before it is given up (the shard fills the gap from history when
/// the next delivery comes).
const DELIVERY_ATTEMPTS: u32 = 3;

/// The `remote` table: one row per subscriber held by a shard.
pub(crate) const SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS remote (conn TEXT PRIMARY KEY, session TEXT NOT NULL)";

/// Stores (or updates) a shard-held subscriber's session.
pub(crate) fn save(sql: &SqlStorage, s: &Session) -> worker::Result<()> {
    let v = serde_json::to_string(s).map_err(|e| worker::Error::RustError(e.to_string()))?;
    probe::note(probe::Call::Statement);
    sql.exec(
        "INSERT INTO remote (conn, session) VALUES (?, ?) \
         ON CONFLICT(conn) DO UPDATE SET session = excluded.session",
        Some(vec![s.conn.clone().into(), v.into()]),
    )?;
    Ok(())
}

/// Forgets a shard-held subscriber.
pub(crate) fn remove(sql: &SqlStorage, conn: &str) -> worker::Result<()> {
    probe::note(probe::Call::Statement);
    sql.exec("DELETE FROM remote WHERE conn = ?", Some(vec![conn.into()]))?;
    Ok(())
}

/// Every stored shard-held subscriber (an unreadable row is skipped).
pub(crate) fn load(sql: &SqlStorage) -> worker::Result<Vec<Session>> {
    #[derive(serde::Deserialize)]
    struct Row {
        session: String,
    }
    probe::note(probe::Call::Statement);
    let rows: Vec<Row> = sql.exec("SELECT session FROM remote", None)?.to_array()?;
    Ok(rows
        .into_iter()
        .filter_map(|r| serde_json::from_str(&r.session).ok())
        .collect())
}

#[derive(Default)]
struct Queue {
    busy: bool,
    frames: Vec<Delivered>,
}

/// Per shard: what waits to be delivered and whether a call is in flight.
#[derive(Clone, Default)]
pub(crate) struct Outbox(Rc<RefCell<BTreeMap<String, Queue>>>);

impl Outbox {
    /// Queues `frame` for `shard`; starts a delivery unless one is in flight (then it goes in
    /// the next batch). Subscribers a shard reports gone are unsubscribed from the room.
    pub(crate) fn push(&self, state: &State, env: &Env, room: &str, shard: &str, frame: Delivered) {
        let start = {
            let mut map = self.0.borrow_mut();
            let q = map.entry(shard.to_string()).or_default();
            q.frames.push(frame);
            !std::mem::replace(&mut q.busy, true)
        };
        if start {
            // The room's own id, for unsubscribing what the shard reports gone: a call to
            // itself, since the delivery runs outside any event's borrow of the room.
            let (me, env, id, room, shard) = (
                self.clone(),
                env.clone(),
                state.id().to_string(),
                room.to_string(),
                shard.to_string(),
            );
            spawn(&raw_state(state), async move {
                me.run(env, id, room, shard).await
            });
        }
    }

    /// Delivers the shard's queue batch after batch until it is empty.
    async fn run(self, env: Env, id: String, room: String, shard: String) {
        loop {
            let frames = {
                let mut map = self.0.borrow_mut();
                let Some(q) = map.get_mut(&shard) else { return };
                if q.frames.is_empty() {
                    q.busy = false;
                    return;
                }
                let n = q.frames.len().min(MAX_DELIVERY_FRAMES);
                q.frames.drain(..n).collect::<Vec<_>>()
            };
            probe::note(probe::Call::ShardDelivery);
            probe::note_n(probe::Call::ShardFrame, frames.len() as u64);
            let delivery = Delivery {
                room: room.clone(),
                frames,
            };
            let Ok(body) = serde_json::to_string(&delivery) else {
                continue;
            };
            let mut delay_ms = 50;
            for attempt in 1..=DELIVERY_ATTEMPTS {
                match deliver(&env, &shard, &body).await {
                    Ok(answer) => {
                        if !answer.gone.is_empty() {
                            if let Err(e) = forget_later(&env, &id, &room, answer.gone).await {
                                log_error("shard_gone_unsubscribe", &e.to_string());
                            }
                        }
                        break;
                    }
                    Err(e) if attempt == DELIVERY_ATTEMPTS => {
                        log_error("shard_delivery_failed", &format!("{room} -> {shard}: {e}"));
                    }
                    Err(_) => {
                        worker::Delay::from(std::time::Duration::from_millis(delay_ms)).await;
                        delay_ms *= 4;
                    }
                }
            }
        }
    }
}

/// Unsubscribes `conns` from the room with object id `id` (hex) and key `key`.
async fn forget_later(env: &Env, id: &str, key: &str, conns: Vec<String>) -> worker::Result<()> {
    let stub = env
        .durable_object(Binding::Room.name())?
        .id_from_string(id)?
        .get_stub()?;
    let body = serde_json::to_string(&Unsubscribe { conns })
        .map_err(|e| worker::Error::RustError(e.to_string()))?;
    let call = Call::new(Op::RoomUnsubscribe)
        .body(body)
        .header(ROOM_KEY_HEADER, key)
        .map_err(|e| worker::Error::RustError(e.to_string()))?;
    call.send(&stub).await.map(|_| ())
}

async fn deliver(env: &Env, shard: &str, body: &str) -> Result<DeliveryAnswer, String> {
    let s = stub(env, Binding::Gateway, shard).map_err(|e| e.to_string())?;
    let mut r = Call::new(Op::GatewayDeliver)
        .body(body.to_string())
        .send(&s)
        .await
        .map_err(|e| e.to_string())?;
    if r.status_code() != 200 {
        return Err(format!("status {}", r.status_code()));
    }
    r.json().await.map_err(|e| e.to_string())
}

/// Whether a room key is a Pusher channel's.
pub(crate) fn is_channel(key: &str) -> bool {
    key.starts_with(CHANNEL_PREFIX)
}

/// The limits of the room with this key: a channel's ([`channel_limits`]) or the service's.
pub(crate) fn limits(key: &str, config: &Config) -> RoomLimits {
    match parse_channel_key(key) {
        Some((_, channel)) => channel_limits(
            &config.room,
            channel.starts_with("presence-"),
            config.pusher.max_presence_members,
            config.pusher.max_event_data_bytes,
        ),
        None => config.room,
    }
}
