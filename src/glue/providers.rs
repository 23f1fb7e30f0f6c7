//! The AI provider calls (wasm32 only) over `worker::Fetch` (the HTTP backend) and the `AI`
//! binding; every request body, stream parse and limit is the core's
//! ([`crate::sessions::providers`]).

use std::time::Duration;

use futures_util::future::{select, Either};
use futures_util::StreamExt;
use serde_json::{json, Value};
use worker::{AbortController, Delay, Env, Fetch, Headers, Method, Request, RequestInit};

use crate::sessions::providers::*;
use crate::sessions::voice::{parse_wav, resample, MAX_SPEECH_WAV_BYTES};

async fn timed<T>(ms: u64, fut: impl std::future::Future<Output = T>) -> Result<T, ProviderError> {
    let fut = Box::pin(fut);
    let delay = Box::pin(Delay::from(Duration::from_millis(ms)));
    match select(fut, delay).await {
        Either::Left((v, _)) => Ok(v),
        Either::Right(_) => Err(ProviderError::Timeout),
    }
}

fn post(
    url: &str,
    api_key: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> Result<Request, ProviderError> {
    let headers = Headers::new();
    let _ = headers.set("Content-Type", content_type);
    if let Some(k) = api_key {
        let _ = headers.set("Authorization", &format!("Bearer {k}"));
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(js_sys::Uint8Array::from(body).into()));
    Request::new_with_init(url, &init).map_err(|_| ProviderError::Network)
}

/// Sends `req` and reads its whole body, within `timeout_ms`; a non-2xx status is an error.
async fn send_for_bytes(req: Request, timeout_ms: u64) -> Result<Vec<u8>, ProviderError> {
    timed(timeout_ms, async {
        let mut r = Fetch::Request(req)
            .send()
            .await
            .map_err(|_| ProviderError::Network)?;
        if !(200..300).contains(&r.status_code()) {
            return Err(ProviderError::Status(r.status_code()));
        }
        r.bytes().await.map_err(|_| ProviderError::Network)
    })
    .await?
}

/// Transcribes a WAV: `Ok(None)` when the backend cannot transcribe (built-in).
pub(crate) async fn transcribe(
    backend: &Backend,
    env: &Env,
    wav: &[u8],
) -> Result<Option<String>, ProviderError> {
    match backend {
        Backend::Builtin => Ok(None),
        Backend::Http {
            base_url,
            api_key,
            stt_model,
            timeout_ms,
            ..
        } => {
            let req = post(
                &format!("{base_url}/v1/audio/transcriptions"),
                api_key.as_deref(),
                &transcription_content_type(),
                &transcription_body(stt_model, wav),
            )?;
            let body = send_for_bytes(req, timeout_ms.unwrap_or(TRANSCRIBE_TIMEOUT_MS)).await?;
            parse_transcription(&body).map(Some)
        }
        // Not run by the tests: the binding exists only in production.
        Backend::WorkersAi { stt_model, .. } => {
            let ai = env.ai("AI").map_err(|_| ProviderError::Network)?;
            let out: Value = timed(
                TRANSCRIBE_TIMEOUT_MS,
                ai.run(stt_model, json!({ "audio": wav })),
            )
            .await?
            .map_err(|_| ProviderError::Network)?;
            out.get("text")
                .and_then(Value::as_str)
                .map(|t| Some(t.to_string()))
                .ok_or(ProviderError::Malformed)
        }
    }
}

/// Streams a completion of `messages`, calling `on_delta` with each piece of text in
/// order; `on_delta` returning false stops the stream (and aborts the request). Returns
/// the provider's token count when it reports one. The built-in backend cannot generate
/// (callers answer by retrieval instead) and yields `Ok(None)` with no deltas.
pub(crate) async fn generate(
    backend: &Backend,
    env: &Env,
    messages: &[ChatMessage],
    max_tokens: u32,
    mut on_delta: impl FnMut(String) -> bool,
) -> Result<Option<u32>, ProviderError> {
    match backend {
        Backend::Builtin => Ok(None),
        Backend::Http {
            base_url,
            api_key,
            chat_model,
            timeout_ms,
            ..
        } => {
            let idle = timeout_ms.unwrap_or(GENERATE_IDLE_TIMEOUT_MS);
            let req = post(
                &format!("{base_url}/v1/chat/completions"),
                api_key.as_deref(),
                "application/json",
                chat_request(chat_model, messages, max_tokens).as_bytes(),
            )?;
            let abort = AbortController::default();
            let signal = abort.signal();
            let mut r = timed(idle, Fetch::Request(req).send_with_signal(&signal))
                .await?
                .map_err(|_| ProviderError::Network)?;
            if !(200..300).contains(&r.status_code()) {
                return Err(ProviderError::Status(r.status_code()));
            }
            let mut stream = r.stream().map_err(|_| ProviderError::Malformed)?;
            let mut parser = SseParser::new();
            let mut tokens = None;
            loop {
                let chunk = timed(idle, stream.next()).await;
                let ended = chunk.as_ref().is_ok_and(|c| c.is_none());
                let events = match chunk {
                    Err(e) => {
                        abort.abort();
                        return Err(e);
                    }
                    Ok(None) => parser.finish()?,
                    Ok(Some(Err(_))) => return Err(ProviderError::Network),
                    Ok(Some(Ok(bytes))) => parser.push(&bytes)?,
                };
                for ev in events {
                    match ev {
                        SseEvent::Delta(t) => {
                            if !on_delta(t) {
                                abort.abort();
                                return Ok(tokens);
                            }
                        }
                        SseEvent::Usage(n) => tokens = Some(n),
                        SseEvent::Done => return Ok(tokens),
                    }
                }
                if ended {
                    return Ok(tokens);
                }
            }
        }
        // Not run by the tests: the binding exists only in production. Workers AI answers
        // in one piece here (no streaming), delivered as one delta.
        Backend::WorkersAi { chat_model, .. } => {
            let ai = env.ai("AI").map_err(|_| ProviderError::Network)?;
            let out: Value = timed(
                GENERATE_IDLE_TIMEOUT_MS,
                ai.run(
                    chat_model,
                    json!({ "messages": messages, "max_tokens": max_tokens }),
                ),
            )
            .await?
            .map_err(|_| ProviderError::Network)?;
            let text = out
                .get("response")
                .and_then(Value::as_str)
                .ok_or(ProviderError::Malformed)?;
            on_delta(text.to_string());
            Ok(None)
        }
    }
}

/// Speaks `text`: 16-bit mono samples at `sample_rate` (the provider's WAV read back and
/// resampled). The built-in backend has no voice: callers never ask it.
pub(crate) async fn synthesize(
    backend: &Backend,
    env: &Env,
    text: &str,
    sample_rate: u32,
) -> Result<Vec<i16>, String> {
    let wav = match backend {
        Backend::Builtin => return Err("the built-in provider has no voice".into()),
        Backend::Http {
            base_url,
            api_key,
            tts_model,
            tts_voice,
            timeout_ms,
            ..
        } => {
            let model = tts_model
                .as_deref()
                .ok_or("speech is off (LLM_TTS_MODEL)")?;
            let req = post(
                &format!("{base_url}/v1/audio/speech"),
                api_key.as_deref(),
                "application/json",
                &speech_body(model, tts_voice, text),
            )
            .map_err(|e| e.to_string())?;
            send_for_bytes(req, timeout_ms.unwrap_or(SPEECH_TIMEOUT_MS))
                .await
                .map_err(|e| e.to_string())?
        }
        // Not run by the tests: the binding exists only in production.
        Backend::WorkersAi { tts_model, .. } => {
            let model = tts_model.as_deref().ok_or("speech is off (AI_TTS_MODEL)")?;
            let ai = env.ai("AI").map_err(|e| e.to_string())?;
            timed(SPEECH_TIMEOUT_MS, async {
                let mut stream = ai
                    .run_bytes(model, ai_speech_input(text, sample_rate))
                    .await
                    .map_err(|_| ProviderError::Network)?;
                let mut bytes = Vec::new();
                while let Some(chunk) = stream.next().await {
                    bytes.extend_from_slice(&chunk.map_err(|_| ProviderError::Network)?);
                    if bytes.len() > MAX_SPEECH_WAV_BYTES {
                        return Err(ProviderError::Malformed);
                    }
                }
                Ok(bytes)
            })
            .await
            .and_then(|r| r)
            .map_err(|e| e.to_string())?
        }
    };
    let (rate, samples) = parse_wav(&wav).map_err(|e| e.to_string())?;
    Ok(resample(&samples, rate, sample_rate))
}

/// Asks the turn model whether `wav` (an utterance) ended the user's turn: `Ok(None)` when the
/// backend has none.
pub(crate) async fn detect_turn(
    backend: &Backend,
    env: &Env,
    wav: &[u8],
) -> Result<Option<(bool, Option<f32>)>, ProviderError> {
    match backend {
        Backend::Http {
            turn_url: Some(url),
            api_key,
            ..
        } => {
            let req = post(url, api_key.as_deref(), "audio/wav", wav)?;
            let body = send_for_bytes(req, TURN_TIMEOUT_MS).await?;
            parse_turn(&body).map(Some)
        }
        // Not run by the tests: the binding exists only in production.
        Backend::WorkersAi {
            turn_model: Some(model),
            ..
        } => {
            use base64::Engine as _;
            let ai = env.ai("AI").map_err(|_| ProviderError::Network)?;
            let audio = base64::engine::general_purpose::STANDARD.encode(wav);
            let out: Value = timed(TURN_TIMEOUT_MS, ai.run(model, json!({ "audio": audio })))
                .await?
                .map_err(|_| ProviderError::Network)?;
            parse_turn(out.to_string().as_bytes()).map(Some)
        }
        _ => Ok(None),
    }
}
