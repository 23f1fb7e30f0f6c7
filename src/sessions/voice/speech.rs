//! Speech out, the pure parts: the reply cut into sentences as it streams ([`Chunker`], so
//! synthesis starts after the first sentence rather than after the whole reply), the WAV a
//! speech provider answers read back to samples ([`parse_wav`]) and brought to the session's
//! rate ([`resample`]), and the binary frame a chunk of speech travels in ([`speech_frame`]).
//!
//! The frame (documented in `docs/SESSIONS.md`, "Speech out"): a 16-byte header — the ASCII
//! magic `RKS1`, the turn as a little-endian `u64`, the chunk's sequence number within the
//! turn as a little-endian `u32` — then 16-bit little-endian mono PCM at the session's rate.

use super::audio::pcm16le_samples;

/// Magic that opens every speech frame.
pub const SPEECH_MAGIC: &[u8; 4] = b"RKS1";
/// Bytes of the speech frame header (magic, turn, sequence number).
pub const SPEECH_HEADER_BYTES: usize = 16;
/// A sentence shorter than this is held and sent with the next one (a lone "Sure." is not
/// worth a synthesis call of its own), characters.
pub const MIN_CHUNK_CHARS: usize = 12;
/// Text without a sentence end is cut at a comma or a space before this many characters, so a
/// run-on reply still starts speaking.
pub const MAX_CHUNK_CHARS: usize = 240;
/// Words that end in a full stop without ending a sentence.
const TITLES: &[&str] = &["mr", "mrs", "ms", "dr", "st", "prof", "mt", "no", "vs"];
/// Largest WAV a speech provider may answer for one chunk, bytes (about 60 s at 48 kHz).
pub const MAX_SPEECH_WAV_BYTES: usize = 6 * 1024 * 1024;

/// Cuts streaming reply text into sentences to synthesize, in order.
#[derive(Debug, Clone, Default)]
pub struct Chunker {
    held: String,
}

impl Chunker {
    /// Adds reply text; answers the sentences it completed (each trimmed, none empty).
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.held.push_str(text);
        let mut out = Vec::new();
        while let Some(end) = self.next_end() {
            let rest = self.held.split_off(end);
            let chunk = std::mem::replace(&mut self.held, rest);
            let chunk = chunk.trim();
            if !chunk.is_empty() {
                out.push(chunk.to_string());
            }
        }
        out
    }

    /// The reply is complete: what is left, if anything.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.held);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_string())
    }

    /// The byte offset just past the first sentence of at least [`MIN_CHUNK_CHARS`] in
    /// `held`: a `.`, `!`, `?` or `…` (with any closing quotes or brackets) followed by
    /// white space, or a line break; failing that, a cut before [`MAX_CHUNK_CHARS`].
    fn next_end(&self) -> Option<usize> {
        let s = self.held.as_str();
        let mut chars = s.char_indices().peekable();
        let mut count = 0;
        while let Some((i, c)) = chars.next() {
            count += 1;
            let is_end = matches!(c, '.' | '!' | '?' | '…');
            if c == '\n' && count > 1 {
                return Some(i + 1);
            }
            if !is_end || count < MIN_CHUNK_CHARS {
                continue;
            }
            let mut end = i + c.len_utf8();
            while let Some(&(j, q)) = chars.peek() {
                if matches!(q, '"' | '\'' | ')' | ']' | '”' | '’' | '.' | '!' | '?') {
                    end = j + q.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            // Only white space after it ends a sentence ("3.5" does not), and only when what
            // follows has arrived and does not go on in lower case ("e.g. on a sale"), nor
            // follows a title ("Mr. Smith").
            let after = &s[end..];
            let next = after.trim_start();
            if !after.starts_with(char::is_whitespace) || next.is_empty() {
                continue;
            }
            let word = s[..i].rsplit(|c: char| !c.is_alphanumeric()).next();
            let title =
                c == '.' && word.is_some_and(|w| TITLES.contains(&w.to_lowercase().as_str()));
            if !title && !next.starts_with(char::is_lowercase) {
                return Some(end);
            }
        }
        if s.chars().count() > MAX_CHUNK_CHARS {
            let limit = s
                .char_indices()
                .nth(MAX_CHUNK_CHARS)
                .map_or(s.len(), |(i, _)| i);
            let cut = s[..limit]
                .rfind([',', ';', ':'])
                .map(|i| i + 1)
                .or_else(|| s[..limit].rfind(' '))
                .filter(|&i| i > 0)
                .unwrap_or(limit);
            return Some(cut);
        }
        None
    }
}

/// Why a speech provider's answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    /// Not a RIFF/WAVE file.
    #[error("the speech provider's answer is not a WAV file")]
    NotWav,
    /// A WAV, but not 16-bit PCM, or with no `fmt ` or `data` chunk.
    #[error("the speech provider's WAV is not 16-bit PCM ({0})")]
    Unsupported(String),
    /// Larger than [`MAX_SPEECH_WAV_BYTES`].
    #[error("the speech provider's WAV is over {MAX_SPEECH_WAV_BYTES} bytes")]
    TooLarge,
}

/// The samples (mono; channels averaged) and sample rate of a 16-bit PCM WAV. A `data` chunk
/// whose size is unknown (streamed WAVs say `0xFFFFFFFF` or 0) runs to the end of the file.
pub fn parse_wav(bytes: &[u8]) -> Result<(u32, Vec<i16>), WavError> {
    if bytes.len() > MAX_SPEECH_WAV_BYTES {
        return Err(WavError::TooLarge);
    }
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWav);
    }
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let mut at = 12;
    let mut format: Option<(u16, u16, u32, u16)> = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32_at(at + 4) as usize;
        let body = at + 8;
        if id == b"fmt " {
            if size < 16 || body + 16 > bytes.len() {
                return Err(WavError::Unsupported("short fmt chunk".into()));
            }
            format = Some((
                u16_at(body),
                u16_at(body + 2),
                u32_at(body + 4),
                u16_at(body + 14),
            ));
        } else if id == b"data" {
            let (tag, channels, rate, bits) =
                format.ok_or_else(|| WavError::Unsupported("data before fmt".into()))?;
            // 1: PCM; 0xFFFE: WAVE_FORMAT_EXTENSIBLE (its PCM subformat is all we accept).
            if !(tag == 1 || tag == 0xFFFE) || bits != 16 || channels == 0 || rate == 0 {
                return Err(WavError::Unsupported(format!(
                    "format {tag}, {bits} bits, {channels} channels, {rate} Hz"
                )));
            }
            let end = if size == 0 || size == u32::MAX as usize {
                bytes.len()
            } else {
                (body + size).min(bytes.len())
            };
            let samples = pcm16le_samples(&bytes[body..end - (end - body) % 2]);
            let ch = usize::from(channels);
            let mono = samples
                .chunks_exact(ch)
                .map(|f| (f.iter().map(|&s| i32::from(s)).sum::<i32>() / ch as i32) as i16)
                .collect();
            return Ok((rate, mono));
        }
        at = body + size + size % 2;
    }
    Err(WavError::Unsupported("no data chunk".into()))
}

/// `samples` at `from` Hz brought to `to` Hz by linear interpolation (enough for speech played
/// back; no new frequencies above the lower rate's band are invented).
pub fn resample(samples: &[i16], from: u32, to: u32) -> Vec<i16> {
    if from == to || samples.is_empty() || from == 0 || to == 0 {
        return samples.to_vec();
    }
    let n = (samples.len() as u64 * u64::from(to) / u64::from(from)) as usize;
    let step = f64::from(from) / f64::from(to);
    (0..n)
        .map(|i| {
            let x = i as f64 * step;
            let j = x.floor() as usize;
            let a = f64::from(samples[j.min(samples.len() - 1)]);
            let b = f64::from(samples[(j + 1).min(samples.len() - 1)]);
            (a + (b - a) * (x - j as f64)).round() as i16
        })
        .collect()
}

/// One chunk of speech as a binary frame: the [`SPEECH_HEADER_BYTES`] header, then the samples.
pub fn speech_frame(turn: u64, seq: u32, samples: &[i16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SPEECH_HEADER_BYTES + samples.len() * 2);
    out.extend_from_slice(SPEECH_MAGIC);
    out.extend_from_slice(&turn.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, channels: u16, bits: u16, data: &[u8], size: Option<u32>) -> Vec<u8> {
        let mut out = b"RIFF\0\0\0\0WAVE".to_vec();
        out.extend_from_slice(b"LIST\x04\0\0\0INFO"); // a chunk to skip
        out.extend_from_slice(b"fmt \x10\0\0\0");
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
        out.extend_from_slice(&(channels * 2).to_le_bytes());
        out.extend_from_slice(&bits.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&size.unwrap_or(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        out
    }

    fn le(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    #[test]
    fn sentences_come_out_as_they_complete() {
        let mut c = Chunker::default();
        assert!(
            c.push("Sure. I can hel").is_empty(),
            "'Sure.' is too short alone"
        );
        assert_eq!(
            c.push("p with that! Wh"),
            vec!["Sure. I can help with that!"]
        );
        assert!(
            c.push("at is the address?").is_empty(),
            "no space after it yet"
        );
        assert!(c.push(" ").is_empty(), "nor what follows it");
        assert_eq!(c.push("It costs 3.5 percent"), vec!["What is the address?"]);
        assert!(c.push(", e.g. on a sale").is_empty());
        assert!(c.push(" for Mr. Smith").is_empty());
        assert_eq!(
            c.push(" of a flat.\" Then more\nand"),
            vec![
                "It costs 3.5 percent, e.g. on a sale for Mr. Smith of a flat.\"",
                "Then more"
            ]
        );
        assert_eq!(c.finish(), Some("and".to_string()));
        assert_eq!(c.finish(), None);
    }

    #[test]
    fn a_run_on_reply_is_cut_at_a_comma_or_space() {
        let mut c = Chunker::default();
        let long = format!("{}, {}", "word ".repeat(30), "more ".repeat(30));
        let out = c.push(&long);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].ends_with(','), "{out:?}");
        assert!(out[0].chars().count() <= MAX_CHUNK_CHARS);
        let spaced = "abcd ".repeat(60);
        let out = Chunker::default().push(&spaced);
        assert!(out[0].chars().count() <= MAX_CHUNK_CHARS && out[0].ends_with("abcd"));
        let solid = "x".repeat(MAX_CHUNK_CHARS + 10);
        assert_eq!(Chunker::default().push(&solid)[0].len(), MAX_CHUNK_CHARS);
    }

    #[test]
    fn wav_reads_back_mono_and_stereo_and_streamed_sizes() {
        let (rate, s) = parse_wav(&wav(22050, 1, 16, &le(&[1, -2, 300]), None)).unwrap();
        assert_eq!((rate, s), (22050, vec![1, -2, 300]));
        let (_, s) = parse_wav(&wav(16000, 2, 16, &le(&[100, 300, -10, -30]), None)).unwrap();
        assert_eq!(s, vec![200, -20], "channels averaged");
        let (_, s) = parse_wav(&wav(24000, 1, 16, &le(&[5, 6, 7]), Some(u32::MAX))).unwrap();
        assert_eq!(s, vec![5, 6, 7], "a streamed WAV runs to the end");
        assert_eq!(parse_wav(b"ID3 not a wav"), Err(WavError::NotWav));
        assert!(matches!(
            parse_wav(&wav(16000, 1, 8, &[1, 2], None)),
            Err(WavError::Unsupported(_))
        ));
        let big = vec![0; MAX_SPEECH_WAV_BYTES + 1];
        assert_eq!(parse_wav(&big), Err(WavError::TooLarge));
    }

    #[test]
    fn resampling_keeps_duration_and_shape() {
        let ramp: Vec<i16> = (0..2205).map(|i| i as i16).collect(); // 100 ms at 22.05 kHz
        let out = resample(&ramp, 22050, 16000);
        assert_eq!(out.len(), 1600, "still 100 ms");
        assert!(out.windows(2).all(|w| w[1] >= w[0]), "a ramp stays a ramp");
        assert_eq!(out[0], 0);
        assert_eq!(resample(&ramp, 16000, 16000), ramp);
        assert_eq!(resample(&[7, 9], 8000, 16000), vec![7, 8, 9, 9]);
    }

    #[test]
    fn a_speech_frame_is_its_header_then_pcm() {
        let f = speech_frame(3, 1, &[1, -1]);
        assert_eq!(&f[..4], b"RKS1");
        assert_eq!(u64::from_le_bytes(f[4..12].try_into().unwrap()), 3);
        assert_eq!(u32::from_le_bytes(f[12..16].try_into().unwrap()), 1);
        assert_eq!(&f[16..], &[1, 0, 0xff, 0xff]);
    }
}
