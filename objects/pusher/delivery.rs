//! The gateway's side of a room's deliveries (`GatewayDeliver`): gaps filled from the room's
//! history, what was handed on stored, and subscriptions of sockets the shard no longer holds
//! forgotten — on each delivery for its channel, after a reset, and on the sweep alarm
//! (`PUSHER_GATEWAY_SWEEP_SECONDS`), so that a restart that cut sockets without close events
//! does not leave their presence membership behind.

use std::collections::BTreeMap;

use worker::{Env, Request, Response};

use crate::glue::http::{internal, json, log_error, now_ms, read_json};
use crate::glue::rooms::channel_call;
use crate::glue::settings;
use crate::glue::stub::Call;
use crate::http::error::ApiError;
use crate::internal::Op;
use crate::objects::sessions::session::{raw_state, spawn};
use crate::pusher::wire::close;
use crate::rooms::history::MAX_HISTORY_PAGE;
use crate::rooms::multiplex::room_frame;
use crate::rooms::shards::{
    parse_channel_key, shard_channel, subscribed_key, Delivered, Delivery, DeliveryAnswer,
    Unsubscribe,
};

use super::gateway::{Attachment, Gateway};

/// Attempts of one unsubscribe call to a room before it is given up (logged).
const UNSUBSCRIBE_ATTEMPTS: u32 = 3;

impl Gateway {
    /// `GatewayDeliver`: a room's frames for this shard's sockets, gaps filled from history.
    pub(super) async fn deliver(
        &self,
        mut req: Request,
    ) -> std::result::Result<Response, ApiError> {
        let d: Delivery = read_json(&mut req).await?;
        // A Pusher channel's room, or a native room of v2 sockets (whose frames gain `room`).
        let native = parse_channel_key(&d.room).is_none();
        let channel = shard_channel(&d.room).to_string();
        // Subscribers whose sockets are gone: the room forgets them with this answer.
        let gone = self
            .drop_gone(Some(&channel))
            .map_err(internal)?
            .remove(&channel)
            .unwrap_or_default();
        let mut frames = d.frames;
        if let Some(since) = self.with_shard(|s| s.gap(&channel, &frames)) {
            match history(&self.env, &d.room, since).await {
                Ok((mut missing, false)) => {
                    missing.append(&mut frames);
                    frames = missing;
                }
                // The missing events are gone (trimmed) or unreadable: this shard's sockets of
                // the channel cannot be made whole, so they are told to reconnect (4200) and
                // pusher-js resubscribes at once.
                outcome => {
                    let why = match outcome {
                        Err(e) => e,
                        Ok(_) => "history trimmed past the gap".to_string(),
                    };
                    log_error("pusher_gap_fill", &format!("{}: {why}", d.room));
                    self.reconnect_channel(&channel);
                    return json(200, &DeliveryAnswer { gone });
                }
            }
        }
        if native {
            self.close_slow(&channel, &frames).map_err(internal)?;
        }
        let before = self.with_shard(|s| s.last(&channel));
        let sends = if native {
            let v2 = |f: &serde_json::Value| room_frame(&channel, f).map(|v| (v.to_string(), None));
            self.with_shard(|s| s.deliver_with(&channel, &frames, v2))
        } else {
            self.with_shard(|s| s.deliver(&channel, &frames))
        };
        let after = self.with_shard(|s| s.last(&channel));
        // Subscribers the room closed (strikes, an operator's close): they left the room.
        let closed: Vec<String> = if native {
            frames
                .iter()
                .filter(|d| d.frame["type"] == "error" && d.frame["code"] == "closed")
                .filter_map(|d| d.to.clone())
                .collect()
        } else {
            Vec::new()
        };
        if after != before {
            // Stored with the sends (the output gate holds them until it is durable), so a
            // reset shard resumes exactly after what its sockets got.
            let last = after.unwrap_or(0) as i64;
            self.sql()
                .exec(
                    "INSERT INTO handed (channel, last) VALUES (?, ?) \
                     ON CONFLICT(channel) DO UPDATE SET last = excluded.last",
                    Some(vec![channel.clone().into(), last.into()]),
                )
                .map_err(internal)?;
        }
        self.send_all(sends);
        for socket in closed {
            self.left_room(&socket, &channel).map_err(internal)?;
        }
        json(200, &DeliveryAnswer { gone })
    }

    /// The room forgot `socket`'s subscription to `channel`: so does the shard.
    fn left_room(&self, socket: &str, channel: &str) -> worker::Result<()> {
        self.reads.borrow_mut().forget_room(socket, channel);
        if self.with_shard(|s| s.unsubscribe(channel, socket)) {
            self.sql().exec(
                "DELETE FROM handed WHERE channel = ?",
                Some(vec![channel.into()]),
            )?;
        }
        self.sql().exec(
            "DELETE FROM subs WHERE socket = ? AND channel = ?",
            Some(vec![socket.into(), channel.into()]),
        )?;
        Ok(())
    }

    /// Closes this shard's sockets of `channel` with 4200 (reconnect now): what they missed
    /// cannot be delivered, and a fresh subscription starts them at the channel's present.
    fn reconnect_channel(&self, channel: &str) {
        let sockets: Vec<String> = self
            .sockets
            .borrow()
            .keys()
            .filter(|s| self.with_shard(|sh| sh.is_subscribed(channel, s)))
            .cloned()
            .collect();
        for s in sockets {
            if let Some(ws) = self.sockets.borrow().get(&s) {
                let _ = ws.close(Some(close::RECONNECT_NOW), Some("missed events; reconnect"));
            }
        }
    }

    /// The socket leaves channels: forgotten here, and in the rooms in the background.
    pub(super) fn unsubscribe(&self, a: &Attachment, channels: &[String]) -> worker::Result<()> {
        for c in channels {
            self.reads.borrow_mut().forget_room(&a.socket_id, c);
            if self.with_shard(|s| s.unsubscribe(c, &a.socket_id)) {
                self.sql().exec(
                    "DELETE FROM handed WHERE channel = ?",
                    Some(vec![c.clone().into()]),
                )?;
            }
            self.sql().exec(
                "DELETE FROM subs WHERE socket = ? AND channel = ?",
                Some(vec![a.socket_id.clone().into(), c.clone().into()]),
            )?;
            self.forget_in_room(a, c);
        }
        Ok(())
    }

    /// The room forgets this socket's subscription to `channel`, in the background (retried):
    /// for a subscription the shard gave up on while, or after, the room took it.
    pub(super) fn forget_in_room(&self, a: &Attachment, channel: &str) {
        let (env, key) = (self.env.clone(), subscribed_key(&a.app_id, channel));
        let conns = vec![a.socket_id.clone()];
        spawn(&raw_state(&self.state), async move {
            if let Err(e) = room_unsubscribe(&env, &key, conns).await {
                log_error("pusher_unsubscribe", &e);
            }
        });
    }

    /// Forgets the subscriptions of sockets this shard no longer holds, on `channel` or on
    /// every channel: their rows, and what was handed on for channels left without
    /// subscribers. Returns channel → the forgotten socket ids.
    pub(super) fn drop_gone(
        &self,
        channel: Option<&str>,
    ) -> worker::Result<BTreeMap<String, Vec<String>>> {
        let dropped = {
            let sockets = self.sockets.borrow();
            self.with_shard(|s| s.drop_gone(channel, |id| !sockets.contains_key(id)))
        };
        let sql = self.sql();
        for (c, gone) in &dropped {
            for socket in gone {
                sql.exec(
                    "DELETE FROM subs WHERE socket = ? AND channel = ?",
                    Some(vec![socket.clone().into(), c.clone().into()]),
                )?;
            }
            if self.with_shard(|s| s.subscribers(c)) == 0 {
                sql.exec(
                    "DELETE FROM handed WHERE channel = ?",
                    Some(vec![c.clone().into()]),
                )?;
            }
        }
        Ok(dropped)
    }

    /// Every subscription of a socket this shard no longer holds is forgotten here and, in the
    /// background, by its channel's room.
    pub(super) fn sweep(&self) -> worker::Result<()> {
        // v2 sockets' admissions go with their sockets.
        let gone: Vec<String> = {
            let sockets = self.sockets.borrow();
            let natives = self.natives.borrow();
            natives
                .keys()
                .filter(|s| !sockets.contains_key(*s))
                .cloned()
                .collect()
        };
        for s in gone {
            self.forget_native(&s)?;
        }
        let dropped = self.drop_gone(None)?;
        if dropped.is_empty() {
            return Ok(());
        }
        let name = self.name()?;
        let app = name
            .rsplit_once(':')
            .map_or(name.as_str(), |(app, _)| app)
            .to_string();
        let sockets: usize = dropped.values().map(Vec::len).sum();
        worker::console_log!(
            "{}",
            serde_json::json!({"level": "info", "event": "pusher_sweep", "shard": name,
                "channels": dropped.len(), "subscriptions": sockets})
        );
        for (channel, conns) in dropped {
            let (env, key) = (self.env.clone(), subscribed_key(&app, &channel));
            spawn(&raw_state(&self.state), async move {
                if let Err(e) = room_unsubscribe(&env, &key, conns).await {
                    log_error("pusher_sweep_unsubscribe", &e);
                }
            });
        }
        Ok(())
    }

    /// Makes sure the sweep alarm is set while the shard has subscriptions.
    pub(super) async fn arm_sweep(&self) -> worker::Result<()> {
        let every_ms = settings::config(&self.env)
            .map_err(|e| worker::Error::RustError(e.to_string()))?
            .pusher_sweep_s
            * 1000;
        self.sweep_alarm
            .no_later_than(&self.state.storage(), now_ms() + every_ms)
            .await
    }

    /// The alarm fired: v2 sockets whose token expired are closed (4001), the shard is swept,
    /// and the alarm is set again while subscriptions or token expiries remain.
    pub(super) async fn on_sweep_alarm(&self) -> worker::Result<()> {
        self.sweep_alarm.fired();
        self.ensure_loaded()?;
        self.expire_natives(now_ms())?;
        self.sweep()?;
        if !self.with_shard(|s| s.is_empty()) {
            self.arm_sweep().await?;
        }
        self.arm_expiry().await
    }
}

/// Unsubscribes `conns` from the room with key `key` (retried: a lost call would leave them
/// subscribed, and a presence member present).
pub(super) async fn room_unsubscribe(
    env: &Env,
    key: &str,
    conns: Vec<String>,
) -> std::result::Result<(), String> {
    let body = serde_json::to_string(&Unsubscribe { conns }).map_err(|e| e.to_string())?;
    let mut delay_ms = 50;
    for attempt in 1..=UNSUBSCRIBE_ATTEMPTS {
        let call = Call::new(Op::RoomUnsubscribe).body(body.clone());
        match channel_call(env, key, call).await {
            Ok(r) if r.status_code() < 300 => return Ok(()),
            Ok(r) if attempt == UNSUBSCRIBE_ATTEMPTS => {
                return Err(format!("{key}: room answered {}", r.status_code()))
            }
            Err(e) if attempt == UNSUBSCRIBE_ATTEMPTS => return Err(format!("{key}: {e}")),
            _ => {
                worker::Delay::from(std::time::Duration::from_millis(delay_ms)).await;
                delay_ms *= 4;
            }
        }
    }
    Ok(())
}

/// The room's messages after `since`, as deliveries (a gap's fill), and whether some of them
/// were already trimmed from its history.
async fn history(
    env: &Env,
    key: &str,
    since: u64,
) -> std::result::Result<(Vec<Delivered>, bool), String> {
    let call = Call::new(Op::RoomHistory).query(&format!("since={since}&limit={MAX_HISTORY_PAGE}"));
    let mut r = channel_call(env, key, call)
        .await
        .map_err(|e| e.to_string())?;
    if r.status_code() != 200 {
        return Err(format!("history answered {}", r.status_code()));
    }
    let page: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    let truncated = page["truncated"].as_bool().unwrap_or(false);
    let frames = page["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let mut frame = m.clone();
            frame["type"] = "message".into();
            Delivered {
                frame,
                to: None,
                except: None,
            }
        })
        .collect();
    Ok((frames, truncated))
}
