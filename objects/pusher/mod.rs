//! The Pusher Channels gateway: shards holding client sockets.

pub mod gateway;
pub mod users;
