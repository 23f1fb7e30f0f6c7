//! Operability glue (wasm32 only): [`metrics`] in and out, the [`admin`] endpoints, and
//! [`alerts`].

pub mod admin;
pub mod alerts;
pub mod metrics;
