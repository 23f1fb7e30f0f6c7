//! Roomkeeper: a realtime session service for Cloudflare Workers.
//!
//! # Layout
//!
//! Folders are capabilities, and every path says whether a file is pure core or Workers glue.
//! The core — every module below but `glue` and `objects` — is plain Rust that `cargo test`
//! runs natively; it never uses the `worker` crate (a wasm32-only dependency) nor the glue,
//! which `tests/layout.rs` checks along with the absence of import cycles.
//!
//! Core:
//! - [`http`]: the HTTP edge's pure parts — [`http::route`] (paths into a `Route`, name
//!   rules), [`http::error`] (the one error type and its status and JSON body),
//!   [`http::cors`], [`http::bodies`] (request bodies).
//! - [`config`]: [`config::SETTINGS`], the one table of every setting, and their parsing.
//! - [`internal`]: every internal call between the Worker and the objects, as one enum.
//! - [`auth`]: connection tokens (JWT HS256) and API keys.
//! - [`obs`], [`metrics`], [`probe`]: request ids and log lines; counters and their
//!   rendering; the objects' counts of their runtime calls.
//! - [`rooms`]: the wire protocol, the room state machine over a `Store`, its batch window,
//!   write-behind and figures.
//! - [`sessions`]: the voice agent (audio, VAD, turns, usage) and the chatbot (knowledge
//!   base, extraction, conversation), and the AI provider seam.
//! - [`coordination`]: GCRA rate-limit arithmetic and lease locks with fencing tokens.
//! - [`services`]: leads, notifications (templates, the delivery state machine, webhook
//!   signatures) and the valuation model.
//!
//! Glue (wasm32 only):
//! - `glue` (`src/glue/`): the routing Worker — `router` on top, one module per capability
//!   under it, and leaves every piece of glue may use (`http`, `settings`, `stub`,
//!   `admission`, `d1`).
//! - `objects` (`objects/`): the Durable Objects by capability — `rooms/`, `sessions/`,
//!   `coordination/`, `metrics`, `bench` — each a thin shell over its core type.
//!
//! Time is always passed in as `now_ms`; nothing in the core reads a clock.

pub mod auth;
pub mod config;
pub mod coordination;
pub mod http;
pub mod internal;
pub mod metrics;
pub mod obs;
pub mod probe;
pub mod pusher;
pub mod rooms;
pub mod services;
pub mod sessions;

#[cfg(target_arch = "wasm32")]
mod glue;
#[cfg(target_arch = "wasm32")]
#[path = "../objects/mod.rs"]
mod objects;
