//! The REST API's bodies and query parameters, validated into plain values.
//!
//! - `POST /apps/{id}/events`: `{name, data, channels | channel, socket_id?, info?}`
//!   ([`parse_trigger`]). `data` must be a string (the SDKs serialise objects first) and is
//!   kept byte for byte; over [`Limits::max_event_data_bytes`] is a 413. At most
//!   [`Limits::max_channels_per_trigger`] channels, each a valid name; an encrypted channel
//!   must be the only one (its payload is encrypted for that channel alone). `socket_id`
//!   excludes that connection from delivery.
//! - `POST /apps/{id}/batch_events`: `{batch: [{channel, name, data, socket_id?, info?}]}`,
//!   at most [`Limits::max_batch_events`] ([`parse_batch`]).
//! - `GET /apps/{id}/channels?filter_by_prefix=&info=` ([`channels_query`]): `info` may ask
//!   for `user_count` only together with a `presence-` prefix filter.
//! - `GET /apps/{id}/channels/{name}?info=` ([`channel_query`]): `subscription_count`,
//!   `user_count` (presence channels only), `cache` (cache channels).
//! - `GET /apps/{id}/channels/{name}/users` ([`users_channel`]): presence channels only.
//! - `POST /apps/{id}/users/{user_id}/terminate_connections` ([`validate_user_id`]).
//!
//! The `*_response` functions build the success bodies of those routes, with only the
//! attributes asked for.
//!
//! Unknown `info` attributes are ignored rather than refused, so a newer SDK asking for more
//! still gets what is known. Event names in the reserved `pusher:` / `pusher_internal:`
//! namespaces are refused.

use serde_json::{Map, Value};

use super::channel::{self, ChannelKind, ChannelType};
use super::rest::RestError;
use super::sign::is_socket_id;
use super::Limits;

/// The `info` attributes a request asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Info {
    /// `user_count`: distinct presence members (presence channels only).
    pub user_count: bool,
    /// `subscription_count`: subscribed connections.
    pub subscription_count: bool,
    /// `cache`: the cached event of a cache channel.
    pub cache: bool,
}

impl Info {
    /// Parses a comma-separated `info` value; unknown attributes are ignored.
    pub fn parse(raw: &str) -> Self {
        let mut info = Self::default();
        for attr in raw.split(',').map(str::trim) {
            match attr {
                "user_count" => info.user_count = true,
                "subscription_count" => info.subscription_count = true,
                "cache" => info.cache = true,
                _ => {}
            }
        }
        info
    }
}

/// One event to publish: from a trigger (one per channel) or a batch entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// The event name.
    pub name: String,
    /// The data, exactly as given.
    pub data: String,
    /// The channels, validated, without duplicates, in the order given.
    pub channels: Vec<String>,
    /// The connection to leave out of delivery.
    pub socket_id: Option<String>,
    /// The attributes to return per channel.
    pub info: Info,
}

fn bad(msg: impl Into<String>) -> RestError {
    RestError::BadRequest(msg.into())
}

fn json_object(body: &[u8]) -> Result<Map<String, Value>, RestError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(bad("Request body must be a JSON object")),
        Err(_) => Err(bad("Request body is not valid JSON")),
    }
}

fn string_field(o: &Map<String, Value>, field: &str) -> Result<Option<String>, RestError> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(format!("{field} must be a string"))),
    }
}

fn required(o: &Map<String, Value>, field: &str) -> Result<String, RestError> {
    string_field(o, field)?.ok_or_else(|| bad(format!("Missing required field: {field}")))
}

/// The shared part of a trigger and a batch entry: name, data, socket_id, info.
fn event_fields(
    o: &Map<String, Value>,
    limits: &Limits,
) -> Result<(String, String, Option<String>, Info), RestError> {
    let name = required(o, "name")?;
    channel::validate_server_event_name(&name, limits).map_err(|e| bad(e.to_string()))?;
    let data = match o.get("data") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => return Err(bad("Missing required field: data")),
        Some(_) => {
            return Err(bad(
                "data must be a string (serialise objects to JSON first)",
            ))
        }
    };
    if data.len() > limits.max_event_data_bytes {
        return Err(RestError::PayloadTooLarge(format!(
            "Event data is larger than {} bytes",
            limits.max_event_data_bytes
        )));
    }
    let socket_id = string_field(o, "socket_id")?;
    if socket_id.as_deref().is_some_and(|s| !is_socket_id(s)) {
        return Err(bad("Invalid socket_id"));
    }
    let info = string_field(o, "info")?.map_or_else(Info::default, |s| Info::parse(&s));
    Ok((name, data, socket_id, info))
}

pub(crate) fn valid_channel(name: &str, limits: &Limits) -> Result<ChannelType, RestError> {
    channel::validate_channel(name, limits).map_err(|e| bad(e.to_string()))
}

/// Parses and validates a `POST /events` body.
pub fn parse_trigger(body: &[u8], limits: &Limits) -> Result<Trigger, RestError> {
    let o = json_object(body)?;
    let (name, data, socket_id, info) = event_fields(&o, limits)?;
    let listed: Vec<String> = match (o.get("channels"), o.get("channel")) {
        (Some(_), Some(_)) => return Err(bad("Give either channels or channel, not both")),
        (Some(Value::Array(list)), None) => list
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("channels must be an array of strings"))?,
        (Some(_), None) => return Err(bad("channels must be an array of strings")),
        (None, Some(Value::String(c))) => vec![c.clone()],
        (None, Some(_)) => return Err(bad("channel must be a string")),
        (None, None) => return Err(bad("Missing required field: channels")),
    };
    let mut channels: Vec<String> = Vec::with_capacity(listed.len());
    for c in listed {
        if !channels.contains(&c) {
            channels.push(c);
        }
    }
    if channels.is_empty() {
        return Err(bad("channels must not be empty"));
    }
    if channels.len() > limits.max_channels_per_trigger {
        return Err(bad(format!(
            "Cannot trigger on more than {} channels",
            limits.max_channels_per_trigger
        )));
    }
    let mut any_encrypted = false;
    for c in &channels {
        let t = valid_channel(c, limits)?;
        any_encrypted |= t.kind == ChannelKind::PrivateEncrypted;
        if info.user_count && !t.is_presence() {
            return Err(bad("user_count is only available for presence channels"));
        }
    }
    if any_encrypted && channels.len() > 1 {
        return Err(bad(
            "Cannot trigger on more than one channel when one is an encrypted channel",
        ));
    }
    Ok(Trigger {
        name,
        data,
        channels,
        socket_id,
        info,
    })
}

/// Parses and validates a `POST /batch_events` body: one [`Trigger`] per entry, each with
/// exactly one channel.
pub fn parse_batch(body: &[u8], limits: &Limits) -> Result<Vec<Trigger>, RestError> {
    let o = json_object(body)?;
    let Some(Value::Array(batch)) = o.get("batch") else {
        return Err(bad("batch must be an array of events"));
    };
    if batch.len() > limits.max_batch_events {
        return Err(bad(format!(
            "Batch too large: at most {} events",
            limits.max_batch_events
        )));
    }
    batch
        .iter()
        .map(|entry| {
            let e = entry
                .as_object()
                .ok_or_else(|| bad("batch entries must be objects"))?;
            let (name, data, socket_id, info) = event_fields(e, limits)?;
            let channel = required(e, "channel")?;
            let t = valid_channel(&channel, limits)?;
            if info.user_count && !t.is_presence() {
                return Err(bad("user_count is only available for presence channels"));
            }
            Ok(Trigger {
                name,
                data,
                channels: vec![channel],
                socket_id,
                info,
            })
        })
        .collect()
}

/// The value of query parameter `key`, if given.
fn query_value<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// `GET /channels` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChannelsQuery {
    /// Only channels whose name starts with this.
    pub filter_by_prefix: Option<String>,
    /// The attributes to return per channel.
    pub info: Info,
}

/// Validates `GET /channels` parameters: `user_count` needs `filter_by_prefix` starting
/// with `presence-`, as Pusher documents.
pub fn channels_query(query: &[(String, String)]) -> Result<ChannelsQuery, RestError> {
    let filter_by_prefix = query_value(query, "filter_by_prefix").map(str::to_string);
    let info = query_value(query, "info").map_or_else(Info::default, Info::parse);
    if info.user_count
        && !filter_by_prefix
            .as_deref()
            .is_some_and(|p| p.starts_with("presence-"))
    {
        return Err(bad(
            "user_count may only be requested with filter_by_prefix=presence-",
        ));
    }
    Ok(ChannelsQuery {
        filter_by_prefix,
        info,
    })
}

/// Validates `GET /channels/{name}`: the name, and an `info` that fits the channel.
pub fn channel_query(
    name: &str,
    query: &[(String, String)],
    limits: &Limits,
) -> Result<(ChannelType, Info), RestError> {
    let t = valid_channel(name, limits)?;
    let info = query_value(query, "info").map_or_else(Info::default, Info::parse);
    if info.user_count && !t.is_presence() {
        return Err(bad("user_count is only available for presence channels"));
    }
    if info.cache && !t.is_cache() {
        return Err(bad("cache is only available for cache channels"));
    }
    Ok((t, info))
}

/// Validates `GET /channels/{name}/users`: presence channels only.
pub fn users_channel(name: &str, limits: &Limits) -> Result<ChannelType, RestError> {
    let t = valid_channel(name, limits)?;
    if !t.is_presence() {
        return Err(bad("users are only available for presence channels"));
    }
    Ok(t)
}

/// Validates the user id of `POST /users/{user_id}/terminate_connections`: non-empty, the
/// channel-name charset, short enough for its `#server-to-user-` channel.
pub fn validate_user_id(user_id: &str, limits: &Limits) -> Result<(), RestError> {
    valid_channel(&channel::server_to_user_channel(user_id), limits)
        .map(|_| ())
        .map_err(|_| bad("Invalid user id"))
}

/// What the server knows of one channel, for `info` responses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Subscribed connections.
    pub subscription_count: u64,
    /// Distinct presence members (presence channels).
    pub user_count: Option<u64>,
}

/// The attributes `info` asked for, as an object: `{"user_count"?, "subscription_count"?}`.
fn info_object(info: Info, stats: ChannelStats) -> Map<String, Value> {
    let mut o = Map::new();
    if info.user_count {
        if let Some(n) = stats.user_count {
            o.insert("user_count".into(), n.into());
        }
    }
    if info.subscription_count {
        o.insert("subscription_count".into(), stats.subscription_count.into());
    }
    o
}

/// The body of a successful trigger: `{}`, or with `info`
/// `{"channels": {name: {"user_count"?, "subscription_count"?}}}`.
pub fn trigger_response(info: Info, channels: &[(String, ChannelStats)]) -> Value {
    if info == Info::default() {
        return Value::Object(Map::new());
    }
    let per_channel = channels
        .iter()
        .map(|(name, stats)| (name.clone(), Value::Object(info_object(info, *stats))))
        .collect::<Map<_, _>>();
    serde_json::json!({ "channels": per_channel })
}

/// The body of a successful batch trigger: `{}`, or when any entry asked for `info`
/// `{"batch": [{attributes}, …]}`, one object per entry in order.
pub fn batch_response(entries: &[(Info, ChannelStats)]) -> Value {
    if entries.iter().all(|(info, _)| *info == Info::default()) {
        return Value::Object(Map::new());
    }
    let batch = entries
        .iter()
        .map(|(info, stats)| Value::Object(info_object(*info, *stats)))
        .collect::<Vec<_>>();
    serde_json::json!({ "batch": batch })
}

/// The body of `GET /channels`: `{"channels": {name: {attributes}}}` over the occupied
/// channels the caller selected with [`ChannelsQuery`].
pub fn channels_response(query: &ChannelsQuery, channels: &[(String, ChannelStats)]) -> Value {
    let listed = channels
        .iter()
        .filter(|(name, _)| {
            query
                .filter_by_prefix
                .as_deref()
                .is_none_or(|p| name.starts_with(p))
        })
        .map(|(name, stats)| (name.clone(), Value::Object(info_object(query.info, *stats))))
        .collect::<Map<_, _>>();
    serde_json::json!({ "channels": listed })
}

/// The body of `GET /channels/{name}`: `{"occupied": bool, attributes…}`.
pub fn channel_response(info: Info, stats: ChannelStats) -> Value {
    let mut o = info_object(info, stats);
    o.insert("occupied".into(), (stats.subscription_count > 0).into());
    Value::Object(o)
}

/// The body of `GET /channels/{name}/users`: `{"users": [{"id": …}, …]}`.
pub fn users_response<'a>(user_ids: impl IntoIterator<Item = &'a str>) -> Value {
    let users = user_ids
        .into_iter()
        .map(|id| serde_json::json!({ "id": id }))
        .collect::<Vec<_>>();
    serde_json::json!({ "users": users })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l() -> Limits {
        Limits::default()
    }

    fn err(r: Result<impl std::fmt::Debug, RestError>) -> (u16, String) {
        let e = r.unwrap_err();
        (e.status(), e.to_string())
    }

    #[test]
    fn the_docs_trigger_body_parses() {
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let t = parse_trigger(body, &l()).unwrap();
        assert_eq!(t.name, "foo");
        assert_eq!(t.data, r#"{"some":"data"}"#);
        assert_eq!(t.channels, vec!["project-3"]);
        assert_eq!(t.socket_id, None);
        assert_eq!(t.info, Info::default());
    }

    #[test]
    fn trigger_takes_channel_or_channels_socket_id_and_info() {
        let t = parse_trigger(
            br#"{"name":"App\\Events\\X","channel":"presence-a","data":"x","socket_id":"1.2","info":"user_count,subscription_count,bogus"}"#,
            &l(),
        )
        .unwrap();
        assert_eq!(t.name, r"App\Events\X");
        assert_eq!(t.channels, vec!["presence-a"]);
        assert_eq!(t.socket_id.as_deref(), Some("1.2"));
        assert_eq!(
            t.info,
            Info {
                user_count: true,
                subscription_count: true,
                cache: false
            }
        );
        let t = parse_trigger(br#"{"name":"e","channels":["a","b","a"],"data":""}"#, &l()).unwrap();
        assert_eq!(t.channels, vec!["a", "b"]);
        assert!(parse_trigger(
            br##"{"name":"e","channel":"#server-to-user-7","data":"x"}"##,
            &l()
        )
        .is_ok());
    }

    #[test]
    fn trigger_refusals() {
        let cases: &[(&[u8], u16, &str)] = &[
            (b"nope", 400, "Request body is not valid JSON"),
            (b"[]", 400, "Request body must be a JSON object"),
            (
                br#"{"channels":["a"],"data":"x"}"#,
                400,
                "Missing required field: name",
            ),
            (
                br#"{"name":"e","channels":["a"]}"#,
                400,
                "Missing required field: data",
            ),
            (
                br#"{"name":"e","channels":["a"],"data":{"a":1}}"#,
                400,
                "data must be a string (serialise objects to JSON first)",
            ),
            (
                br#"{"name":"e","data":"x"}"#,
                400,
                "Missing required field: channels",
            ),
            (
                br#"{"name":"e","channels":[],"data":"x"}"#,
                400,
                "channels must not be empty",
            ),
            (
                br#"{"name":"e","channels":"a","data":"x"}"#,
                400,
                "channels must be an array of strings",
            ),
            (
                br#"{"name":"e","channels":[1],"data":"x"}"#,
                400,
                "channels must be an array of strings",
            ),
            (
                br#"{"name":"e","channels":["a"],"channel":"a","data":"x"}"#,
                400,
                "Give either channels or channel, not both",
            ),
            (
                br#"{"name":"e","channels":["a b"],"data":"x"}"#,
                400,
                "invalid channel name: 1-164 characters of A-Z a-z 0-9 _ - = @ , . ;",
            ),
            (
                br#"{"name":"pusher:x","channels":["a"],"data":"x"}"#,
                400,
                "event names starting with 'pusher:' or 'pusher_internal:' are reserved",
            ),
            (
                br#"{"name":"e","channels":["a"],"data":"x","socket_id":"abc"}"#,
                400,
                "Invalid socket_id",
            ),
            (
                br#"{"name":"e","channels":["a"],"data":"x","info":"user_count"}"#,
                400,
                "user_count is only available for presence channels",
            ),
            (
                br#"{"name":"e","channels":["private-encrypted-a","b"],"data":"x"}"#,
                400,
                "Cannot trigger on more than one channel when one is an encrypted channel",
            ),
        ];
        for (body, status, msg) in cases {
            assert_eq!(
                err(parse_trigger(body, &l())),
                (*status, msg.to_string()),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn trigger_limits() {
        let data = "x".repeat(10240);
        let body = format!(r#"{{"name":"e","channel":"a","data":"{data}"}}"#);
        assert!(parse_trigger(body.as_bytes(), &l()).is_ok());
        let body = format!(r#"{{"name":"e","channel":"a","data":"{data}x"}}"#);
        assert_eq!(
            err(parse_trigger(body.as_bytes(), &l())),
            (413, "Event data is larger than 10240 bytes".to_string())
        );
        let names = |n: usize| {
            (0..n)
                .map(|i| format!("\"c{i}\""))
                .collect::<Vec<_>>()
                .join(",")
        };
        let body = format!(r#"{{"name":"e","channels":[{}],"data":"x"}}"#, names(100));
        assert!(parse_trigger(body.as_bytes(), &l()).is_ok());
        let body = format!(r#"{{"name":"e","channels":[{}],"data":"x"}}"#, names(101));
        assert_eq!(
            err(parse_trigger(body.as_bytes(), &l())),
            (400, "Cannot trigger on more than 100 channels".to_string())
        );
    }

    #[test]
    fn batches_are_bounded_and_validated_per_entry() {
        let entry = r#"{"channel":"a","name":"e","data":"x"}"#;
        let batch = |n: usize| format!(r#"{{"batch":[{}]}}"#, vec![entry; n].join(","));
        let events = parse_batch(batch(10).as_bytes(), &l()).unwrap();
        assert_eq!(events.len(), 10);
        assert_eq!(events[0].channels, vec!["a"]);
        assert_eq!(
            err(parse_batch(batch(11).as_bytes(), &l())),
            (400, "Batch too large: at most 10 events".to_string())
        );
        assert_eq!(parse_batch(br#"{"batch":[]}"#, &l()).unwrap(), vec![]);
        assert_eq!(
            err(parse_batch(br#"{"events":[]}"#, &l())),
            (400, "batch must be an array of events".to_string())
        );
        assert_eq!(
            err(parse_batch(br#"{"batch":[{"name":"e","data":"x"}]}"#, &l())),
            (400, "Missing required field: channel".to_string())
        );
        assert_eq!(
            err(parse_batch(br#"{"batch":[1]}"#, &l())),
            (400, "batch entries must be objects".to_string())
        );
        let big = format!(
            r#"{{"batch":[{{"channel":"a","name":"e","data":"{}"}}]}}"#,
            "x".repeat(10241)
        );
        assert_eq!(err(parse_batch(big.as_bytes(), &l())).0, 413);
        let t = parse_batch(
            br#"{"batch":[{"channel":"presence-a","name":"e","data":"x","socket_id":"1.1","info":"user_count"}]}"#,
            &l(),
        )
        .unwrap();
        assert!(t[0].info.user_count);
        assert_eq!(t[0].socket_id.as_deref(), Some("1.1"));
        assert_eq!(
            err(parse_batch(
                br#"{"batch":[{"channel":"a","name":"e","data":"x","info":"user_count"}]}"#,
                &l()
            ))
            .0,
            400
        );
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn channel_queries() {
        assert_eq!(channels_query(&q(&[])).unwrap(), ChannelsQuery::default());
        let c = channels_query(&q(&[
            ("filter_by_prefix", "presence-"),
            ("info", "user_count"),
        ]))
        .unwrap();
        assert_eq!(c.filter_by_prefix.as_deref(), Some("presence-"));
        assert!(c.info.user_count);
        assert_eq!(err(channels_query(&q(&[("info", "user_count")]))).0, 400);
        assert_eq!(
            err(channels_query(&q(&[
                ("filter_by_prefix", "private-"),
                ("info", "user_count")
            ])))
            .0,
            400
        );

        let (t, info) = channel_query(
            "presence-a",
            &q(&[("info", "user_count,subscription_count")]),
            &l(),
        )
        .unwrap();
        assert!(t.is_presence() && info.user_count && info.subscription_count);
        assert_eq!(
            err(channel_query("a", &q(&[("info", "user_count")]), &l())).0,
            400
        );
        assert!(channel_query("cache-a", &q(&[("info", "cache")]), &l()).is_ok());
        assert_eq!(
            err(channel_query("a", &q(&[("info", "cache")]), &l())).0,
            400
        );
        assert_eq!(err(channel_query("a b", &q(&[]), &l())).0, 400);

        assert!(users_channel("presence-a", &l()).is_ok());
        assert_eq!(
            err(users_channel("private-a", &l())),
            (
                400,
                "users are only available for presence channels".to_string()
            )
        );
    }

    #[test]
    fn responses_carry_only_the_requested_attributes() {
        use serde_json::json;
        let presence = ChannelStats {
            subscription_count: 3,
            user_count: Some(2),
        };
        let public = ChannelStats {
            subscription_count: 1,
            user_count: None,
        };
        assert_eq!(
            trigger_response(Info::default(), &[("a".into(), public)]),
            json!({})
        );
        let both = Info::parse("user_count,subscription_count");
        assert_eq!(
            trigger_response(both, &[("presence-a".into(), presence)]),
            json!({"channels": {"presence-a": {"user_count": 2, "subscription_count": 3}}})
        );
        assert_eq!(batch_response(&[(Info::default(), public)]), json!({}));
        assert_eq!(
            batch_response(&[
                (Info::parse("subscription_count"), public),
                (Info::default(), public)
            ]),
            json!({"batch": [{"subscription_count": 1}, {}]})
        );
        let query = channels_query(&q(&[
            ("filter_by_prefix", "presence-"),
            ("info", "user_count"),
        ]))
        .unwrap();
        assert_eq!(
            channels_response(
                &query,
                &[("presence-a".into(), presence), ("b".into(), public)]
            ),
            json!({"channels": {"presence-a": {"user_count": 2}}})
        );
        assert_eq!(
            channels_response(&ChannelsQuery::default(), &[("b".into(), public)]),
            json!({"channels": {"b": {}}})
        );
        assert_eq!(
            channel_response(both, presence),
            json!({"occupied": true, "user_count": 2, "subscription_count": 3})
        );
        assert_eq!(
            channel_response(Info::default(), ChannelStats::default()),
            json!({"occupied": false})
        );
        assert_eq!(
            users_response(["1", "2"]),
            json!({"users": [{"id": "1"}, {"id": "2"}]})
        );
    }

    #[test]
    fn terminate_connections_user_ids() {
        assert!(validate_user_id("42", &l()).is_ok());
        assert!(validate_user_id("user@example.com", &l()).is_ok());
        assert!(validate_user_id(&"a".repeat(148), &l()).is_ok());
        for bad in ["", "a b", "a/b", &"a".repeat(149)] {
            assert_eq!(
                err(validate_user_id(bad, &l())),
                (400, "Invalid user id".to_string()),
                "{bad}"
            );
        }
    }
}
