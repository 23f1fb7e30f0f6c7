//! Roomkeeper: a realtime session service for Cloudflare Workers.
//!
//! # Layout
//!
//! The crate is split so that every decision is plain Rust that `cargo test` runs natively,
//! and the Workers glue only moves bytes between workerd and that core.
//!
//! - [`error`]: the one error type of the HTTP edge and its mapping to status and JSON body.
//! - [`config`]: settings from `[vars]` and secrets, parsed without panics.
//! - [`route`]: request paths parsed into a [`route::Route`] enum; name validation.
//! - [`cors`]: the CORS allow-list and preflight decision.
//! - [`api`]: HTTP API request bodies and their validation.
//! - [`auth`]: connection tokens (JWT HS256) and API keys.
//! - [`protocol`]: the WebSocket wire format (JSON text or MessagePack binary frames).
//! - [`batch`]: write-behind for a room's batch window (one storage commit per window).
//! - [`room`]: the room state machine (sessions, presence, offsets, recovery) over a `Store`.
//! - [`limiter`]: GCRA rate-limit arithmetic and named policies.
//! - [`lock`]: lease locks with fencing tokens and FIFO waiters.
//! - [`leads`]: lead validation, phone/email normalisation, scoring, CSV export.
//! - [`valuation`]: property valuation from comparable sales.
//! - [`notify`]: notification templates, delivery policy, webhook signatures.
//! - [`metrics`]: counters, Prometheus text and JSON rendering.
//! - [`obs`]: request ids and structured (JSON) log lines.
//! - [`voice`]: audio frame validation, voice activity detection, the voice turn machine.
//! - [`chatbot`]: knowledge-base retrieval (BM25) and the lead-qualification conversation.
//! - [`providers`]: the AI provider seam (OpenAI-compatible HTTP, Workers AI, built-in).
//! - `glue` (wasm32 only, `src/glue.rs`): the routing Worker's `fetch` entry point.
//! - `coord` (wasm32 only, `src/coord.rs`): the router's side of the Limiter and Lock objects.
//! - `objects` (wasm32 only, `objects/`): Durable Object glue, one file per object kind.
//! - `ops` (wasm32 only, `src/ops.rs`): metrics, admin endpoints and throttled alerts.
//! - `services` (wasm32 only, `src/services.rs`): leads, valuation and notification handlers
//!   over D1, KV and the job queue, and the queue consumer.
//!
//! Time is always passed in as `now_ms`; nothing in the core reads a clock.

pub mod auth;
pub mod config;
pub mod coordination;
pub mod http;
pub mod internal;
pub mod metrics;
pub mod obs;
pub mod rooms;
pub mod services;
pub mod sessions;

#[cfg(target_arch = "wasm32")]
mod glue;
#[cfg(target_arch = "wasm32")]
#[path = "../objects/mod.rs"]
mod objects;
