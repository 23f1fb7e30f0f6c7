//! The routing Worker's glue (wasm32 only): everything here talks to workerd through the
//! `worker` crate and hands every decision to the core modules.

pub mod coordination;
pub mod ops;
pub mod router;
pub mod services;
