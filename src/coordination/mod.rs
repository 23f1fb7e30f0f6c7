//! Coordination: rate-limit arithmetic (GCRA) and lease locks with fencing tokens. The
//! Durable Objects that hold them are `objects/coordination/`.

pub mod limiter;
pub mod lock;
