//! Rooms: the wire protocol, the room state machine, its batch-window write-behind and its
//! figures. The Durable Object glue that moves their frames is `objects/rooms/`.

pub mod history;
pub mod lag;
pub mod limits;
pub mod multiplex;
pub mod names;
pub mod protocol;
pub mod rate;
pub mod room;
pub mod session;
pub mod shards;
pub mod stats;
pub mod store;
pub mod window;
pub mod write_behind;
