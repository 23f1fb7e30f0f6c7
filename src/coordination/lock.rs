//! Lease locks with fencing tokens and FIFO waiters, for the `Lock` Durable Object.
//!
//! One `Lock` object exists per lock name, so its single writer is the only arbiter of who
//! holds the lock. A holder gets a [`Lease`]: an owner label, an expiry, and a fencing token.
//! Leases expire on their own, so a crashed holder never wedges the lock; and because an
//! expired holder may not know it has lost the lock (a paused process, a slow network), every
//! lease carries a token that strictly increases across all grants of this lock. Downstream
//! systems that remember the highest token they have seen can refuse writes from a stale
//! holder. Tokens are never reused because [`LockState`] — holder, next token and queue — is
//! persisted after every change, so a restarted object continues the sequence.
//!
//! Tokens order leases; they are not secrets (a client can guess the current one). Callers are
//! authenticated at the router, and [`LockStatus`] still never shows a token.
//!
//! Callers that cannot get the lock at once may wait: they join a bounded FIFO queue and are
//! granted the lock in arrival order, or time out at their deadline. Each operation first runs
//! [`LockState::tick`], so a lease whose time has passed is treated as expired by every
//! operation even if the alarm that should have expired it has not fired yet (or the object
//! just restarted): two leases never overlap and an expired holder can never renew.
//!
//! Operations return the [`Event`]s that their implicit tick produced alongside their own
//! result. The glue persists the state, answers waiting callers from the events, answers the
//! caller from the result, and sets the object's alarm to [`LockState::next_alarm_ms`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Shortest lease a caller may ask for, in milliseconds.
pub const MIN_TTL_MS: u64 = 1_000;
/// Longest lease a caller may ask for, in milliseconds; longer work renews.
pub const MAX_TTL_MS: u64 = 600_000;
/// Longest a caller may wait in the queue, in milliseconds (a long-poll HTTP request has to
/// stay comfortably below proxy timeouts).
pub const MAX_WAIT_MS: u64 = 30_000;
/// Longest owner label, in bytes.
pub const MAX_OWNER_LEN: usize = 128;
/// Most callers that may wait for one lock at once.
pub const MAX_WAITERS: usize = 64;

/// Why a lock operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// The owner label is empty, blank, too long or contains control characters.
    #[error("owner must be 1-{MAX_OWNER_LEN} bytes of printable text")]
    InvalidOwner,
    /// The lease duration is out of bounds.
    #[error("ttl_ms must be {MIN_TTL_MS}-{MAX_TTL_MS}, got {ttl_ms}")]
    InvalidTtl {
        /// The requested duration.
        ttl_ms: u64,
    },
    /// The wait is out of bounds.
    #[error("wait_ms must be 0-{MAX_WAIT_MS}, got {wait_ms}")]
    InvalidWait {
        /// The requested wait.
        wait_ms: u64,
    },
    /// [`MAX_WAITERS`] callers are already waiting.
    #[error("too many callers are waiting for this lock (at most {MAX_WAITERS})")]
    QueueFull,
    /// A waiter with this id is already queued (a glue bug, not a client error).
    #[error("waiter {waiter_id} is already queued")]
    DuplicateWaiter {
        /// The repeated id.
        waiter_id: u64,
    },
    /// The token was never issued by this lock.
    #[error("token {token} was never issued by this lock")]
    NotHolder {
        /// The presented token.
        token: u64,
    },
    /// The token was issued by this lock, but its lease has expired, been released or been
    /// superseded.
    #[error("token {token} no longer holds this lock")]
    StaleToken {
        /// The presented token.
        token: u64,
    },
}

impl LockError {
    /// The stable snake_case code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidOwner => "invalid_owner",
            Self::InvalidTtl { .. } => "invalid_ttl",
            Self::InvalidWait { .. } => "invalid_wait",
            Self::QueueFull => "queue_full",
            Self::DuplicateWaiter { .. } => "duplicate_waiter",
            Self::NotHolder { .. } => "not_holder",
            Self::StaleToken { .. } => "stale_token",
        }
    }
}

/// Checks an owner label: 1–[`MAX_OWNER_LEN`] bytes, not blank, no control characters.
pub fn validate_owner(owner: &str) -> Result<(), LockError> {
    if owner.len() > MAX_OWNER_LEN || owner.trim().is_empty() || owner.chars().any(char::is_control)
    {
        return Err(LockError::InvalidOwner);
    }
    Ok(())
}

/// Checks an acquire request's inputs, before anything is changed.
fn validate_acquire(owner: &str, ttl_ms: u64, wait_ms: u64) -> Result<(), LockError> {
    validate_owner(owner)?;
    validate_ttl(ttl_ms)?;
    if wait_ms > MAX_WAIT_MS {
        return Err(LockError::InvalidWait { wait_ms });
    }
    Ok(())
}

fn validate_ttl(ttl_ms: u64) -> Result<(), LockError> {
    if (MIN_TTL_MS..=MAX_TTL_MS).contains(&ttl_ms) {
        Ok(())
    } else {
        Err(LockError::InvalidTtl { ttl_ms })
    }
}

/// A granted hold on the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Who holds it (a label chosen by the caller, for status and logs).
    pub owner: String,
    /// The fencing token: larger than every token this lock issued before.
    pub token: u64,
    /// The lease holds while `now_ms < expires_at_ms`.
    pub expires_at_ms: u64,
}

impl Lease {
    /// Whether the lease still holds at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }
}

/// A caller waiting for the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    /// The glue's id for the pending request, echoed in [`Event`]s.
    pub waiter_id: u64,
    /// The owner label the lease will carry.
    pub owner: String,
    /// The lease duration once granted (the lease starts when it is granted).
    pub ttl_ms: u64,
    /// The waiter gives up when `now_ms >= deadline_ms`.
    pub deadline_ms: u64,
}

/// What [`LockState::acquire`] decided for the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AcquireOutcome {
    /// The lock was free: the caller holds it now.
    Granted(Lease),
    /// The caller is queued; an [`Event::Granted`] or [`Event::TimedOut`] with its `waiter_id`
    /// will follow (unless it is cancelled).
    Queued {
        /// 1-based place in the queue (1 = next in line).
        position: usize,
    },
    /// The lock is held and the caller asked not to wait (`wait_ms == 0`).
    Busy {
        /// The current holder's owner label.
        holder_owner: String,
        /// When the current lease expires unless renewed.
        expires_at_ms: u64,
    },
}

/// Something that happened to a lease or waiter other than the caller's own result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A queued waiter now holds the lock; answer its pending request with the lease.
    Granted {
        /// The waiter's id.
        waiter_id: u64,
        /// Its lease.
        lease: Lease,
    },
    /// A queued waiter reached its deadline without getting the lock.
    TimedOut {
        /// The waiter's id.
        waiter_id: u64,
    },
    /// A lease ran out without being renewed or released.
    Expired {
        /// The expired lease's token.
        token: u64,
    },
}

/// A read-only view of a lock for `GET` (no token: see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockStatus {
    /// Whether a live lease exists.
    pub held: bool,
    /// The holder's owner label.
    pub holder: Option<String>,
    /// When the holder's lease expires unless renewed.
    pub expires_at_ms: Option<u64>,
    /// How many callers are waiting.
    pub waiters: usize,
    /// Their owner labels, in queue order.
    pub waiter_owners: Vec<String>,
}

/// The persisted state of one lock.
///
/// Persist it after every operation — before answering anyone — so a restarted object never
/// reissues a token. Invariant after every operation: if nobody holds the lock, nobody waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    holder: Option<Lease>,
    next_token: u64,
    waiters: VecDeque<Waiter>,
}

impl Default for LockState {
    /// A free lock. Tokens start at 1, so 0 is never a valid token.
    fn default() -> Self {
        Self {
            holder: None,
            next_token: 1,
            waiters: VecDeque::new(),
        }
    }
}

impl LockState {
    /// A free lock with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// The live lease at `now_ms`, if any (an expired, not yet ticked lease is not returned).
    pub fn holder(&self, now_ms: u64) -> Option<&Lease> {
        self.holder.as_ref().filter(|l| l.is_live(now_ms))
    }

    /// The token the next grant will carry.
    pub fn next_token(&self) -> u64 {
        self.next_token
    }

    /// The queue, in grant order.
    pub fn waiters(&self) -> impl Iterator<Item = &Waiter> {
        self.waiters.iter()
    }

    /// Asks for the lock for `ttl_ms`, waiting up to `wait_ms` if it is held.
    ///
    /// A free lock is granted at once. Otherwise, with `wait_ms == 0` the answer is
    /// [`AcquireOutcome::Busy`]; with a wait the caller is queued under `waiter_id` (an id the
    /// glue chose, unique among pending requests) and learns its fate from a later event. Owners
    /// are labels, not identities: a holder asking again is queued like anyone else.
    pub fn acquire(
        &mut self,
        owner: &str,
        ttl_ms: u64,
        wait_ms: u64,
        waiter_id: u64,
        now_ms: u64,
    ) -> (Result<AcquireOutcome, LockError>, Vec<Event>) {
        if let Err(e) = validate_acquire(owner, ttl_ms, wait_ms) {
            return (Err(e), Vec::new());
        }
        let events = self.tick(now_ms);
        let outcome = match &self.holder {
            // After a tick, a free lock has an empty queue: nobody is skipped.
            None => Ok(AcquireOutcome::Granted(self.grant(
                owner.to_string(),
                ttl_ms,
                now_ms,
            ))),
            Some(lease) if wait_ms == 0 => Ok(AcquireOutcome::Busy {
                holder_owner: lease.owner.clone(),
                expires_at_ms: lease.expires_at_ms,
            }),
            Some(_) if self.waiters.iter().any(|w| w.waiter_id == waiter_id) => {
                Err(LockError::DuplicateWaiter { waiter_id })
            }
            Some(_) if self.waiters.len() >= MAX_WAITERS => Err(LockError::QueueFull),
            Some(_) => {
                self.waiters.push_back(Waiter {
                    waiter_id,
                    owner: owner.to_string(),
                    ttl_ms,
                    deadline_ms: now_ms.saturating_add(wait_ms),
                });
                Ok(AcquireOutcome::Queued {
                    position: self.waiters.len(),
                })
            }
        };
        (outcome, events)
    }

    /// Extends the live lease holding `token` to `now_ms + ttl_ms`; the token stays the same.
    pub fn renew(
        &mut self,
        token: u64,
        ttl_ms: u64,
        now_ms: u64,
    ) -> (Result<Lease, LockError>, Vec<Event>) {
        if let Err(e) = validate_ttl(ttl_ms) {
            return (Err(e), Vec::new());
        }
        let events = self.tick(now_ms);
        let result = match self.current_mut(token) {
            Ok(lease) => {
                lease.expires_at_ms = now_ms.saturating_add(ttl_ms);
                Ok(lease.clone())
            }
            Err(e) => Err(e),
        };
        (result, events)
    }

    /// Ends the live lease holding `token` and grants the lock to the next waiter, if any.
    pub fn release(&mut self, token: u64, now_ms: u64) -> (Result<(), LockError>, Vec<Event>) {
        let mut events = self.tick(now_ms);
        if let Err(e) = self.current_mut(token) {
            return (Err(e), events);
        }
        self.holder = None;
        self.promote(now_ms, &mut events);
        (Ok(()), events)
    }

    /// An operator override: ends the live lease whatever its token, and grants the lock to the
    /// next waiter, if any. Returns the lease that was ended. Its token stays below
    /// [`next_token`](Self::next_token), so the old holder's renew or release is refused as
    /// stale and every later grant carries a larger token.
    pub fn force_release(&mut self, now_ms: u64) -> (Option<Lease>, Vec<Event>) {
        let mut events = self.tick(now_ms);
        let ended = self.holder.take();
        self.promote(now_ms, &mut events);
        (ended, events)
    }

    /// Expires a lease that is due, times out waiters whose deadline has come, and grants the
    /// lock to the head of the queue if it is free. Run it from the alarm; every other
    /// operation runs it first.
    ///
    /// A waiter whose deadline has come is timed out even if the lock became free a moment
    /// earlier but nothing ran in between, so no lease is ever granted after its waiter's
    /// deadline.
    #[must_use = "the events answer waiting callers"]
    pub fn tick(&mut self, now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        if let Some(lease) = self.holder.take_if(|l| !l.is_live(now_ms)) {
            events.push(Event::Expired { token: lease.token });
        }
        self.waiters.retain(|w| {
            let waiting = now_ms < w.deadline_ms;
            if !waiting {
                events.push(Event::TimedOut {
                    waiter_id: w.waiter_id,
                });
            }
            waiting
        });
        self.promote(now_ms, &mut events);
        events
    }

    /// Removes a waiter whose caller went away; returns whether it was queued.
    ///
    /// Removing a waiter never frees the lock, so no other waiter is affected.
    pub fn cancel_waiter(&mut self, waiter_id: u64) -> bool {
        let before = self.waiters.len();
        self.waiters.retain(|w| w.waiter_id != waiter_id);
        self.waiters.len() != before
    }

    /// Empties the queue and returns the removed waiter ids.
    ///
    /// Call it when the object starts: a restart drops every pending request, so persisted
    /// waiters have nobody to answer and granting them would hold the lock for a ghost.
    pub fn abandon_waiters(&mut self) -> Vec<u64> {
        self.waiters.drain(..).map(|w| w.waiter_id).collect()
    }

    /// When [`tick`](Self::tick) next has work: the earliest of the lease's expiry and the
    /// waiters' deadlines (`None` when there is nothing to wait for). May be in the past.
    pub fn next_alarm_ms(&self) -> Option<u64> {
        let expiry = self.holder.as_ref().map(|l| l.expires_at_ms);
        let deadlines = self.waiters.iter().map(|w| w.deadline_ms);
        expiry.into_iter().chain(deadlines).min()
    }

    /// The lock as it stands at `now_ms`, as if [`tick`](Self::tick) had just run.
    pub fn status(&self, now_ms: u64) -> LockStatus {
        let mut view = self.clone();
        // The events only concern the real state's next tick; the view discards them.
        let _ = view.tick(now_ms);
        LockStatus {
            held: view.holder.is_some(),
            holder: view.holder.as_ref().map(|l| l.owner.clone()),
            expires_at_ms: view.holder.as_ref().map(|l| l.expires_at_ms),
            waiters: view.waiters.len(),
            waiter_owners: view.waiters.iter().map(|w| w.owner.clone()).collect(),
        }
    }

    /// The current lease if `token` holds it; call only after a tick at the current time.
    fn current_mut(&mut self, token: u64) -> Result<&mut Lease, LockError> {
        match &mut self.holder {
            Some(lease) if lease.token == token => Ok(lease),
            _ if (1..self.next_token).contains(&token) => Err(LockError::StaleToken { token }),
            _ => Err(LockError::NotHolder { token }),
        }
    }

    /// Grants a free lock to the head of the queue.
    fn promote(&mut self, now_ms: u64, events: &mut Vec<Event>) {
        if self.holder.is_some() {
            return;
        }
        if let Some(w) = self.waiters.pop_front() {
            let lease = self.grant(w.owner, w.ttl_ms, now_ms);
            events.push(Event::Granted {
                waiter_id: w.waiter_id,
                lease,
            });
        }
    }

    /// Makes a new lease with the next fencing token; the lock must be free.
    fn grant(&mut self, owner: String, ttl_ms: u64, now_ms: u64) -> Lease {
        let token = self.next_token;
        // 2^64 grants cannot happen; if they did, stopping beats reusing a token.
        self.next_token = token.checked_add(1).expect("fencing tokens exhausted");
        let lease = Lease {
            owner,
            token,
            expires_at_ms: now_ms.saturating_add(ttl_ms),
        };
        self.holder = Some(lease.clone());
        lease
    }
}

/// `POST /api/locks/:name/acquire`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    /// Label of the would-be holder (shown by status).
    pub owner: String,
    /// Lease duration once granted, in milliseconds.
    pub ttl_ms: u64,
    /// How long to wait in the queue if the lock is held (0: answer at once).
    #[serde(default)]
    pub wait_ms: u64,
}

/// `POST /api/locks/:name/renew`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The fencing token of the lease to extend.
    pub token: u64,
    /// New lease duration from now, in milliseconds.
    pub ttl_ms: u64,
}

/// `POST /api/locks/:name/release`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The fencing token of the lease to end.
    pub token: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: u64 = 5_000;

    fn granted(r: (Result<AcquireOutcome, LockError>, Vec<Event>)) -> Lease {
        match r {
            (Ok(AcquireOutcome::Granted(lease)), _) => lease,
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    fn queued(r: (Result<AcquireOutcome, LockError>, Vec<Event>)) -> usize {
        match r {
            (Ok(AcquireOutcome::Queued { position }), events) => {
                assert!(events.is_empty(), "{events:?}");
                position
            }
            other => panic!("expected to queue, got {other:?}"),
        }
    }

    #[test]
    fn free_lock_is_granted_with_token_one() {
        let mut s = LockState::new();
        let lease = granted(s.acquire("alice", TTL, 0, 1, 100));
        assert_eq!(
            lease,
            Lease {
                owner: "alice".into(),
                token: 1,
                expires_at_ms: 5_100
            }
        );
        assert_eq!(s.holder(5_099), Some(&lease));
        assert_eq!(s.holder(5_100), None);
        assert_eq!(s.next_alarm_ms(), Some(5_100));
    }

    #[test]
    fn held_lock_without_wait_is_busy() {
        let mut s = LockState::new();
        granted(s.acquire("alice", TTL, 0, 1, 0));
        let (r, events) = s.acquire("bob", TTL, 0, 2, 10);
        assert_eq!(
            r,
            Ok(AcquireOutcome::Busy {
                holder_owner: "alice".into(),
                expires_at_ms: TTL
            })
        );
        assert!(events.is_empty());
        assert_eq!(s.waiters().count(), 0);
    }

    #[test]
    fn waiters_are_granted_in_fifo_order_on_release() {
        let mut s = LockState::new();
        let a = granted(s.acquire("a", TTL, 0, 1, 0));
        assert_eq!(queued(s.acquire("b", TTL, 10_000, 2, 1)), 1);
        assert_eq!(queued(s.acquire("c", 2_000, 10_000, 3, 2)), 2);
        assert_eq!(queued(s.acquire("d", TTL, 10_000, 4, 3)), 3);

        let (r, events) = s.release(a.token, 100);
        assert_eq!(r, Ok(()));
        let b = Lease {
            owner: "b".into(),
            token: 2,
            expires_at_ms: 100 + TTL,
        };
        assert_eq!(
            events,
            vec![Event::Granted {
                waiter_id: 2,
                lease: b.clone()
            }]
        );
        let (_, events) = s.release(b.token, 200);
        assert_eq!(
            events,
            vec![Event::Granted {
                waiter_id: 3,
                lease: Lease {
                    owner: "c".into(),
                    token: 3,
                    expires_at_ms: 2_200
                }
            }]
        );
        assert_eq!(s.status(200).waiter_owners, vec!["d".to_string()]);
    }

    #[test]
    fn expiry_grants_the_next_waiter_and_times_out_late_ones() {
        let mut s = LockState::new();
        granted(s.acquire("a", TTL, 0, 1, 0));
        queued(s.acquire("short", TTL, 1_000, 7, 0));
        queued(s.acquire("long", TTL, 20_000, 8, 0));
        assert_eq!(s.next_alarm_ms(), Some(1_000));

        assert!(s.tick(999).is_empty());
        assert_eq!(s.tick(1_000), vec![Event::TimedOut { waiter_id: 7 }]);
        assert_eq!(s.next_alarm_ms(), Some(TTL));
        assert!(s.tick(TTL - 1).is_empty());
        assert_eq!(
            s.tick(TTL),
            vec![
                Event::Expired { token: 1 },
                Event::Granted {
                    waiter_id: 8,
                    lease: Lease {
                        owner: "long".into(),
                        token: 2,
                        expires_at_ms: 2 * TTL
                    }
                }
            ]
        );
        assert_eq!(s.next_alarm_ms(), Some(2 * TTL));
        assert_eq!(s.tick(2 * TTL), vec![Event::Expired { token: 2 }]);
        assert_eq!(s.next_alarm_ms(), None);
    }

    #[test]
    fn a_late_tick_times_out_before_granting() {
        let mut s = LockState::new();
        granted(s.acquire("a", TTL, 0, 1, 0));
        queued(s.acquire("b", TTL, 6_000, 2, 0));
        // The lease expired at 5000 but nothing ran until after b's deadline.
        assert_eq!(
            s.tick(6_000),
            vec![
                Event::Expired { token: 1 },
                Event::TimedOut { waiter_id: 2 }
            ]
        );
        assert_eq!(s.holder(6_000), None);
    }

    #[test]
    fn unticked_expiry_is_honoured_by_every_operation() {
        let mut s = LockState::new();
        let a = granted(s.acquire("a", TTL, 0, 1, 0));
        queued(s.acquire("b", TTL, 20_000, 2, 0));

        // Simulate a restart: state reloaded from storage, alarm not yet run.
        let json = serde_json::to_string(&s).unwrap();
        let mut s: LockState = serde_json::from_str(&json).unwrap();

        assert_eq!(s.status(TTL).holder.as_deref(), Some("b"));
        let (r, events) = s.renew(a.token, TTL, TTL);
        assert_eq!(r, Err(LockError::StaleToken { token: a.token }));
        assert_eq!(
            events.len(),
            2,
            "expiry and b's grant still happen: {events:?}"
        );

        // A newcomer does not jump the queue: b already holds the lock.
        let (r, _) = s.acquire("c", TTL, 0, 3, TTL);
        assert!(matches!(r, Ok(AcquireOutcome::Busy { holder_owner, .. }) if holder_owner == "b"));
        let (r, _) = s.release(a.token, TTL + 1);
        assert_eq!(r.unwrap_err().code(), "stale_token");
    }

    #[test]
    fn an_expired_lone_holder_cannot_renew_or_release() {
        let mut s = LockState::new();
        let a = granted(s.acquire("a", TTL, 0, 1, 0));
        let (r, events) = s.release(a.token, TTL);
        assert_eq!(r, Err(LockError::StaleToken { token: 1 }));
        assert_eq!(events, vec![Event::Expired { token: 1 }]);
        let (r, events) = s.renew(a.token, TTL, TTL + 1);
        assert_eq!(r, Err(LockError::StaleToken { token: 1 }));
        assert!(events.is_empty());
        let b = granted(s.acquire("b", TTL, 0, 2, TTL + 2));
        assert_eq!(b.token, 2);
    }

    #[test]
    fn renew_extends_and_keeps_the_token() {
        let mut s = LockState::new();
        let a = granted(s.acquire("a", TTL, 0, 1, 0));
        let (r, _) = s.renew(a.token, 10_000, TTL - 1);
        let renewed = r.unwrap();
        assert_eq!(renewed.token, a.token);
        assert_eq!(renewed.expires_at_ms, TTL - 1 + 10_000);
        assert!(s.holder(TTL + 1).is_some());
    }

    #[test]
    fn wrong_tokens_are_refused_with_distinct_codes() {
        let mut s = LockState::new();
        let a = granted(s.acquire("a", TTL, 0, 1, 0));
        s.release(a.token, 1).0.unwrap();
        let b = granted(s.acquire("b", TTL, 0, 2, 2));

        let (r, _) = s.release(a.token, 3);
        assert_eq!(r.unwrap_err().code(), "stale_token");
        for never in [0, b.token + 1, u64::MAX] {
            let (r, _) = s.renew(never, TTL, 3);
            assert_eq!(r.unwrap_err().code(), "not_holder", "token {never}");
        }
        assert_eq!(s.holder(3), Some(&b), "refusals change nothing");
    }

    #[test]
    fn bad_input_is_refused_before_anything_changes() {
        let mut s = LockState::new();
        granted(s.acquire("a", TTL, 0, 1, 0));
        let before = s.clone();
        let long = "x".repeat(MAX_OWNER_LEN + 1);
        let cases = [
            ("", TTL, 0, "invalid_owner"),
            ("   ", TTL, 0, "invalid_owner"),
            ("a\nb", TTL, 0, "invalid_owner"),
            (long.as_str(), TTL, 0, "invalid_owner"),
            ("b", MIN_TTL_MS - 1, 0, "invalid_ttl"),
            ("b", MAX_TTL_MS + 1, 0, "invalid_ttl"),
            ("b", TTL, MAX_WAIT_MS + 1, "invalid_wait"),
        ];
        for (owner, ttl, wait, code) in cases {
            // Even at a time when the lease has expired, nothing is ticked.
            let (r, events) = s.acquire(owner, ttl, wait, 9, 10 * TTL);
            assert_eq!(r.unwrap_err().code(), code, "{owner:?} {ttl} {wait}");
            assert!(events.is_empty());
        }
        let (r, _) = s.renew(1, 0, 10 * TTL);
        assert_eq!(r.unwrap_err().code(), "invalid_ttl");
        assert_eq!(s, before);
        assert!(validate_owner("Ünïcode owner 42").is_ok());
        assert!(validate_owner(&"x".repeat(MAX_OWNER_LEN)).is_ok());
    }

    #[test]
    fn queue_is_bounded_and_ids_unique() {
        let mut s = LockState::new();
        granted(s.acquire("a", TTL, 0, 0, 0));
        for id in 1..=MAX_WAITERS as u64 {
            queued(s.acquire("w", TTL, 1_000, id, 0));
        }
        let (r, _) = s.acquire("late", TTL, 1_000, 999, 0);
        assert_eq!(r, Err(LockError::QueueFull));
        assert!(s.cancel_waiter(1));
        assert!(!s.cancel_waiter(1));
        let (r, _) = s.acquire("dup", TTL, 1_000, 2, 0);
        assert_eq!(r.unwrap_err().code(), "duplicate_waiter");
        assert_eq!(queued(s.acquire("late", TTL, 1_000, 999, 0)), MAX_WAITERS);
    }

    #[test]
    fn cancelled_and_abandoned_waiters_are_never_granted() {
        let mut s = LockState::new();
        let a = granted(s.acquire("a", TTL, 0, 1, 0));
        queued(s.acquire("b", TTL, 10_000, 2, 0));
        queued(s.acquire("c", TTL, 10_000, 3, 0));
        assert!(s.cancel_waiter(2));
        let (_, events) = s.release(a.token, 10);
        assert!(matches!(&events[..], [Event::Granted { waiter_id: 3, .. }]));
        queued(s.acquire("d", TTL, 10_000, 4, 10));
        assert_eq!(s.abandon_waiters(), vec![4]);
        assert_eq!(s.status(10).waiters, 0);
    }

    #[test]
    fn status_hides_the_token_and_reads_as_ticked() {
        let mut s = LockState::new();
        granted(s.acquire("alice", TTL, 0, 1, 0));
        queued(s.acquire("bob", TTL, 1_000, 2, 0));
        assert_eq!(
            s.status(500),
            LockStatus {
                held: true,
                holder: Some("alice".into()),
                expires_at_ms: Some(TTL),
                waiters: 1,
                waiter_owners: vec!["bob".into()],
            }
        );
        let json = serde_json::to_string(&s.status(500)).unwrap();
        assert!(!json.contains("token"), "{json}");
        let late = s.status(TTL);
        assert!(!late.held && late.waiters == 0, "{late:?}");
    }

    #[test]
    fn outcomes_and_events_serialize_with_tags() {
        let v = serde_json::to_value(AcquireOutcome::Queued { position: 2 }).unwrap();
        assert_eq!(v, serde_json::json!({"status":"queued","position":2}));
        let v = serde_json::to_value(AcquireOutcome::Granted(Lease {
            owner: "o".into(),
            token: 3,
            expires_at_ms: 9,
        }))
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"status":"granted","owner":"o","token":3,"expires_at_ms":9})
        );
        let v = serde_json::to_value(Event::TimedOut { waiter_id: 4 }).unwrap();
        assert_eq!(v, serde_json::json!({"type":"timed_out","waiter_id":4}));
    }

    /// A deterministic xorshift64 generator, so the simulation replays exactly.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// What an outside observer knows from the answers alone.
    #[derive(Default)]
    struct Observer {
        /// The lease the observer believes current: (token, expires_at_ms), until ended.
        current: Option<(u64, u64)>,
        last_token: u64,
        /// Waiters queued and not yet answered, in arrival order, with their deadlines.
        pending: Vec<(u64, u64)>,
    }

    impl Observer {
        fn grant(&mut self, lease: &Lease, now: u64) {
            if let Some((token, expires)) = self.current {
                assert!(
                    expires <= now,
                    "token {} granted while {token} live",
                    lease.token
                );
            }
            assert!(lease.token > self.last_token, "tokens must increase");
            assert!(lease.expires_at_ms > now);
            self.last_token = lease.token;
            self.current = Some((lease.token, lease.expires_at_ms));
        }

        fn events(&mut self, events: &[Event], now: u64) {
            for e in events {
                match e {
                    Event::Granted { waiter_id, lease } => {
                        // FIFO: the granted waiter is the oldest still pending.
                        let (id, deadline) = self.pending.remove(0);
                        assert_eq!(id, *waiter_id, "grants follow arrival order");
                        assert!(now < deadline, "granted after its deadline");
                        self.grant(lease, now);
                    }
                    Event::TimedOut { waiter_id } => {
                        let i = self.pending.iter().position(|(id, _)| id == waiter_id);
                        let (_, deadline) = self.pending.remove(i.expect("known waiter"));
                        assert!(now >= deadline, "timed out early");
                    }
                    Event::Expired { token } => {
                        let (current, expires) = self.current.take().expect("a lease to expire");
                        assert_eq!(current, *token);
                        assert!(expires <= now);
                    }
                }
            }
        }

        fn live(&self, now: u64) -> Option<u64> {
            self.current
                .filter(|&(_, expires)| now < expires)
                .map(|(t, _)| t)
        }
    }

    #[test]
    fn randomized_simulation_never_overlaps_leases() {
        for seed in 1..=20u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut s = LockState::new();
            let mut seen = Observer::default();
            let mut now = rng.below(1 << 40);
            let mut next_waiter = 0u64;
            for _ in 0..2_000 {
                now += rng.below(1_500);
                let op = rng.below(8);
                match op {
                    0..=2 => {
                        next_waiter += 1;
                        let ttl = MIN_TTL_MS + rng.below(4_000);
                        let wait = [0, 1, 500, 3_000, 9_000][rng.below(5) as usize];
                        let (r, events) = s.acquire("o", ttl, wait, next_waiter, now);
                        seen.events(&events, now);
                        match r {
                            Ok(AcquireOutcome::Granted(lease)) => {
                                assert!(seen.pending.is_empty(), "queue jumped");
                                seen.grant(&lease, now);
                            }
                            Ok(AcquireOutcome::Queued { position }) => {
                                seen.pending.push((next_waiter, now + wait));
                                assert_eq!(position, seen.pending.len());
                            }
                            Ok(AcquireOutcome::Busy { .. }) => {
                                assert!(seen.live(now).is_some());
                            }
                            Err(LockError::QueueFull) => {
                                assert_eq!(seen.pending.len(), MAX_WAITERS);
                            }
                            Err(e) => panic!("unexpected {e}"),
                        }
                    }
                    3 | 4 => {
                        let token = match rng.below(3) {
                            0 => rng.below(s.next_token() + 2),
                            _ => seen.current.map_or(0, |(t, _)| t),
                        };
                        let renewing = rng.below(2) == 0;
                        let (r, events) = if renewing {
                            let (r, events) = s.renew(token, MIN_TTL_MS + rng.below(4_000), now);
                            (r.map(Some), events)
                        } else {
                            let (r, events) = s.release(token, now);
                            (r.map(|()| None), events)
                        };
                        // The implicit tick's events come first; a successful release may end
                        // with the promotion of the next waiter, which follows the release.
                        let promoted = !renewing
                            && r.is_ok()
                            && matches!(events.last(), Some(Event::Granted { .. }));
                        let (ticked, after) = events.split_at(events.len() - usize::from(promoted));
                        seen.events(ticked, now);
                        let live = seen.live(now);
                        match r {
                            Ok(renewed) => {
                                assert_eq!(live, Some(token));
                                seen.current = renewed.map(|l| (l.token, l.expires_at_ms));
                            }
                            Err(LockError::StaleToken { .. }) => {
                                assert_ne!(live, Some(token));
                                assert!(token >= 1 && token <= seen.last_token);
                            }
                            Err(LockError::NotHolder { .. }) => {
                                assert!(token == 0 || token > seen.last_token);
                            }
                            Err(e) => panic!("unexpected {e}"),
                        }
                        seen.events(after, now);
                    }
                    5 => {
                        if let Some(&(id, _)) = seen.pending.first() {
                            assert!(s.cancel_waiter(id));
                            seen.pending.remove(0);
                        }
                    }
                    6 => {
                        // Restart: reload the persisted state.
                        let json = serde_json::to_string(&s).unwrap();
                        s = serde_json::from_str(&json).unwrap();
                    }
                    _ => {
                        if let Some(at) = s.next_alarm_ms() {
                            now = now.max(at);
                        }
                        let events = s.tick(now);
                        seen.events(&events, now);
                    }
                }
                assert_eq!(s.next_token(), seen.last_token + 1);
                // Cancel and restart do not tick; every other operation leaves the state as
                // the observer saw it, and a free lock with nobody waiting.
                if op != 5 && op != 6 {
                    let status = s.status(now);
                    assert_eq!(status.held, seen.live(now).is_some());
                    assert_eq!(status.waiters, seen.pending.len());
                    assert_eq!(s.waiters().count(), seen.pending.len());
                    assert!(s.holder(now).is_some() || s.waiters().count() == 0);
                }
            }
        }
    }

    #[test]
    fn force_release_ends_any_lease_and_makes_its_token_stale() {
        let mut s = LockState::new();
        let (r, _) = s.acquire("a", 10_000, 0, 1, 0);
        let Ok(AcquireOutcome::Granted(old)) = r else {
            panic!("not granted: {r:?}")
        };
        let (r, _) = s.acquire("b", 10_000, 5_000, 2, 10);
        assert!(matches!(r, Ok(AcquireOutcome::Queued { position: 1 })));
        let (ended, events) = s.force_release(20);
        assert_eq!(ended.as_ref().map(|l| l.token), Some(old.token));
        let granted = match events.as_slice() {
            [Event::Granted {
                waiter_id: 2,
                lease,
            }] => lease.clone(),
            other => panic!("unexpected events {other:?}"),
        };
        assert!(granted.token > old.token);
        assert_eq!(
            s.renew(old.token, 1_000, 30).0,
            Err(LockError::StaleToken { token: old.token })
        );
        assert_eq!(
            s.release(old.token, 30).0,
            Err(LockError::StaleToken { token: old.token })
        );
        // Nothing held: nothing to end.
        s.release(granted.token, 40).0.unwrap();
        assert_eq!(s.force_release(50).0, None);
    }
}
