//! The Chat Durable Object: one chatbot conversation per user and session
//! (`<user>:<session>`).
//!
//! A thin shell over [`crate::sessions::chat::Conversation`]: each text frame is decoded
//! ([`decode_chat`]), applied, and its [`Output`]s performed in order: replies become
//! `reply_delta`/`reply_done` frames ([`reply_frames`]), and a lead ready for submission goes
//! to the leads service in-process ([`crate::glue::services::submit_lead`]: validate, de-duplicate,
//! store, queue enrichment), whose answer is fed back with [`Conversation::lead_result`]. The
//! conversation is stored in SQLite after every message.
//!
//! With an LLM provider configured, a knowledge-base answer is rewritten by the model from the
//! retrieved passage and streamed; without one (or when the model fails, after an error
//! frame) the retrieval answer is sent as is. "I don't know" answers and the qualification
//! dialogue never go through the model.

use std::cell::RefCell;
use std::collections::VecDeque;

use serde_json::Value;
use worker::{
    durable_object, DurableObject, Env, Request, Response, Result, State, WebSocket,
    WebSocketIncomingMessage,
};

use super::session::{self, Kv};
use crate::glue::http::{failure_response, now_ms};
use crate::glue::providers as net;
use crate::http::error::ApiError;
use crate::internal::Binding;
use crate::services::leads::{LeadInput, Timeline};
use crate::sessions::chat::{
    self, decode_chat, reply_frames, ChatRate, ClientFrame, Conversation, LeadOutcome,
    LeadSubmission, Output, Purpose, Reply, ServerFrame, Slot,
};
use crate::sessions::providers::{self, Backend};

/// Token cap of one generated chat answer.
pub const CHAT_MAX_TOKENS: u32 = 300;

const CONVERSATION_KEY: &str = "conversation";

/// The Chat object.
#[durable_object]
pub struct Chat {
    state: State,
    env: Env,
    kv: Kv,
    backend: Backend,
    conv: RefCell<Option<Conversation>>,
    /// The message rate bucket (in memory: a limit, not an account).
    rate: RefCell<ChatRate>,
}

impl DurableObject for Chat {
    fn new(state: State, env: Env) -> Self {
        let (_, backend) = session::configured(&env);
        Self {
            kv: Kv::new(&state, &env),
            backend,
            state,
            env,
            conv: RefCell::new(None),
            rate: RefCell::new(ChatRate::default()),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        if let Some(refusal) = session::refuse_misconfigured(&self.env, &req, Binding::Chat) {
            return Ok(refusal);
        }
        let rid = crate::glue::http::request_id(&req);
        match session::accept(&self.state, &self.env, &req, "chat", &self.backend, None) {
            Ok(r) => Ok(r),
            Err(e) => failure_response(&e, rid.as_deref()),
        }
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let WebSocketIncomingMessage::String(text) = message else {
            send(
                &ws,
                &error_frame(
                    "wrong_frame_kind",
                    "chat sockets take JSON text frames, not binary",
                ),
            );
            return Ok(());
        };
        let frame = match decode_chat(&text) {
            Ok(f) => f,
            Err(e) => {
                send(&ws, &e.frame());
                return Ok(());
            }
        };
        let now = now_ms();
        if let Err(limited) = self.rate.borrow_mut().admit(now) {
            send(&ws, &error_frame(limited.code(), &limited.to_string()));
            return Ok(());
        }
        let (outputs, id, question) = match frame {
            ClientFrame::Message { text, id } => {
                let out = self.with_conv(|c| c.apply(&text, now));
                (out, id, text)
            }
            ClientFrame::Qualify {} => (
                self.with_conv(|c| c.start(Purpose::Valuation, now)),
                None,
                String::new(),
            ),
            ClientFrame::Reset {} => {
                *self.conv.borrow_mut() = Some(Conversation::new());
                let reply = Reply {
                    text: "Let's start again. How can I help?".into(),
                    sources: Vec::new(),
                };
                (vec![Output::Reply(reply)], None, String::new())
            }
        };
        self.save();
        self.perform(&ws, outputs, id.as_deref(), &question).await;
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _clean: bool,
    ) -> Result<()> {
        session::closed(&self.state, &self.env, "chat", &ws, code);
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        session::count_closed(&self.state, &self.env, "chat", &ws, 1006);
        Ok(())
    }
}

fn send(ws: &WebSocket, f: &ServerFrame) {
    let _ = ws.send_with_str(f.to_json());
}

fn error_frame(code: &str, message: &str) -> ServerFrame {
    ServerFrame::Error {
        code: code.into(),
        message: message.into(),
    }
}

/// The lead as the leads service takes it.
fn lead_input(s: LeadSubmission) -> LeadInput {
    LeadInput {
        name: Some(s.name),
        email: s.email,
        phone: s.phone,
        address: s.address,
        timeline: s.timeline.map(|t: Timeline| t.as_str().to_string()),
        source: Some(chat::LEAD_SOURCE.into()),
        notes: s.notes,
        ..LeadInput::default()
    }
}

/// The leads service's refusal as the conversation understands it: which detail was at fault.
fn rejection(e: &ApiError) -> LeadOutcome {
    let slot = match e {
        ApiError::Invalid { fields, .. } => fields
            .pointer("/0/field")
            .and_then(Value::as_str)
            .and_then(|f| match f {
                "name" => Some(Slot::Name),
                "email" | "phone" => Some(Slot::Contact),
                "address" => Some(Slot::Address),
                "timeline" => Some(Slot::Timeline),
                _ => None,
            }),
        _ => None,
    };
    LeadOutcome::Rejected {
        slot,
        message: e.to_string(),
    }
}

impl Chat {
    fn with_conv<R>(&self, f: impl FnOnce(&mut Conversation) -> R) -> R {
        let mut slot = self.conv.borrow_mut();
        let c = slot.get_or_insert_with(|| self.kv.get(CONVERSATION_KEY).unwrap_or_default());
        f(c)
    }

    fn save(&self) {
        let conv = self.conv.borrow().clone();
        if let Some(c) = conv {
            if let Err(e) = self.kv.put(CONVERSATION_KEY, &c) {
                worker::console_error!("chat persist: {e}");
            }
        }
    }

    async fn perform(
        &self,
        ws: &WebSocket,
        outputs: Vec<Output>,
        id: Option<&str>,
        question: &str,
    ) {
        let mut queue: VecDeque<Output> = outputs.into();
        while let Some(out) = queue.pop_front() {
            match out {
                Output::Reply(reply) => self.reply(ws, id, question, &reply).await,
                Output::SubmitLead(lead) => {
                    let outcome =
                        match crate::glue::services::submit_lead(&self.env, lead_input(lead)).await
                        {
                            Ok(created) => {
                                send(
                                    ws,
                                    &ServerFrame::LeadSubmitted {
                                        lead_id: Some(created.id.clone()),
                                    },
                                );
                                LeadOutcome::Accepted {
                                    lead_id: Some(created.id),
                                }
                            }
                            Err(e) => rejection(&e),
                        };
                    let more = self.with_conv(|c| c.lead_result(outcome, now_ms()));
                    self.save();
                    queue.extend(more);
                }
            }
        }
    }

    /// Sends a reply: generated from its passage by the LLM when one is configured and the
    /// reply is a knowledge-base answer, else as is.
    async fn reply(&self, ws: &WebSocket, id: Option<&str>, question: &str, reply: &Reply) {
        session::count(
            &self.state,
            &self.env,
            vec![crate::metrics::Delta::new(
                "roomkeeper_chat_messages_total",
                &[],
                1,
            )],
        );
        if self.backend != Backend::Builtin && !reply.sources.is_empty() && !question.is_empty() {
            let passages: Vec<(String, String)> = reply
                .sources
                .iter()
                .take(1)
                .map(|s| (format!("{} — {}", s.title, s.heading), reply.text.clone()))
                .collect();
            let messages = providers::rag_messages(question, &passages);
            let mut text = String::new();
            let started = now_ms();
            let result = net::generate(&self.backend, &self.env, &messages, CHAT_MAX_TOKENS, |d| {
                send(
                    ws,
                    &ServerFrame::ReplyDelta {
                        id: id.map(str::to_string),
                        text: d.clone(),
                    },
                );
                text.push_str(&d);
                true
            })
            .await;
            let error = result.as_ref().err().map(ToString::to_string);
            let ms = now_ms().saturating_sub(started);
            crate::glue::ops::alerts::provider_call(&self.env, "chat", "generate", ms, error).await;
            match result {
                Ok(_) if !text.trim().is_empty() => {
                    send(
                        ws,
                        &ServerFrame::ReplyDone {
                            id: id.map(str::to_string),
                            text,
                            sources: reply.sources.clone(),
                        },
                    );
                    return;
                }
                Ok(_) => {}
                Err(e) => send(
                    ws,
                    &error_frame(
                        "generation_failed",
                        &format!("the assistant could not reply: {e}; here is the guide's answer"),
                    ),
                ),
            }
        }
        for f in reply_frames(id, reply) {
            send(ws, &f);
        }
    }
}
