//! History pages: the `GET …/history` query, its bounds, and the page it answers.

use serde::Serialize;

use super::protocol::Message;
use crate::http::error::ApiError;

/// Most messages one `GET …/history` page returns.
pub const MAX_HISTORY_PAGE: usize = 1000;
/// Messages beyond the history bound that storage may still hold: they are deleted together,
/// once per this many messages (and at maintenance), and are never read.
pub const TRIM_BATCH: u64 = 64;

/// The largest offset a stream can reach (SQLite integers are i64).
pub const MAX_OFFSET: u64 = i64::MAX as u64;

/// A `GET …/history` query: `since` (an offset, exclusive; default 0) and `limit` (1 to
/// [`MAX_HISTORY_PAGE`]; default 100). Other parameters are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Messages after this offset.
    pub since: u64,
    /// At most this many.
    pub limit: usize,
}

impl HistoryQuery {
    /// Parses the query's pairs; a refusal names the parameter (`invalid_query`).
    pub fn parse<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ApiError> {
        let mut q = Self {
            since: 0,
            limit: 100,
        };
        for (k, v) in pairs {
            let bad = |what: &str| {
                ApiError::bad_request("invalid_query", format!("{what} must be a whole number"))
            };
            match k.as_ref() {
                "since" => q.since = v.as_ref().parse().map_err(|_| bad("since"))?,
                "limit" => q.limit = v.as_ref().parse().map_err(|_| bad("limit"))?,
                _ => {}
            }
        }
        // Offsets never exceed i64::MAX (SQLite's integers): a larger `since` means "after
        // everything" and must not wrap to a negative number on the way to SQL.
        q.since = q.since.min(MAX_OFFSET);
        if q.limit == 0 || q.limit > MAX_HISTORY_PAGE {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("limit is 1-{MAX_HISTORY_PAGE}"),
            ));
        }
        Ok(q)
    }
}

/// A page of history as `GET /api/rooms/:room/history` returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryPage {
    /// Epoch of the stream.
    pub epoch: String,
    /// Messages after `since`, ascending.
    pub messages: Vec<Message>,
    /// Last offset in the room.
    pub last_offset: u64,
    /// Smallest offset still held (0 when the history is empty).
    pub first_offset: u64,
    /// True when messages after `since` were already trimmed (a gap).
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_queries_are_bounded_and_name_the_bad_parameter() {
        assert_eq!(
            HistoryQuery::parse([("since", "7"), ("limit", "5"), ("x", "y")]).unwrap(),
            HistoryQuery { since: 7, limit: 5 }
        );
        // Seen live: `since=18446744073709551615` became -1 in SQL and returned offsets 1-3.
        // Offsets never exceed i64::MAX, so any `since` above it means "after everything".
        for huge in [u64::MAX, i64::MAX as u64 + 1] {
            assert_eq!(
                HistoryQuery::parse([("since", huge.to_string())]).unwrap(),
                HistoryQuery {
                    since: i64::MAX as u64,
                    limit: 100
                }
            );
        }
        assert_eq!(
            HistoryQuery::parse([("since", "7"), ("limit", "5"), ("x", "y")]).unwrap(),
            HistoryQuery { since: 7, limit: 5 }
        );
        assert_eq!(
            HistoryQuery::parse(Vec::<(&str, &str)>::new()).unwrap(),
            HistoryQuery {
                since: 0,
                limit: 100
            }
        );
        for bad in [
            ("since", "-1"),
            ("limit", "0"),
            ("limit", "1001"),
            ("limit", "x"),
        ] {
            let e = HistoryQuery::parse([bad]).unwrap_err();
            assert_eq!((e.status(), e.code()), (400, "invalid_query"), "{bad:?}");
        }
        assert!(HistoryQuery::parse([("since", "x")])
            .unwrap_err()
            .to_string()
            .contains("since"));
    }
}
