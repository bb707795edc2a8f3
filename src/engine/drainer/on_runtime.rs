//! The drainer as a task on the runtime (`drain_on_runtime`).

use super::Sink;
use crate::batch::BatchBuf;
use crate::engine::drainer::Drainer;
use crate::ring::{announce_park_all, withdraw_park};
use crate::shape::Force;
use crate::stats::DispatchReason;
use crate::sync::{Arc, Ordering};
#[cfg(feature = "tokio")]
use crate::wait::WaitStrategy;

#[cfg(feature = "tokio")]
impl<T: Send + 'static, R: Send + 'static> Drainer<T, R> {
    /// Makes this drainer run as a task (`run_async`).
    pub(crate) fn on_runtime(mut self) -> Self {
        self.on_runtime = true;
        self
    }

    /// The drainer task's body: `run` without blocking the worker thread.
    /// Where the thread spins, the task yields to the executor; where the
    /// thread parks, the task stores its waker and returns `Pending`.
    pub(crate) async fn run_async(mut self) {
        let outcome = {
            let run = core::pin::pin!(self.run_async_loop());
            crate::contain::CatchUnwind(run).await
        };
        if let Err(message) = outcome {
            // As in `run`.
            self.fail_fatally(message);
        }
        if !self.need_buffer {
            self.shared.pool.put(core::mem::replace(
                &mut self.buf,
                BatchBuf::with_capacity(0),
            ));
        }
        self.finished = true;
    }

    /// [`run_async`](Self::run_async)'s loop, until shutdown.
    pub(super) async fn run_async_loop(&mut self) {
        loop {
            if self.need_buffer {
                self.await_buffer().await;
            }
            self.refresh_settings();
            let control = &self.shared.control;
            // Acquire pairs with the Release store in `Batcher::begin_stop`.
            if control.closing.load(Ordering::Acquire) {
                self.drain_all_async(DispatchReason::Shutdown).await;
                self.await_in_flight().await;
                if matches!(self.sink, Sink::Async) {
                    crate::engine::runtime::close(&self.shared);
                }
                break;
            }
            if self.held().waits() {
                // Paused, or a holding breaker is open: the task yields
                // until it may go on.
                tokio::task::yield_now().await;
                continue;
            }
            // Acquire pairs with the AcqRel increment in `Batcher::flush`.
            let flush = control.flush_requested.load(Ordering::Acquire);
            if flush != self.flush_done {
                self.drain_all_async(DispatchReason::Flush).await;
                self.await_in_flight().await;
                self.flush_done = flush;
                self.shared.flushed(flush);
                continue;
            }
            if self.asm.is_some() {
                if self.shaped_turn() || self.need_buffer {
                    continue;
                }
                if self.asm.as_deref().is_some_and(|asm| asm.len() > 0) {
                    // Staged items wait for a linger or interval to end: the
                    // task yields rather than arming a timer (the runtime
                    // need not have one).
                    tokio::task::yield_now().await;
                    continue;
                }
                self.park_async().await;
                self.woke();
                continue;
            }
            if self.sweep() > 0 || self.need_buffer {
                continue;
            }
            if !self.buf.is_empty() {
                self.dispatch(DispatchReason::LanesIdle);
                continue;
            }
            // An idle drainer task sleeps at once under `Backoff` and `Park`:
            // yielding would keep it running on a worker thread of its own,
            // and a sleeping task is woken onto the worker of the producer
            // that wakes it, which is where the result is awaited too.
            let yield_first = match self.shared.config.wait {
                WaitStrategy::BusySpin | WaitStrategy::Yield => true,
                WaitStrategy::Backoff | WaitStrategy::Park => false,
            };
            if yield_first {
                tokio::task::yield_now().await;
            } else {
                self.park_async().await;
                self.woke();
            }
        }
    }

    /// `drain_all` for the task: yields while a producer finishes
    /// publishing a claimed slot, awaits a buffer when all are in flight.
    pub(super) async fn drain_all_async(&mut self, reason: DispatchReason) {
        self.set_drain_targets();
        loop {
            if self.need_buffer {
                self.await_buffer().await;
            }
            if self.past_give_back() {
                self.give_back_leftovers();
                return;
            }
            let found = self.sweep();
            if self.asm.is_some() {
                self.dispatch_shaped(false, Force::All(reason));
            }
            if self.drain_targets_reached()
                && !self.need_buffer
                && self.asm.as_deref().is_none_or(|asm| asm.len() == 0)
            {
                break;
            }
            if found == 0 && !self.need_buffer {
                tokio::task::yield_now().await;
            }
        }
        if !self.buf.is_empty() {
            self.dispatch(reason);
        }
        if self.need_buffer {
            self.await_buffer().await;
        }
    }

    /// Awaits a free buffer from the pool (every one is in flight).
    pub(super) async fn await_buffer(&mut self) {
        let shared = Arc::clone(&self.shared);
        let mut found = None;
        core::future::poll_fn(|cx| {
            if let Some(task) = &shared.drainer_task {
                task.register(cx.waker());
            }
            let pipeline = shared.pipeline();
            let ready = || {
                found = shared.pool.take();
                found.is_some()
            };
            // The flag makes a worker that returns a buffer wake us.
            if pipeline.announce_wait(ready) {
                core::task::Poll::Pending
            } else {
                core::task::Poll::Ready(())
            }
        })
        .await;
        self.shared.pipeline().withdraw_wait();
        self.buf = found.expect("a buffer was found");
        self.need_buffer = false;
    }

    /// Awaits the end of every batch handed to async workers.
    pub(super) async fn await_in_flight(&mut self) {
        if !matches!(self.sink, Sink::Async) {
            return;
        }
        let shared = Arc::clone(&self.shared);
        core::future::poll_fn(|cx| {
            if let Some(task) = &shared.drainer_task {
                task.register(cx.waker());
            }
            let pipeline = shared.pipeline();
            if pipeline.announce_wait(|| pipeline.in_flight() == 0) {
                core::task::Poll::Pending
            } else {
                core::task::Poll::Ready(())
            }
        })
        .await;
        self.shared.pipeline().withdraw_wait();
    }

    /// The task's park: stores the waker, then announces the park on every
    /// lane (as the thread's `park_drainer` does); sleeps only if every lane
    /// is empty and no request is pending. A producer whose claim clears an
    /// announcement wakes the stored waker.
    pub(super) async fn park_async(&mut self) {
        let shared = Arc::clone(&self.shared);
        if self.asm.is_none() {
            // As in `park`. Acquire, as below.
            self.flush_now_done = shared.control.flush_now.load(Ordering::Acquire);
        }
        let heads = &self.heads;
        let flush_done = self.flush_done;
        let flush_now_done = self.flush_now_done;
        let lanes = || {
            shared
                .lanes
                .iter()
                .map(|lane| &lane.ring)
                .zip(heads.iter().copied())
        };
        let mut announced = None;
        core::future::poll_fn(|cx| {
            if let Some(count) = announced.take() {
                withdraw_park(lanes(), count);
                return core::task::Poll::Ready(());
            }
            if let Some(task) = &shared.drainer_task {
                task.register(cx.waker());
            }
            let found = announce_park_all(lanes());
            let control = &shared.control;
            // Acquire, as in `park`; a request posted after this check wakes
            // the waker stored above.
            let requested = control.closing.load(Ordering::Acquire)
                || control.flush_requested.load(Ordering::Acquire) != flush_done
                || control.flush_now.load(Ordering::Acquire) != flush_now_done;
            let sleep = found.empty && !requested;
            shared.note_park(sleep, found.fenced);
            if sleep {
                announced = Some(found.announced);
                return core::task::Poll::Pending;
            }
            withdraw_park(lanes(), found.announced);
            core::task::Poll::Ready(())
        })
        .await;
    }
}
