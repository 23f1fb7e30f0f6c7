//! The Room object and its batch window.

pub mod room;
pub mod store;
pub mod window;
