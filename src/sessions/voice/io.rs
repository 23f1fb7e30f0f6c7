//! What goes in and out of the voice turn machine ([`super::VoiceSession`]): the [`Input`]s it
//! applies, the [`Effect`]s the object glue performs, and the [`Snapshot`] it persists.

use serde::{Deserialize, Serialize};

use super::context::{Context, ContextTurn};
use super::usage::Usage;
use super::wire::ServerFrame;

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
    /// The speech provider answered chunk `seq` of `turn` ([`Effect::Synthesize`]): its
    /// samples at the rate asked for, or why it failed, after `synth_ms`.
    Synthesized {
        /// The turn.
        turn: u64,
        /// The chunk.
        seq: u32,
        /// 16-bit mono samples, or a message safe to show the user.
        result: Result<Vec<i16>, String>,
        /// Time the provider took, ms.
        synth_ms: u64,
    },
    /// The turn model judged whether utterance `utterance` ended the user's turn
    /// ([`Effect::DetectTurn`]): `None` when it could not say (failed, timed out), and the VAD
    /// decides.
    TurnDetected {
        /// The utterance.
        utterance: u32,
        /// Whether the turn is complete.
        complete: Option<bool>,
        /// The model's probability that it is, if it gave one.
        probability: Option<f32>,
    },
    /// The time asked for with [`Effect::WakeAt`] has come.
    Tick,
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
        /// The utterance as a WAV file ([`super::wav_bytes`]).
        wav: Vec<u8>,
    },
    /// Generate a reply to the context (with [`super::SYSTEM_PROMPT`] in front), streaming it back as
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
    /// Synthesize a sentence of the reply of `turn` into 16-bit mono PCM at `sample_rate`,
    /// answering with [`Input::Synthesized`]; a turn's chunks one after another, in `seq` order.
    Synthesize {
        /// The turn.
        turn: u64,
        /// The chunk's number within the turn.
        seq: u32,
        /// What to say.
        text: String,
        /// The rate the samples must be in.
        sample_rate: u32,
    },
    /// Drop this turn's speech still to be made; late answers are ignored anyway.
    CancelSpeech {
        /// The cancelled turn.
        turn: u64,
    },
    /// Send a binary frame (a chunk of speech, [`super::speech_frame`]).
    SendBinary(Vec<u8>),
    /// Ask the turn model whether this utterance ended the user's turn, answering with
    /// [`Input::TurnDetected`] (within a timeout: `complete: None` when it cannot say).
    DetectTurn {
        /// The utterance.
        utterance: u32,
        /// Its audio, as sent for transcription.
        wav: Vec<u8>,
    },
    /// Apply [`Input::Tick`] at this wall-clock time (ms).
    WakeAt(u64),
    /// Store this snapshot (it replaces the previous one).
    Persist(Snapshot),
    /// Add this consumption to the user's totals
    /// ([`UserUsage::charge`](super::usage::UserUsage::charge)).
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
