//! The public face: [`Batcher`], its lifecycle (producers, flush, pause,
//! live settings, shutdown) and the builder it starts from.

mod build;
mod builder;
#[cfg(feature = "durable")]
mod durable;
mod producers;
mod shaping;

pub use builder::BatcherBuilder;
pub use producers::Producers;
pub(crate) use producers::{SPLIT_MAX_ITEM, new_producer, normal_class};

use core::fmt;
use std::time::{Duration, Instant};

use crate::Producer;
use crate::batcher::producers::{new_async_producer, new_exclusive_producer, new_producer_on_lane};
use crate::config::{Config, ConfigError};
use crate::engine::Shared;
use crate::error::LaneError;
use crate::producer::AsyncProducer;
use crate::shape::{Linger, Priority, Shaping};
use crate::stats::Stats;
use crate::sync::{Arc, Ordering, thread};

/// A batcher: lanes that producers push into, and a drainer thread that
/// assembles batches and runs the [`Handler`](crate::Handler).
///
/// `T` is the item type, `R` the per-item result a [`Ticket`](crate::Ticket) resolves to.
/// Build one with [`Batcher::builder`]; get a [`Producer`] per thread with
/// [`producer`](Self::producer).
///
/// Dropping the batcher shuts it down gracefully, like
/// [`shutdown`](Self::shutdown).
///
/// # Examples
///
/// ```
/// use ringbatch::{Batch, Batcher};
///
/// let batcher = Batcher::builder()
///     .capacity(1024)
///     .max_batch(64)
///     .handler_fn(|batch: &mut Batch<'_, String, usize>| {
///         // A real sink would write the batch out here.
///         batch.complete_with(|line| Ok::<_, ringbatch::Error>(line.len()));
///         Ok(())
///     })
///     .build()?;
///
/// std::thread::scope(|s| {
///     for t in 0..2 {
///         let batcher = &batcher;
///         s.spawn(move || {
///             let producer = batcher.producer();
///             for i in 0..100 {
///                 producer.push(format!("event {t}/{i}")).unwrap();
///             }
///             let ticket = producer.submit("last".to_string()).unwrap();
///             assert_eq!(ticket.wait().unwrap(), 4);
///         });
///     }
/// });
///
/// let stats = batcher.shutdown();
/// assert_eq!(stats.items_handled, 202);
/// # Ok::<(), ringbatch::ConfigError>(())
/// ```
pub struct Batcher<T, R = ()> {
    pub(crate) shared: Arc<Shared<T, R>>,
    /// The drainer thread (`None` when the drainer runs as a task, or once
    /// taken to be joined).
    pub(crate) drainer: Option<thread::JoinHandle<()>>,
    /// `begin_stop` has run.
    pub(crate) stopping: bool,
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// A builder with the default settings.
    pub fn builder() -> BatcherBuilder<T, R> {
        BatcherBuilder {
            config: Config::default(),
            max_batch_set: false,
            pool_size_set: false,
            #[cfg(feature = "tokio")]
            runtime: None,
            #[cfg(feature = "tokio")]
            drain_on_runtime: false,
            handler: None,
            shaping: Shaping::default(),
            histograms: false,
            buckets: crate::metrics::BucketBounds::default(),
            #[cfg(feature = "metrics")]
            facade: None,
            failure: crate::failure::FailureSettings::default(),
            spill: None,
            inline_when_idle: false,
            handler_threads: None,
            thread_routing: None,
            #[cfg(feature = "serde")]
            refused: None,
            #[cfg(feature = "durable")]
            durable: None,
        }
    }

    /// A producer bound to a lane by the batcher's [`LaneAssignment`](crate::LaneAssignment).
    ///
    /// Producers are cheap (a reference count and a lane index); make one per
    /// thread, on that thread.
    pub fn producer(&self) -> Producer<T, R> {
        new_producer(&self.shared)
    }

    /// A producer for async tasks (see [`AsyncProducer`]), bound to a lane
    /// in turn: tasks move between threads, so the current core says
    /// nothing about where a task will run.
    pub fn async_producer(&self) -> AsyncProducer<T, R> {
        new_async_producer(&self.shared)
    }

    /// A producer bound to lane `lane`.
    ///
    /// # Errors
    ///
    /// [`LaneError::NoSuchLane`] if `lane >= self.lanes()`;
    /// [`LaneError::LaneTaken`] if an exclusive producer owns it.
    pub fn producer_on_lane(&self, lane: usize) -> Result<Producer<T, R>, LaneError> {
        new_producer_on_lane(&self.shared, lane)
    }

    /// A producer that owns a lane of its own: the single-producer fast
    /// path, for a thread that pushes in a hot loop.
    ///
    /// It takes the first lane that has no producer; while it lives, no
    /// other producer is bound to that lane ([`producer`](Self::producer)
    /// and [`async_producer`](Self::async_producer) pass it over, and
    /// [`producer_on_lane`](Self::producer_on_lane) refuses it). Being the
    /// lane's only producer, it claims ring slots with a plain store instead
    /// of a CAS; the drainer's rare park and the shutdown meet it through
    /// asymmetric fences (on Linux, `membarrier`). Where those are not
    /// available it claims with the CAS, and is exclusive all the same.
    /// Everything else (the API, backpressure, tickets, ordering) is that of
    /// any [`Producer`]. Dropping it frees the lane.
    ///
    /// The price is paid when the drainer goes to sleep: while a lane is
    /// owned, each park runs the heavy fence, which interrupts every other
    /// CPU that is running a thread of this process, this producer's
    /// among them, for a few microseconds (`cargo bench --bench fence`;
    /// BENCHMARKS.md, "The fence's cost"). A stream
    /// with pauses longer than the drainer's spin and yield phase pays it
    /// once per pause; [`Stats::park_fences`](crate::Stats::park_fences)
    /// counts them. A drainer thread that never parks
    /// ([`WaitStrategy::BusySpin`](crate::WaitStrategy::BusySpin) or
    /// [`Yield`](crate::WaitStrategy::Yield), without
    /// [`inline_when_idle`](BatcherBuilder::inline_when_idle)) runs none.
    ///
    /// One lane always stays open to shared producers, so a batcher with
    /// `lanes` lanes has at most `lanes - 1` exclusive producers at a time:
    /// add a lane per exclusive producer (see
    /// [`BatcherBuilder::lanes`]).
    ///
    /// ```
    /// use ringbatch::{Batch, Batcher};
    ///
    /// let batcher = Batcher::builder()
    ///     .lanes(2)
    ///     .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
    ///         batch.ok_with(|x| x * 2);
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let feed = batcher.exclusive_producer().unwrap();
    /// assert!(feed.is_exclusive());
    /// for tick in 0..1000 {
    ///     feed.push(tick).unwrap();
    /// }
    /// assert_eq!(feed.submit(21).unwrap().wait().unwrap(), 42);
    /// // The other lane stays open; no third lane is free.
    /// assert!(batcher.exclusive_producer().is_err());
    /// assert_ne!(batcher.producer().lane(), feed.lane());
    /// ```
    ///
    /// # Errors
    ///
    /// [`LaneError::NoFreeLane`] if every lane but one already has a
    /// producer (or an owner).
    pub fn exclusive_producer(&self) -> Result<Producer<T, R>, LaneError> {
        new_exclusive_producer(&self.shared)
    }

    /// An [`exclusive_producer`](Self::exclusive_producer) for async tasks.
    ///
    /// # Errors
    ///
    /// As for [`exclusive_producer`](Self::exclusive_producer).
    pub fn exclusive_async_producer(&self) -> Result<AsyncProducer<T, R>, LaneError> {
        new_exclusive_producer(&self.shared).map(AsyncProducer::new)
    }

    /// A cloneable, `Send + Sync` handle that makes producers, for code that
    /// creates them where the batcher itself is not at hand (a task spawned
    /// per connection, a thread pool's workers). It does not keep the batcher
    /// open: after shutdown its producers refuse every item as closed.
    ///
    /// ```
    /// use ringbatch::{Batch, Batcher};
    ///
    /// let batcher = Batcher::builder()
    ///     .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
    ///         batch.ok_with(|x| x + 1);
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let producers = batcher.producers();
    /// let worker = std::thread::spawn(move || producers.producer().submit(1).unwrap().wait());
    /// assert_eq!(worker.join().unwrap().unwrap(), 2);
    /// ```
    pub fn producers(&self) -> Producers<T, R> {
        Producers {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Number of lanes.
    pub fn lanes(&self) -> usize {
        self.shared.lane_count
    }

    /// A producer of priority class `priority`, on the lane the batcher's
    /// [`LaneAssignment`](crate::LaneAssignment) picks. Make one per class a thread submits in;
    /// each keeps its items in order within its class.
    ///
    /// ```
    /// use ringbatch::{Batch, Batcher, Priority};
    ///
    /// let batcher = Batcher::builder()
    ///     .priorities(true)
    ///     .handler_fn(|batch: &mut Batch<'_, &str, ()>| {
    ///         batch.ok_with(|_| ());
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let urgent = batcher.producer_with_priority(Priority::Critical).unwrap();
    /// urgent.submit("cancel order 7").unwrap().wait().unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// [`LaneError::NoPriorities`] if the batcher was built without priority
    /// classes and `priority` is not `Normal`.
    pub fn producer_with_priority(&self, priority: Priority) -> Result<Producer<T, R>, LaneError> {
        new_producer(&self.shared).with_class(priority)
    }

    /// An async producer of priority class `priority`; see
    /// [`producer_with_priority`](Self::producer_with_priority).
    ///
    /// # Errors
    ///
    /// As for [`producer_with_priority`](Self::producer_with_priority).
    pub fn async_producer_with_priority(
        &self,
        priority: Priority,
    ) -> Result<AsyncProducer<T, R>, LaneError> {
        let producer = new_async_producer(&self.shared);
        Ok(AsyncProducer::new(producer.as_sync().with_class(priority)?))
    }

    /// Pauses dispatching: from its next turn the drainer takes nothing
    /// from the lanes and hands nothing to the handler until
    /// [`resume`](Self::resume), so producers meet backpressure as the lanes
    /// fill; nothing is lost. A batch the drainer was assembling or handling
    /// when the call was made still goes out. A [`flush`](Self::flush)
    /// waits for the resume; shutdown resumes.
    pub fn pause(&self) {
        // Release pairs with the drainer's Acquire load.
        self.shared.control.paused.store(true, Ordering::Release);
    }

    /// Resumes dispatching after [`pause`](Self::pause).
    pub fn resume(&self) {
        // Release pairs with the drainer's Acquire load; the unpark wakes a
        // drainer sleeping on the pause.
        self.shared.control.paused.store(false, Ordering::Release);
        self.shared.unpark_drainer();
    }

    /// Whether dispatching is paused.
    pub fn is_paused(&self) -> bool {
        // Acquire, as the drainer's load.
        self.shared.control.paused.load(Ordering::Acquire)
    }

    /// Asks the drainer to dispatch everything it holds now, lingering or
    /// not, without waiting for it (see [`flush`](Self::flush) for a
    /// barrier). Without shaping policies nothing ever lingers, and this
    /// only wakes the drainer.
    pub fn flush_now(&self) {
        // Release: the drainer's Acquire load sees this thread's earlier
        // submissions' claims.
        self.shared
            .control
            .flush_now
            .fetch_add(1, Ordering::Release);
        self.shared.unpark_drainer();
    }

    /// The settings the batcher was built with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Blocks until every item submitted before the call (by any producer) has
    /// been handled and its result delivered.
    ///
    /// Called from this batcher's own handler (or a dead-letter callback) it
    /// returns at once, since the flush would wait for that very call to
    /// end (see the crate docs, "What a handler may call").
    pub fn flush(&self) {
        self.flush_until(None);
    }

    /// [`flush`](Self::flush), waiting at most `timeout`. Returns whether the
    /// flush completed (false at once from this batcher's own handler).
    #[must_use = "false: the flush did not finish in time"]
    pub fn flush_timeout(&self, timeout: Duration) -> bool {
        self.flush_until(Instant::now().checked_add(timeout))
    }

    pub(crate) fn flush_until(&self, deadline: Option<Instant>) -> bool {
        let shared = &*self.shared;
        if shared.called_back() {
            return false;
        }
        let control = &shared.control;
        // AcqRel: Release makes this thread's earlier claims visible to the
        // drainer's Acquire load of the request; it then reads every tail.
        let request = control.flush_requested.fetch_add(1, Ordering::AcqRel) + 1;
        shared.unpark_drainer();
        shared.progress.wait_flushed(request, deadline)
    }

    /// A snapshot of the counters; see [`Stats`].
    ///
    /// The drainer counts a batch once it has delivered the batch's results,
    /// so a snapshot taken as soon as a ticket is ready may not include that
    /// batch yet; after [`flush`](Self::flush) it does.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// [`shutdown`](Self::shutdown), but handling items for at most
    /// `timeout`: past it the drainer stops dispatching and gives back,
    /// instead of dropping, every item it has not handled (in the lanes,
    /// staged, or waiting to retry); their tickets fail with
    /// [`Error::Closed`](crate::Error::Closed). A batch already in the handler at the deadline is
    /// finished first (a handler cannot be interrupted), and so are batches
    /// an async handler has started.
    ///
    /// Called from this batcher's own handler it starts the shutdown and
    /// returns at once, as [`shutdown`](Self::shutdown) does; the items it
    /// gives back then are those the drainer has given back so far (none,
    /// usually): the rest are dropped with the batcher, their tickets
    /// failed with [`Error::Closed`](crate::Error::Closed).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ringbatch::{Batch, Batcher};
    ///
    /// let batcher = Batcher::builder()
    ///     .max_batch(1)
    ///     .handler_fn(|batch: &mut Batch<'_, u32, ()>| {
    ///         std::thread::sleep(Duration::from_millis(50)); // a slow sink
    ///         batch.ok_with(|_| ());
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let producer = batcher.producer();
    /// for i in 0..3 {
    ///     producer.push(i).unwrap();
    /// }
    /// let (stats, unhandled) = batcher.shutdown_timeout(Duration::from_millis(10));
    /// assert!(!unhandled.is_empty(), "the slow sink cannot take all three in 10 ms");
    /// assert_eq!(stats.items_handled + unhandled.len() as u64, 3, "nothing lost");
    /// ```
    #[must_use = "the items not handled come back here: dropping them loses them"]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> (Stats, Vec<T>) {
        self.shared.give_back_after(timeout);
        self.stop();
        let leftovers = core::mem::take(&mut *crate::contain::lock(&self.shared.leftovers));
        (self.shared.stats(), leftovers)
    }

    /// Changes the largest batch at run time, from the next batch on: at
    /// least 1 and at most the `max_batch` the batcher was built with (its
    /// buffers' size). With adaptive sizing, this is the controller's new
    /// maximum.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Zero`] or [`ConfigError::TooLarge`] (field
    /// `max_batch`).
    pub fn set_max_batch(&self, max_batch: usize) -> Result<(), ConfigError> {
        let built = self.shared.config.max_batch;
        if max_batch == 0 {
            return Err(ConfigError::Zero { field: "max_batch" });
        }
        if max_batch > built {
            return Err(ConfigError::TooLarge {
                field: "max_batch",
                value: max_batch,
                max: built,
            });
        }
        let control = &self.shared.control;
        // Relaxed: tuning values the drainer reads on its next turn.
        control.max_batch.store(max_batch, Ordering::Relaxed);
        let effective = match &self.shared.controller {
            Some(controller) => crate::contain::lock(controller).set_bounds(None, Some(max_batch)),
            None => max_batch,
        };
        control.effective_max.store(effective, Ordering::Relaxed);
        Ok(())
    }

    /// Changes the linger at run time, from the drainer's next turn.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] (field `linger`) if the batcher was built
    /// without any shaping policy (its drainer has no staging area; build
    /// with a linger, even `Linger::Fixed(Duration::ZERO)`, to change it
    /// later); [`ConfigError::TooLong`] for a linger above
    /// [`MAX_DURATION`](crate::MAX_DURATION).
    pub fn set_linger(&self, linger: Linger) -> Result<(), ConfigError> {
        match linger {
            Linger::None => {}
            Linger::Fixed(d) | Linger::Adaptive { target: d } => {
                crate::config::duration_at_most_max("linger", d)?;
            }
        }
        if !self.shared.shaping {
            return Err(ConfigError::Invalid {
                field: "linger",
                reason: "the batcher was built without shaping policies",
            });
        }
        *crate::contain::lock(&self.shared.new_linger) = Some(linger);
        // Release pairs with the drainer's Acquire load of the version.
        self.shared
            .control
            .settings_version
            .fetch_add(1, Ordering::Release);
        self.shared.unpark_drainer();
        Ok(())
    }

    /// Changes the adaptive controller's bounds at run time.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] (field `adaptive`) without adaptive sizing or
    /// with bounds out of order; [`ConfigError::TooLarge`] above the built
    /// `max_batch`.
    pub fn set_adaptive_bounds(&self, min: usize, max: usize) -> Result<(), ConfigError> {
        let Some(controller) = &self.shared.controller else {
            return Err(ConfigError::Invalid {
                field: "adaptive",
                reason: "the batcher was built without adaptive sizing",
            });
        };
        if min == 0 || min > max {
            return Err(ConfigError::Invalid {
                field: "adaptive",
                reason: "bounds must satisfy 1 <= min <= max",
            });
        }
        if max > self.shared.config.max_batch {
            return Err(ConfigError::TooLarge {
                field: "adaptive",
                value: max,
                max: self.shared.config.max_batch,
            });
        }
        let effective = crate::contain::lock(controller).set_bounds(Some(min), Some(max));
        // Relaxed: a tuning value.
        self.shared
            .control
            .effective_max
            .store(effective, Ordering::Relaxed);
        Ok(())
    }

    /// Changes the retry policy at run time (batches settled from now on).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] if the batcher was built without failure
    /// policies, or the policy is invalid.
    pub fn set_retry_policy(&self, policy: crate::RetryPolicy) -> Result<(), ConfigError> {
        policy.validate()?;
        self.failure_state("retry_policy")?.settings.retry = Some(policy);
        Ok(())
    }

    /// Changes the circuit breaker's settings at run time.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] if the batcher was built without failure
    /// policies; [`ConfigError::Zero`] for a zero threshold;
    /// [`ConfigError::TooLong`] for a recovery timeout above
    /// [`MAX_DURATION`](crate::MAX_DURATION).
    pub fn set_circuit_breaker(&self, breaker: crate::CircuitBreaker) -> Result<(), ConfigError> {
        breaker.validate()?;
        self.failure_state("circuit_breaker")?.settings.breaker = Some(breaker);
        Ok(())
    }

    pub(crate) fn failure_state(
        &self,
        field: &'static str,
    ) -> Result<crate::sync::MutexGuard<'_, crate::failure::FailureState<T>>, ConfigError> {
        match &self.shared.failure {
            Some(failure) => Ok(crate::contain::lock(failure)),
            None => Err(ConfigError::Invalid {
                field,
                reason: "the batcher was built without failure policies \
                         (set a retry policy, breaker or dead-letter handler)",
            }),
        }
    }

    /// Stops accepting items, drains every lane, dispatches what it finds,
    /// completes every ticket, joins the drainer and returns the final stats.
    ///
    /// Producers still held elsewhere get [`SubmitError::Closed`](crate::SubmitError::Closed) from then on;
    /// tickets still held can be waited on.
    ///
    /// Called from this batcher's own handler (or a dead-letter callback)
    /// it closes the lanes and returns at once, with the statistics of that
    /// moment: the drainer drains, dispatches and exits once the handler
    /// has returned (waiting for that here could never end).
    pub fn shutdown(mut self) -> Stats {
        self.stop();
        self.shared.stats()
    }
}

impl<T, R> Batcher<T, R> {
    /// Stops accepting items and asks the drainer to drain, dispatch and
    /// exit. Returns the drainer's handle (once) to join.
    pub(crate) fn begin_stop(&mut self) -> Option<thread::JoinHandle<()>> {
        if self.stopping {
            return None;
        }
        self.stopping = true;
        let drainer = self.drainer.take();
        let shared = &*self.shared;
        for lane in shared.lanes.iter() {
            lane.ring.close();
        }
        // Release: the drainer's Acquire load of `closing` then sees every
        // lane closed, and reads the final tails.
        shared.control.closing.store(true, Ordering::Release);
        for index in 0..shared.lanes.len() {
            // Producers waiting for room wake up and see the lane closed.
            shared.table.lane(index).notifier.notify_all();
        }
        shared.unpark_drainer();
        drainer
    }

    pub(crate) fn stop(&mut self) {
        let was_stopping = self.stopping;
        if self.shared.called_back() {
            // From this batcher's own handler: the drainer finishes the
            // drain once the handler returns; waiting for it here (or
            // joining its thread from itself) could never end. A drainer
            // thread's handle is dropped: it exits on its own.
            drop(self.begin_stop());
            return;
        }
        match self.begin_stop() {
            // The drainer catches handler panics; a panic here would be a bug
            // of ours, and its tickets still complete (with `Error::Closed`)
            // when the shared state is dropped.
            Some(drainer) => drop(drainer.join()),
            // A drainer task: wait for it to report its exit.
            None if !was_stopping => drop(self.shared.progress.wait_flushed(u64::MAX, None)),
            None => {}
        }
    }

    /// Whether batches run on an async runtime's tasks.
    #[cfg(feature = "tokio")]
    pub(crate) fn is_async(&self) -> bool {
        self.shared.pipeline.is_some()
    }
}

#[cfg(feature = "tokio")]
impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// [`flush`](Self::flush) for async code: resolves once every item
    /// submitted before the call has been handled and its result delivered,
    /// without blocking the thread.
    ///
    /// Called from this batcher's own handler it resolves at once, as
    /// [`flush`](Self::flush) returns.
    ///
    /// Cancel safety: dropping the future abandons the wait, not the flush.
    pub async fn flush_async(&self) {
        let shared = &*self.shared;
        if shared.called_back() {
            return;
        }
        // AcqRel, as in `flush_until`.
        let request = shared
            .control
            .flush_requested
            .fetch_add(1, Ordering::AcqRel)
            + 1;
        shared.unpark_drainer();
        core::future::poll_fn(|cx| shared.progress.poll_progress(Some(request), cx.waker())).await;
    }

    /// [`shutdown`](Self::shutdown) for async code: stops accepting, drains
    /// every lane, lets every batch in flight finish, completes every ticket
    /// and returns the final stats, without blocking the thread while it
    /// waits. Use it to shut down a batcher with an async handler from
    /// inside its runtime. Awaited in this batcher's own (async) handler it
    /// starts the shutdown and resolves at once, as [`shutdown`](Self::shutdown)
    /// returns there.
    ///
    /// Cancel safety: dropping the future does not stop the shutdown, which
    /// goes on by itself.
    pub async fn shutdown_async(mut self) -> Stats {
        let drainer = self.begin_stop();
        if self.shared.called_back() {
            // As in `stop`.
            drop(drainer);
            return self.shared.stats();
        }
        let shared = Arc::clone(&self.shared);
        core::future::poll_fn(|cx| shared.progress.poll_progress(None, cx.waker()).map(|_| ()))
            .await;
        // The drainer has reported its exit: its thread is ending.
        if let Some(drainer) = drainer {
            let _ = drainer.join();
        }
        shared.stats()
    }

    /// [`shutdown_timeout`](Self::shutdown_timeout) for async code: waits
    /// without blocking the thread, and returns the final stats and the
    /// items it gave back.
    ///
    /// Cancel safety: as for [`shutdown_async`](Self::shutdown_async); the
    /// items given back are then dropped with the batcher's state.
    #[must_use = "the items not handled come back here: dropping them loses them"]
    pub async fn shutdown_timeout_async(self, timeout: Duration) -> (Stats, Vec<T>) {
        self.shared.give_back_after(timeout);
        let shared = Arc::clone(&self.shared);
        let stats = self.shutdown_async().await;
        let leftovers = core::mem::take(&mut *crate::contain::lock(&shared.leftovers));
        (stats, leftovers)
    }
}

impl<T, R> Drop for Batcher<T, R> {
    /// Shuts down gracefully, like [`shutdown`](Batcher::shutdown). With an
    /// async handler, dropped inside a tokio runtime, it starts the shutdown
    /// and does not wait for it (waiting could block the very runtime that
    /// runs the last batches); use `shutdown_async().await` to wait.
    fn drop(&mut self) {
        #[cfg(feature = "tokio")]
        if (self.is_async() || self.shared.drainer_task.is_some())
            && tokio::runtime::Handle::try_current().is_ok()
        {
            drop(self.begin_stop());
            return;
        }
        self.stop();
    }
}

impl<T, R> fmt::Debug for Batcher<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("lanes", &self.shared.lane_count)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}
