//! Sessions: the voice agent and the chatbot, and the AI provider seam they share. The
//! Durable Object glue is `objects/sessions/`.

pub mod admission;
pub mod chat;
pub mod providers;
pub mod voice;
