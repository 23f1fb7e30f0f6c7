//! A room's publish ceilings: per connection (`ROOM_PUBLISH_RATE`/`_BURST`), per user
//! (`ROOM_PUBLISH_USER_RATE`/`_BURST`) and per room (`ROOM_PUBLISH_ROOM_RATE`/`_BURST`), each a
//! GCRA bucket of [`crate::coordination::limiter`], and the per-connection strike counts.
//!
//! A publish from a socket spends one from each bucket that applies, or from none: the buckets
//! are checked on copies and written back only when every one allows, so a refusal by one
//! ceiling never uses up another's budget. An HTTP broadcast spends from the room bucket only.
//!
//! Everything is kept in memory only: an object is evicted only after it has been idle for
//! longer than a bucket takes to refill, so losing them with the instance grants nothing a
//! wait would not.

use std::collections::HashMap;

use crate::coordination::limiter::{self, GcraState, Policy};
use crate::rooms::limits::RoomLimits;

/// Which ceiling refused a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceiling {
    /// `ROOM_PUBLISH_RATE` / `ROOM_PUBLISH_BURST`: this connection.
    Connection,
    /// `ROOM_PUBLISH_USER_RATE` / `ROOM_PUBLISH_USER_BURST`: all of this user's connections.
    User,
    /// `ROOM_PUBLISH_ROOM_RATE` / `ROOM_PUBLISH_ROOM_BURST`: everyone in the room, and the
    /// HTTP broadcast.
    Room,
}

impl Ceiling {
    /// How the refusal names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connection => "connection",
            Self::User => "user",
            Self::Room => "room",
        }
    }
}

/// A refused publish: the ceiling that refused and the exact wait until one would be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// The (first) ceiling that refused.
    pub ceiling: Ceiling,
    /// Milliseconds until every ceiling allows one more.
    pub retry_after_ms: u64,
}

impl Limited {
    /// The `rate_limited` error message.
    pub fn message(&self) -> String {
        format!(
            "too many messages ({} limit); retry in {} ms",
            self.ceiling.as_str(),
            self.retry_after_ms
        )
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct ConnRate {
    bucket: GcraState,
    strikes: u32,
}

/// The publish buckets and strike counts of one room.
#[derive(Debug, Clone)]
pub struct PublishRates {
    conn_policy: Policy,
    user_policy: Option<Policy>,
    room_policy: Option<Policy>,
    conns: HashMap<String, ConnRate>,
    users: HashMap<String, GcraState>,
    room: GcraState,
    /// User buckets kept before full ones of users without a connection are dropped.
    max_users: usize,
}

/// A per-second policy, or `None` when `rate` is 0 (the ceiling is off).
fn policy(rate: u32, burst: u32) -> Option<Policy> {
    if rate == 0 {
        return None;
    }
    Policy::new(rate, 1000, burst.max(1)).ok()
}

impl PublishRates {
    /// Buckets for these limits (a rate of 0 turns the user or room ceiling off).
    pub fn new(limits: &RoomLimits) -> Self {
        Self {
            conn_policy: limits.publish_policy(),
            user_policy: policy(limits.publish_user_rate, limits.publish_user_burst),
            room_policy: policy(limits.publish_room_rate, limits.publish_room_burst),
            conns: HashMap::new(),
            users: HashMap::new(),
            room: GcraState::default(),
            max_users: limits.max_connections.max(64),
        }
    }

    /// One publish from connection `conn` of `user` (`None` for an anonymous connection, whose
    /// user id is new on every connection: its per-user ceiling is the per-connection one).
    /// Spends one from every bucket, or from none when any refuses. `has_conns(user)` says
    /// whether a user still has a connection, for dropping idle user buckets.
    pub fn check(
        &mut self,
        conn: &str,
        user: Option<&str>,
        now_ms: u64,
        has_conns: impl Fn(&str) -> bool,
    ) -> Result<(), Limited> {
        let mut conn_bucket = self.conns.get(conn).copied().unwrap_or_default().bucket;
        let mut user_bucket = user.and_then(|u| self.users.get(u).copied());
        let mut room_bucket = self.room;
        let mut refusal: Option<Limited> = None;
        let mut spend = |bucket: &mut GcraState, policy: &Policy, ceiling: Ceiling| {
            let d = limiter::check(bucket, policy, now_ms, 1)
                .expect("cost 1 never exceeds a burst of at least 1");
            if !d.allowed {
                let r = refusal.get_or_insert(Limited {
                    ceiling,
                    retry_after_ms: 0,
                });
                r.retry_after_ms = r.retry_after_ms.max(d.retry_after_ms);
            }
        };
        spend(&mut conn_bucket, &self.conn_policy, Ceiling::Connection);
        if let (Some(_), Some(p)) = (user, &self.user_policy) {
            spend(
                user_bucket.get_or_insert_with(GcraState::default),
                p,
                Ceiling::User,
            );
        }
        if let Some(p) = &self.room_policy {
            spend(&mut room_bucket, p, Ceiling::Room);
        }
        if let Some(r) = refusal {
            return Err(r);
        }
        self.conns.entry(conn.to_string()).or_default().bucket = conn_bucket;
        self.room = room_bucket;
        if let (Some(u), Some(b)) = (user, user_bucket) {
            if !self.users.contains_key(u) && self.users.len() >= self.max_users {
                // Full buckets of users who left grant nothing a wait would not: drop them.
                self.users
                    .retain(|u, b| b.tat_ms > now_ms || has_conns(u.as_str()));
            }
            self.users.insert(u.to_string(), b);
        }
        Ok(())
    }

    /// One publish through the HTTP broadcast: the room ceiling only.
    pub fn check_room(&mut self, now_ms: u64) -> Result<(), Limited> {
        let Some(p) = &self.room_policy else {
            return Ok(());
        };
        let mut bucket = self.room;
        let d = limiter::check(&mut bucket, p, now_ms, 1)
            .expect("cost 1 never exceeds a burst of at least 1");
        if !d.allowed {
            return Err(Limited {
                ceiling: Ceiling::Room,
                retry_after_ms: d.retry_after_ms,
            });
        }
        self.room = bucket;
        Ok(())
    }

    /// Counts one more refused frame in a row on `conn`; returns the count.
    pub fn strike(&mut self, conn: &str) -> u32 {
        let r = self.conns.entry(conn.to_string()).or_default();
        r.strikes += 1;
        r.strikes
    }

    /// An accepted frame on `conn`: its refusals in a row start again from 0.
    pub fn clear_strikes(&mut self, conn: &str) {
        if let Some(r) = self.conns.get_mut(conn) {
            r.strikes = 0;
        }
    }

    /// The connection closed: forget its bucket and strikes (a user's bucket stays).
    pub fn forget(&mut self, conn: &str) {
        self.conns.remove(conn);
    }

    /// Drops the user buckets that are full again and whose user has no connection left.
    pub fn prune(&mut self, now_ms: u64, has_conns: impl Fn(&str) -> bool) {
        self.users
            .retain(|u, b| b.tat_ms > now_ms || has_conns(u.as_str()));
    }

    /// User buckets held (for tests).
    pub fn users_held(&self) -> usize {
        self.users.len()
    }
}
