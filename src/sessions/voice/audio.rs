//! Audio at the edge: [`AudioGate`] and [`validate_audio_frame`] refuse audio before `start`,
//! odd byte counts, empty or over-long frames and audio faster than real time; [`pcm16le_samples`]
//! and [`wav_bytes`] convert PCM; [`level_dbfs`] and [`zero_crossing_rate`] measure it.

use super::wire::{AudioFormat, VoiceError, MAX_FRAME_MS, REALTIME_TOLERANCE_MS};

/// Level reported for digital silence, in dBFS (the floor of [`level_dbfs`]).
pub const SILENCE_DBFS: f32 = -100.0;

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
    let rate = u64::from(gate.format.sample_rate());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::voice::synth::*;

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

    // --- test signals (the synth module, measured here) -------------------------------------

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
}
