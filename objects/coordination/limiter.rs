//! The Limiter Durable Object: one per limited key (`ip:…`, `user:…`, `apikey:…`).
//!
//! Every check for a key goes through this one object, so the read-decide-write below never
//! races. The object keeps one [`GcraState`] per policy name in its SQLite storage and writes
//! it back after every check, allowed or not (see [`crate::coordination::limiter::check`]), so an eviction
//! or a restart of workerd never hands a key a fresh bucket. The decision itself is the pure
//! [`crate::coordination::limiter::check`]; the router sends the policy with every request, so a change of
//! `LIMIT_POLICIES` takes effect at once without touching stored state.
//!
//! Internal API (reached only through the `LIMITER` binding, see `src/coord.rs`):
//! `POST /check` with a [`CheckRequest`] answers 200 with a [`Decision`], or 422
//! `cost_exceeds_burst`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use serde::Deserialize;
use worker::{durable_object, DurableObject, Env, Request, Response, Result, SqlStorage, State};

use crate::coordination::limiter::{self, CheckRequest, Decision, GcraState};
use crate::glue::http::{failure_response, internal, json, now_ms, read_json};
use crate::http::error::ApiError;
use crate::internal::{Binding, Op};

/// The Limiter object.
#[durable_object]
pub struct Limiter {
    state: State,
    /// The buckets this instance has read or written, by policy name. The object is their
    /// only writer, so after the first check of a policy its state is read from here instead
    /// of SQLite; every check still writes it back before answering.
    buckets: RefCell<HashMap<String, GcraState>>,
    /// Whether this instance has created its table.
    ready: Cell<bool>,
}

#[derive(Deserialize)]
struct Row {
    v: String,
}

impl DurableObject for Limiter {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            buckets: RefCell::new(HashMap::new()),
            ready: Cell::new(false),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let rid = crate::glue::http::request_id(&req);
        match self.handle(req).await {
            Ok(r) => Ok(r),
            Err(e) => failure_response(&e, rid.as_deref()),
        }
    }
}

impl Limiter {
    async fn handle(&self, mut req: Request) -> std::result::Result<Response, ApiError> {
        if Op::decode(Binding::Limiter, &req.path()) != Some(Op::LimiterCheck) {
            return Err(ApiError::not_found(
                "not_found",
                "no such limiter operation",
            ));
        }
        let c: CheckRequest = read_json(&mut req).await?;
        let sql = self.state.storage().sql();
        if !self.ready.get() {
            sql.exec(
                "CREATE TABLE IF NOT EXISTS gcra (policy TEXT PRIMARY KEY, v TEXT NOT NULL)",
                None,
            )
            .map_err(internal)?;
            self.ready.set(true);
        }
        // No await from here to the write: the read, the decision and the write are one step.
        let mut buckets = self.buckets.borrow_mut();
        let mut gcra = match buckets.get(&c.policy_name) {
            Some(g) => *g,
            None => load(&sql, &c.policy_name).map_err(internal)?,
        };
        let decision: Decision = limiter::check(&mut gcra, &c.policy, now_ms(), c.cost)
            .map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
        save(&sql, &c.policy_name, &gcra).map_err(internal)?;
        buckets.insert(c.policy_name, gcra);
        json(200, &decision)
    }
}

fn load(sql: &SqlStorage, policy: &str) -> Result<GcraState> {
    let rows: Vec<Row> = sql
        .exec(
            "SELECT v FROM gcra WHERE policy = ?",
            Some(vec![policy.into()]),
        )?
        .to_array()?;
    match rows.first() {
        // Stored as JSON text: a TAT near `u64::MAX` fits neither SQLite's i64 nor a JS number.
        Some(r) => serde_json::from_str(&r.v).map_err(|e| worker::Error::RustError(e.to_string())),
        None => Ok(GcraState::default()),
    }
}

fn save(sql: &SqlStorage, policy: &str, gcra: &GcraState) -> Result<()> {
    let v = serde_json::to_string(gcra).map_err(|e| worker::Error::RustError(e.to_string()))?;
    sql.exec(
        "INSERT INTO gcra (policy, v) VALUES (?, ?) ON CONFLICT(policy) DO UPDATE SET v = excluded.v",
        Some(vec![policy.into(), v.into()]),
    )?;
    Ok(())
}
