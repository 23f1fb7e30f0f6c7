//! The Voice and Chat session objects, the per-user Quota object, and what they share.

pub mod chat;
pub mod quota;
pub mod session;
pub mod voice;
