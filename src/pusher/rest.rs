//! REST API request authentication (Pusher's "HTTP API reference", auth version 1.0), and
//! the one error type of the REST API with its HTTP status and body.
//!
//! Every request carries `auth_key`, `auth_timestamp`, `auth_version=1.0` and
//! `auth_signature` in its query string, and `body_md5` (lowercase hex MD5 of the body) when
//! it has a body. The signature is the hex HMAC-SHA256, under the app secret, of
//!
//! ```text
//! METHOD\nPATH\nQUERY
//! ```
//!
//! where `METHOD` is upper case, `PATH` the request path as sent (`/apps/3/events`, no query)
//! and `QUERY` every query parameter but `auth_signature`, keys lower-cased, sorted by key,
//! joined as `k=v` with `&`, values *not* URL-encoded: `pusher-http-node` and
//! `pusher-http-python` both sign raw values (`info=user_count,subscription_count`), so the
//! server signs the decoded values ([`parse_query`] decodes `%XX` and `+`).
//!
//! Checks, in order: `auth_key` is the app's key; `auth_version` is `1.0`;
//! `auth_timestamp` is within [`TIMESTAMP_WINDOW_S`] of `now_s`; `body_md5` matches the body
//! when the body is non-empty, and also when it is sent with an empty body
//! (`pusher-http-python` sends the MD5 of the empty body on GETs); then the signature, in
//! constant time. Every failure is a 401 whose plain-text body says what to fix, as
//! Pusher's does; none quotes the secret.

use std::collections::BTreeMap;

use super::sign::{hmac_sha256_hex, md5_hex, verify_hex};

/// Seconds `auth_timestamp` may differ from the server's clock, either way (Pusher: 600).
pub const TIMESTAMP_WINDOW_S: u64 = 600;

/// The only `auth_version` there is.
pub const AUTH_VERSION: &str = "1.0";

/// A REST API failure: its HTTP status ([`RestError::status`]) and plain-text body
/// ([`RestError::body`]), decided here and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestError {
    /// A required authentication parameter is missing.
    #[error("Missing required parameter: {0}")]
    MissingParam(&'static str),
    /// `auth_key` is not the app's key.
    #[error("Unknown auth_key")]
    WrongKey,
    /// `auth_version` is not `1.0`.
    #[error("Unsupported auth_version, expected 1.0")]
    BadVersion,
    /// `auth_timestamp` is not an integer, or too far from the server's clock.
    #[error(
        "Timestamp expired: Given timestamp ({given}) not within {TIMESTAMP_WINDOW_S}s of server time ({now_s})"
    )]
    Timestamp {
        /// The timestamp as sent.
        given: String,
        /// The server's clock.
        now_s: u64,
    },
    /// `body_md5` does not match the body, or is missing for a body.
    #[error("body_md5 does not match the MD5 of the request body")]
    BodyMd5,
    /// A query parameter appears twice, so the signed string would be ambiguous.
    #[error("Duplicate query parameter: {0}")]
    DuplicateParam(String),
    /// The query string has an invalid percent-escape or is not UTF-8.
    #[error("Invalid query string encoding")]
    BadQueryEncoding,
    /// The signature does not match; the body gives the string that should have been signed,
    /// which helps SDK authors and reveals nothing secret.
    #[error("Invalid signature: you should have sent HmacSHA256Hex({string_to_sign:?}, your_secret_key)")]
    BadSignature {
        /// The canonical string the server signed.
        string_to_sign: String,
    },
    /// No app has this id.
    #[error("Unknown app")]
    AppNotFound,
    /// The app is disabled.
    #[error("App disabled")]
    AppDisabled,
    /// The request is valid but not allowed (e.g. over quota).
    #[error("{0}")]
    Forbidden(String),
    /// The body or a parameter is invalid; the message says which rule.
    #[error("{0}")]
    BadRequest(String),
    /// The event data is over the size limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// No such resource (route, channel).
    #[error("{0}")]
    NotFound(String),
}

impl RestError {
    /// The HTTP status: 401 for authentication, 400 for bad input, 403 for disabled apps and
    /// quotas, 404 for unknown apps and resources, 413 for oversized data.
    pub fn status(&self) -> u16 {
        match self {
            Self::MissingParam(_)
            | Self::WrongKey
            | Self::BadVersion
            | Self::Timestamp { .. }
            | Self::BodyMd5
            | Self::BadSignature { .. } => 401,
            Self::DuplicateParam(_) | Self::BadQueryEncoding | Self::BadRequest(_) => 400,
            Self::AppDisabled | Self::Forbidden(_) => 403,
            Self::AppNotFound | Self::NotFound(_) => 404,
            Self::PayloadTooLarge(_) => 413,
        }
    }

    /// The response body: plain text, as Pusher's API returns, which the SDKs surface
    /// verbatim in their errors (`pusher-http-node`'s `RequestError.body`,
    /// `pusher-http-python`'s exception message).
    pub fn body(&self) -> String {
        format!("{self}\n")
    }

    /// The response's content type.
    pub fn content_type(&self) -> &'static str {
        "text/plain; charset=utf-8"
    }
}

/// The parts of a REST request that its authentication covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// The HTTP method (any case).
    pub method: &'a str,
    /// The request path as sent, without the query string.
    pub path: &'a str,
    /// The decoded query parameters, in any order ([`parse_query`]).
    pub query: &'a [(String, String)],
    /// The raw body.
    pub body: &'a [u8],
}

/// Decodes a raw query string (without `?`) into pairs: `&`-separated, the first `=` splits
/// key from value, `+` is a space and `%XX` a byte, the result UTF-8.
pub fn parse_query(raw: &str) -> Result<Vec<(String, String)>, RestError> {
    raw.split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Result<String, RestError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(RestError::BadQueryEncoding)?;
                let hex = std::str::from_utf8(hex).map_err(|_| RestError::BadQueryEncoding)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| RestError::BadQueryEncoding)?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| RestError::BadQueryEncoding)
}

/// The canonical string a request's signature covers: `METHOD\nPATH\nk=v&…`, every
/// parameter but `auth_signature`, keys lower-cased and sorted. A key given twice is refused.
pub fn string_to_sign(
    method: &str,
    path: &str,
    query: &[(String, String)],
) -> Result<String, RestError> {
    let mut params = BTreeMap::new();
    for (k, v) in query {
        let k = k.to_ascii_lowercase();
        if k == "auth_signature" {
            continue;
        }
        if params.insert(k.clone(), v.as_str()).is_some() {
            return Err(RestError::DuplicateParam(k));
        }
    }
    let joined = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    Ok(format!("{}\n{path}\n{joined}", method.to_ascii_uppercase()))
}

/// The `auth_signature` a client would send for this request (for tests and tools).
pub fn sign_request(secret: &str, req: &SignedRequest<'_>) -> Result<String, RestError> {
    let s = string_to_sign(req.method, req.path, req.query)?;
    Ok(hmac_sha256_hex(secret, s.as_bytes()))
}

/// Authenticates a REST request for the app with `key` and `secret` at `now_s`.
pub fn authenticate(
    req: &SignedRequest<'_>,
    key: &str,
    secret: &str,
    now_s: u64,
) -> Result<(), RestError> {
    let param = |name: &'static str| {
        req.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let auth_key = param("auth_key").ok_or(RestError::MissingParam("auth_key"))?;
    if auth_key != key {
        return Err(RestError::WrongKey);
    }
    let signature = param("auth_signature").ok_or(RestError::MissingParam("auth_signature"))?;
    let version = param("auth_version").ok_or(RestError::MissingParam("auth_version"))?;
    if version != AUTH_VERSION {
        return Err(RestError::BadVersion);
    }
    let given = param("auth_timestamp").ok_or(RestError::MissingParam("auth_timestamp"))?;
    let timestamp_err = || RestError::Timestamp {
        given: given.to_string(),
        now_s,
    };
    let timestamp: u64 = given.parse().map_err(|_| timestamp_err())?;
    if timestamp.abs_diff(now_s) > TIMESTAMP_WINDOW_S {
        return Err(timestamp_err());
    }
    match param("body_md5") {
        Some(md5) if !md5.eq_ignore_ascii_case(&md5_hex(req.body)) => {
            return Err(RestError::BodyMd5)
        }
        None if !req.body.is_empty() => return Err(RestError::BodyMd5),
        _ => {}
    }
    let to_sign = string_to_sign(req.method, req.path, req.query)?;
    if !verify_hex(secret, to_sign.as_bytes(), signature) {
        return Err(RestError::BadSignature {
            string_to_sign: to_sign,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";
    const DOCS_BODY: &str =
        r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
    const DOCS_SIGNATURE: &str = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";

    fn pairs(raw: &str) -> Vec<(String, String)> {
        parse_query(raw).unwrap()
    }

    fn docs_query() -> Vec<(String, String)> {
        pairs(&format!(
            "auth_key={KEY}&auth_timestamp=1353088179&auth_version=1.0\
             &body_md5=ec365a775a4cd0599faeb73354201b6f&auth_signature={DOCS_SIGNATURE}"
        ))
    }

    fn docs_request(query: &[(String, String)]) -> SignedRequest<'_> {
        SignedRequest {
            method: "POST",
            path: "/apps/3/events",
            query,
            body: DOCS_BODY.as_bytes(),
        }
    }

    #[test]
    fn pusher_docs_rest_example() {
        assert_eq!(
            md5_hex(DOCS_BODY.as_bytes()),
            "ec365a775a4cd0599faeb73354201b6f"
        );
        let query = docs_query();
        let req = docs_request(&query);
        assert_eq!(
            string_to_sign(req.method, req.path, req.query).unwrap(),
            "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179\
             &auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
        );
        assert_eq!(sign_request(SECRET, &req).unwrap(), DOCS_SIGNATURE);
        assert_eq!(authenticate(&req, KEY, SECRET, 1353088179), Ok(()));
        assert_eq!(authenticate(&req, KEY, SECRET, 1353088179 + 600), Ok(()));
        assert_eq!(authenticate(&req, KEY, SECRET, 1353088179 - 600), Ok(()));
    }

    #[test]
    fn pusher_http_node_get_vectors() {
        // create_signed_query_string.js: key f00d, secret tofu, time 1234567890.
        let q = pairs("auth_key=f00d&auth_timestamp=1234567890&auth_version=1.0&body_md5=165d5e6d7ca8f73b3853ce45addf42fc");
        let req = SignedRequest {
            method: "GET",
            path: "/event",
            query: &q,
            body: b"example body",
        };
        assert_eq!(
            sign_request("tofu", &req).unwrap(),
            "a650196dc427ebe837226f8565ca9232198c6d1b9455eaa72374a9dc0b620e7b"
        );
        let q =
            pairs("foo=bar&baz=123454321&auth_key=f00d&auth_timestamp=1234567890&auth_version=1.0");
        let mut signed = q.clone();
        let req = SignedRequest {
            method: "get",
            path: "/event",
            query: &q,
            body: b"",
        };
        let sig = sign_request("tofu", &req).unwrap();
        assert_eq!(
            sig,
            "d8bdbd31911fb7400a14fbd36fd7de053494725b64400ae5856deafe304b34a9"
        );
        signed.push(("auth_signature".into(), sig));
        let req = SignedRequest {
            query: &signed,
            ..req
        };
        assert_eq!(authenticate(&req, "f00d", "tofu", 1234567890), Ok(()));
    }

    #[test]
    fn every_auth_failure_is_a_401_saying_what_to_fix() {
        let query = docs_query();
        let req = docs_request(&query);
        let now = 1353088179;
        let with = |k: &str, v: Option<&str>| {
            let mut q: Vec<(String, String)> =
                query.iter().filter(|(qk, _)| qk != k).cloned().collect();
            if let Some(v) = v {
                q.push((k.to_string(), v.to_string()));
            }
            q
        };
        let check = |q: Vec<(String, String)>, body: &[u8], now_s: u64| {
            let req = SignedRequest {
                query: &q,
                body,
                ..req
            };
            authenticate(&req, KEY, SECRET, now_s).unwrap_err()
        };
        let body = DOCS_BODY.as_bytes();
        assert_eq!(
            check(with("auth_key", None), body, now),
            RestError::MissingParam("auth_key")
        );
        assert_eq!(
            check(with("auth_key", Some("other")), body, now),
            RestError::WrongKey
        );
        assert_eq!(
            check(with("auth_version", Some("2.0")), body, now),
            RestError::BadVersion
        );
        assert_eq!(
            check(with("auth_signature", None), body, now),
            RestError::MissingParam("auth_signature")
        );
        let e = check(query.clone(), body, now + 601);
        assert_eq!(
            e.to_string(),
            "Timestamp expired: Given timestamp (1353088179) not within 600s of server time (1353088780)"
        );
        assert!(matches!(
            check(with("auth_timestamp", Some("soon")), body, now),
            RestError::Timestamp { .. }
        ));
        assert_eq!(check(query.clone(), b"{}", now), RestError::BodyMd5);
        assert_eq!(check(with("body_md5", None), body, now), RestError::BodyMd5);
        let e = check(with("auth_signature", Some(&"0".repeat(64))), body, now);
        assert!(e.to_string().starts_with("Invalid signature: you should have sent HmacSHA256Hex(\"POST\\n/apps/3/events\\nauth_key="));
        assert!(!e.body().contains(SECRET));
        // Extra parameters are signed too: adding one unsigned breaks the signature.
        let mut extra = query.clone();
        extra.push(("info".into(), "user_count".into()));
        assert!(matches!(
            check(extra, body, now),
            RestError::BadSignature { .. }
        ));
        for e in [
            RestError::WrongKey,
            RestError::BodyMd5,
            RestError::BadVersion,
        ] {
            assert_eq!(e.status(), 401);
        }
        // A different secret fails.
        assert!(matches!(
            authenticate(&req, KEY, "x", now),
            Err(RestError::BadSignature { .. })
        ));
    }

    #[test]
    fn empty_bodies_may_carry_the_md5_of_nothing() {
        // pusher-http-python signs body_md5 of b"" on GETs.
        let mut q = pairs(&format!(
            "auth_key={KEY}&auth_timestamp=100&auth_version=1.0&body_md5=d41d8cd98f00b204e9800998ecf8427e&info=user_count,subscription_count"
        ));
        let req = SignedRequest {
            method: "GET",
            path: "/apps/3/channels/presence-a",
            query: &q,
            body: b"",
        };
        let sig = sign_request(SECRET, &req).unwrap();
        q.push(("auth_signature".into(), sig));
        let req = SignedRequest {
            method: "GET",
            path: "/apps/3/channels/presence-a",
            query: &q,
            body: b"",
        };
        assert_eq!(authenticate(&req, KEY, SECRET, 100), Ok(()));
        // A wrong MD5 on an empty body is still refused.
        let mut bad = q.clone();
        bad.retain(|(k, _)| k != "body_md5");
        bad.push(("body_md5".into(), "0".repeat(32)));
        let req = SignedRequest { query: &bad, ..req };
        assert_eq!(
            authenticate(&req, KEY, SECRET, 100),
            Err(RestError::BodyMd5)
        );
    }

    #[test]
    fn the_canonical_query_is_decoded_lowercased_sorted_and_unambiguous() {
        let q = pairs("B=2&a=x%2Cy&c=a+b&auth_signature=zzz");
        assert_eq!(
            string_to_sign("get", "/p", &q).unwrap(),
            "GET\n/p\na=x,y&b=2&c=a b"
        );
        assert_eq!(
            string_to_sign("GET", "/p", &pairs("a=1&A=2")),
            Err(RestError::DuplicateParam("a".into()))
        );
        assert_eq!(
            pairs("a&&b="),
            vec![("a".into(), String::new()), ("b".into(), String::new())]
        );
        assert_eq!(parse_query("a=%zz"), Err(RestError::BadQueryEncoding));
        assert_eq!(parse_query("a=%2"), Err(RestError::BadQueryEncoding));
        assert_eq!(parse_query("a=%ff"), Err(RestError::BadQueryEncoding));
        assert_eq!(
            pairs("filter_by_prefix=presence-%C3%A9"),
            vec![("filter_by_prefix".into(), "presence-é".into())]
        );
    }

    #[test]
    fn statuses_and_bodies() {
        assert_eq!(RestError::AppNotFound.status(), 404);
        assert_eq!(RestError::AppDisabled.status(), 403);
        assert_eq!(RestError::Forbidden("over quota".into()).status(), 403);
        assert_eq!(RestError::BadRequest("x".into()).status(), 400);
        assert_eq!(RestError::DuplicateParam("a".into()).status(), 400);
        assert_eq!(RestError::PayloadTooLarge("x".into()).status(), 413);
        assert_eq!(RestError::NotFound("x".into()).status(), 404);
        assert_eq!(RestError::AppDisabled.body(), "App disabled\n");
        assert_eq!(
            RestError::AppDisabled.content_type(),
            "text/plain; charset=utf-8"
        );
    }
}
