//! A gateway shard's bookkeeping, without the runtime: which of its sockets subscribe to which
//! channel (and from which offset), what it last handed on per channel, and how a room's
//! [`Delivery`] becomes Pusher frames for its sockets.
//!
//! Order and gaps: a room delivers to a shard one call at a time, in offset order. The shard
//! remembers the last offset it handed on per channel; a delivery whose first message is past
//! the next offset shows a gap (a lost call, an eviction of the room), which the glue fills
//! from the room's history before calling [`Shard::deliver`] with the missing frames first.
//! Messages at or below what a socket already has are never handed on twice.
//!
//! Subscribing takes a call to the room, and deliveries may arrive while it is in flight: a
//! socket whose subscription is pending has its frames held, and they follow its
//! `pusher_internal:subscription_succeeded` once the room answered.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::rooms::shards::{frame_offset, Delivered};

use super::presence::Member;
use super::wire::{self, ChannelEvent};

/// The `from.id` of a message a socket caused (a client event, or a REST trigger naming its
/// `socket_id`): that socket does not receive it.
pub fn socket_sender(socket_id: &str) -> String {
    format!("socket:{socket_id}")
}

/// One socket's subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sub {
    /// Waiting for the room's answer; frames that arrive meanwhile are held.
    Pending(Vec<(Option<u64>, String)>),
    /// Subscribed: messages after this offset are its.
    From(u64),
}

/// Frames to send: (socket id, Pusher frame text), in order.
pub type Sends = Vec<(String, String)>;

/// The shard's subscriptions.
#[derive(Debug, Default)]
pub struct Shard {
    /// Channel → socket → subscription.
    channels: BTreeMap<String, BTreeMap<String, Sub>>,
    /// (channel, socket) → the presence member's user id, on presence channels.
    users: BTreeMap<(String, String), String>,
    /// Channel → the last message offset handed on.
    last: BTreeMap<String, u64>,
}

impl Shard {
    /// An empty shard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores a subscription (the object woke up): messages after `from` are the socket's.
    pub fn restore(&mut self, channel: &str, socket: &str, from: u64, user: Option<&str>) {
        self.insert(channel, socket, Sub::From(from), user);
        let last = self.last.entry(channel.to_string()).or_insert(from);
        *last = (*last).max(from);
    }

    /// Restores what the shard last handed on for `channel` (stored after each delivery), so
    /// a woken or reset shard neither repeats nor skips messages.
    pub fn restore_last(&mut self, channel: &str, last: u64) {
        if self.channels.contains_key(channel) {
            self.last.insert(channel.to_string(), last);
        }
    }

    /// Whether `socket` is subscribed to `channel` (or subscribing).
    pub fn is_subscribed(&self, channel: &str, socket: &str) -> bool {
        self.channels
            .get(channel)
            .is_some_and(|m| m.contains_key(socket))
    }

    /// The channels `socket` is subscribed to (or subscribing).
    pub fn channels_of(&self, socket: &str) -> Vec<String> {
        self.channels
            .iter()
            .filter(|(_, m)| m.contains_key(socket))
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// How many channels `socket` is subscribed to.
    pub fn count_of(&self, socket: &str) -> usize {
        self.channels
            .values()
            .filter(|m| m.contains_key(socket))
            .count()
    }

    /// Every channel with subscribers here: its subscribed sockets and, on presence channels,
    /// the distinct user ids among them.
    pub fn occupied(&self) -> Vec<(String, usize, Vec<String>)> {
        self.channels
            .iter()
            .map(|(c, m)| {
                let mut users: Vec<String> = m
                    .keys()
                    .filter_map(|s| self.user_of(c, s).map(str::to_string))
                    .collect();
                users.sort();
                users.dedup();
                (c.clone(), m.len(), users)
            })
            .collect()
    }

    /// The shard's subscribed sockets of `channel`.
    pub fn subscribers(&self, channel: &str) -> usize {
        self.channels.get(channel).map_or(0, BTreeMap::len)
    }

    /// The presence user id `socket` subscribed to `channel` as.
    pub fn user_of(&self, channel: &str, socket: &str) -> Option<&str> {
        self.users
            .get(&(channel.to_string(), socket.to_string()))
            .map(String::as_str)
    }

    /// Whether `socket`'s subscription to `channel` is complete (not pending).
    pub fn is_active(&self, channel: &str, socket: &str) -> bool {
        matches!(
            self.channels.get(channel).and_then(|m| m.get(socket)),
            Some(Sub::From(_))
        )
    }

    /// Where `socket`'s subscription to `channel` started and the last offset handed on to it
    /// (at least its start), once the subscription is complete.
    pub fn handed(&self, channel: &str, socket: &str) -> Option<(u64, u64)> {
        match self.channels.get(channel)?.get(socket)? {
            Sub::From(start) => Some((*start, (*start).max(self.last(channel).unwrap_or(0)))),
            Sub::Pending(_) => None,
        }
    }

    /// Whether `socket`'s subscription to `channel` waits for the room's answer (it was not
    /// given up meanwhile).
    pub fn is_pending(&self, channel: &str, socket: &str) -> bool {
        matches!(
            self.channels.get(channel).and_then(|m| m.get(socket)),
            Some(Sub::Pending(_))
        )
    }

    /// A socket starts subscribing: frames for it are held until [`Self::subscribed`]. A
    /// presence member's `user` is kept for its client events.
    pub fn subscribing(&mut self, channel: &str, socket: &str, user: Option<&str>) {
        self.insert(channel, socket, Sub::Pending(Vec::new()), user);
    }

    fn insert(&mut self, channel: &str, socket: &str, sub: Sub, user: Option<&str>) {
        if let Some(u) = user {
            self.users
                .insert((channel.to_string(), socket.to_string()), u.to_string());
        }
        self.channels
            .entry(channel.to_string())
            .or_default()
            .insert(socket.to_string(), sub);
    }

    /// The room accepted the subscription at stream offset `from`: the frames to send, in
    /// order — the `subscription_succeeded` given, then what was held for the socket (only
    /// messages after `from`).
    pub fn subscribed(
        &mut self,
        channel: &str,
        socket: &str,
        from: u64,
        succeeded: String,
    ) -> Sends {
        let mut out = vec![(socket.to_string(), succeeded)];
        let Some(m) = self.channels.get_mut(channel) else {
            return out;
        };
        if let Some(Sub::Pending(held)) = m.insert(socket.to_string(), Sub::From(from)) {
            for (offset, frame) in held {
                if offset.is_none_or(|o| o > from) {
                    out.push((socket.to_string(), frame));
                }
            }
        }
        self.last.entry(channel.to_string()).or_insert(from);
        out
    }

    /// The socket left the channel (unsubscribed, refused, or closed). Returns whether the
    /// channel has no subscriber left here.
    pub fn unsubscribe(&mut self, channel: &str, socket: &str) -> bool {
        self.users
            .remove(&(channel.to_string(), socket.to_string()));
        let Some(m) = self.channels.get_mut(channel) else {
            return true;
        };
        m.remove(socket);
        if m.is_empty() {
            self.channels.remove(channel);
            self.last.remove(channel);
            return true;
        }
        false
    }

    /// The socket closed: it leaves every channel. Returns the channels it was in.
    pub fn remove_socket(&mut self, socket: &str) -> Vec<String> {
        let channels = self.channels_of(socket);
        for c in &channels {
            self.unsubscribe(c, socket);
        }
        channels
    }

    /// Forgets the subscriptions of sockets this shard no longer holds (`gone`: closed while
    /// the object was reset or restarted, so no close event came), on `channel` only or on
    /// every channel. Returns channel → the forgotten sockets, for the rooms to forget them.
    pub fn drop_gone(
        &mut self,
        channel: Option<&str>,
        gone: impl Fn(&str) -> bool,
    ) -> BTreeMap<String, Vec<String>> {
        let mut dropped: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (c, m) in &self.channels {
            if channel.is_some_and(|only| only != c) {
                continue;
            }
            let sockets: Vec<String> = m.keys().filter(|s| gone(s)).cloned().collect();
            if !sockets.is_empty() {
                dropped.insert(c.clone(), sockets);
            }
        }
        for (c, sockets) in &dropped {
            for s in sockets {
                self.unsubscribe(c, s);
            }
        }
        dropped
    }

    /// Whether any socket here is subscribed to a channel (or subscribing).
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// If `frames` start past the next offset of `channel`, the offset after which history
    /// must be read first (the gap); `None` when in order, or when nothing was handed on yet.
    pub fn gap(&self, channel: &str, frames: &[Delivered]) -> Option<u64> {
        let last = *self.last.get(channel)?;
        let first = frames.iter().find_map(|d| frame_offset(&d.frame))?;
        (first > last + 1).then_some(last)
    }

    /// The last offset handed on for `channel`.
    pub fn last(&self, channel: &str) -> Option<u64> {
        self.last.get(channel).copied()
    }

    /// Turns a room's frames into Pusher frames for the shard's sockets of `channel`.
    pub fn deliver(&mut self, channel: &str, frames: &[Delivered]) -> Sends {
        self.deliver_with(channel, frames, |f| channel_frame(channel, f))
    }

    /// Turns a room's frames into the frames of the shard's sockets of `channel` with
    /// `translate` (a frame's text and its sender's socket id, which does not get it; `None`:
    /// not for sockets), in order, each message once, and none a socket's start covers.
    pub fn deliver_with(
        &mut self,
        channel: &str,
        frames: &[Delivered],
        translate: impl Fn(&Value) -> Option<(String, Option<String>)>,
    ) -> Sends {
        let mut out = Vec::new();
        for d in frames {
            let offset = frame_offset(&d.frame);
            if let Some(o) = offset {
                let last = self.last.get(channel).copied().unwrap_or(0);
                if o <= last && self.last.contains_key(channel) {
                    continue; // already handed on (a retried or refilled delivery)
                }
            }
            let Some((text, from)) = translate(&d.frame) else {
                continue;
            };
            let Some(m) = self.channels.get_mut(channel) else {
                continue;
            };
            for (socket, sub) in m.iter_mut() {
                if d.to.as_deref().is_some_and(|t| t != socket)
                    || d.except.as_deref() == Some(socket.as_str())
                    || from.as_deref() == Some(socket_sender(socket).as_str())
                {
                    continue;
                }
                match sub {
                    Sub::Pending(held) => held.push((offset, text.clone())),
                    Sub::From(start) if offset.is_some_and(|o| o <= *start) => {}
                    Sub::From(_) => out.push((socket.clone(), text.clone())),
                }
            }
            if let Some(o) = offset {
                self.last.insert(channel.to_string(), o);
            }
        }
        out
    }
}

/// The Pusher frame of a room frame on `channel`, and the sender id of a message.
pub fn channel_frame(channel: &str, frame: &Value) -> Option<(String, Option<String>)> {
    let member = |f: &Value| Member {
        user_id: f["member"]["id"].as_str().unwrap_or_default().to_string(),
        user_info: f["member"].get("meta").cloned().filter(|v| !v.is_null()),
    };
    match frame["type"].as_str()? {
        "message" => {
            let body = &frame["body"];
            let event = ChannelEvent {
                event: body["event"].as_str()?.to_string(),
                channel: channel.to_string(),
                data: body["data"].as_str()?.to_string(),
                user_id: body["user_id"].as_str().map(str::to_string),
                offset: frame["offset"].as_u64(),
            };
            let from = frame["from"]["id"].as_str().map(str::to_string);
            Some((wire::channel_event_frame(&event), from))
        }
        "joined" => Some((wire::member_added_frame(channel, &member(frame)), None)),
        "left" => {
            let id = frame["member"]["id"].as_str()?;
            Some((wire::member_removed_frame(channel, id), None))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(offset: u64, event: &str) -> Delivered {
        Delivered {
            frame: json!({"type": "message", "offset": offset, "ts": 1,
                "from": {"id": "api:pusher", "name": "api", "conns": 0},
                "body": {"event": event, "data": "{\"n\":1}"}}),
            to: None,
            except: None,
        }
    }

    fn events(sends: &Sends) -> Vec<(String, String)> {
        sends
            .iter()
            .map(|(s, f)| {
                let v: Value = serde_json::from_str(f).unwrap();
                (s.clone(), v["event"].as_str().unwrap().to_string())
            })
            .collect()
    }

    #[test]
    fn a_delivery_reaches_every_subscribed_socket_once_in_order() {
        let mut s = Shard::new();
        s.restore("news", "1.1", 0, None);
        s.restore("news", "1.2", 0, None);
        s.restore("other", "1.3", 0, None);
        let out = s.deliver("news", &[msg(1, "a"), msg(2, "b")]);
        assert_eq!(
            events(&out),
            vec![
                ("1.1".into(), "a".into()),
                ("1.2".into(), "a".into()),
                ("1.1".into(), "b".into()),
                ("1.2".into(), "b".into())
            ]
        );
        let v: Value = serde_json::from_str(&out[0].1).unwrap();
        assert_eq!(
            (
                v["channel"].as_str(),
                v["data"].as_str(),
                v["offset"].as_u64()
            ),
            (Some("news"), Some("{\"n\":1}"), Some(1))
        );
        // A retried delivery hands nothing on twice.
        assert!(s.deliver("news", &[msg(2, "b")]).is_empty());
        assert_eq!(s.last("news"), Some(2));
    }

    #[test]
    fn what_a_socket_was_handed_is_its_start_or_the_channels_last() {
        let mut s = Shard::new();
        s.subscribing("news", "1.1", None);
        assert_eq!(s.handed("news", "1.1"), None, "pending");
        assert!(s.is_pending("news", "1.1") && !s.is_pending("news", "1.2"));
        s.subscribed("news", "1.1", 5, "ok".into());
        assert_eq!(s.handed("news", "1.1"), Some((5, 5)));
        s.deliver("news", &[msg(6, "a"), msg(7, "b")]);
        assert_eq!(s.handed("news", "1.1"), Some((5, 7)));
        assert_eq!(s.handed("news", "1.2"), None);
    }

    #[test]
    fn a_gap_is_reported_and_refilled_frames_are_not_repeated() {
        let mut s = Shard::new();
        s.restore("news", "1.1", 3, None);
        assert_eq!(s.gap("news", &[msg(4, "x")]), None);
        assert_eq!(s.gap("news", &[msg(6, "x")]), Some(3));
        assert_eq!(s.gap("unknown", &[msg(6, "x")]), None);
        let out = s.deliver("news", &[msg(4, "a"), msg(5, "b"), msg(6, "c")]);
        assert_eq!(out.len(), 3);
        assert!(s.deliver("news", &[msg(5, "b"), msg(6, "c")]).is_empty());
    }

    #[test]
    fn a_restored_last_offset_skips_what_was_handed_on_before_a_reset() {
        let mut s = Shard::new();
        s.restore("news", "1.1", 2, None);
        s.restore_last("news", 5);
        s.restore_last("gone", 9);
        assert_eq!(s.last("gone"), None);
        assert_eq!(s.gap("news", &[msg(7, "x")]), Some(5));
        let out = s.deliver("news", &[msg(5, "old"), msg(6, "a")]);
        assert_eq!(events(&out), vec![("1.1".into(), "a".into())]);
    }

    #[test]
    fn the_sender_and_the_excluded_socket_do_not_get_their_event() {
        let mut s = Shard::new();
        s.restore("private-x", "1.1", 0, None);
        s.restore("private-x", "1.2", 0, None);
        let mut m = msg(1, "client-typing");
        m.frame["from"]["id"] = json!(socket_sender("1.1"));
        assert_eq!(
            events(&s.deliver("private-x", &[m])),
            vec![("1.2".into(), "client-typing".into())]
        );
        let mut m = msg(2, "e");
        m.except = Some("1.2".into());
        assert_eq!(
            events(&s.deliver("private-x", &[m])),
            vec![("1.1".into(), "e".into())]
        );
    }

    #[test]
    fn frames_for_a_pending_subscription_follow_its_success() {
        let mut s = Shard::new();
        s.subscribing("news", "1.1", None);
        // Offset 5 was already in the stream when the room accepted it (from = 5).
        assert!(s
            .deliver("news", &[msg(5, "old"), msg(6, "new")])
            .is_empty());
        let out = s.subscribed("news", "1.1", 5, "ok".into());
        assert_eq!(out[0], ("1.1".into(), "ok".into()));
        assert_eq!(out.len(), 2);
        assert!(out[1].1.contains("\"new\""));
    }

    #[test]
    fn presence_frames_become_member_events() {
        let mut s = Shard::new();
        s.restore("presence-r", "1.1", 0, None);
        let joined = Delivered {
            frame: json!({"type": "joined", "member": {"id": "u2", "name": "u2", "meta": {"n": "Bo"}, "conns": 1}}),
            to: None,
            except: None,
        };
        let left = Delivered {
            frame: json!({"type": "left", "member": {"id": "u2", "name": "u2", "conns": 0}}),
            to: None,
            except: None,
        };
        let out = s.deliver("presence-r", &[joined, left]);
        assert_eq!(
            events(&out),
            vec![
                ("1.1".into(), "pusher_internal:member_added".into()),
                ("1.1".into(), "pusher_internal:member_removed".into())
            ]
        );
        let v: Value = serde_json::from_str(&out[0].1).unwrap();
        let data: Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
        assert_eq!(data, json!({"user_id": "u2", "user_info": {"n": "Bo"}}));
    }

    #[test]
    fn presence_users_are_kept_per_subscription() {
        let mut s = Shard::new();
        s.subscribing("presence-r", "1.1", Some("u1"));
        assert!(!s.is_active("presence-r", "1.1"));
        s.subscribed("presence-r", "1.1", 0, "ok".into());
        assert!(s.is_active("presence-r", "1.1"));
        assert_eq!(s.user_of("presence-r", "1.1"), Some("u1"));
        s.restore("presence-q", "1.2", 0, Some("u2"));
        assert_eq!(s.user_of("presence-q", "1.2"), Some("u2"));
        s.restore("presence-q", "1.3", 0, Some("u2"));
        assert_eq!(
            s.occupied(),
            vec![
                ("presence-q".to_string(), 2, vec!["u2".to_string()]),
                ("presence-r".to_string(), 1, vec!["u1".to_string()])
            ]
        );
        s.remove_socket("1.1");
        assert_eq!(s.user_of("presence-r", "1.1"), None);
    }

    #[test]
    fn subscriptions_of_gone_sockets_are_dropped_per_channel_or_everywhere() {
        let mut s = Shard::new();
        for (c, sock) in [("a", "1.1"), ("a", "2.2"), ("b", "1.1"), ("b", "3.3")] {
            s.restore(c, sock, 0, None);
        }
        let gone = |sock: &str| sock == "1.1";
        let only_a = s.drop_gone(Some("a"), gone);
        assert_eq!(
            only_a.into_iter().collect::<Vec<_>>(),
            vec![("a".to_string(), vec!["1.1".to_string()])]
        );
        assert!(s.is_subscribed("b", "1.1"), "another channel is left alone");
        let rest = s.drop_gone(None, gone);
        assert_eq!(rest.get("b"), Some(&vec!["1.1".to_string()]));
        assert_eq!(s.channels_of("1.1"), Vec::<String>::new());
        assert!(s.drop_gone(None, |sock| sock != "zz").len() == 2);
        assert!(s.is_empty());
    }

    #[test]
    fn sockets_leave_and_empty_channels_are_forgotten() {
        let mut s = Shard::new();
        s.restore("a", "1.1", 0, None);
        s.restore("b", "1.1", 0, None);
        s.restore("a", "1.2", 0, None);
        assert_eq!(s.count_of("1.1"), 2);
        assert_eq!(
            s.remove_socket("1.1"),
            vec!["a".to_string(), "b".to_string()]
        );
        assert_eq!((s.subscribers("a"), s.subscribers("b")), (1, 0));
        assert_eq!(s.last("b"), None);
        assert!(s.unsubscribe("a", "1.2"));
    }
}
