//! The chat socket's message rate limit: a GCRA bucket ([`crate::coordination::limiter`]) per
//! conversation, of [`CHAT_RATE_MAX`] messages at once refilling at [`CHAT_RATE_MAX`] per
//! [`CHAT_RATE_WINDOW_MS`] (one a second). It is held in memory by the `Chat` object: a limit,
//! not an account, so an evicted object starts with a full bucket.

use crate::coordination::limiter::{check, GcraState, Policy};

/// Most messages a chat session accepts at once (the bucket's burst), and per
/// [`CHAT_RATE_WINDOW_MS`] on average.
pub const CHAT_RATE_MAX: u32 = 10;
/// The period over which [`CHAT_RATE_MAX`] messages are replenished, ms.
pub const CHAT_RATE_WINDOW_MS: u64 = 10_000;

/// Why a chat message was refused by [`ChatRate::admit`] (error code `rate_limited`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "at most {CHAT_RATE_MAX} messages at once and {CHAT_RATE_MAX} per {} s; retry in {} s",
    CHAT_RATE_WINDOW_MS / 1000,
    retry_after_ms.div_ceil(1000)
)]
pub struct RateLimited {
    /// Milliseconds until one more message would be accepted.
    pub retry_after_ms: u64,
}

impl RateLimited {
    /// The stable error code sent in the `error` frame.
    pub fn code(&self) -> &'static str {
        "rate_limited"
    }
}

/// One chat conversation's message bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChatRate {
    state: GcraState,
}

impl ChatRate {
    /// The chat policy: [`CHAT_RATE_MAX`] per [`CHAT_RATE_WINDOW_MS`], burst [`CHAT_RATE_MAX`].
    pub fn policy() -> Policy {
        Policy::new(CHAT_RATE_MAX, CHAT_RATE_WINDOW_MS, CHAT_RATE_MAX)
            .expect("the chat rate policy is within the limiter's bounds")
    }

    /// Admits one message at `now_ms` (consuming it) or refuses it with the wait.
    pub fn admit(&mut self, now_ms: u64) -> Result<(), RateLimited> {
        let decision = check(&mut self.state, &Self::policy(), now_ms, 1)
            .expect("a cost of 1 never exceeds the chat burst");
        if decision.allowed {
            Ok(())
        } else {
            Err(RateLimited {
                retry_after_ms: decision.retry_after_ms,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_700_000_000_000;

    #[test]
    fn a_burst_of_ten_is_admitted_and_the_eleventh_refused() {
        let mut r = ChatRate::default();
        for i in 0..CHAT_RATE_MAX {
            assert_eq!(r.admit(T), Ok(()), "message {i}");
        }
        let refused = r.admit(T).unwrap_err();
        assert_eq!(refused.code(), "rate_limited");
        assert_eq!(refused.retry_after_ms, 1000);
        assert_eq!(
            refused.to_string(),
            "at most 10 messages at once and 10 per 10 s; retry in 1 s"
        );
    }

    #[test]
    fn the_bucket_refills_one_message_a_second() {
        let mut r = ChatRate::default();
        for _ in 0..CHAT_RATE_MAX {
            r.admit(T).unwrap();
        }
        assert!(r.admit(T + 999).is_err());
        assert_eq!(r.admit(T + 1000), Ok(()));
        assert!(r.admit(T + 1000).is_err());
        // After a full window the whole burst is back, and no more.
        let later = T + 1000 + CHAT_RATE_WINDOW_MS;
        for _ in 0..CHAT_RATE_MAX {
            assert_eq!(r.admit(later), Ok(()));
        }
        assert!(r.admit(later).is_err());
    }

    #[test]
    fn a_steady_talker_within_the_average_is_never_refused() {
        let mut r = ChatRate::default();
        let step = CHAT_RATE_WINDOW_MS / u64::from(CHAT_RATE_MAX);
        for i in 0..100 {
            assert_eq!(r.admit(T + i * step), Ok(()), "message {i}");
        }
    }

    #[test]
    fn a_clock_stepping_back_grants_nothing_extra() {
        let mut r = ChatRate::default();
        for _ in 0..CHAT_RATE_MAX {
            r.admit(T).unwrap();
        }
        // The bucket is read as empty as of the earlier time, then refills at the usual pace.
        assert!(r.admit(T - 5000).is_err());
        assert!(r.admit(T - 4001).is_err());
        assert_eq!(r.admit(T - 4000), Ok(()));
        assert!(r.admit(T - 4000).is_err());
    }
}
