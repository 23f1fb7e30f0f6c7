//! The Voice Durable Object: one per user and voice session (`<user>:<session>`).
//!
//! A thin shell over [`crate::sessions::voice::VoiceSession`]: each socket message becomes an
//! [`Input`], and the [`Effect`]s that come back are performed in order. Sends, persistence
//! and charging are synchronous; transcription and generation are provider calls
//! ([`crate::sessions::providers`]) run in the background of the event (`waitUntil`) so that audio frames
//! keep flowing while a reply streams. Their results are fed back as inputs; deltas of one
//! reply are forwarded in order by the one task that reads its stream, and a `Cancel` marks
//! the turn so the task stops reading (the core drops late deltas of old turns as well).
//!
//! The session snapshot (context window, usage, turn counters) is stored in SQLite after every
//! change, so the conversation survives hibernation and restarts. An audio stream in progress
//! is resumed: its format is kept in the socket's attachment, and an object woken by audio
//! restarts the capture in that format (an utterance cut by the eviction is lost; evictions
//! only happen after the socket has been idle, so normally there is none).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;

use worker::worker_sys::DurableObjectState;
use worker::{
    durable_object, DurableObject, Env, Request, Response, Result, State, WebSocket,
    WebSocketIncomingMessage,
};

use super::quota;
use super::session::{self, Kv};
use crate::glue::http::{failure_response, now_ms};
use crate::glue::providers as net;
use crate::internal::Binding;
use crate::sessions::admission::{SessionAdmission, SESSION_HEADER};
use crate::sessions::chat;
use crate::sessions::providers::{self, Backend};
use crate::sessions::voice::{
    answers_started, format_change, AudioFormat, Effect, FormatChange, Input, Role, ServerFrame,
    Snapshot, Usage, UserUsage, VoiceLimits, VoiceSession,
};

/// Error code sent when the transcription provider fails (the utterance is then reported
/// with `transcribed: false`).
pub const TRANSCRIPTION_FAILED: &str = "transcription_failed";

/// The Voice object.
#[durable_object]
pub struct Voice {
    state: State,
    inner: Rc<Inner>,
}

/// Everything background tasks need, shared by `Rc`.
struct Inner {
    raw: DurableObjectState,
    env: Env,
    kv: Kv,
    backend: Backend,
    limits: VoiceLimits,
    /// The session, restored from storage on first use after construction.
    session: RefCell<Option<VoiceSession>>,
    /// Turns cancelled while their stream is still being read.
    cancelled: RefCell<HashSet<u64>>,
    /// Chunks of speech waiting to be made, per turn (seq, text, rate); a turn is here while
    /// its one speaking task runs, and leaves it when cancelled or done.
    speech: RefCell<HashMap<u64, VecDeque<SpeechChunk>>>,
}

/// A chunk of speech to make: its number in the turn, its text, its sample rate.
type SpeechChunk = (u32, String, u32);

const SNAPSHOT_KEY: &str = "snapshot";
/// The user's totals today as the Quota object last reported them (a mirror: the Quota object
/// is the authority across the user's sessions).
const USAGE_KEY: &str = "user_usage";
/// The name of the user's Quota object.
const QUOTA_NAME_KEY: &str = "quota_name";

impl DurableObject for Voice {
    fn new(state: State, env: Env) -> Self {
        let (config, backend) = session::configured(&env);
        let inner = Rc::new(Inner {
            raw: session::raw_state(&state),
            kv: Kv::new(&state, &env),
            backend,
            limits: config.voice,
            env,
            session: RefCell::new(None),
            cancelled: RefCell::new(HashSet::new()),
            speech: RefCell::new(HashMap::new()),
        });
        Self { state, inner }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        if let Some(refusal) = session::refuse_misconfigured(&self.inner.env, &req, Binding::Voice)
        {
            return Ok(refusal);
        }
        // A new connection replaces any earlier one: end its session cleanly first.
        if !self.state.get_websockets().is_empty() {
            self.inner.disconnect();
        }
        self.inner.read_quota(&req).await;
        let rid = crate::glue::http::request_id(&req);
        let b = &self.inner.backend;
        let ready = ServerFrame::ready(b.name(), b.speaks());
        match session::accept(
            &self.state,
            &self.inner.env,
            &req,
            "voice",
            &self.inner.backend,
            Some(ready.to_json()),
        ) {
            Ok(r) => Ok(r),
            Err(e) => failure_response(&e, rid.as_deref()),
        }
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let adm = session::admission(&ws);
        if self.inner.session.borrow().is_none() {
            if let Some(format) = adm.as_ref().and_then(|a| a.format) {
                self.inner.resume(format);
            }
        }
        let fx = match &message {
            WebSocketIncomingMessage::String(s) => {
                let fx = self.inner.step(Input::Control(s));
                // Remember the stream's format on the socket (it survives eviction).
                let format = match format_change(s, answers_started(&fx)) {
                    FormatChange::Set(format) => Some(Some(format)),
                    FormatChange::Clear => Some(None),
                    FormatChange::Keep => None,
                };
                if let (Some(format), Some(mut a)) = (format, adm) {
                    a.format = format;
                    let _ = ws.serialize_attachment(&a);
                }
                fx
            }
            WebSocketIncomingMessage::Binary(b) => self.inner.step(Input::Audio(b)),
        };
        self.inner.perform(&ws, fx);
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _clean: bool,
    ) -> Result<()> {
        self.closed(&ws);
        session::closed(&self.state, &self.inner.env, "voice", &ws, code);
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        self.closed(&ws);
        session::count_closed(&self.state, &self.inner.env, "voice", &ws, 1006);
        Ok(())
    }
}

impl Voice {
    /// The session ends when its last socket goes (a replaced socket's late close does not
    /// end the session of the socket that replaced it).
    fn closed(&self, ws: &WebSocket) {
        let mine = session::admission(ws).map(|a| a.conn);
        let others = self
            .state
            .get_websockets()
            .iter()
            .filter_map(session::admission)
            .any(|a| Some(a.conn) != mine);
        if !others {
            self.inner.disconnect();
        }
    }
}

impl Inner {
    fn with_session<R>(&self, f: impl FnOnce(&mut VoiceSession) -> R) -> R {
        let mut slot = self.session.borrow_mut();
        let s = slot.get_or_insert_with(|| {
            let snapshot: Snapshot = self.kv.get(SNAPSHOT_KEY).unwrap_or_default();
            let user: UserUsage = self.kv.get(USAGE_KEY).unwrap_or_default();
            let remaining = user.remaining(&self.limits, now_ms());
            let mut s = VoiceSession::restore(snapshot, self.limits, remaining);
            s.set_speech(self.backend.speaks());
            s.set_turn_detection(self.backend.detects_turns());
            s
        });
        f(s)
    }

    /// Ends the in-memory session (persisting and charging what it owes); the next event
    /// restores a fresh one from storage.
    fn disconnect(self: &Rc<Self>) {
        if self.session.borrow().is_none() {
            return;
        }
        let fx = self.with_session(|s| s.apply(Input::Disconnected, now_ms()));
        for e in fx {
            match e {
                Effect::Persist(s) => self.persist(&s),
                Effect::Charge(u) => self.charge(u),
                Effect::Cancel { turn } => {
                    self.cancelled.borrow_mut().insert(turn);
                }
                Effect::CancelSpeech { turn } => {
                    self.speech.borrow_mut().remove(&turn);
                }
                _ => {}
            }
        }
        *self.session.borrow_mut() = None;
    }

    fn persist(&self, s: &Snapshot) {
        if let Err(e) = self.kv.put(SNAPSHOT_KEY, s) {
            worker::console_error!("voice persist: {e}");
        }
    }

    /// Reads the user's totals from their Quota object into the mirror before a session
    /// starts (a Quota object that cannot answer leaves the last mirror in place).
    async fn read_quota(&self, req: &Request) {
        let admission = req
            .headers()
            .get(SESSION_HEADER)
            .ok()
            .flatten()
            .and_then(|h| serde_json::from_str::<SessionAdmission>(&h).ok());
        let Some(a) = admission else { return };
        let ip = req.headers().get("CF-Connecting-IP").ok().flatten();
        let name = crate::sessions::admission::quota_name(&a.user, a.anonymous, ip.as_deref());
        let _ = self.kv.put(QUOTA_NAME_KEY, &name);
        match quota::charge(&self.env, &name, Usage::default()).await {
            Ok(totals) => self.apply_totals(&totals),
            Err(e) => worker::console_error!("voice quota read: {e}"),
        }
    }

    /// The user's totals as the Quota object answered: the mirror, and this session's caps.
    fn apply_totals(&self, totals: &UserUsage) {
        let _ = self.kv.put(USAGE_KEY, totals);
        if let Some(s) = self.session.borrow_mut().as_mut() {
            s.set_user_remaining(totals.remaining(&self.limits, now_ms()));
        }
    }

    /// Adds a charge to the mirror at once, then to the user's Quota object in the
    /// background; its answer (the user's totals across all sessions) becomes the mirror and
    /// resets this session's caps, so the user's other sessions count too.
    fn charge(self: &Rc<Self>, u: Usage) {
        let mut user: UserUsage = self.kv.get(USAGE_KEY).unwrap_or_default();
        user.charge(u, now_ms());
        if let Err(e) = self.kv.put(USAGE_KEY, &user) {
            worker::console_error!("voice charge: {e}");
        }
        let Some(name) = self.kv.get::<String>(QUOTA_NAME_KEY) else {
            return;
        };
        let me = self.clone();
        session::spawn(&self.raw, async move {
            crate::glue::ops::metrics::add(
                &me.env,
                [
                    ("roomkeeper_voice_audio_ms_total", u.audio_ms),
                    ("roomkeeper_voice_tokens_total", u.tokens),
                ]
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(m, n)| crate::metrics::Delta::new(m, &[], n as i64))
                .collect(),
            )
            .await;
            match quota::charge(&me.env, &name, u).await {
                Ok(totals) => me.apply_totals(&totals),
                Err(e) => worker::console_error!("voice charge to quota {name}: {e}"),
            }
        });
    }

    /// Feeds one input to the session; returns the effects to perform.
    fn step(&self, input: Input<'_>) -> Vec<Effect> {
        self.with_session(|s| s.apply(input, now_ms()))
    }

    /// Feeds one input to the session and performs its effects.
    fn apply(self: &Rc<Self>, ws: &WebSocket, input: Input<'_>) {
        let fx = self.step(input);
        self.perform(ws, fx);
    }

    /// After an eviction mid-stream: restarts the capture in the stream's format (silently;
    /// the client never stopped). The real-time allowance restarts from now.
    fn resume(&self, format: AudioFormat) {
        let start = serde_json::json!({"type": "start", "format": format}).to_string();
        let _ = self.step(Input::Control(&start));
    }

    fn perform(self: &Rc<Self>, ws: &WebSocket, fx: Vec<Effect>) {
        for e in fx {
            match e {
                Effect::Send(f) => {
                    if let ServerFrame::Timings(t) = &f {
                        let deltas = stage_deltas(t);
                        let env = self.env.clone();
                        session::spawn(&self.raw, async move {
                            crate::glue::ops::metrics::add(&env, deltas).await
                        });
                    }
                    if let ServerFrame::Utterance { transcribed, .. } = &f {
                        let label = if *transcribed { "true" } else { "false" };
                        let delta = crate::metrics::Delta::new(
                            "roomkeeper_voice_utterances_total",
                            &[("transcribed", label)],
                            1,
                        );
                        let env = self.env.clone();
                        session::spawn(&self.raw, async move {
                            crate::glue::ops::metrics::add(&env, vec![delta]).await
                        });
                    }
                    let _ = ws.send_with_str(f.to_json());
                }
                Effect::Transcribe { utterance, wav } => {
                    let (me, ws) = (self.clone(), ws.clone());
                    session::spawn(&self.raw, async move {
                        me.transcribe(&ws, utterance, wav).await;
                    });
                }
                Effect::Generate {
                    turn,
                    context,
                    max_tokens,
                } => {
                    let (me, ws) = (self.clone(), ws.clone());
                    session::spawn(&self.raw, async move {
                        me.generate(&ws, turn, context, max_tokens).await;
                    });
                }
                Effect::Cancel { turn } => {
                    self.cancelled.borrow_mut().insert(turn);
                }
                Effect::Synthesize {
                    turn,
                    seq,
                    text,
                    sample_rate,
                } => {
                    let running = {
                        let mut q = self.speech.borrow_mut();
                        let running = q.contains_key(&turn);
                        q.entry(turn)
                            .or_default()
                            .push_back((seq, text, sample_rate));
                        running
                    };
                    if !running {
                        let (me, ws) = (self.clone(), ws.clone());
                        session::spawn(&self.raw, async move { me.speak(&ws, turn).await });
                    }
                }
                Effect::CancelSpeech { turn } => {
                    self.speech.borrow_mut().remove(&turn);
                }
                Effect::SendBinary(bytes) => {
                    let _ = ws.send_with_bytes(bytes);
                }
                Effect::DetectTurn { utterance, wav } => {
                    let (me, ws) = (self.clone(), ws.clone());
                    session::spawn(&self.raw, async move {
                        me.detect_turn(&ws, utterance, wav).await;
                    });
                }
                Effect::WakeAt(at) => {
                    let (me, ws) = (self.clone(), ws.clone());
                    let wait = at.saturating_sub(now_ms());
                    session::spawn(&self.raw, async move {
                        worker::Delay::from(std::time::Duration::from_millis(wait)).await;
                        me.apply(&ws, Input::Tick);
                    });
                }
                Effect::Persist(s) => self.persist(&s),
                Effect::Charge(u) => self.charge(u),
                Effect::Close { code, reason } => {
                    let _ = ws.close(Some(code), Some(reason));
                }
            }
        }
    }

    async fn transcribe(self: Rc<Self>, ws: &WebSocket, utterance: u32, wav: Vec<u8>) {
        let started = now_ms();
        let result = net::transcribe(&self.backend, &self.env, &wav).await;
        if self.backend != Backend::Builtin {
            let error = result.as_ref().err().map(ToString::to_string);
            let ms = now_ms().saturating_sub(started);
            crate::glue::ops::alerts::provider_call(&self.env, "voice", "transcribe", ms, error)
                .await;
        }
        let transcript = match result {
            Ok(t) => t,
            Err(e) => {
                let frame = ServerFrame::Error {
                    code: TRANSCRIPTION_FAILED.into(),
                    message: format!("the utterance could not be transcribed: {e}"),
                };
                let _ = ws.send_with_str(frame.to_json());
                None
            }
        };
        self.apply(
            ws,
            Input::Transcribed {
                utterance,
                transcript,
            },
        );
    }

    /// The one task that makes a turn's speech: its chunks one after another, in order, each
    /// answer fed back to the session; it stops when the turn is cancelled.
    async fn speak(self: Rc<Self>, ws: &WebSocket, turn: u64) {
        loop {
            let next = self
                .speech
                .borrow_mut()
                .get_mut(&turn)
                .and_then(VecDeque::pop_front);
            let Some((seq, text, rate)) = next else {
                let mut q = self.speech.borrow_mut();
                if q.get(&turn).is_some_and(VecDeque::is_empty) {
                    q.remove(&turn);
                }
                return;
            };
            let started = now_ms();
            let result = net::synthesize(&self.backend, &self.env, &text, rate).await;
            let ms = now_ms().saturating_sub(started);
            let error = result.as_ref().err().cloned();
            crate::glue::ops::alerts::provider_call(&self.env, "voice", "synthesize", ms, error)
                .await;
            if !self.speech.borrow().contains_key(&turn) {
                return; // cancelled meanwhile
            }
            self.apply(
                ws,
                Input::Synthesized {
                    turn,
                    seq,
                    result,
                    synth_ms: ms,
                },
            );
        }
    }

    /// Asks the turn model about an utterance; a failure or a timeout leaves it to the VAD.
    async fn detect_turn(self: Rc<Self>, ws: &WebSocket, utterance: u32, wav: Vec<u8>) {
        let started = now_ms();
        let result = net::detect_turn(&self.backend, &self.env, &wav).await;
        let ms = now_ms().saturating_sub(started);
        let error = result.as_ref().err().map(ToString::to_string);
        crate::glue::ops::alerts::provider_call(&self.env, "voice", "turn", ms, error).await;
        let (complete, probability) = match result {
            Ok(Some((c, p))) => (Some(c), p),
            _ => (None, None),
        };
        self.apply(
            ws,
            Input::TurnDetected {
                utterance,
                complete,
                probability,
            },
        );
    }

    fn is_cancelled(&self, turn: u64) -> bool {
        self.cancelled.borrow().contains(&turn)
    }

    async fn generate(
        self: Rc<Self>,
        ws: &WebSocket,
        turn: u64,
        context: Vec<crate::sessions::voice::ContextTurn>,
        max_tokens: u32,
    ) {
        let result = if self.backend == Backend::Builtin {
            // Built-in: answer the user's last turn from the knowledge base, as is.
            let question = context
                .iter()
                .rev()
                .find(|t| t.role == Role::User)
                .map_or("", |t| t.text.as_str());
            let a = chat::answer(question);
            let mut text = a.text.clone();
            if let Some(s) = a.sources.first() {
                text.push_str(&format!(" (Source: {} — {}.)", s.title, s.heading));
            }
            let reply = chat::Reply {
                text,
                sources: a.sources,
            };
            for f in chat::reply_frames(None, &reply) {
                if let chat::ServerFrame::ReplyDelta { text, .. } = f {
                    if self.is_cancelled(turn) {
                        break;
                    }
                    self.apply(ws, Input::ReplyDelta { turn, text });
                }
            }
            Ok(None)
        } else {
            let messages = providers::voice_messages(&context);
            let me = self.clone();
            let started = now_ms();
            let result = net::generate(&self.backend, &self.env, &messages, max_tokens, |text| {
                if me.is_cancelled(turn) {
                    return false;
                }
                me.apply(ws, Input::ReplyDelta { turn, text });
                true
            })
            .await;
            let error = result.as_ref().err().map(ToString::to_string);
            let ms = now_ms().saturating_sub(started);
            crate::glue::ops::alerts::provider_call(&self.env, "voice", "generate", ms, error)
                .await;
            result
        };
        if !self.is_cancelled(turn) {
            match result {
                Ok(tokens) => self.apply(ws, Input::ReplyDone { turn, tokens }),
                Err(e) => self.apply(
                    ws,
                    Input::ReplyFailed {
                        turn,
                        message: e.to_string(),
                    },
                ),
            }
        }
        self.cancelled.borrow_mut().remove(&turn);
    }
}

/// A turn's stages as observations of the `roomkeeper_voice_stage_ms` histogram.
fn stage_deltas(t: &crate::sessions::voice::TurnTimings) -> Vec<crate::metrics::Delta> {
    use crate::metrics::{observe, STAGE_BUCKETS_MS, VOICE_STAGE_MS};
    [
        ("transcript", t.transcript_ms),
        ("first_token", t.first_token_ms),
        ("reply", t.reply_ms),
        ("first_audio", t.first_audio_ms),
        ("synthesis", (t.synthesis_ms > 0).then_some(t.synthesis_ms)),
    ]
    .into_iter()
    .filter_map(|(stage, ms)| ms.map(|ms| (stage, ms)))
    .flat_map(|(stage, ms)| observe(VOICE_STAGE_MS, &[("stage", stage)], ms, STAGE_BUCKETS_MS))
    .collect()
}
