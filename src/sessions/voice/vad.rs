//! Voice activity detection: [`Vad`] finds utterances in a PCM stream (energy over an adaptive
//! noise floor, a zero-crossing guard against broadband noise, attack, hangover, minimum and
//! maximum utterance length) and yields [`VadEvent`]s carrying each utterance's [`Segment`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::audio::{level_dbfs, zero_crossing_rate};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::voice::synth::*;
    use crate::sessions::voice::wire::ALLOWED_SAMPLE_RATES;

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
}
