//! Roomkeeper's test kit: the support code the end-to-end tests (`tests/e2e/`) and the
//! benchmark tool (`examples/bench/`) share, as a crate of its own instead of files included
//! by path.
//!
//! - [`harness`]: builds the Worker, starts real workerd through `wrangler dev` on free ports,
//!   and gives tests real WebSocket and HTTP clients and webhook receivers.
//! - [`workerd`]: finding, measuring and killing the workerd processes behind a server.
//!
//! Paths are relative to the repository root ([`harness::root`]), not to this crate.

pub mod harness;
pub mod workerd;
