//! The router's side of the bench-only routes `/api/bench/raw/:room/{ws,status,panic}`: a 404
//! unless `ENVIRONMENT=local` or `BENCH_ROUTES=true`, else the call goes to the room's raw
//! baseline object (`objects/bench.rs`). And `GET /api/bench/floor`, the router's baseline.

use worker::{Env, Request, Response};

use crate::config::Config;
use crate::http::error::ApiError;
use crate::http::route::RoomKey;
use crate::internal::{Binding, Op};

use super::http::{internal, require_upgrade};
use super::stub::{stub, Call};

/// The path of the minimal route.
pub(crate) const FLOOR_PATH: &str = "/api/bench/floor";

/// `GET /api/bench/floor` (bench routes only): the least a workers-rs route does — read the
/// path, answer an empty 204 — before the router does anything of its own (no request id, no
/// log line, no metrics, no CORS headers). The bench measures `/health` and the other routes
/// against it. `None` for every other request (and for this one when bench routes are off:
/// it then gets the router's 404).
pub(crate) fn floor(req: &Request, env: &Env) -> Option<worker::Result<Response>> {
    if req.path() != FLOOR_PATH {
        return None;
    }
    let config = super::settings::config(env).ok()?;
    (config.is_local() || config.bench_routes)
        .then(|| Response::empty().map(|r| r.with_status(204)))
}

/// Forwards one bench operation.
pub(crate) async fn route(
    req: Request,
    env: &Env,
    config: &Config,
    room: &RoomKey,
    op: &str,
) -> Result<Response, ApiError> {
    if !(config.is_local() || config.bench_routes) {
        return Err(ApiError::not_found(
            "not_found",
            "bench routes exist only locally or with BENCH_ROUTES=true",
        ));
    }
    let op = match op {
        "ws" => {
            require_upgrade(&req)?;
            Op::BenchSocket
        }
        "status" => Op::BenchStatus,
        "panic" => Op::BenchPanic,
        _ => return Err(ApiError::not_found("not_found", "no such bench operation")),
    };
    let mut res = Call::new(op)
        .headers_from(req.headers(), |_| true)?
        .send(&stub(env, Binding::Bench, room.as_str())?)
        .await
        .map_err(internal)?;
    if res.status_code() == 101 {
        return Ok(res);
    }
    // An object's response has immutable headers; the router adds its own, so copy it.
    let status = res.status_code();
    let body = res.text().await.map_err(internal)?;
    Ok(Response::ok(body).map_err(internal)?.with_status(status))
}
