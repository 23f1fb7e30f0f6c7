//! Observability: request ids and structured log lines.
//!
//! Every request gets an id — the caller's `X-Request-Id` when it is a sane token, else a
//! fresh one — returned in the response's `X-Request-Id` header and passed to the objects the
//! request reaches, so one grep of the logs finds everything a request did. Log lines are one
//! JSON object each, filtered by the `LOG_LEVEL` setting. Nothing here logs a query string,
//! a token, a key or a secret: callers pass paths without queries.

use serde_json::{json, Value};

/// Header carrying the request id, in both directions and into objects.
pub const REQUEST_ID_HEADER: &str = "X-Request-Id";
/// Longest request id accepted from a caller.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// The caller's request id if it is 1–[`MAX_REQUEST_ID_LEN`] characters of
/// `[A-Za-z0-9._:-]`, else `fresh` (so a hostile header cannot inject into log lines).
pub fn request_id(incoming: Option<&str>, fresh: impl FnOnce() -> String) -> String {
    match incoming {
        Some(id)
            if !id.is_empty()
                && id.len() <= MAX_REQUEST_ID_LEN
                && id.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
                }) =>
        {
            id.to_string()
        }
        _ => fresh(),
    }
}

/// Log levels, least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Per-frame detail.
    Debug,
    /// Requests and significant events (the default).
    Info,
    /// Refusals worth a look.
    Warn,
    /// Failures.
    Error,
}

impl Level {
    /// Parses `LOG_LEVEL` (`debug`, `info`, `warn`, `error`); anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "debug" => Some(Self::Debug),
            "info" => Some(Self::Info),
            "warn" | "warning" => Some(Self::Warn),
            "error" => Some(Self::Error),
            _ => None,
        }
    }

    /// The name written in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// One log line: `{"level", "event", "request_id"?, …fields}`; `None` when `level` is below
/// `min`.
pub fn line(
    min: Level,
    level: Level,
    event: &str,
    request_id: Option<&str>,
    fields: Value,
) -> Option<String> {
    if level < min {
        return None;
    }
    let mut v = json!({"level": level.as_str(), "event": event});
    if let Some(id) = request_id {
        v["request_id"] = json!(id);
    }
    if let Value::Object(map) = fields {
        for (k, val) in map {
            v[k] = val;
        }
    }
    Some(v.to_string())
}

/// The level of a request's log line: errors for 5xx, warnings for 4xx refusals.
pub fn level_for_status(status: u16) -> Level {
    match status {
        500.. => Level::Error,
        400..=499 => Level::Warn,
        _ => Level::Info,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        assert_eq!(request_id(Some("abc-123"), || "new".into()), "abc-123");
        for bad in ["", "has space", "quote\"", "a\nb", &"x".repeat(65)] {
            assert_eq!(request_id(Some(bad), || "new".into()), "new", "{bad:?}");
        }
        assert_eq!(request_id(None, || "new".into()), "new");
    }

    #[test]
    fn lines_are_json_and_filtered() {
        let l = line(
            Level::Info,
            Level::Warn,
            "request",
            Some("r1"),
            json!({"status": 404}),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(
            v,
            json!({"level": "warn", "event": "request", "request_id": "r1", "status": 404})
        );
        assert!(line(Level::Warn, Level::Info, "x", None, json!({})).is_none());
        assert_eq!(Level::parse("WARNING"), Some(Level::Warn));
        assert_eq!(Level::parse("loud"), None);
        assert_eq!(level_for_status(503), Level::Error);
        assert_eq!(level_for_status(429), Level::Warn);
        assert_eq!(level_for_status(101), Level::Info);
    }
}
