//! The engine: the state that producers and the drainer share, and the
//! lanes it is made of.

mod lane;
mod shared;

pub(crate) use lane::Lane;
pub(crate) use shared::{Control, DirectFn, Inline, Shared, Spill};
