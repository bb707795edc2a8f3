//! The worker tasks: each takes a batch from its slot, runs the handler's
//! future, completes what the handler left and returns the buffer.

use core::future::{Future, poll_fn};
use core::pin::pin;
use std::time::Instant;

use crate::batch::{BatchBuf, Origin};
use crate::contain::lock;
use crate::engine::Shared;
use crate::engine::runtime::pipeline::{WorkerSlot, fail_queued, finish};
use crate::error::Error;
use crate::failure::{Outcome, Settled};
use crate::handler::{batch_failed, deliver};
use crate::sync::{Arc, Ordering, fence};
use crate::trace::BatchSpan;
use crate::{AsyncBatch, AsyncHandler};

/// Starts `workers` worker tasks on `runtime`.
pub(crate) fn spawn_workers<T, R, H>(
    shared: &Arc<Shared<T, R>>,
    handler: H,
    workers: usize,
    runtime: &tokio::runtime::Handle,
) where
    T: Send + 'static,
    R: Send + 'static,
    H: AsyncHandler<T, R>,
{
    let handler = Arc::new(handler);
    let pipeline = shared.pipeline();
    // Before any worker runs or any batch is dispatched (SeqCst, as every
    // access to `alive`).
    pipeline.alive.store(workers, Ordering::SeqCst);
    for _ in 0..workers {
        let worker = Worker {
            shared: Arc::clone(shared),
            slot: Arc::new(WorkerSlot::new()),
        };
        runtime.spawn(worker.run(Arc::clone(&handler)));
    }
}

/// One worker task's state; dropping it (normal exit, or the runtime
/// shutting down) settles its batch and the queue.
pub(super) struct Worker<T, R> {
    pub(super) shared: Arc<Shared<T, R>>,
    pub(super) slot: Arc<WorkerSlot<T>>,
}

impl<T: Send + 'static, R: Send + 'static> Worker<T, R> {
    pub(super) async fn run<H: AsyncHandler<T, R>>(self, handler: Arc<H>) {
        loop {
            let Some(buf) = self.next_batch().await else {
                return;
            };
            if self.shared.failure.is_some() {
                self.run_with_policies(&*handler, buf).await;
                continue;
            }
            let shared = &*self.shared;
            let span = BatchSpan::new(&shared.config.thread_name, &buf.tag, buf.len(), 1);
            let batch = AsyncBatch {
                buf: Some(buf),
                shared: Arc::clone(&self.shared),
                slot: Arc::clone(&self.slot),
            };
            // The handler's future is dropped at the end of this block, and
            // with it the batch (unless the handler kept it elsewhere).
            let started =
                (shared.controller.is_some() || shared.recorder.is_some()).then(Instant::now);
            let outcome = self.handle(span.instrument(handler.handle(batch))).await;
            let pipeline = self.shared.pipeline();
            let leftover = span.in_scope(|| match outcome {
                Ok(Ok(())) => Error::NotCompleted,
                Ok(Err(error)) => {
                    // Relaxed: a statistic, ordered with nothing.
                    pipeline.batch_errors.fetch_add(1, Ordering::Relaxed);
                    span.failed(&error);
                    batch_failed(error)
                }
                Err(message) => {
                    // Relaxed: a statistic.
                    pipeline.panics.fetch_add(1, Ordering::Relaxed);
                    span.panicked(&message);
                    Error::HandlerPanicked { message }
                }
            });
            // The batch was dropped by the future (or later, if the handler
            // kept it somewhere): take its buffer back.
            let mut buf = poll_fn(|cx| self.slot.poll_take(cx)).await;
            if let Some(started) = started {
                let elapsed = started.elapsed();
                self.shared.observe_batch(elapsed, buf.feedback.take());
                self.shared.record_finished(elapsed, &buf);
            }
            finish(&self.shared, buf, leftover);
        }
    }

    /// One batch under the failure policies: the breaker may refuse it;
    /// failed items are retried on this task after their backoff (a tokio
    /// timer: the runtime needs its time driver), or dead-lettered.
    pub(super) async fn run_with_policies<H: AsyncHandler<T, R>>(
        &self,
        handler: &H,
        mut buf: BatchBuf<T>,
    ) {
        let shared = &*self.shared;
        let failure = shared.failure.as_ref().expect("failure policies are on");
        let table = &shared.table;
        let mut deliver_to = |origin: Origin, error: Error| {
            if let Some((lane, index)) = origin.pending() {
                deliver(table, lane, index, Err(error));
            }
        };
        let pipeline = shared.pipeline();
        // A replayed batch resumes the attempts its items had.
        let mut attempt = buf.meta.attempt.saturating_sub(1);
        loop {
            let span = BatchSpan::new(&shared.config.thread_name, &buf.tag, buf.len(), attempt + 1);
            // Entered only between awaits (its guard is not `Send`).
            let admitted = span.in_scope(|| {
                let admitted = lock(failure).admit(Instant::now());
                if !admitted {
                    lock(failure).reject(&mut buf, &mut deliver_to);
                }
                admitted
            });
            if !admitted {
                #[cfg(feature = "durable")]
                if let Some(durable) = &shared.durable {
                    durable.settled(&mut buf);
                }
                break;
            }
            buf.meta.attempt = attempt + 1;
            buf.prepare_marks();
            let batch = AsyncBatch {
                buf: Some(buf),
                shared: Arc::clone(&self.shared),
                slot: Arc::clone(&self.slot),
            };
            let started = Instant::now();
            let outcome = self.handle(span.instrument(handler.handle(batch))).await;
            buf = poll_fn(|cx| self.slot.poll_take(cx)).await;
            let elapsed = started.elapsed();
            shared.observe_batch(elapsed, buf.feedback.take());
            shared.record_finished(elapsed, &buf);
            let outcome = span.in_scope(|| match outcome {
                Ok(Ok(())) => Outcome::Ok,
                Ok(Err(error)) => {
                    // Relaxed: a statistic.
                    pipeline.batch_errors.fetch_add(1, Ordering::Relaxed);
                    span.failed(&error);
                    Outcome::Failed(error)
                }
                Err(message) => {
                    // Relaxed: a statistic.
                    pipeline.panics.fetch_add(1, Ordering::Relaxed);
                    span.panicked(&message);
                    Outcome::Panicked(message)
                }
            });
            let settled = span.in_scope(|| {
                // The dead-letter callback runs here: marked as the handler.
                let _running = crate::scope::Running::enter(shared.id());
                lock(failure).settle(&mut buf, outcome, attempt, Instant::now(), &mut deliver_to)
            });
            if buf.failed > 0 {
                // Relaxed: a statistic.
                pipeline
                    .items_failed
                    .fetch_add(buf.failed as u64, Ordering::Relaxed);
                shared.group_failed(buf.meta.group, buf.failed);
                buf.failed = 0;
            }
            #[cfg(feature = "durable")]
            if let Some(durable) = &shared.durable {
                durable.settled(&mut buf);
            }
            match settled {
                Settled::Done => break,
                Settled::Retry { delay } => {
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
        finish(shared, buf, Error::NotCompleted);
    }

    /// Runs a handler's future to the end, then drops it, each with its
    /// panics contained (a panicking drop is counted; the batch the future
    /// held still comes back, as the rest of the future is dropped while
    /// that panic unwinds).
    pub(super) async fn handle<F: Future>(
        &self,
        future: F,
    ) -> Result<F::Output, crate::error::PanicMessage> {
        let id = self.shared.id();
        let mut future = pin!(crate::contain::Contained::new(future));
        // Marked as the handler for each poll (the task may change threads
        // between polls), and while it is dropped.
        let outcome = poll_fn(|cx| {
            let _running = crate::scope::Running::enter(id);
            future.as_mut().poll(cx)
        })
        .await;
        let _running = crate::scope::Running::enter(id);
        if !future.as_mut().drop_future() {
            self.shared.panics.drops(1);
        }
        outcome
    }

    /// The next full buffer, or `None` once the batcher is closing.
    pub(super) async fn next_batch(&self) -> Option<BatchBuf<T>> {
        let pipeline = self.shared.pipeline();
        loop {
            // Registered before looking, so that neither a `notify_one` for a
            // new batch nor the closing `notify_waiters` can be missed.
            let mut notified = pin!(pipeline.work.notified());
            notified.as_mut().enable();
            if let Some(buf) = pipeline.ready.pop() {
                return Some(buf);
            }
            // Acquire pairs with the Release store in `close`.
            if pipeline.closing.load(Ordering::Acquire) {
                return None;
            }
            notified.await;
        }
    }
}

impl<T, R> Drop for Worker<T, R> {
    fn drop(&mut self) {
        let mut state = self.slot.lock();
        let buf = state.buf.take();
        // A batch still held by a dropped future finishes when it is dropped.
        state.abandoned = true;
        drop(state);
        if let Some(buf) = buf {
            finish(&self.shared, buf, Error::RuntimeShutdown);
        }
        let pipeline = self.shared.pipeline();
        // SeqCst, with the fence, pairs with the fence in `dispatch`.
        let last = pipeline.alive.fetch_sub(1, Ordering::SeqCst) == 1;
        fence(Ordering::SeqCst);
        if last {
            // The last worker: nobody will take queued batches any more.
            fail_queued(&self.shared);
        }
        pipeline.wake_drainer(&self.shared);
    }
}
