//! The HTTP edge's pure parts: the one error type, request routing, CORS and request bodies.

pub mod bodies;
pub mod client;
pub mod cors;
pub mod error;
pub mod route;
