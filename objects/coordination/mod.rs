//! The Limiter and Lock objects.

pub mod limiter;
pub mod lock;
