//! The drainer: sweeps the lanes, assembles batches, dispatches them to the
//! handler and completes the items.
//!
//! Natural batching: the drainer keeps sweeping while sweeps find new items,
//! and dispatches when a sweep finds nothing new or the batch is full. At low
//! load a batch is one item and its latency one item's; under load batches
//! grow by themselves, up to `max_batch`.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::batcher::Shared;
use crate::error::Error;
use crate::handler::{Batch, Handler, batch_failed};
use crate::pool::{BatchBuf, Origin};
use crate::ring::{SEQ_MASK, distance, park_drainer};
use crate::stats::{DispatchReason, DrainerTally};
use crate::sync::{Arc, Ordering};
use crate::wait::Backoff;

/// Where the drainer sends its batches.
pub(crate) enum Sink<T, R> {
    /// A handler run on the drainer thread.
    Sync(Box<dyn Handler<T, R>>),
    /// Worker tasks on a tokio runtime (see `runtime`).
    #[cfg(feature = "tokio")]
    Async,
}

pub(crate) struct Drainer<T, R> {
    shared: Arc<Shared<T, R>>,
    sink: Sink<T, R>,
    /// Each lane's head; the drainer is its only writer, so it keeps a copy.
    heads: Box<[usize]>,
    /// Per-lane targets of a flush or shutdown drain (allocated once).
    targets: Box<[usize]>,
    /// The batch being filled.
    buf: BatchBuf<T>,
    max_batch: usize,
    /// The lane the next sweep starts at (rotates, so that no lane starves).
    start: usize,
    /// The last flush request completed.
    flush_done: u64,
    tally: DrainerTally,
}

impl<T: Send + 'static, R: Send + 'static> Drainer<T, R> {
    pub(crate) fn new(shared: Arc<Shared<T, R>>, sink: Sink<T, R>) -> Self {
        let lanes = shared.lanes.len();
        let max_batch = shared.config.max_batch;
        let buf = shared
            .pool
            .take()
            .unwrap_or_else(|| BatchBuf::with_capacity(max_batch));
        Self {
            shared,
            sink,
            heads: vec![0; lanes].into_boxed_slice(),
            targets: vec![0; lanes].into_boxed_slice(),
            buf,
            max_batch,
            start: 0,
            flush_done: 0,
            tally: DrainerTally::default(),
        }
    }

    /// The drainer thread's body.
    pub(crate) fn run(mut self) {
        let mut backoff = Backoff::new(self.shared.config.wait);
        loop {
            let control = &self.shared.control;
            // Acquire pairs with the Release store in `Batcher::stop`: every
            // lane is closed, and the tails read next are final.
            if control.closing.load(Ordering::Acquire) {
                self.drain_all(DispatchReason::Shutdown);
                self.wait_for_batches_in_flight();
                #[cfg(feature = "tokio")]
                if matches!(self.sink, Sink::Async) {
                    crate::runtime::close(&self.shared);
                }
                break;
            }
            // Acquire pairs with the AcqRel increment in `Batcher::flush`.
            let flush = control.flush_requested.load(Ordering::Acquire);
            if flush != self.flush_done {
                self.drain_all(DispatchReason::Flush);
                self.wait_for_batches_in_flight();
                self.flush_done = flush;
                self.shared.progress.flushed(flush);
                backoff.reset();
                continue;
            }
            if self.sweep() > 0 {
                backoff.reset();
                continue;
            }
            if !self.buf.is_empty() {
                self.dispatch(DispatchReason::LanesIdle);
                backoff.reset();
                continue;
            }
            if backoff.snooze() {
                self.park();
                backoff.reset();
            }
        }
        self.shared.pool.put(core::mem::replace(
            &mut self.buf,
            BatchBuf::with_capacity(0),
        ));
    }

    /// One pass over every lane. Returns the number of slots consumed.
    fn sweep(&mut self) -> usize {
        let lanes = self.heads.len();
        let mut found = 0;
        let mut lane = self.start;
        for _ in 0..lanes {
            found += self.drain_lane(lane);
            if self.buf.len() == self.max_batch {
                self.dispatch(DispatchReason::Full);
            }
            lane += 1;
            if lane == lanes {
                lane = 0;
            }
        }
        self.start = if self.start + 1 == lanes {
            0
        } else {
            self.start + 1
        };
        found
    }

    /// Moves one run of published items from `lane` into the batch. Returns
    /// the number of slots consumed.
    #[inline]
    fn drain_lane(&mut self, lane: usize) -> usize {
        let room = self.max_batch - self.buf.len();
        debug_assert!(room > 0, "a full batch is dispatched before the next run");
        let head = self.heads[lane];
        let shared = &*self.shared;
        let ring = &shared.lanes[lane].ring;
        let buf = &mut self.buf;
        // SAFETY: this thread is the ring's only consumer and `head` is the
        // head it last published.
        let new_head = unsafe {
            ring.drain_run(head, room, |item, _seq, ticket| {
                let origin = match ticket {
                    Some(index) => Origin::ticket(lane, index),
                    None => Origin::NONE,
                };
                buf.push(item, origin);
            })
        };
        if new_head == head {
            return 0;
        }
        if ring.finish_run(new_head) {
            shared.table.lane(lane).notifier.notify_all();
        }
        self.heads[lane] = new_head;
        distance(head, new_head)
    }

    /// Drains every lane up to the tails as they are now (waiting for claimed
    /// items to be published), then dispatches what is left with `reason`.
    fn drain_all(&mut self, reason: DispatchReason) {
        for (target, lane) in self.targets.iter_mut().zip(self.shared.lanes.iter()) {
            *target = lane.ring.tail().0;
        }
        // Producers that claimed a slot publish it promptly; never park here,
        // since they do not wake a drainer that has not announced a park.
        let mut backoff = Backoff::new(crate::wait::WaitStrategy::Yield);
        loop {
            let found = self.sweep();
            let reached = self
                .heads
                .iter()
                .zip(self.targets.iter())
                .all(|(&head, &target)| distance(target, head) <= SEQ_MASK / 2);
            if reached {
                break;
            }
            if found == 0 {
                backoff.snooze();
            } else {
                backoff.reset();
            }
        }
        if !self.buf.is_empty() {
            self.dispatch(reason);
        }
    }

    /// Sends the current batch to the sink and starts a new one: runs the
    /// handler and completes every item it left uncompleted, or hands the
    /// buffer to the async workers and takes a fresh one from the pool.
    fn dispatch(&mut self, reason: DispatchReason) {
        let len = self.buf.len();
        debug_assert!(len > 0);
        match &mut self.sink {
            Sink::Sync(handler) => {
                let mut batch = Batch::new(&mut self.buf, &self.shared.table);
                let outcome = catch_unwind(AssertUnwindSafe(|| handler.handle(&mut batch)));
                let leftover = match outcome {
                    Ok(Ok(())) => Error::NotCompleted,
                    Ok(Err(error)) => {
                        self.tally.batch_errors += 1;
                        batch_failed(error)
                    }
                    Err(payload) => {
                        self.tally.panics += 1;
                        Error::HandlerPanicked {
                            message: panic_message(&*payload).into(),
                        }
                    }
                };
                batch.fail_remaining(leftover);
                self.buf.clear();
            }
            #[cfg(feature = "tokio")]
            Sink::Async => {
                let full = core::mem::replace(&mut self.buf, BatchBuf::with_capacity(0));
                crate::runtime::dispatch(&self.shared, full);
                self.buf = self.next_buffer();
            }
        }

        let tally = &mut self.tally;
        tally.batches += 1;
        tally.items += len as u64;
        tally.max_batch = tally.max_batch.max(len as u64);
        tally.reasons[reason.index()] += 1;
        self.shared.counters.publish(tally);
    }

    /// A free buffer from the pool, waiting (spin, yield, then park until a
    /// worker returns one) while every buffer is in flight.
    #[cfg(feature = "tokio")]
    fn next_buffer(&mut self) -> BatchBuf<T> {
        let pool = &self.shared.pool;
        let mut found = pool.take();
        self.wait_async(|| {
            found = found.take().or_else(|| pool.take());
            found.is_some()
        });
        found.expect("waited until a buffer was found")
    }

    /// With async workers, waits until every batch handed to them has
    /// finished (a flush or shutdown is complete only then).
    fn wait_for_batches_in_flight(&mut self) {
        #[cfg(feature = "tokio")]
        if matches!(self.sink, Sink::Async) {
            let pipeline = self.shared.pipeline();
            self.wait_async(|| pipeline.in_flight() == 0);
        }
    }

    /// Waits until `ready()` holds, by the batcher's wait strategy; parks
    /// only after announcing it, so that the worker returning a buffer
    /// unparks it (see `Pipeline::announce_wait`).
    #[cfg(feature = "tokio")]
    fn wait_async(&self, mut ready: impl FnMut() -> bool) {
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

    /// Parks until a producer publishes into a lane (or a request arrives).
    fn park(&mut self) {
        let shared = &*self.shared;
        let control = &shared.control;
        let flush_done = self.flush_done;
        park_drainer(
            shared
                .lanes
                .iter()
                .map(|lane| &lane.ring)
                .zip(self.heads.iter().copied()),
            || {
                control.closing.load(Ordering::Acquire)
                    || control.flush_requested.load(Ordering::Acquire) != flush_done
            },
        );
    }
}

impl<T, R> Drop for Drainer<T, R> {
    fn drop(&mut self) {
        // Normal exit or not, flush waiters must not wait for us any longer.
        self.shared.progress.exited();
    }
}

/// The message of a panic payload, when it is a string.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a non-string panic payload"
    }
}
