//! Voice: concurrent sessions streaming real-time audio into Voice objects.
//!
//! Each session connects to `/api/voice/:session/ws`, sends `start` (16 kHz PCM16 mono) and
//! streams the same generated signal — speech-like bursts ([`BURSTS`]) in silence — in 20 ms
//! binary frames at real-time pace (each frame leaves on its 20 ms tick). A reader per session
//! collects the server's events. Measured: frames handled per second across all sessions,
//! refused frames, utterances detected against the bursts sent, the runtime's CPU per second
//! of audio, and the VAD latency: from sending the last frame of a burst to receiving its
//! `speech_end` — which by design includes the VAD's hangover (the silence it waits for before
//! it calls speech over, 300 ms by default), reported separately.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::stats::{Cpu, CpuDelta, Samples};
use crate::Ctx;

/// Sample rate of the stream.
const RATE: u32 = 16_000;
/// One frame: 20 ms.
const FRAME_MS: u32 = 20;
/// Speech-like bursts of every session's signal, `(start_ms, duration_ms)`.
pub const BURSTS: &[(u32, u32)] = &[(500, 1200), (2500, 1200), (4500, 1000)];
/// Length of every session's signal, ms.
const TOTAL_MS: u32 = 6_500;
/// The VAD's hangover with the default settings (`VadConfig::default().hangover_ms`).
pub fn hangover_ms() -> u32 {
    roomkeeper::sessions::voice::VadConfig::default().hangover_ms
}

/// What a voice run measured.
pub struct VoiceOutcome {
    /// Sessions that ran to the end.
    pub sessions: usize,
    /// Audio frames sent (all sessions).
    pub frames: u64,
    /// Frames refused with an error frame.
    pub refused: u64,
    /// First refusal or failure, for the report.
    pub first_error: Option<String>,
    /// `utterance` events received (all sessions).
    pub utterances: u64,
    /// Sending the last frame of a burst → its `speech_end` (µs).
    pub vad_latency: Samples,
    /// From the first frame to the last frame sent, all sessions.
    pub stream_wall: Duration,
    /// Runtime CPU over the run (connect to last event).
    pub cpu: CpuDelta,
}

impl VoiceOutcome {
    /// Frames handled per second across all sessions.
    pub fn frames_per_s(&self) -> f64 {
        (self.frames - self.refused) as f64 / self.stream_wall.as_secs_f64().max(1e-9)
    }

    /// Runtime CPU per second of audio received, ms.
    pub fn cpu_ms_per_audio_s(&self) -> f64 {
        let audio_s = (self.frames - self.refused) as f64 * f64::from(FRAME_MS) / 1000.0;
        self.cpu.runtime_us as f64 / 1000.0 / audio_s.max(1e-9)
    }
}

/// Runs `sessions` voice sessions at once, each streaming the signal once.
pub async fn run(ctx: &Ctx, sessions: usize) -> Result<VoiceOutcome, String> {
    let pcm = roomkeeper::sessions::voice::synth::speech_like(BURSTS, TOTAL_MS, RATE);
    let frames: Vec<Vec<u8>> = pcm
        .chunks((RATE * FRAME_MS / 1000) as usize)
        .map(|c| c.iter().flat_map(|s| s.to_le_bytes()).collect())
        .collect();
    let frames = Arc::new(frames);
    // Index of the last frame of each burst.
    let burst_ends: Vec<usize> = BURSTS
        .iter()
        .map(|(s, d)| ((s + d) / FRAME_MS) as usize - 1)
        .collect();
    // Connect every session first, so the streams run together.
    let mut sockets = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let url = format!(
            "{}/api/voice/{}/ws?token={}",
            ctx.ws,
            ctx.room(&format!("v{i}")),
            ctx.token
        );
        let (ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .map_err(|e| format!("voice connect: {e}"))?;
        sockets.push(ws);
    }
    let cpu0 = Cpu::now(&ctx.workerd);
    let first_frame = Arc::new(Mutex::new(None::<Instant>));
    let last_frame = Arc::new(Mutex::new(None::<Instant>));
    let mut tasks = Vec::new();
    for ws in sockets {
        let (frames, ends) = (Arc::clone(&frames), burst_ends.clone());
        let (first, last) = (Arc::clone(&first_frame), Arc::clone(&last_frame));
        tasks.push(tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let start = serde_json::json!({"type": "start",
                "format": {"encoding": "pcm16le", "sample_rate": RATE, "channels": 1}});
            sink.send(WsMessage::Text(start.to_string().into()))
                .await
                .map_err(|e| e.to_string())?;
            // Burst end send times, shared with the reader.
            let sent_ends: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
            let reader_ends = Arc::clone(&sent_ends);
            let reader = tokio::spawn(async move {
                let mut events: Vec<(Instant, Value)> = Vec::new();
                let deadline = tokio::time::Instant::now()
                    + Duration::from_millis(u64::from(TOTAL_MS) + 5_000);
                while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, stream.next()).await {
                    if let WsMessage::Text(t) = m {
                        if let Ok(v) = serde_json::from_str::<Value>(&t) {
                            let done = v["type"] == "utterance"
                                && v["id"].as_u64() == Some(BURSTS.len() as u64 - 1);
                            events.push((Instant::now(), v));
                            if done {
                                break;
                            }
                        }
                    }
                }
                let ends = reader_ends.lock().unwrap().clone();
                (events, ends)
            });
            let mut tick = tokio::time::interval(Duration::from_millis(u64::from(FRAME_MS)));
            for (i, f) in frames.iter().enumerate() {
                tick.tick().await;
                let now = Instant::now();
                first.lock().unwrap().get_or_insert(now);
                sink.send(WsMessage::Binary(f.clone().into()))
                    .await
                    .map_err(|e| e.to_string())?;
                if ends.contains(&i) {
                    sent_ends.lock().unwrap().push(Instant::now());
                }
            }
            {
                let mut l = last.lock().unwrap();
                let now = Instant::now();
                if l.is_none_or(|t| t < now) {
                    *l = Some(now);
                }
            }
            let (events, ends) = reader.await.map_err(|e| e.to_string())?;
            let _ = sink.send(WsMessage::Close(None)).await;
            Ok::<_, String>((frames.len() as u64, events, ends))
        }));
    }
    let mut out = VoiceOutcome {
        sessions: 0,
        frames: 0,
        refused: 0,
        first_error: None,
        utterances: 0,
        vad_latency: Samples::default(),
        stream_wall: Duration::ZERO,
        cpu: cpu0.since(&ctx.workerd),
    };
    for t in tasks {
        match t.await.map_err(|e| e.to_string())? {
            Ok((n, events, ends)) => {
                out.sessions += 1;
                out.frames += n;
                let mut speech_ends = Vec::new();
                for (at, v) in &events {
                    match v["type"].as_str() {
                        Some("error") => {
                            out.refused += 1;
                            out.first_error.get_or_insert_with(|| v.to_string());
                        }
                        Some("utterance") => out.utterances += 1,
                        Some("speech_end") => speech_ends.push(*at),
                        _ => {}
                    }
                }
                for (end_sent, end_seen) in ends.iter().zip(&speech_ends) {
                    let us = end_seen.saturating_duration_since(*end_sent).as_micros();
                    out.vad_latency.0.push(us as u64);
                }
            }
            Err(e) => {
                out.first_error.get_or_insert(e);
            }
        }
    }
    out.cpu = cpu0.since(&ctx.workerd);
    let (first, last) = (*first_frame.lock().unwrap(), *last_frame.lock().unwrap());
    if let (Some(f), Some(l)) = (first, last) {
        out.stream_wall = l - f;
    }
    Ok(out)
}
