//! Roomkeeper: a realtime session service for Cloudflare Workers.
//!
//! # Layout
//!
//! The crate is split so that every decision is plain Rust that `cargo test` runs natively,
//! and the Workers glue only moves bytes between workerd and that core.
//!
//! - [`error`]: the one error type of the HTTP edge and its mapping to status and JSON body.
//! - [`route`]: request paths parsed into a [`route::Route`] enum; room name validation.
//! - [`cors`]: the CORS allow-list and preflight decision.
//! - [`protocol`]: the WebSocket wire format (JSON text or MessagePack binary frames).
//! - [`room`]: the room state machine (members, offsets, history) driven by `apply`.
//! - [`api`]: HTTP API request bodies and their validation.
//! - [`auth`]: connection tokens (JWT HS256) and API keys.
//! - [`limiter`]: GCRA rate-limit arithmetic and named policies.
//! - [`lock`]: lease locks with fencing tokens and FIFO waiters.
//! - [`valuation`]: property valuation from comparable sales.
//! - `glue` (wasm32 only, `src/glue.rs`): the routing Worker's `fetch` entry point.
//! - `objects` (wasm32 only, `objects/`): Durable Object glue, one file per object kind.
//!
//! Time is always passed in as `now_ms`; nothing in the core reads a clock.

pub mod api;
pub mod auth;
pub mod config;
pub mod cors;
pub mod error;
pub mod limiter;
pub mod lock;
pub mod protocol;
pub mod room;
pub mod route;
pub mod valuation;

#[cfg(target_arch = "wasm32")]
mod glue;
#[cfg(target_arch = "wasm32")]
#[path = "../objects/mod.rs"]
mod objects;
