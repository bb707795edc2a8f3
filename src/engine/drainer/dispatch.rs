//! Dispatch: running the handler on a batch (blocking or async), the
//! failure policies and retries, and the batch buffers.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use super::Sink;
use crate::batch::{BatchBuf, Origin};
use crate::contain::{lock, panic_message};
use crate::engine::drainer::{Drainer, Retry};
use crate::error::Error;
use crate::failure::{Outcome, Settled};
use crate::handler::{Batch, Handler, batch_failed, deliver};
use crate::shape::NEVER;
use crate::stats::{DispatchReason, Moment};
use crate::sync::Ordering;
use crate::trace::BatchSpan;
#[cfg(feature = "tokio")]
use crate::wait::Backoff;
use crate::wait::Waits;

impl<T: Send + 'static, R: Send + 'static> Drainer<T, R> {
    /// Sends the current batch to the sink and starts a new one: runs the
    /// handler and completes every item it left uncompleted, or hands the
    /// buffer to the async workers and takes a fresh one from the pool.
    pub(super) fn dispatch(&mut self, reason: DispatchReason) {
        let len = self.buf.len();
        debug_assert!(len > 0);
        self.buf.tag.set_reason(reason.name());
        self.stamp_batch();
        #[cfg(feature = "durable")]
        if self.shared.durable.is_some() {
            // A replayed batch resumes the attempts its items had.
            self.buf.meta.attempt = self.replay_attempt + 1;
            self.write_durable();
        }
        if let Some(recorder) = &self.shared.recorder {
            let now = self.shared.clock();
            lock(recorder).dispatched(
                len,
                self.buf
                    .runs
                    .iter()
                    .map(|&(since, count)| (now.saturating_sub(since), count)),
            );
        }
        match &mut self.sink {
            Sink::Sync(_) if self.shared.failure.is_some() => {
                let mut buf = core::mem::replace(&mut self.buf, BatchBuf::with_capacity(0));
                let attempt = buf.meta.attempt.saturating_sub(1);
                if let Some(retry) = self.handle_with_policies(&mut buf, attempt) {
                    self.retries.push(retry);
                    if self.in_order {
                        // Nothing later passes the items waiting to retry.
                        self.settle_retries();
                    }
                    self.buf = self.free_buffer();
                } else {
                    self.shared.pool.recycle(&mut buf);
                    self.buf = buf;
                }
            }
            Sink::Sync(_) => self.handle_sync(),
            #[cfg(feature = "tokio")]
            Sink::Async => {
                let full = core::mem::replace(&mut self.buf, BatchBuf::with_capacity(0));
                crate::engine::runtime::dispatch(&self.shared, full);
                if self.on_runtime {
                    // A task must not block: take a buffer if one is free,
                    // else await one in `run_async`.
                    match self.shared.pool.take() {
                        Some(buf) => self.buf = buf,
                        None => self.need_buffer = true,
                    }
                } else {
                    self.buf = self.next_buffer();
                }
            }
            Sink::Threads => {
                let full = core::mem::replace(&mut self.buf, BatchBuf::with_capacity(0));
                crate::engine::threads::dispatch(&self.shared, full);
                self.buf = self.next_thread_buffer();
            }
        }
        self.count_dispatch(len, reason);
    }

    /// Runs the sync handler on the batch buffer (no failure policies),
    /// fails what it left and empties the buffer.
    #[inline(always)]
    pub(super) fn handle_sync(&mut self) {
        let handler = self.sink.sync_handler();
        let shared = &*self.shared;
        let span = BatchSpan::new(&shared.config.thread_name, &self.buf.tag, self.buf.len(), 1);
        let _in_span = span.enter();
        let started = (shared.controller.is_some() || shared.recorder.is_some()).then(Instant::now);
        let mut batch = Batch::with_direct(&mut self.buf, &shared.table, &mut self.direct);
        let running = crate::scope::Running::enter(shared.id());
        let outcome = catch_unwind(AssertUnwindSafe(|| handler.handle(&mut batch)));
        drop(running);
        if let Some(started) = started {
            let elapsed = started.elapsed();
            shared.observe_batch(elapsed, self.buf.feedback.take());
            shared.record_finished(elapsed, &self.buf);
        }
        let mut batch = Batch::with_direct(&mut self.buf, &shared.table, &mut self.direct);
        let leftover = match outcome {
            Ok(Ok(())) => Error::NotCompleted,
            Ok(Err(error)) => {
                self.tally.batch_errors += 1;
                span.failed(&error);
                batch_failed(error)
            }
            Err(payload) => {
                self.tally.panics += 1;
                let message = panic_message(&*payload);
                span.panicked(&message);
                Error::HandlerPanicked { message }
            }
        };
        batch.fail_remaining(leftover);
        self.tally.items_failed += self.buf.failed as u64;
        self.shared
            .group_failed(self.buf.meta.group, self.buf.failed);
        #[cfg(feature = "durable")]
        if let Some(durable) = &shared.durable {
            durable.done(&mut self.buf);
        }
        shared.pool.recycle(&mut self.buf);
    }

    /// Counts a dispatched batch of `len` items and publishes the tally.
    #[inline(always)]
    pub(super) fn count_dispatch(&mut self, len: usize, reason: DispatchReason) {
        let tally = &mut self.tally;
        tally.batches += 1;
        tally.items += len as u64;
        tally.max_batch = tally.max_batch.max(len as u64);
        tally.reasons[reason.index()] += 1;
        if self.asm.is_some() {
            // The assembler's counts changed too.
            self.shared.counters.publish(tally);
        } else {
            self.shared.counters.publish_batch(tally, reason);
        }
        self.shared.metrics_sync(Moment::Batch(reason));
    }

    /// Numbers the batch being dispatched and dates its oldest item, for the
    /// handler (`Batch::id`, `Batch::oldest_accepted`).
    #[inline(always)]
    pub(super) fn stamp_batch(&mut self) {
        let buf = &mut self.buf;
        buf.meta.id = self.tally.batches + 1;
        buf.meta.attempt = 1;
        self.tally.single_item_batches += u64::from(buf.len() == 1);
        // Only histograms (runs) and shaping (weights, take times, groups)
        // set the rest; a batcher with neither skips it.
        if !buf.runs.is_empty() || buf.meta.taken != crate::shape::NEVER {
            self.tally.bytes += buf.meta.bytes;
            if let (Some(groups), Some(group)) = (&self.shared.groups, buf.meta.group) {
                crate::contain::lock(groups).dispatched(group, buf.len() as u64, buf.meta.bytes);
            }
            // With histograms, a bound no later than the acceptance; with
            // shaping alone, when the drainer took the item.
            let ns = buf
                .runs
                .iter()
                .map(|&(since, _)| since)
                .min()
                .unwrap_or(buf.meta.taken);
            buf.meta.oldest = Some(self.shared.epoch + core::time::Duration::from_nanos(ns));
        }
    }

    /// Runs the sync handler on `buf` (attempt `attempt`) under the failure
    /// policies: the breaker may refuse it; afterwards failed items are
    /// retried or dead-lettered. Returns the retry to queue, if any (the
    /// buffer then holds only the items to retry); otherwise `buf` is done.
    pub(super) fn handle_with_policies(
        &mut self,
        buf: &mut BatchBuf<T>,
        attempt: u32,
    ) -> Option<Retry<T>> {
        buf.meta.attempt = attempt + 1;
        let handler = self.sink.sync_handler();
        let shared = &*self.shared;
        let failure = shared.failure.as_ref().expect("failure policies are on");
        // Around the breaker's decision too: its events and the dead
        // letters of a refused batch belong to this batch.
        let span = BatchSpan::new(&shared.config.thread_name, &buf.tag, buf.len(), attempt + 1);
        let _in_span = span.enter();
        let deliver_to = |origin: Origin, error: Error| {
            if let Some((lane, index)) = origin.pending() {
                deliver(&shared.table, lane, index, Err(error));
            }
        };
        if !lock(failure).admit(Instant::now()) {
            lock(failure).reject(buf, &mut { deliver_to });
            self.tally.items_failed += buf.failed as u64;
            self.shared.group_failed(buf.meta.group, buf.failed);
            #[cfg(feature = "durable")]
            if let Some(durable) = &shared.durable {
                durable.settled(buf);
            }
            return None;
        }
        buf.prepare_marks();
        let started = Instant::now();
        let mut batch = Batch::new(buf, &shared.table);
        let running = crate::scope::Running::enter(shared.id());
        let outcome = catch_unwind(AssertUnwindSafe(|| handler.handle(&mut batch)));
        drop(running);
        let elapsed = started.elapsed();
        shared.observe_batch(elapsed, buf.feedback.take());
        shared.record_finished(elapsed, buf);
        let outcome = match outcome {
            Ok(Ok(())) => Outcome::Ok,
            Ok(Err(error)) => {
                self.tally.batch_errors += 1;
                span.failed(&error);
                Outcome::Failed(error)
            }
            Err(payload) => {
                self.tally.panics += 1;
                let message = panic_message(&*payload);
                span.panicked(&message);
                Outcome::Panicked(message)
            }
        };
        let settled =
            lock(failure).settle(buf, outcome, attempt, Instant::now(), &mut { deliver_to });
        self.tally.items_failed += buf.failed as u64;
        self.shared.group_failed(buf.meta.group, buf.failed);
        buf.failed = 0;
        #[cfg(feature = "durable")]
        if let Some(durable) = &shared.durable {
            durable.settled(buf);
        }
        match settled {
            Settled::Done => None,
            Settled::Retry { delay } => Some(Retry {
                due: crate::failure::later(Instant::now(), delay),
                attempt: attempt + 1,
                buf: core::mem::replace(buf, BatchBuf::with_capacity(0)),
            }),
        }
    }

    /// Runs every retry that is due. Returns whether it ran any.
    pub(super) fn run_due_retries(&mut self) -> bool {
        let mut ran = false;
        let now = Instant::now();
        while let Some(i) = self.retries.iter().position(|r| r.due <= now) {
            let Retry {
                attempt, mut buf, ..
            } = self.retries.swap_remove(i);
            ran = true;
            match self.handle_with_policies(&mut buf, attempt) {
                Some(retry) => self.retries.push(retry),
                None => self.shared.pool.put(buf),
            }
        }
        if ran {
            self.shared.counters.publish(&self.tally);
        }
        ran
    }
}

impl<T: Send + 'static, R: Send + 'static> Drainer<T, R> {
    /// Whether the drainer must hold off, and until when if known: paused
    /// (until resumed), or the breaker is open and holds batches.
    pub(super) fn held(&self) -> Waits {
        let control = &self.shared.control;
        // Acquire pairs with the Release stores of `pause` and `resume`.
        if control.paused.load(Ordering::Acquire) {
            return Waits::Indefinitely;
        }
        let Some(failure) = self.shared.failure.as_ref() else {
            return Waits::No;
        };
        let failure = lock(failure);
        if failure.holds(Instant::now()) {
            Waits::until(failure.open_until())
        } else {
            Waits::No
        }
    }

    /// When the next retry is due, if any.
    pub(super) fn next_retry(&self) -> Option<Instant> {
        self.retries.iter().map(|r| r.due).min()
    }

    /// A free buffer for the sync drainer whose buffer went to the retry
    /// queue: from the pool, or, if every buffer waits to retry, after
    /// running the next retry when it is due (backpressure).
    pub(super) fn free_buffer(&mut self) -> BatchBuf<T> {
        loop {
            if let Some(buf) = self.shared.pool.take() {
                return buf;
            }
            match self.next_retry() {
                Some(due) => {
                    let now = Instant::now();
                    if due > now {
                        crate::sync::thread::park_timeout(due - now);
                    }
                    self.run_due_retries();
                }
                None => unreachable!("a buffer is either in the pool or waiting to retry"),
            }
        }
    }

    /// A free buffer from the pool, waiting (spin, yield, then park until a
    /// worker returns one) while every buffer is in flight.
    #[cfg(feature = "tokio")]
    pub(super) fn next_buffer(&mut self) -> BatchBuf<T> {
        let pool = &self.shared.pool;
        let mut found = pool.take();
        self.wait_async(|| {
            found = found.take().or_else(|| pool.take());
            found.is_some()
        });
        found.expect("waited until a buffer was found")
    }

    /// With async workers or handler threads, waits until every batch handed to them has
    /// finished (a flush or shutdown is complete only then); with a sync
    /// handler, until every batch waiting to retry has settled.
    pub(super) fn wait_for_batches_in_flight(&mut self) {
        self.settle_retries();
        #[cfg(feature = "tokio")]
        if matches!(self.sink, Sink::Async) {
            let pipeline = self.shared.pipeline();
            self.wait_async(|| pipeline.in_flight() == 0);
        }
        if matches!(self.sink, Sink::Threads) {
            self.shared.threads().wait_until(|in_flight| in_flight == 0);
        }
    }

    /// Runs every batch waiting to retry until it settles, waiting out
    /// the backoffs; `shutdown_timeout`'s deadline gives them back instead.
    pub(super) fn settle_retries(&mut self) {
        while let Some(due) = self.next_retry() {
            if self.past_give_back() {
                self.give_back_leftovers();
                break;
            }
            let now = Instant::now();
            if due > now {
                let mut wait = due - now;
                let give_back = self.shared.control.give_back_at.load(Ordering::Acquire);
                if give_back != NEVER {
                    let left = give_back.saturating_sub(self.shared.clock());
                    wait = wait.min(Duration::from_nanos(left));
                }
                std::thread::sleep(wait);
            }
            self.run_due_retries();
        }
    }

    /// With handler threads: a free buffer from the pool, waiting (asleep,
    /// until a thread returns one) while every buffer is in flight.
    pub(super) fn next_thread_buffer(&mut self) -> BatchBuf<T> {
        let pool = &self.shared.pool;
        let mut found = pool.take();
        if found.is_none() {
            self.shared.threads().wait_until(|_| {
                found = pool.take();
                found.is_some()
            });
        }
        found.expect("waited until a buffer was found")
    }

    /// Waits until `ready()` holds, by the batcher's wait strategy; parks
    /// only after announcing it, so that the worker returning a buffer
    /// unparks it (see `Pipeline::announce_wait`).
    #[cfg(feature = "tokio")]
    pub(super) fn wait_async(&self, mut ready: impl FnMut() -> bool) {
        let mut backoff = Backoff::new(self.shared.config.wait);
        loop {
            if ready() {
                return;
            }
            if backoff.snooze() {
                let pipeline = self.shared.pipeline();
                if pipeline.announce_wait(&mut ready) {
                    crate::sync::thread::park();
                    pipeline.withdraw_wait();
                }
            }
        }
    }
}
