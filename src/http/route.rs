//! Request routing: a path and method become a [`Route`], or an [`ApiError`].
//!
//! Routing is a pure function so every path rule is unit-tested natively, and so that names
//! are validated before any Durable Object is touched: a bad room name never costs an object.

use crate::auth::Scope;
use crate::http::error::ApiError;

/// Longest accepted public room name, in bytes (the charset is ASCII).
pub const MAX_ROOM_NAME_LEN: usize = 48;

/// Length of a private room id: the hex form of a Durable Object unique id.
pub const PRIVATE_ROOM_ID_LEN: usize = 64;

/// Rooms the service keeps for itself: `ops`, the operators' feed of leads, notifications,
/// deliveries and alerts. Only the service publishes there; reading needs an operator token
/// (`POST /api/admin/ops-token`) or, over HTTP, the `admin` scope.
pub const RESERVED_ROOMS: &[&str] = &["ops"];

/// The operators' feed (one of [`RESERVED_ROOMS`]).
pub const OPS_ROOM: &str = "ops";

/// Which room a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomKey {
    /// A public room addressed by name; the object id is derived from the name.
    Named(String),
    /// A private room created by `POST /api/rooms`; the id is the object's unguessable unique id.
    Private(String),
}

impl RoomKey {
    /// Parses a path segment into a room key.
    ///
    /// Public names are 1–[`MAX_ROOM_NAME_LEN`] bytes of `[A-Za-z0-9._-]` starting with a letter
    /// or digit. A segment of exactly [`PRIVATE_ROOM_ID_LEN`] lowercase hex digits is a private
    /// room id; the two shapes cannot collide because names are shorter.
    pub fn parse(segment: &str) -> Result<Self, ApiError> {
        if segment.len() == PRIVATE_ROOM_ID_LEN
            && segment
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Ok(Self::Private(segment.to_string()));
        }
        validate_room_name(segment)?;
        Ok(Self::Named(segment.to_string()))
    }

    /// Whether this is a reserved room ([`RESERVED_ROOMS`]): the service's own feeds, which
    /// clients can neither publish into nor read without an operator credential.
    pub fn is_reserved(&self) -> bool {
        matches!(self, Self::Named(n) if RESERVED_ROOMS.contains(&n.as_str()))
    }

    /// The string the router uses to find the object (the name, or the hex id).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Named(s) | Self::Private(s) => s,
        }
    }
}

/// Checks a public room name against the charset and length rules of [`RoomKey::parse`].
pub fn validate_room_name(name: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        Err(ApiError::bad_request(
            "invalid_room_name",
            format!(
                "room name {why}; names are 1-{MAX_ROOM_NAME_LEN} characters of [A-Za-z0-9._-] \
                 and start with a letter or digit"
            ),
        ))
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > MAX_ROOM_NAME_LEN {
        return bad("is too long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("has a character outside the allowed set");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("must start with a letter or digit");
    }
    Ok(())
}

/// Every route the Worker serves itself (static files are served by Workers assets first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`: liveness, answered without touching any object.
    Health,
    /// `POST /api/rooms`: create a private room with an unguessable id.
    CreateRoom,
    /// `GET /api/rooms/:room/ws`: WebSocket upgrade into a room.
    RoomSocket(RoomKey),
    /// `GET /api/ws`: a protocol v2 socket, one socket for many rooms (a gateway shard).
    MuxSocket,
    /// `GET /api/voice/:session/ws`: WebSocket upgrade into the caller's voice session
    /// (session ids follow the room-name rules).
    VoiceSocket(String),
    /// `GET /api/chat/:session/ws`: WebSocket upgrade into the caller's chatbot session.
    ChatSocket(String),
    /// `GET /api/rooms/:room`: members, connections, epoch, last offset (API key).
    RoomInfo(RoomKey),
    /// `GET /api/rooms/:room/history?since=&limit=`: stored messages (API key).
    RoomHistory(RoomKey),
    /// `POST /api/rooms/:room/broadcast`: publish into one room over HTTP (API key).
    RoomBroadcast(RoomKey),
    /// `POST /api/broadcast`: publish into many rooms at once (API key).
    Broadcast,
    /// `POST /api/dev/token`: mint a connection token (local environment only).
    DevToken,
    /// `POST /api/limits/:policy/:key`: one rate-limit check (API key).
    LimitCheck {
        /// Policy name (validated by [`crate::coordination::limiter::validate_policy_name`]).
        policy: String,
        /// Limited key (validated by [`crate::coordination::limiter::validate_key`]).
        key: String,
    },
    /// `POST /api/valuation`: estimate a property's value (public).
    Valuation,
    /// `POST /api/valuation/sales`: import comparable sales, CSV or JSON (API key).
    ValuationSales,
    /// `POST /api/leads` (public intake) or `GET /api/leads` (API key: list).
    Leads,
    /// `GET /api/leads/export.csv`: every lead matching the filters as CSV (API key).
    LeadsExport,
    /// `GET` or `PATCH /api/leads/:id` (API key).
    Lead(String),
    /// `POST /api/notify`: queue a notification (API key).
    Notify,
    /// `GET /api/notify/:id`: a notification's status and attempts (API key).
    Notification(String),
    /// `POST /api/webhooks/:source`: signed inbound events from third parties.
    Webhook(String),
    /// `GET /api/metrics` (Prometheus text) or `GET /api/metrics.json` (API key).
    Metrics {
        /// JSON instead of Prometheus text.
        json: bool,
    },
    /// `GET /api/admin/rooms`: active rooms with connection counts (API key).
    AdminRooms,
    /// `POST /api/admin/rooms/:room/close`: close every connection of a room (API key).
    AdminCloseRoom(RoomKey),
    /// `POST /api/admin/rooms/:room/connections/:conn/close`: close one connection (API key).
    AdminCloseConnection {
        /// The room.
        room: RoomKey,
        /// The connection id (as `GET /api/rooms/:room` lists it).
        conn: String,
    },
    /// `GET /api/admin/sessions`: active voice and chat sessions (API key).
    AdminSessions,
    /// `POST /api/admin/locks/:name/release`: operator override of a lock (API key, audited).
    AdminLockRelease(String),
    /// `GET /api/admin/audit?subject=&limit=`: the audit trail (API key).
    AdminAudit,
    /// `POST /api/admin/ops-token` (API key, `admin`): a short-lived operator token that
    /// reads the `ops` feed.
    AdminOpsToken,
    /// `GET /api/admin/pusher/webhooks/dead?app=&limit=`: Pusher webhooks that could not be
    /// delivered (API key, `admin`).
    AdminPusherDeadWebhooks,
    /// `POST /api/admin/pusher/apps/:id/reconnect {"shard"?}`: close the app's Pusher sockets
    /// (of every shard, or one) with 4200 so that clients reconnect at once (API key, `admin`).
    AdminPusherReconnect(String),
    /// `/api/bench/raw/:room/{ws,status,panic}`: the bench-only raw baseline object, served
    /// only when `ENVIRONMENT=local` or `BENCH_ROUTES=true` (see `BENCHMARKS.md`).
    BenchRaw {
        /// Which baseline object (room-name rules).
        room: RoomKey,
        /// `ws`, `status` or `panic`.
        op: &'static str,
    },
    /// `GET /api/locks/:name` or `POST /api/locks/:name/{acquire,renew,release}` (API key).
    Lock {
        /// Lock name (room-name rules).
        name: String,
        /// Which operation.
        op: LockOp,
    },
}

/// An operation on a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOp {
    /// `GET /api/locks/:name`.
    Status,
    /// `POST /api/locks/:name/acquire`.
    Acquire,
    /// `POST /api/locks/:name/renew`.
    Renew,
    /// `POST /api/locks/:name/release`.
    Release,
}

impl LockOp {
    /// The path segment (and internal object path) of the operation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Acquire => "acquire",
            Self::Renew => "renew",
            Self::Release => "release",
        }
    }
}

impl Route {
    /// Whether the route requires an API key.
    pub fn needs_api_key(&self) -> bool {
        matches!(
            self,
            Self::RoomInfo(_)
                | Self::RoomHistory(_)
                | Self::RoomBroadcast(_)
                | Self::Broadcast
                | Self::LimitCheck { .. }
                | Self::Lock { .. }
                | Self::ValuationSales
                | Self::LeadsExport
                | Self::Lead(_)
                | Self::Notify
                | Self::Notification(_)
                | Self::Metrics { .. }
                | Self::AdminRooms
                | Self::AdminCloseRoom(_)
                | Self::AdminCloseConnection { .. }
                | Self::AdminSessions
                | Self::AdminLockRelease(_)
                | Self::AdminAudit
                | Self::AdminOpsToken
                | Self::AdminPusherDeadWebhooks
                | Self::AdminPusherReconnect(_)
        )
    }

    /// The scope an API key needs for this route, if it needs a key at all
    /// ([`Route::needs_api_key_for`]).
    pub fn api_scope(&self, method: Method) -> Option<Scope> {
        if !self.needs_api_key_for(method) {
            return None;
        }
        Some(match self {
            Self::RoomBroadcast(_) | Self::Broadcast => Scope::Publish,
            // The operators' feed carries leads: reading it over HTTP is an admin's.
            Self::RoomInfo(k) | Self::RoomHistory(k) if k.is_reserved() => Scope::Admin,
            Self::RoomInfo(_) | Self::RoomHistory(_) | Self::Metrics { .. } => Scope::Read,
            Self::LimitCheck { .. } | Self::Lock { .. } => Scope::Coordination,
            Self::ValuationSales
            | Self::Leads
            | Self::LeadsExport
            | Self::Lead(_)
            | Self::Notify
            | Self::Notification(_) => Scope::Services,
            _ => Scope::Admin,
        })
    }

    /// The rate-limit policy a call of this public route spends from the caller's address
    /// (`ip:<address key>`), if any: every route a caller without an API key can reach, so
    /// what an unauthenticated caller makes the service do and store is bounded per address.
    /// Socket routes spend `connect`, once the upgrade itself has been checked.
    pub fn address_policy(&self, method: Method) -> Option<&'static str> {
        Some(match self {
            Self::CreateRoom => "rooms",
            Self::Leads if method == Method::Post => "leads",
            Self::Valuation => "valuation",
            Self::Webhook(_) => "webhooks",
            Self::DevToken => "dev_token",
            Self::RoomSocket(_) | Self::MuxSocket | Self::VoiceSocket(_) | Self::ChatSocket(_) => {
                "connect"
            }
            _ => return None,
        })
    }

    /// A short, bounded label for metrics and logs (never a name or id from the path).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::CreateRoom => "rooms.create",
            Self::RoomSocket(_) => "rooms.ws",
            Self::MuxSocket => "ws",
            Self::VoiceSocket(_) => "voice.ws",
            Self::ChatSocket(_) => "chat.ws",
            Self::RoomInfo(_) => "rooms.info",
            Self::RoomHistory(_) => "rooms.history",
            Self::RoomBroadcast(_) => "rooms.broadcast",
            Self::Broadcast => "broadcast",
            Self::DevToken => "dev.token",
            Self::LimitCheck { .. } => "limits.check",
            Self::Lock { .. } => "locks",
            Self::Valuation => "valuation",
            Self::ValuationSales => "valuation.sales",
            Self::Leads => "leads",
            Self::LeadsExport => "leads.export",
            Self::Lead(_) => "lead",
            Self::Notify => "notify",
            Self::Notification(_) => "notification",
            Self::Webhook(_) => "webhook",
            Self::Metrics { .. } => "metrics",
            Self::AdminRooms
            | Self::AdminCloseRoom(_)
            | Self::AdminCloseConnection { .. }
            | Self::AdminSessions
            | Self::AdminLockRelease(_)
            | Self::AdminAudit
            | Self::AdminOpsToken
            | Self::AdminPusherDeadWebhooks
            | Self::AdminPusherReconnect(_) => "admin",
            Self::BenchRaw { .. } => "bench",
            #[allow(unreachable_patterns)]
            _ => "other",
        }
    }

    /// Whether the route needs an API key for this method (`GET /api/leads` lists leads, while
    /// `POST /api/leads` is the public intake form).
    pub fn needs_api_key_for(&self, method: Method) -> bool {
        self.needs_api_key() || (matches!(self, Self::Leads) && method == Method::Get)
    }

    /// Whether a call of this route spends from the caller's `api` policy (after its API key
    /// is checked). Every keyed route does, except a rate-limit check: the check is itself
    /// one Limiter decision, costing what the `api` check would, and services that ask the
    /// limiter for each of their own requests would otherwise be capped by the `api` budget
    /// (10 per second by default) rather than by the policies they check.
    pub fn charges_api_policy(&self, method: Method) -> bool {
        self.needs_api_key_for(method) && !matches!(self, Self::LimitCheck { .. })
    }
}

/// HTTP methods the router distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET (and HEAD, which is answered like GET without a body by the runtime).
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// OPTIONS (CORS preflight, handled before routing).
    Options,
    /// Anything else.
    Other,
}

impl Method {
    /// Maps a method name to the enum (case-sensitive, as HTTP methods are).
    pub fn parse(m: &str) -> Self {
        match m {
            "GET" | "HEAD" => Self::Get,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            "OPTIONS" => Self::Options,
            _ => Self::Other,
        }
    }
}

/// Routes a request: the path decides the resource (404 when none), then the method (405 with
/// `Allow` when the resource exists but not for this method).
pub fn parse(method: Method, path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (route, allowed): (Route, &'static [&'static str]) = match segments.as_slice() {
        ["health"] => (Route::Health, &["GET"]),
        ["api", "rooms"] => (Route::CreateRoom, &["POST"]),
        ["api", "rooms", room, "ws"] => (Route::RoomSocket(RoomKey::parse(room)?), &["GET"]),
        ["api", "ws"] => (Route::MuxSocket, &["GET"]),
        ["api", "voice", session, "ws"] => (Route::VoiceSocket(session_id(session)?), &["GET"]),
        ["api", "chat", session, "ws"] => (Route::ChatSocket(session_id(session)?), &["GET"]),
        ["api", "rooms", room] => (Route::RoomInfo(RoomKey::parse(room)?), &["GET"]),
        ["api", "rooms", room, "history"] => (Route::RoomHistory(RoomKey::parse(room)?), &["GET"]),
        ["api", "rooms", room, "broadcast"] => {
            (Route::RoomBroadcast(RoomKey::parse(room)?), &["POST"])
        }
        ["api", "broadcast"] => (Route::Broadcast, &["POST"]),
        ["api", "dev", "token"] => (Route::DevToken, &["POST"]),
        ["api", "limits", policy, key] => {
            crate::coordination::limiter::validate_policy_name(policy)
                .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
            crate::coordination::limiter::validate_key(key)
                .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
            let route = Route::LimitCheck {
                policy: policy.to_string(),
                key: key.to_string(),
            };
            (route, &["POST"])
        }
        ["api", "valuation"] => (Route::Valuation, &["POST"]),
        ["api", "valuation", "sales"] => (Route::ValuationSales, &["POST"]),
        ["api", "leads"] => (Route::Leads, &["GET", "POST"]),
        ["api", "leads", "export.csv"] => (Route::LeadsExport, &["GET"]),
        ["api", "leads", id] => (Route::Lead(id_segment(id, "lead")?), &["GET", "PATCH"]),
        ["api", "notify"] => (Route::Notify, &["POST"]),
        ["api", "notify", id] => (
            Route::Notification(id_segment(id, "notification")?),
            &["GET"],
        ),
        ["api", "webhooks", source] => (
            Route::Webhook(id_segment(source, "webhook source")?),
            &["POST"],
        ),
        ["api", "metrics"] => (Route::Metrics { json: false }, &["GET"]),
        ["api", "metrics.json"] => (Route::Metrics { json: true }, &["GET"]),
        ["api", "admin", "rooms"] => (Route::AdminRooms, &["GET"]),
        ["api", "admin", "rooms", room, "close"] => {
            (Route::AdminCloseRoom(RoomKey::parse(room)?), &["POST"])
        }
        ["api", "admin", "rooms", room, "connections", conn, "close"] => (
            Route::AdminCloseConnection {
                room: RoomKey::parse(room)?,
                conn: id_segment(conn, "connection")?,
            },
            &["POST"],
        ),
        ["api", "admin", "sessions"] => (Route::AdminSessions, &["GET"]),
        ["api", "admin", "locks", name, "release"] => {
            (Route::AdminLockRelease(lock_name(name)?), &["POST"])
        }
        ["api", "admin", "audit"] => (Route::AdminAudit, &["GET"]),
        ["api", "admin", "ops-token"] => (Route::AdminOpsToken, &["POST"]),
        ["api", "admin", "pusher", "webhooks", "dead"] => {
            (Route::AdminPusherDeadWebhooks, &["GET"])
        }
        ["api", "admin", "pusher", "apps", id, "reconnect"] => (
            Route::AdminPusherReconnect(id_segment(id, "app")?),
            &["POST"],
        ),
        ["api", "bench", "raw", room, op @ ("ws" | "status" | "panic")] => {
            let op: &'static str = match *op {
                "ws" => "ws",
                "status" => "status",
                _ => "panic",
            };
            let room = RoomKey::parse(room)?;
            (
                Route::BenchRaw { room, op },
                if op == "panic" { &["POST"] } else { &["GET"] },
            )
        }
        ["api", "locks", name] => (lock(name, LockOp::Status)?, &["GET"]),
        ["api", "locks", name, "acquire"] => (lock(name, LockOp::Acquire)?, &["POST"]),
        ["api", "locks", name, "renew"] => (lock(name, LockOp::Renew)?, &["POST"]),
        ["api", "locks", name, "release"] => (lock(name, LockOp::Release)?, &["POST"]),
        _ => {
            return Err(ApiError::not_found(
                "not_found",
                format!("no route for {path}"),
            ))
        }
    };
    let ok = allowed.iter().any(|a| Method::parse(a) == method);
    if ok {
        Ok(route)
    } else {
        Err(ApiError::MethodNotAllowed { allowed })
    }
}

/// Longest id accepted in a path segment (lead and notification ids, webhook sources).
pub const MAX_ID_LEN: usize = 64;

/// Checks an id path segment: 1–[`MAX_ID_LEN`] bytes of `[A-Za-z0-9_.-]`.
fn id_segment(s: &str, what: &str) -> Result<String, ApiError> {
    if s.is_empty()
        || s.len() > MAX_ID_LEN
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(ApiError::bad_request(
            "invalid_id",
            format!("{what} ids are 1-{MAX_ID_LEN} characters of [A-Za-z0-9_.-]"),
        ));
    }
    Ok(s.to_string())
}

/// Checks a voice or chat session id: the room-name rules, with its own error code.
fn session_id(s: &str) -> Result<String, ApiError> {
    validate_room_name(s).map_err(|_| {
        ApiError::bad_request(
            "invalid_session_id",
            format!(
                "session ids are 1-{MAX_ROOM_NAME_LEN} characters of [A-Za-z0-9._-] and start \
                 with a letter or digit"
            ),
        )
    })?;
    Ok(s.to_string())
}

fn lock(name: &str, op: LockOp) -> Result<Route, ApiError> {
    Ok(Route::Lock {
        name: lock_name(name)?,
        op,
    })
}

/// Checks a lock name: the room-name rules, with its own error code.
fn lock_name(name: &str) -> Result<String, ApiError> {
    validate_room_name(name).map_err(|_| {
        ApiError::bad_request(
            "invalid_lock_name",
            format!(
                "lock names are 1-{MAX_ROOM_NAME_LEN} characters of [A-Za-z0-9._-] and start \
                 with a letter or digit"
            ),
        )
    })?;
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_and_rooms() {
        assert_eq!(parse(Method::Get, "/health"), Ok(Route::Health));
        assert_eq!(parse(Method::Post, "/api/rooms"), Ok(Route::CreateRoom));
        assert_eq!(
            parse(Method::Get, "/api/rooms/lobby/ws"),
            Ok(Route::RoomSocket(RoomKey::Named("lobby".into())))
        );
    }

    #[test]
    fn private_ids_are_64_lowercase_hex() {
        let id = "a".repeat(64);
        assert_eq!(
            parse(Method::Get, &format!("/api/rooms/{id}/ws")),
            Ok(Route::RoomSocket(RoomKey::Private(id)))
        );
        // Upper-case hex of that length is neither a private id nor a valid name.
        let upper = "A".repeat(64);
        assert_eq!(
            parse(Method::Get, &format!("/api/rooms/{upper}/ws"))
                .unwrap_err()
                .code(),
            "invalid_room_name"
        );
    }

    #[test]
    fn api_routes() {
        let k = || RoomKey::Named("r1".into());
        assert_eq!(
            parse(Method::Get, "/api/rooms/r1"),
            Ok(Route::RoomInfo(k()))
        );
        assert_eq!(
            parse(Method::Get, "/api/rooms/r1/history"),
            Ok(Route::RoomHistory(k()))
        );
        assert_eq!(
            parse(Method::Post, "/api/rooms/r1/broadcast"),
            Ok(Route::RoomBroadcast(k()))
        );
        assert_eq!(parse(Method::Post, "/api/broadcast"), Ok(Route::Broadcast));
        assert_eq!(parse(Method::Post, "/api/dev/token"), Ok(Route::DevToken));
        assert!(Route::Broadcast.needs_api_key());
        assert!(!Route::RoomSocket(k()).needs_api_key());
        assert_eq!(
            parse(Method::Get, "/api/rooms/r1/broadcast")
                .unwrap_err()
                .status(),
            405
        );
    }

    #[test]
    fn operability_routes() {
        assert_eq!(
            parse(Method::Get, "/api/metrics"),
            Ok(Route::Metrics { json: false })
        );
        assert_eq!(
            parse(Method::Get, "/api/metrics.json"),
            Ok(Route::Metrics { json: true })
        );
        assert_eq!(
            parse(Method::Post, "/api/admin/rooms/lobby/close"),
            Ok(Route::AdminCloseRoom(RoomKey::Named("lobby".into())))
        );
        assert!(Route::AdminAudit.needs_api_key());
        assert_eq!(
            Route::RoomSocket(RoomKey::Named("x".into())).label(),
            "rooms.ws"
        );
    }

    #[test]
    fn keyed_routes_name_their_scope() {
        let key = || RoomKey::Named("x".into());
        let cases = [
            (Route::RoomBroadcast(key()), Method::Post, Scope::Publish),
            (Route::Broadcast, Method::Post, Scope::Publish),
            (Route::RoomHistory(key()), Method::Get, Scope::Read),
            (Route::Metrics { json: true }, Method::Get, Scope::Read),
            (Route::Leads, Method::Get, Scope::Services),
            (Route::Notify, Method::Post, Scope::Services),
            (Route::AdminAudit, Method::Get, Scope::Admin),
            (Route::AdminPusherDeadWebhooks, Method::Get, Scope::Admin),
            (
                Route::AdminPusherReconnect("1".into()),
                Method::Post,
                Scope::Admin,
            ),
            (Route::AdminCloseRoom(key()), Method::Post, Scope::Admin),
            (
                Route::AdminLockRelease("l".into()),
                Method::Post,
                Scope::Admin,
            ),
        ];
        for (route, method, scope) in cases {
            assert_eq!(route.api_scope(method), Some(scope), "{route:?}");
        }
        assert_eq!(Route::Leads.api_scope(Method::Post), None, "public");
        let ops = RoomKey::parse("ops").unwrap();
        assert!(ops.is_reserved() && !key().is_reserved());
        assert_eq!(
            Route::RoomHistory(ops.clone()).api_scope(Method::Get),
            Some(Scope::Admin)
        );
        assert_eq!(
            Route::RoomInfo(ops).api_scope(Method::Get),
            Some(Scope::Admin)
        );
        assert_eq!(
            parse(Method::Post, "/api/admin/ops-token"),
            Ok(Route::AdminOpsToken)
        );
        assert_eq!(
            Route::AdminOpsToken.api_scope(Method::Post),
            Some(Scope::Admin)
        );
        assert_eq!(Route::Health.api_scope(Method::Get), None);
    }

    #[test]
    fn every_public_route_spends_an_address_policy() {
        let key = RoomKey::Named("x".into());
        let public = [
            (Route::CreateRoom, Method::Post, "rooms"),
            (Route::Leads, Method::Post, "leads"),
            (Route::Valuation, Method::Post, "valuation"),
            (Route::Webhook("payments".into()), Method::Post, "webhooks"),
            (Route::DevToken, Method::Post, "dev_token"),
            (Route::RoomSocket(key), Method::Get, "connect"),
            (Route::VoiceSocket("s".into()), Method::Get, "connect"),
            (Route::ChatSocket("s".into()), Method::Get, "connect"),
        ];
        for (route, method, policy) in public {
            assert!(!route.needs_api_key_for(method), "{route:?} is public");
            assert_eq!(route.address_policy(method), Some(policy), "{route:?}");
            assert!(
                crate::coordination::limiter::Policies::default()
                    .get(policy)
                    .is_ok(),
                "{policy} has a default"
            );
        }
        // Keyed routes spend the key's `api` policy instead; health costs nothing.
        assert_eq!(Route::Leads.address_policy(Method::Get), None);
        assert_eq!(Route::Health.address_policy(Method::Get), None);
        assert_eq!(Route::Notify.address_policy(Method::Post), None);
    }

    #[test]
    fn service_routes() {
        assert_eq!(parse(Method::Post, "/api/valuation"), Ok(Route::Valuation));
        assert_eq!(parse(Method::Post, "/api/leads"), Ok(Route::Leads));
        assert!(!Route::Leads.needs_api_key_for(Method::Post));
        assert!(Route::Leads.needs_api_key_for(Method::Get));
        assert_eq!(
            parse(Method::Get, "/api/leads/export.csv"),
            Ok(Route::LeadsExport)
        );
        assert_eq!(
            parse(Method::Patch, "/api/leads/ld_1"),
            Ok(Route::Lead("ld_1".into()))
        );
        assert_eq!(
            parse(Method::Get, "/api/leads/a%20b").unwrap_err().code(),
            "invalid_id"
        );
        assert_eq!(
            parse(Method::Get, "/api/notify/n1"),
            Ok(Route::Notification("n1".into()))
        );
        assert_eq!(
            parse(Method::Post, "/api/webhooks/stripe"),
            Ok(Route::Webhook("stripe".into()))
        );
        assert_eq!(
            parse(Method::Delete, "/api/leads/x").unwrap_err().status(),
            405
        );
    }

    #[test]
    fn coordination_routes() {
        assert_eq!(
            parse(Method::Post, "/api/limits/connect/ip:127.0.0.1"),
            Ok(Route::LimitCheck {
                policy: "connect".into(),
                key: "ip:127.0.0.1".into()
            })
        );
        assert_eq!(
            parse(Method::Post, "/api/limits/connect/a%20b")
                .unwrap_err()
                .code(),
            "invalid_key"
        );
        assert_eq!(
            parse(Method::Post, "/api/locks/jobs/acquire"),
            Ok(Route::Lock {
                name: "jobs".into(),
                op: LockOp::Acquire
            })
        );
        assert_eq!(
            parse(Method::Get, "/api/locks/-x").unwrap_err().code(),
            "invalid_lock_name"
        );
        assert_eq!(
            parse(Method::Get, "/api/locks/jobs/renew")
                .unwrap_err()
                .status(),
            405
        );
        assert!(Route::Lock {
            name: "x".into(),
            op: LockOp::Status
        }
        .needs_api_key());
    }

    #[test]
    fn session_routes() {
        assert_eq!(
            parse(Method::Get, "/api/voice/s1/ws"),
            Ok(Route::VoiceSocket("s1".into()))
        );
        assert_eq!(
            parse(Method::Get, "/api/chat/help.1/ws"),
            Ok(Route::ChatSocket("help.1".into()))
        );
        assert_eq!(
            parse(Method::Get, "/api/voice/-x/ws").unwrap_err().code(),
            "invalid_session_id"
        );
        assert_eq!(
            parse(Method::Post, "/api/chat/s1/ws").unwrap_err().status(),
            405
        );
        assert!(!Route::VoiceSocket("s".into()).needs_api_key());
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        let e = parse(Method::Get, "/api/rooms").unwrap_err();
        assert_eq!(e.status(), 405);
        assert_eq!(e.headers()[0].1, "POST");
        assert_eq!(parse(Method::Post, "/health").unwrap_err().status(), 405);
    }

    #[test]
    fn unknown_paths_are_404() {
        for p in [
            "/",
            "/api",
            "/api/rooms/x/nope",
            "/api/rooms/x/ws/y",
            "/nope",
            "/health/",
        ] {
            assert_eq!(parse(Method::Get, p).unwrap_err().status(), 404, "{p}");
        }
    }

    #[test]
    fn room_names_are_validated() {
        let long = "a".repeat(MAX_ROOM_NAME_LEN);
        assert!(validate_room_name(&long).is_ok());
        assert!(validate_room_name(&format!("{long}a")).is_err());
        for bad in ["", "-x", ".x", "a b", "a%20b", "é", "a/b", "a\u{0}"] {
            assert_eq!(
                validate_room_name(bad).unwrap_err().code(),
                "invalid_room_name",
                "{bad:?}"
            );
        }
        for good in ["a", "Lobby-1", "team.alpha_2", "0"] {
            assert!(validate_room_name(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn bad_room_name_fails_before_method_check() {
        // Name validation happens while routing, so no object is ever reached with a bad name.
        assert_eq!(
            parse(Method::Get, "/api/rooms/bad%20name/ws")
                .unwrap_err()
                .code(),
            "invalid_room_name"
        );
    }

    #[test]
    fn every_keyed_route_but_a_limit_check_charges_the_api_policy() {
        let check = parse(Method::Post, "/api/limits/api/user:1").unwrap();
        assert!(check.needs_api_key_for(Method::Post));
        assert!(!check.charges_api_policy(Method::Post));
        for (m, p) in [
            (Method::Get, "/api/locks/job"),
            (Method::Post, "/api/locks/job/acquire"),
            (Method::Post, "/api/broadcast"),
            (Method::Get, "/api/leads"),
        ] {
            assert!(parse(m, p).unwrap().charges_api_policy(m), "{p}");
        }
        for (m, p) in [(Method::Post, "/api/leads"), (Method::Get, "/health")] {
            assert!(!parse(m, p).unwrap().charges_api_policy(m), "{p}");
        }
    }
}
