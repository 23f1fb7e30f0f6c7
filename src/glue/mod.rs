//! The routing Worker's glue (wasm32 only): everything here talks to workerd through the
//! `worker` crate and hands every decision to the core modules.
//!
//! Leaves every other piece of glue (and the objects) may use: [`http`] (responses, bodies,
//! logs, the clock), [`settings`] (the parsed settings, secrets), [`stub`] (the one typed way to
//! call an object) and [`admission`] (who is connecting). Above them, one module per
//! capability, and [`router`], the `fetch` entry point, on top.

pub mod admission;
pub mod bench;
pub mod coordination;
pub mod d1;
pub mod http;
pub mod mux;
pub mod ops;
pub mod providers;
pub mod pusher;
pub mod rooms;
pub mod router;
pub mod services;
pub mod sessions;
pub mod settings;
pub mod stub;
