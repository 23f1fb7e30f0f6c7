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
//! - Wire format (`wire.rs`): [`ControlFrame`] (client → server, JSON text frames),
//!   [`ServerFrame`] (server → client), [`VoiceError`] with stable codes. Audio is binary
//!   frames of [`AudioFormat`] (16-bit little-endian mono PCM at one of
//!   [`ALLOWED_SAMPLE_RATES`]); [`format_change`] decides the format the glue remembers across
//!   evictions.
//! - Edge checks (`audio.rs`): [`validate_audio_frame`] and [`AudioGate`] refuse audio before
//!   `start`, odd byte counts, empty or over-long frames and audio faster than real time;
//!   [`level_dbfs`], [`pcm16le_samples`] and [`wav_bytes`] (PCM for transcription endpoints).
//! - Voice activity detection (`vad.rs`): [`Vad`] (energy over an adaptive noise floor, a
//!   zero-crossing guard against broadband noise, attack, hangover, minimum and maximum
//!   utterance length) yielding [`VadEvent`]s with each utterance's PCM.
//! - Conversation: [`Context`] (`context.rs`, bounded, serializable), [`Usage`] /
//!   [`UserUsage`] / [`VoiceLimits`] (`usage.rs`, cost caps), and the turn machine
//!   [`VoiceSession`] (`session.rs`) with what goes in and out of it: [`Input`], [`Effect`],
//!   [`Snapshot`] (`io.rs`).
//! - Speech out (`speech.rs`): [`Chunker`] cuts a streaming reply into sentences to
//!   synthesize, [`parse_wav`] / [`resample`] bring a speech provider's WAV to the session's
//!   rate, [`speech_frame`] is the binary frame a chunk travels in; [`SpeechTurn`]
//!   (`speaking.rs`) keeps one turn's chunks in order.
//! - Latency (`latency.rs`): [`TurnClock`] / [`TurnTimings`], each turn's stages.
//! - [`synth`] (`synth.rs`): deterministic test signals (speech-like bursts, tones, white
//!   noise) shared by unit tests, end-to-end tests and benchmarks.
//!
//! # Times
//!
//! `speech_start.at_ms`, `speech_end.at_ms` and every VAD time are **audio time**: milliseconds
//! of audio received since `start`, not wall-clock time. They are exact functions of the
//! samples, so the same audio always gives the same boundaries. Wall-clock `now_ms` is used only
//! to hold the client to real-time pace.

// Each concept is one file; the items are re-exported here so `sessions::voice::X` is the
// one path callers use. Files import siblings directly, never through these re-exports.
mod audio;
mod context;
mod io;
mod latency;
mod session;
mod speaking;
mod speech;
pub mod synth;
mod usage;
mod vad;
pub(crate) mod wire;

pub use audio::*;
pub use context::*;
pub use io::*;
pub use latency::*;
pub use session::*;
pub use speaking::*;
pub use speech::*;
pub use usage::*;
pub use vad::*;
pub use wire::*;
