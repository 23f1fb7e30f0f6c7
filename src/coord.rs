//! (in progress) HTTP handlers for the coordination objects (limits, locks) — wasm32 only.
