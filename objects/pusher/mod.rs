//! The Pusher Channels gateway: shards holding client sockets.

pub mod delivery;
pub mod gateway;
pub mod native;
pub mod users;
