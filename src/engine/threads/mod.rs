//! Handler threads (`BatcherBuilder::handler_threads`): blocking handlers
//! run on `n` threads of their own, up to `n` batches at once.
//!
//! The drainer thread still sweeps the lanes and assembles batches; instead
//! of calling the handler itself it queues each full buffer for a handler
//! thread, takes a fresh buffer from the pool and goes on assembling. When
//! every buffer is in flight it waits for one to come back, so
//! backpressure flows through the rings to the producers, as with an async
//! handler's `max_in_flight`. A handler thread runs its own handler on the
//! batch (under the failure policies, if any), completes what the handler
//! left and puts the buffer back in the pool. Nothing is allocated per
//! batch: the threads, their queues (each with room for every buffer of the
//! pool) and the buffers exist from the start.
//!
//! The hand-off uses only std locks: a `Mutex` + `Condvar` queue per
//! routing target, and one for the count of batches in flight that the
//! drainer waits on (a flush or shutdown waits for zero, the drainer waits
//! for a buffer when the pool is empty). A waiter checks its condition with
//! the lock held, and every change is made before the changer takes the
//! lock to notify, so no wake-up is lost.
//!
//! Routing ([`ThreadRouting`](crate::ThreadRouting)): every thread takes
//! from one shared queue (`AnyFree`), or each thread has a queue of its own
//! and a batch of key group `g` goes to thread `g % n` (`ByGroup`), so that
//! each group's batches run one at a time, in dispatch order.

mod handoff;
mod worker;

pub(crate) use handoff::{Threads, close, dispatch};
pub(crate) use worker::{MakeHandler, spawn_threads};
