//! The one error type of the HTTP edge.
//!
//! Every refusal the router or an object makes over HTTP is an [`ApiError`]. It is turned into a
//! response in exactly one place (the glue calls [`ApiError::status`], [`ApiError::headers`] and
//! [`ApiError::body`]), so every caller sees the same `{"error":{"code","message"}}` shape and no
//! internal detail leaks.

use serde::Serialize;

/// An HTTP-level refusal with a stable, documented machine-readable `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON, bad room name, wrong field type).
    #[error("{message}")]
    BadRequest {
        /// Stable snake_case code.
        code: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// 401: credentials are missing or invalid.
    #[error("{message}")]
    Unauthorized {
        /// Stable snake_case code.
        code: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// 403: the caller is known but not allowed (e.g. an origin outside the CORS allow-list).
    #[error("{message}")]
    Forbidden {
        /// Stable snake_case code.
        code: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// 404: no such route or resource.
    #[error("{message}")]
    NotFound {
        /// Stable snake_case code.
        code: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// 405: the route exists but not for this method; `allowed` fills the `Allow` header.
    #[error("method not allowed; allowed: {}", allowed.join(", "))]
    MethodNotAllowed {
        /// Methods the route accepts.
        allowed: &'static [&'static str],
    },
    /// 409: the request conflicts with the resource's state.
    #[error("{message}")]
    Conflict {
        /// Stable snake_case code.
        code: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// 413: the body is larger than `limit` bytes.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// 422: well-formed but semantically invalid input.
    #[error("{message}")]
    Unprocessable {
        /// Stable snake_case code.
        code: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// 422: invalid input with one entry per offending field (or row), all reported at once.
    #[error("{message}")]
    Invalid {
        /// Stable snake_case code.
        code: &'static str,
        /// Human-readable summary.
        message: String,
        /// `[{"field"|"line", "code", "message"}, …]`, rendered as `error.fields`.
        fields: serde_json::Value,
    },
    /// 426: a WebSocket route called without `Upgrade: websocket`.
    #[error("this route only accepts WebSocket upgrades (send Upgrade: websocket)")]
    UpgradeRequired,
    /// 429: too many requests; the caller may retry after `retry_after_ms`.
    #[error("rate limited; retry after {retry_after_ms} ms")]
    RateLimited {
        /// Milliseconds until a retry may succeed.
        retry_after_ms: u64,
        /// `RateLimit` / `RateLimit-Policy` headers describing the policy that refused.
        policy_headers: Vec<(&'static str, String)>,
    },
    /// 500: the service is misconfigured (a missing secret, a malformed setting).
    #[error("service misconfigured: {message}")]
    Config {
        /// What is wrong with the configuration (never a secret's value).
        message: String,
    },
    /// 500: an unexpected internal failure; details go to the log, not to the caller.
    #[error("internal error")]
    Internal,
    /// 500: an unexpected internal failure with its detail for the log line of the request
    /// (which carries the request id); the caller sees only what [`ApiError::Internal`] shows.
    #[error("internal error")]
    Unexpected {
        /// What failed, for the log only.
        detail: String,
    },
    /// 503: a dependency (a Durable Object, storage) is unavailable right now.
    #[error("{message}")]
    Unavailable {
        /// Human-readable explanation.
        message: String,
    },
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<&'a serde_json::Value>,
}

impl ApiError {
    /// A 400 with the given code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// A 401 with the given code.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unauthorized {
            code,
            message: message.into(),
        }
    }

    /// A 403 with the given code.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            message: message.into(),
        }
    }

    /// A 404 with the given code.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }

    /// A 409 with the given code.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    /// A 422 with the given code.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unprocessable {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest { .. } => 400,
            Self::Unauthorized { .. } => 401,
            Self::Forbidden { .. } => 403,
            Self::NotFound { .. } => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::Conflict { .. } => 409,
            Self::PayloadTooLarge { .. } => 413,
            Self::Unprocessable { .. } | Self::Invalid { .. } => 422,
            Self::UpgradeRequired => 426,
            Self::RateLimited { .. } => 429,
            Self::Config { .. } | Self::Internal | Self::Unexpected { .. } => 500,
            Self::Unavailable { .. } => 503,
        }
    }

    /// The stable machine-readable code (documented in the README's error table).
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Unauthorized { code, .. }
            | Self::Forbidden { code, .. }
            | Self::NotFound { code, .. }
            | Self::Conflict { code, .. }
            | Self::Unprocessable { code, .. }
            | Self::Invalid { code, .. } => code,
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UpgradeRequired => "upgrade_required",
            Self::RateLimited { .. } => "rate_limited",
            Self::Config { .. } => "config_error",
            Self::Internal | Self::Unexpected { .. } => "internal",
            Self::Unavailable { .. } => "unavailable",
        }
    }

    /// What the log line of a failed request adds to the code: the detail of an unexpected
    /// failure or of a misconfiguration (never shown to the caller beyond its own message).
    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::Unexpected { detail } => Some(detail),
            Self::Config { message } => Some(message),
            _ => None,
        }
    }

    /// The error as a log line shows it: the detail where there is one, else the message.
    pub fn log_text(&self) -> String {
        self.detail()
            .map_or_else(|| self.to_string(), str::to_string)
    }

    /// Extra response headers this error needs (`Allow`, `Retry-After`, `RateLimit`, `Upgrade`).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::MethodNotAllowed { allowed } => vec![("Allow", allowed.join(", "))],
            Self::RateLimited {
                retry_after_ms,
                policy_headers,
            } => {
                let mut h = vec![(
                    "Retry-After",
                    retry_after_ms.div_ceil(1000).max(1).to_string(),
                )];
                h.extend(policy_headers.iter().cloned());
                h
            }
            Self::UpgradeRequired => vec![("Upgrade", "websocket".to_string())],
            _ => Vec::new(),
        }
    }

    /// The JSON body: `{"error":{"code":"…","message":"…"}}`.
    pub fn body(&self) -> String {
        serde_json::to_string(&Body {
            error: Inner {
                code: self.code(),
                message: self.to_string(),
                fields: match self {
                    Self::Invalid { fields, .. } => Some(fields),
                    _ => None,
                },
            },
        })
        .unwrap_or_else(|_| r#"{"error":{"code":"internal","message":"internal error"}}"#.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_code_and_message() {
        let e = ApiError::bad_request("invalid_room_name", "room names use [A-Za-z0-9._-]");
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v["error"]["code"], "invalid_room_name");
        assert_eq!(v["error"]["message"], "room names use [A-Za-z0-9._-]");
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn method_not_allowed_sets_allow() {
        let e = ApiError::MethodNotAllowed {
            allowed: &["GET", "POST"],
        };
        assert_eq!(e.status(), 405);
        assert_eq!(e.headers(), vec![("Allow", "GET, POST".to_string())]);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let e = ApiError::RateLimited {
            retry_after_ms: 1001,
            policy_headers: vec![],
        };
        assert_eq!(e.headers(), vec![("Retry-After", "2".to_string())]);
        let e = ApiError::RateLimited {
            retry_after_ms: 0,
            policy_headers: vec![("RateLimit", "\"api\";r=0;t=1".into())],
        };
        assert_eq!(e.headers()[0], ("Retry-After", "1".to_string()));
        assert_eq!(e.headers()[1].0, "RateLimit");
    }

    #[test]
    fn invalid_lists_every_field() {
        let e = ApiError::Invalid {
            code: "invalid_lead",
            message: "2 fields are invalid".into(),
            fields: serde_json::json!([{"field": "email", "code": "invalid_email"}]),
        };
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(e.status(), 422);
        assert_eq!(v["error"]["fields"][0]["code"], "invalid_email");
    }

    #[test]
    fn internal_errors_do_not_leak() {
        assert_eq!(
            ApiError::Internal.body(),
            r#"{"error":{"code":"internal","message":"internal error"}}"#
        );
        let e = ApiError::Unexpected {
            detail: "storage: disk on fire at /secret/path".into(),
        };
        assert_eq!(e.body(), ApiError::Internal.body());
        assert_eq!((e.status(), e.code()), (500, "internal"));
        assert_eq!(e.detail(), Some("storage: disk on fire at /secret/path"));
        assert_eq!(ApiError::Internal.detail(), None);
    }
}
