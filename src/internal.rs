//! The internal calls between the routing Worker and the Durable Objects (and between
//! objects): one enum of operations, encoded one way and decoded one way.
//!
//! Durable Object RPC is not available from Rust, so an object is reached with `fetch` on its
//! stub. Every operation any object answers is an [`Op`]; [`Op::path`] is its encoding (the
//! request path, plus the method: a body means `POST`), and [`Op::decode`] is the one decoding
//! an object runs on what it received. The glue's `stub::call` is the only code that builds
//! such a request, so a path is never spelt by hand in two places.

/// A Durable Object namespace, by its `wrangler.toml` binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// `ROOM`: one object per room.
    Room,
    /// `LIMITER`: one object per rate-limit key.
    Limiter,
    /// `LOCK`: one object per lock name.
    Lock,
    /// `METRICS`: the one service-wide metrics object.
    Metrics,
    /// `QUOTA`: one object per user's daily voice quota.
    Quota,
    /// `VOICE`: one object per voice session.
    Voice,
    /// `CHAT`: one object per chatbot conversation.
    Chat,
    /// `BENCH`: the raw rebroadcasting baseline (bench only).
    Bench,
    /// `GATEWAY`: one of N shards per Pusher app, holding client sockets.
    Gateway,
}

impl Binding {
    /// The binding's name in `wrangler.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Room => "ROOM",
            Self::Limiter => "LIMITER",
            Self::Lock => "LOCK",
            Self::Metrics => "METRICS",
            Self::Quota => "QUOTA",
            Self::Voice => "VOICE",
            Self::Chat => "CHAT",
            Self::Bench => "BENCH",
            Self::Gateway => "GATEWAY",
        }
    }
}

/// An operation an object answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Room: mark a new private room as created.
    RoomInit,
    /// Room: accept a WebSocket upgrade (with the router's admission).
    RoomSocket,
    /// Room: the room's summary and figures.
    RoomInfo,
    /// Room: a page of history (the query string is the caller's).
    RoomHistory,
    /// Room: publish one message from the HTTP API.
    RoomBroadcast,
    /// Room: close every connection (admin).
    RoomClose,
    /// Room: close one connection (admin).
    RoomCloseConnection,
    /// Room: add a subscriber held by a gateway shard, and join it (answers its frames).
    RoomSubscribe,
    /// Room: remove subscribers held by a gateway shard.
    RoomUnsubscribe,
    /// Room: a frame of a subscriber held by a gateway shard (a v2 socket's publish).
    RoomFrame,
    /// Limiter: one check of a key against a policy.
    LimiterCheck,
    /// Lock: the current lease and waiters.
    LockStatus,
    /// Lock: acquire or queue.
    LockAcquire,
    /// Lock: extend a lease.
    LockRenew,
    /// Lock: release a lease.
    LockRelease,
    /// Lock: the operator override, ending any lease.
    LockForceRelease,
    /// Metrics: add counter deltas.
    MetricsAdd,
    /// Metrics: every counter.
    MetricsAll,
    /// Metrics: rooms with open connections.
    MetricsRooms,
    /// Metrics: voice and chat sessions with open sockets.
    MetricsSessions,
    /// Quota: charge (or, all zero, read) a user's daily usage.
    QuotaCharge,
    /// Voice or Chat: accept a WebSocket upgrade (with the router's admission).
    SessionSocket,
    /// Bench: accept a WebSocket upgrade.
    BenchSocket,
    /// Bench: sockets held and the instance's random id.
    BenchStatus,
    /// Bench: panic on purpose (proves a panic leaves the object working).
    BenchPanic,
    /// Gateway: accept a WebSocket upgrade (with the router's app and socket id).
    GatewaySocket,
    /// Gateway: frames of one channel for the shard's subscribed sockets, in offset order.
    GatewayDeliver,
    /// Gateway: close the sockets signed in as one user (REST `terminate_connections`).
    GatewayTerminate,
    /// Gateway: the channels its sockets subscribe to, with counts and presence users.
    GatewayChannels,
    /// Gateway: close every socket with 4200, so clients reconnect at once (an operator's
    /// rebalance after a shard count change, or a drain before maintenance).
    GatewayReconnect,
}

/// Every operation with the namespaces that answer it, its path and whether it takes a body.
const OPS: &[(Op, &[Binding], &str, bool)] = &[
    (Op::RoomInit, &[Binding::Room], "/__init", true),
    (Op::RoomSocket, &[Binding::Room], "/__ws", false),
    (Op::RoomInfo, &[Binding::Room], "/__info", false),
    (Op::RoomHistory, &[Binding::Room], "/__history", false),
    (Op::RoomBroadcast, &[Binding::Room], "/__broadcast", true),
    (Op::RoomClose, &[Binding::Room], "/__close", true),
    (
        Op::RoomCloseConnection,
        &[Binding::Room],
        "/__close_conn",
        true,
    ),
    (Op::RoomSubscribe, &[Binding::Room], "/__subscribe", true),
    (
        Op::RoomUnsubscribe,
        &[Binding::Room],
        "/__unsubscribe",
        true,
    ),
    (Op::RoomFrame, &[Binding::Room], "/__frame", true),
    (Op::LimiterCheck, &[Binding::Limiter], "/check", true),
    (Op::LockStatus, &[Binding::Lock], "/status", false),
    (Op::LockAcquire, &[Binding::Lock], "/acquire", true),
    (Op::LockRenew, &[Binding::Lock], "/renew", true),
    (Op::LockRelease, &[Binding::Lock], "/release", true),
    (
        Op::LockForceRelease,
        &[Binding::Lock],
        "/force_release",
        true,
    ),
    (Op::MetricsAdd, &[Binding::Metrics], "/__add", true),
    (Op::MetricsAll, &[Binding::Metrics], "/__all", false),
    (Op::MetricsRooms, &[Binding::Metrics], "/__rooms", false),
    (
        Op::MetricsSessions,
        &[Binding::Metrics],
        "/__sessions",
        false,
    ),
    (Op::QuotaCharge, &[Binding::Quota], "/charge", true),
    (
        Op::SessionSocket,
        &[Binding::Voice, Binding::Chat],
        "/__ws",
        false,
    ),
    (Op::BenchSocket, &[Binding::Bench], "/__ws", false),
    (Op::BenchStatus, &[Binding::Bench], "/__status", false),
    (Op::BenchPanic, &[Binding::Bench], "/__panic", true),
    (Op::GatewaySocket, &[Binding::Gateway], "/__ws", false),
    (Op::GatewayDeliver, &[Binding::Gateway], "/__deliver", true),
    (
        Op::GatewayTerminate,
        &[Binding::Gateway],
        "/__terminate",
        true,
    ),
    (
        Op::GatewayChannels,
        &[Binding::Gateway],
        "/__channels",
        false,
    ),
    (
        Op::GatewayReconnect,
        &[Binding::Gateway],
        "/__reconnect",
        true,
    ),
];

impl Op {
    fn entry(self) -> &'static (Op, &'static [Binding], &'static str, bool) {
        OPS.iter()
            .find(|e| e.0 == self)
            .expect("every Op is in OPS")
    }

    /// The request path that encodes this operation.
    pub fn path(self) -> &'static str {
        self.entry().2
    }

    /// Whether the call is a `POST` with a body (else a `GET`).
    pub fn has_body(self) -> bool {
        self.entry().3
    }

    /// The namespaces that answer this operation.
    pub fn bindings(self) -> &'static [Binding] {
        self.entry().1
    }

    /// The operation a request to an object of `binding` names with `path`, if any.
    pub fn decode(binding: Binding, path: &str) -> Option<Op> {
        OPS.iter()
            .find(|(_, bs, p, _)| *p == path && bs.contains(&binding))
            .map(|e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_round_trips_through_its_path() {
        for (op, bindings, _, _) in OPS {
            for b in *bindings {
                assert_eq!(Op::decode(*b, op.path()), Some(*op));
            }
        }
    }

    #[test]
    fn paths_are_unique_per_namespace_and_unknown_ones_decode_to_none() {
        for (i, (_, bs, p, _)) in OPS.iter().enumerate() {
            for (_, bs2, p2, _) in &OPS[i + 1..] {
                if p == p2 {
                    assert!(bs.iter().all(|b| !bs2.contains(b)), "{p} twice");
                }
            }
        }
        assert_eq!(Op::decode(Binding::Room, "/charge"), None);
        assert_eq!(Op::decode(Binding::Lock, "/__ws"), None);
        assert_eq!(Op::decode(Binding::Voice, "/__ws"), Some(Op::SessionSocket));
        assert_eq!(Binding::Quota.name(), "QUOTA");
    }
}
