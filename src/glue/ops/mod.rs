//! Operability glue (wasm32 only): [`metrics`] in and out, the [`admin`] endpoints, and
//! [`alerts`].

pub mod admin;
pub mod alerts;
pub mod metrics;

// Transitional re-exports for callers not yet moved to the modules' own paths.
pub(crate) use alerts::provider_call;
pub(crate) use metrics::add;
