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
