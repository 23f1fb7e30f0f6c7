//! The voice turn machine: [`VoiceSession`] applies each [`Input`] (a socket message, a provider
//! result, a tick) and returns the [`Effect`]s the object glue performs; [`Snapshot`] is what it
//! persists.

use std::collections::BTreeMap;

use crate::rooms::protocol::close;

use super::audio::{pcm16le_samples, validate_audio_frame, wav_bytes, AudioGate};
use super::context::{truncate_chars, Context, Role, MAX_CONTEXT_CHARS};
use super::io::{Effect, Input, Snapshot};
use super::latency::{TurnClock, TurnOrigin};
use super::speaking::SpeechTurn;

mod speech_out;
use super::usage::{estimate_tokens, Usage, VoiceLimits};
use super::vad::{Vad, VadEvent};
use super::wire::{
    decode_control, Allowance, ControlFrame, ServerFrame, TurnState, VoiceError, MAX_TEXT_CHARS,
};

/// Most utterances awaiting a transcript at once; beyond it the oldest is forgotten (its late
/// transcript is ignored), which bounds memory when the provider is slower than the talker.
pub const MAX_PENDING_TRANSCRIPTIONS: usize = 4;
/// A reply may run `1/REPLY_TOKEN_SLACK` past its token cap by the estimate (characters / 4)
/// before it is cut: the estimate is not the provider's tokenizer.
pub const REPLY_TOKEN_SLACK: u64 = 4;
/// Sample rate of the agent's speech before any `start` declared one, Hz (after one, speech
/// comes at the rate of the last `start`).
pub const DEFAULT_SPEECH_RATE: u32 = 16_000;
/// Uncharged audio after which the session charges and persists even mid-stream, in ms, so a
/// crash loses at most this much accounting.
pub const CHARGE_INTERVAL_MS: u64 = 10_000;
/// Suggested system prompt for the generation provider; the glue prepends it to the
/// [`Effect::Generate`] context.
pub const SYSTEM_PROMPT: &str = "You are the voice assistant of Kestrel & Lowe, an estate \
agency. Your replies are spoken aloud: answer in one to three short sentences of plain speech, \
with no lists, markdown or links. If you do not know something, say so and offer to pass the \
question to the team.";

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
    /// Its token cap, held even against a provider that ignores `max_tokens`.
    max_tokens: u32,
}

/// Why an owed reply waits for the turn model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TurnHold {
    /// Its verdict on this utterance has not come yet.
    Awaiting(u32),
    /// It said the turn goes on: wait for more speech until then (wall clock, ms).
    Held(u64),
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
    speech_chars: u64,
    charged: Usage,
    turn: u64,
    next_utterance: u32,
    strikes: u32,
    closed: bool,
    dirty: bool,
    /// Whether replies are spoken (a speech provider is configured), and at what rate.
    speech: bool,
    speech_rate: u32,
    /// The speech of the reply in flight or just complete, until all of it is sent.
    speaking: Option<SpeechTurn>,
    /// The last spoken turn and when its playback ends by the audio sent (barge-in after it
    /// was all sent still tells the client to stop playing).
    played: Option<(u64, u64)>,
    /// The clock of the turn in flight, and what would start the next one's.
    clock: Option<TurnClock>,
    origin: Option<(TurnOrigin, u64, Option<u64>)>,
    /// Wall clock of the input being applied.
    now: u64,
    /// Whether a turn model judges the end of each utterance, what an owed reply waits for,
    /// and when the last verdict came.
    turn_detection: bool,
    turn_hold: Option<TurnHold>,
    verdict_at: Option<u64>,
}

impl VoiceSession {
    /// A new session; `user_remaining` is what the user may still consume
    /// ([`UserUsage::remaining`](super::usage::UserUsage::remaining), or [`Usage::UNLIMITED`]
    /// when not tracked per user).
    pub fn new(limits: VoiceLimits, user_remaining: Usage) -> Self {
        Self::restore(Snapshot::default(), limits, user_remaining)
    }

    /// A session carrying on from a persisted snapshot.
    pub fn restore(snapshot: Snapshot, limits: VoiceLimits, user_remaining: Usage) -> Self {
        let used = snapshot.usage;
        let cap = session_caps(&limits).min(used.saturating_add(user_remaining));
        let mut context = snapshot.context;
        context.trim();
        Self {
            limits,
            cap,
            capture: None,
            reply: None,
            pending: BTreeMap::new(),
            owed: false,
            context,
            audio_ms: used.audio_ms,
            tokens: used.tokens,
            speech_chars: used.speech_chars,
            charged: used,
            turn: snapshot.turn,
            next_utterance: snapshot.next_utterance,
            strikes: 0,
            closed: false,
            dirty: false,
            speech: false,
            speech_rate: DEFAULT_SPEECH_RATE,
            speaking: None,
            played: None,
            clock: None,
            origin: None,
            now: 0,
            turn_detection: false,
            turn_hold: None,
            verdict_at: None,
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
            speech_chars: self.speech_chars,
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
        self.cap = session_caps(&self.limits).min(self.charged.saturating_add(remaining));
    }

    /// Whether replies are spoken: a speech provider is there ([`Effect::Synthesize`]).
    pub fn set_speech(&mut self, on: bool) {
        self.speech = on;
    }

    /// Whether a turn model judges the end of each utterance ([`Effect::DetectTurn`]); without
    /// one the VAD's silence alone ends a turn.
    pub fn set_turn_detection(&mut self, on: bool) {
        self.turn_detection = on;
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
        if self.speaking.is_some() {
            return TurnState::Speaking;
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
        self.now = now_ms;
        let before = self.state();
        let client = match input {
            Input::Control(text) => {
                Some(decode_control(text).and_then(|f| self.control(f, now_ms, &mut fx)))
            }
            // A spent allowance ends the stream once, then audio is not refused frame by frame.
            Input::Audio(_) if self.capture.is_none() && self.audio_spent() => {
                self.spent_audio(&mut fx);
                None
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
                self.finish(turn, tokens, false, &mut fx);
                None
            }
            Input::Synthesized {
                turn,
                seq,
                result,
                synth_ms,
            } => {
                self.synthesized(turn, seq, result, synth_ms, &mut fx);
                None
            }
            Input::TurnDetected {
                utterance,
                complete,
                probability,
            } => {
                self.turn_verdict(utterance, complete, probability, &mut fx);
                None
            }
            Input::Tick => None,
            Input::ReplyFailed { turn, message } => {
                if let Some(r) = self.reply.take_if(|r| r.turn == turn) {
                    self.drop_speech(turn);
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
                if self.audio_spent() {
                    return Err(VoiceError::AudioQuotaExceeded(self.audio_allowance()));
                }
                self.speech_rate = format.sample_rate();
                self.capture = Some(Capture {
                    gate: AudioGate::new(format, now_ms),
                    vad: Vad::new(self.limits.vad, format.sample_rate()),
                });
                fx.push(Effect::Send(ServerFrame::Started { format }));
            }
            ControlFrame::Stop {} => self.end_capture(true, fx),
            ControlFrame::Interrupt {} => {
                self.barge_in(true, fx);
                self.turn_hold = None;
                self.owed = false;
                for p in self.pending.values_mut() {
                    p.respond = false;
                }
            }
            ControlFrame::Text { text } => {
                self.barge_in(true, fx);
                self.turn_hold = None;
                self.origin = Some((TurnOrigin::Text, now_ms, None));
                self.context.push(Role::User, text.trim(), false);
                self.owed = true;
                self.dirty = true;
            }
        }
        Ok(())
    }

    fn audio(&mut self, bytes: &[u8], now_ms: u64, fx: &mut Vec<Effect>) -> Result<(), VoiceError> {
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
            return Err(VoiceError::AudioQuotaExceeded(self.audio_allowance()));
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
                    self.barge_in(true, fx);
                    self.turn_hold = None; // more speech: the next utterance's end decides
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
                    self.origin = Some((TurnOrigin::SpeechEnd, self.now, None));
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
                    let wav = wav_bytes(&seg.pcm, rate);
                    self.verdict_at = None;
                    if self.turn_detection {
                        self.turn_hold = Some(TurnHold::Awaiting(id));
                        fx.push(Effect::DetectTurn {
                            utterance: id,
                            wav: wav.clone(),
                        });
                    }
                    fx.push(Effect::Transcribe { utterance: id, wav });
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
            if let Some((TurnOrigin::SpeechEnd, _, at)) = &mut self.origin {
                *at = Some(self.now);
            }
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
        // Past its cap (with [`REPLY_TOKEN_SLACK`] for the estimate's error) the reply ends
        // here: the rest is not read, the generation is aborted.
        let cap = u64::from(r.max_tokens) + u64::from(r.max_tokens) / REPLY_TOKEN_SLACK;
        let room = cap.saturating_sub(estimate_tokens(&r.text)) as usize * 4;
        let over = text.chars().count() > room;
        let text = if over {
            truncate_chars(&text, room)
        } else {
            text
        };
        if r.text.len() < MAX_CONTEXT_CHARS * 4 {
            r.text.push_str(&text);
        }
        if let Some(c) = self.clock.as_mut().filter(|c| c.turn() == turn) {
            c.token(self.now);
        }
        if !text.is_empty() {
            let sentences = match self.speaking.as_mut().filter(|s| s.turn() == turn) {
                Some(s) => s.text(&text),
                None => Vec::new(),
            };
            fx.push(Effect::Send(ServerFrame::ReplyDelta { turn, text }));
            for sentence in sentences {
                self.synthesize(sentence, fx);
            }
        }
        if over {
            fx.push(Effect::Cancel { turn });
            self.finish(turn, None, true, fx);
        }
    }

    /// The reply of `turn` is complete (`truncated`: cut at its token cap).
    fn finish(&mut self, turn: u64, tokens: Option<u32>, truncated: bool, fx: &mut Vec<Effect>) {
        let Some(r) = self.reply.take_if(|r| r.turn == turn) else {
            return; // a cancelled or unknown turn
        };
        self.tokens += tokens.map_or_else(|| estimate_tokens(&r.text), u64::from);
        if !r.text.trim().is_empty() {
            self.context.push(Role::Assistant, &r.text, false);
        }
        fx.push(Effect::Send(ServerFrame::ReplyDone {
            turn,
            text: r.text,
            truncated,
        }));
        self.dirty = true;
        if let Some(c) = self.clock.as_mut() {
            c.reply_done(self.now);
        }
        let rest = self.speaking.as_mut().and_then(SpeechTurn::text_done);
        if let Some(rest) = rest {
            self.synthesize(rest, fx);
        }
        self.speech_progress(fx);
    }

    /// The turn model's verdict on `utterance`: a turn that goes on holds the reply for
    /// `turn_hold_ms` (or until more speech); no verdict leaves it to the VAD.
    fn turn_verdict(
        &mut self,
        utterance: u32,
        complete: Option<bool>,
        probability: Option<f32>,
        fx: &mut Vec<Effect>,
    ) {
        if self.turn_hold != Some(TurnHold::Awaiting(utterance)) {
            return; // about an utterance the user has spoken past
        }
        self.verdict_at = Some(self.now);
        let source = if complete.is_some() { "model" } else { "vad" };
        fx.push(Effect::Send(ServerFrame::Turn {
            utterance,
            complete: complete.unwrap_or(true),
            probability,
            source: source.into(),
        }));
        self.turn_hold = None;
        if complete == Some(false) && self.limits.turn_hold_ms > 0 {
            let until = self.now + self.limits.turn_hold_ms;
            self.turn_hold = Some(TurnHold::Held(until));
            fx.push(Effect::WakeAt(until));
        }
    }

    /// Whether the audio allowance is spent.
    fn audio_spent(&self) -> bool {
        self.usage().audio_ms >= self.cap.audio_ms
    }

    /// Which allowance bounds the audio: the session's, or the user's day.
    fn audio_allowance(&self) -> Allowance {
        if self.cap.audio_ms < self.limits.session_audio_ms {
            Allowance::Daily
        } else {
            Allowance::Session
        }
    }

    /// Audio with the allowance spent and no stream: dropped while the last turn is being
    /// answered; after that the socket is closed with [`close::QUOTA_EXHAUSTED`] (4529), not
    /// refused frame by frame into a 4500.
    fn spent_audio(&mut self, fx: &mut Vec<Effect>) {
        if self.reply.is_some() || self.owed || !self.pending.is_empty() {
            return;
        }
        let e = VoiceError::AudioQuotaExceeded(self.audio_allowance());
        fx.push(Effect::Send(ServerFrame::error(&e)));
        self.persist(fx);
        self.closed = true;
        fx.push(Effect::Close {
            code: close::QUOTA_EXHAUSTED,
            reason: "audio allowance used up".into(),
        });
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
        match self.turn_hold {
            Some(TurnHold::Awaiting(_)) => return Ok(()),
            Some(TurnHold::Held(until)) if self.now < until => return Ok(()),
            _ => self.turn_hold = None,
        }
        self.owed = false;
        let left = self.cap.tokens.saturating_sub(self.tokens);
        if left == 0 {
            let allowance = if self.cap.tokens < self.limits.session_tokens {
                Allowance::Daily
            } else {
                Allowance::Session
            };
            return Err(VoiceError::TokenQuotaExceeded(allowance));
        }
        self.turn += 1;
        let max_tokens = left.min(u64::from(self.limits.max_reply_tokens)) as u32;
        self.reply = Some(ReplyInFlight {
            turn: self.turn,
            text: String::new(),
            streaming: false,
            max_tokens,
        });
        fx.push(Effect::Generate {
            turn: self.turn,
            context: self.context.to_vec(),
            max_tokens,
        });
        let (origin, at, transcript) =
            self.origin
                .take()
                .unwrap_or((TurnOrigin::Text, self.now, None));
        self.clock =
            Some(TurnClock::new(self.turn, origin, at, transcript).with_verdict(self.verdict_at));
        if let Some(old) = self.speaking.take() {
            fx.push(Effect::CancelSpeech { turn: old.turn() });
        }
        self.speaking = self
            .speech
            .then(|| SpeechTurn::new(self.turn, self.speech_rate));
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
                speech_chars: usage.speech_chars,
            }));
            self.charged = usage;
        }
        fx.push(Effect::Persist(self.snapshot()));
        self.dirty = false;
    }

    fn disconnect(&mut self, fx: &mut Vec<Effect>) {
        self.barge_in(false, fx);
        self.end_capture(false, fx);
        self.pending.clear();
        self.owed = false;
        self.persist(fx);
        fx.retain(|e| !matches!(e, Effect::Send(_)));
        self.closed = true;
    }
}

/// The per-session caps of `limits`.
fn session_caps(limits: &VoiceLimits) -> Usage {
    Usage {
        audio_ms: limits.session_audio_ms,
        tokens: limits.session_tokens,
        speech_chars: limits.session_speech_chars,
    }
}

/// Whether `fx` answer a control frame with `started` (the session accepted a `start`).
pub fn answers_started(fx: &[Effect]) -> bool {
    fx.iter()
        .any(|e| matches!(e, Effect::Send(ServerFrame::Started { .. })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::voice::synth::*;
    use crate::sessions::voice::wire::{format_change, AudioFormat, FormatChange};
    use crate::sessions::voice::ContextTurn;

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
                text: "Happy to help. When would you like a valuation?".into(),
                truncated: false,
            }
        );
        assert_eq!(states(&fx), vec![TurnState::Listening]);
        assert!(fx.contains(&Effect::Charge(Usage {
            audio_ms: 0,
            tokens: 12,
            ..Usage::default()
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
            tokens: 0,
            ..Usage::default()
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
    fn the_format_is_remembered_only_for_an_accepted_start() {
        let mut s = VoiceSession::new(VoiceLimits::default(), Usage::UNLIMITED);
        let start = start_frame(RATE);
        let fx = s.apply(Input::Control(&start), T0);
        assert!(answers_started(&fx));
        assert_eq!(
            format_change(&start, answers_started(&fx)),
            FormatChange::Set(AudioFormat::pcm16_mono(RATE).unwrap())
        );
        // A second start is refused as already_started and changes nothing.
        let fx = s.apply(Input::Control(&start), T0 + 10);
        assert!(!answers_started(&fx));
        assert_eq!(
            format_change(&start, answers_started(&fx)),
            FormatChange::Keep
        );
        let stop = r#"{"type":"stop"}"#;
        let fx = s.apply(Input::Control(stop), T0 + 20);
        assert!(!answers_started(&fx));
        assert_eq!(
            format_change(stop, answers_started(&fx)),
            FormatChange::Clear
        );
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
                ..Usage::default()
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
            ..Usage::default()
        });
        assert_eq!(s.caps().audio_ms, 1_500);
        let fx = s.apply(Input::Control(&start_frame(RATE)), T0 + 1000);
        assert!(codes(&fx).is_empty(), "{fx:?}");
        // The frame that would pass 1.5 s in all ends the stream, refused.
        let fx = stream(&mut s, &silence(520, RATE), 1000);
        assert_eq!(codes(&fx), vec!["audio_quota_exceeded"]);
        assert!(
            sent(&fx)
                .iter()
                .any(|f| matches!(f, ServerFrame::Error { message, .. }
            if message.contains("of your day"))),
            "the user's day ran out, not the session: {fx:?}"
        );
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
                ..Usage::default()
            },
        );
        assert_eq!(s.caps().audio_ms, 1_500);
        s.apply(Input::Control(&start_frame(RATE)), T0);
        let fx = stream(&mut s, &silence(1520, RATE), 0);
        // The frame past 1500 ms ends the stream, refused once.
        assert_eq!(codes(&fx), vec!["audio_quota_exceeded"]);
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
        // A microphone that keeps streaming: dropped unrefused while the turn is answered…
        let fx = stream(&mut s, &silence(200, RATE), 3000);
        assert!(codes(&fx).is_empty() && !s.is_closed(), "{fx:?}");
        s.apply(
            Input::ReplyDone {
                turn: 1,
                tokens: Some(3),
            },
            T0 + 3300,
        );
        // …then the next frame closes the socket with 4529, not strike by strike with 4500.
        let fx = stream(&mut s, &silence(20, RATE), 3400);
        assert_eq!(codes(&fx), vec!["audio_quota_exceeded"]);
        assert!(fx.contains(&Effect::Close {
            code: close::QUOTA_EXHAUSTED,
            reason: "audio allowance used up".into()
        }));
        assert!(s.is_closed());
    }

    #[test]
    fn a_reply_is_cut_at_its_token_cap_when_the_provider_ignores_it() {
        let limits = VoiceLimits {
            max_reply_tokens: 8,
            ..VoiceLimits::default()
        };
        let mut s = VoiceSession::new(limits, Usage::UNLIMITED);
        s.apply(Input::Control(r#"{"type":"text","text":"talk"}"#), T0);
        // 8 tokens and a quarter of slack: 10 tokens, about 40 characters.
        let fx = s.apply(
            Input::ReplyDelta {
                turn: 1,
                text: "a".repeat(36),
            },
            T0,
        );
        assert_eq!(sent(&fx).len(), 2, "a delta and the speaking state: {fx:?}");
        let fx = s.apply(
            Input::ReplyDelta {
                turn: 1,
                text: "b".repeat(30),
            },
            T0,
        );
        assert!(
            fx.contains(&Effect::Cancel { turn: 1 }),
            "the rest is not read"
        );
        let done = sent(&fx)
            .into_iter()
            .find_map(|f| match f {
                ServerFrame::ReplyDone {
                    text, truncated, ..
                } => Some((text.clone(), *truncated)),
                _ => None,
            })
            .expect("reply_done");
        assert_eq!(done, (format!("{}{}", "a".repeat(36), "b".repeat(4)), true));
        assert_eq!(s.usage().tokens, 10);
        // Later deltas of the cut turn are dropped.
        let fx = s.apply(
            Input::ReplyDelta {
                turn: 1,
                text: "c".into(),
            },
            T0,
        );
        assert!(sent(&fx).is_empty());
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

    // --- speech out ------------------------------------------------------------------------

    fn synth_requests(fx: &[Effect]) -> Vec<(u32, String)> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Synthesize { seq, text, .. } => Some((*seq, text.clone())),
                _ => None,
            })
            .collect()
    }

    fn kinds(fx: &[Effect]) -> Vec<String> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Send(ServerFrame::Speech { seq, .. }) => Some(format!("speech {seq}")),
                Effect::SendBinary(b) => Some(format!("audio {}", b[12])),
                Effect::Send(ServerFrame::SpeechDone { .. }) => Some("speech_done".into()),
                Effect::Send(ServerFrame::SpeechCancelled { turn }) => {
                    Some(format!("speech_cancelled {turn}"))
                }
                Effect::Send(ServerFrame::Timings(_)) => Some("timings".into()),
                Effect::CancelSpeech { turn } => Some(format!("cancel {turn}")),
                _ => None,
            })
            .collect()
    }

    fn speaking_session(limits: VoiceLimits) -> VoiceSession {
        let mut s = VoiceSession::new(limits, Usage::UNLIMITED);
        s.set_speech(true);
        s
    }

    fn delta(s: &mut VoiceSession, text: &str, at: u64) -> Vec<Effect> {
        s.apply(
            Input::ReplyDelta {
                turn: 1,
                text: text.into(),
            },
            T0 + at,
        )
    }

    fn chunk(s: &mut VoiceSession, seq: u32, samples: usize, at: u64) -> Vec<Effect> {
        s.apply(
            Input::Synthesized {
                turn: 1,
                seq,
                result: Ok(vec![0; samples]),
                synth_ms: 40,
            },
            T0 + at,
        )
    }

    #[test]
    fn a_reply_is_spoken_sentence_by_sentence_in_order_then_timed() {
        let mut s = speaking_session(VoiceLimits::default());
        s.apply(Input::Control(r#"{"type":"text","text":"hello"}"#), T0);
        let fx = delta(&mut s, "Hello there, nice to meet you. How can", 300);
        assert_eq!(
            synth_requests(&fx),
            vec![(0, "Hello there, nice to meet you.".to_string())],
            "the first sentence is spoken before the reply is complete"
        );
        let fx = delta(&mut s, " I help?", 350);
        assert!(synth_requests(&fx).is_empty());
        let fx = s.apply(
            Input::ReplyDone {
                turn: 1,
                tokens: Some(9),
            },
            T0 + 400,
        );
        assert_eq!(
            synth_requests(&fx),
            vec![(1, "How can I help?".to_string())]
        );
        assert!(
            states(&fx).is_empty(),
            "still speaking after reply_done: {fx:?}"
        );
        assert_eq!(s.state(), TurnState::Speaking);
        assert!(
            kinds(&chunk(&mut s, 1, 1600, 500)).is_empty(),
            "1 waits for 0"
        );
        let fx = chunk(&mut s, 0, 8000, 600);
        assert_eq!(
            kinds(&fx),
            [
                "speech 0",
                "audio 0",
                "speech 1",
                "audio 1",
                "speech_done",
                "timings"
            ]
        );
        assert_eq!(states(&fx), vec![TurnState::Idle]);
        let t = sent(&fx)
            .into_iter()
            .find_map(|f| match f {
                ServerFrame::Timings(t) => Some(t.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            (
                t.turn,
                t.origin,
                t.first_token_ms,
                t.reply_ms,
                t.first_audio_ms,
                t.synthesis_ms
            ),
            (1, TurnOrigin::Text, Some(300), Some(400), Some(600), 80)
        );
        assert_eq!(
            s.usage().speech_chars,
            45,
            "every character sent to synthesis counts"
        );
    }

    #[test]
    fn barge_in_cancels_speech_and_nothing_of_the_turn_follows() {
        let mut s = speaking_session(VoiceLimits::default());
        s.apply(Input::Control(r#"{"type":"text","text":"hello"}"#), T0);
        delta(
            &mut s,
            "First sentence goes here. Second sentence goes here. ",
            100,
        );
        let fx = delta(&mut s, "Third", 120);
        assert_eq!(
            synth_requests(&fx),
            vec![(1, "Second sentence goes here.".into())]
        );
        assert_eq!(kinds(&chunk(&mut s, 0, 1600, 200)), ["speech 0", "audio 0"]);
        let fx = s.apply(Input::Control(r#"{"type":"interrupt"}"#), T0 + 250);
        assert_eq!(kinds(&fx), ["cancel 1", "speech_cancelled 1"]);
        assert!(fx.contains(&Effect::Cancel { turn: 1 }));
        assert!(
            kinds(&chunk(&mut s, 1, 1600, 300)).is_empty(),
            "a late chunk is dropped"
        );
        assert_eq!(s.state(), TurnState::Idle);
    }

    #[test]
    fn barge_in_while_the_last_chunks_still_play_tells_the_client_to_stop() {
        let spoken = || {
            let mut s = speaking_session(VoiceLimits::default());
            s.apply(Input::Control(r#"{"type":"text","text":"hello"}"#), T0);
            delta(&mut s, "Only this one sentence.", 100);
            s.apply(
                Input::ReplyDone {
                    turn: 1,
                    tokens: None,
                },
                T0 + 150,
            );
            // Two seconds of speech sent at 200 ms: it plays until 2200 ms.
            let fx = chunk(&mut s, 0, 32_000, 200);
            assert_eq!(
                kinds(&fx),
                ["speech 0", "audio 0", "speech_done", "timings"]
            );
            s
        };
        let wait = r#"{"type":"text","text":"wait"}"#;
        let fx = spoken().apply(Input::Control(wait), T0 + 1_000);
        assert_eq!(kinds(&fx)[0], "speech_cancelled 1", "{fx:?}");
        // Once it has played out, a new turn is no barge-in.
        let fx = spoken().apply(Input::Control(wait), T0 + 2_500);
        assert!(
            !kinds(&fx).iter().any(|k| k.starts_with("speech_cancelled")),
            "{fx:?}"
        );
    }

    #[test]
    fn the_speech_allowance_stops_speech_but_not_the_reply() {
        let limits = VoiceLimits {
            session_speech_chars: 40,
            ..VoiceLimits::default()
        };
        let mut s = speaking_session(limits);
        s.apply(Input::Control(r#"{"type":"text","text":"hello"}"#), T0);
        let fx = delta(&mut s, "This sentence is spoken fine. ", 100);
        assert!(synth_requests(&fx).is_empty());
        let fx = delta(&mut s, "This one would pass the allowance. And more", 120);
        assert_eq!(synth_requests(&fx).len(), 1);
        assert_eq!(codes(&fx), vec!["speech_quota_exceeded"]);
        let fx = delta(&mut s, " text. Still text. ", 130);
        assert!(
            synth_requests(&fx).is_empty() && codes(&fx).is_empty(),
            "told once"
        );
        assert!(sent(&fx)
            .iter()
            .any(|f| matches!(f, ServerFrame::ReplyDelta { .. })));
        s.apply(
            Input::ReplyDone {
                turn: 1,
                tokens: None,
            },
            T0 + 200,
        );
        let fx = chunk(&mut s, 0, 160, 300);
        assert_eq!(
            kinds(&fx),
            ["speech 0", "audio 0", "speech_done", "timings"]
        );
        assert_eq!(s.usage().speech_chars, 29);
    }

    #[test]
    fn without_a_speech_provider_a_turn_is_timed_at_reply_done() {
        let mut s = VoiceSession::new(VoiceLimits::default(), Usage::UNLIMITED);
        s.apply(Input::Control(r#"{"type":"text","text":"hello"}"#), T0);
        let fx = delta(&mut s, "Hello. How can I help?", 100);
        assert!(synth_requests(&fx).is_empty());
        let fx = s.apply(
            Input::ReplyDone {
                turn: 1,
                tokens: None,
            },
            T0 + 200,
        );
        assert_eq!(kinds(&fx), ["timings"]);
    }

    // --- turn detection --------------------------------------------------------------------

    fn detections(fx: &[Effect]) -> Vec<u32> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::DetectTurn { utterance, wav } => {
                    assert!(wav.starts_with(b"RIFF"), "the utterance's WAV");
                    Some(*utterance)
                }
                _ => None,
            })
            .collect()
    }

    fn turn_frames(fx: &[Effect]) -> Vec<(u32, bool, String)> {
        sent(fx)
            .into_iter()
            .filter_map(|f| match f {
                ServerFrame::Turn {
                    utterance,
                    complete,
                    source,
                    ..
                } => Some((*utterance, *complete, source.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_turn_the_model_calls_unfinished_is_held_then_answered() {
        let mut s = VoiceSession::new(VoiceLimits::default(), Usage::UNLIMITED);
        s.set_turn_detection(true);
        s.apply(Input::Control(&start_frame(RATE)), T0);
        let fx = stream(&mut s, &speech_like(&[(200, 800)], 1600, RATE), 0);
        assert_eq!(detections(&fx), vec![0]);
        let said = Input::Transcribed {
            utterance: 0,
            transcript: Some("I was wondering".into()),
        };
        assert!(
            generated(&s.apply(said, T0 + 1700)).is_none(),
            "waits for the verdict"
        );
        let fx = s.apply(
            Input::TurnDetected {
                utterance: 0,
                complete: Some(false),
                probability: Some(0.2),
            },
            T0 + 1800,
        );
        assert_eq!(turn_frames(&fx), vec![(0, false, "model".into())]);
        assert!(fx.contains(&Effect::WakeAt(T0 + 3300)), "{fx:?}");
        assert!(generated(&fx).is_none());
        assert!(
            generated(&s.apply(Input::Tick, T0 + 2500)).is_none(),
            "still held"
        );
        let fx = s.apply(Input::Tick, T0 + 3300);
        assert!(generated(&fx).is_some(), "answered once the hold ran out");
        let t = s.clock.as_ref().unwrap().timings().clone();
        assert!(t.turn_ms.is_some(), "{t:?}");
    }

    #[test]
    fn more_speech_in_the_hold_joins_the_turn_and_no_verdict_leaves_it_to_the_vad() {
        let mut s = VoiceSession::new(VoiceLimits::default(), Usage::UNLIMITED);
        s.set_turn_detection(true);
        s.apply(Input::Control(&start_frame(RATE)), T0);
        let pcm = speech_like(&[(200, 700), (1500, 700)], 3200, RATE);
        let cut = 1400 * RATE as usize / 1000;
        let fx = stream(&mut s, &pcm[..cut], 0);
        assert_eq!(detections(&fx), vec![0]);
        let first = Input::Transcribed {
            utterance: 0,
            transcript: Some("first part".into()),
        };
        s.apply(first, T0 + 1410);
        let unfinished = Input::TurnDetected {
            utterance: 0,
            complete: Some(false),
            probability: None,
        };
        assert!(generated(&s.apply(unfinished, T0 + 1420)).is_none());
        let fx = stream(&mut s, &pcm[cut..], 1400);
        assert!(
            generated(&fx).is_none(),
            "the hold is not a cut-off: more speech joins"
        );
        assert_eq!(detections(&fx), vec![1]);
        let second = Input::Transcribed {
            utterance: 1,
            transcript: Some("second part".into()),
        };
        s.apply(second, T0 + 3210);
        // A stale verdict on utterance 0 is ignored; none on utterance 1 leaves it to the VAD.
        let stale = Input::TurnDetected {
            utterance: 0,
            complete: Some(false),
            probability: None,
        };
        assert!(turn_frames(&s.apply(stale, T0 + 3215)).is_empty());
        let fx = s.apply(
            Input::TurnDetected {
                utterance: 1,
                complete: None,
                probability: None,
            },
            T0 + 3220,
        );
        assert_eq!(turn_frames(&fx), vec![(1, true, "vad".into())]);
        let (_, context, _) = generated(&fx).expect("one reply for the whole turn");
        let users: Vec<&str> = context.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(users, ["first part", "second part"]);
        assert!(codes(&fx).is_empty());
    }
}
