//! One turn's speech while it is made: [`SpeechTurn`] takes the reply text as it streams, hands
//! out its sentences to synthesize (numbered in order), and turns the provider's answers —
//! which may come back in any order — into the frames to send, strictly in order: for each
//! chunk a `speech` frame (its text, rate and length) then the binary frame of its samples.
//! The session ([`super::VoiceSession`]) decides whether a chunk may be synthesized (the
//! speech allowance) and cancels the turn on barge-in.

use std::collections::BTreeMap;

use super::speech::{speech_frame, Chunker};
use super::wire::{ServerFrame, VoiceError};

/// What a [`SpeechTurn`] asks the session to send, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum SpeechOut {
    /// A JSON frame.
    Frame(ServerFrame),
    /// A binary frame: one chunk of speech ([`speech_frame`]).
    Audio(Vec<u8>),
}

/// The speech of one turn.
#[derive(Debug, Clone)]
pub struct SpeechTurn {
    turn: u64,
    rate: u32,
    chunker: Chunker,
    /// Text of each chunk asked for, by sequence number, until it is sent.
    texts: BTreeMap<u32, String>,
    requested: u32,
    sent: u32,
    /// Answers that came before an earlier chunk's.
    ready: BTreeMap<u32, Result<Vec<i16>, String>>,
    text_done: bool,
    stopped: bool,
    audio_ms: u64,
}

impl SpeechTurn {
    /// Speech for `turn`, in 16-bit mono PCM at `rate` Hz.
    pub fn new(turn: u64, rate: u32) -> Self {
        Self {
            turn,
            rate,
            chunker: Chunker::default(),
            texts: BTreeMap::new(),
            requested: 0,
            sent: 0,
            ready: BTreeMap::new(),
            text_done: false,
            stopped: false,
            audio_ms: 0,
        }
    }

    /// The turn.
    pub fn turn(&self) -> u64 {
        self.turn
    }

    /// The sample rate of its chunks.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Audio sent so far, ms.
    pub fn audio_ms(&self) -> u64 {
        self.audio_ms
    }

    /// Chunks sent so far.
    pub fn chunks_sent(&self) -> u32 {
        self.sent
    }

    /// Reply text streamed in: the sentences it completed, to synthesize (none once stopped).
    pub fn text(&mut self, delta: &str) -> Vec<String> {
        if self.stopped {
            return Vec::new();
        }
        self.chunker.push(delta)
    }

    /// The reply text is complete: the rest of it, to synthesize, if any.
    pub fn text_done(&mut self) -> Option<String> {
        self.text_done = true;
        let rest = self.chunker.finish();
        rest.filter(|_| !self.stopped)
    }

    /// No more chunks will be asked for (the allowance is spent); those asked still come.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Whether it was stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Registers a chunk to synthesize; answers its sequence number.
    pub fn request(&mut self, text: String) -> u32 {
        let seq = self.requested;
        self.texts.insert(seq, text);
        self.requested += 1;
        seq
    }

    /// The provider answered chunk `seq` (its samples at [`Self::rate`], or why it failed):
    /// what can now be sent, in order. A failed chunk is told as `synthesis_failed` and
    /// skipped; the others go on.
    pub fn arrived(&mut self, seq: u32, result: Result<Vec<i16>, String>) -> Vec<SpeechOut> {
        if seq < self.sent || seq >= self.requested {
            return Vec::new(); // unknown or already sent
        }
        self.ready.insert(seq, result);
        let mut out = Vec::new();
        while let Some(result) = self.ready.remove(&self.sent) {
            let seq = self.sent;
            let text = self.texts.remove(&seq).unwrap_or_default();
            match result {
                Ok(samples) => {
                    let duration_ms = samples.len() as u64 * 1000 / u64::from(self.rate.max(1));
                    self.audio_ms += duration_ms;
                    out.push(SpeechOut::Frame(ServerFrame::Speech {
                        turn: self.turn,
                        seq,
                        text,
                        sample_rate: self.rate,
                        samples: samples.len() as u64,
                        duration_ms,
                    }));
                    out.push(SpeechOut::Audio(speech_frame(self.turn, seq, &samples)));
                }
                Err(message) => {
                    let e = VoiceError::SynthesisFailed(message);
                    out.push(SpeechOut::Frame(ServerFrame::error(&e)));
                }
            }
            self.sent += 1;
        }
        out
    }

    /// Whether everything asked for was sent and no more will be asked for.
    pub fn is_complete(&self) -> bool {
        self.text_done && self.sent == self.requested
    }

    /// The `speech_done` frame of a complete turn.
    pub fn done_frame(&self) -> ServerFrame {
        ServerFrame::SpeechDone {
            turn: self.turn,
            chunks: self.sent,
            audio_ms: self.audio_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(out: &[SpeechOut]) -> Vec<String> {
        out.iter()
            .map(|o| match o {
                SpeechOut::Frame(ServerFrame::Speech { seq, .. }) => format!("speech {seq}"),
                SpeechOut::Frame(ServerFrame::Error { code, .. }) => code.clone(),
                SpeechOut::Frame(f) => format!("{f:?}"),
                SpeechOut::Audio(b) => format!(
                    "audio {}",
                    u32::from_le_bytes(b[12..16].try_into().unwrap())
                ),
            })
            .collect()
    }

    #[test]
    fn chunks_go_out_in_order_whatever_order_they_are_made_in() {
        let mut t = SpeechTurn::new(7, 16000);
        let s = t.text("First sentence here. Second sentence here. Thi");
        assert_eq!(s.len(), 2);
        let (a, b) = (t.request(s[0].clone()), t.request(s[1].clone()));
        assert_eq!((a, b), (0, 1));
        assert!(t.arrived(1, Ok(vec![0; 1600])).is_empty(), "1 waits for 0");
        let out = t.arrived(0, Ok(vec![0; 3200]));
        assert_eq!(kinds(&out), ["speech 0", "audio 0", "speech 1", "audio 1"]);
        assert!(
            matches!(&out[0], SpeechOut::Frame(ServerFrame::Speech { text, duration_ms: 200, .. })
            if text == "First sentence here.")
        );
        assert!(!t.is_complete());
        let rest = t.text_done().expect("the rest");
        assert_eq!(rest, "Thi");
        let c = t.request(rest);
        let out = t.arrived(c, Err("503".into()));
        assert_eq!(
            kinds(&out),
            ["synthesis_failed"],
            "a failed chunk is skipped"
        );
        assert!(t.is_complete());
        assert_eq!(t.audio_ms(), 300);
        assert_eq!(
            t.done_frame(),
            ServerFrame::SpeechDone {
                turn: 7,
                chunks: 3,
                audio_ms: 300
            }
        );
        assert!(t.arrived(0, Ok(vec![1])).is_empty(), "a repeat is dropped");
    }

    #[test]
    fn a_stopped_turn_asks_for_nothing_more_but_sends_what_was_asked() {
        let mut t = SpeechTurn::new(1, 8000);
        let s = t.text("One whole sentence. ");
        assert!(s.is_empty(), "the next must have arrived");
        let s = t.text("Two");
        let seq = t.request(s[0].clone());
        t.stop();
        assert!(t.text(" more. Three more. ").is_empty());
        assert_eq!(t.text_done(), None);
        assert!(!t.is_complete());
        assert_eq!(
            kinds(&t.arrived(seq, Ok(vec![0; 80]))),
            ["speech 0", "audio 0"]
        );
        assert!(t.is_complete());
    }
}
