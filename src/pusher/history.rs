//! A channel's history over the signed REST API — what Pusher does not have:
//! `GET /apps/{id}/channels/{name}/history?since=&limit=` answers the channel's stored events
//! after offset `since`, oldest first, from the channel's Room (the same bounded history a
//! gateway fills its gaps from). A client that kept the last `offset` it saw (each event
//! carries it) reads exactly what it missed while it was away.

use serde_json::{json, Value};

use super::rest::RestError;
use super::rest_body::valid_channel;
use super::Limits;

/// Most events one history page returns.
pub const MAX_HISTORY_PAGE: usize = crate::rooms::history::MAX_HISTORY_PAGE;
/// Events per page when `limit` is not given.
pub const DEFAULT_HISTORY_PAGE: usize = 100;

/// `since` and `limit` of a history request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Events after this offset (0: from the oldest kept).
    pub since: u64,
    /// At most this many.
    pub limit: usize,
}

/// Validates a history request: the channel's name and `since` (a whole number) and `limit`
/// (1–[`MAX_HISTORY_PAGE`]); the signature's own parameters are not this function's.
pub fn history_query(
    channel: &str,
    query: &[(String, String)],
    limits: &Limits,
) -> Result<HistoryQuery, RestError> {
    valid_channel(channel, limits)?;
    let mut q = HistoryQuery {
        since: 0,
        limit: DEFAULT_HISTORY_PAGE,
    };
    for (k, v) in query {
        match k.as_str() {
            "since" => {
                q.since = v.parse().map_err(|_| {
                    RestError::BadRequest("since is a whole number (an event's offset)".into())
                })?
            }
            "limit" => {
                q.limit = v
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_HISTORY_PAGE).contains(l))
                    .ok_or_else(|| {
                        RestError::BadRequest(format!("limit is 1-{MAX_HISTORY_PAGE}"))
                    })?
            }
            _ => {}
        }
    }
    Ok(q)
}

/// The REST answer for a page of the channel's Room history (`RoomHistory`'s JSON):
/// `{channel, events: [{offset, event, data, user_id?, time_ms}], last_offset, truncated}`;
/// `truncated` says that events after `since` were already trimmed from the history. Stored
/// messages that are not Pusher events are skipped.
pub fn history_response(channel: &str, page: &Value) -> Value {
    let events: Vec<Value> = page["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let body = &m["body"];
            let mut e = json!({
                "offset": m["offset"].as_u64()?,
                "event": body["event"].as_str()?,
                "data": body["data"].as_str()?,
                "time_ms": m["ts"].as_u64().unwrap_or(0),
            });
            if let Some(user) = body["user_id"].as_str() {
                e["user_id"] = user.into();
            }
            Some(e)
        })
        .collect();
    json!({
        "channel": channel,
        "events": events,
        "last_offset": page["last_offset"].as_u64().unwrap_or(0),
        "truncated": page["truncated"].as_bool().unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn queries_default_and_bound_since_and_limit() {
        let l = Limits::default();
        assert_eq!(
            history_query("news", &q(&[("auth_key", "k")]), &l).unwrap(),
            HistoryQuery {
                since: 0,
                limit: DEFAULT_HISTORY_PAGE
            }
        );
        assert_eq!(
            history_query("news", &q(&[("since", "7"), ("limit", "1000")]), &l).unwrap(),
            HistoryQuery {
                since: 7,
                limit: 1000
            }
        );
        for bad in [
            ("since", "-1"),
            ("since", "x"),
            ("limit", "0"),
            ("limit", "1001"),
        ] {
            assert!(
                matches!(
                    history_query("news", &q(&[bad]), &l),
                    Err(RestError::BadRequest(_))
                ),
                "{bad:?}"
            );
        }
        assert!(history_query("bad name!", &[], &l).is_err());
    }

    #[test]
    fn a_room_page_becomes_pusher_events_in_order() {
        let page = json!({"epoch": "e", "last_offset": 9, "first_offset": 3, "truncated": true,
        "messages": [
            {"offset": 4, "ts": 100, "from": {"id": "api"},
             "body": {"event": "App\\Events\\X", "data": "{\"a\":1}"}},
            {"offset": 5, "ts": 101, "from": {"id": "socket:1.2"},
             "body": {"event": "client-typing", "data": "{}", "user_id": "u1"}},
            {"offset": 6, "ts": 102, "from": {"id": "x"}, "body": {"not": "an event"}}
        ]});
        let r = history_response("presence-a", &page);
        assert_eq!(r["channel"], "presence-a");
        assert_eq!(r["truncated"], true);
        assert_eq!(r["last_offset"], 9);
        let events = r["events"].as_array().unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0],
            json!({"offset": 4, "event": "App\\Events\\X", "data": "{\"a\":1}", "time_ms": 100})
        );
        assert_eq!(events[1]["user_id"], "u1");
    }
}
