//! Speaking: the voice-to-voice latency Roomkeeper itself adds.
//!
//! A server is started with an OpenAI-compatible provider that answers at once (this
//! process's [`Provider`]: a fixed transcript, a two-sentence streamed reply with no pauses, a
//! cached 1 s WAV for every sentence), so what is measured is Roomkeeper's own path: the
//! router, the Voice object, the VAD, building the utterance's WAV, the three provider calls'
//! plumbing, sentence chunking, reading back and resampling the WAV, and the frames out. The
//! provider's own time is measured too (per call, in the provider) and taken out.
//!
//! Each session connects to its own Voice object, streams one speech-like burst at real-time
//! pace in 20 ms frames, and reads until its `timings`. Per session: from sending the burst's
//! last frame to the first speech chunk received (voice to voice as the client sees it, with
//! the VAD's 300 ms hangover in it), from receiving `speech_end` to that chunk, and the
//! server's own `timings.first_audio_ms` (from `speech_end` to the chunk sent).

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::stats::{Cpu, CpuDelta, Samples};
use crate::Ctx;
use roomkeeper_testkit::harness::{read_request, HttpRequest};

const RATE: u32 = 16_000;
const FRAME_MS: u32 = 20;
/// The one burst every session speaks, `(start_ms, duration_ms)`, and the stream's length.
const BURST: (u32, u32) = (300, 1200);
const TOTAL_MS: u32 = 2_500;
/// The reply the provider streams: two sentences, so the first is spoken before the second
/// is generated.
const REPLY: &[&str] = &["Happy to help. ", "We can value ", "your home this week."];

/// An OpenAI-compatible provider that answers at once, timing its own work per call.
pub struct Provider {
    pub url: String,
    /// (path, µs from the request read to the answer written).
    pub calls: Arc<Mutex<Vec<(String, u64)>>>,
}

impl Provider {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the bench provider");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&calls);
        let tone: Vec<i16> = (0..RATE)
            .map(|i| ((i as f32 * 0.05).sin() * 6000.0) as i16)
            .collect();
        let wav = Arc::new(roomkeeper::sessions::voice::wav_bytes(&tone, RATE));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (shared, wav) = (Arc::clone(&shared), Arc::clone(&wav));
                std::thread::spawn(move || serve(stream, &shared, &wav));
            }
        });
        Self { url, calls }
    }

    /// Mean µs per call of `path` since the last reset, and how many.
    pub fn mean_us(&self, path: &str) -> (f64, usize) {
        let calls = self.calls.lock().unwrap();
        let of: Vec<u64> = calls.iter().filter(|c| c.0 == path).map(|c| c.1).collect();
        let n = of.len();
        (of.iter().sum::<u64>() as f64 / n.max(1) as f64, n)
    }

    pub fn reset(&self) {
        self.calls.lock().unwrap().clear();
    }
}

fn serve(stream: std::net::TcpStream, calls: &Mutex<Vec<(String, u64)>>, wav: &[u8]) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream);
    let Some(HttpRequest { path, .. }) = read_request(&mut reader) else {
        return;
    };
    let t = Instant::now();
    let mut s = reader.into_inner();
    let ok = |s: &mut std::net::TcpStream, ty: &str, body: &[u8]| {
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: {ty}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(body);
    };
    match path.as_str() {
        "/v1/audio/transcriptions" => ok(&mut s, "application/json", br#"{"text":"hello"}"#),
        "/v1/audio/speech" => ok(&mut s, "audio/wav", wav),
        "/v1/chat/completions" => {
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            );
            for piece in REPLY {
                let chunk = serde_json::json!({"choices": [{"delta": {"content": piece}}]});
                let _ = write!(s, "data: {chunk}\n\n");
                let _ = s.flush();
            }
            let _ = write!(s, "data: [DONE]\n\n");
        }
        _ => {
            let _ = write!(
                s,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    }
    let _ = s.flush();
    let us = t.elapsed().as_micros() as u64;
    // SPEAKING_TRACE=1: when each call arrived (to see how a burst of turns leaves workerd).
    if std::env::var_os("SPEAKING_TRACE").is_some() {
        eprintln!(
            "trace {path} at {:?} took {us} µs",
            std::time::SystemTime::now()
        );
    }
    calls.lock().unwrap().push((path, us));
}

/// What a speaking run measured.
pub struct SpeakOutcome {
    pub sessions: usize,
    /// Sessions whose turn was spoken (a chunk and `timings` came).
    pub spoken: usize,
    pub first_error: Option<String>,
    /// The burst's last frame sent → the first speech chunk received (µs).
    pub voice_to_voice: Samples,
    /// `speech_end` received → the first speech chunk received (µs).
    pub after_end: Samples,
    /// The server's `timings.first_audio_ms` (µs).
    pub server_first_audio: Samples,
    /// The server's `timings.transcript_ms` and `first_token_ms` (µs).
    pub server_transcript: Samples,
    pub server_first_token: Samples,
    pub cpu: CpuDelta,
}

/// Runs `sessions` sessions at once, each speaking one burst and hearing the reply. With
/// `stagger_ms`, session `i`'s burst starts `i × stagger_ms / sessions` later (the streams
/// still run together), so the turns do not all end in the same 20 ms.
pub async fn run(
    ctx: &Ctx,
    provider: &Provider,
    sessions: usize,
    stagger_ms: u32,
) -> Result<SpeakOutcome, String> {
    let signal = |i: usize| {
        let shift = (i as u32 * stagger_ms / sessions.max(1) as u32) / FRAME_MS * FRAME_MS;
        let burst = (BURST.0 + shift, BURST.1);
        let pcm =
            roomkeeper::sessions::voice::synth::speech_like(&[burst], TOTAL_MS + stagger_ms, RATE);
        let frames: Vec<Vec<u8>> = pcm
            .chunks((RATE * FRAME_MS / 1000) as usize)
            .map(|c| c.iter().flat_map(|s| s.to_le_bytes()).collect())
            .collect();
        (
            Arc::new(frames),
            ((burst.0 + burst.1) / FRAME_MS) as usize - 1,
        )
    };
    let mut sockets = Vec::with_capacity(sessions);
    for i in 0..sessions {
        // A user per session, as real callers are (each has its own Quota object); signed
        // here with the local development secret (wrangler.toml), as the dev endpoint would.
        let claims: roomkeeper::auth::Claims = serde_json::from_value(serde_json::json!({
            "sub": format!("speaker-{}-{i}", ctx.run),
            "rooms": ["*"],
            "exp": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 3600,
        }))
        .map_err(|e| e.to_string())?;
        let token = roomkeeper::auth::mint(&claims, b"roomkeeper-local-dev-secret");
        let url = format!(
            "{}/api/voice/{}/ws?token={token}",
            ctx.ws,
            ctx.room(&format!("speak{i}")),
        );
        let (ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .map_err(|e| format!("voice connect: {e}"))?;
        sockets.push(ws);
    }
    provider.reset();
    let cpu0 = Cpu::now(&ctx.workerd);
    let mut tasks = Vec::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        let (frames, last_voiced) = signal(i);
        tasks.push(tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let start = serde_json::json!({"type": "start",
                "format": {"encoding": "pcm16le", "sample_rate": RATE, "channels": 1}});
            sink.send(WsMessage::Text(start.to_string().into()))
                .await
                .map_err(|e| e.to_string())?;
            let reader = tokio::spawn(async move {
                let (mut end, mut audio, mut timings, mut error) = (None, None, None, None);
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, stream.next()).await {
                    let now = Instant::now();
                    match m {
                        WsMessage::Binary(b) if b.starts_with(b"RKS1") => {
                            audio.get_or_insert(now);
                        }
                        WsMessage::Text(t) => {
                            let v: Value = serde_json::from_str(&t).unwrap_or_default();
                            match v["type"].as_str() {
                                Some("speech_end") => end = end.or(Some(now)),
                                Some("error") => error = error.or(Some(v.to_string())),
                                Some("timings") => {
                                    timings = Some(v);
                                    break;
                                }
                                _ => {}
                            }
                        }
                        _ => {}
                    }
                }
                (end, audio, timings, error, stream)
            });
            let mut tick = tokio::time::interval(Duration::from_millis(u64::from(FRAME_MS)));
            let mut sent_last = None;
            for (i, f) in frames.iter().enumerate() {
                tick.tick().await;
                sink.send(WsMessage::Binary(f.clone().into()))
                    .await
                    .map_err(|e| e.to_string())?;
                if i == last_voiced {
                    sent_last = Some(Instant::now());
                }
            }
            let (end, audio, timings, error, _stream) = reader.await.map_err(|e| e.to_string())?;
            let _ = sink.send(WsMessage::Close(None)).await;
            Ok::<_, String>((sent_last, end, audio, timings, error))
        }));
    }
    let mut out = SpeakOutcome {
        sessions: 0,
        spoken: 0,
        first_error: None,
        voice_to_voice: Samples::default(),
        after_end: Samples::default(),
        server_first_audio: Samples::default(),
        server_transcript: Samples::default(),
        server_first_token: Samples::default(),
        cpu: cpu0.since(&ctx.workerd),
    };
    for t in tasks {
        match t.await.map_err(|e| e.to_string())? {
            Ok((sent_last, end, audio, timings, error)) => {
                out.sessions += 1;
                if let Some(e) = error {
                    out.first_error.get_or_insert(e);
                }
                let stage = |t: &Value, k: &str| t[k].as_u64().map(|ms| ms * 1000);
                if let (Some(sent), Some(end), Some(audio), Some(t)) =
                    (sent_last, end, audio, timings)
                {
                    out.spoken += 1;
                    let us =
                        |a: Instant, b: Instant| b.saturating_duration_since(a).as_micros() as u64;
                    out.voice_to_voice.0.push(us(sent, audio));
                    out.after_end.0.push(us(end, audio));
                    out.server_first_audio.0.extend(stage(&t, "first_audio_ms"));
                    out.server_transcript.0.extend(stage(&t, "transcript_ms"));
                    out.server_first_token.0.extend(stage(&t, "first_token_ms"));
                }
            }
            Err(e) => {
                out.first_error.get_or_insert(e);
            }
        }
    }
    out.cpu = cpu0.since(&ctx.workerd);
    Ok(out)
}
