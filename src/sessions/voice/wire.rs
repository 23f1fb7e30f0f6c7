//! The voice socket's wire format: the [`ControlFrame`]s a client sends as JSON text, the
//! [`ServerFrame`]s it receives, the declared [`AudioFormat`] of its binary frames, the
//! [`VoiceError`] codes, and the `decode_*` functions that turn a text frame into a typed value.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::rooms::protocol::FrameError;

/// Sample rates a client may declare in `start`, in Hz. All are whole samples per millisecond,
/// so frame durations and audio time are exact.
pub const ALLOWED_SAMPLE_RATES: [u32; 4] = [8000, 16000, 24000, 48000];
/// Longest audio in one binary frame, in ms. Clients normally send 10–100 ms frames; longer
/// frames add latency to speech detection and let a client dump audio in bulk.
pub const MAX_FRAME_MS: u64 = 200;
/// How far audio may run ahead of the wall clock since `start`, in ms: a burst allowance for
/// network jitter and client buffering. Beyond it frames are refused as `too_fast`.
pub const REALTIME_TOLERANCE_MS: u64 = 1000;
/// Largest control (text) frame, in bytes, checked before parsing.
pub const MAX_CONTROL_FRAME_BYTES: usize = 16 * 1024;
/// Longest typed `text` turn, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;
/// Frame `type` values a voice client may send.
pub const CONTROL_FRAME_TYPES: &[&str] = &["start", "stop", "interrupt", "text"];

/// Sample encodings a voice socket accepts. Only one: transcription endpoints want PCM or WAV,
/// and browsers produce float PCM that converts to 16-bit losslessly enough for speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SampleEncoding {
    /// Signed 16-bit little-endian PCM.
    #[serde(rename = "pcm16le")]
    Pcm16Le,
}

/// The audio format as a client declares it in `start`, before validation. Kept apart from
/// [`AudioFormat`] so a well-formed but unsupported format gets the precise
/// `unsupported_format` error rather than a generic shape error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatSpec {
    /// Sample encoding name; must be `pcm16le`.
    pub encoding: String,
    /// Samples per second; one of [`ALLOWED_SAMPLE_RATES`].
    pub sample_rate: u32,
    /// Channel count; must be 1.
    pub channels: u32,
}

/// A validated audio format: 16-bit little-endian mono PCM at an allowed rate. Fields are
/// private so an unsupported format cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FormatSpec")]
pub struct AudioFormat {
    encoding: SampleEncoding,
    sample_rate: u32,
    channels: u16,
}

impl AudioFormat {
    /// 16-bit mono PCM at `sample_rate`, if that rate is allowed.
    pub fn pcm16_mono(sample_rate: u32) -> Result<Self, VoiceError> {
        Self::try_from(FormatSpec {
            encoding: "pcm16le".into(),
            sample_rate,
            channels: 1,
        })
    }

    /// The sample encoding (always [`SampleEncoding::Pcm16Le`]).
    pub fn encoding(&self) -> SampleEncoding {
        self.encoding
    }

    /// Samples per second.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Channel count (always 1).
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Duration of `samples` samples in ms, rounded down.
    pub fn samples_to_ms(&self, samples: u64) -> u64 {
        samples * 1000 / u64::from(self.sample_rate)
    }
}

impl TryFrom<FormatSpec> for AudioFormat {
    type Error = VoiceError;

    fn try_from(spec: FormatSpec) -> Result<Self, VoiceError> {
        if spec.encoding != "pcm16le" {
            return Err(VoiceError::UnsupportedFormat(format!(
                "encoding {:?} is not supported; use \"pcm16le\" (16-bit little-endian PCM)",
                spec.encoding
            )));
        }
        if !ALLOWED_SAMPLE_RATES.contains(&spec.sample_rate) {
            return Err(VoiceError::UnsupportedFormat(format!(
                "sample_rate {} is not supported; use one of 8000, 16000, 24000, 48000",
                spec.sample_rate
            )));
        }
        if spec.channels != 1 {
            return Err(VoiceError::UnsupportedFormat(format!(
                "channels {} is not supported; send mono audio (channels 1)",
                spec.channels
            )));
        }
        Ok(Self {
            encoding: SampleEncoding::Pcm16Le,
            sample_rate: spec.sample_rate,
            channels: 1,
        })
    }
}

impl From<AudioFormat> for FormatSpec {
    fn from(f: AudioFormat) -> Self {
        Self {
            encoding: "pcm16le".into(),
            sample_rate: f.sample_rate,
            channels: u32::from(f.channels),
        }
    }
}

/// A control frame a voice client sends as JSON text (audio travels in binary frames).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlFrame {
    /// Begin streaming audio in this format; answered by `started` and `state: listening`.
    Start {
        /// The audio format of the binary frames that follow.
        format: AudioFormat,
    },
    /// Stop streaming; an utterance in progress is finished and still answered.
    // Struct variants (not unit ones) so that unknown fields are refused here too.
    Stop {},
    /// Stop the agent: cancel the reply in flight and any reply about to start.
    Interrupt {},
    /// A typed user turn, at most [`MAX_TEXT_CHARS`] characters.
    Text {
        /// What the user typed.
        text: String,
    },
}

/// Where the conversation stands, as shown to the client in `state` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnState {
    /// Not streaming audio and nothing in progress.
    Idle,
    /// Streaming audio, waiting for the user to speak (or the user is speaking).
    Listening,
    /// The user's turn is being transcribed or a reply is being generated.
    Thinking,
    /// Reply text is streaming to the client.
    Speaking,
}

/// A frame the server sends on a voice socket (JSON text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The first frame: who answers, and whether replies are spoken.
    Ready {
        /// `http`, `workers-ai` or `builtin`.
        provider: String,
        /// Whether replies also come as speech (`speech` frames and their binary chunks).
        speech: bool,
        /// Why not, when they do not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Answer to `start`: audio may flow in this format.
    Started {
        /// The accepted format, echoed.
        format: AudioFormat,
    },
    /// The VAD heard speech begin (audio time, ms since `start`).
    SpeechStart {
        /// Start of the first voiced analysis window.
        at_ms: u64,
    },
    /// The VAD heard speech end (audio time). Sent for every `speech_start`, including
    /// utterances too short to keep.
    SpeechEnd {
        /// End of the last voiced analysis window (or the forced cut).
        at_ms: u64,
        /// Voiced duration from `speech_start.at_ms` to `at_ms`.
        duration_ms: u64,
    },
    /// A kept utterance and what it said, sent once its transcription is in.
    Utterance {
        /// Utterance id, increasing from 0 within a session.
        id: u32,
        /// Voiced duration in ms.
        duration_ms: u64,
        /// RMS level over the utterance, dBFS (a full-scale sine reads −3.0), one decimal.
        level_dbfs: f32,
        /// The transcript, when there is one and it is not empty.
        transcript: Option<String>,
        /// False when no transcription provider is available: nothing was invented.
        transcribed: bool,
    },
    /// Whether an utterance ended the user's turn, as the turn model judged it (`source`
    /// `model`), or the VAD alone when the model could not say (`source` `vad`).
    Turn {
        /// The utterance.
        utterance: u32,
        /// Whether the turn is complete: if not, the reply waits up to `VOICE_TURN_HOLD_MS`
        /// for more speech.
        complete: bool,
        /// The model's probability that it is, when it gave one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        probability: Option<f32>,
        /// `model` or `vad`.
        source: String,
    },
    /// The conversation state changed.
    State {
        /// The new state.
        state: TurnState,
    },
    /// A piece of the agent's reply.
    ReplyDelta {
        /// The turn this reply answers.
        turn: u64,
        /// Text to append.
        text: String,
    },
    /// The agent's reply is complete.
    ReplyDone {
        /// The turn.
        turn: u64,
        /// The whole reply.
        text: String,
        /// True when the reply was cut at its token cap (`VOICE_MAX_REPLY_TOKENS`, or what is
        /// left of the allowance) because the provider went on past it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    },
    /// The reply of this turn was cut off (barge-in, `interrupt` or a new typed turn); no more
    /// deltas of it will be sent.
    ReplyCancelled {
        /// The cancelled turn.
        turn: u64,
    },
    /// One chunk of the agent's speech: its binary frame (the `RKS1` header with this turn
    /// and `seq`, then `samples` 16-bit mono samples at `sample_rate`) follows at once.
    Speech {
        /// The turn it speaks.
        turn: u64,
        /// Its number within the turn, from 0.
        seq: u32,
        /// The text it speaks (a sentence of the reply).
        text: String,
        /// Samples per second of its PCM.
        sample_rate: u32,
        /// Samples in its binary frame.
        samples: u64,
        /// Its length, ms.
        duration_ms: u64,
    },
    /// The turn's speech is complete: `chunks` were sent (a failed one is not sent).
    SpeechDone {
        /// The turn.
        turn: u64,
        /// Chunks sent.
        chunks: u32,
        /// Audio sent, ms.
        audio_ms: u64,
    },
    /// Barge-in: stop playing this turn's speech now and drop what is queued of it; no more
    /// of it will be sent.
    SpeechCancelled {
        /// The turn.
        turn: u64,
    },
    /// How long one turn took, stage by stage (see `docs/SESSIONS.md`, "Latency").
    Timings(super::latency::TurnTimings),
    /// A refused frame or a failed step.
    Error {
        /// Stable code, see [`VoiceError::code`].
        code: String,
        /// Human-readable explanation.
        message: String,
    },
    /// Cumulative usage of this session.
    Usage {
        /// Audio received, ms.
        audio_ms: u64,
        /// Reply tokens generated.
        tokens: u64,
        /// Characters of reply text sent for speech synthesis.
        speech_chars: u64,
    },
}

impl ServerFrame {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("voice frames always serialize")
    }

    /// The `ready` frame of a session answered by `provider` (`builtin`, `http`,
    /// `workers-ai`), which speaks or not.
    pub fn ready(provider: &str, speech: bool) -> Self {
        let note = match provider {
            _ if speech => None,
            "builtin" => Some(
                "the built-in provider has no voice: replies come as text only; speak them \
                 with your own synthesis"
                    .into(),
            ),
            _ => Some("speech is turned off (LLM_TTS_MODEL / AI_TTS_MODEL is none)".into()),
        };
        Self::Ready {
            provider: provider.into(),
            speech,
            note,
        }
    }

    /// An error frame for `e`.
    pub fn error(e: &VoiceError) -> Self {
        Self::Error {
            code: e.code().into(),
            message: e.to_string(),
        }
    }
}

/// Which allowance ran out: the session's own cap, or what the user has left today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// `VOICE_SESSION_AUDIO_MS` / `VOICE_SESSION_TOKENS`.
    Session,
    /// `VOICE_USER_DAILY_AUDIO_MS` / `VOICE_USER_DAILY_TOKENS`, across the user's sessions.
    Daily,
}

impl std::fmt::Display for Allowance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Session => "of this session",
            Self::Daily => "of your day (across your sessions; it renews at 00:00 UTC)",
        })
    }
}

/// Why a voice input was refused or a step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoiceError {
    /// The control frame's envelope was bad: `too_large`, `malformed`, `unknown_type` or
    /// `invalid_frame` (as on room sockets).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// `start` named a format this service does not take (`unsupported_format`).
    #[error("unsupported audio format: {0}")]
    UnsupportedFormat(String),
    /// `start` while already started (`already_started`).
    #[error("already started; send stop before starting again")]
    AlreadyStarted,
    /// A `text` turn with no visible characters (`empty_text`).
    #[error("text turn is empty")]
    EmptyText,
    /// A `text` turn over [`MAX_TEXT_CHARS`] (`text_too_long`).
    #[error("text turn of {chars} characters exceeds the limit of {MAX_TEXT_CHARS}")]
    TextTooLong {
        /// Characters sent.
        chars: usize,
    },
    /// Audio before `start` (`not_started`).
    #[error("audio before start; send a start frame with the audio format first")]
    NotStarted,
    /// A binary frame with no bytes (`empty_frame`).
    #[error("empty audio frame")]
    EmptyFrame,
    /// A binary frame that is not whole 16-bit samples (`odd_length`).
    #[error("audio frame of {bytes} bytes is not a whole number of 16-bit samples")]
    OddLength {
        /// Bytes received.
        bytes: usize,
    },
    /// A binary frame longer than [`MAX_FRAME_MS`] (`frame_too_long`).
    #[error("audio frame of {ms} ms exceeds the limit of {MAX_FRAME_MS} ms; send shorter frames")]
    FrameTooLong {
        /// Frame duration, rounded up.
        ms: u64,
    },
    /// Audio arriving faster than real time beyond [`REALTIME_TOLERANCE_MS`] (`too_fast`).
    #[error(
        "audio is {ahead_ms} ms ahead of real time (tolerance {REALTIME_TOLERANCE_MS} ms); \
         send audio at real-time pace"
    )]
    TooFast {
        /// How far ahead of the wall clock this frame would have put the stream.
        ahead_ms: u64,
    },
    /// The session's or the user's daily audio allowance is spent (`audio_quota_exceeded`).
    #[error("the audio allowance {0} is used up")]
    AudioQuotaExceeded(Allowance),
    /// The session's or the user's daily reply-token allowance is spent
    /// (`token_quota_exceeded`).
    #[error("the reply allowance {0} is used up")]
    TokenQuotaExceeded(Allowance),
    /// The generation provider failed (`generation_failed`).
    #[error("the assistant could not reply: {0}")]
    GenerationFailed(String),
    /// The speech provider failed on one chunk (`synthesis_failed`); the others go on.
    #[error("the assistant could not speak a sentence: {0}")]
    SynthesisFailed(String),
    /// The speech allowance is spent (`speech_quota_exceeded`): replies go on as text.
    #[error("the speech allowance {0} is used up; replies go on as text")]
    SpeechQuotaExceeded(Allowance),
}

impl VoiceError {
    /// The stable snake_case code sent in `error` frames.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Frame(e) => e.code(),
            Self::UnsupportedFormat(_) => "unsupported_format",
            Self::AlreadyStarted => "already_started",
            Self::EmptyText => "empty_text",
            Self::TextTooLong { .. } => "text_too_long",
            Self::NotStarted => "not_started",
            Self::EmptyFrame => "empty_frame",
            Self::OddLength { .. } => "odd_length",
            Self::FrameTooLong { .. } => "frame_too_long",
            Self::TooFast { .. } => "too_fast",
            Self::AudioQuotaExceeded(_) => "audio_quota_exceeded",
            Self::TokenQuotaExceeded(_) => "token_quota_exceeded",
            Self::GenerationFailed(_) => "generation_failed",
            Self::SynthesisFailed(_) => "synthesis_failed",
            Self::SpeechQuotaExceeded(_) => "speech_quota_exceeded",
        }
    }
}

/// First step of decoding any JSON text frame tagged by `type` (voice and chat sockets): size
/// limit before parsing, then an object with a known `type`. Returns the type and the value
/// so a caller can check parts (like an audio format) before the typed decode.
pub fn decode_envelope(
    text: &str,
    max_bytes: usize,
    known_types: &[&str],
) -> Result<(String, Value), FrameError> {
    if text.len() > max_bytes {
        return Err(FrameError::TooLarge {
            size: text.len(),
            limit: max_bytes,
        });
    }
    let value: Value = serde_json::from_str(text).map_err(|_| FrameError::Malformed("JSON"))?;
    if !value.is_object() {
        return Err(FrameError::Malformed("JSON"));
    }
    match value.get("type") {
        Some(Value::String(t)) if known_types.contains(&t.as_str()) => Ok((t.clone(), value)),
        Some(Value::String(t)) => Err(FrameError::UnknownType(t.clone())),
        _ => Err(FrameError::UnknownType(String::new())),
    }
}

/// Decodes a JSON text frame tagged by `type` into `T`, with the error classes of
/// [`decode_envelope`] plus `invalid_frame` for a known type of the wrong shape.
pub fn decode_json_frame<T: DeserializeOwned>(
    text: &str,
    max_bytes: usize,
    known_types: &[&str],
) -> Result<T, FrameError> {
    let (kind, value) = decode_envelope(text, max_bytes, known_types)?;
    serde_json::from_value(value).map_err(|e| FrameError::Invalid {
        kind,
        detail: e.to_string(),
    })
}

/// Decodes and validates one control frame: envelope errors, then `unsupported_format` for a
/// well-formed `start` with an unsupported format, then `invalid_frame` for any other shape
/// error, then the text-turn bounds.
pub fn decode_control(text: &str) -> Result<ControlFrame, VoiceError> {
    let (kind, value) = decode_envelope(text, MAX_CONTROL_FRAME_BYTES, CONTROL_FRAME_TYPES)?;
    if kind == "start" {
        if let Some(Ok(spec)) = value.get("format").map(FormatSpec::deserialize) {
            AudioFormat::try_from(spec)?;
        }
    }
    let frame: ControlFrame = serde_json::from_value(value).map_err(|e| FrameError::Invalid {
        kind,
        detail: e.to_string(),
    })?;
    if let ControlFrame::Text { text } = &frame {
        let chars = text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(VoiceError::TextTooLong { chars });
        }
        if text.trim().is_empty() {
            return Err(VoiceError::EmptyText);
        }
    }
    Ok(frame)
}

/// What a control frame does to the stream format the glue remembers on the socket, so that
/// a Durable Object evicted mid-stream can resume the capture in the same format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatChange {
    /// Leave the remembered format as it is (any frame but an accepted `start` or a `stop`,
    /// including frames that do not decode).
    Keep,
    /// Remember this format: a `start` the session accepted.
    Set(AudioFormat),
    /// Forget the format: a `stop`.
    Clear,
}

/// Decides the [`FormatChange`] for control frame `text`, given whether the session answered
/// it with `started` (a `start` refused as `already_started` changes nothing).
pub fn format_change(text: &str, started: bool) -> FormatChange {
    match decode_control(text) {
        Ok(ControlFrame::Start { format }) if started => FormatChange::Set(format),
        Ok(ControlFrame::Stop {}) => FormatChange::Clear,
        _ => FormatChange::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // --- wire format -------------------------------------------------------------------------

    #[test]
    fn control_frames_change_the_remembered_format() {
        let start =
            r#"{"type":"start","format":{"encoding":"pcm16le","sample_rate":16000,"channels":1}}"#;
        let format = AudioFormat::pcm16_mono(16000).unwrap();
        assert_eq!(format_change(start, true), FormatChange::Set(format));
        assert_eq!(format_change(start, false), FormatChange::Keep);
        assert_eq!(
            format_change(r#"{"type":"stop"}"#, true),
            FormatChange::Clear
        );
        assert_eq!(
            format_change(r#"{"type":"stop"}"#, false),
            FormatChange::Clear
        );
        assert_eq!(
            format_change(r#"{"type":"interrupt"}"#, false),
            FormatChange::Keep
        );
        assert_eq!(
            format_change(r#"{"type":"text","text":"hi"}"#, false),
            FormatChange::Keep
        );
        assert_eq!(format_change("not json", true), FormatChange::Keep);
        let bad_rate =
            r#"{"type":"start","format":{"encoding":"pcm16le","sample_rate":44100,"channels":1}}"#;
        assert_eq!(format_change(bad_rate, true), FormatChange::Keep);
        assert_eq!(
            format_change(r#"{"type":"stop","x":1}"#, true),
            FormatChange::Keep
        );
    }

    #[test]
    fn control_frames_decode() {
        assert_eq!(
            decode_control(
                r#"{"type":"start","format":{"encoding":"pcm16le","sample_rate":16000,"channels":1}}"#
            ),
            Ok(ControlFrame::Start {
                format: AudioFormat::pcm16_mono(16000).unwrap()
            })
        );
        assert_eq!(
            decode_control(r#"{"type":"stop"}"#),
            Ok(ControlFrame::Stop {})
        );
        assert_eq!(
            decode_control(r#"{"type":"interrupt"}"#),
            Ok(ControlFrame::Interrupt {})
        );
        assert_eq!(
            decode_control(r#"{"type":"text","text":"hello"}"#),
            Ok(ControlFrame::Text {
                text: "hello".into()
            })
        );
        // Round trip: what a client library serializes is what the server decodes.
        let f = ControlFrame::Start {
            format: AudioFormat::pcm16_mono(48000).unwrap(),
        };
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            json!({"type":"start","format":{"encoding":"pcm16le","sample_rate":48000,"channels":1}})
        );
        assert_eq!(decode_control(&serde_json::to_string(&f).unwrap()), Ok(f));
    }

    #[test]
    fn control_frame_errors_have_precise_codes() {
        let code = |s: &str| decode_control(s).unwrap_err().code();
        assert_eq!(code("{nope"), "malformed");
        assert_eq!(code("[1]"), "malformed");
        assert_eq!(code(r#"{"type":"dance"}"#), "unknown_type");
        assert_eq!(code(r#"{"text":"x"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"stop","extra":1}"#), "invalid_frame");
        assert_eq!(code(r#"{"type":"text"}"#), "invalid_frame");
        assert_eq!(code(r#"{"type":"start"}"#), "invalid_frame");
        assert_eq!(
            code(
                r#"{"type":"start","format":{"encoding":"pcm16le","sample_rate":"16000","channels":1}}"#
            ),
            "invalid_frame"
        );
        assert_eq!(
            code(
                r#"{"type":"start","format":{"encoding":"pcm16le","sample_rate":16000,"channels":1,"bits":16}}"#
            ),
            "invalid_frame"
        );
        for (fmt, needle) in [
            (
                r#"{"encoding":"opus","sample_rate":16000,"channels":1}"#,
                "pcm16le",
            ),
            (
                r#"{"encoding":"pcm16le","sample_rate":44100,"channels":1}"#,
                "44100",
            ),
            (
                r#"{"encoding":"pcm16le","sample_rate":16000,"channels":2}"#,
                "mono",
            ),
        ] {
            let e = decode_control(&format!(r#"{{"type":"start","format":{fmt}}}"#)).unwrap_err();
            assert_eq!(e.code(), "unsupported_format");
            assert!(e.to_string().contains(needle), "{e}");
        }
        assert_eq!(code(r#"{"type":"text","text":"   "}"#), "empty_text");
        let long = format!(
            r#"{{"type":"text","text":"{}"}}"#,
            "a".repeat(MAX_TEXT_CHARS + 1)
        );
        assert_eq!(code(&long), "text_too_long");
        let ok = format!(
            r#"{{"type":"text","text":"{}"}}"#,
            "é".repeat(MAX_TEXT_CHARS)
        );
        assert!(decode_control(&ok).is_ok());
        let huge = format!(
            r#"{{"type":"text","text":"{}"}}"#,
            "a".repeat(MAX_CONTROL_FRAME_BYTES)
        );
        assert_eq!(code(&huge), "too_large");
    }

    #[test]
    fn server_frames_have_the_documented_shape() {
        let v = |f: ServerFrame| serde_json::to_value(f).unwrap();
        assert_eq!(
            v(ServerFrame::Utterance {
                id: 3,
                duration_ms: 1200,
                level_dbfs: -21.5,
                transcript: None,
                transcribed: false
            }),
            json!({"type":"utterance","id":3,"duration_ms":1200,"level_dbfs":-21.5,"transcript":null,"transcribed":false})
        );
        assert_eq!(
            v(ServerFrame::State {
                state: TurnState::Speaking
            }),
            json!({"type":"state","state":"speaking"})
        );
        assert_eq!(
            v(ServerFrame::ReplyCancelled { turn: 2 }),
            json!({"type":"reply_cancelled","turn":2})
        );
        assert_eq!(
            v(ServerFrame::SpeechEnd {
                at_ms: 900,
                duration_ms: 400
            }),
            json!({"type":"speech_end","at_ms":900,"duration_ms":400})
        );
        let e = ServerFrame::error(&VoiceError::TooFast { ahead_ms: 1200 });
        let t = e.to_json();
        assert!(t.contains(r#""code":"too_fast""#), "{t}");
        let back: ServerFrame = serde_json::from_str(&t).unwrap();
        assert_eq!(back, e);
        let s: ServerFrame = serde_json::from_str(
            r#"{"type":"started","format":{"encoding":"pcm16le","sample_rate":8000,"channels":1}}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            ServerFrame::Started {
                format: AudioFormat::pcm16_mono(8000).unwrap()
            }
        );
    }
}
