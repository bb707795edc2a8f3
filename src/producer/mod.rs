//! Producers: how items get into a lane. The handle and how it joins a
//! lane, claims under each backpressure policy (waiting for room), single
//! submissions, slices, the task-side polling, and the async producer.

mod async_producer;
mod backpressure;
mod handle;
mod poll;
mod room;
mod slice;
mod submit;

pub use async_producer::AsyncProducer;
pub use handle::Producer;
pub(crate) use handle::{Wait, deadline, refused};
pub(crate) use room::retry_until_room;
