//! The Pusher Channels gateway: shards holding client sockets.

pub mod gateway;
