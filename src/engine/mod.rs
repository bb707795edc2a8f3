//! The engine: the state that producers and the drainer share, the lanes
//! it is made of, and the drainer.

pub(crate) mod drainer;
mod lane;
#[cfg(feature = "tokio")]
pub(crate) mod runtime;
mod shared;

pub(crate) use lane::{Lane, Ownership};
pub(crate) use shared::{Control, DirectFn, Inline, Shared, Spill};
