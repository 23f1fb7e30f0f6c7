//! Deterministic test signals: speech-like bursts, tones and white noise, for unit tests,
//! end-to-end tests and benchmarks. Same arguments, same samples, on every platform that
//! rounds `f32` the IEEE way.

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

/// Uniform white noise with RMS level `level_dbfs` (as the audio module's
/// `level_dbfs` measures it).
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
