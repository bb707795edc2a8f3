//! The public face: [`Batcher`], its builder, and [`Producer`].

use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;
use core::task::{Context, Poll};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::async_producer::AsyncProducer;
use crate::completion::{TableOwner, Ticket};
use crate::config::{Backpressure, Config, ConfigError, LaneAssignment};
use crate::drainer::{Drainer, Sink};
use crate::error::{Error, RefusedKind, SliceError, SubmitError};
use crate::handler::{Batch, BatchError, FnHandler, Handler, deliver};
use crate::pool::Pool;
use crate::producer::retry_until_room;
use crate::ring::{Claim, ClaimError, Evicted, Ring, distance};
use crate::shape::{
    Adaptive, Assembler, Controller, ExpiryStamps, GroupLimits, KeyPolicy, Linger, NEVER, Oversize,
    Priority, Shaping,
};
use crate::stats::{ContainedPanics, DrainerCounters, LaneCounters, LaneStats, Stats};
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, OnceLock, Ordering, thread};
use crate::wait::{Progress, WaitStrategy};

/// Most tickets one claim of [`Producer::submit_many`] covers: their
/// completion slot indexes are kept on the stack between claim and publish.
const TICKET_CHUNK: usize = 64;

/// One lane: its ring and its producer-side counters.
pub(crate) struct Lane<T> {
    pub(crate) ring: Ring<T>,
    /// Per-item expiry stamps, when deadlines or a maximum age are on.
    pub(crate) expiry: Option<ExpiryStamps>,
    pub(crate) counters: CachePadded<LaneCounters>,
    /// Producers on this ring, or [`OWNED`] while an exclusive producer owns
    /// it. Changed only when producers are made and dropped.
    producers: AtomicUsize,
}

/// [`Lane::producers`] while an exclusive producer owns the ring.
const OWNED: usize = usize::MAX;

impl<T> Lane<T> {
    /// Counts one more shared producer; false if the ring is owned.
    ///
    /// AcqRel: pairs with the Release of [`leave`](Self::leave) by an owner
    /// that left, so that its plain-store claims come before ours.
    fn join(&self) -> bool {
        let mut count = self.producers.load(Ordering::Relaxed);
        loop {
            if count == OWNED {
                return false;
            }
            match self.producers.compare_exchange_weak(
                count,
                count + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => count = actual,
            }
        }
    }

    /// Takes the ring for an exclusive producer if no producer is on it.
    ///
    /// AcqRel: pairs with the Release of every earlier producer's `leave`,
    /// so that their claims come before the owner's plain-store claims.
    fn take(&self) -> bool {
        self.producers
            .compare_exchange(0, OWNED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// A producer leaves the ring (`owner`: the exclusive one).
    fn leave(&self, owner: bool) {
        // Release: this producer's claims come before those of the next
        // producer to join or take the ring (Acquire in `join`, `take`).
        if owner {
            self.producers.store(0, Ordering::Release);
        } else {
            self.producers.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Requests to the drainer, read by it on every loop turn.
pub(crate) struct Control {
    /// Shutdown has begun: every lane is closed; drain and stop.
    pub(crate) closing: AtomicBool,
    /// Flush requests made (a counter, so concurrent flushes coalesce).
    pub(crate) flush_requested: AtomicU64,
    /// `flush_now` requests made: dispatch what is staged, without waiting.
    pub(crate) flush_now: AtomicU64,
    /// `pause` is in force: the drainer takes and dispatches nothing.
    pub(crate) paused: AtomicBool,
    /// `shutdown_timeout`'s deadline (ns since the epoch; `NEVER` if none):
    /// past it the drainer stops handling and gives the items back.
    pub(crate) give_back_at: AtomicU64,
    /// The live `max_batch` (`set_max_batch`).
    pub(crate) max_batch: AtomicUsize,
    /// Live settings changed (a counter the drainer compares).
    pub(crate) settings_version: AtomicU64,
    /// The effective maximum batch size (the adaptive controller's).
    pub(crate) effective_max: AtomicUsize,
}

/// State shared by the batcher, its producers and the drainer.
///
/// Layout: producers read `lanes` (once, when made), `table` (for tickets)
/// and `config` (on slow paths); the drainer writes `counters` once per
/// batch and the async workers write the pipeline's counters. Those written
/// fields sit in cache-padded cells of their own, so that no write of the
/// drainer or a worker invalidates a line producers read (a unit test checks
/// the offsets).
pub(crate) struct Shared<T, R> {
    /// The rings: one per lane, or with priority classes one per lane and
    /// class, class-major (ring `class * lane_count + lane`).
    pub(crate) lanes: Box<[Lane<T>]>,
    /// Lanes (cores), without the classes.
    pub(crate) lane_count: usize,
    /// Priority classes: 1, or 4 with priorities on.
    pub(crate) classes: usize,
    /// The adaptive controller, if any (locked once per batch).
    pub(crate) controller: Option<Mutex<Controller>>,
    /// Bytes of the drainer's staging area (for the memory report).
    staging_bytes: usize,
    /// Time zero of the drainer's clock (expiry stamps, histograms).
    pub(crate) epoch: Instant,
    /// The histograms, when recorded (locked once per batch).
    pub(crate) recorder: Option<Mutex<crate::metrics::Recorder>>,
    /// The failure policies' state, when any is set (locked once per batch).
    pub(crate) failure: Option<Mutex<crate::failure::FailureState<T>>>,
    /// Items `shutdown_timeout` gives back (filled by the drainer).
    pub(crate) leftovers: Mutex<Vec<T>>,
    /// A new linger for the drainer's assembler (`set_linger`).
    pub(crate) new_linger: Mutex<Option<Linger>>,
    /// Whether the batcher was built with a shaping policy (staging drainer).
    pub(crate) shaping: bool,
    /// The deepest each ring was seen (drainer writes, `stats` reads).
    pub(crate) high_water: Box<[AtomicU64]>,
    pub(crate) table: TableOwner<R>,
    pub(crate) control: CachePadded<Control>,
    /// Flush waiters sleep here; the drainer reports each completed flush.
    pub(crate) progress: Progress,
    pub(crate) counters: CachePadded<DrainerCounters>,
    pub(crate) pool: Pool<T>,
    /// Contained panics of user code other than the handler (rare; plain
    /// data, so the standard `Arc`, shared with the pool and the assembler).
    pub(crate) panics: std::sync::Arc<ContainedPanics>,
    /// The drainer's thread, set before any producer exists.
    pub(crate) drainer: OnceLock<thread::Thread>,
    pub(crate) config: Config,
    /// Receives every item a drop policy discards (called by producers).
    spill: Option<Spill<T>>,
    next_lane: AtomicUsize,
    /// Lanes owned by exclusive producers (at most `lane_count - 1`, so that
    /// shared producers always find a lane).
    exclusive_lanes: AtomicUsize,
    /// Producers made so far (spreads their completion slot cursors).
    producers_made: AtomicUsize,
    /// The hand-off to async worker tasks, with an async handler.
    #[cfg(feature = "tokio")]
    pub(crate) pipeline: CachePadded<Option<crate::runtime::Pipeline<T>>>,
    /// How to wake the drainer when it runs as a task.
    #[cfg(feature = "tokio")]
    pub(crate) drainer_task: Option<crate::runtime::TaskWake>,
    /// With `inline_when_idle`: the drainer's state, which a submitter that
    /// finds the drainer asleep may lock to run a turn itself.
    pub(crate) inline: Option<Inline<T, R>>,
}

/// The drainer's state shared with submitters, and the turn they run.
pub(crate) struct Inline<T, R> {
    pub(crate) cell: Box<crate::drainer::InlineCell<T, R>>,
    /// [`Drainer::inline_turn`], named here where its bounds are known.
    turn: fn(&mut Drainer<T, R>) -> bool,
    /// [`Drainer::direct`], when the configuration allows the direct path
    /// (no failure policies, no histograms).
    direct: Option<DirectFn<T, R>>,
}

/// [`Drainer::direct`]'s type.
type DirectFn<T, R> =
    fn(&crate::drainer::InlineCell<T, R>, usize, T) -> Result<Result<R, Error>, T>;

impl<T, R> Shared<T, R> {
    /// The async hand-off (only called in async mode).
    #[cfg(feature = "tokio")]
    pub(crate) fn pipeline(&self) -> &crate::runtime::Pipeline<T> {
        self.pipeline
            .as_ref()
            .expect("the async pipeline exists with an async handler")
    }

    /// Wakes the drainer (after publishing into a lane it announced it would
    /// park on, or after posting a request).
    #[cold]
    pub(crate) fn unpark_drainer(&self) {
        if let Some(thread) = self.drainer.get() {
            thread.unpark();
        }
        #[cfg(feature = "tokio")]
        if let Some(task) = &self.drainer_task {
            task.wake();
        }
    }

    /// Wakes the drainer after a ticketed claim that took a park
    /// announcement off its lane: with `inline_when_idle`, runs a drainer
    /// turn on this thread instead when the drainer's state is free.
    #[cold]
    pub(crate) fn wake_for_ticket(&self) {
        match &self.inline {
            Some(inline) => {
                crate::drainer::run_or_wake(&inline.cell, inline.turn, || self.unpark_drainer());
            }
            None => self.unpark_drainer(),
        }
    }

    /// Reports one batch's handler time and load feedback to the adaptive
    /// controller, if any, and publishes the new effective size.
    pub(crate) fn observe_batch(
        &self,
        handler_time: Duration,
        feedback: Option<crate::shape::LoadFeedback>,
    ) {
        if let Some(controller) = &self.controller {
            let size =
                crate::drainer::lock(controller).observe(handler_time, feedback, Instant::now());
            // Relaxed: a tuning value, read by the drainer for its next batch.
            self.control.effective_max.store(size, Ordering::Relaxed);
        }
    }

    /// This batcher's identity, for [`scope`](crate::scope): the address
    /// of its shared state.
    #[inline(always)]
    pub(crate) fn id(&self) -> usize {
        core::ptr::from_ref(self).cast::<()>() as usize
    }

    /// Whether the current thread runs this batcher's handler, or is its
    /// drainer thread (which runs the dead-letter callback too): a wait
    /// for the drainer from here would never end.
    pub(crate) fn called_back(&self) -> bool {
        crate::scope::running(self.id())
            || self.drainer.get().map(|t| t.id()) == Some(thread::current().id())
    }

    /// Nanoseconds since the epoch.
    #[inline]
    pub(crate) fn clock(&self) -> u64 {
        crate::shape::duration_ns(self.epoch.elapsed())
    }

    /// With histograms: records a finished batch (its handler time and its
    /// items' end-to-end times).
    pub(crate) fn record_finished(&self, handler: Duration, buf: &crate::pool::BatchBuf<T>) {
        if let Some(recorder) = &self.recorder {
            let now = self.clock();
            crate::drainer::lock(recorder).finished(
                handler,
                buf.runs
                    .iter()
                    .map(|&(since, count)| (now.saturating_sub(since), count)),
            );
        }
    }

    fn memory_bytes(&self) -> usize {
        let lanes = self.lanes.len();
        let capacity = self.config.capacity;
        lanes * (capacity * Ring::<T>::slot_bytes() + core::mem::size_of::<Lane<T>>())
            + lanes * self.config.result_slot_count() * crate::completion::Table::<R>::slot_bytes()
            + self.pool.footprint()
            + self
                .lanes
                .iter()
                .filter_map(|lane| lane.expiry.as_ref().map(ExpiryStamps::bytes))
                .sum::<usize>()
            + self.staging_bytes
            + self
                .recorder
                .as_ref()
                .map_or(0, |r| crate::drainer::lock(r).footprint())
    }

    fn stats(&self) -> Stats {
        let mut stats = Stats {
            memory_bytes: self.memory_bytes(),
            pool_size: self.pool.size(),
            pool_free: self.pool.available(),
            ..Stats::default()
        };
        self.counters.fill(&mut stats);
        self.panics.fill(&mut stats);
        stats.drop_panics += self.table.get().result_drop_panics();
        // Relaxed: a statistic.
        stats.effective_max_batch = self.control.effective_max.load(Ordering::Relaxed) as u64;
        stats.histograms = self
            .recorder
            .as_ref()
            .map(|r| crate::drainer::lock(r).snapshot());
        if let Some(failure) = &self.failure {
            let failure = crate::drainer::lock(failure);
            stats.retried = failure.tally.retried;
            stats.dead_lettered = failure.tally.dead_lettered;
            stats.circuit_rejected = failure.tally.circuit_rejected;
            stats.callback_panics += failure.tally.callback_panics;
            stats.drop_panics += failure.tally.drop_panics;
            stats.breaker = failure.breaker_state();
        }
        #[cfg(feature = "tokio")]
        if let Some(pipeline) = &*self.pipeline {
            stats.batches_in_flight = pipeline.in_flight() as u64;
            // Relaxed: statistics, as in `DrainerCounters::fill`.
            stats.batch_errors += pipeline.batch_errors.load(Ordering::Relaxed);
            stats.handler_panics += pipeline.panics.load(Ordering::Relaxed);
            stats.items_failed += pipeline.items_failed.load(Ordering::Relaxed);
        }
        stats.lanes = self
            .lanes
            .iter()
            .zip(self.high_water.iter())
            .map(|(lane, high_water)| {
                let tail = lane.ring.claimed();
                // Sequences published empty: by a producer that panicked
                // filling a slice, or by an owner that found the lane closed.
                let skipped =
                    LaneCounters::get(&lane.counters.skipped) + lane.ring.given_up() as u64;
                let evicted = LaneCounters::get(&lane.counters.evicted);
                LaneStats {
                    // The claim cursor counts every accepted item (sequence
                    // numbers start at 0), less the slots published empty
                    // and the items evicted since (counted as dropped).
                    // Items handled directly by their submitters are
                    // accepted without a claim.
                    accepted: (tail as u64).saturating_sub(skipped + evicted)
                        + LaneCounters::get(&lane.counters.direct),
                    rejected: LaneCounters::get(&lane.counters.rejected),
                    dropped: LaneCounters::get(&lane.counters.dropped),
                    refused_closed: LaneCounters::get(&lane.counters.refused_closed),
                    depth: lane.ring.depth() as u64,
                    // Relaxed: a statistic.
                    high_water: high_water.load(Ordering::Relaxed),
                }
            })
            .collect();
        for lane in &stats.lanes {
            stats.accepted += lane.accepted;
            stats.rejected += lane.rejected;
            stats.dropped += lane.dropped;
            stats.refused_closed += lane.refused_closed;
        }
        stats.submitted = stats.accepted + stats.rejected + stats.dropped + stats.refused_closed;
        stats
    }
}

/// A batcher: lanes that producers push into, and a drainer thread that
/// assembles batches and runs the [`Handler`].
///
/// `T` is the item type, `R` the per-item result a [`Ticket`] resolves to.
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
    shared: Arc<Shared<T, R>>,
    /// The drainer thread (`None` when the drainer runs as a task, or once
    /// taken to be joined).
    drainer: Option<thread::JoinHandle<()>>,
    /// `begin_stop` has run.
    stopping: bool,
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
            failure: crate::failure::FailureSettings::default(),
            spill: None,
            inline_when_idle: false,
        }
    }

    /// A producer bound to a lane by the batcher's [`LaneAssignment`].
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
    /// [`ConfigError::NoSuchLane`] if `lane >= self.lanes()`;
    /// [`ConfigError::LaneTaken`] if an exclusive producer owns it.
    pub fn producer_on_lane(&self, lane: usize) -> Result<Producer<T, R>, ConfigError> {
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
    /// among them. On the reference machine (a 2-vCPU virtual machine) a
    /// fence took 9 µs on the drainer and stalled a thread spinning on the
    /// other CPU for about 5.3 µs (`cargo bench --bench fence`). A stream
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
    /// [`ConfigError::NoFreeLane`] if every lane but one already has a
    /// producer (or an owner).
    pub fn exclusive_producer(&self) -> Result<Producer<T, R>, ConfigError> {
        new_exclusive_producer(&self.shared)
    }

    /// An [`exclusive_producer`](Self::exclusive_producer) for async tasks.
    ///
    /// # Errors
    ///
    /// As for [`exclusive_producer`](Self::exclusive_producer).
    pub fn exclusive_async_producer(&self) -> Result<AsyncProducer<T, R>, ConfigError> {
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
    /// [`LaneAssignment`] picks. Make one per class a thread submits in;
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
    /// [`ConfigError::Invalid`] (field `priorities`) if the batcher was built
    /// without priority classes and `priority` is not `Normal`.
    pub fn producer_with_priority(
        &self,
        priority: Priority,
    ) -> Result<Producer<T, R>, ConfigError> {
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
    ) -> Result<AsyncProducer<T, R>, ConfigError> {
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
    pub fn flush_timeout(&self, timeout: Duration) -> bool {
        self.flush_until(Instant::now().checked_add(timeout))
    }

    fn flush_until(&self, deadline: Option<Instant>) -> bool {
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
    /// [`Error::Closed`]. A batch already in the handler at the deadline is
    /// finished first (a handler cannot be interrupted), and so are batches
    /// an async handler has started.
    ///
    /// Called from this batcher's own handler it starts the shutdown and
    /// returns at once, as [`shutdown`](Self::shutdown) does; the items it
    /// gives back then are those the drainer has given back so far (none,
    /// usually): the rest are dropped with the batcher, their tickets
    /// failed with [`Error::Closed`].
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
    pub fn shutdown_timeout(mut self, timeout: Duration) -> (Stats, Vec<T>) {
        let at = self
            .shared
            .clock()
            .saturating_add(crate::shape::duration_ns(timeout));
        // Release: the drainer's Acquire load (after it sees `closing`).
        self.shared
            .control
            .give_back_at
            .store(at, Ordering::Release);
        self.stop();
        let leftovers = core::mem::take(&mut *crate::drainer::lock(&self.shared.leftovers));
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
            Some(controller) => crate::drainer::lock(controller).set_bounds(None, Some(max_batch)),
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
        *crate::drainer::lock(&self.shared.new_linger) = Some(linger);
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
        let effective = crate::drainer::lock(controller).set_bounds(Some(min), Some(max));
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

    fn failure_state(
        &self,
        field: &'static str,
    ) -> Result<crate::sync::MutexGuard<'_, crate::failure::FailureState<T>>, ConfigError> {
        match &self.shared.failure {
            Some(failure) => Ok(crate::drainer::lock(failure)),
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
    /// Producers still held elsewhere get [`SubmitError::Closed`] from then on;
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
    fn begin_stop(&mut self) -> Option<thread::JoinHandle<()>> {
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

    fn stop(&mut self) {
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
    fn is_async(&self) -> bool {
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
    pub async fn shutdown_timeout_async(self, timeout: Duration) -> (Stats, Vec<T>) {
        let at = self
            .shared
            .clock()
            .saturating_add(crate::shape::duration_ns(timeout));
        // Release: the drainer's Acquire load (after it sees `closing`).
        self.shared
            .control
            .give_back_at
            .store(at, Ordering::Release);
        let shared = Arc::clone(&self.shared);
        let stats = self.shutdown_async().await;
        let leftovers = core::mem::take(&mut *crate::drainer::lock(&shared.leftovers));
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

/// Makes producers for a batcher; see [`Batcher::producers`].
pub struct Producers<T, R = ()> {
    shared: Arc<Shared<T, R>>,
}

impl<T, R> Clone for Producers<T, R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T, R> Producers<T, R> {
    /// As [`Batcher::producer`].
    pub fn producer(&self) -> Producer<T, R> {
        new_producer(&self.shared)
    }

    /// As [`Batcher::async_producer`].
    pub fn async_producer(&self) -> AsyncProducer<T, R> {
        new_async_producer(&self.shared)
    }

    /// As [`Batcher::producer_on_lane`].
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoSuchLane`] if there is no such lane,
    /// [`ConfigError::LaneTaken`] if an exclusive producer owns it.
    pub fn producer_on_lane(&self, lane: usize) -> Result<Producer<T, R>, ConfigError> {
        new_producer_on_lane(&self.shared, lane)
    }

    /// As [`Batcher::exclusive_producer`].
    ///
    /// # Errors
    ///
    /// As for [`Batcher::exclusive_producer`].
    pub fn exclusive_producer(&self) -> Result<Producer<T, R>, ConfigError> {
        new_exclusive_producer(&self.shared)
    }

    /// As [`Batcher::exclusive_async_producer`].
    ///
    /// # Errors
    ///
    /// As for [`Batcher::exclusive_producer`].
    pub fn exclusive_async_producer(&self) -> Result<AsyncProducer<T, R>, ConfigError> {
        new_exclusive_producer(&self.shared).map(AsyncProducer::new)
    }

    /// As [`Batcher::producer_with_priority`].
    ///
    /// # Errors
    ///
    /// As for [`Batcher::producer_with_priority`].
    pub fn producer_with_priority(
        &self,
        priority: Priority,
    ) -> Result<Producer<T, R>, ConfigError> {
        new_producer(&self.shared).with_class(priority)
    }
}

impl<T, R> fmt::Debug for Producers<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producers")
            .field("lanes", &self.shared.lane_count)
            .finish_non_exhaustive()
    }
}

/// A producer on the lane the batcher's [`LaneAssignment`] picks (or the
/// next one not owned by an exclusive producer).
fn new_producer<T, R>(shared: &Arc<Shared<T, R>>) -> Producer<T, R> {
    let lanes = shared_lanes(shared);
    let lane = match shared.config.lane_assignment {
        LaneAssignment::CurrentCore => current_cpu().map(|cpu| cpu % lanes),
        LaneAssignment::RoundRobin => None,
    }
    // Relaxed: a counter for spreading producers, ordered with nothing.
    .unwrap_or_else(|| shared.next_lane.fetch_add(1, Ordering::Relaxed) % lanes);
    join_from(shared, lane)
}

/// A shared producer on `lane`, or on the next lane after it that no
/// exclusive producer owns (there is always one: see
/// [`Shared::exclusive_lanes`]).
fn join_from<T, R>(shared: &Arc<Shared<T, R>>, lane: usize) -> Producer<T, R> {
    let lanes = shared.lane_count;
    loop {
        for step in 0..lanes {
            if let Some(producer) =
                Producer::join(shared, normal_ring(shared, (lane + step) % lanes))
            {
                return producer;
            }
        }
        // Only while exclusive producers come and go: look again.
        crate::sync::thread::yield_now();
    }
}

/// The ring of `lane` in the Normal class.
fn normal_ring<T, R>(shared: &Shared<T, R>, lane: usize) -> usize {
    normal_class(shared.classes) * shared.lane_count + lane
}

/// Largest item a lane laid out for exclusive producers keeps apart from
/// its stamps; larger items sit beside their stamps on every lane.
const SPLIT_MAX_ITEM: usize = 16;

/// The index of the Normal class among `classes` priority classes.
fn normal_class(classes: usize) -> usize {
    if classes > 1 {
        Priority::Normal.index()
    } else {
        0
    }
}

/// The lanes shared producers are assigned to: all but the ones laid out
/// for exclusive producers.
fn shared_lanes<T, R>(shared: &Shared<T, R>) -> usize {
    shared.lane_count - shared.config.exclusive_lanes
}

/// An async producer on the next lane in turn.
fn new_async_producer<T, R>(shared: &Arc<Shared<T, R>>) -> AsyncProducer<T, R> {
    let lanes = shared_lanes(shared);
    // Relaxed: as in `new_producer`.
    let lane = shared.next_lane.fetch_add(1, Ordering::Relaxed) % lanes;
    AsyncProducer::new(join_from(shared, lane))
}

fn new_producer_on_lane<T, R>(
    shared: &Arc<Shared<T, R>>,
    lane: usize,
) -> Result<Producer<T, R>, ConfigError> {
    let lanes = shared.lane_count;
    if lane >= lanes {
        return Err(ConfigError::NoSuchLane { lane, lanes });
    }
    Producer::join(shared, normal_ring(shared, lane)).ok_or(ConfigError::LaneTaken { lane })
}

/// An exclusive producer on the first lane that has no producer (the lanes
/// laid out for exclusive producers first), keeping one lane open to shared
/// producers.
fn new_exclusive_producer<T, R>(shared: &Arc<Shared<T, R>>) -> Result<Producer<T, R>, ConfigError> {
    let lanes = shared.lane_count;
    // Reserve one of the `lanes - 1` exclusive places first. Relaxed: a
    // counter; the lanes' own words order the producers.
    let reserved = shared
        .exclusive_lanes
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n + 1 < lanes).then_some(n + 1)
        });
    if reserved.is_err() {
        return Err(ConfigError::NoFreeLane { lanes });
    }
    // The lanes laid out for exclusive producers first, then the others.
    let first = shared_lanes(shared);
    for lane in (first..lanes).chain(0..first) {
        let ring = normal_ring(shared, lane);
        if shared.lanes[ring].take() {
            return Ok(Producer::owner(Arc::clone(shared), ring));
        }
    }
    shared.exclusive_lanes.fetch_sub(1, Ordering::Relaxed);
    Err(ConfigError::NoFreeLane { lanes })
}

/// Builds a [`Batcher`]; every setting is checked by [`build`](Self::build).
pub struct BatcherBuilder<T, R> {
    config: Config,
    /// Whether `max_batch` was set (if not, it follows a smaller capacity).
    max_batch_set: bool,
    /// Whether `pool_size` was set (if not, it grows to fit `max_in_flight`).
    pool_size_set: bool,
    handler: Option<HandlerKind<T, R>>,
    #[cfg(feature = "tokio")]
    runtime: Option<tokio::runtime::Handle>,
    /// Run the drainer as a task on the runtime.
    #[cfg(feature = "tokio")]
    drain_on_runtime: bool,
    /// Batch shaping policies (all off by default).
    shaping: Shaping<T>,
    /// Record histograms.
    histograms: bool,
    /// Retries, circuit breaker, dead letters (all off by default).
    failure: crate::failure::FailureSettings<T>,
    /// Receives the items a drop policy discards.
    spill: Option<Spill<T>>,
    /// A submitter that finds the drainer asleep runs the batch itself.
    inline_when_idle: bool,
}

/// The `spill` callback.
type Spill<T> = Box<dyn Fn(T) + Send + Sync>;

/// The handler given to the builder.
enum HandlerKind<T, R> {
    Sync(Box<dyn Handler<T, R>>),
    /// Starts the async workers for the batcher's shared state.
    #[cfg(feature = "tokio")]
    Async(StartWorkers<T, R>),
}

/// Starts `n` async worker tasks for a batcher on a runtime.
#[cfg(feature = "tokio")]
type StartWorkers<T, R> =
    Box<dyn FnOnce(&Arc<Shared<T, R>>, usize, &tokio::runtime::Handle) + Send>;

impl<T: Send + 'static, R: Send + 'static> BatcherBuilder<T, R> {
    /// Number of lanes (default: one per core).
    pub fn lanes(mut self, lanes: usize) -> Self {
        self.config.lanes = Some(lanes);
        self
    }

    /// Lays out the last `n` lanes for exclusive producers (default 0), at
    /// most `lanes - 1`: one lane stays open to shared producers.
    ///
    /// [`Batcher::exclusive_producer`] takes these lanes first, and
    /// [`Batcher::producer`] leaves them out of its lane assignment.
    ///
    /// For items of at most 16 bytes, such a lane keeps the items apart from
    /// the slots' stamps, and its owner also publishes through a cursor of
    /// its own: the drainer reads the owner's fire-and-forget items without
    /// their stamps, so it pulls half as many cache lines from the
    /// producer's core for `u64` items. Larger items sit beside their
    /// stamps as on every other lane (64-byte items ran at about half the
    /// rate apart from them). Shared producers still work on these lanes
    /// (through [`producer_on_lane`](Batcher::producer_on_lane), or when
    /// exclusive producers hold every other lane), a little slower than on
    /// the others. With [`Backpressure::DropOldest`], whose lanes cannot be
    /// owned, the setting changes nothing.
    ///
    /// ```
    /// use ringbatch::{Batch, Batcher};
    ///
    /// let batcher = Batcher::builder()
    ///     .lanes(2)
    ///     .exclusive_lanes(1)
    ///     .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
    ///         let _sum: u64 = batch.items().iter().sum();
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let feed = batcher.exclusive_producer().unwrap();
    /// for tick in 0..1000 {
    ///     feed.push(tick).unwrap();
    /// }
    /// drop(feed);
    /// assert_eq!(batcher.shutdown().items_handled, 1000);
    /// ```
    ///
    /// [`Backpressure::DropOldest`]: crate::Backpressure::DropOldest
    pub fn exclusive_lanes(mut self, n: usize) -> Self {
        self.config.exclusive_lanes = n;
        self
    }

    /// Whether the drainer spins briefly (64 spin-loop hints, about 1.6 µs
    /// on the reference machine) after a sweep that found fewer items than
    /// `max_batch` while items keep coming (default false): a throughput
    /// setting.
    ///
    /// A drainer that takes every item as soon as it is published reads the
    /// cache lines a streaming producer is still writing, and each line
    /// crosses between the two cores several times. Spinning between short
    /// runs lets runs build up, so that the drainer reads finished lines:
    /// with one exclusive producer on a lane laid out for it
    /// ([`exclusive_lanes`](Self::exclusive_lanes)), `u64` items moved at
    /// 1.4 to 1.6 times the rate without it (BENCHMARKS.md). The cost is
    /// latency at moderate rates: when every sweep finds a few items, a
    /// batch is dispatched only once it is full or a sweep finds nothing,
    /// and at a tenth of the drainer's maximum rate the median item waited
    /// 42 µs where it waits 0.15 µs without. An item that arrives alone is
    /// not held. Applies to a drainer on its own thread (not with
    /// [`drain_on_runtime`](Self::drain_on_runtime)).
    pub fn spin_between_short_runs(mut self, spin: bool) -> Self {
        self.config.spin_between_short_runs = spin;
        self
    }

    /// Slots per lane, a power of two (default 1024).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.config.capacity = capacity;
        self
    }

    /// Most items per batch, at most `capacity` (default 256, or the
    /// capacity if that is smaller).
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.config.max_batch = max_batch;
        self.max_batch_set = true;
        self
    }

    /// Batch buffers allocated at build time (default 2; with an async
    /// handler, `max_in_flight + 1` unless set).
    pub fn pool_size(mut self, pool_size: usize) -> Self {
        self.config.pool_size = pool_size;
        self.pool_size_set = true;
        self
    }

    /// Completion slots per lane, a power of two (default: `capacity` or
    /// [`DEFAULT_RESULT_SLOTS`](crate::DEFAULT_RESULT_SLOTS), whichever is
    /// larger).
    ///
    /// Each submission with a ticket takes a free completion slot of its lane
    /// and holds it until its ticket takes the result or is dropped, so at
    /// most this many tickets per lane can be outstanding at once; beyond
    /// that, submissions with tickets meet the backpressure policy until
    /// tickets are given up (fire-and-forget pushes are not affected). Size it
    /// for the tickets the producers of one lane hold before waiting on them:
    /// under [`Backpressure::Block`], producers that hold every slot of a lane
    /// between them and all wait for one more would wait for ever.
    pub fn result_slots(mut self, slots: usize) -> Self {
        self.config.result_slots = Some(slots);
        self
    }

    /// How waiting threads wait (default [`WaitStrategy::Backoff`]).
    pub fn wait_strategy(mut self, wait: WaitStrategy) -> Self {
        self.config.wait = wait;
        self
    }

    /// What producers do when their lane is full (default [`Backpressure::Block`]).
    pub fn backpressure(mut self, backpressure: Backpressure) -> Self {
        self.config.backpressure = backpressure;
        self
    }

    /// Hands every item a drop policy discards to `spill` instead of
    /// dropping it: the new item [`Backpressure::DropNewest`] refuses, and
    /// the queued item [`Backpressure::DropOldest`] evicts (both still count
    /// in [`Stats::dropped`], and their tickets still resolve to
    /// [`Error::Dropped`]).
    ///
    /// `spill` runs on the submitting producer's thread (or the task polling
    /// an async submission), inside the submission call, after the item was
    /// counted and its ticket completed; keep it short. It may submit to the
    /// batcher again (no lock is held), though into a full lane that drops
    /// again.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use ringbatch::{Backpressure, Batch, Batcher};
    ///
    /// let kept = Arc::new(Mutex::new(Vec::new()));
    /// let sink = Arc::clone(&kept);
    /// let batcher = Batcher::builder()
    ///     .lanes(1)
    ///     .capacity(2)
    ///     .backpressure(Backpressure::DropOldest)
    ///     .spill(move |item: u32| sink.lock().unwrap().push(item))
    ///     .handler_fn(|batch: &mut Batch<'_, u32, ()>| {
    ///         batch.ok_with(|_| ());
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let producer = batcher.producer();
    /// for i in 0..100 {
    ///     producer.push(i).unwrap();
    /// }
    /// let stats = batcher.shutdown();
    /// assert_eq!(stats.items_handled + stats.dropped, 100);
    /// assert_eq!(kept.lock().unwrap().len() as u64, stats.dropped);
    /// ```
    pub fn spill(mut self, spill: impl Fn(T) + Send + Sync + 'static) -> Self {
        self.spill = Some(Box::new(spill));
        self
    }

    /// Lets a ticketed submission that finds the drainer asleep run the
    /// batch on the submitting thread (or task) instead of waking the
    /// drainer (default: off).
    ///
    /// For request/response use where each submitter waits for its result
    /// and the handler is quick (an in-memory book, a non-blocking send):
    /// at low load the round trip then has no thread hand-off at all, since
    /// the submitter sweeps the lanes, runs the handler and completes the
    /// tickets, its own among them, before `submit` returns. Waking a
    /// parked drainer costs more than most such handlers.
    ///
    /// When nothing submitted before on its lane is still waiting (the
    /// drainer has handled the lane up to its end), the submission takes a
    /// shorter path: its item skips the lane and the completion slot and
    /// runs as a batch of one, and the returned ticket already holds the
    /// result ([`Ticket::sequence`] is `None`); the stats count it as
    /// accepted on its lane and as a batch dispatched for
    /// [`DispatchReason::LanesIdle`](crate::DispatchReason::LanesIdle).
    /// Items with a deadline, and batchers with
    /// [`histograms`](Self::histograms) or failure policies
    /// ([`circuit_breaker`](Self::circuit_breaker),
    /// [`dead_letter`](Self::dead_letter)), always take the lane.
    ///
    /// Only [`submit`](Producer::submit) and its variants (`try_submit`,
    /// `submit_timeout`, `submit_with_deadline`, and the async `enqueue` and
    /// `submit`) run a turn, and only when the drainer is asleep and its
    /// state is free at once: a submitter never waits for it. With this
    /// option the drainer thread goes to sleep as soon as it finds the lanes
    /// empty, whatever the [`wait_strategy`](Self::wait_strategy) (which
    /// still says how threads wait for room and for results): a drainer
    /// spinning through its backoff would take every item itself. `push`
    /// and the slice methods always wake the drainer, so hot
    /// fire-and-forget loops never run the handler. The drainer
    /// thread handles everything else (flush, shutdown, pause) and takes
    /// over whenever it is awake. Batches keep the per-producer order, and
    /// the handler still runs one batch at a time, but on whichever thread
    /// runs the turn: it must not block for long or call back into the
    /// batcher's blocking methods.
    ///
    /// Needs a blocking handler on the drainer thread: `build` refuses it
    /// with an async handler, `drain_on_runtime`, a shaping policy or a
    /// retry policy.
    ///
    /// ```
    /// use ringbatch::{Batch, Batcher};
    ///
    /// let batcher = Batcher::builder()
    ///     .lanes(1)
    ///     .inline_when_idle(true)
    ///     .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
    ///         batch.ok_with(|price| price * 2);
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let producer = batcher.producer();
    /// for price in 0..1_000 {
    ///     assert_eq!(producer.submit(price).unwrap().wait().unwrap(), price * 2);
    /// }
    /// assert_eq!(batcher.shutdown().items_handled, 1_000);
    /// ```
    pub fn inline_when_idle(mut self, inline: bool) -> Self {
        self.inline_when_idle = inline;
        self
    }

    /// Pins the drainer thread to core `core` (checked at build).
    pub fn pin_drainer(mut self, core: usize) -> Self {
        self.config.pin_drainer = Some(core);
        self
    }

    /// How producers pick lanes (default [`LaneAssignment::CurrentCore`]).
    pub fn lane_assignment(mut self, assignment: LaneAssignment) -> Self {
        self.config.lane_assignment = assignment;
        self
    }

    /// The drainer thread's name (default `ringbatch-drainer`).
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.config.thread_name = name.into();
        self
    }

    /// Replaces every setting at once.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self.max_batch_set = true;
        self.pool_size_set = true;
        self
    }

    /// The sink, as a [`Handler`].
    pub fn handler(mut self, handler: impl Handler<T, R>) -> Self {
        self.handler = Some(HandlerKind::Sync(Box::new(handler)));
        self
    }

    /// The sink, as an [`AsyncHandler`](crate::AsyncHandler) run on a tokio
    /// runtime, at most [`max_in_flight`](Self::max_in_flight) batches at
    /// once. The runtime is the one `build` is called in, or the one set
    /// with [`runtime`](Self::runtime).
    #[cfg(feature = "tokio")]
    pub fn async_handler(mut self, handler: impl crate::AsyncHandler<T, R>) -> Self {
        self.handler = Some(HandlerKind::Async(Box::new(
            move |shared, workers, runtime| {
                crate::runtime::spawn_workers(shared, handler, workers, runtime);
            },
        )));
        self
    }

    /// The sink, as a closure returning a future (see
    /// [`async_handler`](Self::async_handler)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use ringbatch::{AsyncBatch, Batcher};
    ///
    /// let batcher = Batcher::builder()
    ///     .max_in_flight(2)
    ///     .async_handler_fn(|mut batch: AsyncBatch<u64, u64>| async move {
    ///         batch.complete_with(|x| Ok::<_, ringbatch::Error>(x + 1));
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(batcher.async_producer().submit(1).await.unwrap(), 2);
    /// # }
    /// ```
    #[cfg(feature = "tokio")]
    pub fn async_handler_fn<F, Fut>(self, f: F) -> Self
    where
        F: Fn(crate::AsyncBatch<T, R>) -> Fut + Send + Sync + 'static,
        Fut: core::future::Future<Output = Result<(), BatchError>> + Send,
    {
        self.async_handler(crate::runtime::FnAsyncHandler(f))
    }

    /// Most batches an async handler runs at once (default 4). While they
    /// run, the drainer assembles the next batch; when every buffer is in
    /// flight it waits, and producers meet backpressure.
    pub fn max_in_flight(mut self, batches: usize) -> Self {
        self.config.max_in_flight = batches;
        self
    }

    /// Runs the drainer as a task on the tokio runtime instead of a thread
    /// of its own (default: a thread).
    ///
    /// For async code whose round trips matter: a task that submits, the
    /// drainer and the task that awaits the result can then all run on one
    /// worker thread, with no thread to wake between them. The drainer no
    /// longer has a core to itself: it yields to other tasks while idle (by
    /// the wait strategy) and a blocking handler runs on the runtime's
    /// worker thread, so use it with async handlers or short blocking ones.
    /// Shut down with `shutdown_async().await` from inside the runtime; a
    /// blocking `shutdown()` (or a drop) outside it waits for the drainer
    /// task, so the runtime must still be running its tasks then. If the
    /// runtime shuts down first, items still in the lanes fail with
    /// [`Error::RuntimeShutdown`](crate::Error::RuntimeShutdown).
    ///
    /// The runtime is the one `build` is called in, or the one set with
    /// [`runtime`](Self::runtime); `pin_drainer` cannot be combined with it.
    #[cfg(feature = "tokio")]
    pub fn drain_on_runtime(mut self, on_runtime: bool) -> Self {
        self.drain_on_runtime = on_runtime;
        self
    }

    /// The tokio runtime that runs an async handler's batches (default: the
    /// runtime `build` is called in).
    #[cfg(feature = "tokio")]
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// A byte limit per batch, measured by the [`weigher`](Self::weigher)
    /// (which must be set too): a batch is dispatched before an item would
    /// take it over the limit. An item heavier than the limit on its own
    /// follows [`oversize`](Self::oversize). Default: 1 MiB once a weigher is
    /// set, no limit otherwise. At most `u32::MAX` (4 GiB): `build` refuses
    /// more with [`ConfigError::TooLarge`] (field `"max_bytes"`).
    pub fn max_bytes(mut self, limit: usize) -> Self {
        self.shaping.max_bytes = Some(limit);
        self
    }

    /// How many bytes an item adds to its batch: what the sink will really
    /// send (its encoded size). Called once per item, on the drainer.
    ///
    /// ```
    /// use ringbatch::{Batch, Batcher, DispatchReason};
    ///
    /// let batcher = Batcher::builder()
    ///     .weigher(|line: &String| line.len())
    ///     .max_bytes(64)
    ///     .linger(ringbatch::Linger::Fixed(std::time::Duration::from_secs(5)))
    ///     .handler_fn(|batch: &mut Batch<'_, String, ()>| {
    ///         assert!(batch.iter().map(String::len).sum::<usize>() <= 64);
    ///         batch.ok_with(|_| ());
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let producer = batcher.producer();
    /// for _ in 0..4 {
    ///     producer.push("x".repeat(30)).unwrap();
    /// }
    /// let stats = batcher.shutdown();
    /// assert!(stats.batches >= 2, "two 30-byte items at most per batch");
    /// ```
    pub fn weigher(mut self, weigher: impl Fn(&T) -> usize + Send + 'static) -> Self {
        self.shaping.weigher = Some(Box::new(weigher));
        self
    }

    /// What happens to an item heavier than `max_bytes` on its own
    /// (default [`Oversize::Fail`]: its ticket fails with
    /// [`Error::TooLarge`]).
    pub fn oversize(mut self, oversize: Oversize) -> Self {
        self.shaping.oversize = oversize;
        self
    }

    /// How long a batch may wait for more items (default [`Linger::None`],
    /// natural batching).
    pub fn linger(mut self, linger: Linger) -> Self {
        self.shaping.linger = linger;
        self
    }

    /// The shortest time between the starts of two batches (a flush,
    /// shutdown or Critical item does not wait for it).
    pub fn min_interval(mut self, interval: Duration) -> Self {
        self.shaping.min_interval = Some(interval);
        self
    }

    /// Priority classes: each lane gets one ring per [`Priority`], and the
    /// drainer takes higher classes first. Producers pick a class with
    /// [`Batcher::producer_with_priority`]; plain producers are `Normal`.
    pub fn priorities(mut self, on: bool) -> Self {
        self.shaping.priorities = on;
        self
    }

    /// With priority classes: a lower class whose oldest staged item has
    /// waited this long is taken before higher classes (default 10 ms).
    pub fn starvation_age(mut self, age: Duration) -> Self {
        self.shaping.starvation_age = age;
        self
    }

    /// Key groups: every batch holds items of a single key (and class).
    /// Each group follows its [`group_limits`](Self::group_limits); the
    /// number of groups open at once is bounded by
    /// [`max_open_groups`](Self::max_open_groups) (when a new key finds no
    /// free group, the group with the oldest item is dispatched first).
    pub fn group_by<K, F>(mut self, key: F) -> Self
    where
        T: 'static,
        K: core::hash::Hash + Eq,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        self.shaping.group = Some(KeyPolicy::new(key));
        self
    }

    /// The limits of each key group, from an item of the group (called once
    /// when the group opens).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ringbatch::{Batch, Batcher, GroupLimits, Linger};
    ///
    /// #[derive(Clone, Copy, PartialEq, Eq, Hash)]
    /// enum Op { Add, Get, Pin, PubSub, Dht }
    ///
    /// let batcher = Batcher::builder()
    ///     .max_batch(100)
    ///     .linger(Linger::Fixed(Duration::from_millis(5)))
    ///     .group_by(|op: &(Op, u64)| op.0)
    ///     .group_limits(|op: &(Op, u64)| match op.0 {
    ///         Op::Add => GroupLimits::share(0.25),
    ///         Op::Get => GroupLimits::share(0.5),
    ///         Op::Pin => GroupLimits::share(0.33),
    ///         Op::PubSub | Op::Dht => GroupLimits::immediate(),
    ///     })
    ///     .handler_fn(|batch: &mut Batch<'_, (Op, u64), ()>| {
    ///         let op = batch.items()[0].0;
    ///         assert!(batch.iter().all(|item| item.0 == op), "one key per batch");
    ///         batch.ok_with(|_| ());
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// batcher.producer().submit((Op::Dht, 1)).unwrap().wait().unwrap();
    /// ```
    pub fn group_limits(mut self, limits: impl Fn(&T) -> GroupLimits + Send + 'static) -> Self {
        self.shaping.group_limits = Some(Box::new(limits));
        self
    }

    /// The most key groups open at once (default 64).
    pub fn max_open_groups(mut self, groups: usize) -> Self {
        self.shaping.max_open_groups = groups;
        self
    }

    /// Conflation: within a batch only the latest item per key is kept, in
    /// the order of each key's first arrival; a replaced item's ticket
    /// fails with [`Error::Superseded`] and is counted in
    /// [`Stats::superseded`].
    ///
    /// "Latest" is the order the drainer takes items in: for one producer
    /// in one class, the order of submission. Items of different lanes or
    /// classes have no common order (the drainer takes higher classes first
    /// in each sweep), so a key updated from several producers or classes
    /// keeps the one taken last; submit each key from one producer and class
    /// where the latest must win.
    ///
    /// ```
    /// use ringbatch::{Batch, Batcher, Linger};
    /// use std::time::Duration;
    ///
    /// // (symbol, price): the sink wants the latest price per symbol.
    /// let batcher = Batcher::builder()
    ///     .conflate_by(|quote: &(&str, u32)| quote.0)
    ///     .linger(Linger::Fixed(Duration::from_secs(5)))
    ///     .handler_fn(|batch: &mut Batch<'_, (&'static str, u32), ()>| {
    ///         assert_eq!(batch.items(), &[("AAPL", 3), ("MSFT", 2)]);
    ///         batch.ok_with(|_| ());
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let producer = batcher.producer();
    /// for quote in [("AAPL", 1), ("MSFT", 2), ("AAPL", 3)] {
    ///     producer.push(quote).unwrap();
    /// }
    /// batcher.flush();
    /// assert_eq!(batcher.stats().superseded, 1);
    /// ```
    pub fn conflate_by<K, F>(mut self, key: F) -> Self
    where
        T: 'static,
        K: core::hash::Hash + Eq,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        self.shaping.conflate = Some(KeyPolicy::new(key));
        self
    }

    /// Per-item deadlines ([`Producer::submit_with_deadline`]): producers
    /// stamp each item's expiry (one store per item), and expired items
    /// never reach the handler.
    pub fn deadlines(mut self, on: bool) -> Self {
        self.shaping.deadlines = on;
        self
    }

    /// The longest an item may wait between its submission and its
    /// dispatch; older items never reach the handler, their tickets fail
    /// with [`Error::Expired`]. Turns on [`deadlines`](Self::deadlines), and
    /// producers read the clock once per item.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.shaping.max_age = Some(age);
        self
    }

    /// Adaptive batch sizing; see [`Adaptive`].
    pub fn adaptive(mut self, adaptive: Adaptive) -> Self {
        self.shaping.adaptive = Some(adaptive);
        self
    }

    /// Items the drainer's staging area holds (with shaping policies on):
    /// default four times `max_batch`. When it is full the drainer stops
    /// taking items from the lanes, so producers feel backpressure.
    pub fn staging(mut self, items: usize) -> Self {
        self.shaping.staging = Some(items);
        self
    }

    /// Retries failed items under `policy` (see [`failure`](crate::failure)):
    /// the handler classifies each failure with [`Failure`](crate::Failure)
    /// or [`Batch::retry`](crate::Batch::retry).
    pub fn retry_policy(mut self, policy: crate::RetryPolicy) -> Self {
        self.failure.retry = Some(policy);
        self
    }

    /// A circuit breaker in front of the handler (see
    /// [`CircuitBreaker`](crate::CircuitBreaker)).
    pub fn circuit_breaker(mut self, breaker: crate::CircuitBreaker) -> Self {
        self.failure.breaker = Some(breaker);
        self
    }

    /// Receives every item that failed for good (retries spent, a permanent
    /// failure, an open breaker), with its last error; called on the
    /// drainer thread (or an async worker task), one item at a time.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use ringbatch::{Batch, Batcher, Failure};
    ///
    /// let dead = Arc::new(Mutex::new(Vec::new()));
    /// let sink = Arc::clone(&dead);
    /// let batcher = Batcher::builder()
    ///     .dead_letter(move |letter: ringbatch::DeadLetter<u32>| {
    ///         sink.lock().unwrap().push(letter.item);
    ///     })
    ///     .handler_fn(|_: &mut Batch<'_, u32, ()>| Err(Failure::permanent("bad rows").into()))
    ///     .build()
    ///     .unwrap();
    /// assert!(batcher.producer().submit(7).unwrap().wait().is_err());
    /// batcher.shutdown();
    /// assert_eq!(*dead.lock().unwrap(), [7]);
    /// ```
    pub fn dead_letter(
        mut self,
        handler: impl FnMut(crate::DeadLetter<T>) + Send + 'static,
    ) -> Self {
        self.failure.dead_letter = Some(Box::new(handler));
        self
    }

    /// Records HDR histograms of batch size, queue wait, handler time and
    /// end-to-end time, read with [`Batcher::stats`] (see
    /// [`metrics`](crate::metrics)). The drainer pays for them, once per
    /// batch plus a clock read per sweep; producers pay nothing. Off by
    /// default.
    pub fn histograms(mut self, on: bool) -> Self {
        self.histograms = on;
        self
    }

    /// The sink, as a closure called with each batch.
    pub fn handler_fn<F>(self, f: F) -> Self
    where
        F: FnMut(&mut Batch<'_, T, R>) -> Result<(), BatchError> + Send + 'static,
    {
        self.handler(FnHandler(f))
    }

    /// Checks the settings, allocates every lane, slot and batch buffer, and
    /// starts the drainer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid setting, or saying why the
    /// drainer could not start.
    pub fn build(mut self) -> Result<Batcher<T, R>, ConfigError> {
        if !self.max_batch_set && self.config.capacity > 0 {
            self.config.max_batch = self.config.max_batch.min(self.config.capacity);
        }
        let is_async = !matches!(self.handler, Some(HandlerKind::Sync(_)) | None);
        if is_async && !self.pool_size_set {
            let needed = self.config.max_in_flight.saturating_add(1);
            self.config.pool_size = self.config.pool_size.max(needed);
        }
        self.config.validate()?;
        let mut shaping = self.shaping;
        shaping.validate(self.config.max_batch)?;
        if let Some(policy) = &self.failure.retry {
            policy.validate()?;
            // Batches waiting to retry hold buffers: keep some for new ones.
            if !self.pool_size_set {
                self.config.pool_size = self.config.pool_size.max(8);
            }
        }
        if let Some(breaker) = &self.failure.breaker {
            breaker.validate()?;
        }
        let handler = self.handler.ok_or(ConfigError::MissingHandler)?;
        if is_async && self.config.pool_size <= self.config.max_in_flight {
            return Err(ConfigError::PoolTooSmall {
                pool_size: self.config.pool_size,
                needed: self.config.max_in_flight + 1,
            });
        }
        #[cfg(feature = "tokio")]
        let drain_on_runtime = self.drain_on_runtime;
        #[cfg(feature = "tokio")]
        if let (true, Some(core)) = (drain_on_runtime, self.config.pin_drainer) {
            return Err(ConfigError::PinOnRuntime { core });
        }
        #[cfg(feature = "tokio")]
        if drain_on_runtime && !is_async && self.failure.retry.is_some() {
            return Err(ConfigError::Invalid {
                field: "retry_policy",
                reason: "a drainer on the runtime retries only with an async handler \
                         (a blocking handler's retries would sleep on a worker thread)",
            });
        }
        if self.inline_when_idle {
            let reason = if is_async {
                Some("runs a blocking handler on the submitting thread, not an async one")
            } else if shaping.is_active() {
                Some(
                    "runs no shaping policy (linger, priorities, groups, bytes, deadlines, adaptive sizing)",
                )
            } else if self.failure.retry.is_some() {
                Some("runs no retry policy (retries wait in the drainer thread's timer queue)")
            } else {
                None
            };
            #[cfg(feature = "tokio")]
            let reason = reason.or(drain_on_runtime
                .then_some("needs the drainer on a thread of its own, not drain_on_runtime"));
            if let Some(reason) = reason {
                return Err(ConfigError::Invalid {
                    field: "inline_when_idle",
                    reason,
                });
            }
        }
        #[cfg(feature = "tokio")]
        let runtime = match (is_async || drain_on_runtime, self.runtime) {
            (true, Some(handle)) => Some(handle),
            (true, None) => {
                Some(tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?)
            }
            (false, _) => None,
        };
        let config = self.config;
        let lane_count = config.lane_count();
        let classes = shaping.classes();
        let rings = lane_count * classes;
        let epoch = Instant::now();
        let histograms = self.histograms;
        let failure = self.failure;
        let direct_ok = !histograms && !failure.is_active();
        let controller = shaping
            .adaptive
            .map(|adaptive| Controller::new(adaptive, config.max_batch));
        let effective_max = controller
            .as_ref()
            .map_or(config.max_batch, Controller::size);
        let panics = std::sync::Arc::new(ContainedPanics::default());
        let assembler = shaping.is_active().then(|| {
            Assembler::new(
                shaping_for_drainer(&mut shaping),
                config.max_batch,
                epoch,
                std::sync::Arc::clone(&panics),
            )
        });
        let shared = Arc::new(Shared {
            lanes: (0..rings)
                .map(|ring| Lane {
                    ring: if config.backpressure == Backpressure::DropOldest {
                        Ring::with_eviction(config.capacity)
                    } else if ring / lane_count == normal_class(classes)
                        && ring % lane_count >= lane_count - config.exclusive_lanes
                        && core::mem::size_of::<T>() <= SPLIT_MAX_ITEM
                    {
                        Ring::new_split(config.capacity)
                    } else {
                        Ring::new(config.capacity)
                    },
                    expiry: shaping
                        .stamps_expiry()
                        .then(|| ExpiryStamps::new(config.capacity, epoch, shaping.max_age)),
                    counters: CachePadded::new(LaneCounters::default()),
                    producers: AtomicUsize::new(0),
                })
                .collect(),
            lane_count,
            classes,
            controller: controller.map(Mutex::new),
            staging_bytes: assembler.as_ref().map_or(0, Assembler::footprint),
            table: TableOwner::new(rings, config.result_slot_count(), config.wait),
            control: CachePadded::new(Control {
                closing: AtomicBool::new(false),
                flush_requested: AtomicU64::new(0),
                flush_now: AtomicU64::new(0),
                paused: AtomicBool::new(false),
                give_back_at: AtomicU64::new(NEVER),
                max_batch: AtomicUsize::new(config.max_batch),
                settings_version: AtomicU64::new(0),
                effective_max: AtomicUsize::new(effective_max),
            }),
            progress: Progress::default(),
            counters: CachePadded::new(DrainerCounters::default()),
            pool: Pool::new(
                config.pool_size,
                config.max_batch,
                histograms,
                failure.is_active(),
                std::sync::Arc::clone(&panics),
            ),
            panics,
            epoch,
            recorder: histograms
                .then(|| Mutex::new(crate::metrics::Recorder::new(config.max_batch))),
            high_water: (0..rings).map(|_| AtomicU64::new(0)).collect(),
            failure: failure
                .is_active()
                .then(|| Mutex::new(crate::failure::FailureState::new(failure))),
            leftovers: Mutex::new(Vec::new()),
            new_linger: Mutex::new(None),
            shaping: assembler.is_some(),
            drainer: OnceLock::new(),
            spill: self.spill,
            next_lane: AtomicUsize::new(0),
            exclusive_lanes: AtomicUsize::new(0),
            producers_made: AtomicUsize::new(0),
            #[cfg(feature = "tokio")]
            pipeline: CachePadded::new(
                is_async.then(|| crate::runtime::Pipeline::new(config.pool_size)),
            ),
            #[cfg(feature = "tokio")]
            drainer_task: drain_on_runtime.then(crate::runtime::TaskWake::default),
            // The direct path skips the lane, so it runs only where a batch
            // of one needs nothing more than the handler: no failure
            // policies (a breaker, dead letters) and no histograms.
            inline: self.inline_when_idle.then(|| Inline {
                cell: Box::new(Mutex::new(None)),
                turn: Drainer::inline_turn,
                direct: direct_ok.then_some(Drainer::direct as DirectFn<T, R>),
            }),
            config,
        });

        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let sink = match handler {
            HandlerKind::Sync(handler) => Sink::Sync(handler),
            #[cfg(feature = "tokio")]
            HandlerKind::Async(start) => {
                let runtime = runtime
                    .as_ref()
                    .expect("resolved above for an async handler");
                start(&shared, shared.config.max_in_flight, runtime);
                Sink::Async
            }
        };
        let drainer = Drainer::new(Arc::clone(&shared), sink, assembler);
        #[cfg(feature = "tokio")]
        if drain_on_runtime {
            let runtime = runtime.as_ref().expect("resolved above");
            runtime.spawn(drainer.on_runtime().run_async());
            return Ok(Batcher {
                shared,
                drainer: None,
                stopping: false,
            });
        }
        // With `inline_when_idle` the state lives in the shared cell, and the
        // thread works on it there.
        let drainer = match &shared.inline {
            Some(inline) => {
                *crate::drainer::lock(&inline.cell) = Some(drainer);
                Err(Arc::clone(&shared))
            }
            None => Ok(drainer),
        };
        let pin = shared.config.pin_drainer;
        let handle = thread::Builder::new()
            .name(shared.config.thread_name.clone())
            .spawn(move || {
                if let Some(core) = pin {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                        let _ = started_tx.send(Err(ConfigError::PinFailed { core }));
                        return;
                    }
                }
                let _ = started_tx.send(Ok(()));
                match drainer {
                    Ok(drainer) => drainer.run(),
                    Err(shared) => Drainer::run_shared(&shared),
                }
            })
            .map_err(|e| ConfigError::Spawn {
                message: e.to_string(),
            })?;
        let _ = shared.drainer.set(handle.thread().clone());
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Batcher {
                shared,
                drainer: Some(handle),
                stopping: false,
            }),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => {
                let _ = handle.join();
                Err(ConfigError::Spawn {
                    message: "the drainer thread ended before it started".to_owned(),
                })
            }
        }
    }
}

impl<T, R> fmt::Debug for BatcherBuilder<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatcherBuilder")
            .field("config", &self.config)
            .field("handler", &self.handler.is_some())
            .finish()
    }
}

/// The core the calling thread runs on, if the platform says.
fn current_cpu() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `sched_getcpu` takes no arguments and only reads the
        // calling thread's state; it returns -1 on failure.
        let cpu = unsafe { libc::sched_getcpu() };
        usize::try_from(cpu).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Moves the settings the drainer's assembler owns out of `shaping`, keeping
/// the few the builder still reads (classes, expiry stamps).
fn shaping_for_drainer<T>(shaping: &mut Shaping<T>) -> Shaping<T> {
    let taken = core::mem::take(shaping);
    shaping.priorities = taken.priorities;
    shaping.deadlines = taken.deadlines;
    shaping.max_age = taken.max_age;
    taken
}

/// How long a claim may wait.
#[derive(Clone, Copy)]
enum Wait {
    /// Not at all.
    Never,
    /// As the backpressure policy says.
    Policy,
    /// Until there is room, or the deadline if any.
    Block(Option<Instant>),
}

/// A handle for submitting items, bound to one lane for its whole life so its
/// items stay in order.
///
/// `Send` but not `Sync`: move it to the thread that uses it, or better,
/// create it there ([`Batcher::producer`] picks that thread's core's lane).
/// Several producers may share a lane.
///
/// Every method that does not accept an item gives it back in the error.
pub struct Producer<T, R = ()> {
    shared: Arc<Shared<T, R>>,
    /// The ring this producer publishes into: its lane, or with priority
    /// classes `class * lane_count + lane` (the completion table is indexed
    /// the same way).
    lane: usize,
    /// `&shared.lanes[lane]`, kept so that a push does not index the lanes
    /// again (valid as long as `shared`, which this producer holds).
    lane_ptr: core::ptr::NonNull<Lane<T>>,
    /// Where this producer next looks for a free completion slot (private,
    /// so that producers of one lane seldom contend for the same slot).
    next_slot: Cell<usize>,
    /// Private copy of the lane's drainer cursor, reloaded only when the lane
    /// looks full.
    cached_head: Cell<usize>,
    /// This producer owns its ring ([`Batcher::exclusive_producer`]).
    owner: bool,
    /// It owns its ring and claims with a plain store
    /// ([`Ring::try_claim_exclusive`]): the asymmetric fences work here.
    plain_claims: bool,
    /// Not `Sync` (the cached cursor is a `Cell`).
    _not_sync: PhantomData<Cell<()>>,
}

// SAFETY: a producer moves `T` into the batcher and `R` out through tickets;
// it is `Send` when both are. The shared state is `Sync` for `T, R: Send`.
unsafe impl<T: Send, R: Send> Send for Producer<T, R> {}

impl<T, R> Drop for Producer<T, R> {
    fn drop(&mut self) {
        if self.plain_claims && self.lane_ref().ring.disown() {
            // A park announced in the flags word only: the drainer's next
            // one goes to the tail word, where shared producers look.
            self.shared.unpark_drainer();
        }
        self.lane_ref().leave(self.owner);
        if self.owner {
            // Relaxed: a counter (see `new_exclusive_producer`).
            self.shared.exclusive_lanes.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<T, R> Producer<T, R> {
    /// A shared producer on ring `ring` (see the `lane` field), or `None` if
    /// an exclusive producer owns it.
    fn join(shared: &Arc<Shared<T, R>>, ring: usize) -> Option<Self> {
        shared.lanes[ring]
            .join()
            .then(|| Self::on_ring(Arc::clone(shared), ring, false))
    }

    /// The exclusive producer of ring `ring`, which the caller has taken.
    /// It claims with plain stores where the asymmetric fences work and the
    /// ring allows it (see [`Ring::own`]), else with the CAS.
    fn owner(shared: Arc<Shared<T, R>>, ring: usize) -> Self {
        let owned = crate::sync::asymmetric::available() && shared.lanes[ring].ring.own();
        if owned {
            // A park announced before the mark was seen ends now; the next
            // one goes where this producer looks (see `Ring::own`).
            shared.unpark_drainer();
        }
        let mut producer = Self::on_ring(shared, ring, true);
        producer.plain_claims = owned;
        producer
    }

    /// A producer publishing into ring `lane` (see the field), already
    /// counted on it.
    fn on_ring(shared: Arc<Shared<T, R>>, lane: usize, owner: bool) -> Self {
        Self {
            cached_head: Cell::new(0),
            // Spread producers over the completion slots (Fibonacci hashing
            // of a producer count), so that producers of one lane rarely
            // scan the same slots. Relaxed: any value works, it is a hint.
            next_slot: Cell::new(
                shared
                    .producers_made
                    .fetch_add(1, Ordering::Relaxed)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    >> 40,
            ),
            lane_ptr: core::ptr::NonNull::from(&shared.lanes[lane]),
            shared,
            lane,
            owner,
            plain_claims: false,
            _not_sync: PhantomData,
        }
    }

    /// Whether this producer owns its lane (made by
    /// [`Batcher::exclusive_producer`]).
    pub fn is_exclusive(&self) -> bool {
        self.owner
    }

    /// The lane this producer is bound to.
    pub fn lane(&self) -> usize {
        self.lane % self.shared.lane_count
    }

    /// The priority class this producer submits in (`Normal` without
    /// priority classes).
    pub fn priority(&self) -> Priority {
        if self.shared.classes == 1 {
            Priority::Normal
        } else {
            Priority::ALL[self.lane / self.shared.lane_count]
        }
    }

    /// A producer on the same lane in class `priority` (a shared one).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] (field `priorities`) if the batcher has no
    /// priority classes and `priority` is not `Normal`;
    /// [`ConfigError::LaneTaken`] if that lane's ring in that class is owned
    /// by an exclusive producer.
    pub fn with_class(&self, priority: Priority) -> Result<Producer<T, R>, ConfigError> {
        let shared = &self.shared;
        let ring = if shared.classes == 1 {
            if priority != Priority::Normal {
                return Err(ConfigError::Invalid {
                    field: "priorities",
                    reason: "the batcher was built without priority classes",
                });
            }
            self.lane
        } else {
            priority.index() * shared.lane_count + self.lane()
        };
        Self::join(shared, ring).ok_or(ConfigError::LaneTaken { lane: self.lane() })
    }

    /// Stamps sequence `seq`'s expiry before it is published, when the
    /// batcher keeps expiry stamps (deadlines or a maximum age); nothing
    /// otherwise.
    #[inline(always)]
    fn stamp_expiry(&self, seq: usize, explicit: u64) {
        if let Some(expiry) = &self.lane_ref().expiry {
            expiry.stamp(seq, explicit);
        }
    }

    /// `deadline` as an expiry stamp, if the batcher keeps expiry stamps.
    pub(crate) fn expiry_of(&self, deadline: Instant) -> Option<u64> {
        self.lane_ref()
            .expiry
            .as_ref()
            .map(|expiry| expiry.deadline_ns(deadline))
    }

    /// Publishes a fire-and-forget item at the claimed `seq`.
    ///
    /// # Safety
    ///
    /// `seq` was claimed by this producer and is published once.
    #[inline(always)]
    unsafe fn publish_plain(&self, seq: usize, item: T) {
        self.stamp_expiry(seq, NEVER);
        // SAFETY: the caller's contract.
        unsafe {
            self.lane_ref()
                .ring
                .publish(seq, item, None, self.plain_claims)
        };
    }

    /// Whether the batcher has been shut down (after which every submission
    /// returns [`SubmitError::Closed`]).
    pub fn is_closed(&self) -> bool {
        self.lane_ref().ring.is_closed()
    }

    #[inline(always)]
    fn lane_ref(&self) -> &Lane<T> {
        // SAFETY: `lane_ptr` points into `shared.lanes`, a boxed slice that
        // is never reallocated and lives as long as `shared`, which we hold.
        unsafe { self.lane_ptr.as_ref() }
    }

    /// One claim attempt of `n` ring slots.
    #[inline(always)]
    fn try_claim(&self, n: usize) -> Result<Claim, ClaimError> {
        let mut head = self.cached_head.get();
        let ring = &self.lane_ref().ring;
        let result = if self.plain_claims {
            // SAFETY: this producer owns the ring (`Lane::take`), so no other
            // thread claims on it, and `Ring::own` accepted it.
            unsafe { ring.try_claim_exclusive(n, &mut head) }
        } else {
            ring.try_claim(n, &mut head)
        };
        self.cached_head.set(head);
        result
    }

    /// Claims `n` ring slots, waiting as `wait` says.
    #[inline(always)]
    fn claim(&self, n: usize, wait: Wait) -> Result<Claim, RefusedKind> {
        match self.try_claim(n) {
            Ok(claim) => Ok(claim),
            Err(ClaimError::Closed) => Err(RefusedKind::Closed),
            Err(ClaimError::Full) => match self.blocks(wait) {
                None => self.claim_or_evict(n, wait),
                Some(deadline) => self.claim_slow(n, deadline),
            },
        }
    }

    /// The lane is full and `wait` does not wait: evicts under `DropOldest`,
    /// else refuses.
    #[cold]
    #[inline(never)]
    fn claim_or_evict(&self, n: usize, wait: Wait) -> Result<Claim, RefusedKind> {
        if self.evicts(wait) {
            self.claim_evicting(n).map_err(|_| RefusedKind::Closed)
        } else {
            Err(RefusedKind::Full)
        }
    }

    /// Whether a submission with `wait` evicts the oldest items of a full
    /// lane (`DropOldest`; explicit waits and `try_` calls do not).
    #[inline(always)]
    fn evicts(&self, wait: Wait) -> bool {
        matches!(wait, Wait::Policy) && self.shared.config.backpressure == Backpressure::DropOldest
    }

    /// One claim attempt of `n` ring slots that, under `DropOldest`, evicts
    /// from a full lane (the async submissions' attempt).
    #[inline(always)]
    fn try_claim_or_evict(&self, n: usize) -> Result<Claim, ClaimError> {
        match self.try_claim(n) {
            Err(ClaimError::Full) if self.evicts(Wait::Policy) => self.claim_evicting(n),
            result => result,
        }
    }

    /// `DropOldest`, the lane is full: evicts its oldest items until a claim
    /// of `n` slots succeeds (or the lane closes).
    #[cold]
    #[inline(never)]
    fn claim_evicting(&self, n: usize) -> Result<Claim, ClaimError> {
        let ring = &self.lane_ref().ring;
        let mut backoff = crate::wait::Backoff::new(WaitStrategy::Yield);
        loop {
            match ring.evict_oldest(n) {
                Evicted::Item(item, ticket) => {
                    backoff.reset();
                    self.evicted(item, ticket);
                }
                Evicted::Skip | Evicted::Room => backoff.reset(),
                // The oldest slot's producer is still publishing, or another
                // consumer took it first.
                Evicted::Busy => {
                    backoff.snooze();
                }
            }
            match self.try_claim(n) {
                Err(ClaimError::Full) => {}
                result => return result,
            }
        }
    }

    /// An item this producer evicted: counts it, fails its ticket with
    /// `Dropped`, and hands it to the spill callback.
    #[cold]
    fn evicted(&self, item: T, ticket: Option<usize>) {
        let counters = &self.lane_ref().counters;
        LaneCounters::add(&counters.evicted, 1);
        LaneCounters::add(&counters.dropped, 1);
        if let Some(index) = ticket {
            deliver(&self.shared.table, self.lane, index, Err(Error::Dropped));
        }
        self.spill(item);
    }

    /// An item a drop policy discards: to the spill callback, if any, else
    /// dropped. Either runs user code on this producer's thread: a panic
    /// is contained and counted, so that the submission still returns (its
    /// item is the new one, accepted or dropped as the policy says).
    #[cold]
    fn spill(&self, item: T) {
        let panics = &self.shared.panics;
        match &self.shared.spill {
            Some(spill) => {
                if crate::contain::call(|| spill(item)).is_err() {
                    panics.callback();
                }
            }
            None => {
                if !crate::contain::drop_value(item) {
                    panics.drops(1);
                }
            }
        }
    }

    /// The new item is dropped (`DropNewest`, or `DropOldest` without a free
    /// completion slot): counts it and spills it.
    #[cold]
    fn drop_new(&self, item: T) {
        self.count_dropped(1);
        self.spill(item);
    }

    /// Whether a submission with `wait` waits for room, and until when.
    #[inline(always)]
    fn blocks(&self, wait: Wait) -> Option<Option<Instant>> {
        match wait {
            Wait::Never => None,
            Wait::Policy => match self.shared.config.backpressure {
                Backpressure::Block => Some(None),
                Backpressure::Reject | Backpressure::DropNewest | Backpressure::DropOldest => None,
            },
            Wait::Block(deadline) => Some(deadline),
        }
    }

    /// The lane is full: wait for room by the wait strategy.
    #[cold]
    #[inline(never)]
    fn claim_slow(&self, n: usize, deadline: Option<Instant>) -> Result<Claim, RefusedKind> {
        if self.shared.called_back() {
            // Room comes from the drainer, which waits for this handler.
            return Err(RefusedKind::Full);
        }
        let ring = &self.lane_ref().ring;
        retry_until_room(
            self.shared.config.wait,
            &self.shared.table.lane(self.lane).notifier,
            deadline,
            || self.try_claim(n),
            // Under the notifier's lock: flag the head word so that the
            // drainer's next run notifies (false if there is room already).
            || ring.arm_room_waiter(n),
        )
    }

    /// Takes `out.len()` completion slots for tickets, then claims as many
    /// ring slots, waiting for either as `wait` says. On success the slots'
    /// indexes are in `out`; on failure none is held.
    #[inline(always)]
    fn claim_ticketed(&self, out: &mut [usize], wait: Wait) -> Result<Claim, RefusedKind> {
        let slots = self.shared.table.lane(self.lane);
        let mut cursor = self.next_slot.get();
        let acquired = slots.try_acquire(&mut cursor, out);
        self.next_slot.set(cursor);
        if !acquired {
            match self.blocks(wait) {
                None => return Err(RefusedKind::Full),
                Some(deadline) => self.acquire_slow(out, deadline)?,
            }
        }
        self.claim(out.len(), wait).inspect_err(|_| {
            // SAFETY: taken above, nothing published with them, no tickets.
            unsafe { slots.release_unused(out) };
        })
    }

    /// Every completion slot of the lane is held by a ticket: wait until
    /// enough are freed.
    #[cold]
    #[inline(never)]
    fn acquire_slow(
        &self,
        out: &mut [usize],
        deadline: Option<Instant>,
    ) -> Result<(), RefusedKind> {
        if self.shared.called_back() {
            // Slots come back when results do, from the drainer, which
            // waits for this handler.
            return Err(RefusedKind::Full);
        }
        let ring = &self.lane_ref().ring;
        let slots = self.shared.table.lane(self.lane);
        retry_until_room(
            self.shared.config.wait,
            &slots.notifier,
            deadline,
            || {
                if ring.is_closed() {
                    return Err(ClaimError::Closed);
                }
                let mut cursor = self.next_slot.get();
                let acquired = slots.try_acquire(&mut cursor, out);
                self.next_slot.set(cursor);
                if acquired {
                    Ok(())
                } else {
                    Err(ClaimError::Full)
                }
            },
            // Under the notifier's lock: flag the held slots so that the
            // next one freed notifies (false if one is free, or the lane
            // closed, whose closer notifies after closing).
            || !ring.is_closed() && slots.arm_waiter(),
        )
    }

    /// Counts a refusal and builds the error.
    #[cold]
    fn refuse(&self, kind: RefusedKind, n: u64) -> RefusedKind {
        let counters = &self.lane_ref().counters;
        match kind {
            RefusedKind::Full | RefusedKind::Timeout => LaneCounters::add(&counters.rejected, n),
            RefusedKind::Closed => LaneCounters::add(&counters.refused_closed, n),
            RefusedKind::NoDeadlines => {}
        }
        kind
    }

    /// Whether a full lane drops the new item instead of refusing it (under
    /// `DropOldest` a full ring evicts instead, so only a lane without a free
    /// completion slot gets here).
    #[inline(always)]
    fn drops_when_full(&self, kind: RefusedKind, wait: Wait) -> bool {
        kind == RefusedKind::Full
            && matches!(wait, Wait::Policy)
            && matches!(
                self.shared.config.backpressure,
                Backpressure::DropNewest | Backpressure::DropOldest
            )
    }

    #[cold]
    fn count_dropped(&self, n: u64) {
        LaneCounters::add(&self.lane_ref().counters.dropped, n);
    }

    #[inline(always)]
    fn push_with(&self, item: T, wait: Wait) -> Result<(), SubmitError<T>> {
        match self.claim(1, wait) {
            Ok(claim) => {
                // SAFETY: we claimed `claim.seq` and publish it once.
                unsafe { self.publish_plain(claim.seq, item) };
                if claim.wake_drainer {
                    self.shared.unpark_drainer();
                }
                Ok(())
            }
            Err(kind) if self.drops_when_full(kind, wait) => {
                self.drop_new(item);
                Ok(())
            }
            Err(kind) => Err(refused(self.refuse(kind, 1), item)),
        }
    }

    #[inline(always)]
    fn submit_with(&self, item: T, wait: Wait) -> Result<Ticket<R>, SubmitError<T>> {
        self.submit_expiring(item, wait, NEVER)
    }

    /// A submission with a ticket whose item expires at `expires` (ns since
    /// the batcher's epoch; [`NEVER`] for none).
    #[inline(always)]
    fn submit_expiring(
        &self,
        item: T,
        wait: Wait,
        expires: u64,
    ) -> Result<Ticket<R>, SubmitError<T>> {
        let item = match self.try_direct(item, expires) {
            Ok(ticket) => return Ok(ticket),
            Err(item) => item,
        };
        let mut index = [0usize; 1];
        match self.claim_ticketed(&mut index, wait) {
            Ok(claim) => {
                // SAFETY: we claimed `claim.seq` and armed completion slot
                // `index[0]`; both are used once, here.
                let ticket =
                    unsafe { self.publish_ticketed_expiring(claim.seq, index[0], item, expires) };
                if claim.wake_drainer {
                    // (`inline_when_idle`: may run the batch right here.)
                    self.shared.wake_for_ticket();
                }
                Ok(ticket)
            }
            Err(kind) if self.drops_when_full(kind, wait) => {
                self.drop_new(item);
                Ok(Ticket::ready(Err(Error::Dropped)))
            }
            Err(kind) => Err(refused(self.refuse(kind, 1), item)),
        }
    }

    /// `inline_when_idle`'s direct path: if the drainer sleeps (its park
    /// announcement is still on this lane), its state is free at once and
    /// nothing submitted before on this lane waits, handles `item` on this
    /// thread as a batch of one and returns a ticket that holds the result.
    /// Otherwise gives the item back for the path through the lane. Items
    /// with an expiry take the lane.
    #[inline(always)]
    pub(crate) fn try_direct(&self, item: T, expires: u64) -> Result<Ticket<R>, T> {
        self.try_direct_result(item, expires).map(Ticket::ready)
    }

    /// [`try_direct`](Self::try_direct), returning the result itself.
    #[inline(always)]
    pub(crate) fn try_direct_result(&self, item: T, expires: u64) -> Result<Result<R, Error>, T> {
        match &self.shared.inline {
            Some(Inline {
                cell,
                direct: Some(direct),
                ..
            }) if expires == NEVER && self.lane_ref().ring.looks_parked(self.plain_claims) => {
                direct(cell, self.lane, item)
            }
            _ => Err(item),
        }
    }

    /// Publishes `item` at the claimed `seq` with the armed completion slot
    /// `index`, and returns its ticket. The caller wakes the drainer if its
    /// claim asked for it.
    ///
    /// # Safety
    ///
    /// `seq` was claimed and completion slot `index` armed by this producer;
    /// each is used once, here.
    #[inline(always)]
    unsafe fn publish_ticketed_at(&self, seq: usize, index: usize, item: T) -> Ticket<R> {
        // SAFETY: the caller's contract.
        unsafe { self.publish_ticketed_expiring(seq, index, item, NEVER) }
    }

    /// [`publish_ticketed_at`](Self::publish_ticketed_at) with an explicit
    /// expiry (nanoseconds since the batcher's epoch).
    ///
    /// # Safety
    ///
    /// As for `publish_ticketed_at`.
    #[inline(always)]
    unsafe fn publish_ticketed_expiring(
        &self,
        seq: usize,
        index: usize,
        item: T,
        expires: u64,
    ) -> Ticket<R> {
        self.stamp_expiry(seq, expires);
        // SAFETY: the caller's contract; the slot was armed before the
        // stamp's Release store in `publish`, which carries it to the drainer.
        unsafe {
            self.lane_ref()
                .ring
                .publish(seq, item, Some(index), self.plain_claims);
            self.shared.table.ticket(self.lane, index, seq)
        }
    }

    /// Submits `item` fire-and-forget, following the batcher's
    /// [`Backpressure`] policy when the lane is full.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Closed`] after shutdown; [`SubmitError::Full`] under
    /// [`Backpressure::Reject`]. Under `DropNewest` a full lane drops the item
    /// (counted) and returns `Ok`; under `DropOldest` it evicts the oldest
    /// queued item (counted) and accepts this one.
    #[inline]
    pub fn push(&self, item: T) -> Result<(), SubmitError<T>> {
        self.push_with(item, Wait::Policy)
    }

    /// Submits `item` fire-and-forget if there is room now; never waits.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] or [`SubmitError::Closed`], with the item.
    #[inline]
    pub fn try_push(&self, item: T) -> Result<(), SubmitError<T>> {
        self.push_with(item, Wait::Never)
    }

    /// Submits `item` fire-and-forget, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Timeout`] or [`SubmitError::Closed`], with the item.
    pub fn push_timeout(&self, item: T, timeout: Duration) -> Result<(), SubmitError<T>> {
        self.push_with(item, deadline(timeout))
    }

    /// Submits `item` and returns a [`Ticket`] for its result, following the
    /// batcher's [`Backpressure`] policy when the lane is full.
    ///
    /// # Errors
    ///
    /// As for [`push`](Self::push); under `DropNewest` the ticket resolves to
    /// [`Error::Dropped`] (as does an evicted item's, under `DropOldest`).
    #[inline]
    pub fn submit(&self, item: T) -> Result<Ticket<R>, SubmitError<T>> {
        self.submit_with(item, Wait::Policy)
    }

    /// Submits `item` with a ticket if there is room now; never waits.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] or [`SubmitError::Closed`], with the item.
    #[inline]
    pub fn try_submit(&self, item: T) -> Result<Ticket<R>, SubmitError<T>> {
        self.submit_with(item, Wait::Never)
    }

    /// Submits `item` with a ticket, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Timeout`] or [`SubmitError::Closed`], with the item.
    pub fn submit_timeout(&self, item: T, timeout: Duration) -> Result<Ticket<R>, SubmitError<T>> {
        self.submit_with(item, deadline(timeout))
    }

    /// Submits `item` with a ticket that must be dispatched before
    /// `deadline`: if it is still waiting in the lane or the drainer's
    /// staging area then, it never reaches the handler and its ticket fails
    /// with [`Error::Expired`] (counted in [`Stats::expired`]). Follows the
    /// [`Backpressure`] policy while the lane is full. A batcher-wide
    /// `max_age` applies too; the earlier limit wins.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ringbatch::{Batch, Batcher, Error};
    ///
    /// let batcher = Batcher::builder()
    ///     .deadlines(true)
    ///     .handler_fn(|batch: &mut Batch<'_, u32, u32>| {
    ///         batch.ok_with(|x| *x);
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let producer = batcher.producer();
    /// let late = producer.submit_with_deadline(1, Instant::now()).unwrap();
    /// assert!(matches!(late.wait(), Err(Error::Expired)));
    /// let fresh = Instant::now() + Duration::from_secs(60);
    /// assert_eq!(producer.submit_with_deadline(2, fresh).unwrap().wait().unwrap(), 2);
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`submit`](Self::submit), and [`SubmitError::NoDeadlines`] if
    /// the batcher was built without [`deadlines`](BatcherBuilder::deadlines)
    /// or `max_age`.
    pub fn submit_with_deadline(
        &self,
        item: T,
        deadline: Instant,
    ) -> Result<Ticket<R>, SubmitError<T>> {
        let Some(expiry) = &self.lane_ref().expiry else {
            return Err(SubmitError::NoDeadlines(item));
        };
        let expires = expiry.deadline_ns(deadline);
        self.submit_expiring(item, Wait::Policy, expires)
    }

    /// Submits clones of `items` fire-and-forget, in order, claiming slots for
    /// up to a lane's capacity of them with one cursor move.
    ///
    /// # Errors
    ///
    /// A [`SliceError`] saying how many leading items were accepted and why
    /// the rest were not. Under `DropNewest`, items that do not fit are
    /// dropped and counted instead; under `DropOldest` the lane's oldest
    /// items are evicted to make room.
    pub fn push_slice(&self, items: &[T]) -> Result<(), SliceError>
    where
        T: Clone,
    {
        self.slice_with(items, None)
    }

    /// Submits clones of `items` in order, claiming slots for up to a lane's
    /// capacity of them with one cursor move, and appends one ticket per
    /// accepted item to `tickets`.
    ///
    /// # Errors
    ///
    /// As for [`push_slice`](Self::push_slice); a dropped item's ticket
    /// resolves to [`Error::Dropped`].
    pub fn submit_many(&self, items: &[T], tickets: &mut Vec<Ticket<R>>) -> Result<(), SliceError>
    where
        T: Clone,
    {
        self.slice_with(items, Some(tickets))
    }

    fn slice_with(
        &self,
        items: &[T],
        mut tickets: Option<&mut Vec<Ticket<R>>>,
    ) -> Result<(), SliceError>
    where
        T: Clone,
    {
        // A claim covers up to a lane's capacity; with tickets, also at most
        // `TICKET_CHUNK` (their completion slot indexes are kept on the
        // stack) and the lane's completion slot count.
        let capacity = self.shared.config.capacity;
        let chunk_size = match tickets {
            None => capacity,
            Some(_) => TICKET_CHUNK
                .min(capacity)
                .min(self.shared.table.lane(self.lane).len()),
        };
        let mut indexes = [0usize; TICKET_CHUNK];
        let mut accepted = 0;
        for chunk in items.chunks(chunk_size) {
            let n = chunk.len();
            if let Some(tickets) = tickets.as_deref_mut() {
                // Reserve before claiming, so nothing can fail between arming
                // a slot and handing out its ticket.
                tickets.reserve(n);
            }
            let claimed = match tickets {
                None => self.claim(n, Wait::Policy),
                Some(_) => self.claim_ticketed(&mut indexes[..n], Wait::Policy),
            };
            match claimed {
                Ok(claim) => {
                    let indexes = tickets.as_ref().map(|_| &indexes[..n]);
                    self.fill(claim, chunk, indexes, tickets.as_deref_mut());
                    accepted += n;
                }
                Err(kind) if self.drops_when_full(kind, Wait::Policy) => {
                    let rest = items.len() - accepted;
                    self.count_dropped(rest as u64);
                    if self.shared.spill.is_some() {
                        items[accepted..]
                            .iter()
                            .for_each(|item| self.spill(item.clone()));
                    }
                    if let Some(tickets) = tickets.as_deref_mut() {
                        tickets.extend((0..rest).map(|_| Ticket::ready(Err(Error::Dropped))));
                    }
                    return Ok(());
                }
                Err(kind) => {
                    let rest = (items.len() - accepted) as u64;
                    return Err(SliceError {
                        accepted,
                        kind: self.refuse(kind, rest),
                    });
                }
            }
        }
        Ok(())
    }

    /// Fills the claimed run with clones of `chunk` (with tickets when
    /// `indexes` holds the armed completion slots, one per item). If a clone
    /// panics, the rest of the run is published empty and its completion
    /// slots given back, so that the lane is not blocked.
    fn fill(
        &self,
        claim: Claim,
        chunk: &[T],
        indexes: Option<&[usize]>,
        mut tickets: Option<&mut Vec<Ticket<R>>>,
    ) where
        T: Clone,
    {
        struct Guard<'a, T, R> {
            producer: &'a Producer<T, R>,
            next: usize,
            end: usize,
            /// Completion slots armed for the items not yet published.
            unused: &'a [usize],
            wake: bool,
        }
        impl<T, R> Drop for Guard<'_, T, R> {
            fn drop(&mut self) {
                let lane = self.producer.lane_ref();
                let skipped = distance(self.next, self.end);
                if skipped > 0 {
                    LaneCounters::add(&lane.counters.skipped, skipped as u64);
                }
                while self.next != self.end {
                    // SAFETY: the run `next..end` is claimed by us and not yet
                    // published.
                    unsafe {
                        lane.ring
                            .publish_skip(self.next, self.producer.plain_claims)
                    };
                    self.next = crate::ring::seq_add(self.next, 1);
                }
                let slots = self.producer.shared.table.lane(self.producer.lane);
                // SAFETY: armed by us for items that were never published.
                unsafe { slots.release_unused(self.unused) };
                if self.wake {
                    self.producer.shared.unpark_drainer();
                }
            }
        }
        let mut guard = Guard {
            producer: self,
            next: claim.seq,
            end: crate::ring::seq_add(claim.seq, chunk.len()),
            unused: indexes.unwrap_or(&[]),
            wake: claim.wake_drainer,
        };
        for item in chunk {
            let value = item.clone();
            let seq = guard.next;
            match (tickets.as_deref_mut(), guard.unused.split_first()) {
                (Some(tickets), Some((&index, rest))) => {
                    // SAFETY: `seq` is claimed and completion slot `index`
                    // armed by us, each used once; `tickets` has room
                    // reserved, so the push cannot fail after publishing.
                    tickets.push(unsafe { self.publish_ticketed_at(seq, index, value) });
                    guard.unused = rest;
                }
                // SAFETY: `seq` is claimed and published once.
                _ => unsafe { self.publish_plain(seq, value) },
            }
            guard.next = crate::ring::seq_add(seq, 1);
        }
        // Dropping the guard wakes the drainer if it asked to be.
    }
}

/// What stopped a submission attempt that does not wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blocked {
    /// The lane's ring is full.
    Ring,
    /// Every completion slot of the lane is held by a ticket.
    Slots,
    /// The batcher is closed.
    Closed,
}

/// The task side: submissions that wait for room by returning `Pending` and
/// storing the task's waker with the lane's notifier, never by blocking the
/// thread. Each poll either accepts the item (claim and publish happen within
/// the poll) or leaves it with the caller, so a future dropped while pending
/// leaves nothing in the lane.
impl<T, R> Producer<T, R> {
    /// One fire-and-forget attempt, never waiting.
    fn attempt_push(&self, item: T) -> Result<(), (T, Blocked)> {
        match self.try_claim_or_evict(1) {
            Ok(claim) => {
                // SAFETY: we claimed `claim.seq` and publish it once.
                unsafe { self.publish_plain(claim.seq, item) };
                if claim.wake_drainer {
                    self.shared.unpark_drainer();
                }
                Ok(())
            }
            Err(ClaimError::Closed) => Err((item, Blocked::Closed)),
            Err(ClaimError::Full) => Err((item, Blocked::Ring)),
        }
    }

    /// One attempt with a ticket, never waiting; holds no completion slot
    /// when it fails.
    fn attempt_submit(&self, item: T, expires: u64) -> Result<Ticket<R>, (T, Blocked)> {
        let item = match self.try_direct(item, expires) {
            Ok(ticket) => return Ok(ticket),
            Err(item) => item,
        };
        let ring = &self.lane_ref().ring;
        let slots = self.shared.table.lane(self.lane);
        let mut index = [0usize; 1];
        let mut cursor = self.next_slot.get();
        let acquired = slots.try_acquire(&mut cursor, &mut index);
        self.next_slot.set(cursor);
        if !acquired {
            let blocked = if ring.is_closed() {
                Blocked::Closed
            } else {
                Blocked::Slots
            };
            return Err((item, blocked));
        }
        match self.try_claim_or_evict(1) {
            Ok(claim) => {
                // SAFETY: we claimed `claim.seq` and armed slot `index[0]`;
                // both are used once, here.
                let ticket =
                    unsafe { self.publish_ticketed_expiring(claim.seq, index[0], item, expires) };
                if claim.wake_drainer {
                    // (`inline_when_idle`: may run the batch right here.)
                    self.shared.wake_for_ticket();
                }
                Ok(ticket)
            }
            Err(error) => {
                // SAFETY: armed above, nothing published with it, no ticket.
                unsafe { slots.release_unused(&index) };
                let blocked = match error {
                    ClaimError::Closed => Blocked::Closed,
                    ClaimError::Full => Blocked::Ring,
                };
                Err((item, blocked))
            }
        }
    }

    /// Registers the task to be woken when what `blocked` names may have
    /// changed; `Ready` means "retry now" (it changed while arming).
    fn poll_room(&self, blocked: Blocked, cx: &mut Context<'_>) -> Poll<()> {
        let ring = &self.lane_ref().ring;
        let slots = self.shared.table.lane(self.lane);
        match blocked {
            // Under the notifier's lock, as in `claim_slow`.
            Blocked::Ring => slots
                .notifier
                .poll_if_armed(cx.waker(), || ring.arm_room_waiter(1)),
            // As in `acquire_slow`.
            Blocked::Slots => slots
                .notifier
                .poll_if_armed(cx.waker(), || !ring.is_closed() && slots.arm_waiter()),
            Blocked::Closed => Poll::Ready(()),
        }
    }

    /// Polls a fire-and-forget submission of `item` (taken from the option
    /// when accepted or refused; left there while pending), following the
    /// backpressure policy with a task's wait for `Block`.
    pub(crate) fn poll_push(
        &self,
        item: &mut Option<T>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SubmitError<T>>> {
        loop {
            let value = item
                .take()
                .expect("a submission future polled after it finished");
            let (value, blocked) = match self.attempt_push(value) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(refused_with) => refused_with,
            };
            match self.policy_for(blocked) {
                Some(kind) if self.drops_when_full(kind, Wait::Policy) => {
                    self.drop_new(value);
                    return Poll::Ready(Ok(()));
                }
                Some(kind) => return Poll::Ready(Err(refused(self.refuse(kind, 1), value))),
                // Room comes from the drainer, which waits for this handler.
                None if self.shared.called_back() => {
                    let kind = self.refuse(RefusedKind::Full, 1);
                    return Poll::Ready(Err(refused(kind, value)));
                }
                None => {}
            }
            *item = Some(value);
            if self.poll_room(blocked, cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// Polls a submission with a ticket; as [`poll_push`](Self::poll_push).
    /// Under `DropNewest` a dropped item's ticket resolves to
    /// [`Error::Dropped`].
    pub(crate) fn poll_enqueue(
        &self,
        item: &mut Option<T>,
        expires: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Ticket<R>, SubmitError<T>>> {
        loop {
            let value = item
                .take()
                .expect("a submission future polled after it finished");
            let (value, blocked) = match self.attempt_submit(value, expires) {
                Ok(ticket) => return Poll::Ready(Ok(ticket)),
                Err(refused_with) => refused_with,
            };
            match self.policy_for(blocked) {
                Some(kind) if self.drops_when_full(kind, Wait::Policy) => {
                    self.drop_new(value);
                    return Poll::Ready(Ok(Ticket::ready(Err(Error::Dropped))));
                }
                Some(kind) => return Poll::Ready(Err(refused(self.refuse(kind, 1), value))),
                // Room comes from the drainer, which waits for this handler.
                None if self.shared.called_back() => {
                    let kind = self.refuse(RefusedKind::Full, 1);
                    return Poll::Ready(Err(refused(kind, value)));
                }
                None => {}
            }
            *item = Some(value);
            if self.poll_room(blocked, cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// `None` if the task should wait (`Block`), else the refusal.
    fn policy_for(&self, blocked: Blocked) -> Option<RefusedKind> {
        match blocked {
            Blocked::Closed => Some(RefusedKind::Closed),
            Blocked::Ring | Blocked::Slots => match self.shared.config.backpressure {
                Backpressure::Block => None,
                Backpressure::Reject | Backpressure::DropNewest | Backpressure::DropOldest => {
                    Some(RefusedKind::Full)
                }
            },
        }
    }
}

impl<T, R> fmt::Debug for Producer<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("lane", &self.lane)
            .finish_non_exhaustive()
    }
}

/// Waits for room until `timeout` from now (for ever if that is beyond
/// representable time).
fn deadline(timeout: Duration) -> Wait {
    Wait::Block(Instant::now().checked_add(timeout))
}

fn refused<T>(kind: RefusedKind, item: T) -> SubmitError<T> {
    match kind {
        RefusedKind::Full => SubmitError::Full(item),
        RefusedKind::Closed => SubmitError::Closed(item),
        RefusedKind::Timeout => SubmitError::Timeout(item),
        RefusedKind::NoDeadlines => SubmitError::NoDeadlines(item),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use core::mem::{offset_of, size_of};

    use super::Shared;

    /// The cache lines `[offset, offset + size)` touches.
    fn lines(offset: usize, size: usize) -> core::ops::Range<usize> {
        offset / 64..(offset + size).div_ceil(64)
    }

    fn disjoint(a: &core::ops::Range<usize>, b: &core::ops::Range<usize>) -> bool {
        a.end <= b.start || b.end <= a.start
    }

    /// No field the drainer or the async workers write shares a cache line
    /// with a field producers read (see `Shared`'s layout note). `Shared` is
    /// 128-byte aligned (it holds `CachePadded` fields), so offsets map to
    /// the same lines wherever the allocation lands.
    #[test]
    fn drainer_written_counters_do_not_share_lines_with_producer_reads() {
        type S = Shared<u64, u64>;
        assert_eq!(core::mem::align_of::<S>() % 64, 0);
        let read = [
            lines(offset_of!(S, lanes), size_of::<Box<[super::Lane<u64>]>>()),
            lines(
                offset_of!(S, table),
                size_of::<crate::completion::TableOwner<u64>>(),
            ),
            lines(offset_of!(S, config), size_of::<crate::config::Config>()),
        ];
        #[cfg_attr(not(feature = "tokio"), allow(unused_mut))]
        let mut written = vec![lines(
            offset_of!(S, counters),
            size_of::<crossbeam_utils::CachePadded<crate::stats::DrainerCounters>>(),
        )];
        #[cfg(feature = "tokio")]
        written.push(lines(
            offset_of!(S, pipeline),
            size_of::<crossbeam_utils::CachePadded<Option<crate::runtime::Pipeline<u64>>>>(),
        ));
        for w in &written {
            for r in &read {
                assert!(
                    disjoint(w, r),
                    "written lines {w:?} overlap producer-read lines {r:?}"
                );
            }
        }
    }
}
