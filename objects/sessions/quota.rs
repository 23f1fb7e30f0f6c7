//! The Quota Durable Object: one per user (`user:<sub>`, or `ip:<address>` for anonymous
//! connections), holding the user's consumption today ([`UserUsage`]) across all of their
//! voice sessions, so the daily caps (`VOICE_USER_DAILY_AUDIO_MS`, `VOICE_USER_DAILY_TOKENS`)
//! hold however many sessions a user opens. The UTC day rolls over inside
//! [`UserUsage::charge`]; the totals are in SQLite, so they survive restarts.
//!
//! Internal API (reached only through the `QUOTA` binding, from the Voice object):
//! `POST /charge` with a [`Usage`] adds it (all zero only reads) and answers the user's
//! [`UserUsage`] after it.

use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use crate::glue::http::{error_response, failure_response, internal, json, now_ms, read_json};
use crate::glue::stub::{stub, Call};
use crate::http::error::ApiError;
use crate::internal::{Binding, Op};
use crate::objects::sessions::session::Kv;
use crate::sessions::voice::{Usage, UserUsage};

/// Storage key of the user's totals.
const TOTALS_KEY: &str = "user_usage";

/// The Quota object.
#[durable_object]
pub struct Quota {
    kv: Kv,
}

impl DurableObject for Quota {
    fn new(state: State, env: Env) -> Self {
        Self {
            kv: Kv::new(&state, &env),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        if Op::decode(Binding::Quota, &req.path()) != Some(Op::QuotaCharge) {
            return error_response(&ApiError::not_found("not_found", "no such quota operation"));
        }
        let rid = crate::glue::http::request_id(&req);
        let result = async {
            let delta: Usage = read_json(&mut req).await?;
            // No await from the read to the write: one step for this user's only writer.
            let mut totals: UserUsage = self.kv.get(TOTALS_KEY).unwrap_or_default();
            totals.charge(delta, now_ms());
            self.kv.put(TOTALS_KEY, &totals).map_err(internal)?;
            json(200, &totals)
        }
        .await;
        result.or_else(|e| failure_response(&e, rid.as_deref()))
    }
}

/// Charges `delta` to the quota object `name` (all zero only reads) and returns the user's
/// totals after it.
pub(crate) async fn charge(env: &Env, name: &str, delta: Usage) -> Result<UserUsage> {
    let stub =
        stub(env, Binding::Quota, name).map_err(|e| worker::Error::RustError(e.to_string()))?;
    let mut resp = Call::new(Op::QuotaCharge)
        .body(serde_json::to_string(&delta)?)
        .send(&stub)
        .await?;
    if resp.status_code() != 200 {
        return Err(worker::Error::RustError(format!(
            "quota answered {}: {}",
            resp.status_code(),
            resp.text().await.unwrap_or_default()
        )));
    }
    resp.json().await
}
