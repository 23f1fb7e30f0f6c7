//! HTTP helpers every piece of glue may use (a leaf: it imports only the core): JSON
//! responses, the one place an [`ApiError`] becomes a response, request bodies read with their
//! size cap applied while they stream in, structured log lines and the clock.

use futures_util::StreamExt;
use serde_json::{json as j, Value};
use worker::{Headers, Request, Response, Result};

use crate::http::bodies::{self, MAX_API_BODY_BYTES};
use crate::http::error::ApiError;
use crate::obs;

/// Writes one structured log line if `level` passes `min`.
pub(crate) fn log(
    min: obs::Level,
    level: obs::Level,
    event: &str,
    request_id: Option<&str>,
    fields: Value,
) {
    if let Some(line) = obs::line(min, level, event, request_id, fields) {
        match level {
            obs::Level::Error => worker::console_error!("{line}"),
            obs::Level::Warn => worker::console_warn!("{line}"),
            _ => worker::console_log!("{line}"),
        }
    }
}

/// Logs an error-level event outside any request (a background task, a retry).
pub(crate) fn log_error(event: &str, detail: &str) {
    worker::console_error!(
        "{}",
        j!({"level": "error", "event": event, "detail": detail})
    );
}

/// An unexpected failure, hidden from the caller behind a plain 500: its detail goes into the
/// log line of the request that met it, with that request's id ([`failure_response`] in the
/// objects, the router's request line at the edge).
pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unexpected {
        detail: e.to_string(),
    }
}

/// An object's answer to a request that failed: an unexpected failure or a misconfiguration
/// is logged first, with the request id the router sent (`X-Request-Id`) when there is one.
pub(crate) fn failure_response(e: &ApiError, request_id: Option<&str>) -> Result<Response> {
    if let Some(detail) = e.detail() {
        let event = if e.code() == "config_error" {
            "config_error"
        } else {
            "internal_error"
        };
        log(
            obs::Level::Error,
            obs::Level::Error,
            event,
            request_id,
            j!({ "detail": detail }),
        );
    }
    error_response(e)
}

/// A JSON response with the given status.
pub(crate) fn json(
    status: u16,
    value: &impl serde::Serialize,
) -> std::result::Result<Response, ApiError> {
    Response::from_json(value)
        .map(|r| r.with_status(status))
        .map_err(internal)
}

/// The one place an [`ApiError`] becomes an HTTP response (logging is the caller's: the
/// router's request line, or [`failure_response`]).
pub(crate) fn error_response(e: &ApiError) -> Result<Response> {
    let headers = Headers::new();
    headers.set("Content-Type", "application/json")?;
    for (k, v) in e.headers() {
        headers.set(k, &v)?;
    }
    Ok(Response::ok(e.body())?
        .with_status(e.status())
        .with_headers(headers))
}

/// `r` with `headers` added.
pub(crate) fn with_headers(mut r: Response, headers: &[(&'static str, String)]) -> Response {
    let h = r.headers_mut();
    for (k, v) in headers {
        let _ = h.set(k, v);
    }
    r
}

/// Reads a request body of at most `limit` bytes. A declared `Content-Length` over the limit
/// is refused before anything is read, and a body without one (chunked) is refused as soon as
/// the bytes received pass the limit, so a large body never sits in memory whole.
pub(crate) async fn read_body(
    req: &mut Request,
    limit: usize,
) -> std::result::Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get("Content-Length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    if declared == Some(0) {
        return Ok(Vec::new());
    }
    let mut stream = match req.stream() {
        Ok(s) => s,
        // No body at all (a GET, or an empty POST).
        Err(_) => return Ok(Vec::new()),
    };
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(internal)?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads a body of at most [`MAX_API_BODY_BYTES`] and parses it as JSON.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    req: &mut Request,
) -> std::result::Result<T, ApiError> {
    bodies::parse_json(&read_body(req, MAX_API_BODY_BYTES).await?)
}

/// A response from an object has immutable headers; copy it (unless it is a WebSocket
/// upgrade, which is passed through as is) so CORS headers can be added.
pub(crate) async fn owned(mut r: Response) -> std::result::Result<Response, ApiError> {
    if r.status_code() == 101 {
        return Ok(r);
    }
    let status = r.status_code();
    let headers = Headers::new();
    for (k, v) in r.headers().entries() {
        headers.set(&k, &v).map_err(internal)?;
    }
    let body = r.bytes().await.map_err(internal)?;
    Ok(Response::from_bytes(body)
        .map_err(internal)?
        .with_status(status)
        .with_headers(headers))
}

/// Whether the request asks for a WebSocket upgrade; [`ApiError::UpgradeRequired`] if not.
pub(crate) fn require_upgrade(req: &Request) -> std::result::Result<(), ApiError> {
    let upgrade = req.headers().get("Upgrade").map_err(internal)?;
    if upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        Ok(())
    } else {
        Err(ApiError::UpgradeRequired)
    }
}

/// The request id the router forwarded to an object (`X-Request-Id`), if any.
pub(crate) fn request_id(req: &Request) -> Option<String> {
    req.headers().get(obs::REQUEST_ID_HEADER).ok().flatten()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

/// The query of an operator's list: `filter` (one optional parameter of that name, e.g.
/// `subject` or `app`) and `limit` (1–`max`, default 100); any other parameter is refused.
pub(crate) fn list_query(
    req: &Request,
    filter: &str,
    max: usize,
) -> std::result::Result<(Option<String>, usize), ApiError> {
    let url = req.url().map_err(internal)?;
    let mut value = None;
    let mut limit = 100usize.min(max);
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            k if k == filter => value = Some(v.into_owned()),
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|l| (1..=max).contains(l))
                    .ok_or_else(|| {
                        ApiError::bad_request("invalid_query", format!("limit is 1-{max}"))
                    })?
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("unknown parameter {other:?}"),
                ))
            }
        }
    }
    Ok((value, limit))
}
