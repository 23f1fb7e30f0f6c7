//! Per-stage latency of a turn ([`TurnTimings`], the `timings` frame), measured on the
//! object's wall clock from the moment the turn was decided: the `speech_end` that closed the
//! last utterance it answers (the VAD waits its 300 ms hangover first), or the arrival of a
//! typed `text` turn.

use serde::{Deserialize, Serialize};

/// What started a turn's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnOrigin {
    /// The `speech_end` of the last utterance answered.
    #[default]
    SpeechEnd,
    /// A typed `text` turn.
    Text,
}

/// How long one turn took, stage by stage, in ms from its origin (`None`: the stage did not
/// happen, e.g. no transcript for a typed turn, no audio without a speech provider).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnTimings {
    /// The turn.
    pub turn: u64,
    /// What started the clock.
    pub origin: TurnOrigin,
    /// → the transcript was in (spoken turns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript_ms: Option<u64>,
    /// → the turn model's verdict on the last utterance (spoken turns, with a turn model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_ms: Option<u64>,
    /// → the first reply token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<u64>,
    /// → the first chunk of speech was sent: voice to voice, as far as the server sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_audio_ms: Option<u64>,
    /// → the reply text was complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_ms: Option<u64>,
    /// Time the speech provider spent on this turn's chunks, summed (they are made one after
    /// another).
    pub synthesis_ms: u64,
}

/// A turn's clock while it runs.
#[derive(Debug, Clone)]
pub struct TurnClock {
    origin_ms: u64,
    timings: TurnTimings,
}

impl TurnClock {
    /// The clock of `turn`, started at `origin_ms` by `origin`; `transcript_at` is when the
    /// last transcript it answers came in (spoken turns).
    pub fn new(turn: u64, origin: TurnOrigin, origin_ms: u64, transcript_at: Option<u64>) -> Self {
        Self {
            origin_ms,
            timings: TurnTimings {
                turn,
                origin,
                transcript_ms: transcript_at.map(|t| t.saturating_sub(origin_ms)),
                ..TurnTimings::default()
            },
        }
    }

    /// The turn model's verdict came at `at_ms`.
    pub fn with_verdict(mut self, at_ms: Option<u64>) -> Self {
        self.timings.turn_ms = at_ms.map(|t| t.saturating_sub(self.origin_ms));
        self
    }

    /// The turn it times.
    pub fn turn(&self) -> u64 {
        self.timings.turn
    }

    fn since(&self, now_ms: u64) -> Option<u64> {
        Some(now_ms.saturating_sub(self.origin_ms))
    }

    /// A reply token arrived (only the first counts).
    pub fn token(&mut self, now_ms: u64) {
        if self.timings.first_token_ms.is_none() {
            self.timings.first_token_ms = self.since(now_ms);
        }
    }

    /// The reply text is complete.
    pub fn reply_done(&mut self, now_ms: u64) {
        self.timings.reply_ms = self.since(now_ms);
    }

    /// A chunk of speech was sent (only the first counts).
    pub fn audio(&mut self, now_ms: u64) {
        if self.timings.first_audio_ms.is_none() {
            self.timings.first_audio_ms = self.since(now_ms);
        }
    }

    /// The speech provider spent `ms` on a chunk.
    pub fn synthesis(&mut self, ms: u64) {
        self.timings.synthesis_ms += ms;
    }

    /// The timings so far.
    pub fn timings(&self) -> &TurnTimings {
        &self.timings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_measured_from_the_origin_and_first_events_count() {
        let mut c = TurnClock::new(4, TurnOrigin::SpeechEnd, 1_000, Some(1_250));
        c.token(1_400);
        c.token(1_500);
        c.synthesis(90);
        c.audio(1_600);
        c.synthesis(80);
        c.audio(1_700);
        c.reply_done(1_650);
        let t = c.timings();
        assert_eq!(
            (
                t.transcript_ms,
                t.first_token_ms,
                t.first_audio_ms,
                t.reply_ms,
                t.synthesis_ms
            ),
            (Some(250), Some(400), Some(600), Some(650), 170)
        );
        let json = serde_json::to_value(t).unwrap();
        assert_eq!(json["origin"], "speech_end");
        let typed = TurnClock::new(5, TurnOrigin::Text, 10, None);
        let json = serde_json::to_value(typed.timings()).unwrap();
        assert!(json.get("transcript_ms").is_none(), "{json}");
        assert_eq!(json["synthesis_ms"], 0);
    }
}
