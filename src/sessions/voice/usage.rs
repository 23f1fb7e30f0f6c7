//! Cost accounting: [`Usage`] (audio time, reply tokens and synthesized characters), the caps
//! in [`VoiceLimits`], and the per-user daily allowance [`UserUsage`].

use serde::{Deserialize, Serialize};

use super::vad::VadConfig;

/// Length of one day for [`UserUsage`], in ms (days are UTC days since the Unix epoch).
pub const DAY_MS: u64 = 86_400_000;

/// Audio, reply tokens and speech, as consumed or as allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Audio received, ms.
    pub audio_ms: u64,
    /// Reply tokens generated (reported by the provider, else estimated).
    pub tokens: u64,
    /// Characters of reply text sent for speech synthesis (what speech providers bill by).
    /// Absent in snapshots and totals stored before speech existed: 0.
    #[serde(default)]
    pub speech_chars: u64,
}

impl Usage {
    /// No limit.
    pub const UNLIMITED: Self = Self {
        audio_ms: u64::MAX,
        tokens: u64::MAX,
        speech_chars: u64::MAX,
    };

    /// Field-wise `self - other`, floored at zero.
    pub fn saturating_sub(self, other: Self) -> Self {
        Self {
            audio_ms: self.audio_ms.saturating_sub(other.audio_ms),
            tokens: self.tokens.saturating_sub(other.tokens),
            speech_chars: self.speech_chars.saturating_sub(other.speech_chars),
        }
    }

    /// Field-wise `self + other`, capped at the maximum.
    pub fn saturating_add(self, other: Self) -> Self {
        Self {
            audio_ms: self.audio_ms.saturating_add(other.audio_ms),
            tokens: self.tokens.saturating_add(other.tokens),
            speech_chars: self.speech_chars.saturating_add(other.speech_chars),
        }
    }

    /// Field-wise minimum.
    pub fn min(self, other: Self) -> Self {
        Self {
            audio_ms: self.audio_ms.min(other.audio_ms),
            tokens: self.tokens.min(other.tokens),
            speech_chars: self.speech_chars.min(other.speech_chars),
        }
    }

    /// Whether every field is zero.
    pub fn is_zero(&self) -> bool {
        self.audio_ms == 0 && self.tokens == 0 && self.speech_chars == 0
    }
}

/// Rough token count of generated text (about four characters per token in English), used
/// when a provider reports none and for replies cut off before their usage arrived.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// Per-session and per-user cost caps and edge limits. Each is a setting; defaults in
/// [`VoiceLimits::default`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VoiceLimits {
    /// Audio one session may stream, ms. Default 30 minutes.
    pub session_audio_ms: u64,
    /// Reply tokens one session may generate. Default 20 000.
    pub session_tokens: u64,
    /// Audio one user may stream per UTC day, ms. Default 2 hours.
    pub user_daily_audio_ms: u64,
    /// Reply tokens one user may generate per UTC day. Default 100 000.
    pub user_daily_tokens: u64,
    /// Characters one session may have synthesized into speech. Default 50 000.
    pub session_speech_chars: u64,
    /// Characters one user may have synthesized per UTC day. Default 250 000.
    pub user_daily_speech_chars: u64,
    /// Most tokens one reply may use (the provider's `max_tokens`). Default 400.
    pub max_reply_tokens: u32,
    /// How long a turn the turn model calls incomplete waits for more speech before it is
    /// answered anyway, ms. Default 1500.
    #[serde(default = "default_turn_hold_ms")]
    pub turn_hold_ms: u64,
    /// Refusal balance at which the socket is closed with 4500: each refused client frame
    /// adds one, each accepted one takes one away. Default 20.
    pub max_strikes: u32,
    /// Voice activity detection settings.
    pub vad: VadConfig,
}

impl Default for VoiceLimits {
    fn default() -> Self {
        Self {
            session_audio_ms: 30 * 60 * 1000,
            session_tokens: 20_000,
            user_daily_audio_ms: 2 * 3600 * 1000,
            user_daily_tokens: 100_000,
            session_speech_chars: 50_000,
            user_daily_speech_chars: 250_000,
            max_reply_tokens: 400,
            turn_hold_ms: default_turn_hold_ms(),
            max_strikes: 20,
            vad: VadConfig::default(),
        }
    }
}

fn default_turn_hold_ms() -> u64 {
    1500
}

/// One user's consumption today, for the glue to persist (e.g. keyed by user id) and pass to
/// every new session as [`UserUsage::remaining`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserUsage {
    /// UTC day (days since the Unix epoch) the totals belong to.
    pub day: u64,
    /// Consumed on that day.
    pub used: Usage,
}

impl UserUsage {
    /// What the user may still consume today (a new day starts from the full allowance).
    pub fn remaining(&self, limits: &VoiceLimits, now_ms: u64) -> Usage {
        let allowance = Usage {
            audio_ms: limits.user_daily_audio_ms,
            tokens: limits.user_daily_tokens,
            speech_chars: limits.user_daily_speech_chars,
        };
        if self.day == now_ms / DAY_MS {
            allowance.saturating_sub(self.used)
        } else {
            allowance
        }
    }

    /// Adds an `Effect::Charge` to today's totals (starting a new day if needed).
    pub fn charge(&mut self, delta: Usage, now_ms: u64) {
        let today = now_ms / DAY_MS;
        if self.day != today {
            *self = Self {
                day: today,
                used: Usage::default(),
            };
        }
        self.used = self.used.saturating_add(delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_usage_rolls_over_daily() {
        let limits = VoiceLimits::default();
        let mut u = UserUsage::default();
        let day3 = 3 * DAY_MS + 5;
        u.charge(
            Usage {
                audio_ms: 60_000,
                tokens: 500,
                speech_chars: 70,
            },
            day3,
        );
        u.charge(
            Usage {
                audio_ms: 1_000,
                ..Usage::default()
            },
            day3 + 10,
        );
        assert_eq!(u.day, 3);
        assert_eq!(
            u.remaining(&limits, day3 + 20),
            Usage {
                audio_ms: limits.user_daily_audio_ms - 61_000,
                tokens: limits.user_daily_tokens - 500,
                speech_chars: limits.user_daily_speech_chars - 70,
            }
        );
        let day4 = 4 * DAY_MS;
        assert_eq!(
            u.remaining(&limits, day4),
            Usage {
                audio_ms: limits.user_daily_audio_ms,
                tokens: limits.user_daily_tokens,
                speech_chars: limits.user_daily_speech_chars,
            }
        );
        u.charge(
            Usage {
                audio_ms: 5,
                tokens: 5,
                ..Usage::default()
            },
            day4,
        );
        assert_eq!((u.day, u.used.audio_ms), (4, 5));
        assert_eq!(estimate_tokens("abcdefghi"), 3);
        let old: Usage = serde_json::from_str(r#"{"audio_ms":1,"tokens":2}"#).unwrap();
        assert_eq!(old.speech_chars, 0, "totals stored before speech read back");
        assert_eq!(estimate_tokens(""), 0);
    }
}
