//! The Lock Durable Object: one per lock name.
//!
//! A thin shell over [`LockState`], which it loads from SQLite once per instance: every
//! operation feeds the core, writes the whole state back before anyone is answered,
//! answers waiting callers from the core's [`Event`]s and sets the alarm to
//! [`LockState::next_alarm_ms`], whose `tick` expires leases and times out waiters.
//!
//! A caller that asks to wait is answered when the core grants it the lock or times it out:
//! its HTTP request stays open on a one-shot channel kept in `waiting` under its waiter id. A
//! timer a little past the waiter's deadline also runs `tick`, so a late or failed alarm cannot
//! keep a caller waiting past its `wait_ms`.
//!
//! Pending requests do not survive the object: when an instance loads the state it abandons
//! every persisted waiter ([`LockState::abandon_waiters`]), since nobody is left to answer.
//! Callers that go away while waiting are not noticed; their grant, if it comes, simply
//! expires after its TTL.
//!
//! Internal API (reached only through the `LOCK` binding, see `src/coord.rs`): `GET /status`,
//! `POST /acquire` ([`AcquireRequest`]), `POST /renew` ([`RenewRequest`]), `POST /release`
//! ([`ReleaseRequest`]), and the operator override `POST /force_release` (no body; the
//! router audits it). Answers are final JSON responses the router passes on.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::future::{select, Either};
use serde::Deserialize;
use serde_json::json;
use worker::{
    durable_object, Delay, DurableObject, Env, Method, Request, Response, Result, SqlStorage, State,
};

use crate::coordination::lock::{
    AcquireOutcome, AcquireRequest, Event, Lease, LockError, LockState, ReleaseRequest,
    RenewRequest,
};
use crate::glue::http::{failure_response, internal, json as json_response, now_ms, read_json};
use crate::http::error::ApiError;
use crate::internal::{Binding, Op};
use crate::objects::alarm::Alarm;

/// How a waiting caller's wait ended.
#[derive(Debug)]
enum Answer {
    Granted(Lease),
    TimedOut,
}

/// Extra time past a waiter's deadline before its own timer runs `tick` (the alarm should
/// have done it by then).
const TIMER_GRACE_MS: u64 = 250;

/// The Lock object.
#[durable_object]
pub struct Lock {
    state: State,
    /// The core, loaded on first use after construction.
    core: RefCell<Option<LockState>>,
    /// Pending acquire requests by waiter id.
    waiting: RefCell<HashMap<u64, Sender<Answer>>>,
    /// The next waiter id (ids only need to be unique within this instance: persisted waiters
    /// are abandoned when it loads).
    next_waiter: Cell<u64>,
    /// The scheduled alarm as last seen: `None` = not yet read from storage.
    alarm: Alarm,
}

#[derive(Deserialize)]
struct Row {
    v: String,
}

impl DurableObject for Lock {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            core: RefCell::new(None),
            waiting: RefCell::new(HashMap::new()),
            next_waiter: Cell::new(1),
            alarm: Alarm::default(),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let rid = crate::glue::http::request_id(&req);
        match self.handle(req).await {
            Ok(r) => Ok(r),
            Err(e) => failure_response(&e, rid.as_deref()),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        self.alarm.fired();
        self.tick()
            .await
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
        Response::empty()
    }
}

impl Lock {
    async fn handle(&self, mut req: Request) -> std::result::Result<Response, ApiError> {
        match (req.method(), Op::decode(Binding::Lock, &req.path())) {
            (Method::Get, Some(Op::LockStatus)) => {
                json_response(200, &self.with_core(|s| s.status(now_ms()))?)
            }
            (Method::Post, Some(Op::LockAcquire)) => {
                let r: AcquireRequest = read_json(&mut req).await?;
                self.acquire(r).await
            }
            (Method::Post, Some(Op::LockRenew)) => {
                let r: RenewRequest = read_json(&mut req).await?;
                let result = self.apply(|s, now| s.renew(r.token, r.ttl_ms, now)).await?;
                json_response(200, &result.map_err(lock_error)?)
            }
            (Method::Post, Some(Op::LockRelease)) => {
                let r: ReleaseRequest = read_json(&mut req).await?;
                self.apply(|s, now| s.release(r.token, now))
                    .await?
                    .map_err(lock_error)?;
                json_response(200, &json!({ "released": true, "token": r.token }))
            }
            (Method::Post, Some(Op::LockForceRelease)) => {
                let ended = self
                    .apply(|s, now| {
                        let (ended, events) = s.force_release(now);
                        (Ok::<_, LockError>(ended), events)
                    })
                    .await?
                    .map_err(lock_error)?;
                let next_token = self.with_core(|s| s.next_token())?;
                json_response(
                    200,
                    &json!({
                        "released": ended.is_some(),
                        "holder": ended.as_ref().map(|l| &l.owner),
                        "token": ended.as_ref().map(|l| l.token),
                        "next_token": next_token,
                    }),
                )
            }
            _ => Err(ApiError::not_found("not_found", "no such lock operation")),
        }
    }

    async fn acquire(&self, r: AcquireRequest) -> std::result::Result<Response, ApiError> {
        let waiter_id = self.next_waiter.get();
        self.next_waiter.set(waiter_id + 1);
        let mut queued = None;
        let outcome = self
            .apply(|s, now| {
                let (result, events) = s.acquire(&r.owner, r.ttl_ms, r.wait_ms, waiter_id, now);
                if let Ok(AcquireOutcome::Queued { .. }) = result {
                    // Registered before anything awaits, so no event for this waiter is missed.
                    let (tx, rx) = oneshot();
                    self.waiting.borrow_mut().insert(waiter_id, tx);
                    queued = Some(rx);
                }
                (result, events)
            })
            .await?
            .map_err(lock_error)?;
        let mut rx = match (outcome, queued) {
            (AcquireOutcome::Granted(lease), _) => return json_response(200, &lease),
            (
                AcquireOutcome::Busy {
                    holder_owner,
                    expires_at_ms,
                },
                _,
            ) => return busy(Some(holder_owner), Some(expires_at_ms), 0),
            (AcquireOutcome::Queued { .. }, Some(rx)) => rx,
            (AcquireOutcome::Queued { .. }, None) => return Err(ApiError::Internal),
        };
        let deadline = now_ms().saturating_add(r.wait_ms);
        let answer = loop {
            let wait = deadline.saturating_sub(now_ms()) + TIMER_GRACE_MS;
            let timer = pin!(Delay::from(Duration::from_millis(wait)));
            match select(rx, timer).await {
                Either::Left((answer, _)) => break answer,
                Either::Right(((), pending)) => {
                    // The alarm is late: tick here, which times this waiter out if it is due.
                    rx = pending;
                    self.tick().await?;
                }
            }
        };
        match answer {
            Some(Answer::Granted(lease)) => json_response(200, &lease),
            Some(Answer::TimedOut) => {
                let now = now_ms();
                let holder = self.with_core(|s| s.holder(now).cloned())?;
                busy(
                    holder.as_ref().map(|l| l.owner.clone()),
                    holder.map(|l| l.expires_at_ms),
                    r.wait_ms,
                )
            }
            None => Err(ApiError::Unavailable {
                message: "the lock restarted while you waited; try again".into(),
            }),
        }
    }

    /// Runs one core operation at the current time, persists, answers waiters from the events
    /// and reschedules the alarm; the operation's own result is the caller's answer.
    async fn apply<T>(
        &self,
        op: impl FnOnce(&mut LockState, u64) -> (std::result::Result<T, LockError>, Vec<Event>),
    ) -> std::result::Result<std::result::Result<T, LockError>, ApiError> {
        let (result, events) = self.with_core(|s| op(s, now_ms()))?;
        self.settle(events)?;
        self.schedule_alarm().await?;
        Ok(result)
    }

    /// Expires, times out and promotes as the clock says, then settles the consequences.
    async fn tick(&self) -> std::result::Result<(), ApiError> {
        let events = self.with_core(|s| s.tick(now_ms()))?;
        self.settle(events)?;
        self.schedule_alarm().await
    }

    /// Persists the state, then answers the waiters the events concern. A grant for a waiter
    /// nobody is waiting on (it cannot happen: waiters are abandoned on load) is released at
    /// once rather than left to hold the lock for a ghost.
    fn settle(&self, events: Vec<Event>) -> std::result::Result<(), ApiError> {
        let mut pending: Vec<Event> = events;
        let mut answers = Vec::new();
        while !pending.is_empty() {
            let mut next = Vec::new();
            for event in pending {
                match event {
                    Event::Granted { waiter_id, lease } => {
                        match self.waiting.borrow_mut().remove(&waiter_id) {
                            Some(tx) => answers.push((tx, Answer::Granted(lease))),
                            None => {
                                let (_, more) =
                                    self.with_core(|s| s.release(lease.token, now_ms()))?;
                                next.extend(more);
                            }
                        }
                    }
                    Event::TimedOut { waiter_id } => {
                        if let Some(tx) = self.waiting.borrow_mut().remove(&waiter_id) {
                            answers.push((tx, Answer::TimedOut));
                        }
                    }
                    Event::Expired { .. } => {}
                }
            }
            pending = next;
        }
        self.save()?;
        // Only after the write: workerd's output gate then holds these answers until it is
        // durable, and a failed write answers nobody.
        for (tx, answer) in answers {
            tx.send(answer);
        }
        Ok(())
    }

    fn sql(&self) -> SqlStorage {
        self.state.storage().sql()
    }

    /// Loads the state on first use, abandoning the waiters of a previous instance.
    fn ensure_loaded(&self) -> std::result::Result<(), ApiError> {
        if self.core.borrow().is_some() {
            return Ok(());
        }
        let sql = self.sql();
        sql.exec(
            "CREATE TABLE IF NOT EXISTS lock (id INTEGER PRIMARY KEY CHECK (id = 1), v TEXT NOT NULL)",
            None,
        )
        .map_err(internal)?;
        let rows: Vec<Row> = sql
            .exec("SELECT v FROM lock WHERE id = 1", None)
            .and_then(|c| c.to_array())
            .map_err(internal)?;
        let mut state = match rows.first() {
            Some(r) => serde_json::from_str(&r.v).map_err(internal)?,
            None => LockState::new(),
        };
        let abandoned = state.abandon_waiters();
        // Requests of this instance that were waiting before a failed write get `None`.
        self.waiting.borrow_mut().clear();
        *self.core.borrow_mut() = Some(state);
        if !abandoned.is_empty() {
            self.save()?;
        }
        Ok(())
    }

    /// Writes the whole state. On failure the in-memory state is dropped so the next event
    /// reloads what storage really holds.
    fn save(&self) -> std::result::Result<(), ApiError> {
        let v = self
            .with_core(|s| serde_json::to_string(s))?
            .map_err(internal)?;
        let written = self.sql().exec(
            "INSERT INTO lock (id, v) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET v = excluded.v",
            Some(vec![v.into()]),
        );
        if let Err(e) = written {
            *self.core.borrow_mut() = None;
            return Err(internal(e));
        }
        Ok(())
    }

    /// Runs `f` on the core, loading it first if this instance has not (or dropped it after a
    /// failed write while a request was awaiting).
    fn with_core<T>(
        &self,
        f: impl FnOnce(&mut LockState) -> T,
    ) -> std::result::Result<T, ApiError> {
        self.ensure_loaded()?;
        let mut guard = self.core.borrow_mut();
        guard.as_mut().map(f).ok_or(ApiError::Internal)
    }

    /// Makes sure an alarm fires no later than the core's next deadline.
    async fn schedule_alarm(&self) -> std::result::Result<(), ApiError> {
        let Some(t) = self
            .core
            .borrow()
            .as_ref()
            .and_then(LockState::next_alarm_ms)
        else {
            return Ok(());
        };
        self.alarm
            .no_later_than(&self.state.storage(), t)
            .await
            .map_err(internal)?;
        Ok(())
    }
}

/// The answer to an acquire that did not get the lock: 409 `lock_busy` in the project's error
/// shape, with who holds the lock and until when.
fn busy(
    holder: Option<String>,
    expires_at_ms: Option<u64>,
    waited_ms: u64,
) -> std::result::Result<Response, ApiError> {
    let message = if waited_ms == 0 {
        "the lock is held; ask with wait_ms to queue for it".to_string()
    } else {
        format!("the lock was not granted within wait_ms ({waited_ms} ms)")
    };
    let error = ApiError::conflict("lock_busy", message);
    let mut body: serde_json::Value = serde_json::from_str(&error.body()).map_err(internal)?;
    body["holder"] = json!(holder);
    body["expires_at_ms"] = json!(expires_at_ms);
    json_response(error.status(), &body)
}

/// The one mapping of core lock errors to HTTP.
fn lock_error(e: LockError) -> ApiError {
    match e {
        LockError::InvalidOwner | LockError::InvalidTtl { .. } | LockError::InvalidWait { .. } => {
            ApiError::unprocessable(e.code(), e.to_string())
        }
        LockError::QueueFull | LockError::NotHolder { .. } | LockError::StaleToken { .. } => {
            ApiError::conflict(e.code(), e.to_string())
        }
        LockError::DuplicateWaiter { .. } => internal(e),
    }
}

/// A single-threaded one-shot channel: the object's event handlers all run on one thread.
struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    closed: bool,
}

/// Sends one value; dropping it unsent makes the receiver yield `None`.
struct Sender<T>(Rc<RefCell<Slot<T>>>);

/// Resolves to the sent value, or `None` if the sender was dropped.
struct Receiver<T>(Rc<RefCell<Slot<T>>>);

fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Rc::new(RefCell::new(Slot {
        value: None,
        waker: None,
        closed: false,
    }));
    (Sender(Rc::clone(&slot)), Receiver(slot))
}

impl<T> Sender<T> {
    fn send(self, value: T) {
        self.0.borrow_mut().value = Some(value);
        // Drop wakes the receiver.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = self.0.borrow_mut();
            slot.closed = true;
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut slot = self.0.borrow_mut();
        if let Some(v) = slot.value.take() {
            return Poll::Ready(Some(v));
        }
        if slot.closed {
            return Poll::Ready(None);
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
