//! Durable batching (feature `durable`): an append-only log of the batches
//! dispatched and the items given back at shutdown, replayed by the next
//! batcher built on the same directory.
//!
//! The store (`store/`) is plain data and file I/O; the drainer decides
//! what to write and when (`engine`).

mod codec;
mod settings;
pub(crate) mod store;

pub use codec::{Codec, CodecError, FnCodec, Postcard, codec_fn};
pub use settings::{CorruptTail, Durability, FsyncPolicy, ItemId, StoreError};
