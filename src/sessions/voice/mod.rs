//! Voice sessions: the pure core of the `Voice` Durable Object.
//!
//! A voice client streams raw audio in binary WebSocket frames and steers the session with
//! small JSON text frames. Everything that decides anything — is this frame acceptable, is
//! somebody speaking, has an utterance ended, whose turn is it, may another reply be generated —
//! lives here as plain Rust over samples and `now_ms`, so `cargo test` can drive a whole
//! conversation with synthetic audio and no runtime. The object glue decodes nothing itself: it
//! hands each socket message to [`VoiceSession::apply`] and performs the [`Effect`]s (send a
//! frame, call the transcription or generation provider, persist, charge the user, close).
//!
//! # Layout
//!
//! - Wire format: [`ControlFrame`] (client → server, JSON text frames), [`ServerFrame`] (server →
//!   client), [`VoiceError`] with stable codes. Audio is binary frames of [`AudioFormat`]
//!   (16-bit little-endian mono PCM at one of [`ALLOWED_SAMPLE_RATES`]).
//! - Edge checks: [`validate_audio_frame`] and [`AudioGate`] refuse audio before `start`, odd
//!   byte counts, empty or over-long frames and audio faster than real time.
//! - Voice activity detection: [`Vad`] (energy over an adaptive noise floor, a zero-crossing
//!   guard against broadband noise, attack, hangover, minimum and maximum utterance length)
//!   yielding [`VadEvent`]s with each utterance's PCM; [`wav_bytes`] wraps PCM for
//!   transcription endpoints.
//! - Conversation: [`Context`] (bounded, serializable), [`Usage`] / [`UserUsage`] /
//!   [`VoiceLimits`] (cost caps), and the turn machine [`VoiceSession`].
//! - [`synth`]: deterministic test signals (speech-like bursts, tones, white noise) shared by
//!   unit tests, end-to-end tests and benchmarks.
//!
//! # Times
//!
//! `speech_start.at_ms`, `speech_end.at_ms` and every VAD time are **audio time**: milliseconds
//! of audio received since `start`, not wall-clock time. They are exact functions of the
//! samples, so the same audio always gives the same boundaries. Wall-clock `now_ms` is used only
//! to hold the client to real-time pace.

use std::collections::{BTreeMap, VecDeque};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::rooms::protocol::{close, FrameError};

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
/// Most turns kept in the conversation [`Context`].
pub const MAX_CONTEXT_TURNS: usize = 20;
/// Most characters (summed over turns) kept in the conversation [`Context`].
pub const MAX_CONTEXT_CHARS: usize = 8000;
/// Most utterances awaiting a transcript at once; beyond it the oldest is forgotten (its late
/// transcript is ignored), which bounds memory when the provider is slower than the talker.
pub const MAX_PENDING_TRANSCRIPTIONS: usize = 4;
/// Uncharged audio after which the session charges and persists even mid-stream, in ms, so a
/// crash loses at most this much accounting.
pub const CHARGE_INTERVAL_MS: u64 = 10_000;
/// Length of one day for [`UserUsage`], in ms (days are UTC days since the Unix epoch).
pub const DAY_MS: u64 = 86_400_000;
/// Level reported for digital silence, in dBFS (the floor of [`level_dbfs`]).
pub const SILENCE_DBFS: f32 = -100.0;
/// Suggested system prompt for the generation provider; the glue prepends it to the
/// [`Effect::Generate`] context.
pub const SYSTEM_PROMPT: &str = "You are the voice assistant of Kestrel & Lowe, an estate \
agency. Your replies are spoken aloud: answer in one to three short sentences of plain speech, \
with no lists, markdown or links. If you do not know something, say so and offer to pass the \
question to the team.";

/// Frame `type` values a voice client may send.
pub const CONTROL_FRAME_TYPES: &[&str] = &["start", "stop", "interrupt", "text"];

// ---------------------------------------------------------------------------------------------
// Wire format
// ---------------------------------------------------------------------------------------------

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
    },
    /// The reply of this turn was cut off (barge-in, `interrupt` or a new typed turn); no more
    /// deltas of it will be sent.
    ReplyCancelled {
        /// The cancelled turn.
        turn: u64,
    },
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
    },
}

impl ServerFrame {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("voice frames always serialize")
    }

    /// An error frame for `e`.
    pub fn error(e: &VoiceError) -> Self {
        Self::Error {
            code: e.code().into(),
            message: e.to_string(),
        }
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
    /// The session's (or user's) audio allowance is spent (`audio_quota_exceeded`).
    #[error("the audio allowance for this session is used up")]
    AudioQuotaExceeded,
    /// The session's (or user's) reply-token allowance is spent (`token_quota_exceeded`).
    #[error("the reply allowance for this session is used up")]
    TokenQuotaExceeded,
    /// The generation provider failed (`generation_failed`).
    #[error("the assistant could not reply: {0}")]
    GenerationFailed(String),
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
            Self::AudioQuotaExceeded => "audio_quota_exceeded",
            Self::TokenQuotaExceeded => "token_quota_exceeded",
            Self::GenerationFailed(_) => "generation_failed",
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

// ---------------------------------------------------------------------------------------------
// Edge validation of audio frames
// ---------------------------------------------------------------------------------------------

/// What the edge knows about a started audio stream: its format, when it started (wall
/// clock) and how much audio it has accepted, for the real-time pace check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioGate {
    format: AudioFormat,
    started_ms: u64,
    received_samples: u64,
}

impl AudioGate {
    /// A stream started at `now_ms` in `format`.
    pub fn new(format: AudioFormat, now_ms: u64) -> Self {
        Self {
            format,
            started_ms: now_ms,
            received_samples: 0,
        }
    }

    /// The stream's format.
    pub fn format(&self) -> AudioFormat {
        self.format
    }

    /// Samples accepted so far.
    pub fn received_samples(&self) -> u64 {
        self.received_samples
    }

    /// Audio accepted so far, ms (rounded down).
    pub fn received_ms(&self) -> u64 {
        self.format.samples_to_ms(self.received_samples)
    }

    /// Counts `samples` accepted samples (from a successful [`validate_audio_frame`]).
    pub fn record(&mut self, samples: u64) {
        self.received_samples += samples;
    }

    /// Validates a frame and, when accepted, counts it. Returns its sample count.
    pub fn admit(&mut self, frame: &[u8], now_ms: u64) -> Result<u64, VoiceError> {
        let n = validate_audio_frame(frame, Some(self), now_ms)?;
        self.record(n);
        Ok(n)
    }
}

/// Checks one binary audio frame against the stream (`None` before `start`) at wall-clock
/// `now_ms`, in this order: `not_started`, `empty_frame`, `odd_length`, `frame_too_long`,
/// `too_fast`. Returns the frame's sample count. Pure: the caller records accepted frames.
///
/// The pace check allows the received audio to lead the wall clock since `start` by at most
/// [`REALTIME_TOLERANCE_MS`]; a clock that steps backwards counts as no time passing.
pub fn validate_audio_frame(
    frame: &[u8],
    gate: Option<&AudioGate>,
    now_ms: u64,
) -> Result<u64, VoiceError> {
    let gate = gate.ok_or(VoiceError::NotStarted)?;
    if frame.is_empty() {
        return Err(VoiceError::EmptyFrame);
    }
    if !frame.len().is_multiple_of(2) {
        return Err(VoiceError::OddLength { bytes: frame.len() });
    }
    let samples = (frame.len() / 2) as u64;
    let rate = u64::from(gate.format.sample_rate);
    if samples * 1000 > MAX_FRAME_MS * rate {
        return Err(VoiceError::FrameTooLong {
            ms: (samples * 1000).div_ceil(rate),
        });
    }
    let elapsed = now_ms.saturating_sub(gate.started_ms);
    let total = gate.received_samples + samples;
    if total * 1000 > (elapsed + REALTIME_TOLERANCE_MS) * rate {
        return Err(VoiceError::TooFast {
            ahead_ms: (total * 1000).div_ceil(rate).saturating_sub(elapsed),
        });
    }
    Ok(samples)
}

/// Little-endian 16-bit samples of a frame (a trailing odd byte is ignored; validate first).
pub fn pcm16le_samples(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// A RIFF/WAVE file (PCM, 16-bit, mono) holding `pcm`: the upload format OpenAI-compatible
/// transcription endpoints take.
pub fn wav_bytes(pcm: &[i16], sample_rate: u32) -> Vec<u8> {
    let data_len = (pcm.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + pcm.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * 2).to_le_bytes()); // byte rate
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in pcm {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Voice activity detection
// ---------------------------------------------------------------------------------------------

/// RMS level of `samples` in dBFS relative to i16 full scale (a full-scale square wave reads
/// 0, a full-scale sine −3.01), floored at [`SILENCE_DBFS`].
pub fn level_dbfs(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return SILENCE_DBFS;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let mean = sum / samples.len() as f64 / (32768.0 * 32768.0);
    if mean <= 0.0 {
        return SILENCE_DBFS;
    }
    ((10.0 * mean.log10()) as f32).max(SILENCE_DBFS)
}

/// Fraction of adjacent sample pairs whose sign differs (0 for silence and low tones, about
/// 0.5 for white noise).
pub fn zero_crossing_rate(samples: &[i16]) -> f32 {
    if samples.len() < 2 {
        return 0.0;
    }
    let crossings = samples
        .windows(2)
        .filter(|w| (w[0] >= 0) != (w[1] >= 0))
        .count();
    crossings as f32 / (samples.len() - 1) as f32
}

/// Voice activity detector settings. The defaults suit conversational speech at 8–48 kHz.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VadConfig {
    /// Analysis window, ms (10–30). Boundaries are quantised to it.
    pub window_ms: u32,
    /// Consecutive voiced windows that start speech (attack); rejects clicks.
    pub attack_windows: u32,
    /// Silence after the last voiced window that ends speech, ms (hangover); bridges the
    /// gaps between words.
    pub hangover_ms: u32,
    /// Utterances shorter than this (voiced span) are discarded, ms.
    pub min_utterance_ms: u32,
    /// Utterances are cut at this length and a new one begins, ms; bounds buffered PCM.
    pub max_utterance_ms: u32,
    /// A window is voiced when its level is at least this far above the noise floor, dB.
    pub snr_db: f32,
    /// …and at least this loud, dBFS, whatever the floor.
    pub min_speech_dbfs: f32,
    /// …and its zero-crossing rate is at most this (broadband noise is about 0.5; voiced
    /// speech well under 0.2). Set to 1.0 to disable.
    pub max_zcr: f32,
    /// How fast the noise floor may rise during non-speech, dB per second (it falls fast).
    pub floor_rise_db_per_s: f32,
    /// Audio kept before the start and after the end of each utterance's PCM, ms, so
    /// transcription hears soft onsets and word ends.
    pub pad_ms: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            window_ms: 20,
            attack_windows: 3,
            hangover_ms: 300,
            min_utterance_ms: 200,
            max_utterance_ms: 15_000,
            snr_db: 10.0,
            min_speech_dbfs: -50.0,
            max_zcr: 0.35,
            floor_rise_db_per_s: 3.0,
            pad_ms: 100,
        }
    }
}

impl VadConfig {
    /// Checks the settings are usable: a 10–30 ms window, at least one attack window,
    /// `min_utterance_ms <= max_utterance_ms <= 60 s`, a hangover of at most 5 s and padding of
    /// at most 1 s.
    pub fn validate(&self) -> Result<(), &'static str> {
        if !(10..=30).contains(&self.window_ms) {
            return Err("window_ms must be between 10 and 30");
        }
        if self.attack_windows == 0 {
            return Err("attack_windows must be at least 1");
        }
        if self.max_utterance_ms == 0 || self.max_utterance_ms > 60_000 {
            return Err("max_utterance_ms must be between 1 and 60000");
        }
        if self.min_utterance_ms > self.max_utterance_ms {
            return Err("min_utterance_ms must not exceed max_utterance_ms");
        }
        if self.hangover_ms > 5_000 || self.pad_ms > 1_000 {
            return Err("hangover_ms must be at most 5000 and pad_ms at most 1000");
        }
        Ok(())
    }
}

/// One detected utterance.
#[derive(Clone, PartialEq)]
pub struct Segment {
    /// Start of the first voiced window, audio ms.
    pub start_ms: u64,
    /// End of the last voiced window (or of the forced cut), audio ms.
    pub end_ms: u64,
    /// RMS level over `[start_ms, end_ms)`, dBFS.
    pub level_dbfs: f32,
    /// True when cut at `max_utterance_ms` rather than ended by silence.
    pub forced: bool,
    /// The utterance's samples with up to `pad_ms` either side.
    pub pcm: Vec<i16>,
}

impl std::fmt::Debug for Segment {
    // Samples would drown logs and test failures; their count is what matters there.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("start_ms", &self.start_ms)
            .field("end_ms", &self.end_ms)
            .field("level_dbfs", &self.level_dbfs)
            .field("forced", &self.forced)
            .field("pcm_samples", &self.pcm.len())
            .finish()
    }
}

impl Segment {
    /// Voiced duration, ms.
    pub fn duration_ms(&self) -> u64 {
        self.end_ms - self.start_ms
    }
}

/// What the detector noticed in the audio just pushed.
#[derive(Debug, Clone, PartialEq)]
pub enum VadEvent {
    /// Speech began at this audio time (start of the first of the attack windows).
    SpeechStart {
        /// Audio ms.
        at_ms: u64,
    },
    /// Speech ended and was long enough to keep.
    SpeechEnd(Segment),
    /// Speech ended but was shorter than `min_utterance_ms`; nothing to transcribe.
    Discarded {
        /// Audio ms of the start.
        start_ms: u64,
        /// Audio ms of the end.
        end_ms: u64,
    },
}

#[derive(Debug, Clone)]
enum VadState {
    Silence {
        run: u32,
        run_start: u64,
    },
    Speech {
        start: u64,
        last_voiced_end: u64,
        buf_start: u64,
        buf: Vec<i16>,
        min_db: f32,
    },
}

/// An energy voice activity detector over fixed analysis windows.
///
/// Each window is *voiced* when its level is `snr_db` above an adaptive noise floor, above
/// `min_speech_dbfs`, and its zero-crossing rate is below `max_zcr`. Speech starts after
/// `attack_windows` voiced windows in a row (dated from the first of them) and ends after
/// `hangover_ms` without a voiced window (dated at the end of the last voiced one).
///
/// The noise floor starts at the first window's level (streams begin with room noise), falls
/// quickly toward quieter windows and rises at most `floor_rise_db_per_s` during non-speech.
/// It is frozen during speech so a long utterance does not raise it; a forced cut at
/// `max_utterance_ms` lifts it to the quietest window of the cut utterance, so a sudden
/// step in background level costs at most one forced-length false utterance.
///
/// Samples may be pushed in any chunking: windows are cut on absolute sample positions, so
/// the events depend only on the samples (verified in tests).
#[derive(Debug, Clone)]
pub struct Vad {
    cfg: VadConfig,
    rate: u32,
    win: usize,
    pending: Vec<i16>,
    pos: u64,
    floor_db: Option<f32>,
    history: VecDeque<i16>,
    history_cap: usize,
    state: VadState,
}

impl Vad {
    /// A detector for audio at `sample_rate`. Settings that fail [`VadConfig::validate`] are
    /// replaced by the defaults rather than trusted.
    pub fn new(cfg: VadConfig, sample_rate: u32) -> Self {
        let cfg = if cfg.validate().is_ok() {
            cfg
        } else {
            VadConfig::default()
        };
        let win = (sample_rate as usize * cfg.window_ms as usize / 1000).max(1);
        let pad = sample_rate as usize * cfg.pad_ms as usize / 1000;
        Self {
            cfg,
            rate: sample_rate,
            win,
            pending: Vec::with_capacity(win),
            pos: 0,
            floor_db: None,
            history: VecDeque::new(),
            history_cap: win * cfg.attack_windows as usize + pad,
            state: VadState::Silence {
                run: 0,
                run_start: 0,
            },
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &VadConfig {
        &self.cfg
    }

    /// Whether speech is in progress.
    pub fn in_speech(&self) -> bool {
        matches!(self.state, VadState::Speech { .. })
    }

    /// The current noise floor estimate, dBFS (`None` before the first window).
    pub fn noise_floor_dbfs(&self) -> Option<f32> {
        self.floor_db
    }

    /// Audio analysed so far, ms (whole windows only).
    pub fn position_ms(&self) -> u64 {
        self.ms(self.pos)
    }

    fn ms(&self, samples: u64) -> u64 {
        samples * 1000 / u64::from(self.rate)
    }

    fn samples(&self, ms: u32) -> u64 {
        u64::from(ms) * u64::from(self.rate) / 1000
    }

    /// Feeds samples; returns what was detected in the whole windows they complete.
    pub fn push(&mut self, samples: &[i16]) -> Vec<VadEvent> {
        let mut events = Vec::new();
        let mut input = samples;
        if !self.pending.is_empty() {
            let need = self.win - self.pending.len();
            if input.len() < need {
                self.pending.extend_from_slice(input);
                return events;
            }
            let mut w = std::mem::take(&mut self.pending);
            w.extend_from_slice(&input[..need]);
            self.window(&w, &mut events);
            w.clear();
            self.pending = w;
            input = &input[need..];
        }
        let mut chunks = input.chunks_exact(self.win);
        for w in &mut chunks {
            self.window(w, &mut events);
        }
        self.pending.extend_from_slice(chunks.remainder());
        events
    }

    /// Ends the stream: an utterance in progress ends at its last voiced window. A partial
    /// window is dropped.
    pub fn flush(&mut self) -> Vec<VadEvent> {
        self.pending.clear();
        let mut events = Vec::new();
        if let VadState::Speech {
            last_voiced_end, ..
        } = self.state
        {
            self.finish(last_voiced_end, false, &mut events);
        }
        events
    }

    fn window(&mut self, w: &[i16], events: &mut Vec<VadEvent>) {
        let start = self.pos;
        let end = start + w.len() as u64;
        self.pos = end;
        let level = level_dbfs(w);
        let floor = *self.floor_db.get_or_insert(level);
        let voiced = level >= (floor + self.cfg.snr_db).max(self.cfg.min_speech_dbfs)
            && zero_crossing_rate(w) <= self.cfg.max_zcr;

        self.history.extend(w.iter().copied());
        let excess = self.history.len().saturating_sub(self.history_cap);
        self.history.drain(..excess);

        let hangover = self.samples(self.cfg.hangover_ms);
        let max_len = self.samples(self.cfg.max_utterance_ms);
        let pad = self.samples(self.cfg.pad_ms);
        match &mut self.state {
            VadState::Silence { run, run_start } => {
                if !voiced {
                    *run = 0;
                } else {
                    if *run == 0 {
                        *run_start = start;
                    }
                    *run += 1;
                    if *run >= self.cfg.attack_windows {
                        let s = *run_start;
                        let hist_start = end - self.history.len() as u64;
                        let buf_start = s.saturating_sub(pad).max(hist_start);
                        let buf: Vec<i16> = self
                            .history
                            .iter()
                            .skip((buf_start - hist_start) as usize)
                            .copied()
                            .collect();
                        self.state = VadState::Speech {
                            start: s,
                            last_voiced_end: end,
                            buf_start,
                            buf,
                            min_db: level,
                        };
                        events.push(VadEvent::SpeechStart { at_ms: self.ms(s) });
                    }
                }
            }
            VadState::Speech {
                start,
                last_voiced_end,
                buf,
                min_db,
                ..
            } => {
                buf.extend_from_slice(w);
                *min_db = min_db.min(level);
                if voiced {
                    *last_voiced_end = end;
                }
                let (start, last, seg_min) = (*start, *last_voiced_end, *min_db);
                if end - last >= hangover {
                    self.finish(last, false, events);
                } else if end - start >= max_len {
                    self.finish(end, true, events);
                    let f = self.floor_db.get_or_insert(seg_min);
                    *f = f.max(seg_min);
                }
            }
        }

        if !voiced && !self.in_speech() {
            let rise = self.cfg.floor_rise_db_per_s * self.cfg.window_ms as f32 / 1000.0;
            let lowest = self.cfg.min_speech_dbfs - self.cfg.snr_db;
            if let Some(f) = self.floor_db.as_mut() {
                *f = if level < *f {
                    *f + (level - *f) * 0.5
                } else {
                    *f + (level - *f).min(rise)
                };
                // Below this the floor no longer affects the threshold; clamping keeps the
                // climb back from digital silence short.
                *f = f.max(lowest);
            }
        }
    }

    fn finish(&mut self, end: u64, forced: bool, events: &mut Vec<VadEvent>) {
        let state = std::mem::replace(
            &mut self.state,
            VadState::Silence {
                run: 0,
                run_start: 0,
            },
        );
        let VadState::Speech {
            start,
            buf_start,
            mut buf,
            ..
        } = state
        else {
            return;
        };
        let (start_ms, end_ms) = (self.ms(start), self.ms(end));
        if end - start < self.samples(self.cfg.min_utterance_ms) {
            events.push(VadEvent::Discarded { start_ms, end_ms });
            return;
        }
        let keep = (end + self.samples(self.cfg.pad_ms) - buf_start) as usize;
        buf.truncate(keep);
        let voiced =
            &buf[(start - buf_start) as usize..((end - buf_start) as usize).min(buf.len())];
        events.push(VadEvent::SpeechEnd(Segment {
            start_ms,
            end_ms,
            level_dbfs: level_dbfs(voiced),
            forced,
            pcm: buf,
        }));
    }
}

// ---------------------------------------------------------------------------------------------
// Conversation context
// ---------------------------------------------------------------------------------------------

/// Who said a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The person.
    User,
    /// The agent.
    Assistant,
}

/// One turn of the conversation as the generation provider sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextTurn {
    /// Who said it.
    pub role: Role,
    /// What was said (an assistant turn cut off by barge-in holds what had been sent).
    pub text: String,
    /// True for an assistant reply that was interrupted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// The conversation so far, bounded by [`MAX_CONTEXT_TURNS`] and [`MAX_CONTEXT_CHARS`]
/// (oldest turns dropped first), so what is sent to the provider and persisted stays small.
/// Serializable: the object stores it and rebuilds the session with it after a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    turns: VecDeque<ContextTurn>,
}

impl Context {
    /// Appends a turn (its text cut to [`MAX_CONTEXT_CHARS`]), then drops the oldest turns
    /// until both bounds hold.
    pub fn push(&mut self, role: Role, text: &str, interrupted: bool) {
        self.turns.push_back(ContextTurn {
            role,
            text: truncate_chars(text, MAX_CONTEXT_CHARS),
            interrupted,
        });
        while self.turns.len() > MAX_CONTEXT_TURNS || self.chars() > MAX_CONTEXT_CHARS {
            self.turns.pop_front();
        }
    }

    /// The turns, oldest first.
    pub fn turns(&self) -> impl Iterator<Item = &ContextTurn> {
        self.turns.iter()
    }

    /// The turns as a list, oldest first (what [`Effect::Generate`] carries).
    pub fn to_vec(&self) -> Vec<ContextTurn> {
        self.turns.iter().cloned().collect()
    }

    /// Number of turns.
    pub fn len(&self) -> usize {
        self.turns.len()
    }

    /// Whether there are no turns.
    pub fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    /// Characters over all turns.
    pub fn chars(&self) -> usize {
        self.turns.iter().map(|t| t.text.chars().count()).sum()
    }
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Cost limits
// ---------------------------------------------------------------------------------------------

/// Audio and reply tokens, as consumed or as allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Audio received, ms.
    pub audio_ms: u64,
    /// Reply tokens generated (reported by the provider, else estimated).
    pub tokens: u64,
}

impl Usage {
    /// No limit.
    pub const UNLIMITED: Self = Self {
        audio_ms: u64::MAX,
        tokens: u64::MAX,
    };

    /// Field-wise `self - other`, floored at zero.
    pub fn saturating_sub(self, other: Self) -> Self {
        Self {
            audio_ms: self.audio_ms.saturating_sub(other.audio_ms),
            tokens: self.tokens.saturating_sub(other.tokens),
        }
    }

    /// Field-wise `self + other`, capped at the maximum.
    pub fn saturating_add(self, other: Self) -> Self {
        Self {
            audio_ms: self.audio_ms.saturating_add(other.audio_ms),
            tokens: self.tokens.saturating_add(other.tokens),
        }
    }

    /// Field-wise minimum.
    pub fn min(self, other: Self) -> Self {
        Self {
            audio_ms: self.audio_ms.min(other.audio_ms),
            tokens: self.tokens.min(other.tokens),
        }
    }

    /// Whether both fields are zero.
    pub fn is_zero(&self) -> bool {
        self.audio_ms == 0 && self.tokens == 0
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
    /// Most tokens one reply may use (the provider's `max_tokens`). Default 400.
    pub max_reply_tokens: u32,
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
            max_reply_tokens: 400,
            max_strikes: 20,
            vad: VadConfig::default(),
        }
    }
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
        };
        if self.day == now_ms / DAY_MS {
            allowance.saturating_sub(self.used)
        } else {
            allowance
        }
    }

    /// Adds an [`Effect::Charge`] to today's totals (starting a new day if needed).
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

// ---------------------------------------------------------------------------------------------
// The turn machine
// ---------------------------------------------------------------------------------------------

/// Something that happened to a voice session.
#[derive(Debug, Clone, PartialEq)]
pub enum Input<'a> {
    /// A text frame from the client (decoded here, so refusals are counted here).
    Control(&'a str),
    /// A binary frame from the client: PCM in the started format.
    Audio(&'a [u8]),
    /// The transcription provider finished an utterance: `None` when no provider can
    /// transcribe (nothing is invented), `Some("")` when it heard no words.
    Transcribed {
        /// The utterance id from [`Effect::Transcribe`].
        utterance: u32,
        /// The transcript.
        transcript: Option<String>,
    },
    /// A piece of reply text from the generation provider.
    ReplyDelta {
        /// The turn from [`Effect::Generate`].
        turn: u64,
        /// Text to append.
        text: String,
    },
    /// The reply is complete.
    ReplyDone {
        /// The turn.
        turn: u64,
        /// Tokens the provider reports, if it does (else estimated from the text).
        tokens: Option<u32>,
    },
    /// The generation provider failed.
    ReplyFailed {
        /// The turn.
        turn: u64,
        /// What went wrong, safe to show the user.
        message: String,
    },
    /// The socket closed.
    Disconnected,
}

/// What the glue must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a frame to the client.
    Send(ServerFrame),
    /// Transcribe this utterance (a WAV file) and report back with [`Input::Transcribed`].
    Transcribe {
        /// Utterance id.
        utterance: u32,
        /// The utterance as a WAV file ([`wav_bytes`]).
        wav: Vec<u8>,
    },
    /// Generate a reply to the context (with [`SYSTEM_PROMPT`] in front), streaming it back as
    /// [`Input::ReplyDelta`]s and one [`Input::ReplyDone`] (or [`Input::ReplyFailed`]).
    Generate {
        /// Turn id to echo back.
        turn: u64,
        /// The conversation, oldest first; the last turn is the user's.
        context: Vec<ContextTurn>,
        /// Token cap for this reply: the smaller of the per-reply cap and what is left.
        max_tokens: u32,
    },
    /// Abort the generation of this turn; its late deltas are ignored anyway.
    Cancel {
        /// The cancelled turn.
        turn: u64,
    },
    /// Store this snapshot (it replaces the previous one).
    Persist(Snapshot),
    /// Add this consumption to the user's totals ([`UserUsage::charge`]).
    Charge(Usage),
    /// Close the socket with a code from [`crate::rooms::protocol::close`].
    Close {
        /// Close code.
        code: u16,
        /// Short reason.
        reason: String,
    },
}

/// What a voice session persists so a restarted object can carry the conversation on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The conversation.
    pub context: Context,
    /// Consumption so far (all of it already charged).
    pub usage: Usage,
    /// Last turn id given out.
    pub turn: u64,
    /// Next utterance id.
    pub next_utterance: u32,
}

#[derive(Debug, Clone)]
struct Capture {
    gate: AudioGate,
    vad: Vad,
}

#[derive(Debug, Clone)]
struct ReplyInFlight {
    turn: u64,
    text: String,
    streaming: bool,
}

#[derive(Debug, Clone, Copy)]
struct PendingUtterance {
    duration_ms: u64,
    level_dbfs: f32,
    /// False once an `interrupt` said not to answer it.
    respond: bool,
}

/// One voice session's state machine.
///
/// States (reported in `state` frames whenever they change): **idle** → `start` →
/// **listening** → utterance ended or `text` turn → **thinking** (transcribing, then
/// generating) → first reply delta → **speaking** → reply done → **listening** (or **idle**
/// after `stop`).
///
/// Barge-in: `speech_start`, `interrupt` or a new `text` turn while a reply is in flight
/// cancels it (`reply_cancelled`, [`Effect::Cancel`]); later deltas of that turn are dropped
/// because each generation gets a new, higher turn id. A user who keeps talking after a pause
/// is not answered mid-sentence: a reply is generated only when no speech is in progress and
/// every utterance awaiting a transcript has one, and then answers all of them at once.
#[derive(Debug, Clone)]
pub struct VoiceSession {
    limits: VoiceLimits,
    cap: Usage,
    capture: Option<Capture>,
    reply: Option<ReplyInFlight>,
    pending: BTreeMap<u32, PendingUtterance>,
    owed: bool,
    context: Context,
    audio_ms: u64,
    tokens: u64,
    charged: Usage,
    turn: u64,
    next_utterance: u32,
    strikes: u32,
    closed: bool,
    dirty: bool,
}

impl VoiceSession {
    /// A new session; `user_remaining` is what the user may still consume
    /// ([`UserUsage::remaining`], or [`Usage::UNLIMITED`] when not tracked per user).
    pub fn new(limits: VoiceLimits, user_remaining: Usage) -> Self {
        Self::restore(Snapshot::default(), limits, user_remaining)
    }

    /// A session carrying on from a persisted snapshot.
    pub fn restore(snapshot: Snapshot, limits: VoiceLimits, user_remaining: Usage) -> Self {
        let used = snapshot.usage;
        let cap = Usage {
            audio_ms: limits.session_audio_ms,
            tokens: limits.session_tokens,
        }
        .min(used.saturating_add(user_remaining));
        Self {
            limits,
            cap,
            capture: None,
            reply: None,
            pending: BTreeMap::new(),
            owed: false,
            context: snapshot.context,
            audio_ms: used.audio_ms,
            tokens: used.tokens,
            charged: used,
            turn: snapshot.turn,
            next_utterance: snapshot.next_utterance,
            strikes: 0,
            closed: false,
            dirty: false,
        }
    }

    /// What would be persisted now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            context: self.context.clone(),
            usage: self.usage(),
            turn: self.turn,
            next_utterance: self.next_utterance,
        }
    }

    /// Consumption so far, including audio of the stream in progress.
    pub fn usage(&self) -> Usage {
        Usage {
            audio_ms: self.audio_ms + self.capture.as_ref().map_or(0, |c| c.gate.received_ms()),
            tokens: self.tokens,
        }
    }

    /// The caps on cumulative [`Self::usage`] for this session.
    pub fn caps(&self) -> Usage {
        self.cap
    }

    /// What the user may still consume today, as the user's quota object reported it after
    /// this session's last charge (so it counts the user's other sessions too): the caps
    /// become what this session has charged plus that, within the per-session caps. The next
    /// frame or turn over the new caps is refused like any other over-quota one.
    pub fn set_user_remaining(&mut self, remaining: Usage) {
        self.cap = Usage {
            audio_ms: self.limits.session_audio_ms,
            tokens: self.limits.session_tokens,
        }
        .min(self.charged.saturating_add(remaining));
    }

    /// The conversation so far.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The current state.
    pub fn state(&self) -> TurnState {
        if let Some(r) = &self.reply {
            return if r.streaming {
                TurnState::Speaking
            } else {
                TurnState::Thinking
            };
        }
        let in_speech = self.capture.as_ref().is_some_and(|c| c.vad.in_speech());
        if !in_speech && (self.owed || self.pending.values().any(|p| p.respond)) {
            TurnState::Thinking
        } else if self.capture.is_some() {
            TurnState::Listening
        } else {
            TurnState::Idle
        }
    }

    /// The turn id of the reply in flight, if any.
    pub fn reply_in_flight(&self) -> Option<u64> {
        self.reply.as_ref().map(|r| r.turn)
    }

    /// Whether the session decided to close (after which inputs are ignored).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Applies one input at wall-clock `now_ms`; returns the effects to perform in order.
    pub fn apply(&mut self, input: Input<'_>, now_ms: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.closed {
            return fx;
        }
        let before = self.state();
        let client = match input {
            Input::Control(text) => {
                Some(decode_control(text).and_then(|f| self.control(f, now_ms, &mut fx)))
            }
            Input::Audio(bytes) => Some(self.audio(bytes, now_ms, &mut fx)),
            Input::Transcribed {
                utterance,
                transcript,
            } => {
                self.transcribed(utterance, transcript, &mut fx);
                None
            }
            Input::ReplyDelta { turn, text } => {
                self.delta(turn, text, &mut fx);
                None
            }
            Input::ReplyDone { turn, tokens } => {
                self.done(turn, tokens, &mut fx);
                None
            }
            Input::ReplyFailed { turn, message } => {
                if let Some(r) = self.reply.take_if(|r| r.turn == turn) {
                    self.tokens += estimate_tokens(&r.text);
                    self.dirty = true;
                    let e = VoiceError::GenerationFailed(message);
                    fx.push(Effect::Send(ServerFrame::error(&e)));
                }
                None
            }
            Input::Disconnected => {
                self.disconnect(&mut fx);
                return fx;
            }
        };
        if let Some(Err(e)) = &client {
            fx.push(Effect::Send(ServerFrame::error(e)));
        }
        if let Err(e) = self.maybe_generate(&mut fx) {
            fx.push(Effect::Send(ServerFrame::error(&e)));
        }
        let after = self.state();
        if after != before {
            fx.push(Effect::Send(ServerFrame::State { state: after }));
        }
        if self.dirty {
            self.persist(&mut fx);
        }
        match client {
            Some(Ok(())) => self.strikes = self.strikes.saturating_sub(1),
            Some(Err(_)) => {
                self.strikes += 1;
                if self.strikes >= self.limits.max_strikes.max(1) {
                    self.closed = true;
                    fx.push(Effect::Close {
                        code: close::POLICY_VIOLATION,
                        reason: "too many refused frames".into(),
                    });
                }
            }
            None => {}
        }
        fx
    }

    fn control(
        &mut self,
        frame: ControlFrame,
        now_ms: u64,
        fx: &mut Vec<Effect>,
    ) -> Result<(), VoiceError> {
        match frame {
            ControlFrame::Start { format } => {
                if self.capture.is_some() {
                    return Err(VoiceError::AlreadyStarted);
                }
                if self.usage().audio_ms >= self.cap.audio_ms {
                    return Err(VoiceError::AudioQuotaExceeded);
                }
                self.capture = Some(Capture {
                    gate: AudioGate::new(format, now_ms),
                    vad: Vad::new(self.limits.vad, format.sample_rate()),
                });
                fx.push(Effect::Send(ServerFrame::Started { format }));
            }
            ControlFrame::Stop {} => self.end_capture(true, fx),
            ControlFrame::Interrupt {} => {
                self.cancel_reply(true, fx);
                self.owed = false;
                for p in self.pending.values_mut() {
                    p.respond = false;
                }
            }
            ControlFrame::Text { text } => {
                self.cancel_reply(true, fx);
                self.context.push(Role::User, text.trim(), false);
                self.owed = true;
                self.dirty = true;
            }
        }
        Ok(())
    }

    fn audio(&mut self, bytes: &[u8], now_ms: u64, fx: &mut Vec<Effect>) -> Result<(), VoiceError> {
        if self.capture.is_none() && self.usage().audio_ms >= self.cap.audio_ms {
            return Err(VoiceError::AudioQuotaExceeded);
        }
        let n = validate_audio_frame(bytes, self.capture.as_ref().map(|c| &c.gate), now_ms)?;
        let capture = self
            .capture
            .as_mut()
            .expect("validated frames have a capture");
        let format = capture.gate.format();
        let after = self.audio_ms + format.samples_to_ms(capture.gate.received_samples() + n);
        if after > self.cap.audio_ms {
            self.end_capture(true, fx);
            // Count the allowance as spent (rounding up by less than one frame), so a new
            // `start` is refused rather than let through for a few milliseconds.
            self.audio_ms = self.audio_ms.max(self.cap.audio_ms);
            return Err(VoiceError::AudioQuotaExceeded);
        }
        capture.gate.record(n);
        let events = capture.vad.push(&pcm16le_samples(bytes));
        self.on_vad(events, format.sample_rate(), fx);
        if self.usage().audio_ms - self.charged.audio_ms >= CHARGE_INTERVAL_MS {
            self.dirty = true;
        }
        Ok(())
    }

    fn on_vad(&mut self, events: Vec<VadEvent>, rate: u32, fx: &mut Vec<Effect>) {
        for ev in events {
            match ev {
                VadEvent::SpeechStart { at_ms } => {
                    fx.push(Effect::Send(ServerFrame::SpeechStart { at_ms }));
                    self.cancel_reply(true, fx);
                }
                VadEvent::Discarded { start_ms, end_ms } => {
                    fx.push(Effect::Send(ServerFrame::SpeechEnd {
                        at_ms: end_ms,
                        duration_ms: end_ms - start_ms,
                    }));
                }
                VadEvent::SpeechEnd(seg) => {
                    fx.push(Effect::Send(ServerFrame::SpeechEnd {
                        at_ms: seg.end_ms,
                        duration_ms: seg.duration_ms(),
                    }));
                    let id = self.next_utterance;
                    self.next_utterance = self.next_utterance.wrapping_add(1);
                    while self.pending.len() >= MAX_PENDING_TRANSCRIPTIONS {
                        self.pending.pop_first();
                    }
                    self.pending.insert(
                        id,
                        PendingUtterance {
                            duration_ms: seg.duration_ms(),
                            level_dbfs: (seg.level_dbfs * 10.0).round() / 10.0,
                            respond: true,
                        },
                    );
                    fx.push(Effect::Transcribe {
                        utterance: id,
                        wav: wav_bytes(&seg.pcm, rate),
                    });
                    self.dirty = true;
                }
            }
        }
    }

    /// Ends the audio stream; with `transcribe`, an utterance in progress is finished and
    /// sent for transcription.
    fn end_capture(&mut self, transcribe: bool, fx: &mut Vec<Effect>) {
        if let Some(mut c) = self.capture.take() {
            let events = c.vad.flush();
            self.audio_ms += c.gate.received_ms();
            if transcribe {
                self.on_vad(events, c.gate.format().sample_rate(), fx);
            }
            self.dirty = true;
        }
    }

    fn cancel_reply(&mut self, notify: bool, fx: &mut Vec<Effect>) {
        if let Some(r) = self.reply.take() {
            self.tokens += estimate_tokens(&r.text);
            fx.push(Effect::Cancel { turn: r.turn });
            if notify {
                fx.push(Effect::Send(ServerFrame::ReplyCancelled { turn: r.turn }));
            }
            if !r.text.trim().is_empty() {
                self.context.push(Role::Assistant, &r.text, true);
            }
            self.dirty = true;
        }
    }

    fn transcribed(&mut self, id: u32, transcript: Option<String>, fx: &mut Vec<Effect>) {
        let Some(p) = self.pending.remove(&id) else {
            return; // unknown, forgotten or already answered
        };
        let text = transcript
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| truncate_chars(t, MAX_TEXT_CHARS));
        fx.push(Effect::Send(ServerFrame::Utterance {
            id,
            duration_ms: p.duration_ms,
            level_dbfs: p.level_dbfs,
            transcript: text.clone(),
            transcribed: transcript.is_some(),
        }));
        if let Some(t) = text {
            self.context.push(Role::User, &t, false);
            self.owed |= p.respond;
            self.dirty = true;
        }
    }

    fn delta(&mut self, turn: u64, text: String, fx: &mut Vec<Effect>) {
        let Some(r) = self.reply.as_mut().filter(|r| r.turn == turn) else {
            return; // a cancelled or unknown turn
        };
        if text.is_empty() {
            return;
        }
        r.streaming = true;
        if r.text.len() < MAX_CONTEXT_CHARS * 4 {
            r.text.push_str(&text);
        }
        fx.push(Effect::Send(ServerFrame::ReplyDelta { turn, text }));
    }

    fn done(&mut self, turn: u64, tokens: Option<u32>, fx: &mut Vec<Effect>) {
        let Some(r) = self.reply.take_if(|r| r.turn == turn) else {
            return; // a cancelled or unknown turn
        };
        self.tokens += tokens.map_or_else(|| estimate_tokens(&r.text), u64::from);
        if !r.text.trim().is_empty() {
            self.context.push(Role::Assistant, &r.text, false);
        }
        fx.push(Effect::Send(ServerFrame::ReplyDone { turn, text: r.text }));
        self.dirty = true;
    }

    /// Starts a reply when one is owed and nothing stands in the way: no reply in flight, the
    /// user not speaking, no utterance still being transcribed.
    fn maybe_generate(&mut self, fx: &mut Vec<Effect>) -> Result<(), VoiceError> {
        let in_speech = self.capture.as_ref().is_some_and(|c| c.vad.in_speech());
        if !self.owed
            || self.reply.is_some()
            || in_speech
            || self.pending.values().any(|p| p.respond)
        {
            return Ok(());
        }
        self.owed = false;
        let left = self.cap.tokens.saturating_sub(self.tokens);
        if left == 0 {
            return Err(VoiceError::TokenQuotaExceeded);
        }
        self.turn += 1;
        self.reply = Some(ReplyInFlight {
            turn: self.turn,
            text: String::new(),
            streaming: false,
        });
        fx.push(Effect::Generate {
            turn: self.turn,
            context: self.context.to_vec(),
            max_tokens: left.min(u64::from(self.limits.max_reply_tokens)) as u32,
        });
        self.dirty = true;
        Ok(())
    }

    /// Charges what is not yet charged, then persists.
    fn persist(&mut self, fx: &mut Vec<Effect>) {
        let usage = self.usage();
        let delta = usage.saturating_sub(self.charged);
        if !delta.is_zero() {
            fx.push(Effect::Charge(delta));
            fx.push(Effect::Send(ServerFrame::Usage {
                audio_ms: usage.audio_ms,
                tokens: usage.tokens,
            }));
            self.charged = usage;
        }
        fx.push(Effect::Persist(self.snapshot()));
        self.dirty = false;
    }

    fn disconnect(&mut self, fx: &mut Vec<Effect>) {
        self.cancel_reply(false, fx);
        self.end_capture(false, fx);
        self.pending.clear();
        self.owed = false;
        self.persist(fx);
        fx.retain(|e| !matches!(e, Effect::Send(_)));
        self.closed = true;
    }
}

// ---------------------------------------------------------------------------------------------
// Test signals
// ---------------------------------------------------------------------------------------------

/// Deterministic test signals: speech-like bursts, tones and white noise, for unit tests,
/// end-to-end tests and benchmarks. Same arguments, same samples, on every platform that
/// rounds `f32` the IEEE way.
pub mod synth {
    use std::f32::consts::TAU;

    /// Peak amplitude of [`speech_like`] bursts (about −12 dBFS peak, −21 dBFS RMS at the
    /// loudest syllable, −35 dBFS in the dips: a normal speaking level into a headset).
    pub const SPEECH_PEAK: f32 = 8000.0;

    /// A tiny xorshift32 generator: deterministic noise without a randomness dependency.
    #[derive(Debug, Clone)]
    pub struct Xorshift32(u32);

    impl Xorshift32 {
        /// A generator from `seed` (0 is replaced, as xorshift would stay at 0).
        pub fn new(seed: u32) -> Self {
            Self(if seed == 0 { 0x9E37_79B9 } else { seed })
        }

        /// The next 32 random bits.
        pub fn next_u32(&mut self) -> u32 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.0 = x;
            x
        }

        /// Uniform in [-1, 1).
        pub fn next_f32(&mut self) -> f32 {
            (self.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        }
    }

    fn samples(ms: u32, sample_rate: u32) -> usize {
        (u64::from(ms) * u64::from(sample_rate) / 1000) as usize
    }

    fn to_i16(x: f32) -> i16 {
        x.round().clamp(-32768.0, 32767.0) as i16
    }

    /// `total_ms` of silence with speech-like bursts at `(start_ms, dur_ms)`: five harmonics
    /// (amplitudes 1/k) of a fundamental between 110 and 200 Hz that glides slightly, a 4 Hz
    /// syllable envelope between 0.2 and 1.0, and 10 ms raised-cosine edges. Bursts past the
    /// end are clipped.
    pub fn speech_like(bursts: &[(u32, u32)], total_ms: u32, sample_rate: u32) -> Vec<i16> {
        let mut out = vec![0i16; samples(total_ms, sample_rate)];
        let rate = sample_rate as f32;
        let norm = SPEECH_PEAK / (1..=5).map(|k| 1.0 / k as f32).sum::<f32>();
        let edge = samples(10, sample_rate).max(1);
        for (i, &(start_ms, dur_ms)) in bursts.iter().enumerate() {
            let start = samples(start_ms, sample_rate);
            let len = samples(dur_ms, sample_rate);
            let f0 = 110.0 + 30.0 * (i % 4) as f32;
            let mut phase = 0.0f32;
            for n in 0..len {
                let Some(slot) = out.get_mut(start + n) else {
                    break;
                };
                let t = n as f32 / rate;
                let f = f0 * (1.0 + 0.05 * (TAU * 0.7 * t).sin());
                phase = (phase + TAU * f / rate) % TAU;
                let voice: f32 = (1..=5).map(|k| (k as f32 * phase).sin() / k as f32).sum();
                let syllable = 0.6 + 0.4 * (TAU * 4.0 * t).cos();
                let from_edge = n.min(len - 1 - n);
                let ramp = if from_edge < edge {
                    0.5 - 0.5 * (std::f32::consts::PI * from_edge as f32 / edge as f32).cos()
                } else {
                    1.0
                };
                *slot = to_i16(norm * voice * syllable * ramp);
            }
        }
        out
    }

    /// A sine tone of `amplitude` (peak) at `freq_hz`, `dur_ms` long.
    pub fn sine(freq_hz: f32, amplitude: f32, dur_ms: u32, sample_rate: u32) -> Vec<i16> {
        (0..samples(dur_ms, sample_rate))
            .map(|n| {
                let phase = (TAU * freq_hz * n as f32 / sample_rate as f32) % TAU;
                to_i16(amplitude * phase.sin())
            })
            .collect()
    }

    /// `ms` of digital silence.
    pub fn silence(ms: u32, sample_rate: u32) -> Vec<i16> {
        vec![0; samples(ms, sample_rate)]
    }

    /// Uniform white noise with RMS level `level_dbfs` (as [`super::level_dbfs`] measures it).
    pub fn white_noise(level_dbfs: f32, dur_ms: u32, sample_rate: u32, seed: u32) -> Vec<i16> {
        let mut rng = Xorshift32::new(seed);
        let rms = 32768.0 * 10f32.powf(level_dbfs / 20.0);
        let peak = rms * 3f32.sqrt();
        (0..samples(dur_ms, sample_rate))
            .map(|_| to_i16(peak * rng.next_f32()))
            .collect()
    }

    /// Sample-wise sum, saturating, as long as the longer input.
    pub fn mix(a: &[i16], b: &[i16]) -> Vec<i16> {
        (0..a.len().max(b.len()))
            .map(|i| {
                let x = a.get(i).copied().unwrap_or(0);
                let y = b.get(i).copied().unwrap_or(0);
                x.saturating_add(y)
            })
            .collect()
    }

    /// Concatenation of pieces.
    pub fn concat(pieces: &[&[i16]]) -> Vec<i16> {
        pieces.concat()
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::synth::*;
    use super::*;
    use serde_json::json;

    /// Documented boundary tolerance of the VAD against the true burst edges.
    const TOLERANCE_MS: i64 = 30;

    fn run_vad(pcm: &[i16], rate: u32, chunk: usize) -> Vec<VadEvent> {
        let mut vad = Vad::new(VadConfig::default(), rate);
        let mut events = Vec::new();
        for c in pcm.chunks(chunk.max(1)) {
            events.extend(vad.push(c));
        }
        events.extend(vad.flush());
        events
    }

    fn segments(events: &[VadEvent]) -> Vec<&Segment> {
        events
            .iter()
            .filter_map(|e| match e {
                VadEvent::SpeechEnd(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn assert_near(actual: u64, expected: u64, what: &str) {
        let err = actual as i64 - expected as i64;
        assert!(
            err.abs() <= TOLERANCE_MS,
            "{what}: {actual} ms vs {expected} ms (error {err} ms)"
        );
    }

    // --- wire format -------------------------------------------------------------------------

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

    // --- edge validation ---------------------------------------------------------------------

    #[test]
    fn audio_frames_are_validated_at_the_edge() {
        let fmt = AudioFormat::pcm16_mono(16000).unwrap();
        let gate = AudioGate::new(fmt, 1_000);
        let code =
            |b: &[u8], g: Option<&AudioGate>| validate_audio_frame(b, g, 1_000).unwrap_err().code();
        assert_eq!(code(&[0; 320], None), "not_started");
        assert_eq!(code(&[], Some(&gate)), "empty_frame");
        assert_eq!(code(&[0; 321], Some(&gate)), "odd_length");
        // 200 ms at 16 kHz is 3200 samples: allowed; one more sample is too long.
        assert_eq!(
            validate_audio_frame(&[0; 6400], Some(&gate), 1_000),
            Ok(3200)
        );
        assert_eq!(
            validate_audio_frame(&[0; 6402], Some(&gate), 1_000),
            Err(VoiceError::FrameTooLong { ms: 201 })
        );
    }

    #[test]
    fn audio_faster_than_real_time_is_refused_beyond_the_tolerance() {
        let fmt = AudioFormat::pcm16_mono(8000).unwrap();
        let mut gate = AudioGate::new(fmt, 10_000);
        let frame = [0u8; 3200]; // 200 ms
                                 // At the start instant, the burst allowance takes exactly 1000 ms.
        for _ in 0..5 {
            assert_eq!(gate.admit(&frame, 10_000), Ok(1600));
        }
        assert_eq!(
            gate.admit(&frame, 10_000),
            Err(VoiceError::TooFast { ahead_ms: 1200 })
        );
        assert_eq!(gate.received_ms(), 1000);
        // Once the wall clock catches up, real-time pace is accepted indefinitely.
        for i in 1..=50u64 {
            assert!(gate.admit(&frame, 10_000 + i * 200).is_ok(), "frame {i}");
        }
        // A clock stepping backwards grants nothing.
        assert_eq!(gate.admit(&frame, 0).unwrap_err().code(), "too_fast");
    }

    #[test]
    fn wav_header_is_correct() {
        let wav = wav_bytes(&[0, 1, -1, i16::MAX], 16000);
        assert_eq!(wav.len(), 44 + 8);
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(wav[4..8].try_into().unwrap()), 36 + 8);
        assert_eq!(&wav[8..16], b"WAVEfmt ");
        assert_eq!(u32::from_le_bytes(wav[16..20].try_into().unwrap()), 16);
        assert_eq!(u16::from_le_bytes([wav[20], wav[21]]), 1);
        assert_eq!(u16::from_le_bytes([wav[22], wav[23]]), 1);
        assert_eq!(u32::from_le_bytes(wav[24..28].try_into().unwrap()), 16000);
        assert_eq!(u32::from_le_bytes(wav[28..32].try_into().unwrap()), 32000);
        assert_eq!(u16::from_le_bytes([wav[32], wav[33]]), 2);
        assert_eq!(u16::from_le_bytes([wav[34], wav[35]]), 16);
        assert_eq!(&wav[36..40], b"data");
        assert_eq!(u32::from_le_bytes(wav[40..44].try_into().unwrap()), 8);
        assert_eq!(pcm16le_samples(&wav[44..]), vec![0, 1, -1, i16::MAX]);
    }

    // --- levels and signals ------------------------------------------------------------------

    #[test]
    fn levels_are_in_dbfs() {
        let full = sine(1000.0, 32767.0, 100, 48000);
        assert!(
            (level_dbfs(&full) + 3.01).abs() < 0.05,
            "{}",
            level_dbfs(&full)
        );
        let tenth = sine(1000.0, 3276.7, 100, 48000);
        assert!((level_dbfs(&tenth) + 23.01).abs() < 0.05);
        assert_eq!(level_dbfs(&silence(20, 16000)), SILENCE_DBFS);
        assert_eq!(level_dbfs(&[]), SILENCE_DBFS);
        let noise = white_noise(-50.0, 1000, 16000, 7);
        assert!(
            (level_dbfs(&noise) + 50.0).abs() < 0.3,
            "{}",
            level_dbfs(&noise)
        );
        assert!((zero_crossing_rate(&noise) - 0.5).abs() < 0.05);
        assert!(zero_crossing_rate(&sine(200.0, 5000.0, 100, 16000)) < 0.03);
    }

    #[test]
    fn synth_is_deterministic_and_speech_level() {
        let a = speech_like(&[(100, 500)], 800, 16000);
        assert_eq!(a, speech_like(&[(100, 500)], 800, 16000));
        assert_eq!(a.len(), 12_800);
        assert!(a[..1600].iter().all(|&s| s == 0));
        assert!(a[9600..].iter().all(|&s| s == 0));
        let level = level_dbfs(&a[1600..9600]);
        assert!((-30.0..=-18.0).contains(&level), "{level}");
        assert!(a.iter().all(|s| s.unsigned_abs() <= SPEECH_PEAK as u16 + 1));
        assert_eq!(
            white_noise(-40.0, 10, 8000, 1),
            white_noise(-40.0, 10, 8000, 1)
        );
        assert_ne!(
            white_noise(-40.0, 10, 8000, 1),
            white_noise(-40.0, 10, 8000, 2)
        );
    }

    // --- VAD ---------------------------------------------------------------------------------

    #[test]
    fn tone_burst_between_silences_is_one_utterance() {
        for rate in ALLOWED_SAMPLE_RATES {
            let pcm = concat(&[
                &silence(500, rate),
                &sine(440.0, 6000.0, 1000, rate),
                &silence(700, rate),
            ]);
            let events = run_vad(&pcm, rate, rate as usize / 50);
            let segs = segments(&events);
            assert_eq!(segs.len(), 1, "{rate} Hz: {events:?}");
            assert_eq!(events[0], VadEvent::SpeechStart { at_ms: 500 });
            assert_near(segs[0].start_ms, 500, "start");
            assert_near(segs[0].end_ms, 1500, "end");
            assert!(!segs[0].forced);
            // 440 Hz at 6000 peak is -17.7 dBFS.
            assert!(
                (segs[0].level_dbfs + 17.7).abs() < 0.2,
                "{}",
                segs[0].level_dbfs
            );
            // PCM: the voiced span plus 100 ms padding either side.
            let expected = (segs[0].duration_ms() + 200) * u64::from(rate) / 1000;
            assert_eq!(segs[0].pcm.len() as u64, expected, "{rate} Hz");
        }
    }

    #[test]
    fn unaligned_boundaries_stay_within_tolerance() {
        let rate = 16000;
        let mut worst = 0i64;
        for offset in [0u32, 3, 7, 11, 13, 17, 19] {
            let start = 400 + offset;
            let pcm = concat(&[
                &silence(start, rate),
                &sine(300.0, 4000.0, 777, rate),
                &silence(600, rate),
            ]);
            let events = run_vad(&pcm, rate, 160);
            let segs = segments(&events);
            assert_eq!(segs.len(), 1, "offset {offset}");
            assert_near(segs[0].start_ms, u64::from(start), "start");
            assert_near(segs[0].end_ms, u64::from(start + 777), "end");
            worst = worst
                .max((segs[0].start_ms as i64 - i64::from(start)).abs())
                .max((segs[0].end_ms as i64 - i64::from(start + 777)).abs());
        }
        // Measured: boundaries land on the 20 ms window grid, so the error is under a window.
        assert!(worst < 20, "worst error {worst} ms");
    }

    #[test]
    fn noise_only_produces_no_utterances() {
        for (level, rate) in [(-55.0, 16000), (-45.0, 8000), (-25.0, 48000)] {
            let pcm = white_noise(level, 10_000, rate, 42);
            let events = run_vad(&pcm, rate, 480);
            assert!(events.is_empty(), "{level} dBFS at {rate}: {events:?}");
        }
        assert!(run_vad(&silence(3000, 16000), 16000, 320).is_empty());
    }

    #[test]
    fn speech_like_bursts_on_a_noise_bed_are_found_at_their_edges() {
        let rate = 16000;
        let bursts = [(600, 1400), (2600, 900), (4100, 2500)];
        let pcm = mix(
            &speech_like(&bursts, 7200, rate),
            &white_noise(-55.0, 7200, rate, 9),
        );
        let events = run_vad(&pcm, rate, 320);
        let segs = segments(&events);
        assert_eq!(segs.len(), 3, "{events:?}");
        for (seg, &(start, dur)) in segs.iter().zip(&bursts) {
            assert_near(seg.start_ms, u64::from(start), "start");
            assert_near(seg.end_ms, u64::from(start + dur), "end");
            assert!(
                (-30.0..=-18.0).contains(&seg.level_dbfs),
                "{}",
                seg.level_dbfs
            );
        }
        let starts = events
            .iter()
            .filter(|e| matches!(e, VadEvent::SpeechStart { .. }))
            .count();
        assert_eq!(starts, 3);
    }

    #[test]
    fn gap_longer_than_hangover_splits_and_shorter_gap_bridges() {
        let rate = 16000;
        let two = speech_like(&[(300, 800), (1100 + 500, 800)], 3200, rate);
        assert_eq!(segments(&run_vad(&two, rate, 320)).len(), 2);
        let one = speech_like(&[(300, 800), (1100 + 150, 800)], 3000, rate);
        let events = run_vad(&one, rate, 320);
        let segs = segments(&events);
        assert_eq!(segs.len(), 1, "{events:?}");
        assert_near(segs[0].start_ms, 300, "start");
        assert_near(segs[0].end_ms, 2050, "end");
    }

    #[test]
    fn short_blips_are_discarded_and_clicks_ignored() {
        let rate = 16000;
        // 120 ms: starts speech (past the 60 ms attack) but is under the 200 ms minimum.
        let blip = concat(&[
            &silence(400, rate),
            &sine(300.0, 5000.0, 120, rate),
            &silence(600, rate),
        ]);
        let events = run_vad(&blip, rate, 320);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(
            events[1],
            VadEvent::Discarded {
                start_ms: 400,
                end_ms: 520
            }
        ));
        // 30 ms: shorter than the attack; nothing at all.
        let click = concat(&[
            &silence(400, rate),
            &sine(300.0, 5000.0, 30, rate),
            &silence(600, rate),
        ]);
        assert!(run_vad(&click, rate, 320).is_empty());
    }

    #[test]
    fn long_speech_is_cut_at_the_maximum() {
        let rate = 8000;
        let pcm = speech_like(&[(200, 20_000)], 20_700, rate);
        let events = run_vad(&pcm, rate, 800);
        let segs = segments(&events);
        assert_eq!(segs.len(), 2, "{events:?}");
        assert!(segs[0].forced);
        assert_eq!((segs[0].start_ms, segs[0].end_ms), (200, 15_200));
        assert!(segs[0].pcm.len() <= (15_000 + 200) * 8);
        assert!(!segs[1].forced);
        assert_near(segs[1].start_ms, 15_200, "restart");
        assert_near(segs[1].end_ms, 20_200, "end");
    }

    #[test]
    fn the_noise_floor_adapts_to_a_steady_background() {
        let rate = 16000;
        // A steady hum loud enough to pass the absolute threshold is learnt as the floor...
        let hum = sine(50.0, 250.0, 6000, rate); // mains hum, about -46.4 dBFS
        assert!(run_vad(&hum, rate, 320).is_empty());
        // ...and speech peaking 25 dB over it is still found.
        let speech = speech_like(&[(1500, 1000), (3500, 1200)], 6000, rate);
        let events = run_vad(&mix(&hum, &speech), rate, 320);
        let segs = segments(&events);
        assert_eq!(segs.len(), 2, "{events:?}");
        assert_near(segs[0].start_ms, 1500, "start");
        assert_near(segs[1].end_ms, 4700, "end");
        // A step in the background costs at most one (forced) false utterance.
        let step = concat(&[&silence(1000, rate), &sine(120.0, 1500.0, 40_000, rate)]);
        let mut vad = Vad::new(VadConfig::default(), rate);
        let events = vad.push(&step);
        assert!(segments(&events).len() <= 1, "{events:?}");
        assert!(!vad.in_speech());
    }

    #[test]
    fn events_do_not_depend_on_chunking() {
        let rate = 24000;
        let pcm = mix(
            &speech_like(&[(500, 700), (1700, 300), (2600, 1100)], 4200, rate),
            &white_noise(-60.0, 4200, rate, 3),
        );
        let reference = run_vad(&pcm, rate, 480);
        assert_eq!(segments(&reference).len(), 3);
        for chunk in [1, 7, 100, 479, 481, 2400, 4800] {
            assert_eq!(run_vad(&pcm, rate, chunk), reference, "chunk {chunk}");
        }
    }

    #[test]
    fn flush_ends_speech_in_progress() {
        let rate = 16000;
        let pcm = concat(&[&silence(300, rate), &sine(300.0, 5000.0, 600, rate)]);
        let mut vad = Vad::new(VadConfig::default(), rate);
        assert_eq!(vad.push(&pcm), vec![VadEvent::SpeechStart { at_ms: 300 }]);
        assert!(vad.in_speech());
        let events = vad.flush();
        let segs = segments(&events);
        assert_eq!(segs.len(), 1);
        assert_eq!((segs[0].start_ms, segs[0].end_ms), (300, 900));
        assert!(!vad.in_speech());
    }

    #[test]
    fn invalid_vad_settings_fall_back_to_defaults() {
        let bad = VadConfig {
            window_ms: 5,
            ..VadConfig::default()
        };
        assert!(bad.validate().is_err());
        assert_eq!(*Vad::new(bad, 16000).config(), VadConfig::default());
        assert!(VadConfig {
            attack_windows: 0,
            ..VadConfig::default()
        }
        .validate()
        .is_err());
        assert!(VadConfig {
            min_utterance_ms: 20_000,
            ..VadConfig::default()
        }
        .validate()
        .is_err());
    }

    // --- context and usage -------------------------------------------------------------------

    #[test]
    fn context_is_bounded_oldest_first_and_serializable() {
        let mut c = Context::default();
        for i in 0..50 {
            c.push(Role::User, &format!("turn {i}"), false);
        }
        assert_eq!(c.len(), MAX_CONTEXT_TURNS);
        assert_eq!(c.turns().next().unwrap().text, "turn 30");
        assert_eq!(c.turns().last().unwrap().text, "turn 49");
        for _ in 0..3 {
            c.push(Role::Assistant, &"x".repeat(3000), false);
        }
        assert!(c.chars() <= MAX_CONTEXT_CHARS);
        assert_eq!(c.len(), 2);
        c.push(Role::User, &"y".repeat(MAX_CONTEXT_CHARS + 50), false);
        assert_eq!(c.len(), 1);
        assert_eq!(c.chars(), MAX_CONTEXT_CHARS);
        c.push(Role::Assistant, "ok", true);
        let json = serde_json::to_string(&c).unwrap();
        let back: Context = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        assert!(json.contains(r#""role":"assistant","text":"ok","interrupted":true"#));
    }

    #[test]
    fn user_usage_rolls_over_daily() {
        let limits = VoiceLimits::default();
        let mut u = UserUsage::default();
        let day3 = 3 * DAY_MS + 5;
        u.charge(
            Usage {
                audio_ms: 60_000,
                tokens: 500,
            },
            day3,
        );
        u.charge(
            Usage {
                audio_ms: 1_000,
                tokens: 0,
            },
            day3 + 10,
        );
        assert_eq!(u.day, 3);
        assert_eq!(
            u.remaining(&limits, day3 + 20),
            Usage {
                audio_ms: limits.user_daily_audio_ms - 61_000,
                tokens: limits.user_daily_tokens - 500
            }
        );
        let day4 = 4 * DAY_MS;
        assert_eq!(
            u.remaining(&limits, day4),
            Usage {
                audio_ms: limits.user_daily_audio_ms,
                tokens: limits.user_daily_tokens
            }
        );
        u.charge(
            Usage {
                audio_ms: 5,
                tokens: 5,
            },
            day4,
        );
        assert_eq!((u.day, u.used.audio_ms), (4, 5));
        assert_eq!(estimate_tokens("abcdefghi"), 3);
        assert_eq!(estimate_tokens(""), 0);
    }

    // --- the turn machine --------------------------------------------------------------------

    const RATE: u32 = 16000;
    const T0: u64 = 1_700_000_000_000;

    fn start_frame(rate: u32) -> String {
        format!(
            r#"{{"type":"start","format":{{"encoding":"pcm16le","sample_rate":{rate},"channels":1}}}}"#
        )
    }

    fn bytes(pcm: &[i16]) -> Vec<u8> {
        pcm.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    /// Streams `pcm` in 20 ms frames at real-time pace from audio time `from_ms` (the session
    /// started at `T0`); returns all effects.
    fn stream(s: &mut VoiceSession, pcm: &[i16], from_ms: u64) -> Vec<Effect> {
        let per = RATE as usize / 50;
        let mut fx = Vec::new();
        for (i, c) in pcm.chunks(per).enumerate() {
            let now = T0 + from_ms + (i as u64 + 1) * 20;
            fx.extend(s.apply(Input::Audio(&bytes(c)), now));
        }
        fx
    }

    fn sent(fx: &[Effect]) -> Vec<&ServerFrame> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Send(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    fn states(fx: &[Effect]) -> Vec<TurnState> {
        sent(fx)
            .into_iter()
            .filter_map(|f| match f {
                ServerFrame::State { state } => Some(*state),
                _ => None,
            })
            .collect()
    }

    fn codes(fx: &[Effect]) -> Vec<String> {
        sent(fx)
            .into_iter()
            .filter_map(|f| match f {
                ServerFrame::Error { code, .. } => Some(code.clone()),
                _ => None,
            })
            .collect()
    }

    fn started() -> VoiceSession {
        let mut s = VoiceSession::new(VoiceLimits::default(), Usage::UNLIMITED);
        let fx = s.apply(Input::Control(&start_frame(RATE)), T0);
        assert_eq!(
            sent(&fx),
            vec![
                &ServerFrame::Started {
                    format: AudioFormat::pcm16_mono(RATE).unwrap()
                },
                &ServerFrame::State {
                    state: TurnState::Listening
                }
            ]
        );
        s
    }

    /// Speaks one utterance (500–1500 ms of a 2000 ms stretch) and returns the effects.
    fn speak(s: &mut VoiceSession, from_ms: u64) -> Vec<Effect> {
        stream(s, &speech_like(&[(500, 1000)], 2000, RATE), from_ms)
    }

    fn transcribe_id(fx: &[Effect]) -> u32 {
        fx.iter()
            .find_map(|e| match e {
                Effect::Transcribe { utterance, wav } => {
                    assert_eq!(&wav[..4], b"RIFF");
                    Some(*utterance)
                }
                _ => None,
            })
            .expect("a Transcribe effect")
    }

    fn generated(fx: &[Effect]) -> Option<(u64, Vec<ContextTurn>, u32)> {
        fx.iter().find_map(|e| match e {
            Effect::Generate {
                turn,
                context,
                max_tokens,
            } => Some((*turn, context.clone(), *max_tokens)),
            _ => None,
        })
    }

    #[test]
    fn a_full_voice_turn() {
        let mut s = started();
        let fx = speak(&mut s, 0);
        let frames = sent(&fx);
        assert!(frames.contains(&&ServerFrame::SpeechStart { at_ms: 500 }));
        assert!(frames.iter().any(|f| matches!(
            f,
            ServerFrame::SpeechEnd { at_ms, duration_ms }
                if at_ms.abs_diff(1500) <= 30 && duration_ms.abs_diff(1000) <= 30
        )));
        let id = transcribe_id(&fx);
        assert_eq!(id, 0);
        assert_eq!(states(&fx), vec![TurnState::Thinking]);
        assert!(fx.iter().any(|e| matches!(e, Effect::Persist(_))));
        assert_eq!(s.state(), TurnState::Thinking);

        let fx = s.apply(
            Input::Transcribed {
                utterance: id,
                transcript: Some(" I want to sell my flat ".into()),
            },
            T0 + 2500,
        );
        let frames = sent(&fx);
        assert!(matches!(
            frames[0],
            ServerFrame::Utterance { id: 0, transcript: Some(t), transcribed: true, level_dbfs, .. }
                if t == "I want to sell my flat" && (-30.0..=-18.0).contains(level_dbfs)
        ));
        let (turn, context, max_tokens) = generated(&fx).expect("generation starts");
        assert_eq!(turn, 1);
        assert_eq!(max_tokens, 400);
        assert_eq!(context.len(), 1);
        assert_eq!(context[0].role, Role::User);
        assert_eq!(s.reply_in_flight(), Some(1));

        let fx = s.apply(
            Input::ReplyDelta {
                turn: 1,
                text: "Happy to help. ".into(),
            },
            T0 + 2600,
        );
        assert_eq!(states(&fx), vec![TurnState::Speaking]);
        let fx = s.apply(
            Input::ReplyDelta {
                turn: 1,
                text: "When would you like a valuation?".into(),
            },
            T0 + 2650,
        );
        assert!(states(&fx).is_empty());
        let fx = s.apply(
            Input::ReplyDone {
                turn: 1,
                tokens: Some(12),
            },
            T0 + 2700,
        );
        let frames = sent(&fx);
        assert_eq!(
            frames[0],
            &ServerFrame::ReplyDone {
                turn: 1,
                text: "Happy to help. When would you like a valuation?".into()
            }
        );
        assert_eq!(states(&fx), vec![TurnState::Listening]);
        assert!(fx.contains(&Effect::Charge(Usage {
            audio_ms: 0,
            tokens: 12
        })));
        let snap = fx
            .iter()
            .find_map(|e| match e {
                Effect::Persist(p) => Some(p.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(snap.context.len(), 2);
        assert_eq!(snap.turn, 1);
        assert_eq!(snap.usage, s.usage());
        assert_eq!(s.usage().tokens, 12);
        assert_eq!(s.usage().audio_ms, 2000);
    }

    #[test]
    fn barge_in_cancels_the_reply_and_drops_its_late_deltas() {
        let mut s = started();
        let id = transcribe_id(&speak(&mut s, 0));
        s.apply(
            Input::Transcribed {
                utterance: id,
                transcript: Some("tell me about fees".into()),
            },
            T0 + 2100,
        );
        s.apply(
            Input::ReplyDelta {
                turn: 1,
                text: "Our fee is".into(),
            },
            T0 + 2200,
        );
        assert_eq!(s.state(), TurnState::Speaking);
        // The user talks over the agent.
        let fx = speak(&mut s, 2000);
        let frames = sent(&fx);
        let start = frames
            .iter()
            .position(|f| matches!(f, ServerFrame::SpeechStart { .. }))
            .unwrap();
        assert_eq!(frames[start + 1], &ServerFrame::ReplyCancelled { turn: 1 });
        assert!(fx.contains(&Effect::Cancel { turn: 1 }));
        assert_eq!(states(&fx)[0], TurnState::Listening);
        // A delta of the cancelled turn arriving late changes nothing.
        assert!(s
            .apply(
                Input::ReplyDelta {
                    turn: 1,
                    text: " 1.2%".into()
                },
                T0 + 4100
            )
            .is_empty());
        assert!(s
            .apply(
                Input::ReplyDone {
                    turn: 1,
                    tokens: None
                },
                T0 + 4100
            )
            .is_empty());
        // The interrupted partial reply is remembered as such; the next turn has a new id.
        let id2 = transcribe_id(&fx);
        let fx = s.apply(
            Input::Transcribed {
                utterance: id2,
                transcript: Some("sorry, I meant viewings".into()),
            },
            T0 + 4200,
        );
        let (turn, context, _) = generated(&fx).unwrap();
        assert_eq!(turn, 2);
        let texts: Vec<_> = context.iter().map(|t| (t.role, t.interrupted)).collect();
        assert_eq!(
            texts,
            vec![
                (Role::User, false),
                (Role::Assistant, true),
                (Role::User, false)
            ]
        );
        // The cut-off reply was charged by estimate.
        assert_eq!(s.usage().tokens, estimate_tokens("Our fee is"));
    }

    #[test]
    fn interrupt_cancels_while_thinking_and_is_idempotent() {
        let mut s = started();
        s.apply(
            Input::Control(r#"{"type":"text","text":"what are your opening hours?"}"#),
            T0 + 10,
        );
        assert_eq!(s.reply_in_flight(), Some(1));
        assert_eq!(s.state(), TurnState::Thinking);
        let fx = s.apply(Input::Control(r#"{"type":"interrupt"}"#), T0 + 20);
        assert_eq!(
            sent(&fx)[..2],
            [
                &ServerFrame::ReplyCancelled { turn: 1 },
                &ServerFrame::State {
                    state: TurnState::Listening
                }
            ]
        );
        assert!(fx.contains(&Effect::Cancel { turn: 1 }));
        let fx = s.apply(Input::Control(r#"{"type":"interrupt"}"#), T0 + 30);
        assert!(sent(&fx).is_empty(), "{fx:?}");
        // An interrupt also stops an answer that was about to start.
        let id = transcribe_id(&speak(&mut s, 100));
        s.apply(Input::Control(r#"{"type":"interrupt"}"#), T0 + 2200);
        let fx = s.apply(
            Input::Transcribed {
                utterance: id,
                transcript: Some("never mind".into()),
            },
            T0 + 2300,
        );
        assert!(generated(&fx).is_none());
        assert_eq!(s.state(), TurnState::Listening);
    }

    #[test]
    fn text_turns_work_without_audio() {
        let mut s = VoiceSession::new(VoiceLimits::default(), Usage::UNLIMITED);
        assert_eq!(s.state(), TurnState::Idle);
        let fx = s.apply(Input::Control(r#"{"type":"text","text":"  hi  "}"#), T0);
        let (turn, context, _) = generated(&fx).unwrap();
        assert_eq!((turn, context[0].text.as_str()), (1, "hi"));
        assert_eq!(states(&fx), vec![TurnState::Thinking]);
        s.apply(
            Input::ReplyDelta {
                turn: 1,
                text: "Hello!".into(),
            },
            T0,
        );
        let fx = s.apply(
            Input::ReplyDone {
                turn: 1,
                tokens: None,
            },
            T0,
        );
        assert_eq!(states(&fx), vec![TurnState::Idle]);
        assert_eq!(s.usage().tokens, estimate_tokens("Hello!"));
        // A second typed turn while a reply streams replaces it.
        s.apply(Input::Control(r#"{"type":"text","text":"one"}"#), T0);
        s.apply(
            Input::ReplyDelta {
                turn: 2,
                text: "Sure".into(),
            },
            T0,
        );
        let fx = s.apply(Input::Control(r#"{"type":"text","text":"two"}"#), T0);
        assert!(sent(&fx).contains(&&ServerFrame::ReplyCancelled { turn: 2 }));
        assert_eq!(generated(&fx).unwrap().0, 3);
    }

    #[test]
    fn without_a_transcriber_nothing_is_invented() {
        let mut s = started();
        let id = transcribe_id(&speak(&mut s, 0));
        let fx = s.apply(
            Input::Transcribed {
                utterance: id,
                transcript: None,
            },
            T0 + 2100,
        );
        assert!(matches!(
            sent(&fx)[0],
            ServerFrame::Utterance {
                transcript: None,
                transcribed: false,
                ..
            }
        ));
        assert!(generated(&fx).is_none());
        assert_eq!(states(&fx), vec![TurnState::Listening]);
        assert!(s.context().is_empty());
        // An empty transcript likewise starts no turn, but is reported as transcribed.
        let id = transcribe_id(&speak(&mut s, 2000));
        let fx = s.apply(
            Input::Transcribed {
                utterance: id,
                transcript: Some("  ".into()),
            },
            T0 + 4100,
        );
        assert!(matches!(
            sent(&fx)[0],
            ServerFrame::Utterance {
                transcript: None,
                transcribed: true,
                ..
            }
        ));
        assert!(generated(&fx).is_none());
        // Unknown ids are ignored.
        assert!(s
            .apply(
                Input::Transcribed {
                    utterance: 99,
                    transcript: Some("x".into())
                },
                T0
            )
            .is_empty());
    }

    #[test]
    fn a_talker_who_continues_is_answered_once_at_the_end() {
        let mut s = started();
        // Two utterances back to back: the first's transcript arrives while the second is
        // being spoken, so no reply starts until the second is transcribed too.
        let pcm = speech_like(&[(300, 700), (1500, 800)], 2800, RATE);
        let mut fx = stream(&mut s, &pcm[..RATE as usize * 1700 / 1000], 0);
        let first = transcribe_id(&fx);
        let t = s.apply(
            Input::Transcribed {
                utterance: first,
                transcript: Some("I want to sell".into()),
            },
            T0 + 1700,
        );
        assert!(generated(&t).is_none());
        fx = stream(&mut s, &pcm[RATE as usize * 1700 / 1000..], 1700);
        let second = transcribe_id(&fx);
        assert_eq!(second, first + 1);
        let t = s.apply(
            Input::Transcribed {
                utterance: second,
                transcript: Some("my flat in Leeds".into()),
            },
            T0 + 2900,
        );
        let (turn, context, _) = generated(&t).unwrap();
        assert_eq!(turn, 1);
        assert_eq!(context.len(), 2);
    }

    #[test]
    fn stop_finishes_the_utterance_in_progress() {
        let mut s = started();
        let pcm = concat(&[&silence(300, RATE), &sine(300.0, 5000.0, 700, RATE)]);
        let fx = stream(&mut s, &pcm, 0);
        assert!(transcribe_id_opt(&fx).is_none());
        let fx = s.apply(Input::Control(r#"{"type":"stop"}"#), T0 + 1100);
        assert_eq!(transcribe_id(&fx), 0);
        assert!(sent(&fx).contains(&&ServerFrame::SpeechEnd {
            at_ms: 1000,
            duration_ms: 700
        }));
        assert!(fx.contains(&Effect::Charge(Usage {
            audio_ms: 1000,
            tokens: 0
        })));
        assert_eq!(states(&fx), vec![TurnState::Thinking]);
        // Audio after stop is refused; stop again is harmless; start again works.
        let fx = s.apply(Input::Audio(&[0; 320]), T0 + 1200);
        assert_eq!(codes(&fx), vec!["not_started"]);
        assert!(codes(&s.apply(Input::Control(r#"{"type":"stop"}"#), T0 + 1200)).is_empty());
        let fx = s.apply(Input::Control(&start_frame(8000)), T0 + 1300);
        assert!(codes(&fx).is_empty());
        let fx = s.apply(Input::Control(&start_frame(8000)), T0 + 1300);
        assert_eq!(codes(&fx), vec!["already_started"]);
    }

    fn transcribe_id_opt(fx: &[Effect]) -> Option<u32> {
        fx.iter().find_map(|e| match e {
            Effect::Transcribe { utterance, .. } => Some(*utterance),
            _ => None,
        })
    }

    #[test]
    fn sustained_bad_frames_close_with_a_terminal_code() {
        let mut s = started();
        let mut closed_at = None;
        for i in 0..30 {
            let fx = s.apply(Input::Audio(&[1, 2, 3]), T0 + i);
            assert!(codes(&fx) == vec!["odd_length"] || fx.is_empty());
            if let Some(Effect::Close { code, .. }) = fx.last() {
                assert_eq!(*code, close::POLICY_VIOLATION);
                assert!(!close::should_reconnect(*code));
                closed_at = Some(i);
                break;
            }
        }
        assert_eq!(closed_at, Some(19));
        assert!(s.is_closed());
        assert!(s.apply(Input::Audio(&[0; 320]), T0 + 100).is_empty());
    }

    #[test]
    fn occasional_bad_frames_among_good_ones_are_tolerated() {
        let mut s = started();
        let good = bytes(&silence(20, RATE));
        for i in 0..200u64 {
            let now = T0 + (i + 1) * 20;
            let fx = s.apply(Input::Audio(&good), now);
            assert!(codes(&fx).is_empty());
            if i % 3 == 0 {
                let fx = s.apply(Input::Audio(&[]), now);
                assert_eq!(codes(&fx), vec!["empty_frame"]);
            }
        }
        assert!(!s.is_closed());
    }

    #[test]
    fn control_errors_are_refused_with_codes() {
        let mut s = VoiceSession::new(VoiceLimits::default(), Usage::UNLIMITED);
        assert_eq!(
            codes(&s.apply(Input::Audio(&[0; 320]), T0)),
            vec!["not_started"]
        );
        assert_eq!(
            codes(&s.apply(Input::Control(&start_frame(44100)), T0)),
            vec!["unsupported_format"]
        );
        assert_eq!(
            codes(&s.apply(Input::Control("nope"), T0)),
            vec!["malformed"]
        );
        assert_eq!(s.state(), TurnState::Idle);
    }

    #[test]
    fn another_sessions_consumption_lowers_the_caps() {
        let limits = VoiceLimits {
            session_audio_ms: 10_000,
            max_strikes: 1000,
            ..VoiceLimits::default()
        };
        let mut s = VoiceSession::new(
            limits,
            Usage {
                audio_ms: 5_000,
                tokens: 1_000,
            },
        );
        s.apply(Input::Control(&start_frame(RATE)), T0);
        let fx = stream(&mut s, &silence(1000, RATE), 0);
        assert!(codes(&fx).is_empty());
        // This session charged 1 s; meanwhile another session of the user used all but 500 ms.
        s.apply(Input::Control(r#"{"type":"stop"}"#), T0 + 1000);
        s.set_user_remaining(Usage {
            audio_ms: 500,
            tokens: 1_000,
        });
        assert_eq!(s.caps().audio_ms, 1_500);
        let fx = s.apply(Input::Control(&start_frame(RATE)), T0 + 1000);
        assert!(codes(&fx).is_empty(), "{fx:?}");
        let fx = stream(&mut s, &silence(1000, RATE), 1000);
        assert!(codes(&fx).iter().all(|c| c == "audio_quota_exceeded"));
        assert_eq!(codes(&fx).len(), 25, "frames past 1.5 s in all are refused");
        // Nothing left for the user: a new start is refused at once.
        s.set_user_remaining(Usage::default());
        let fx = s.apply(Input::Control(&start_frame(RATE)), T0 + 3000);
        assert_eq!(codes(&fx), vec!["audio_quota_exceeded"]);
        // The session cap still bounds a generous user remainder.
        s.set_user_remaining(Usage::UNLIMITED);
        assert_eq!(s.caps().audio_ms, 10_000);
    }

    #[test]
    fn audio_quota_is_enforced_and_charged() {
        let limits = VoiceLimits {
            session_audio_ms: 10_000,
            max_strikes: 1000,
            ..VoiceLimits::default()
        };
        // The user has less left today than the session cap: the user's remainder wins.
        let mut s = VoiceSession::new(
            limits,
            Usage {
                audio_ms: 1_500,
                tokens: 1_000,
            },
        );
        assert_eq!(s.caps().audio_ms, 1_500);
        s.apply(Input::Control(&start_frame(RATE)), T0);
        let fx = stream(&mut s, &silence(2000, RATE), 0);
        // Every frame past 1500 ms is refused (and counts as a strike).
        assert_eq!(codes(&fx).len(), 25);
        assert!(codes(&fx).iter().all(|c| c == "audio_quota_exceeded"));
        let charged: u64 = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Charge(u) => Some(u.audio_ms),
                _ => None,
            })
            .sum();
        assert_eq!(charged, 1_500);
        assert_eq!(states(&fx), vec![TurnState::Idle]);
        let fx = s.apply(Input::Control(&start_frame(RATE)), T0 + 3000);
        assert_eq!(codes(&fx), vec!["audio_quota_exceeded"]);
        // Text turns still work while tokens remain.
        let fx = s.apply(Input::Control(r#"{"type":"text","text":"hi"}"#), T0 + 3000);
        assert!(generated(&fx).is_some());
    }

    #[test]
    fn token_quota_is_enforced() {
        let limits = VoiceLimits {
            session_tokens: 50,
            max_reply_tokens: 40,
            ..VoiceLimits::default()
        };
        let mut s = VoiceSession::new(limits, Usage::UNLIMITED);
        let fx = s.apply(Input::Control(r#"{"type":"text","text":"one"}"#), T0);
        assert_eq!(generated(&fx).unwrap().2, 40);
        s.apply(
            Input::ReplyDone {
                turn: 1,
                tokens: Some(40),
            },
            T0,
        );
        let fx = s.apply(Input::Control(r#"{"type":"text","text":"two"}"#), T0);
        assert_eq!(generated(&fx).unwrap().2, 10, "capped by what is left");
        s.apply(
            Input::ReplyDone {
                turn: 2,
                tokens: Some(10),
            },
            T0,
        );
        let fx = s.apply(Input::Control(r#"{"type":"text","text":"three"}"#), T0);
        assert!(generated(&fx).is_none());
        assert_eq!(codes(&fx), vec!["token_quota_exceeded"]);
        assert_eq!(s.state(), TurnState::Idle);
    }

    #[test]
    fn provider_failure_is_reported_and_the_session_carries_on() {
        let mut s = started();
        s.apply(Input::Control(r#"{"type":"text","text":"hello"}"#), T0);
        let fx = s.apply(
            Input::ReplyFailed {
                turn: 1,
                message: "upstream timed out".into(),
            },
            T0 + 5,
        );
        assert_eq!(codes(&fx), vec!["generation_failed"]);
        assert_eq!(states(&fx), vec![TurnState::Listening]);
        let fx = s.apply(Input::Control(r#"{"type":"text","text":"again"}"#), T0 + 10);
        assert_eq!(generated(&fx).unwrap().0, 2);
    }

    #[test]
    fn snapshot_restores_the_conversation() {
        let mut s = started();
        s.apply(Input::Control(r#"{"type":"text","text":"hello"}"#), T0);
        s.apply(
            Input::ReplyDelta {
                turn: 1,
                text: "Hi there".into(),
            },
            T0,
        );
        let fx = s.apply(Input::Disconnected, T0 + 50);
        assert!(fx.iter().all(|e| !matches!(e, Effect::Send(_))));
        assert!(fx.contains(&Effect::Cancel { turn: 1 }));
        let snap = match fx.last() {
            Some(Effect::Persist(p)) => p.clone(),
            other => panic!("{other:?}"),
        };
        let json = serde_json::to_string(&snap).unwrap();
        let snap: Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(snap.turn, 1);
        assert_eq!(snap.context.len(), 2);
        let mut s = VoiceSession::restore(snap.clone(), VoiceLimits::default(), Usage::UNLIMITED);
        assert_eq!(s.usage(), snap.usage);
        let fx = s.apply(
            Input::Control(r#"{"type":"text","text":"still there?"}"#),
            T0 + 60,
        );
        let (turn, context, _) = generated(&fx).unwrap();
        assert_eq!(turn, 2);
        assert_eq!(context.len(), 3);
        // Nothing is charged twice after a restore.
        let charge: Vec<_> = fx
            .iter()
            .filter(|e| matches!(e, Effect::Charge(_)))
            .collect();
        assert!(charge.is_empty(), "{charge:?}");
    }

    #[test]
    fn long_streams_charge_periodically() {
        let mut s = started();
        let fx = stream(&mut s, &silence(25_000, RATE), 0);
        let charges: Vec<u64> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Charge(u) => Some(u.audio_ms),
                _ => None,
            })
            .collect();
        assert_eq!(charges, vec![10_000, 10_000]);
    }
}
