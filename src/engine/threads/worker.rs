//! The handler threads: each takes a batch from its queue, runs its own
//! handler on it (under the failure policies, if any), completes what the
//! handler left and returns the buffer.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use crate::batch::{BatchBuf, Origin};
use crate::config::ConfigError;
use crate::contain::{lock, panic_message};
use crate::engine::Shared;
use crate::engine::threads::handoff::finish;
use crate::error::Error;
use crate::failure::{Outcome, Settled};
use crate::handler::{Batch, Handler, batch_failed, deliver};
use crate::sync::{Arc, Ordering, thread};
use crate::trace::BatchSpan;

/// Makes the handler of thread `i` (`BatcherBuilder::handler_threads`).
pub(crate) type MakeHandler<T, R> = Box<dyn FnMut(usize) -> Box<dyn Handler<T, R>> + Send>;

/// Starts one thread per handler. On failure the threads started are
/// closed again (see [`close`](super::close)) and the error says why.
pub(crate) fn spawn_threads<T, R>(
    shared: &Arc<Shared<T, R>>,
    handlers: Vec<Box<dyn Handler<T, R>>>,
) -> Result<(), ConfigError>
where
    T: Send + 'static,
    R: Send + 'static,
{
    let threads = shared.threads();
    for (i, handler) in handlers.into_iter().enumerate() {
        let worker = Worker {
            shared: Arc::clone(shared),
            queue: threads.queue_of_thread(i),
            current: None,
            fatal: None,
        };
        let spawned = thread::Builder::new()
            .name(format!("{}-h{i}", shared.config.thread_name))
            .spawn(move || worker.run(handler));
        match spawned {
            Ok(handle) => lock(&threads.handles).push(handle),
            Err(e) => {
                super::close(shared);
                return Err(ConfigError::Spawn {
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// One handler thread's state; dropping it (the thread's end, normal or
/// not) settles its batch and, for the last thread of a queue, the queue.
struct Worker<T, R> {
    shared: Arc<Shared<T, R>>,
    /// The queue it takes batches from.
    queue: usize,
    /// The batch it runs, held here so that it is finished however the
    /// thread ends.
    current: Option<BatchBuf<T>>,
    /// The thread's loop panicked (a bug of the batcher's): what its batch
    /// and the queue it leaves fail with.
    fatal: Option<Error>,
}

impl<T: Send + 'static, R: Send + 'static> Worker<T, R> {
    /// The thread's body: batches until the queue closes; then the handler
    /// is dropped, with its panic contained.
    fn run(mut self, mut handler: Box<dyn Handler<T, R>>) {
        // Everything this thread runs is this batcher's handler, its
        // failure policies and their callbacks: a wait for the drainer from
        // here returns at once, as from the drainer's own handler.
        let _running = crate::scope::Running::enter(self.shared.id());
        if let Err(message) = crate::contain::call(|| self.serve(&mut *handler)) {
            crate::trace::drainer_failed(&self.shared.config.thread_name, &message);
            self.fatal = Some(Error::DrainerPanicked { message });
        }
        if !crate::contain::drop_value(handler) {
            self.shared.panics.drops(1);
        }
    }

    /// Runs batches until the queue closes.
    fn serve(&mut self, handler: &mut dyn Handler<T, R>) {
        while let Some(buf) = self.next_batch() {
            let shared = &*self.shared;
            let buf = self.current.insert(buf);
            let leftover = if shared.failure.is_some() {
                run_with_policies(shared, handler, buf)
            } else {
                run_plain(shared, handler, buf)
            };
            let buf = self.current.take().expect("the batch just run");
            finish(shared, buf, leftover);
        }
    }

    /// The next full buffer, or `None` once the queue is closing and empty.
    fn next_batch(&self) -> Option<BatchBuf<T>> {
        let queue = &self.shared.threads().queues[self.queue];
        let mut state = lock(&queue.state);
        loop {
            if let Some(buf) = state.bufs.pop_front() {
                return Some(buf);
            }
            if state.closing {
                return None;
            }
            state = queue.work.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl<T, R> Drop for Worker<T, R> {
    fn drop(&mut self) {
        let error = self.fatal.take().unwrap_or(Error::Closed);
        if let Some(buf) = self.current.take() {
            finish(&self.shared, buf, error.clone());
        }
        let queue = &self.shared.threads().queues[self.queue];
        let last = {
            let mut state = lock(&queue.state);
            state.alive -= 1;
            state.alive == 0
        };
        if last {
            // Nobody takes this queue's batches any more (the drainer sees
            // `alive == 0` and fails the later ones itself).
            loop {
                let buf = lock(&queue.state).bufs.pop_front();
                match buf {
                    Some(buf) => finish(&self.shared, buf, error.clone()),
                    None => break,
                }
            }
        }
    }
}

/// Runs `handler` on `buf` (no failure policies); returns the error for
/// the items it left.
fn run_plain<T: Send + 'static, R: Send + 'static>(
    shared: &Shared<T, R>,
    handler: &mut dyn Handler<T, R>,
    buf: &mut BatchBuf<T>,
) -> Error {
    let threads = shared.threads();
    let span = BatchSpan::new(&shared.config.thread_name, &buf.tag, buf.len(), 1);
    let _in_span = span.enter();
    let started = (shared.controller.is_some() || shared.recorder.is_some()).then(Instant::now);
    let mut batch = Batch::new(buf, &shared.table);
    let outcome = catch_unwind(AssertUnwindSafe(|| handler.handle(&mut batch)));
    if let Some(started) = started {
        let elapsed = started.elapsed();
        shared.observe_batch(elapsed, buf.feedback.take());
        shared.record_finished(elapsed, buf);
    }
    match outcome {
        Ok(Ok(())) => Error::NotCompleted,
        Ok(Err(error)) => {
            // Relaxed: a statistic.
            threads.batch_errors.fetch_add(1, Ordering::Relaxed);
            span.failed(&error);
            batch_failed(error)
        }
        Err(payload) => {
            // Relaxed: a statistic.
            threads.panics.fetch_add(1, Ordering::Relaxed);
            let message = panic_message(&*payload);
            span.panicked(&message);
            Error::HandlerPanicked { message }
        }
    }
}

/// Runs `handler` on `buf` under the failure policies: the breaker may
/// refuse it; failed items are retried on this thread after their backoff
/// (the thread sleeps, and takes no other batch meanwhile), or
/// dead-lettered. Returns the error for the items left (none are).
fn run_with_policies<T: Send + 'static, R: Send + 'static>(
    shared: &Shared<T, R>,
    handler: &mut dyn Handler<T, R>,
    buf: &mut BatchBuf<T>,
) -> Error {
    let failure = shared.failure.as_ref().expect("failure policies are on");
    let threads = shared.threads();
    let deliver_to = |origin: Origin, error: Error| {
        if let Some((lane, index)) = origin.pending() {
            deliver(&shared.table, lane, index, Err(error));
        }
    };
    // A replayed batch resumes the attempts its items had.
    let mut attempt = buf.meta.attempt.saturating_sub(1);
    loop {
        buf.meta.attempt = attempt + 1;
        // Around the breaker's decision too, as on the drainer thread.
        let span = BatchSpan::new(&shared.config.thread_name, &buf.tag, buf.len(), attempt + 1);
        let _in_span = span.enter();
        if !lock(failure).admit(Instant::now()) {
            lock(failure).reject(buf, &mut { deliver_to });
            count_failed(shared, buf);
            #[cfg(feature = "durable")]
            if let Some(durable) = &shared.durable {
                durable.settled(buf);
            }
            return Error::NotCompleted;
        }
        buf.prepare_marks();
        let started = Instant::now();
        let mut batch = Batch::new(buf, &shared.table);
        let outcome = catch_unwind(AssertUnwindSafe(|| handler.handle(&mut batch)));
        let elapsed = started.elapsed();
        shared.observe_batch(elapsed, buf.feedback.take());
        shared.record_finished(elapsed, buf);
        let outcome = match outcome {
            Ok(Ok(())) => Outcome::Ok,
            Ok(Err(error)) => {
                // Relaxed: a statistic.
                threads.batch_errors.fetch_add(1, Ordering::Relaxed);
                span.failed(&error);
                Outcome::Failed(error)
            }
            Err(payload) => {
                // Relaxed: a statistic.
                threads.panics.fetch_add(1, Ordering::Relaxed);
                let message = panic_message(&*payload);
                span.panicked(&message);
                Outcome::Panicked(message)
            }
        };
        let settled =
            lock(failure).settle(buf, outcome, attempt, Instant::now(), &mut { deliver_to });
        count_failed(shared, buf);
        #[cfg(feature = "durable")]
        if let Some(durable) = &shared.durable {
            durable.settled(buf);
        }
        match settled {
            Settled::Done => return Error::NotCompleted,
            Settled::Retry { delay } => {
                std::thread::sleep(delay);
                attempt += 1;
            }
        }
    }
}

/// Counts the items of `buf` the failure policies failed, and resets the
/// count (so that `finish` counts only what it fails itself).
fn count_failed<T, R>(shared: &Shared<T, R>, buf: &mut BatchBuf<T>) {
    if buf.failed > 0 {
        // Relaxed: a statistic.
        shared
            .threads()
            .items_failed
            .fetch_add(buf.failed as u64, Ordering::Relaxed);
        shared.group_failed(buf.meta.group, buf.failed);
        buf.failed = 0;
    }
}
