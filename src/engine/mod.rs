//! The engine: the state that producers and the drainer share, the lanes
//! it is made of, the drainer, and the handler threads or async workers
//! it hands batches to.

pub(crate) mod drainer;
#[cfg(feature = "durable")]
pub(crate) mod durable;
mod lane;
#[cfg(feature = "tokio")]
pub(crate) mod runtime;
mod shared;
pub(crate) mod threads;

pub(crate) use lane::{Lane, Ownership};
pub(crate) use shared::{Control, DirectFn, Inline, Shared, Spill};
