//! The Room object's side of subscribers held by gateway shards: subscribing and
//! unsubscribing them (`RoomSubscribe`, `RoomUnsubscribe`), and sending them frames through
//! their shards' [`Outbox`](super::shards::Outbox).

use std::collections::BTreeSet;

use worker::{Request, Response};

use crate::glue::http::{internal, json, now_ms, read_json};
use crate::http::error::ApiError;
use crate::objects::rooms::room::Room;
use crate::objects::rooms::shards::remove;
use crate::objects::sessions::session::{raw_state, spawn};
use crate::pusher::webhook::WebhookEvent;
use crate::rooms::protocol::{RawFrame, ServerFrame};
use crate::rooms::room::Effect;
use crate::rooms::shards::{
    parse_channel_key, Delivered, Subscribe, SubscribeAnswer, Unsubscribe, ViaFrame,
};

impl Room {
    /// `RoomSubscribe`: adds a shard-held subscriber and joins it; answers its own frames.
    pub(super) async fn subscribe(&self, mut req: Request) -> Result<Response, ApiError> {
        let sub: Subscribe = read_json(&mut req).await?;
        let conn = sub.session.conn.clone();
        if sub.session.via.is_none() {
            return Err(ApiError::bad_request(
                "invalid_subscriber",
                "no shard named",
            ));
        }
        let before = self.with_core(|c| c.connections());
        // A repeated subscribe (a retried call) replaces the earlier session.
        let mut effects = self.with_core(|c| c.detach(&conn));
        self.with_core(|c| c.attach(sub.session));
        let mut join = serde_json::json!({"type": "join", "name": sub.name, "meta": sub.meta,
            "history": sub.history.unwrap_or(0)});
        if let Some(since) = &sub.since {
            join["since"] = serde_json::to_value(since).map_err(internal)?;
        }
        let text = join.to_string();
        let mut store = self.store();
        effects.extend(
            self.with_core(|c| c.receive(&mut store, &conn, RawFrame::Text(&text), now_ms())),
        );
        let mut frames = Vec::new();
        let mut subscribed = true;
        let mut rest = Vec::new();
        for e in effects {
            match e {
                Effect::Send { conn: c, frame } if c == conn => {
                    subscribed &= !matches!(frame, ServerFrame::Error { .. });
                    frames.push(serde_json::to_value(&frame).map_err(internal)?);
                }
                Effect::Close { conn: c, .. } if c == conn => subscribed = false,
                other => rest.push(other),
            }
        }
        if !subscribed {
            rest.extend(self.with_core(|c| c.detach(&conn)));
            rest.retain(|e| !matches!(e, Effect::Save(s) if s.conn == conn));
        }
        let after = self.with_core(|c| c.connections());
        self.raise(before, after, &rest);
        self.perform(rest).await.map_err(internal)?;
        json(200, &SubscribeAnswer { subscribed, frames })
    }

    /// `RoomFrame`: a shard-held subscriber's frame, handled as its socket's would be; what
    /// it causes goes out with the room's other frames (to the subscriber through its shard).
    pub(super) async fn via_frame(&self, mut req: Request) -> Result<Response, ApiError> {
        let f: ViaFrame = read_json(&mut req).await?;
        if !self.with_core(|c| c.session(&f.conn).is_some_and(|s| s.via.is_some())) {
            return Err(ApiError::not_found(
                "not_subscribed",
                "not subscribed to this room",
            ));
        }
        let effects = {
            let mut store = self.store();
            self.with_core(|c| c.receive(&mut store, &f.conn, RawFrame::Text(&f.frame), now_ms()))
        };
        self.note_unreadable();
        self.perform(effects).await.map_err(internal)?;
        Response::empty()
            .map(|r| r.with_status(204))
            .map_err(internal)
    }

    /// `RoomUnsubscribe`: shard-held subscribers leave.
    pub(super) async fn unsubscribe(&self, mut req: Request) -> Result<Response, ApiError> {
        let u: Unsubscribe = read_json(&mut req).await?;
        self.forget_remote(u.conns).map_err(internal)?;
        Response::empty()
            .map(|r| r.with_status(204))
            .map_err(internal)
    }

    /// Forgets shard-held subscribers (unsubscribed, or gone from their shard) and tells the
    /// others what their leaving changes (presence).
    fn forget_remote(&self, conns: Vec<String>) -> worker::Result<()> {
        let sql = self.store().0;
        let before = self.with_core(|c| c.connections());
        let mut effects = Vec::new();
        for conn in conns {
            if self.with_core(|c| c.session(&conn).is_some_and(|s| s.via.is_some())) {
                effects.extend(self.with_core(|c| c.detach(&conn)));
                remove(&sql, &conn)?;
            }
        }
        let after = self.with_core(|c| c.connections());
        self.raise(before, after, &effects);
        for e in effects {
            if let Effect::Broadcast { frame, to, except } = e {
                self.broadcast(&frame, to, except.as_deref());
            }
        }
        Ok(())
    }

    /// The webhook events of a change of a channel's subscribers (`before` → `after`
    /// subscriptions, and the presence frames it broadcasts): occupied and vacated once per
    /// transition, member added and removed once per user — decided here, in the one object
    /// of the channel. Sent in the background, through the job queue.
    fn raise(&self, before: usize, after: usize, effects: &[Effect]) {
        let key = self.with_core(|c| c.key().to_string());
        let Some((app, channel)) = parse_channel_key(&key) else {
            return;
        };
        let channel = channel.to_string();
        let mut events = Vec::new();
        if before == 0 && after > 0 {
            events.push(WebhookEvent::ChannelOccupied {
                channel: channel.clone(),
            });
        }
        for e in effects {
            match e {
                Effect::Broadcast {
                    frame: ServerFrame::Joined { member },
                    ..
                } => events.push(WebhookEvent::MemberAdded {
                    channel: channel.clone(),
                    user_id: member.id.clone(),
                }),
                Effect::Broadcast {
                    frame: ServerFrame::Left { member },
                    ..
                } => events.push(WebhookEvent::MemberRemoved {
                    channel: channel.clone(),
                    user_id: member.id.clone(),
                }),
                _ => {}
            }
        }
        if before > 0 && after == 0 {
            events.push(WebhookEvent::ChannelVacated { channel });
        }
        if events.is_empty() {
            return;
        }
        let (env, app) = (self.env.clone(), app.to_string());
        spawn(&raw_state(&self.state), async move {
            crate::glue::pusher::webhook(&env, &app, events).await
        });
    }

    /// Sends a frame for one shard-held subscriber through its shard; false if `conn` is not
    /// one (a socket of this object).
    pub(super) fn to_shard(&self, conn: &str, frame: &ServerFrame) -> bool {
        let Some(shard) = self.with_core(|c| c.session(conn).and_then(|s| s.via.clone())) else {
            return false;
        };
        if let Ok(frame) = serde_json::to_value(frame) {
            let d = Delivered {
                frame,
                to: Some(conn.to_string()),
                except: None,
            };
            self.push_to(&shard, d);
        }
        true
    }

    /// Queues one broadcast frame for each of `shards`.
    pub(super) fn to_shards(
        &self,
        frame: &ServerFrame,
        shards: BTreeSet<String>,
        except: Option<&str>,
    ) {
        if shards.is_empty() {
            return;
        }
        let Ok(frame) = serde_json::to_value(frame) else {
            return;
        };
        for shard in shards {
            let d = Delivered {
                frame: frame.clone(),
                to: None,
                except: except.map(str::to_string),
            };
            self.push_to(&shard, d);
        }
    }

    fn push_to(&self, shard: &str, d: Delivered) {
        let room = self.with_core(|c| c.key().to_string());
        self.outbox.push(&self.state, &self.env, &room, shard, d);
    }

    /// A forced close of a shard-held subscriber: its shard closes nothing (the socket has
    /// other channels), the subscriber is forgotten and told why.
    pub(super) fn close_remote(&self, conn: &str, code: u16, reason: &str) -> worker::Result<()> {
        if !self.with_core(|c| c.session(conn).is_some_and(|s| s.via.is_some())) {
            return Ok(());
        }
        let frame = ServerFrame::error("closed", format!("{code}: {reason}"), None);
        self.to_shard(conn, &frame);
        remove(&self.store().0, conn)
    }
}
