//! The router's side of the coordination objects: rate limits and locks (wasm32 only).
//!
//! Keys and lock names become objects here: a limiter key (`ip:…`, `user:…`, `apikey:…`) names
//! one `Limiter` object and a lock name one `Lock` object, both through `id_from_name`, so
//! every decision for a key or a lock has a single writer. Request bodies are parsed and typed
//! here before an object is touched; the objects run the pure cores ([`crate::coordination::limiter`],
//! [`crate::coordination::lock`]) and answer in the final JSON shape, which is passed on.
//!
//! A refused `POST /api/limits/:policy/:key` is a 200 with `"allowed": false` (plus
//! `Retry-After`): the check itself succeeded, and a 429 stays reserved for callers that are
//! themselves over a limit (the `api` policy on their API key), so the two never mix.

use serde::Deserialize;
use serde_json::{json, Value};
use worker::{Env, Request, Response};

use crate::config::Config;
use crate::coordination::limiter::{self, Decision, Policy};
use crate::glue::http::{internal, json as json_response, log_error, read_json};
use crate::http::bodies;
use crate::http::client::address_key;
use crate::http::error::ApiError;
use crate::http::route::LockOp;
use crate::internal::Op;

use crate::coordination::limiter::CheckRequest;
use crate::coordination::lock::{AcquireRequest, ReleaseRequest, RenewRequest};

use super::http::read_body;
use super::stub::{stub, Call};

/// `POST /api/limits/:policy/:key` body; an empty body means `{"cost": 1}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitCheckBody {
    #[serde(default = "one")]
    cost: u32,
}

fn one() -> u32 {
    1
}

/// `POST /api/limits/:policy/:key`: one check of `key` against the named policy.
///
/// 200 `{allowed, remaining, reset_ms, retry_after_ms, limit, policy}` with `RateLimit` and
/// `RateLimit-Policy` headers, and `Retry-After` when refused; 404 `unknown_policy`; 422
/// `cost_exceeds_burst`.
pub(crate) async fn limit_check(
    mut req: Request,
    env: &Env,
    config: &Config,
    policy_name: &str,
    key: &str,
) -> Result<Response, ApiError> {
    let policy = config
        .policies
        .get(policy_name)
        .map_err(|e| ApiError::not_found(e.code(), e.to_string()))?;
    let bytes = read_body(&mut req, bodies::MAX_API_BODY_BYTES).await?;
    let body = if bytes.iter().all(u8::is_ascii_whitespace) {
        LimitCheckBody { cost: 1 }
    } else {
        bodies::parse_json(&bytes)?
    };
    let decision = match check(env, policy_name, policy, key, body.cost).await? {
        Ok(d) => d,
        Err((status, v)) => return json_response(status, &v),
    };
    let mut response = json_response(
        200,
        &json!({
            "allowed": decision.allowed,
            "remaining": decision.remaining,
            "reset_ms": decision.reset_ms,
            "retry_after_ms": decision.retry_after_ms,
            "limit": decision.limit,
            "policy": policy_name,
        }),
    )?;
    let headers = response.headers_mut();
    for (k, v) in decision_headers(policy_name, policy, &decision) {
        headers.set(k, &v).map_err(internal)?;
    }
    Ok(response)
}

/// Checks one request of `key` against the configured policy `policy_name`: the headers to
/// describe it when allowed, [`ApiError::RateLimited`] (429 with `Retry-After`, `RateLimit`,
/// `RateLimit-Policy`) when refused.
///
/// A limiter that cannot answer refuses (503): limiters are per key, so only the key whose
/// object is failing — typically the one flooding it — is turned away.
pub(crate) async fn enforce(
    env: &Env,
    config: &Config,
    policy_name: &str,
    key: &str,
) -> Result<Vec<(&'static str, String)>, ApiError> {
    let policy = config
        .policies
        .get(policy_name)
        .map_err(|e| ApiError::Config {
            message: format!("LIMIT_POLICIES: {e}"),
        })?;
    let unavailable = || ApiError::Unavailable {
        message: "the rate limiter is unavailable; try again".into(),
    };
    let decision = match check(env, policy_name, policy, key, 1).await {
        Ok(Ok(d)) => d,
        Ok(Err((status, body))) => {
            log_error(
                "limiter_failed",
                &format!("limiter answered {status}: {body}"),
            );
            return Err(unavailable());
        }
        Err(_) => return Err(unavailable()),
    };
    let headers = limiter::rate_limit_headers(policy_name, policy, &decision).to_vec();
    if decision.allowed {
        Ok(headers)
    } else {
        Err(ApiError::RateLimited {
            retry_after_ms: decision.retry_after_ms,
            policy_headers: headers,
        })
    }
}

/// The caller's budget key from `CF-Connecting-IP` ([`address_key`]: IPv6 by its /64).
///
/// Cloudflare sets this header from the connection. Locally, `wrangler dev` sets it from the
/// client socket only when the client did not send one (see docs/COORDINATION.md).
pub(crate) fn client_ip(req: &Request) -> String {
    address_key(
        req.headers()
            .get("CF-Connecting-IP")
            .ok()
            .flatten()
            .as_deref(),
    )
}

/// `GET /api/locks/:name` and `POST /api/locks/:name/{acquire,renew,release}`: the body is
/// typed here, the `Lock` object decides and its answer is passed on.
pub(crate) async fn lock(
    mut req: Request,
    env: &Env,
    name: &str,
    op: LockOp,
) -> Result<Response, ApiError> {
    let body = match op {
        LockOp::Status => None,
        LockOp::Acquire => Some(to_json(&read_json::<AcquireRequest>(&mut req).await?)?),
        LockOp::Renew => Some(to_json(&read_json::<RenewRequest>(&mut req).await?)?),
        LockOp::Release => Some(to_json(&read_json::<ReleaseRequest>(&mut req).await?)?),
    };
    let op = match op {
        LockOp::Status => Op::LockStatus,
        LockOp::Acquire => Op::LockAcquire,
        LockOp::Renew => Op::LockRenew,
        LockOp::Release => Op::LockRelease,
    };
    let (status, v) = call(env, op, name, body).await?;
    json_response(status, &v)
}

/// Asks the key's `Limiter` object; a non-200 answer comes back as its status and body.
async fn check(
    env: &Env,
    policy_name: &str,
    policy: &Policy,
    key: &str,
    cost: u32,
) -> Result<Result<Decision, (u16, Value)>, ApiError> {
    let request = CheckRequest {
        policy_name: policy_name.to_string(),
        policy: *policy,
        cost,
    };
    let (status, v) = call(env, Op::LimiterCheck, key, Some(to_json(&request)?)).await?;
    if status != 200 {
        return Ok(Err((status, v)));
    }
    serde_json::from_value(v).map(Ok).map_err(internal)
}

/// `RateLimit`, `RateLimit-Policy` and, when refused, `Retry-After` for a decision.
fn decision_headers(name: &str, policy: &Policy, d: &Decision) -> Vec<(&'static str, String)> {
    let mut headers = limiter::rate_limit_headers(name, policy, d).to_vec();
    if let Some(secs) = limiter::retry_after_secs(d) {
        headers.push(("Retry-After", secs.to_string()));
    }
    headers
}

fn to_json(v: &impl serde::Serialize) -> Result<String, ApiError> {
    serde_json::to_string(v).map_err(internal)
}

/// Calls `op` of the coordination object named `name` with an optional JSON body and returns
/// its status and JSON body; 503 when the object cannot answer.
pub(crate) async fn call(
    env: &Env,
    op: Op,
    name: &str,
    body: Option<String>,
) -> Result<(u16, Value), ApiError> {
    let binding = op.bindings()[0];
    let call = Call::new(op);
    let call = match body {
        Some(b) => call.body(b),
        None => call,
    };
    // The object was reset, overloaded or unreachable: worth a retry, unlike a bug.
    let mut res = call.send(&stub(env, binding, name)?).await.map_err(|e| {
        log_error("coordination_unavailable", &e.to_string());
        ApiError::Unavailable {
            message: "the coordination object is unavailable; try again".into(),
        }
    })?;
    let status = res.status_code();
    let v: Value = res.json().await.map_err(internal)?;
    Ok((status, v))
}
