//! Batches: the buffer the drainer fills and the handler reads, the pool of
//! buffers, the per-item marks, and the load feedback a handler reports.
//! Nothing here knows of failure policies or shaping; they use these.

mod buffer;
mod feedback;
pub(crate) mod mark;
mod pool;

pub(crate) use buffer::{BatchBuf, Origin};
pub use feedback::LoadFeedback;
pub(crate) use pool::Pool;
