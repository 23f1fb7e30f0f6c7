//! The Room object and its batch window.

pub mod room;
pub mod shards;
pub mod store;
pub mod subscribers;
pub mod window;
