//! How hard to try: capped exponential backoff ([`backoff_ms`]), the attempt budget
//! ([`DeliveryPolicy`]), which [`Outcome`]s are worth retrying ([`next_action`]) and the
//! [`idempotency_key`] that makes a redelivered message notify once.

use sha2::{Digest, Sha256};

use super::notice::{Notification, Template};
use super::webhook::hex;

/// Attempts per notification, the first included; after the last failure it is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 10;
/// Delay before the second attempt, in milliseconds.
pub const BASE_BACKOFF_MS: u64 = 5_000;
/// Longest delay between attempts, in milliseconds (10 minutes). With [`MAX_ATTEMPTS`] the
/// whole schedule spans about 30 minutes — a receiver's typical short outage.
pub const MAX_BACKOFF_MS: u64 = 10 * 60 * 1000;
/// Longest `Retry-After` honoured, in milliseconds (1 hour); longer hints are cut to this.
pub const MAX_RETRY_AFTER_MS: u64 = 60 * 60 * 1000;

/// Delay before retrying after `attempt` failed attempts: `base_ms · 2^(attempt − 1)`, capped
/// at `max_ms`, saturating instead of overflowing. `attempt` 0 is treated as 1.
pub fn backoff_ms(attempt: u32, base_ms: u64, max_ms: u64) -> u64 {
    let factor = 1u64
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u64::MAX);
    base_ms.saturating_mul(factor).min(max_ms)
}

/// Spreads retries of many messages ("equal jitter"): a delay in `[delay/2, delay]` chosen by
/// `entropy`, which the caller draws (this module has no randomness).
pub fn with_jitter(delay_ms: u64, entropy: u64) -> u64 {
    let half = delay_ms / 2;
    let spread = delay_ms - half;
    half + entropy % spread.saturating_add(1)
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The webhook answered with this HTTP status (and maybe a `Retry-After`).
    Status {
        /// HTTP status code.
        status: u16,
        /// The `Retry-After` header as milliseconds ([`parse_retry_after`]).
        retry_after_ms: Option<u64>,
    },
    /// No HTTP answer: DNS, connection, TLS or timeout failure.
    NetworkError,
}

impl Outcome {
    /// An answer with `status` and no `Retry-After`.
    pub fn status(status: u16) -> Self {
        Self::Status {
            status,
            retry_after_ms: None,
        }
    }
}

/// Reads a `Retry-After` header given in seconds (the HTTP-date form is not used by webhook
/// receivers and yields `None`).
pub fn parse_retry_after(header: &str) -> Option<u64> {
    let h = header.trim();
    if h.is_empty() || h.len() > 10 || !h.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    h.parse::<u64>().ok().map(|s| s.saturating_mul(1000))
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Delivered; acknowledge the message.
    Done,
    /// Try again after this delay.
    Retry {
        /// Milliseconds to wait.
        delay_ms: u64,
    },
    /// Give up and keep the message for inspection.
    DeadLetter {
        /// Why: `permanent_status`, `unexpected_status` or `attempts_exhausted`.
        reason: &'static str,
    },
}

/// Retry settings; [`DeliveryPolicy::DEFAULT`] uses the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// First retry delay.
    pub base_ms: u64,
    /// Delay cap.
    pub max_ms: u64,
    /// Attempts before dead-lettering.
    pub max_attempts: u32,
}

impl DeliveryPolicy {
    /// [`BASE_BACKOFF_MS`], [`MAX_BACKOFF_MS`], [`MAX_ATTEMPTS`].
    pub const DEFAULT: Self = Self {
        base_ms: BASE_BACKOFF_MS,
        max_ms: MAX_BACKOFF_MS,
        max_attempts: MAX_ATTEMPTS,
    };

    /// Decides after attempt number `attempt` (1 for the first) ended in `outcome`:
    ///
    /// - 2xx → [`Action::Done`].
    /// - 408, 429, 5xx, network error → retry after [`backoff_ms`], or after `Retry-After`
    ///   if that is longer (at most [`MAX_RETRY_AFTER_MS`]); once `attempt` reaches
    ///   `max_attempts`, dead-letter (`attempts_exhausted`).
    /// - Any other 4xx → dead-letter at once (`permanent_status`): the payload is refused or
    ///   the webhook revoked or gone (Slack answers 400/403/404/410), and repeating the same
    ///   request cannot change that.
    /// - 1xx, 3xx and anything else → dead-letter (`unexpected_status`): webhooks are not
    ///   followed through redirects, so a redirecting URL is a configuration error.
    pub fn next_action(&self, attempt: u32, outcome: Outcome) -> Action {
        let retry_after_ms = match outcome {
            Outcome::Status { status, .. } if (200..300).contains(&status) => return Action::Done,
            Outcome::Status {
                status,
                retry_after_ms,
            } if status == 408 || status == 429 || (500..600).contains(&status) => retry_after_ms,
            Outcome::Status { status, .. } if (400..500).contains(&status) => {
                return Action::DeadLetter {
                    reason: "permanent_status",
                }
            }
            Outcome::Status { .. } => {
                return Action::DeadLetter {
                    reason: "unexpected_status",
                }
            }
            Outcome::NetworkError => None,
        };
        if attempt >= self.max_attempts {
            return Action::DeadLetter {
                reason: "attempts_exhausted",
            };
        }
        let backoff = backoff_ms(attempt, self.base_ms, self.max_ms);
        let hinted = retry_after_ms.unwrap_or(0).min(MAX_RETRY_AFTER_MS);
        Action::Retry {
            delay_ms: backoff.max(hinted),
        }
    }
}

/// [`DeliveryPolicy::next_action`] under [`DeliveryPolicy::DEFAULT`].
pub fn next_action(attempt: u32, outcome: Outcome) -> Action {
    DeliveryPolicy::DEFAULT.next_action(attempt, outcome)
}

/// The deduplication key of a notification: `notify:<template>:<hex SHA-256 of subject_id>`.
///
/// Deterministic, so a redelivered Queue message or a provider's retried webhook maps to the
/// same key; the template is part of it, so a lead's `new_lead` and a later `hot_lead` are
/// distinct. The subject is hashed so the key has a fixed length and charset whatever the id
/// (KV keys are at most 512 bytes).
pub fn idempotency_key(template: Template, subject_id: &str) -> String {
    format!(
        "notify:{}:{}",
        template.name(),
        hex(&Sha256::digest(subject_id.as_bytes()))
    )
}

impl Notification {
    /// [`idempotency_key`] of this notification's template and subject.
    pub fn idempotency_key(&self) -> String {
        idempotency_key(self.template(), self.subject_id())
    }
}

// ---------------------------------------------------------------------------------------------
// The delivery state machine: one attempt's result, the next state and what to do about it

/// A notification's stored delivery status (`notifications.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Stored, first attempt not made yet.
    Queued,
    /// An attempt failed; another is queued.
    Retrying,
    /// The webhook took it (2xx). Final.
    Delivered,
    /// Given up: permanent refusal or attempt budget spent. Final.
    Dead,
    /// No webhook configured for its channel (a configuration choice, not a failure). Final.
    Skipped,
}

impl DeliveryStatus {
    /// Every status.
    pub const ALL: [Self; 5] = [
        Self::Queued,
        Self::Retrying,
        Self::Delivered,
        Self::Dead,
        Self::Skipped,
    ];

    /// The stored name: `queued`, `retrying`, `delivered`, `dead`, `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Retrying => "retrying",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
            Self::Skipped => "skipped",
        }
    }

    /// Reads a stored name; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether no further attempt may be made (`delivered`, `dead`, `skipped`).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Delivered | Self::Dead | Self::Skipped)
    }
}

/// What a notification's stored row says before an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryState {
    /// Its status; `None` when the stored name is unknown (treated as not final).
    pub status: Option<DeliveryStatus>,
    /// Attempts recorded so far.
    pub attempts: u32,
}

impl DeliveryState {
    /// Whether attempt number `attempt` should be made: not when the notification is final
    /// already, nor when that attempt (or a later one) was recorded — a duplicate queue message
    /// must never deliver twice.
    pub fn should_attempt(&self, attempt: u32) -> bool {
        let finished = self.status.is_some_and(DeliveryStatus::is_final);
        !finished && self.attempts < attempt
    }
}

/// What one attempt got, as the glue observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempted {
    /// No webhook is configured for the notification's channel; nothing was sent.
    NoDestination,
    /// The webhook answered.
    Answered {
        /// HTTP status code.
        status: u16,
        /// The `Retry-After` header as milliseconds ([`parse_retry_after`]).
        retry_after_ms: Option<u64>,
    },
    /// The request failed without an answer; the text says how.
    NetworkError(String),
}

/// The attempt row and the notification's new state, written together (one D1 batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The attempt number (also the notification's new `attempts`).
    pub attempt: u32,
    /// When it was made (also `delivered_at` when delivered), Unix milliseconds.
    pub at_ms: u64,
    /// The HTTP status, when the webhook answered.
    pub http_status: Option<u16>,
    /// The attempt's outcome label: `delivered`, `failed`, `no_destination`, or the
    /// dead-letter reason (`permanent_status`, `unexpected_status`, `attempts_exhausted`).
    pub outcome: &'static str,
    /// The notification's new status.
    pub status: DeliveryStatus,
    /// The error text (also the notification's `last_error`); `None` when delivered.
    pub error: Option<String>,
}

/// One thing the glue does after an attempt, in the order [`apply`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Insert the attempt row and update the notification row, in one batch.
    Record(Record),
    /// Queue attempt number `attempt` after `delay_s` seconds.
    Enqueue {
        /// The next attempt number.
        attempt: u32,
        /// Queue delay, whole seconds rounded up.
        delay_s: u32,
    },
    /// Add one to `roomkeeper_deliveries_total{outcome}`.
    Count {
        /// The attempt's outcome label (as in [`Record::outcome`]).
        outcome: &'static str,
    },
    /// Raise the `delivery_dead` alert (never for an alert, which would loop).
    AlertDead {
        /// Attempts made.
        attempts: u32,
        /// The last error, if any.
        last_error: Option<String>,
    },
    /// Push the attempt to the ops room.
    PushOps {
        /// The attempt number.
        attempt: u32,
        /// The notification's new status.
        status: DeliveryStatus,
        /// The HTTP status, when the webhook answered.
        http_status: Option<u16>,
        /// The error text, if any.
        error: Option<String>,
    },
}

/// The delivery state machine: attempt number `attempt` of a `template` notification got
/// `result` at `now_ms`; returns its new status and the effects to perform, in order.
///
/// - No destination → `skipped` (never retried).
/// - Otherwise [`DeliveryPolicy::next_action`] decides: done → `delivered`; retry →
///   `retrying` and attempt `attempt + 1` is queued after the delay; dead-letter → `dead`,
///   and an alert is raised unless the notification is itself an alert.
///
/// Every attempt is recorded, counted and pushed to the ops room. The caller checks
/// [`DeliveryState::should_attempt`] before making the attempt.
pub fn apply(
    policy: &DeliveryPolicy,
    template: Template,
    attempt: u32,
    result: Attempted,
    now_ms: u64,
) -> (DeliveryStatus, Vec<Effect>) {
    let (outcome, http_status, error) = match result {
        Attempted::NoDestination => (
            None,
            None,
            Some("no destination configured for this channel".to_string()),
        ),
        Attempted::Answered {
            status,
            retry_after_ms,
        } => (
            Some(Outcome::Status {
                status,
                retry_after_ms,
            }),
            Some(status),
            (!(200..300).contains(&status)).then(|| format!("HTTP {status}")),
        ),
        Attempted::NetworkError(e) => (
            Some(Outcome::NetworkError),
            None,
            Some(format!("network: {e}")),
        ),
    };
    let action = outcome.map(|o| policy.next_action(attempt, o));
    let (status, label) = match action {
        None => (DeliveryStatus::Skipped, "no_destination"),
        Some(Action::Done) => (DeliveryStatus::Delivered, "delivered"),
        Some(Action::Retry { .. }) => (DeliveryStatus::Retrying, "failed"),
        Some(Action::DeadLetter { reason }) => (DeliveryStatus::Dead, reason),
    };
    let mut effects = vec![Effect::Record(Record {
        attempt,
        at_ms: now_ms,
        http_status,
        outcome: label,
        status,
        error: error.clone(),
    })];
    if let Some(Action::Retry { delay_ms }) = action {
        effects.push(Effect::Enqueue {
            attempt: attempt + 1,
            delay_s: u32::try_from(delay_ms.div_ceil(1000)).unwrap_or(u32::MAX),
        });
    }
    effects.push(Effect::Count { outcome: label });
    if status == DeliveryStatus::Dead && template != Template::Alert {
        effects.push(Effect::AlertDead {
            attempts: attempt,
            last_error: error.clone(),
        });
    }
    effects.push(Effect::PushOps {
        attempt,
        status,
        http_status,
        error,
    });
    (status, effects)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: DeliveryPolicy = DeliveryPolicy {
        base_ms: 1_500,
        max_ms: 60_000,
        max_attempts: 3,
    };

    fn state() -> DeliveryState {
        DeliveryState {
            status: Some(DeliveryStatus::Queued),
            attempts: 0,
        }
    }

    fn answered(status: u16) -> Attempted {
        Attempted::Answered {
            status,
            retry_after_ms: None,
        }
    }

    fn record(effects: &[Effect]) -> &Record {
        match &effects[0] {
            Effect::Record(r) => r,
            other => panic!("first effect is {other:?}"),
        }
    }

    #[test]
    fn status_names_round_trip() {
        for s in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(DeliveryStatus::parse("sent"), None);
        let finals: Vec<_> = DeliveryStatus::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .collect();
        assert_eq!(
            finals,
            [
                DeliveryStatus::Delivered,
                DeliveryStatus::Dead,
                DeliveryStatus::Skipped
            ]
        );
    }

    #[test]
    fn duplicates_and_final_states_are_not_attempted() {
        let mut s = state();
        assert!(s.should_attempt(1));
        s.attempts = 1;
        assert!(!s.should_attempt(1), "attempt 1 already recorded");
        assert!(s.should_attempt(2));
        s.status = Some(DeliveryStatus::Retrying);
        assert!(s.should_attempt(2));
        for fin in [
            DeliveryStatus::Delivered,
            DeliveryStatus::Dead,
            DeliveryStatus::Skipped,
        ] {
            s.status = Some(fin);
            assert!(!s.should_attempt(2), "{fin:?} is final");
        }
        s.status = None;
        assert!(s.should_attempt(2), "an unknown stored status is not final");
    }

    #[test]
    fn delivered_on_2xx() {
        let (st, fx) = apply(&POLICY, Template::NewLead, 1, answered(204), 42);
        assert_eq!(st, DeliveryStatus::Delivered);
        assert_eq!(
            fx,
            vec![
                Effect::Record(Record {
                    attempt: 1,
                    at_ms: 42,
                    http_status: Some(204),
                    outcome: "delivered",
                    status: DeliveryStatus::Delivered,
                    error: None,
                }),
                Effect::Count {
                    outcome: "delivered"
                },
                Effect::PushOps {
                    attempt: 1,
                    status: DeliveryStatus::Delivered,
                    http_status: Some(204),
                    error: None,
                },
            ]
        );
    }

    #[test]
    fn no_destination_is_skipped_never_retried() {
        let (st, fx) = apply(&POLICY, Template::HotLead, 1, Attempted::NoDestination, 7);
        assert_eq!(st, DeliveryStatus::Skipped);
        let r = record(&fx);
        assert_eq!(r.outcome, "no_destination");
        assert_eq!(r.http_status, None);
        assert_eq!(
            r.error.as_deref(),
            Some("no destination configured for this channel")
        );
        assert!(!fx.iter().any(|e| matches!(e, Effect::Enqueue { .. })));
        assert!(!fx.iter().any(|e| matches!(e, Effect::AlertDead { .. })));
        assert_eq!(fx.len(), 3);
    }

    #[test]
    fn retryable_failure_requeues_with_backoff() {
        let (st, fx) = apply(&POLICY, Template::NewLead, 1, answered(503), 0);
        assert_eq!(st, DeliveryStatus::Retrying);
        let r = record(&fx);
        assert_eq!(
            (r.outcome, r.http_status, r.error.as_deref()),
            ("failed", Some(503), Some("HTTP 503"))
        );
        // backoff_ms(1, 1500, …) = 1.5 s, rounded up to whole seconds.
        assert_eq!(
            fx[1],
            Effect::Enqueue {
                attempt: 2,
                delay_s: 2
            }
        );
        assert_eq!(fx[2], Effect::Count { outcome: "failed" });
        assert!(matches!(
            fx[3],
            Effect::PushOps {
                status: DeliveryStatus::Retrying,
                ..
            }
        ));
        assert_eq!(fx.len(), 4);
    }

    #[test]
    fn retry_after_and_network_errors() {
        let (st, fx) = apply(
            &POLICY,
            Template::NewLead,
            2,
            Attempted::Answered {
                status: 429,
                retry_after_ms: Some(30_000),
            },
            0,
        );
        assert_eq!(st, DeliveryStatus::Retrying);
        assert_eq!(
            fx[1],
            Effect::Enqueue {
                attempt: 3,
                delay_s: 30
            }
        );
        let (st, fx) = apply(
            &POLICY,
            Template::NewLead,
            1,
            Attempted::NetworkError("connection reset".into()),
            0,
        );
        assert_eq!(st, DeliveryStatus::Retrying);
        let r = record(&fx);
        assert_eq!(r.http_status, None);
        assert_eq!(r.error.as_deref(), Some("network: connection reset"));
        assert!(matches!(fx[1], Effect::Enqueue { attempt: 2, .. }));
    }

    #[test]
    fn dead_letters_raise_an_alert_except_for_alerts() {
        for (attempt, result, reason) in [
            (3, answered(500), "attempts_exhausted"),
            (1, answered(410), "permanent_status"),
            (1, answered(302), "unexpected_status"),
        ] {
            let (st, fx) = apply(&POLICY, Template::Payment, attempt, result, 9);
            assert_eq!(st, DeliveryStatus::Dead);
            let r = record(&fx);
            assert_eq!(r.outcome, reason);
            assert_eq!(r.status, DeliveryStatus::Dead);
            assert!(!fx.iter().any(|e| matches!(e, Effect::Enqueue { .. })));
            assert_eq!(fx[1], Effect::Count { outcome: reason });
            assert_eq!(
                fx[2],
                Effect::AlertDead {
                    attempts: attempt,
                    last_error: r.error.clone(),
                }
            );
            assert!(matches!(fx[3], Effect::PushOps { .. }));
        }
        let (st, fx) = apply(&POLICY, Template::Alert, 3, answered(500), 9);
        assert_eq!(st, DeliveryStatus::Dead);
        assert!(!fx.iter().any(|e| matches!(e, Effect::AlertDead { .. })));
        assert_eq!(fx.len(), 3);
    }

    /// Drives a notification through the machine as the glue does, the receiver answering
    /// each attempt from `answers` in turn; returns (final status, deliveries made).
    fn run(template: Template, answers: &[u16]) -> (DeliveryStatus, usize) {
        let mut s = state();
        let mut queue = vec![1];
        let mut delivered = 0;
        let mut last = DeliveryStatus::Queued;
        while let Some(attempt) = queue.pop() {
            // Every queue message may arrive twice: the duplicate must be a no-op.
            for _ in 0..2 {
                if !s.should_attempt(attempt) {
                    continue;
                }
                let code = answers[(attempt as usize - 1).min(answers.len() - 1)];
                let (st, fx) = apply(&POLICY, template, attempt, answered(code), 0);
                for e in fx {
                    match e {
                        Effect::Record(r) => {
                            s.status = Some(r.status);
                            s.attempts = r.attempt;
                            delivered += usize::from(r.status == DeliveryStatus::Delivered);
                        }
                        Effect::Enqueue { attempt, .. } => queue.push(attempt),
                        _ => {}
                    }
                }
                last = st;
            }
        }
        (last, delivered)
    }

    #[test]
    fn fail_twice_then_exactly_one_delivery_and_always_fail_is_dead() {
        assert_eq!(
            run(Template::NewLead, &[500, 500, 200]),
            (DeliveryStatus::Delivered, 1)
        );
        assert_eq!(run(Template::NewLead, &[500]), (DeliveryStatus::Dead, 0));
        assert_eq!(run(Template::Alert, &[404]), (DeliveryStatus::Dead, 0));
    }
}
