//! Presence members and signed-in users: parsing what clients send, and the `presence`
//! payload a new member receives.
//!
//! A presence subscription carries `channel_data`, the JSON string the app's auth endpoint
//! signed: `{"user_id": "…", "user_info": {…}}`. `user_id` may be a JSON number (Laravel
//! sends its integer ids unquoted and `pusher-js` keys members by the number's string form),
//! so integers are normalised to their decimal string; `user_info` is optional and at most
//! [`Limits::max_user_info_bytes`] in its JSON form. A connection that signed in with
//! `pusher:signin` carries `user_data`: `{"id": "…", "user_info"?, "watchlist"?}`, where `id`
//! must be a non-empty string (`pusher-js` drops the sign-in otherwise) usable in a
//! `#server-to-user-{id}` channel name.
//!
//! [`presence_data`] builds the `{"presence":{"ids":[…],"hash":{…},"count":n}}` object of
//! `pusher_internal:subscription_succeeded`: one entry per distinct user id (a user with two
//! sockets is one member), in first-seen order.

use serde_json::{Map, Value};

use super::channel::{is_name_char, SERVER_TO_USER_PREFIX};
use super::Limits;

/// One presence member: who, and what the app said about them.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The user id, as a string.
    pub user_id: String,
    /// The app-supplied `user_info`, if any.
    pub user_info: Option<Value>,
}

/// A signed-in user, from `pusher:signin`'s `user_data`.
#[derive(Debug, Clone, PartialEq)]
pub struct SigninUser {
    /// The user id (a valid `#server-to-user-` suffix).
    pub id: String,
    /// The app-supplied `user_info`, if any.
    pub user_info: Option<Value>,
    /// The user ids whose online status this user watches, if any.
    pub watchlist: Vec<String>,
}

/// Why `channel_data` or `user_data` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    /// Not the expected JSON object; the detail names the field.
    #[error("invalid {0}")]
    Malformed(&'static str),
    /// `user_info` is over the limit.
    #[error("user_info is larger than {max} bytes")]
    UserInfoTooLarge {
        /// The configured maximum.
        max: usize,
    },
    /// The presence channel already holds the most members allowed.
    #[error("presence channel is full ({max} members)")]
    TooManyMembers {
        /// The configured maximum.
        max: usize,
    },
}

/// A user id in the form `pusher-js` keys it by: a non-empty string as is, an integer as its
/// decimal digits. Anything else (fractions, booleans, null, objects) is refused.
pub fn normalise_user_id(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// Parses a presence subscription's `channel_data` string.
pub fn parse_channel_data(raw: &str, limits: &Limits) -> Result<Member, PresenceError> {
    let value: Value =
        serde_json::from_str(raw).map_err(|_| PresenceError::Malformed("channel_data"))?;
    let object = value
        .as_object()
        .ok_or(PresenceError::Malformed("channel_data"))?;
    let user_id = object
        .get("user_id")
        .and_then(normalise_user_id)
        .ok_or(PresenceError::Malformed("channel_data user_id"))?;
    let user_info = user_info(object, limits)?;
    Ok(Member { user_id, user_info })
}

/// Parses a `pusher:signin`'s `user_data` string.
pub fn parse_user_data(raw: &str, limits: &Limits) -> Result<SigninUser, PresenceError> {
    let value: Value =
        serde_json::from_str(raw).map_err(|_| PresenceError::Malformed("user_data"))?;
    let object = value
        .as_object()
        .ok_or(PresenceError::Malformed("user_data"))?;
    let max_id_chars = limits
        .max_channel_name_chars
        .saturating_sub(SERVER_TO_USER_PREFIX.len());
    let id = match object.get("id") {
        Some(Value::String(id))
            if !id.is_empty()
                && id.chars().count() <= max_id_chars
                && id.chars().all(is_name_char) =>
        {
            id.clone()
        }
        _ => return Err(PresenceError::Malformed("user_data id")),
    };
    let watchlist = match object.get("watchlist") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or(PresenceError::Malformed("user_data watchlist"))?,
        Some(_) => return Err(PresenceError::Malformed("user_data watchlist")),
    };
    Ok(SigninUser {
        id,
        user_info: user_info(object, limits)?,
        watchlist,
    })
}

/// The optional `user_info` of an object, bounded in its JSON form.
fn user_info(object: &Map<String, Value>, limits: &Limits) -> Result<Option<Value>, PresenceError> {
    match object.get("user_info") {
        None | Some(Value::Null) => Ok(None),
        Some(info) => {
            let bytes = serde_json::to_string(info).map_or(usize::MAX, |s| s.len());
            if bytes > limits.max_user_info_bytes {
                return Err(PresenceError::UserInfoTooLarge {
                    max: limits.max_user_info_bytes,
                });
            }
            Ok(Some(info.clone()))
        }
    }
}

/// Whether a member `user_id` may join a channel whose current distinct members are
/// `members`: a returning user always may, a new one only below the limit.
pub fn admit<'a>(
    members: impl IntoIterator<Item = &'a Member>,
    user_id: &str,
    limits: &Limits,
) -> Result<(), PresenceError> {
    let mut distinct = std::collections::BTreeSet::new();
    for m in members {
        if m.user_id == user_id {
            return Ok(());
        }
        distinct.insert(m.user_id.as_str());
    }
    if distinct.len() >= limits.max_presence_members {
        return Err(PresenceError::TooManyMembers {
            max: limits.max_presence_members,
        });
    }
    Ok(())
}

/// The `presence` object for `pusher_internal:subscription_succeeded`, as a JSON value:
/// `{"presence":{"ids":[…],"hash":{id: user_info or null},"count":n}}`. A user id listed
/// twice (two sockets) counts once, with its first `user_info`.
pub fn presence_data<'a>(members: impl IntoIterator<Item = &'a Member>) -> Value {
    let mut ids = Vec::new();
    let mut hash = Map::new();
    for m in members {
        if !hash.contains_key(&m.user_id) {
            ids.push(Value::String(m.user_id.clone()));
            hash.insert(
                m.user_id.clone(),
                m.user_info.clone().unwrap_or(Value::Null),
            );
        }
    }
    let count = ids.len();
    serde_json::json!({"presence": {"ids": ids, "hash": hash, "count": count}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn l() -> Limits {
        Limits::default()
    }

    #[test]
    fn channel_data_user_ids_may_be_strings_or_integers() {
        let m = parse_channel_data(r#"{"user_id":"u1","user_info":{"name":"Ada"}}"#, &l()).unwrap();
        assert_eq!(m.user_id, "u1");
        assert_eq!(m.user_info, Some(json!({"name": "Ada"})));
        // Laravel: integer ids, no user_info.
        let m = parse_channel_data(r#"{"user_id":10}"#, &l()).unwrap();
        assert_eq!((m.user_id.as_str(), m.user_info), ("10", None));
        assert_eq!(
            parse_channel_data(r#"{"user_id":-3,"user_info":null}"#, &l())
                .unwrap()
                .user_id,
            "-3"
        );
        for bad in [
            r#"{"user_id":""}"#,
            r#"{"user_id":1.5}"#,
            r#"{"user_id":true}"#,
            r#"{"user_id":null}"#,
            r#"{"user_info":{}}"#,
            r#"["u1"]"#,
            "not json",
        ] {
            assert!(parse_channel_data(bad, &l()).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_info_is_bounded_by_its_json_size() {
        // {"n":"…"} is 8 bytes of envelope.
        let fits = format!(
            r#"{{"user_id":"u","user_info":{{"n":"{}"}}}}"#,
            "x".repeat(1016)
        );
        assert!(parse_channel_data(&fits, &l()).is_ok());
        let over = format!(
            r#"{{"user_id":"u","user_info":{{"n":"{}"}}}}"#,
            "x".repeat(1017)
        );
        assert_eq!(
            parse_channel_data(&over, &l()),
            Err(PresenceError::UserInfoTooLarge { max: 1024 })
        );
    }

    #[test]
    fn signin_user_data_needs_a_string_id_fit_for_a_channel_name() {
        let u = parse_user_data(
            r#"{"id":"42","user_info":{"name":"Ada"},"watchlist":["7","8"]}"#,
            &l(),
        )
        .unwrap();
        assert_eq!(u.id, "42");
        assert_eq!(u.watchlist, vec!["7", "8"]);
        assert_eq!(u.user_info, Some(json!({"name": "Ada"})));
        assert_eq!(
            parse_user_data(r#"{"id":"a"}"#, &l()).unwrap().watchlist,
            Vec::<String>::new()
        );
        let max = "a".repeat(164 - 16);
        assert!(parse_user_data(&format!(r#"{{"id":"{max}"}}"#), &l()).is_ok());
        for bad in [
            r#"{"id":42}"#.to_string(),
            r#"{"id":""}"#.to_string(),
            r#"{"id":"a b"}"#.to_string(),
            r#"{"id":"a","watchlist":[1]}"#.to_string(),
            r#"{"id":"a","watchlist":"7"}"#.to_string(),
            format!(r#"{{"id":"{max}a"}}"#),
            "[]".to_string(),
        ] {
            assert!(parse_user_data(&bad, &l()).is_err(), "{bad}");
        }
    }

    #[test]
    fn presence_data_lists_distinct_members_in_order() {
        let members = vec![
            Member {
                user_id: "2".into(),
                user_info: Some(json!({"name": "Bo"})),
            },
            Member {
                user_id: "1".into(),
                user_info: None,
            },
            Member {
                user_id: "2".into(),
                user_info: Some(json!({"name": "other socket"})),
            },
        ];
        assert_eq!(
            presence_data(&members),
            json!({"presence": {"ids": ["2", "1"], "hash": {"2": {"name": "Bo"}, "1": null}, "count": 2}})
        );
        assert_eq!(
            presence_data(&[]),
            json!({"presence": {"ids": [], "hash": {}, "count": 0}})
        );
    }

    #[test]
    fn a_full_channel_admits_only_returning_users() {
        let limits = Limits {
            max_presence_members: 2,
            ..Limits::default()
        };
        let m = |id: &str| Member {
            user_id: id.into(),
            user_info: None,
        };
        let members = vec![m("a"), m("b"), m("a")];
        assert_eq!(admit(&members, "a", &limits), Ok(()));
        assert_eq!(
            admit(&members, "c", &limits),
            Err(PresenceError::TooManyMembers { max: 2 })
        );
        assert_eq!(admit(&members[..1], "c", &limits), Ok(()));
    }
}
