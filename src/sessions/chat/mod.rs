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
//! - Knowledge base (`kb.rs`): [`KB_DOCS`], [`passages`], [`tokenize`], [`KnowledgeBase`]
//!   (BM25 with [`BM25_K1`] and [`BM25_B`]), [`answer`] → [`Answer`].
//! - Slot extraction from free text (`extract.rs`): [`extract`] → [`Extracted`] (name, email,
//!   phone, address, timeline, and which of them were given but invalid; email addresses are
//!   checked with the leads service's own `normalize_email`).
//! - Intents (`intent.rs`): [`detect_intent`] → [`Intent`], [`Purpose`].
//! - The conversation (`conversation.rs`): [`LeadDraft`], [`Conversation`], [`Output`],
//!   [`LeadSubmission`], [`LeadOutcome`].
//! - Wire format (`wire.rs`): [`ClientFrame`], [`ServerFrame`], [`decode_chat`], [`ChatError`].
//! - Message rate limit (`rate.rs`): [`ChatRate`] (GCRA, a burst of [`CHAT_RATE_MAX`],
//!   [`CHAT_RATE_MAX`] per [`CHAT_RATE_WINDOW_MS`]).

// Each concept is one file; the items are re-exported here so `sessions::chat::X` is the
// one path callers use. Files import siblings directly, never through these re-exports.
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
