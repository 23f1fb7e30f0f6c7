//! CORS: which browser origins may call the API, and the preflight answer.
//!
//! The allow-list comes from the `CORS_ORIGINS` setting. The Worker's own origin is always
//! allowed, so the demo client served from `/` works whatever the list says. The same check
//! guards WebSocket upgrades, because browsers do not preflight them (cross-site WebSocket
//! hijacking).

use crate::http::error::ApiError;

/// Methods a preflight may ask for.
pub const ALLOWED_METHODS: &str = "GET, POST, PATCH, DELETE, OPTIONS";
/// Request headers a preflight may ask for.
pub const ALLOWED_HEADERS: &str = "Authorization, Content-Type, Idempotency-Key, X-Request-Id";
/// Response headers scripts may read.
pub const EXPOSED_HEADERS: &str = "X-Request-Id, Retry-After, RateLimit, RateLimit-Policy";
/// How long browsers may cache a preflight answer, in seconds.
pub const PREFLIGHT_MAX_AGE_S: u32 = 600;

/// The configured set of allowed origins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowList {
    /// `*`: any origin (credentials are never used, so this is safe for public demos).
    Any,
    /// Exact origins such as `https://app.example.com` (scheme, host and port).
    Origins(Vec<String>),
}

impl AllowList {
    /// Parses a comma-separated list of origins, or `*`. An empty setting allows only the
    /// Worker's own origin.
    pub fn parse(setting: &str) -> Result<Self, String> {
        let setting = setting.trim();
        if setting == "*" {
            return Ok(Self::Any);
        }
        let mut origins = Vec::new();
        for o in setting.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let valid = (o.starts_with("http://") || o.starts_with("https://"))
                && !o.ends_with('/')
                && o.split("://")
                    .nth(1)
                    .is_some_and(|h| !h.is_empty() && !h.contains('/'));
            if !valid {
                return Err(format!(
                    "CORS_ORIGINS entry {o:?} is not an origin like https://app.example.com"
                ));
            }
            origins.push(o.to_ascii_lowercase());
        }
        Ok(Self::Origins(origins))
    }

    /// Whether `origin` may call the API; `self_origin` is the Worker's own origin.
    pub fn allows(&self, origin: &str, self_origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        if origin == self_origin.to_ascii_lowercase() {
            return true;
        }
        match self {
            Self::Any => true,
            Self::Origins(list) => list.contains(&origin),
        }
    }
}

/// Headers added to an ordinary (non-preflight) response for a request with an `Origin`.
/// Empty when the origin is not allowed: the browser then hides the response from the script.
pub fn response_headers(
    origin: Option<&str>,
    allow: &AllowList,
    self_origin: &str,
) -> Vec<(&'static str, String)> {
    match origin {
        Some(o) if allow.allows(o, self_origin) => vec![
            ("Access-Control-Allow-Origin", o.to_string()),
            ("Access-Control-Expose-Headers", EXPOSED_HEADERS.to_string()),
            ("Vary", "Origin".to_string()),
        ],
        _ => vec![("Vary", "Origin".to_string())],
    }
}

/// Answers a preflight (`OPTIONS` with `Access-Control-Request-Method`): the headers of a 204,
/// or a 403 when the origin is not allowed.
pub fn preflight(
    origin: Option<&str>,
    allow: &AllowList,
    self_origin: &str,
) -> Result<Vec<(&'static str, String)>, ApiError> {
    let Some(origin) = origin else {
        return Err(ApiError::bad_request(
            "not_a_preflight",
            "OPTIONS requests must carry an Origin header",
        ));
    };
    if !allow.allows(origin, self_origin) {
        return Err(origin_refused(origin));
    }
    Ok(vec![
        ("Access-Control-Allow-Origin", origin.to_string()),
        ("Access-Control-Allow-Methods", ALLOWED_METHODS.to_string()),
        ("Access-Control-Allow-Headers", ALLOWED_HEADERS.to_string()),
        ("Access-Control-Max-Age", PREFLIGHT_MAX_AGE_S.to_string()),
        ("Vary", "Origin".to_string()),
    ])
}

/// The 403 for an origin outside the allow-list.
pub fn origin_refused(origin: &str) -> ApiError {
    ApiError::forbidden(
        "origin_not_allowed",
        format!("origin {origin} is not in CORS_ORIGINS"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SELF: &str = "http://127.0.0.1:8787";

    #[test]
    fn parses_lists_and_star() {
        assert_eq!(AllowList::parse("*"), Ok(AllowList::Any));
        assert_eq!(
            AllowList::parse(" https://a.example , http://localhost:3000 "),
            Ok(AllowList::Origins(vec![
                "https://a.example".into(),
                "http://localhost:3000".into()
            ]))
        );
        assert_eq!(AllowList::parse(""), Ok(AllowList::Origins(vec![])));
        for bad in [
            "a.example",
            "https://a.example/",
            "ftp://x",
            "https://",
            "https://a/b",
        ] {
            assert!(AllowList::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_origin_always_allowed() {
        let list = AllowList::parse("").unwrap();
        assert!(list.allows(SELF, SELF));
        assert!(!list.allows("https://evil.example", SELF));
    }

    #[test]
    fn preflight_allowed_and_refused() {
        let list = AllowList::parse("https://app.example").unwrap();
        let h = preflight(Some("https://app.example"), &list, SELF).unwrap();
        assert!(h.contains(&("Access-Control-Allow-Origin", "https://app.example".into())));
        assert!(h.iter().any(|(k, _)| *k == "Access-Control-Allow-Methods"));
        let e = preflight(Some("https://evil.example"), &list, SELF).unwrap_err();
        assert_eq!((e.status(), e.code()), (403, "origin_not_allowed"));
        assert_eq!(preflight(None, &list, SELF).unwrap_err().status(), 400);
    }

    #[test]
    fn response_headers_only_for_allowed() {
        let list = AllowList::parse("https://app.example").unwrap();
        let ok = response_headers(Some("https://APP.example"), &list, SELF);
        assert_eq!(
            ok[0],
            ("Access-Control-Allow-Origin", "https://APP.example".into())
        );
        let no = response_headers(Some("https://evil.example"), &list, SELF);
        assert!(no.iter().all(|(k, _)| *k != "Access-Control-Allow-Origin"));
    }
}
