//! Durable Object glue, one file per object kind. Each object is a thin shell over a plain
//! core type: it loads state, feeds inputs to the core and performs the effects it returns.

pub mod limiter;
pub mod lock;
pub mod room;
