//! Durable Object glue, one folder per capability. Each object is a thin shell over a plain
//! core type: it loads state, feeds inputs to the core and performs the effects it returns.

pub mod alarm;
pub mod bench;
pub mod coordination;
pub mod metrics;
pub mod pusher;
pub mod rooms;
pub mod sessions;
pub mod socket;
