//! The router's side of rooms: creating private rooms, admitting sockets, and forwarding the
//! HTTP API (info, history, broadcast, admin closes) to each room's object.

use futures_util::future::join_all;
use serde_json::{json as j, Value};
use worker::{Env, Request, Response, Stub};

use crate::config::Config;
use crate::http::bodies::{MultiBroadcast, RoomBroadcast};
use crate::http::error::ApiError;
use crate::http::route::RoomKey;
use crate::internal::{Binding, Op};
use crate::obs;
use crate::rooms::protocol::Encoding;
use crate::rooms::session::{Admission, Perms, ADMISSION_HEADER};

use super::admission::{identify, token_perms, Identity};
use super::http::{internal, json, owned};
use super::stub::{stub, Call};

/// Internal header telling a room object its own key.
pub(crate) const ROOM_KEY_HEADER: &str = "X-Roomkeeper-Room";

/// `POST /api/rooms`: a new private room whose id is the object's unique id.
pub(crate) async fn create_room(env: &Env) -> Result<Response, ApiError> {
    let ns = env.durable_object(Binding::Room.name()).map_err(internal)?;
    let id = ns.unique_id().map_err(internal)?;
    let hex = id.to_string();
    let stub = id.get_stub().map_err(internal)?;
    let res = Call::new(Op::RoomInit)
        .send(&stub)
        .await
        .map_err(internal)?;
    if res.status_code() != 204 {
        return Err(ApiError::Internal);
    }
    json(
        201,
        &j!({ "room": hex, "ws": format!("/api/rooms/{hex}/ws") }),
    )
}

/// Who is connecting to room `key`, and with which permissions: a token must open the room.
fn admit(
    req: &Request,
    env: &Env,
    config: &Config,
    key: &RoomKey,
    enc: Encoding,
    subprotocol: Option<&str>,
) -> Result<Admission, ApiError> {
    let base = |user: String| Admission {
        room: key.as_str().to_string(),
        enc,
        subprotocol: subprotocol.map(str::to_string),
        user,
        anonymous: true,
        name: None,
        perms: Perms::ALL,
        expires_ms: None,
    };
    let identity = identify(req, env, config)?;
    if key.is_reserved() {
        // The operators' feed: an operator token reads it; nobody publishes there but the
        // service itself, and operators do not show up to each other.
        return match identity {
            Identity::Token(claims) if claims.ops => Ok(Admission {
                anonymous: false,
                name: claims.name.clone().or_else(|| Some("operator".into())),
                perms: Perms {
                    publish: false,
                    subscribe: true,
                    presence: false,
                },
                expires_ms: Some(claims.expires_at_ms()),
                ..base(claims.sub.clone())
            }),
            _ => Err(reserved(key)),
        };
    }
    match identity {
        Identity::Anonymous(user) => Ok(base(user)),
        Identity::Token(claims) => {
            if !claims.allows_room(key.as_str()) {
                return Err(ApiError::forbidden(
                    "room_forbidden",
                    "your token does not open this room",
                ));
            }
            Ok(Admission {
                anonymous: false,
                name: claims.name.clone(),
                perms: token_perms(&claims),
                expires_ms: Some(claims.expires_at_ms()),
                ..base(claims.sub.clone())
            })
        }
    }
}

/// The refusal of a client's way into a reserved room (403 `reserved_room`).
pub(crate) fn reserved(key: &RoomKey) -> ApiError {
    ApiError::forbidden(
        "reserved_room",
        format!(
            "{} is the service's own feed: only the service publishes there, and reading it \
             needs an operator token",
            key.as_str()
        ),
    )
}

/// `GET /api/rooms/:room/ws` (the router has checked the origin and the upgrade): negotiates
/// the encoding, authenticates, and forwards the request with its [`Admission`] to the room's object, whose 101 response goes
/// back as is.
pub(crate) async fn room_socket(
    req: Request,
    env: &Env,
    config: &Config,
    key: RoomKey,
    request_id: &str,
) -> Result<Response, ApiError> {
    let (offered, query_enc) = encoding_offer(&req)?;
    let (enc, subprotocol) = Encoding::negotiate(offered.as_deref(), query_enc.as_deref())
        .map_err(|e| ApiError::bad_request("unsupported_encoding", e.to_string()))?;
    let admission = admit(&req, env, config, &key, enc, subprotocol)?;
    // Internal headers are the router's to set, never the caller's.
    let response = Call::new(Op::RoomSocket)
        .headers_from(req.headers(), |k| {
            !k.eq_ignore_ascii_case(ADMISSION_HEADER) && !k.eq_ignore_ascii_case(ROOM_KEY_HEADER)
        })?
        .header(
            ADMISSION_HEADER,
            &serde_json::to_string(&admission).map_err(internal)?,
        )?
        .header(ROOM_KEY_HEADER, key.as_str())?
        .header(obs::REQUEST_ID_HEADER, request_id)?
        .send(&room_stub(env, &key)?)
        .await
        .map_err(internal)?;
    owned(response).await
}

/// What a WebSocket upgrade offers for its encoding: the `Sec-WebSocket-Protocol` header and
/// the `encoding` query parameter.
pub(crate) fn encoding_offer(req: &Request) -> Result<(Option<String>, Option<String>), ApiError> {
    let offered = req
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map_err(internal)?;
    let url = req.url().map_err(internal)?;
    let query = url
        .query_pairs()
        .find(|(k, _)| k == "encoding")
        .map(|(_, v)| v.into_owned());
    Ok((offered, query))
}

/// Calls a room object's internal operation and returns its response as is.
pub(crate) async fn room_call(env: &Env, key: &RoomKey, call: Call) -> Result<Response, ApiError> {
    let response = call
        .header(ROOM_KEY_HEADER, key.as_str())?
        .send(&room_stub(env, key)?)
        .await
        .map_err(internal)?;
    owned(response).await
}

/// Calls the Room a gateway shard subscribes its sockets to — a Pusher channel's (its key
/// `pusher:{app}:{channel}`, from [`crate::rooms::shards::channel_key`]) or, for v2 sockets,
/// a native room (a name or a private id) — and returns its response as is.
pub(crate) async fn channel_call(env: &Env, key: &str, call: Call) -> Result<Response, ApiError> {
    let room = if key.starts_with(crate::rooms::shards::CHANNEL_PREFIX) {
        stub(env, Binding::Room, key)?
    } else {
        room_stub(env, &RoomKey::parse(key)?)?
    };
    call.header(ROOM_KEY_HEADER, key)?
        .send(&room)
        .await
        .map_err(internal)
}

/// `POST /api/broadcast`: the same message into each room, concurrently; one result per room
/// in request order, each an offset or that room's error.
pub(crate) async fn broadcast_many(
    env: &Env,
    b: MultiBroadcast,
    key_name: Option<String>,
) -> Result<Response, ApiError> {
    let one = RoomBroadcast {
        body: b.body,
        name: b.name,
        idempotency_key: b.idempotency_key,
        key_name,
        sender: None,
    };
    let body = serde_json::to_string(&one).map_err(internal)?;
    let calls = b.rooms.iter().map(|room| {
        let body = body.clone();
        async move {
            let failed = |e: ApiError| {
                j!({
                    "room": room,
                    "error": {"code": e.code(), "message": e.to_string()},
                    "status": e.status(),
                })
            };
            let key = match RoomKey::parse(room) {
                Ok(k) if k.is_reserved() => return failed(reserved(&k)),
                Ok(k) => k,
                Err(e) => return failed(e),
            };
            match room_call(env, &key, Call::new(Op::RoomBroadcast).body(body)).await {
                Err(e) => failed(e),
                Ok(mut r) => {
                    let status = r.status_code();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    if status == 200 {
                        j!({ "room": room, "offset": v["offset"], "duplicate": v["duplicate"] })
                    } else {
                        j!({ "room": room, "error": v["error"], "status": status })
                    }
                }
            }
        }
    });
    let results = join_all(calls).await;
    let ok = results.iter().filter(|r| r.get("offset").is_some()).count();
    json(
        200,
        &j!({ "results": results, "delivered": ok, "failed": results.len() - ok }),
    )
}

/// The stub of a room's object: by name for public rooms, by id for private ones. A private id
/// that this namespace did not issue is a 404, not a 500.
fn room_stub(env: &Env, key: &RoomKey) -> Result<Stub, ApiError> {
    let ns = env.durable_object(Binding::Room.name()).map_err(internal)?;
    let id = match key {
        RoomKey::Named(name) => ns.id_from_name(name).map_err(internal)?,
        RoomKey::Private(hex) => ns
            .id_from_string(hex)
            .map_err(|_| ApiError::not_found("room_not_found", "no such private room"))?,
    };
    id.get_stub().map_err(internal)
}
