//! Durable Object glue, one file per object kind. Each object is a thin shell over a plain
//! core type: it loads state, feeds inputs to the core and performs the effects it returns.

pub mod batch;
pub mod bench;
pub mod chat;
pub mod limiter;
pub mod lock;
pub mod metrics;
pub mod quota;
pub mod room;
pub mod session;
pub mod socket;
pub mod voice;
