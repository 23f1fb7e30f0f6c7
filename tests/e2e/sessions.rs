//! Voice and chatbot sessions end to end: real PCM at real-time pace into the Voice object,
//! a real local OpenAI-compatible server as the provider, the built-in provider, every
//! bad-input code, and a chatbot conversation that ends in a stored, scored lead.

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::Ctx;
use roomkeeper_testkit::harness::{
    http, metrics, read_request, room, Client, Enc, HttpRequest, Server, TempDir, DEV_API_KEY,
};

/// Deltas the fake completion server streams per reply, 100 ms apart.
const DELTAS: usize = 8;

/// One request the fake provider received.
#[derive(Debug, Clone)]
pub(crate) struct ProviderCall {
    pub(crate) path: String,
    /// The body contained a WAV file (RIFF/WAVE header) — transcriptions only.
    pub(crate) wav: bool,
    /// The body as text (JSON for completions; lossy for multipart).
    pub(crate) body: String,
    /// The body as received.
    raw: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The samples of the WAV file inside a multipart body (its `data` chunk).
fn wav_samples(raw: &[u8]) -> Option<&[u8]> {
    let riff = find(raw, b"RIFF")?;
    let data = riff + find(&raw[riff..], b"data")?;
    let len = u32::from_le_bytes(raw.get(data + 4..data + 8)?.try_into().ok()?) as usize;
    raw.get(data + 8..data + 8 + len)
}

/// Where `part` (an utterance's samples, silence-padded) sits in `sent`, if every byte of it
/// is there in order: located by its first non-silent 64 bytes, then compared whole.
fn position_in(sent: &[u8], part: &[u8]) -> Option<usize> {
    let k = part.iter().position(|&b| b != 0)? & !1;
    let anchor = part.get(k..k + 64)?;
    let mut from = 0;
    while let Some(p) = find(&sent[from..], anchor) {
        let at = from + p;
        if at >= k && sent.get(at - k..at - k + part.len()) == Some(part) {
            return Some(at - k);
        }
        from = at + 2;
    }
    None
}

/// A real local OpenAI-compatible server: `/v1/audio/transcriptions` answers
/// `{"text": "utterance N"}`, `/v1/chat/completions` streams [`DELTAS`] SSE deltas 100 ms
/// apart (or answers 500 when the last user message contains `FAIL`), `/v1/audio/speech`
/// speaks its input with Debian's `espeak-ng` (500 when it contains `MUTE`), `/v1/turn` is an
/// end-of-turn model that calls odd utterances unfinished and even ones finished. One thread per
/// connection so a slow stream never holds up a transcription.
pub(crate) struct FakeProvider {
    pub(crate) url: String,
    calls: Arc<Mutex<Vec<ProviderCall>>>,
    /// While set, transcriptions answer 500.
    fail_stt: Arc<AtomicBool>,
}

impl FakeProvider {
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake provider");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&calls);
        let fail_stt = Arc::new(AtomicBool::new(false));
        let failing = Arc::clone(&fail_stt);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = Arc::clone(&shared);
                let failing = Arc::clone(&failing);
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut reader = BufReader::new(stream);
                    let Some(HttpRequest { path, body, .. }) = read_request(&mut reader) else {
                        return;
                    };
                    let wav = body.windows(4).any(|w| w == b"RIFF")
                        && body.windows(4).any(|w| w == b"WAVE");
                    let text = String::from_utf8_lossy(&body).into_owned();
                    let n = {
                        let mut calls = shared.lock().unwrap();
                        calls.push(ProviderCall {
                            path: path.clone(),
                            wav,
                            body: text.clone(),
                            raw: body.clone(),
                        });
                        calls.iter().filter(|c| c.path == path).count()
                    };
                    let mut s = reader.into_inner();
                    if path == "/v1/audio/transcriptions" && failing.load(Ordering::SeqCst) {
                        let _ = write!(
                            s,
                            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\
                             Connection: close\r\n\r\nfail"
                        );
                    } else if path == "/v1/audio/transcriptions" {
                        let reply = json!({ "text": format!("utterance {n}") }).to_string();
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                            reply.len()
                        );
                    } else if path == "/v1/chat/completions" {
                        let last_user = serde_json::from_str::<Value>(&text)
                            .ok()
                            .and_then(|v| v["messages"].as_array().and_then(|m| m.last().cloned()))
                            // Its last line: consecutive user turns (one after a failed
                            // reply) reach the provider joined as one message.
                            .map(|m| {
                                let content = m["content"].as_str().unwrap_or("");
                                content.lines().last().unwrap_or("").to_string()
                            })
                            .unwrap_or_default();
                        if last_user.contains("FAIL") {
                            let _ = write!(
                                s,
                                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\
                                 Connection: close\r\n\r\nfail"
                            );
                            return;
                        }
                        if last_user.contains("STALL") {
                            std::thread::sleep(Duration::from_secs(3));
                        }
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                             Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
                        );
                        let _ = s.flush();
                        for i in 0..DELTAS {
                            // Sentences of three words: "w0 w1 w2. W3 w4 w5. W6 w7".
                            let end = if i % 3 == 2 { ". " } else { " " };
                            let w = if i % 3 == 0 && i > 0 { 'W' } else { 'w' };
                            let chunk = json!({"choices": [{"delta": {"content": format!("{w}{i}{end}")}}]});
                            if write!(s, "data: {chunk}\n\n").is_err() || s.flush().is_err() {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        let usage = json!({"choices": [], "usage": {"completion_tokens": DELTAS}});
                        let _ = write!(s, "data: {usage}\n\ndata: [DONE]\n\n");
                        let _ = s.flush();
                    } else if path == "/v1/turn" {
                        // A turn model: odd calls say the turn goes on, even ones that it ended.
                        let reply = json!({"is_complete": n % 2 == 0, "probability": if n % 2 == 0 { 0.9 } else { 0.2 }})
                            .to_string();
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                            reply.len()
                        );
                    } else if path == "/v1/audio/speech" {
                        // Real speech, by Debian's espeak-ng: a 22.05 kHz WAV.
                        let input = serde_json::from_str::<Value>(&text)
                            .ok()
                            .and_then(|v| v["input"].as_str().map(str::to_string))
                            .unwrap_or_default();
                        let wav = std::process::Command::new("espeak-ng")
                            .args(["--stdout", "--", &input])
                            .output()
                            .ok()
                            .filter(|o| o.status.success())
                            .map(|o| o.stdout);
                        match wav {
                            Some(wav) if !input.contains("MUTE") => {
                                let _ = write!(
                                    s,
                                    "HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\n\
                                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                                    wav.len()
                                );
                                let _ = s.write_all(&wav);
                            }
                            _ => {
                                let _ = write!(
                                    s,
                                    "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\
                                     Connection: close\r\n\r\nfail"
                                );
                            }
                        }
                    } else {
                        let _ = write!(
                            s,
                            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                    }
                });
            }
        });
        Self {
            url,
            calls,
            fail_stt,
        }
    }

    pub(crate) fn calls(&self, path: &str) -> Vec<ProviderCall> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }
}

pub(crate) fn start_frame(rate: u32) -> Value {
    json!({"type": "start", "format": {"encoding": "pcm16le", "sample_rate": rate, "channels": 1}})
}

pub(crate) fn pcm_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Every frame that arrives within `wait`.
pub(crate) async fn drain(c: &mut Client, wait: Duration, into: &mut Vec<Value>) {
    let deadline = tokio::time::Instant::now() + wait;
    while let Some(v) = c
        .try_recv(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        into.push(v);
    }
}

/// Streams `pcm` (16 kHz) in 20 ms frames at real-time pace, collecting frames meanwhile.
pub(crate) async fn stream_realtime(c: &mut Client, pcm: &[i16], into: &mut Vec<Value>) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for frame in pcm.chunks(320) {
        tick.tick().await;
        c.send_raw(WsMessage::Binary(pcm_bytes(frame).into())).await;
        while let Some(v) = c.try_recv(Duration::from_millis(1)).await {
            into.push(v);
        }
    }
}

/// Waits for a frame of type `t`, collecting everything before it.
pub(crate) async fn until(c: &mut Client, t: &str, into: &mut Vec<Value>) -> Value {
    for _ in 0..500 {
        let Some(v) = c.try_recv(Duration::from_secs(10)).await else {
            panic!("no {t} frame within 10 s: {into:?}");
        };
        into.push(v.clone());
        if v["type"] == t {
            return v;
        }
    }
    panic!("no {t} frame: {into:?}");
}

pub(crate) fn of_type<'a>(frames: &'a [Value], t: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == t).collect()
}

/// With a provider: two spoken bursts give exactly two utterances, each transcribed by the
/// provider from a WAV and answered by a streamed reply; an interrupt cancels a reply
/// mid-stream; a failing provider gives `generation_failed` and the session carries on; the
/// chatbot's answer is generated from the retrieved passage and keeps its sources.
pub async fn voice_and_chat_with_an_openai_compatible_provider(_ctx: Arc<Ctx>) {
    let provider = FakeProvider::start();
    let persist = TempDir::new("e2e-sessions");
    let server = Server::start_with(
        &persist.0,
        &[
            ("LLM_BASE_URL", provider.url.as_str()),
            ("LLM_CHAT_MODEL", "test-chat"),
            ("LLM_STT_MODEL", "test-stt"),
        ],
    );
    let metrics_before = metrics(&server.http()).await;
    let url = format!("{}/api/voice/{}/ws", server.ws(), room("voice"));
    let mut c = Client::connect(&url, Enc::Json).await;
    let mut frames = Vec::new();
    c.send(start_frame(16000)).await;
    until(&mut c, "started", &mut frames).await;

    // Two bursts of speech-like sound with silence around and between them.
    let pcm =
        roomkeeper::sessions::voice::synth::speech_like(&[(400, 1000), (3600, 1000)], 6500, 16000);
    stream_realtime(&mut c, &pcm, &mut frames).await;
    while of_type(&frames, "reply_done").len() < 2 {
        let v = c.recv().await;
        frames.push(v);
    }
    drain(&mut c, Duration::from_millis(500), &mut frames).await;
    let utterances = of_type(&frames, "utterance");
    assert_eq!(utterances.len(), 2, "{frames:?}");
    for (i, u) in utterances.iter().enumerate() {
        assert_eq!(u["transcribed"], true, "{u}");
        assert_eq!(u["transcript"], format!("utterance {}", i + 1), "{u}");
        assert!(u["duration_ms"].as_u64().unwrap() >= 500, "{u}");
    }
    assert_eq!(of_type(&frames, "speech_start").len(), 2, "{frames:?}");
    let stt = provider.calls("/v1/audio/transcriptions");
    assert_eq!(stt.len(), 2, "each utterance reaches the provider once");
    assert!(stt.iter().all(|c| c.wav), "transcriptions carry a WAV file");
    // Binary frames arrive intact: each WAV holds exactly the samples streamed, in order,
    // around its burst (400 ms and 3600 ms in, 1 s each at 16 kHz, 2 bytes a sample).
    let sent = pcm_bytes(&pcm);
    for (call, burst_ms) in stt.iter().zip([400usize, 3600]) {
        let samples = wav_samples(&call.raw).expect("a WAV data chunk");
        let at = position_in(&sent, samples).expect("the utterance's samples are the ones sent");
        let burst = burst_ms * 32;
        assert!(
            at <= burst && at + samples.len() >= burst + 32_000,
            "the utterance at byte {at}+{} covers the burst at {burst}",
            samples.len()
        );
    }
    assert!(stt[0].body.contains("test-stt"), "the STT model is sent");
    let done = of_type(&frames, "reply_done");
    for d in &done {
        let turn = d["turn"].as_u64().unwrap();
        let deltas: Vec<&str> = frames
            .iter()
            .filter(|f| f["type"] == "reply_delta" && f["turn"] == turn)
            .map(|f| f["text"].as_str().unwrap())
            .collect();
        assert_eq!(deltas.len(), DELTAS, "{frames:?}");
        assert_eq!(deltas.concat(), d["text"].as_str().unwrap());
    }
    assert!(of_type(&frames, "error").is_empty(), "{frames:?}");
    let chat_calls = provider.calls("/v1/chat/completions");
    assert!(chat_calls[0].body.contains("\"stream\":true"));
    assert!(chat_calls[0].body.contains("utterance 1"));

    // Interrupt mid-stream: the reply is cancelled and no more of its deltas arrive.
    let mut frames = Vec::new();
    c.send(json!({"type": "text", "text": "tell me a story"}))
        .await;
    let first = until(&mut c, "reply_delta", &mut frames).await;
    let turn = first["turn"].as_u64().unwrap();
    c.send(json!({"type": "interrupt"})).await;
    let cancelled = until(&mut c, "reply_cancelled", &mut frames).await;
    assert_eq!(cancelled["turn"], turn);
    let mut after = Vec::new();
    drain(&mut c, Duration::from_millis(1500), &mut after).await;
    assert!(
        !after
            .iter()
            .any(|f| f["turn"] == turn && (f["type"] == "reply_delta" || f["type"] == "reply_done")),
        "frames of a cancelled turn after reply_cancelled: {after:?}"
    );

    // A failing provider: an error frame, then the session still answers.
    let mut frames = Vec::new();
    c.send(json!({"type": "text", "text": "please FAIL"})).await;
    let e = until(&mut c, "error", &mut frames).await;
    assert_eq!(e["code"], "generation_failed", "{e}");
    c.send(json!({"type": "text", "text": "hello again"})).await;
    let d = until(&mut c, "reply_done", &mut frames).await;
    assert!(d["text"].as_str().unwrap().starts_with("w0 "), "{d}");
    c.close().await;

    // The chatbot generates its answer from the retrieved passage and cites it.
    let url = format!("{}/api/chat/{}/ws", server.ws(), room("chat"));
    let mut chat = Client::connect(&url, Enc::Json).await;
    let before = provider.calls("/v1/chat/completions").len();
    chat.send(json!({"type": "message", "id": "q1", "text": "how much commission do you charge"}))
        .await;
    let mut frames = Vec::new();
    let done = until(&mut chat, "reply_done", &mut frames).await;
    assert_eq!(done["id"], "q1");
    assert_eq!(done["sources"][0]["doc"], "fees-and-commission", "{done}");
    assert!(
        done["text"].as_str().unwrap().starts_with("w0 w1"),
        "{done}"
    );
    assert_eq!(of_type(&frames, "reply_delta").len(), DELTAS);
    let calls = provider.calls("/v1/chat/completions");
    assert_eq!(calls.len(), before + 1);
    let rag = &calls[before].body;
    assert!(rag.contains("Passages:") && rag.contains("1.2%"), "{rag}");
    chat.close().await;

    // The sessions' metrics moved by exactly this workload (the server is this test's own).
    let want: &[(&str, &str, i64)] = &[
        (
            "roomkeeper_ws_connections_opened_total",
            r#"kind="voice""#,
            1,
        ),
        (
            "roomkeeper_ws_connections_opened_total",
            r#"kind="chat""#,
            1,
        ),
        (
            "roomkeeper_voice_utterances_total",
            r#"transcribed="true""#,
            2,
        ),
        (
            "roomkeeper_provider_calls_total",
            r#"kind="voice",op="transcribe",outcome="ok""#,
            2,
        ),
        (
            "roomkeeper_provider_calls_total",
            r#"kind="voice",op="generate",outcome="error""#,
            1,
        ),
        (
            "roomkeeper_provider_calls_total",
            r#"kind="chat",op="generate",outcome="ok""#,
            1,
        ),
        ("roomkeeper_chat_messages_total", "", 1),
        (
            "roomkeeper_alerts_total",
            r#"kind="provider_failing",outcome="sent""#,
            1,
        ),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = metrics(&server.http()).await;
        let moved: Vec<i64> = want
            .iter()
            .map(|(n, l, _)| {
                now[n][l].as_i64().unwrap_or(0) - metrics_before[n][l].as_i64().unwrap_or(0)
            })
            .collect();
        if moved == want.iter().map(|w| w.2).collect::<Vec<_>>() {
            let latency = &now["roomkeeper_provider_latency_ms_total"];
            assert!(
                latency[r#"kind="voice",op="generate""#]
                    .as_i64()
                    .unwrap_or(0)
                    >= 700,
                "streamed replies take 100 ms a delta: {latency}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics moved by {moved:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Without a provider: a typed turn is answered from the knowledge base with its source, and
/// speech is segmented but reported untranscribed — no invented transcript.
pub async fn voice_without_a_provider_is_honest(ctx: Arc<Ctx>) {
    let url = format!("{}/api/voice/{}/ws", ctx.ws, room("voice-local"));
    let mut c = Client::connect(&url, Enc::Json).await;
    let mut frames = Vec::new();
    c.send(json!({"type": "text", "text": "how much commission do you charge"}))
        .await;
    let done = until(&mut c, "reply_done", &mut frames).await;
    let text = done["text"].as_str().unwrap();
    assert!(text.contains("1.2%"), "{text}");
    assert!(text.contains("(Source: "), "{text}");
    assert!(!of_type(&frames, "reply_delta").is_empty());

    c.send(start_frame(16000)).await;
    until(&mut c, "started", &mut frames).await;
    let pcm = roomkeeper::sessions::voice::synth::speech_like(&[(300, 900)], 2000, 16000);
    let mut frames = Vec::new();
    stream_realtime(&mut c, &pcm, &mut frames).await;
    c.send(json!({"type": "stop"})).await;
    let u = if let Some(u) = of_type(&frames, "utterance").first() {
        (*u).clone()
    } else {
        until(&mut c, "utterance", &mut frames).await
    };
    assert_eq!(u["transcribed"], false, "{u}");
    assert!(u["transcript"].is_null(), "{u}");
    assert!(u["duration_ms"].as_u64().unwrap() >= 600, "{u}");
    assert!(u["level_dbfs"].as_f64().unwrap() < 0.0, "{u}");
    drain(&mut c, Duration::from_millis(500), &mut frames).await;
    assert!(
        of_type(&frames, "reply_delta").is_empty(),
        "nothing is answered to audio nobody transcribed: {frames:?}"
    );
    c.close().await;
}

/// Every bad input answers its code, and sustained abuse closes the socket with 4500.
pub async fn voice_bad_input_gets_error_codes(ctx: Arc<Ctx>) {
    let url = format!("{}/api/voice/{}/ws", ctx.ws, room("voice-bad"));
    let mut c = Client::connect(&url, Enc::Json).await;
    let code = |v: Value| v["code"].as_str().unwrap_or("").to_string();
    let mut frames = Vec::new();

    c.send_raw(WsMessage::Binary(vec![0u8; 640].into())).await;
    assert_eq!(
        code(until(&mut c, "error", &mut frames).await),
        "not_started"
    );
    c.send(start_frame(44100)).await;
    assert_eq!(
        code(until(&mut c, "error", &mut frames).await),
        "unsupported_format"
    );
    c.send(json!({"type": "start", "format": {"encoding": "opus", "sample_rate": 16000, "channels": 1}}))
        .await;
    assert_eq!(
        code(until(&mut c, "error", &mut frames).await),
        "unsupported_format"
    );
    c.send(json!({"type": "dance"})).await;
    assert_eq!(
        code(until(&mut c, "error", &mut frames).await),
        "unknown_type"
    );
    c.send(start_frame(16000)).await;
    until(&mut c, "started", &mut frames).await;
    c.send_raw(WsMessage::Binary(vec![0u8; 641].into())).await;
    assert_eq!(
        code(until(&mut c, "error", &mut frames).await),
        "odd_length"
    );
    // 300 ms in one frame (the limit is 200 ms).
    c.send_raw(WsMessage::Binary(vec![0u8; 9600].into())).await;
    assert_eq!(
        code(until(&mut c, "error", &mut frames).await),
        "frame_too_long"
    );
    // 1.6 s of audio sent at once: beyond the 1 s tolerance it is refused as too fast.
    for _ in 0..10 {
        c.send_raw(WsMessage::Binary(vec![0u8; 5120].into())).await;
    }
    assert_eq!(code(until(&mut c, "error", &mut frames).await), "too_fast");
    // Keep refusing: the socket is closed with the policy-violation code.
    for _ in 0..25 {
        c.send_raw(WsMessage::Binary(vec![0u8; 3].into())).await;
    }
    let close = until(&mut c, "__close", &mut frames).await;
    assert_eq!(close["code"], 4500, "{frames:?}");
}

/// The chatbot answers from the knowledge base with its source, and a qualification
/// conversation ends with a lead stored (source `chatbot`), scored, and in the ops room.
pub async fn chatbot_answers_and_submits_a_lead(ctx: Arc<Ctx>) {
    let (mut ops, _) = Client::join(
        &roomkeeper_testkit::harness::ops_feed_url(&ctx.http, &ctx.ws).await,
        Enc::Json,
        "sessions-ops-watcher",
    )
    .await;
    let url = format!("{}/api/chat/{}/ws", ctx.ws, room("chat"));
    let mut c = Client::connect(&url, Enc::Json).await;
    let mut frames = Vec::new();
    c.send(json!({"type": "message", "id": "m1", "text": "how much commission do you charge"}))
        .await;
    let done = until(&mut c, "reply_done", &mut frames).await;
    assert_eq!(done["id"], "m1");
    assert!(done["text"].as_str().unwrap().contains("1.2%"), "{done}");
    assert_eq!(done["sources"][0]["doc"], "fees-and-commission", "{done}");
    c.send(json!({"type": "message", "text": ""})).await;
    assert_eq!(
        until(&mut c, "error", &mut frames).await["code"],
        "empty_message"
    );

    let email = format!("chat-{}@example.com", std::process::id());
    let turns = [
        "I want to sell my house".to_string(),
        "I'm Jane Doe".to_string(),
        format!("my email is {email}"),
        "the house is at 12 High Street, Leeds".to_string(),
        "within 3 months".to_string(),
    ];
    for t in &turns {
        c.send(json!({"type": "message", "text": t})).await;
        until(&mut c, "reply_done", &mut frames).await;
    }
    c.send(json!({"type": "message", "text": "Yes"})).await;
    let submitted = until(&mut c, "lead_submitted", &mut frames).await;
    let id = submitted["lead_id"].as_str().expect("lead id").to_string();
    let mut frames = Vec::new();
    loop {
        let d = until(&mut c, "reply_done", &mut frames).await;
        if d["text"].as_str().unwrap().contains(&id) {
            break;
        }
    }
    c.close().await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let lead = loop {
        let r = http()
            .get(format!("{}/api/leads/{id}", ctx.http))
            .bearer_auth(DEV_API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().await.unwrap();
        if v["enriched"] == true {
            break v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never enriched: {v}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(lead["source"], "chatbot", "{lead}");
    assert_eq!(lead["email"], email.as_str(), "{lead}");
    assert!(lead["score"].as_u64().is_some(), "{lead}");
    for _ in 0..200 {
        let f = ops.recv_type("message").await;
        if f["body"]["kind"] == "lead" && f["body"]["id"] == id.as_str() {
            return;
        }
    }
    panic!("the lead never reached the ops room");
}

/// The voice context window and the chat conversation are stored in their objects: after a
/// full restart of the runtime the same user's voice session sends the earlier turns to the
/// provider again, and a lead qualification carries on where it was. An anonymous connection
/// to the same session id is a different object and starts empty. A provider that stalls past
/// `LLM_TIMEOUT_MS` gives `generation_failed`, a failed transcription gives
/// `transcription_failed` and an untranscribed utterance, and the session carries on.
pub async fn voice_context_survives_a_restart(_ctx: Arc<Ctx>) {
    let provider = FakeProvider::start();
    let persist = TempDir::new("e2e-sessions-restart");
    let vars = [
        ("LLM_BASE_URL", provider.url.as_str()),
        ("LLM_TIMEOUT_MS", "1000"),
    ];
    let mut server = Server::start_with(&persist.0, &vars);
    let token =
        roomkeeper_testkit::harness::token(&server.http(), json!({"sub": "zed", "rooms": ["*"]}))
            .await;
    let sid = room("ctx");
    let url = |s: &Server| format!("{}/api/voice/{sid}/ws?token={token}", s.ws());
    let mut c = Client::connect(&url(&server), Enc::Json).await;
    let mut frames = Vec::new();
    c.send(json!({"type": "text", "text": "remember the word pelican"}))
        .await;
    until(&mut c, "reply_done", &mut frames).await;
    c.close().await;
    // A chat conversation in the middle of lead qualification, for after the restart.
    let chat_url = |s: &Server| format!("{}/api/chat/{sid}/ws?token={token}", s.ws());
    let mut chat = Client::connect(&chat_url(&server), Enc::Json).await;
    chat.send(json!({"type": "message", "text": "I want to sell my house"}))
        .await;
    let asked = until(&mut chat, "reply_done", &mut frames).await;
    assert!(
        asked["text"]
            .as_str()
            .unwrap()
            .contains("What's your name?"),
        "{asked}"
    );
    chat.close().await;

    server.stop();
    let server = Server::start_with(&persist.0, &vars);
    let mut chat = Client::connect(&chat_url(&server), Enc::Json).await;
    chat.send(json!({"type": "message", "text": "I'm Jane Doe"}))
        .await;
    let next = until(&mut chat, "reply_done", &mut frames).await;
    assert!(
        next["text"].as_str().unwrap().contains("Thanks, Jane."),
        "the qualification carried on after the restart: {next}"
    );
    chat.close().await;
    let mut c = Client::connect(&url(&server), Enc::Json).await;
    c.send(json!({"type": "text", "text": "which word was it"}))
        .await;
    until(&mut c, "reply_done", &mut frames).await;
    c.close().await;
    let calls = provider.calls("/v1/chat/completions");
    let last: Value = serde_json::from_str(&calls.last().unwrap().body).unwrap();
    let said: Vec<String> = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}: {}",
                m["role"].as_str().unwrap(),
                m["content"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(said.len(), 4, "system, user, assistant, user: {said:?}");
    assert_eq!(said[1], "user: remember the word pelican");
    assert!(said[2].starts_with("assistant: w0 w1"), "{said:?}");
    assert_eq!(said[3], "user: which word was it");

    // Anonymous: a fresh user id per connection, so a fresh, empty session.
    let anon = format!("{}/api/voice/{sid}/ws", server.ws());
    let mut c = Client::connect(&anon, Enc::Json).await;
    c.send(json!({"type": "text", "text": "hello"})).await;
    until(&mut c, "reply_done", &mut frames).await;
    let calls = provider.calls("/v1/chat/completions");
    let last: Value = serde_json::from_str(&calls.last().unwrap().body).unwrap();
    assert_eq!(last["messages"].as_array().unwrap().len(), 2, "{last}");

    // A stalled provider times out; the session stays usable.
    let mut frames = Vec::new();
    c.send(json!({"type": "text", "text": "please STALL"}))
        .await;
    let e = until(&mut c, "error", &mut frames).await;
    assert_eq!(e["code"], "generation_failed", "{e}");
    assert!(e["message"].as_str().unwrap().contains("in time"), "{e}");
    // A failed transcription: an error frame, and the utterance reported untranscribed.
    provider.fail_stt.store(true, Ordering::SeqCst);
    c.send(start_frame(16000)).await;
    until(&mut c, "started", &mut frames).await;
    let pcm = roomkeeper::sessions::voice::synth::speech_like(&[(300, 800)], 1800, 16000);
    let mut frames = Vec::new();
    stream_realtime(&mut c, &pcm, &mut frames).await;
    c.send(json!({"type": "stop"})).await;
    while of_type(&frames, "utterance").is_empty() {
        let v = c.recv().await;
        frames.push(v);
    }
    let errors = of_type(&frames, "error");
    assert_eq!(errors.len(), 1, "{frames:?}");
    assert_eq!(errors[0]["code"], "transcription_failed");
    assert_eq!(of_type(&frames, "utterance")[0]["transcribed"], false);
    provider.fail_stt.store(false, Ordering::SeqCst);
    c.send(json!({"type": "text", "text": "still there?"}))
        .await;
    let d = until(&mut c, "reply_done", &mut frames).await;
    assert!(d["text"].as_str().unwrap().starts_with("w0 "), "{d}");
    c.close().await;
}

/// Chat sockets refuse bad frames with their codes, limit the message rate, and stay usable.
pub async fn chatbot_refuses_bad_frames_and_floods(ctx: Arc<Ctx>) {
    let url = format!("{}/api/chat/{}/ws", ctx.ws, room("chat-bad"));
    let mut c = Client::connect(&url, Enc::Json).await;
    let mut frames = Vec::new();
    let code = |v: Value| v["code"].as_str().unwrap_or("").to_string();
    c.send_raw(WsMessage::Binary(vec![1u8, 2, 3].into())).await;
    assert_eq!(
        code(until(&mut c, "error", &mut frames).await),
        "wrong_frame_kind"
    );
    c.send(json!({"type": "message", "text": "x".repeat(2001)}))
        .await;
    assert_eq!(
        code(until(&mut c, "error", &mut frames).await),
        "message_too_long"
    );
    c.send_raw(WsMessage::Text("{nope".into())).await;
    assert_eq!(code(until(&mut c, "error", &mut frames).await), "malformed");
    c.send(json!({"type": "shout"})).await;
    assert_eq!(
        code(until(&mut c, "error", &mut frames).await),
        "unknown_type"
    );
    // Eleven messages at once: ten answered, the eleventh refused.
    for i in 0..11 {
        c.send(json!({"type": "message", "id": format!("f{i}"), "text": "hello"}))
            .await;
    }
    let mut frames = Vec::new();
    until(&mut c, "error", &mut frames).await;
    drain(&mut c, Duration::from_millis(1000), &mut frames).await;
    let errors = of_type(&frames, "error");
    assert_eq!(errors.len(), 1, "{frames:?}");
    assert_eq!(errors[0]["code"], "rate_limited");
    assert_eq!(of_type(&frames, "reply_done").len(), 10, "{frames:?}");
    c.close().await;
}

/// An audio stream left idle long enough for workerd to evict the object (seen within 25 s
/// here) carries on afterwards: the socket's attachment restarts the capture, so new speech is
/// segmented instead of refused as `not_started`.
pub async fn voice_stream_resumes_after_hibernation(ctx: Arc<Ctx>) {
    let url = format!("{}/api/voice/{}/ws", ctx.ws, room("voice-idle"));
    let mut c = Client::connect(&url, Enc::Json).await;
    let mut frames = Vec::new();
    c.send(start_frame(16000)).await;
    until(&mut c, "started", &mut frames).await;
    stream_realtime(&mut c, &vec![0i16; 8000], &mut frames).await;
    tokio::time::sleep(Duration::from_secs(35)).await;
    let pcm = roomkeeper::sessions::voice::synth::speech_like(&[(200, 800)], 1500, 16000);
    let mut frames = Vec::new();
    stream_realtime(&mut c, &pcm, &mut frames).await;
    c.send(json!({"type": "stop"})).await;
    while of_type(&frames, "utterance").is_empty() {
        let v = c.recv().await;
        frames.push(v);
    }
    assert!(of_type(&frames, "error").is_empty(), "{frames:?}");
    assert_eq!(of_type(&frames, "utterance")[0]["transcribed"], false);
    c.close().await;
}

/// Session sockets are authenticated and validated like room sockets: no token (anonymous
/// off) is 401 `token_required`, a bad token 401, a bad session id 400 `invalid_session_id`,
/// plain HTTP 426; a token for any room scope opens the user's own sessions.
pub async fn session_sockets_are_authenticated_like_rooms(ctx: Arc<Ctx>) {
    let refusal = |r: Result<Client, roomkeeper_testkit::harness::Refused>| {
        let r = r.err().expect("refused");
        (
            r.status,
            r.body["error"]["code"].as_str().unwrap_or("").to_string(),
        )
    };
    for kind in ["voice", "chat"] {
        let base = format!("{}/api/{kind}", ctx.strict_ws);
        let got = refusal(Client::try_connect(&format!("{base}/s1/ws"), Enc::Json, &[]).await);
        assert_eq!(got, (401, "token_required".to_string()), "{kind}");
        let got = refusal(
            Client::try_connect(&format!("{base}/s1/ws?token=not.a.token"), Enc::Json, &[]).await,
        );
        assert_eq!(got, (401, "invalid_token".to_string()), "{kind}");
        let got = refusal(Client::try_connect(&format!("{base}/-bad/ws"), Enc::Json, &[]).await);
        assert_eq!(got, (400, "invalid_session_id".to_string()), "{kind}");
        let plain = http()
            .get(format!("{}/api/{kind}/s1/ws", ctx.strict_http))
            .send()
            .await
            .unwrap();
        assert_eq!(plain.status().as_u16(), 426, "{kind}");
    }
    let t = roomkeeper_testkit::harness::token(
        &ctx.strict_http,
        json!({"sub": "scoped", "rooms": ["team-*"]}),
    )
    .await;
    let mut c = Client::connect(
        &format!("{}/api/chat/{}/ws?token={t}", ctx.strict_ws, room("auth")),
        Enc::Json,
    )
    .await;
    c.send(json!({"type": "message", "text": "hello"})).await;
    let mut frames = Vec::new();
    until(&mut c, "reply_done", &mut frames).await;
    c.close().await;
}

/// The daily audio cap is per user across sessions: once one session of a user has used it, a
/// second session of the same user is refused (`audio_quota_exceeded`), while another user,
/// and typed turns, still work. The totals are the user's Quota object's.
pub async fn daily_caps_hold_across_a_users_sessions(_ctx: Arc<Ctx>) {
    let persist = TempDir::new("e2e-quota");
    let server = Server::start_with(&persist.0, &[("VOICE_USER_DAILY_AUDIO_MS", "1500")]);
    let token = |sub: &'static str| {
        let base = server.http();
        async move {
            roomkeeper_testkit::harness::token(&base, json!({"sub": sub, "rooms": ["*"]})).await
        }
    };
    let (alice, bob) = (token("alice").await, token("bob").await);
    let url = |t: &str, sid: &str| format!("{}/api/voice/{sid}/ws?token={t}", server.ws());
    // Session one streams 1.52 s: the last 20 ms frame is over the daily cap, refused, and
    // the stream ends (an idle state) with the utterance answered.
    let mut one = Client::connect(&url(&alice, &room("q1")), Enc::Json).await;
    let mut frames = Vec::new();
    one.send(start_frame(16000)).await;
    until(&mut one, "started", &mut frames).await;
    let pcm = roomkeeper::sessions::voice::synth::speech_like(&[(200, 1000)], 1520, 16000);
    stream_realtime(&mut one, &pcm, &mut frames).await;
    drain(&mut one, Duration::from_millis(500), &mut frames).await;
    let refused = |frames: &[Value]| {
        of_type(frames, "error")
            .iter()
            .filter(|f| f["code"] == "audio_quota_exceeded")
            .count()
    };
    assert_eq!(refused(&frames), 1, "{frames:?}");
    assert_eq!(of_type(&frames, "state").last().unwrap()["state"], "idle");
    assert_eq!(of_type(&frames, "utterance").len(), 1, "{frames:?}");
    assert!(of_type(&frames, "__close").is_empty(), "{frames:?}");
    // A microphone that keeps streaming is closed with 4529 (not refused into a 4500).
    one.send_raw(WsMessage::Binary(pcm_bytes(&[0; 320]).into()))
        .await;
    let close = until(&mut one, "__close", &mut frames).await;
    assert_eq!(close["code"], 4529, "{frames:?}");
    assert_eq!(refused(&frames), 2, "{frames:?}");
    // Session two of the same user: refused at `start` — the cap is the user's, not the
    // session's. (The first session's last charge reaches the Quota object in the background:
    // allow it a moment.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut two = Client::connect(&url(&alice, &room("q2")), Enc::Json).await;
        two.send(start_frame(16000)).await;
        let f = started_or_error(&mut two).await;
        two.close().await;
        if f["type"] == "error" {
            assert_eq!(f["code"], "audio_quota_exceeded", "{f}");
            break;
        }
        assert_eq!(f["type"], "started", "{f}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "a second session of the same user kept its own allowance"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Another user has their own allowance.
    let mut three = Client::connect(&url(&bob, &room("q3")), Enc::Json).await;
    three.send(start_frame(16000)).await;
    assert_eq!(started_or_error(&mut three).await["type"], "started");
    three.close().await;
    // Typed turns do not spend audio: alice can still ask.
    let mut four = Client::connect(&url(&alice, &room("q4")), Enc::Json).await;
    four.send(json!({"type": "text", "text": "how much commission do you charge"}))
        .await;
    let mut frames = Vec::new();
    until(&mut four, "reply_done", &mut frames).await;
    four.close().await;
}

/// The answer to a `start`: the `started` frame or an `error` (other frames are skipped).
async fn started_or_error(c: &mut Client) -> Value {
    loop {
        let f = c.recv().await;
        if f["type"] == "started" || f["type"] == "error" {
            return f;
        }
    }
}
