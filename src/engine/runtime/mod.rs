//! The tokio facade: async handlers that run batches on a tokio runtime with
//! a bounded number in flight.
//!
//! The drainer thread still sweeps the lanes and assembles batches; instead
//! of calling a handler itself it hands each full buffer to one of
//! `max_in_flight` worker tasks spawned on the runtime when the batcher is
//! built, takes a fresh buffer from the pool and goes on assembling. When
//! every buffer is in flight it waits for one to come back, so backpressure
//! flows through the rings to the producers. A worker runs the handler's
//! future, completes the tickets the handler left (from the task), and puts
//! the buffer back in the pool. Nothing is allocated per batch: the workers,
//! their hand-off queue and the buffers all exist from the start.
//!
//! If the runtime shuts down while batches are in flight, their tickets fail
//! with [`Error::RuntimeShutdown`](crate::Error::RuntimeShutdown), and so does every later batch: nothing
//! hangs.

mod handler;
mod pipeline;
mod worker;

pub(crate) use handler::FnAsyncHandler;
pub use handler::{AsyncBatch, AsyncHandler};
#[cfg(all(loom, test))]
pub(crate) use pipeline::WaitFlag;
pub(crate) use pipeline::{Pipeline, TaskWake, close, dispatch};
pub(crate) use worker::spawn_workers;
