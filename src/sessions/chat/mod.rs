//! The chatbot's pure core: support answers from a knowledge base, and lead qualification.
//!
//! The `Bot` Durable Object holds one conversation. It hands each user message to
//! [`Conversation::apply`] and performs what comes back: [`Output::Reply`] becomes chat
//! frames ([`reply_frames`]), [`Output::SubmitLead`] goes to the leads service, whose answer
//! comes back through [`Conversation::lead_result`]. The conversation is serializable, so the
//! object persists it after every message and a restarted object carries on mid-question.
//!
//! # Why retrieval and not generation
//!
//! The built-in provider must only say what it truly knows. Answers are therefore passages of
//! the agency's own guides (`kb/*.md`, embedded at compile time), ranked by BM25, with their
//! sources; when nothing ranks above [`MIN_SCORE`] the bot says plainly that it does not know
//! and offers to take contact details instead of guessing.
//!
//! # Layout
//!
//! - Knowledge base: [`KB_DOCS`], [`passages`], [`tokenize`], [`KnowledgeBase`] (BM25 with
//!   [`BM25_K1`] and [`BM25_B`]), [`answer`] → [`Answer`].
//! - Slot extraction from free text: [`extract`] → [`Extracted`] (name, email, phone,
//!   address, timeline, and which of them were given but invalid); [`detect_intent`].
//! - The conversation: [`Conversation`], [`Output`], [`LeadSubmission`], [`LeadOutcome`].
//! - Wire format: [`ClientFrame`], [`ServerFrame`], [`decode_chat`], [`ChatError`].
//! - Message rate limit: [`ChatRate`] (GCRA, [`CHAT_RATE_MAX`] per [`CHAT_RATE_WINDOW_MS`]).

mod conversation;
mod extract;
mod intent;
mod kb;
mod rate;
mod wire;

pub use conversation::*;
pub use extract::*;
pub use intent::*;
pub use kb::*;
pub use rate::*;
pub use wire::*;
