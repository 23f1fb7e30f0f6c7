//! The turn machine's speech out: barge-in, asking for sentences to be spoken within the
//! allowance, and sending what the provider made, in order ([`VoiceSession`]'s methods that
//! deal with [`SpeechTurn`](super::super::SpeechTurn)s).

use super::super::io::Effect;
use super::super::speaking::SpeechOut;
use super::super::wire::{Allowance, ServerFrame, VoiceError};
use super::VoiceSession;

impl VoiceSession {
    /// Barge-in: the reply in flight and its speech are cancelled (told to the client with
    /// `notify`), and speech still playing by the audio sent is told to stop.
    pub(super) fn barge_in(&mut self, notify: bool, fx: &mut Vec<Effect>) {
        self.cancel_reply(notify, fx);
        let speaking = self.speaking.take().map(|s| s.turn());
        if let Some(turn) = speaking {
            fx.push(Effect::CancelSpeech { turn });
        }
        let playing = self.played.take().filter(|(_, until)| *until > self.now);
        if let Some(turn) = speaking.or(playing.map(|(turn, _)| turn)) {
            if notify {
                fx.push(Effect::Send(ServerFrame::SpeechCancelled { turn }));
            }
            self.clock = None;
        }
    }

    /// The reply of `turn` failed: its speech stops where it is (what was asked still comes,
    /// then `speech_done`); a failed turn has no `timings`.
    pub(super) fn drop_speech(&mut self, turn: u64) {
        if let Some(s) = self.speaking.as_mut().filter(|s| s.turn() == turn) {
            s.stop();
            let _ = s.text_done();
            if s.is_complete() {
                self.speaking = None;
            }
        }
        self.clock = None;
    }

    /// Asks for a sentence of the reply in flight to be spoken, within the speech allowance
    /// (past it the turn's speech stops, told once; the text goes on).
    pub(super) fn synthesize(&mut self, text: String, fx: &mut Vec<Effect>) {
        let Some(s) = self.speaking.as_mut().filter(|s| !s.is_stopped()) else {
            return;
        };
        let chars = text.chars().count() as u64;
        if self.speech_chars + chars > self.cap.speech_chars {
            s.stop();
            let allowance = if self.cap.speech_chars < self.limits.session_speech_chars {
                Allowance::Daily
            } else {
                Allowance::Session
            };
            let e = VoiceError::SpeechQuotaExceeded(allowance);
            fx.push(Effect::Send(ServerFrame::error(&e)));
            return;
        }
        self.speech_chars += chars;
        self.dirty = true;
        let (turn, sample_rate) = (s.turn(), s.rate());
        let seq = s.request(text.clone());
        fx.push(Effect::Synthesize {
            turn,
            seq,
            text,
            sample_rate,
        });
    }

    /// A chunk of speech came back: what it completes is sent, in order.
    pub(super) fn synthesized(
        &mut self,
        turn: u64,
        seq: u32,
        result: Result<Vec<i16>, String>,
        synth_ms: u64,
        fx: &mut Vec<Effect>,
    ) {
        let Some(s) = self.speaking.as_mut().filter(|s| s.turn() == turn) else {
            return; // a cancelled or unknown turn: nothing of it is sent any more
        };
        let out = s.arrived(seq, result);
        let clock = self.clock.as_mut().filter(|c| c.turn() == turn);
        if let Some(c) = clock {
            c.synthesis(synth_ms);
        }
        for o in out {
            match o {
                SpeechOut::Frame(f) => {
                    if let ServerFrame::Speech { duration_ms, .. } = &f {
                        let until = self.played.map_or(0, |(_, u)| u).max(self.now);
                        self.played = Some((turn, until + duration_ms));
                        if let Some(c) = self.clock.as_mut() {
                            c.audio(self.now);
                        }
                    }
                    fx.push(Effect::Send(f));
                }
                SpeechOut::Audio(bytes) => fx.push(Effect::SendBinary(bytes)),
            }
        }
        self.speech_progress(fx);
    }

    /// A turn whose text and speech are all out: `speech_done`, then its `timings`.
    pub(super) fn speech_progress(&mut self, fx: &mut Vec<Effect>) {
        if self.reply.is_some() {
            return;
        }
        if let Some(s) = self.speaking.take_if(|s| s.is_complete()) {
            fx.push(Effect::Send(s.done_frame()));
        }
        if self.speaking.is_none() {
            if let Some(c) = self.clock.take() {
                fx.push(Effect::Send(ServerFrame::Timings(c.timings().clone())));
            }
        }
    }
}
