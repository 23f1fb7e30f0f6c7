//! Request bodies of the HTTP API and their validation.
//!
//! The router parses and validates these before touching any object; the Room object gets
//! the same [`RoomBroadcast`] type back, so the two sides cannot drift apart.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{Claims, Perm};
use crate::http::error::ApiError;

/// Largest accepted HTTP request body, in bytes.
pub const MAX_API_BODY_BYTES: usize = 64 * 1024;
/// Most rooms one `POST /api/broadcast` may name.
pub const MAX_BROADCAST_ROOMS: usize = 100;
/// Longest lifetime of a token minted by the dev endpoint, in seconds.
pub const MAX_DEV_TOKEN_TTL_S: u64 = 24 * 3600;
/// Default lifetime of a token minted by the dev endpoint, in seconds.
pub const DEFAULT_DEV_TOKEN_TTL_S: u64 = 3600;

/// `POST /api/rooms/:room/broadcast`, and what the router forwards to the room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomBroadcast {
    /// The message body (any JSON value, bounded by `ROOM_MAX_BODY_BYTES`).
    pub body: Value,
    /// Sender display name (default `api`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Idempotency key (also accepted as the `Idempotency-Key` header): a retry with the same
    /// key returns the first offset and appends nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The API key's name; set by the router, refused from callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// The sender's id instead of `api:{key_name}`: set by the router (a Pusher trigger's
    /// `socket_id`, so that socket is left out), refused from callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
}

/// `POST /api/broadcast`: one message into many rooms.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiBroadcast {
    /// Room keys, 1–[`MAX_BROADCAST_ROOMS`], no duplicates.
    pub rooms: Vec<String>,
    /// The message body.
    pub body: Value,
    /// Sender display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Idempotency key, applied in every room.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

impl MultiBroadcast {
    /// Checks the room list's size and duplicates (each name is checked per room later, so
    /// one bad name fails only its own entry).
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.rooms.is_empty() || self.rooms.len() > MAX_BROADCAST_ROOMS {
            return Err(ApiError::unprocessable(
                "invalid_rooms",
                format!("rooms must list 1-{MAX_BROADCAST_ROOMS} rooms"),
            ));
        }
        let mut sorted: Vec<&str> = self.rooms.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(ApiError::unprocessable(
                "invalid_rooms",
                "rooms must not repeat",
            ));
        }
        Ok(())
    }
}

/// `POST /api/dev/token`: what the minted token should carry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevTokenRequest {
    /// User id.
    pub sub: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Room patterns (`*` for all).
    pub rooms: Vec<String>,
    /// Permissions (default all).
    #[serde(default)]
    pub perms: Option<Vec<Perm>>,
    /// Lifetime in seconds (default [`DEFAULT_DEV_TOKEN_TTL_S`]); 0 mints an expired token
    /// for testing refusals.
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

impl DevTokenRequest {
    /// The claims to sign, valid from `now_s`.
    pub fn claims(self, now_s: u64) -> Result<Claims, ApiError> {
        let ttl = self.ttl_s.unwrap_or(DEFAULT_DEV_TOKEN_TTL_S);
        if ttl > MAX_DEV_TOKEN_TTL_S {
            return Err(ApiError::unprocessable(
                "invalid_ttl",
                format!("ttl_s is at most {MAX_DEV_TOKEN_TTL_S}"),
            ));
        }
        Ok(Claims {
            sub: self.sub,
            name: self.name,
            rooms: self.rooms,
            perms: self.perms.unwrap_or_else(|| Perm::ALL.to_vec()),
            exp: now_s + ttl,
            iat: Some(now_s),
            nbf: None,
            ops: false,
        })
    }
}

/// Parses a JSON request body already read into memory, distinguishing unparseable JSON
/// (`invalid_json`) from JSON of the wrong shape (`invalid_request`).
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.len() > MAX_API_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_API_BODY_BYTES,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let code = if e.is_data() {
            "invalid_request"
        } else {
            "invalid_json"
        };
        ApiError::bad_request(code, e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_are_classified() {
        assert_eq!(
            parse_json::<RoomBroadcast>(b"{").unwrap_err().code(),
            "invalid_json"
        );
        assert_eq!(
            parse_json::<RoomBroadcast>(b"{}").unwrap_err().code(),
            "invalid_request"
        );
        assert_eq!(
            parse_json::<RoomBroadcast>(br#"{"body":1,"x":2}"#)
                .unwrap_err()
                .code(),
            "invalid_request"
        );
        let big = vec![b' '; MAX_API_BODY_BYTES + 1];
        assert_eq!(parse_json::<RoomBroadcast>(&big).unwrap_err().status(), 413);
        assert!(parse_json::<RoomBroadcast>(br#"{"body":{"a":1},"idempotency_key":"k"}"#).is_ok());
    }

    #[test]
    fn multi_broadcast_validation() {
        let mb = |rooms: Vec<&str>| MultiBroadcast {
            rooms: rooms.into_iter().map(String::from).collect(),
            body: Value::Null,
            name: None,
            idempotency_key: None,
        };
        assert!(mb(vec!["a", "b"]).validate().is_ok());
        assert_eq!(mb(vec![]).validate().unwrap_err().code(), "invalid_rooms");
        assert_eq!(
            mb(vec!["a", "a"]).validate().unwrap_err().code(),
            "invalid_rooms"
        );
        let many: Vec<String> = (0..=MAX_BROADCAST_ROOMS).map(|i| format!("r{i}")).collect();
        assert_eq!(
            mb(many.iter().map(String::as_str).collect())
                .validate()
                .unwrap_err()
                .status(),
            422
        );
    }

    #[test]
    fn dev_token_claims() {
        let req: DevTokenRequest = parse_json(br#"{"sub":"u1","rooms":["*"]}"#).unwrap();
        let c = req.claims(100).unwrap();
        assert_eq!((c.exp, c.perms.len()), (100 + DEFAULT_DEV_TOKEN_TTL_S, 3));
        let req: DevTokenRequest =
            parse_json(br#"{"sub":"u1","rooms":[],"ttl_s":999999}"#).unwrap();
        assert_eq!(req.claims(0).unwrap_err().code(), "invalid_ttl");
    }
}
