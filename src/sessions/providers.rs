//! The AI provider seam: which backend answers transcription and generation, and the wire
//! shapes of the OpenAI-compatible HTTP backend.
//!
//! Three providers sit behind one seam (docs/SESSIONS.md):
//!
//! - [`Backend::Http`]: an OpenAI-compatible server (a GPU box running vLLM, llama.cpp,
//!   faster-whisper…) at `LLM_BASE_URL`, with the secret `LLM_API_KEY`:
//!   `POST {base}/v1/audio/transcriptions` (multipart: a WAV `file` and `model`),
//!   `POST {base}/v1/chat/completions` with `stream: true` (server-sent events) and
//!   `POST {base}/v1/audio/speech` (JSON in, a WAV out: the voice of the reply).
//! - [`Backend::WorkersAi`]: the Workers AI binding `AI`, bound only in `[env.production]`
//!   because the binding cannot run offline.
//! - [`Backend::Builtin`]: nothing configured. Typed turns are answered by retrieval from the
//!   knowledge base ([`crate::sessions::chat::answer`]); audio is segmented but never
//!   transcribed, and replies are not spoken (it has no voice).
//!
//! Everything here but the `net` module (wasm32 only) is pure and unit-tested: settings to a
//! [`Backend`], the multipart body, the chat request, and [`SseParser`], which turns the
//! bytes of a streamed completion into [`SseEvent`]s whatever the chunking.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::sessions::voice::{ContextTurn, Role, SYSTEM_PROMPT};

/// Default chat model of the HTTP backend (`LLM_CHAT_MODEL`).
pub const DEFAULT_HTTP_CHAT_MODEL: &str = "default";
/// Default transcription model of the HTTP backend (`LLM_STT_MODEL`).
pub const DEFAULT_HTTP_STT_MODEL: &str = "whisper-1";
/// Default chat model of the Workers AI binding.
pub const DEFAULT_AI_CHAT_MODEL: &str = "@cf/meta/llama-3.1-8b-instruct";
/// Default transcription model of the Workers AI binding.
pub const DEFAULT_AI_STT_MODEL: &str = "@cf/openai/whisper";
/// Default speech model of the HTTP backend (`LLM_TTS_MODEL`; `none` turns speech off).
pub const DEFAULT_HTTP_TTS_MODEL: &str = "tts-1";
/// Default voice of the HTTP backend's speech (`LLM_TTS_VOICE`).
pub const DEFAULT_HTTP_TTS_VOICE: &str = "alloy";
/// Default speech model of the Workers AI binding (`AI_TTS_MODEL`; `none` turns speech off).
pub const DEFAULT_AI_TTS_MODEL: &str = "@cf/deepgram/aura-1";
/// Longest wait for one chunk of speech, ms (`LLM_TIMEOUT_MS` overrides it too).
pub const SPEECH_TIMEOUT_MS: u64 = 15_000;
/// Default end-of-turn model of the Workers AI binding (`AI_TURN_MODEL`; `none` turns it off).
pub const DEFAULT_AI_TURN_MODEL: &str = "@cf/pipecat-ai/smart-turn-v2";
/// Longest wait for a turn model's verdict, ms: past it the VAD alone decides.
pub const TURN_TIMEOUT_MS: u64 = 2_000;
/// Longest wait for a transcription, ms.
pub const TRANSCRIBE_TIMEOUT_MS: u64 = 15_000;
/// Longest wait for the response head of a generation and between two of its chunks, ms.
pub const GENERATE_IDLE_TIMEOUT_MS: u64 = 20_000;
/// Largest transcription response body accepted, bytes.
pub const MAX_TRANSCRIPT_BODY_BYTES: usize = 64 * 1024;
/// Longest server-sent-events line buffered, bytes; longer lines are a protocol error.
pub const MAX_SSE_LINE_BYTES: usize = 64 * 1024;
/// Multipart boundary of transcription requests (cannot occur in the fixed text parts, and a
/// WAV body is framed by the closing delimiter which the server finds by scanning).
pub const MULTIPART_BOUNDARY: &str = "roomkeeper-7d1f0c2b9e4a";

/// Which provider answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// An OpenAI-compatible HTTP server.
    Http {
        /// Base URL without the `/v1` path, e.g. `http://gpu.internal:8000`.
        base_url: String,
        /// Bearer token (`LLM_API_KEY`), if the server wants one.
        api_key: Option<String>,
        /// Chat completion model.
        chat_model: String,
        /// Transcription model.
        stt_model: String,
        /// Speech model (`None`: replies are not spoken).
        tts_model: Option<String>,
        /// Speech voice.
        tts_voice: String,
        /// End-of-turn endpoint (`LLM_TURN_URL`): a WAV in, `{"is_complete", "probability"}`
        /// out. `None`: the VAD alone ends turns.
        turn_url: Option<String>,
        /// `LLM_TIMEOUT_MS`: overrides [`TRANSCRIBE_TIMEOUT_MS`],
        /// [`GENERATE_IDLE_TIMEOUT_MS`] and [`SPEECH_TIMEOUT_MS`] (e.g. for a slow GPU, or a
        /// test).
        timeout_ms: Option<u64>,
    },
    /// The Workers AI binding `AI` (production only).
    WorkersAi {
        /// Text generation model.
        chat_model: String,
        /// Speech-to-text model.
        stt_model: String,
        /// Text-to-speech model (`None`: replies are not spoken).
        tts_model: Option<String>,
        /// End-of-turn model (`None`: the VAD alone ends turns).
        turn_model: Option<String>,
    },
    /// Nothing configured: retrieval answers, untranscribed audio.
    Builtin,
}

impl Backend {
    /// Chooses the backend from settings: `LLM_BASE_URL` first, then the `AI` binding when
    /// it exists, else built-in. An `LLM_BASE_URL` that is not http(s) is a configuration
    /// error, refused rather than silently ignored.
    pub fn select(
        lookup: impl Fn(&str) -> Option<String>,
        has_ai_binding: bool,
    ) -> Result<Self, String> {
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if let Some(base) = get("LLM_BASE_URL") {
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err("LLM_BASE_URL must start with http:// or https://".into());
            }
            return Ok(Self::Http {
                base_url: base.trim_end_matches('/').to_string(),
                api_key: get("LLM_API_KEY"),
                chat_model: get("LLM_CHAT_MODEL").unwrap_or(DEFAULT_HTTP_CHAT_MODEL.into()),
                stt_model: get("LLM_STT_MODEL").unwrap_or(DEFAULT_HTTP_STT_MODEL.into()),
                tts_model: speech_model(get("LLM_TTS_MODEL"), DEFAULT_HTTP_TTS_MODEL),
                tts_voice: get("LLM_TTS_VOICE").unwrap_or(DEFAULT_HTTP_TTS_VOICE.into()),
                turn_url: match get("LLM_TURN_URL") {
                    Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                        return Err("LLM_TURN_URL must start with http:// or https://".into())
                    }
                    u => u,
                },
                timeout_ms: match get("LLM_TIMEOUT_MS") {
                    None => None,
                    Some(v) => Some(
                        v.parse::<u64>()
                            .ok()
                            .filter(|ms| (100..=600_000).contains(ms))
                            .ok_or("LLM_TIMEOUT_MS must be 100-600000 (ms)")?,
                    ),
                },
            });
        }
        if has_ai_binding {
            return Ok(Self::WorkersAi {
                chat_model: get("AI_CHAT_MODEL").unwrap_or(DEFAULT_AI_CHAT_MODEL.into()),
                stt_model: get("AI_STT_MODEL").unwrap_or(DEFAULT_AI_STT_MODEL.into()),
                tts_model: speech_model(get("AI_TTS_MODEL"), DEFAULT_AI_TTS_MODEL),
                turn_model: speech_model(get("AI_TURN_MODEL"), DEFAULT_AI_TURN_MODEL),
            });
        }
        Ok(Self::Builtin)
    }

    /// Whether replies are spoken: a speech model is configured (the built-in backend has no
    /// voice).
    pub fn speaks(&self) -> bool {
        match self {
            Self::Http { tts_model, .. } | Self::WorkersAi { tts_model, .. } => tts_model.is_some(),
            Self::Builtin => false,
        }
    }

    /// Whether a turn model judges the end of each utterance.
    pub fn detects_turns(&self) -> bool {
        match self {
            Self::Http { turn_url, .. } => turn_url.is_some(),
            Self::WorkersAi { turn_model, .. } => turn_model.is_some(),
            Self::Builtin => false,
        }
    }

    /// A short name for logs and the `provider` field of docs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Http { .. } => "http",
            Self::WorkersAi { .. } => "workers-ai",
            Self::Builtin => "builtin",
        }
    }
}

/// A speech model setting: the default when unset, none when `none`.
fn speech_model(setting: Option<String>, default: &str) -> Option<String> {
    match setting.as_deref() {
        None => Some(default.to_string()),
        Some("none") => None,
        Some(m) => Some(m.to_string()),
    }
}

/// The body of `POST {base}/v1/audio/speech`: `text` in `voice`, answered as a WAV.
pub fn speech_body(model: &str, voice: &str, text: &str) -> Vec<u8> {
    json!({"model": model, "input": text, "voice": voice, "response_format": "wav"})
        .to_string()
        .into_bytes()
}

/// The input of a Workers AI speech model (Deepgram Aura's schema): 16-bit PCM in a WAV at
/// `sample_rate`.
pub fn ai_speech_input(text: &str, sample_rate: u32) -> Value {
    json!({"text": text, "encoding": "linear16", "container": "wav", "sample_rate": sample_rate})
}

/// A turn model's verdict, `{"is_complete": bool, "probability": number?}` (the answer of
/// Workers AI's smart-turn, and what an `LLM_TURN_URL` endpoint answers).
pub fn parse_turn(body: &[u8]) -> Result<(bool, Option<f32>), ProviderError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| ProviderError::Malformed)?;
    // Workers AI wraps a model's answer in `result` when called over HTTP.
    let v = v.get("result").filter(|r| r.is_object()).unwrap_or(&v);
    let complete = v["is_complete"].as_bool().ok_or(ProviderError::Malformed)?;
    Ok((complete, v["probability"].as_f64().map(|p| p as f32)))
}

/// Why a provider call failed. Messages are safe to show the user (no URLs or keys).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// No answer in time.
    #[error("the provider did not answer in time")]
    Timeout,
    /// A non-2xx status.
    #[error("the provider answered with status {0}")]
    Status(u16),
    /// The connection failed.
    #[error("the provider could not be reached")]
    Network,
    /// The answer was not in the expected shape.
    #[error("the provider's answer was malformed")]
    Malformed,
}

/// One chat message of a completion request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The messages for a voice reply: [`SYSTEM_PROMPT`], then the context oldest first.
/// Interrupted assistant turns are marked so the model knows it was cut off.
pub fn voice_messages(context: &[ContextTurn]) -> Vec<ChatMessage> {
    let mut out = vec![ChatMessage::new("system", SYSTEM_PROMPT)];
    for t in context {
        let (role, text) = match t.role {
            Role::User => ("user", t.text.clone()),
            Role::Assistant if t.interrupted => {
                ("assistant", format!("{} [interrupted by the user]", t.text))
            }
            Role::Assistant => ("assistant", t.text.clone()),
        };
        // Roles alternate, as strict chat templates require: consecutive messages of one
        // role (two utterances before a reply) become one.
        let after_system = out.len() > 1;
        match out.last_mut() {
            Some(last) if last.role == role && after_system => {
                last.content.push('\n');
                last.content.push_str(&text);
            }
            _ => out.push(ChatMessage::new(role, text)),
        }
    }
    out
}

/// System prompt of chatbot answers generated from retrieved passages.
pub const CHAT_RAG_PROMPT: &str = "You are the support assistant of Kestrel & Lowe, an estate \
agency. Answer the customer's question using only the passages from the agency's guides given \
below. Be brief and friendly. If the passages do not answer the question, say that you do not \
know and offer to pass the question to the team. Never invent fees, dates or promises.";

/// The messages for a chatbot answer grounded in `passages` (`(title, text)` pairs).
pub fn rag_messages(question: &str, passages: &[(String, String)]) -> Vec<ChatMessage> {
    let mut context = String::new();
    for (title, text) in passages {
        context.push_str(&format!("[{title}]\n{text}\n\n"));
    }
    vec![
        ChatMessage::new("system", CHAT_RAG_PROMPT),
        ChatMessage::new(
            "user",
            format!("Passages:\n\n{context}Question: {question}"),
        ),
    ]
}

/// The JSON body of a streamed chat completion.
pub fn chat_request(model: &str, messages: &[ChatMessage], max_tokens: u32) -> String {
    json!({
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
    .to_string()
}

/// The `Content-Type` of [`transcription_body`].
pub fn transcription_content_type() -> String {
    format!("multipart/form-data; boundary={MULTIPART_BOUNDARY}")
}

/// A `multipart/form-data` transcription request: `model`, `response_format=json` and the
/// WAV as `file` (`utterance.wav`, `audio/wav`).
pub fn transcription_body(model: &str, wav: &[u8]) -> Vec<u8> {
    let b = MULTIPART_BOUNDARY;
    let mut out = Vec::with_capacity(wav.len() + 512);
    for (name, value) in [("model", model), ("response_format", "json")] {
        out.extend_from_slice(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    out.extend_from_slice(
        format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"utterance.wav\"\r\n\
             Content-Type: audio/wav\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(wav);
    out.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    out
}

/// Reads a transcription answer: `{"text": "…"}`.
pub fn parse_transcription(body: &[u8]) -> Result<String, ProviderError> {
    if body.len() > MAX_TRANSCRIPT_BODY_BYTES {
        return Err(ProviderError::Malformed);
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| ProviderError::Malformed)?;
    v.get("text")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or(ProviderError::Malformed)
}

/// Something a streamed completion said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseEvent {
    /// Reply text to append.
    Delta(String),
    /// Tokens the provider counted for the completion (from a `usage` chunk).
    Usage(u32),
    /// `data: [DONE]`: the stream is complete.
    Done,
}

/// Incremental parser of an OpenAI-style server-sent-events stream. Feed it chunks as they
/// arrive; lines split across chunks are reassembled, comments and other fields ignored.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `chunk`, returning the events of every line it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, ProviderError> {
        let mut events = Vec::new();
        for &b in chunk {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                Self::line(&line, &mut events)?;
            } else if self.line.len() >= MAX_SSE_LINE_BYTES {
                return Err(ProviderError::Malformed);
            } else {
                self.line.push(b);
            }
        }
        Ok(events)
    }

    /// Ends the stream: a last line without a newline is parsed too.
    pub fn finish(&mut self) -> Result<Vec<SseEvent>, ProviderError> {
        let mut events = Vec::new();
        let line = std::mem::take(&mut self.line);
        Self::line(&line, &mut events)?;
        Ok(events)
    }

    fn line(line: &[u8], events: &mut Vec<SseEvent>) -> Result<(), ProviderError> {
        let line = std::str::from_utf8(line).map_err(|_| ProviderError::Malformed)?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some(data) = line.strip_prefix("data:") else {
            return Ok(()); // blank separators, `:` comments, `event:`/`id:` fields
        };
        let data = data.trim();
        if data == "[DONE]" {
            events.push(SseEvent::Done);
            return Ok(());
        }
        let v: Value = serde_json::from_str(data).map_err(|_| ProviderError::Malformed)?;
        if let Some(text) = v
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            events.push(SseEvent::Delta(text.to_string()));
        }
        if let Some(n) = v
            .pointer("/usage/completion_tokens")
            .and_then(Value::as_u64)
        {
            events.push(SseEvent::Usage(n.min(u64::from(u32::MAX)) as u32));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn backend_selection() {
        assert_eq!(Backend::select(lookup(&[]), false), Ok(Backend::Builtin));
        assert_eq!(
            Backend::select(lookup(&[]), true).unwrap().name(),
            "workers-ai"
        );
        let http = Backend::select(
            lookup(&[
                ("LLM_BASE_URL", "http://127.0.0.1:9000/"),
                ("LLM_API_KEY", "k"),
                ("LLM_CHAT_MODEL", "m"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(
            http,
            Backend::Http {
                base_url: "http://127.0.0.1:9000".into(),
                api_key: Some("k".into()),
                chat_model: "m".into(),
                stt_model: DEFAULT_HTTP_STT_MODEL.into(),
                tts_model: Some(DEFAULT_HTTP_TTS_MODEL.into()),
                tts_voice: DEFAULT_HTTP_TTS_VOICE.into(),
                turn_url: None,
                timeout_ms: None,
            }
        );
        assert!(!http.detects_turns(), "no LLM_TURN_URL: the VAD alone");
        let turns = Backend::select(
            lookup(&[
                ("LLM_BASE_URL", "http://x"),
                ("LLM_TURN_URL", "http://t/turn"),
            ]),
            false,
        )
        .unwrap();
        assert!(turns.detects_turns());
        assert!(Backend::select(
            lookup(&[("LLM_BASE_URL", "http://x"), ("LLM_TURN_URL", "t")]),
            false
        )
        .is_err());
        assert_eq!(
            parse_turn(br#"{"is_complete":false,"probability":0.25}"#),
            Ok((false, Some(0.25)))
        );
        assert_eq!(
            parse_turn(br#"{"result":{"is_complete":true}}"#),
            Ok((true, None))
        );
        assert_eq!(parse_turn(b"{}"), Err(ProviderError::Malformed));
        assert!(http.speaks());
        let mute = Backend::select(
            lookup(&[("LLM_BASE_URL", "http://x"), ("LLM_TTS_MODEL", "none")]),
            false,
        )
        .unwrap();
        assert!(!mute.speaks(), "LLM_TTS_MODEL=none turns speech off");
        assert!(
            !Backend::Builtin.speaks(),
            "the built-in backend has no voice"
        );
        let body: Value = serde_json::from_slice(&speech_body("tts-1", "alloy", "Hi.")).unwrap();
        assert_eq!(
            body,
            json!({"model": "tts-1", "input": "Hi.", "voice": "alloy", "response_format": "wav"})
        );
        assert_eq!(ai_speech_input("Hi.", 16000)["container"], "wav");
        let timed = |v: &str| {
            Backend::select(
                lookup(&[("LLM_BASE_URL", "http://x"), ("LLM_TIMEOUT_MS", v)]),
                false,
            )
        };
        assert!(matches!(
            timed("1500"),
            Ok(Backend::Http {
                timeout_ms: Some(1500),
                ..
            })
        ));
        assert!(timed("0").is_err() && timed("soon").is_err());
        assert!(Backend::select(lookup(&[("LLM_BASE_URL", "ftp://x")]), false).is_err());
        assert_eq!(
            Backend::select(lookup(&[("LLM_BASE_URL", "  ")]), false),
            Ok(Backend::Builtin)
        );
    }

    #[test]
    fn multipart_body_carries_model_and_wav() {
        let wav = crate::sessions::voice::wav_bytes(&[1, -1, 2], 16000);
        let body = transcription_body("whisper-1", &wav);
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(&format!("--{MULTIPART_BOUNDARY}\r\n")));
        assert!(text.contains("name=\"model\"\r\n\r\nwhisper-1\r\n"));
        assert!(text.contains("filename=\"utterance.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF"));
        assert!(body.ends_with(format!("\r\n--{MULTIPART_BOUNDARY}--\r\n").as_bytes()));
        let start = body.windows(4).position(|w| w == b"RIFF").unwrap();
        assert_eq!(&body[start..start + wav.len()], &wav[..]);
        assert!(transcription_content_type().ends_with(MULTIPART_BOUNDARY));
    }

    #[test]
    fn transcription_answers() {
        assert_eq!(
            parse_transcription(br#"{"text":" hello "}"#),
            Ok(" hello ".into())
        );
        assert_eq!(parse_transcription(b"{}"), Err(ProviderError::Malformed));
        assert_eq!(parse_transcription(b"nope"), Err(ProviderError::Malformed));
    }

    #[test]
    fn chat_request_streams() {
        let msgs = voice_messages(&[]);
        let v: Value = serde_json::from_str(&chat_request("m", &msgs, 50)).unwrap();
        assert_eq!(v["stream"], true);
        assert_eq!(v["max_tokens"], 50);
        assert_eq!(v["messages"][0]["role"], "system");
        let r = rag_messages("fees?", &[("Fees".into(), "1%".into())]);
        assert!(r[1].content.contains("[Fees]\n1%"));
        assert!(r[1].content.ends_with("Question: fees?"));
    }

    #[test]
    fn sse_parses_across_chunk_boundaries() {
        let stream = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n\
                      : keep-alive\n\
                      data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\r\n\r\n\
                      data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n\
                      data: {\"choices\":[],\"usage\":{\"completion_tokens\":7}}\n\n\
                      data: [DONE]\n\n";
        for split in [1, 3, 17, stream.len()] {
            let mut p = SseParser::new();
            let mut events = Vec::new();
            for chunk in stream.as_bytes().chunks(split) {
                events.extend(p.push(chunk).unwrap());
            }
            events.extend(p.finish().unwrap());
            assert_eq!(
                events,
                vec![
                    SseEvent::Delta("Hel".into()),
                    SseEvent::Delta("lo".into()),
                    SseEvent::Usage(7),
                    SseEvent::Done
                ],
                "split {split}"
            );
        }
    }

    #[test]
    fn sse_refuses_garbage_and_huge_lines() {
        assert_eq!(
            SseParser::new().push(b"data: {nope\n"),
            Err(ProviderError::Malformed)
        );
        let long = vec![b'a'; MAX_SSE_LINE_BYTES + 1];
        assert_eq!(SseParser::new().push(&long), Err(ProviderError::Malformed));
        let mut p = SseParser::new();
        assert_eq!(p.push(b"data: [DONE]").unwrap(), vec![]);
        assert_eq!(p.finish().unwrap(), vec![SseEvent::Done]);
    }

    #[test]
    fn voice_messages_mark_interruptions() {
        let mut ctx = crate::sessions::voice::Context::default();
        ctx.push(Role::User, "hi", false);
        ctx.push(Role::Assistant, "Hello the", true);
        let m = voice_messages(&ctx.to_vec());
        assert_eq!(m.len(), 3);
        assert_eq!(m[2].content, "Hello the [interrupted by the user]");
        ctx.push(Role::User, "one", false);
        ctx.push(Role::User, "two", false);
        let m = voice_messages(&ctx.to_vec());
        let roles: Vec<&str> = m.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(
            roles,
            ["system", "user", "assistant", "user"],
            "alternating"
        );
        assert_eq!(m[3].content, "one\ntwo");
    }
}
