//! [`BatcherBuilder`]: every setting, validated when the batcher is built.

use core::fmt;

use crate::config::{Backpressure, Config, LaneAssignment, ThreadRouting};
#[cfg(feature = "tokio")]
use crate::engine::Shared;
use crate::engine::Spill;
use crate::engine::threads::MakeHandler;
use crate::handler::{Batch, BatchError, FnHandler, Handler};
use crate::shape::Shaping;
#[cfg(feature = "tokio")]
use crate::sync::Arc;
use crate::wait::WaitStrategy;

/// Builds a [`Batcher`](crate::Batcher); every setting is checked by [`build`](Self::build).
pub struct BatcherBuilder<T, R> {
    pub(crate) config: Config,
    /// Whether `max_batch` was set (if not, it follows a smaller capacity).
    pub(crate) max_batch_set: bool,
    /// Whether `pool_size` was set (if not, it grows to fit `max_in_flight`).
    pub(crate) pool_size_set: bool,
    pub(crate) handler: Option<HandlerKind<T, R>>,
    #[cfg(feature = "tokio")]
    pub(crate) runtime: Option<tokio::runtime::Handle>,
    /// Run the drainer as a task on the runtime.
    #[cfg(feature = "tokio")]
    pub(crate) drain_on_runtime: bool,
    /// Batch shaping policies (all off by default).
    pub(crate) shaping: Shaping<T>,
    /// Record histograms.
    pub(crate) histograms: bool,
    /// The histograms' bucket bounds.
    pub(crate) buckets: crate::metrics::BucketBounds,
    /// Record into `metrics` crate handles registered at build.
    #[cfg(feature = "metrics")]
    pub(crate) facade: Option<crate::metrics_facade::FacadeSettings>,
    /// Retries, circuit breaker, dead letters (all off by default).
    pub(crate) failure: crate::failure::FailureSettings<T>,
    /// Receives the items a drop policy discards.
    pub(crate) spill: Option<Spill<T>>,
    /// A submitter that finds the drainer asleep runs the batch itself.
    pub(crate) inline_when_idle: bool,
    /// `handler_threads(n, ..)`: the `n` given.
    pub(crate) handler_threads: Option<usize>,
    /// `thread_routing`, if set.
    pub(crate) thread_routing: Option<ThreadRouting>,
    /// The first setting `with_config` could not apply; `build` reports it.
    #[cfg(feature = "serde")]
    pub(crate) refused: Option<crate::config::ConfigError>,
    /// (feature `durable`) The store's settings and the items' codec.
    #[cfg(feature = "durable")]
    pub(crate) durable: Option<(
        crate::durable::Durability,
        Box<dyn crate::durable::Codec<T>>,
    )>,
}

/// The handler given to the builder.
pub(crate) enum HandlerKind<T, R> {
    Sync(Box<dyn Handler<T, R>>),
    /// Starts the async workers for the batcher's shared state.
    #[cfg(feature = "tokio")]
    Async(StartWorkers<T, R>),
    /// Makes the handler of each handler thread.
    Threads(MakeHandler<T, R>),
}

/// Starts `n` async worker tasks for a batcher on a runtime.
#[cfg(feature = "tokio")]
pub(crate) type StartWorkers<T, R> =
    Box<dyn FnOnce(&Arc<Shared<T, R>>, usize, &tokio::runtime::Handle) + Send>;

impl<T: Send + 'static, R: Send + 'static> BatcherBuilder<T, R> {
    /// Number of lanes (default: one per core).
    #[must_use = "a builder does nothing until it is built"]
    pub fn lanes(mut self, lanes: usize) -> Self {
        self.config.lanes = Some(lanes);
        self
    }

    /// Lays out the last `n` lanes for exclusive producers (default 0), at
    /// most `lanes - 1`: one lane stays open to shared producers.
    ///
    /// [`Batcher::exclusive_producer`](crate::Batcher::exclusive_producer) takes these lanes first, and
    /// [`Batcher::producer`](crate::Batcher::producer) leaves them out of its lane assignment.
    ///
    /// For items of at most 16 bytes, such a lane keeps the items apart from
    /// the slots' stamps, and its owner also publishes through a cursor of
    /// its own: the drainer reads the owner's fire-and-forget items without
    /// their stamps, so it pulls half as many cache lines from the
    /// producer's core for `u64` items. Larger items sit beside their
    /// stamps as on every other lane (64-byte items ran at about half the
    /// rate apart from them). Shared producers still work on these lanes
    /// (through [`producer_on_lane`](crate::Batcher::producer_on_lane), or when
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
    #[must_use = "a builder does nothing until it is built"]
    pub fn exclusive_lanes(mut self, n: usize) -> Self {
        self.config.exclusive_lanes = n;
        self
    }

    /// Whether the drainer spins briefly (64 spin-loop hints) after a sweep
    /// that found fewer items than
    /// `max_batch` while items keep coming (default false): a throughput
    /// setting.
    ///
    /// A drainer that takes every item as soon as it is published reads the
    /// cache lines a streaming producer is still writing, and each line
    /// crosses between the two cores several times. Spinning between short
    /// runs lets runs build up, so that the drainer reads finished lines:
    /// with one exclusive producer on a lane laid out for it
    /// ([`exclusive_lanes`](Self::exclusive_lanes)), `u64` items moved at a
    /// markedly higher rate. The cost is latency at moderate rates: when
    /// every sweep finds a few items, a batch is dispatched only once it is
    /// full or a sweep finds nothing, so items wait for batches to fill
    /// (both measured in BENCHMARKS.md, run J). An item that arrives alone
    /// is not held. Applies to a drainer on its own thread (not with
    /// `drain_on_runtime`, feature `tokio`).
    #[must_use = "a builder does nothing until it is built"]
    pub fn spin_between_short_runs(mut self, spin: bool) -> Self {
        self.config.spin_between_short_runs = spin;
        self
    }

    /// Slots per lane, a power of two (default 1024).
    #[must_use = "a builder does nothing until it is built"]
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.config.capacity = capacity;
        self
    }

    /// Most items per batch, at most `capacity` (default 256, or the
    /// capacity if that is smaller).
    #[must_use = "a builder does nothing until it is built"]
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.config.max_batch = max_batch;
        self.max_batch_set = true;
        self
    }

    /// Batch buffers allocated at build time (default 2; with an async
    /// handler, `max_in_flight + 1` unless set).
    #[must_use = "a builder does nothing until it is built"]
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
    #[must_use = "a builder does nothing until it is built"]
    pub fn result_slots(mut self, slots: usize) -> Self {
        self.config.result_slots = Some(slots);
        self
    }

    /// How waiting threads wait (default [`WaitStrategy::Backoff`]).
    #[must_use = "a builder does nothing until it is built"]
    pub fn wait_strategy(mut self, wait: WaitStrategy) -> Self {
        self.config.wait = wait;
        self
    }

    /// What producers do when their lane is full (default [`Backpressure::Block`]).
    #[must_use = "a builder does nothing until it is built"]
    pub fn backpressure(mut self, backpressure: Backpressure) -> Self {
        self.config.backpressure = backpressure;
        self
    }

    /// Hands every item a drop policy discards to `spill` instead of
    /// dropping it: the new item [`Backpressure::DropNewest`] refuses, and
    /// the queued item [`Backpressure::DropOldest`] evicts (both still count
    /// in [`Stats::dropped`](crate::Stats::dropped), and their tickets still resolve to
    /// [`Error::Dropped`](crate::Error::Dropped)).
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
    #[must_use = "a builder does nothing until it is built"]
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
    /// result ([`Ticket::sequence`](crate::Ticket::sequence) is `None`); the stats count it as
    /// accepted on its lane and as a batch dispatched for
    /// [`DispatchReason::LanesIdle`](crate::DispatchReason::LanesIdle).
    /// Items with a deadline, and batchers with
    /// [`histograms`](Self::histograms) or failure policies
    /// ([`circuit_breaker`](Self::circuit_breaker),
    /// [`dead_letter`](Self::dead_letter)), always take the lane.
    ///
    /// Only [`submit`](crate::Producer::submit) and its variants (`try_submit`,
    /// `submit_timeout`, `submit_with_deadline`, and the async `submit` and
    /// `call`) run a turn, and only when the drainer is asleep and its
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
    #[must_use = "a builder does nothing until it is built"]
    pub fn inline_when_idle(mut self, inline: bool) -> Self {
        self.inline_when_idle = inline;
        self
    }

    /// Pins the drainer thread to core `core` (checked at build).
    #[must_use = "a builder does nothing until it is built"]
    pub fn pin_drainer(mut self, core: usize) -> Self {
        self.config.pin_drainer = Some(core);
        self
    }

    /// How producers pick lanes (default [`LaneAssignment::CurrentCore`]).
    #[must_use = "a builder does nothing until it is built"]
    pub fn lane_assignment(mut self, assignment: LaneAssignment) -> Self {
        self.config.lane_assignment = assignment;
        self
    }

    /// The drainer thread's name (default `ringbatch-drainer`).
    #[must_use = "a builder does nothing until it is built"]
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.config.thread_name = name.into();
        self
    }

    /// Replaces every setting of [`Config`] at once. A `max_batch` or
    /// `pool_size` left at its default follows the other settings as it
    /// does when never set (`max_batch` shrinks to a smaller capacity, the
    /// pool grows to fit `max_in_flight` and retries), so
    /// `.config(Config::default())` changes nothing.
    #[must_use = "a builder does nothing until it is built"]
    pub fn config(mut self, config: Config) -> Self {
        let defaults = Config::default();
        self.max_batch_set = config.max_batch != defaults.max_batch;
        self.pool_size_set = config.pool_size != defaults.pool_size;
        self.config = config;
        self
    }

    /// The sink, as a [`Handler`].
    #[must_use = "a builder does nothing until it is built"]
    pub fn handler(mut self, handler: impl Handler<T, R>) -> Self {
        self.handler = Some(HandlerKind::Sync(Box::new(handler)));
        self
    }

    /// The sink, as `n` blocking [`Handler`]s, each run on a thread of its
    /// own: up to `n` batches are handled at once (default: one handler,
    /// run by the drainer thread, one batch at a time).
    ///
    /// `make(i)` makes the handler of thread `i` (`0..n`), called `n` times
    /// by [`build`](Self::build). A handler takes `&mut self`, so each
    /// thread needs its own; a factory lets each one own what it should not
    /// share (a connection, a scratch buffer) without asking handlers to be
    /// `Clone`, and the index can pick a shard or name a connection. For a
    /// handler that is `Clone`: `handler_threads(n, move |_| handler.clone())`.
    ///
    /// The drainer thread assembles batches while the threads handle them
    /// and queues each full batch for a thread; when every buffer of the
    /// pool is in flight it waits for one to come back, and producers meet
    /// backpressure, as with an async handler's
    /// [`max_in_flight`](Self::max_in_flight). The pool grows to `n + 1`
    /// buffers unless [`pool_size`](Self::pool_size) is set (then it must be
    /// at least `n + 1`: [`ConfigError::PoolTooSmall`]). A flush or shutdown
    /// waits for every batch in flight; shutdown then joins the threads,
    /// dropping their handlers.
    ///
    /// Each batch runs on one thread, where everything the drainer does for
    /// a batch happens: the failure policies (a retry waits out its backoff
    /// on that thread, which takes no other batch meanwhile; a
    /// [`shutdown_timeout`](crate::Batcher::shutdown_timeout) deadline does
    /// not cut that wait short, as with async handlers), histograms, adaptive sizing,
    /// tracing spans. A handler's panic fails its batch's items
    /// ([`Error::HandlerPanicked`](crate::Error::HandlerPanicked)) and the
    /// thread goes on; a panic of `make` is `build`'s error.
    ///
    /// Ordering: within a batch, items keep their order (per producer, the
    /// order of submission). Across batches, none by default: with `n > 1`
    /// a later batch may run before an earlier one finishes, even of the
    /// same producer. [`thread_routing`](Self::thread_routing) with
    /// [`ThreadRouting::ByGroup`] keeps each key group on one thread, whose
    /// batches then run in dispatch order.
    ///
    /// `build` refuses `n == 0` or more than
    /// [`MAX_HANDLER_THREADS`](crate::MAX_HANDLER_THREADS), and
    /// combinations that cannot hold: with
    /// [`inline_when_idle`](Self::inline_when_idle), with `drain_on_runtime`,
    /// or when a single handler (`handler`, `async_handler`) was given after
    /// it (each a [`ConfigError::Invalid`] naming the field).
    ///
    /// ```
    /// use ringbatch::{Batch, BatchError, Batcher, Handler};
    ///
    /// /// Writes batches over a connection of its own (here, its name).
    /// struct Writer {
    ///     connection: String,
    /// }
    ///
    /// impl Handler<u64, usize> for Writer {
    ///     fn handle(&mut self, batch: &mut Batch<'_, u64, usize>) -> Result<(), BatchError> {
    ///         let written = self.connection.len();
    ///         batch.ok_with(|_| written);
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let batcher = Batcher::builder()
    ///     .lanes(2)
    ///     .handler_threads(4, |thread| Writer {
    ///         connection: format!("db-{thread}"),
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let producer = batcher.producer();
    /// assert_eq!(producer.submit(7).unwrap().wait().unwrap(), 4);
    /// assert_eq!(batcher.shutdown().items_handled, 1);
    /// ```
    ///
    /// [`ConfigError::PoolTooSmall`]: crate::ConfigError::PoolTooSmall
    /// [`ConfigError::Invalid`]: crate::ConfigError::Invalid
    #[must_use = "a builder does nothing until it is built"]
    pub fn handler_threads<H, F>(mut self, n: usize, mut make: F) -> Self
    where
        H: Handler<T, R>,
        F: FnMut(usize) -> H + Send + 'static,
    {
        self.handler_threads = Some(n);
        self.handler = Some(HandlerKind::Threads(Box::new(move |i| {
            Box::new(make(i)) as Box<dyn Handler<T, R>>
        })));
        self
    }

    /// [`handler_threads`](Self::handler_threads) with closures: `make(i)`
    /// returns the closure thread `i` calls with each batch.
    #[must_use = "a builder does nothing until it is built"]
    pub fn handler_threads_fn<F, M>(self, n: usize, mut make: M) -> Self
    where
        F: FnMut(&mut Batch<'_, T, R>) -> Result<(), BatchError> + Send + 'static,
        M: FnMut(usize) -> F + Send + 'static,
    {
        self.handler_threads(n, move |i| FnHandler(make(i)))
    }

    /// How [`handler_threads`](Self::handler_threads) spreads batches over
    /// its threads (default [`ThreadRouting::AnyFree`]: the first free
    /// thread, no order across batches). [`ThreadRouting::ByGroup`] sends
    /// every batch of a key group ([`group_by`](Self::group_by)) to one
    /// thread, so that the group's batches run one at a time, in dispatch
    /// order.
    ///
    /// ```
    /// use ringbatch::{Batch, Batcher, ThreadRouting};
    ///
    /// // Orders of one account are applied in order; accounts in parallel.
    /// let batcher = Batcher::builder()
    ///     .lanes(1)
    ///     .group_by(|order: &(u32, u64)| order.0)
    ///     .handler_threads_fn(2, |_| {
    ///         |batch: &mut Batch<'_, (u32, u64), ()>| {
    ///             batch.ok_with(|_| ());
    ///             Ok(())
    ///         }
    ///     })
    ///     .thread_routing(ThreadRouting::ByGroup)
    ///     .build()
    ///     .unwrap();
    /// let producer = batcher.producer();
    /// for seq in 0..100 {
    ///     producer.push((seq as u32 % 3, seq)).unwrap();
    /// }
    /// assert_eq!(batcher.shutdown().items_handled, 100);
    /// ```
    ///
    /// `build` refuses it without `handler_threads`, and `ByGroup` without
    /// `group_by` ([`ConfigError::Invalid`](crate::ConfigError::Invalid),
    /// field `"thread_routing"`).
    #[must_use = "a builder does nothing until it is built"]
    pub fn thread_routing(mut self, routing: ThreadRouting) -> Self {
        self.thread_routing = Some(routing);
        self
    }

    /// The sink, as an [`AsyncHandler`](crate::AsyncHandler) run on a tokio
    /// runtime, at most [`max_in_flight`](Self::max_in_flight) batches at
    /// once. The runtime is the one `build` is called in, or the one set
    /// with [`runtime`](Self::runtime).
    #[cfg(feature = "tokio")]
    #[must_use = "a builder does nothing until it is built"]
    pub fn async_handler(mut self, handler: impl crate::AsyncHandler<T, R>) -> Self {
        self.handler = Some(HandlerKind::Async(Box::new(
            move |shared, workers, runtime| {
                crate::engine::runtime::spawn_workers(shared, handler, workers, runtime);
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
    /// assert_eq!(batcher.async_producer().call(1).await.unwrap(), 2);
    /// # }
    /// ```
    #[cfg(feature = "tokio")]
    #[must_use = "a builder does nothing until it is built"]
    pub fn async_handler_fn<F, Fut>(self, f: F) -> Self
    where
        F: Fn(crate::AsyncBatch<T, R>) -> Fut + Send + Sync + 'static,
        Fut: core::future::Future<Output = Result<(), BatchError>> + Send,
    {
        self.async_handler(crate::engine::runtime::FnAsyncHandler(f))
    }

    /// Most batches an async handler runs at once (default 4). While they
    /// run, the drainer assembles the next batch; when every buffer is in
    /// flight it waits, and producers meet backpressure.
    #[must_use = "a builder does nothing until it is built"]
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
    #[must_use = "a builder does nothing until it is built"]
    pub fn drain_on_runtime(mut self, on_runtime: bool) -> Self {
        self.drain_on_runtime = on_runtime;
        self
    }

    /// The tokio runtime that runs an async handler's batches (default: the
    /// runtime `build` is called in).
    #[cfg(feature = "tokio")]
    #[must_use = "a builder does nothing until it is built"]
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Retries failed items under `policy` (see [`failure`](crate::failure)):
    /// the handler classifies each failure with [`Failure`](crate::Failure)
    /// or [`Batch::retry`](crate::Batch::retry).
    #[must_use = "a builder does nothing until it is built"]
    pub fn retry_policy(mut self, policy: crate::RetryPolicy) -> Self {
        self.failure.retry = Some(policy);
        self
    }

    /// A circuit breaker in front of the handler (see
    /// [`CircuitBreaker`](crate::CircuitBreaker)).
    #[must_use = "a builder does nothing until it is built"]
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
    #[must_use = "a builder does nothing until it is built"]
    pub fn dead_letter(
        mut self,
        handler: impl FnMut(crate::DeadLetter<T>) + Send + 'static,
    ) -> Self {
        self.failure.dead_letter = Some(Box::new(handler));
        self
    }

    /// Records histograms of batch size, queue wait, handler time and
    /// end-to-end time, read with [`Batcher::stats`](crate::Batcher::stats)
    /// as percentiles and as bucket counts (see [`metrics`](crate::metrics)).
    /// The drainer pays for them, once per batch plus a clock read per
    /// sweep; producers pay nothing. Off by default.
    #[must_use = "a builder does nothing until it is built"]
    pub fn histograms(mut self, on: bool) -> Self {
        self.histograms = on;
        self
    }

    /// The bucket bounds of the histograms (see [`BucketBounds`] for the
    /// defaults), used once [`histograms`](Self::histograms) is on. `build`
    /// checks them.
    ///
    /// [`BucketBounds`]: crate::metrics::BucketBounds
    #[must_use = "a builder does nothing until it is built"]
    pub fn histogram_buckets(mut self, bounds: crate::metrics::BucketBounds) -> Self {
        self.buckets = bounds;
        self
    }

    /// Records into [`metrics`](https://docs.rs/metrics) crate handles as
    /// the batcher runs: every series that
    /// [`Stats::export_metrics`](crate::Stats::export_metrics) writes, named
    /// `prefix_...`, each carrying `labels` (so that several batchers share
    /// one recorder), registered once by `build` with the recorder in scope
    /// then (the global one, or a local one around `build`).
    ///
    /// The drainer records per batch, and nothing runs at scrape time:
    ///
    /// - with [`histograms`](Self::histograms) on, `batch_size`,
    ///   `queue_wait_seconds`, `handler_seconds` and `end_to_end_seconds`
    ///   as `metrics` histograms (times in seconds), recorded once per
    ///   batch, the per-item times once per run of items dated alike;
    /// - the counters and gauges set to the batcher's own counts (the
    ///   values of [`Stats`](crate::Stats)), after every batch, at most
    ///   every 10 ms while full batches follow each other (reading every
    ///   lane's cursors per batch would cost the producers), and whenever
    ///   the drainer finds the lanes empty, finishes a flush or exits: after
    ///   [`flush`](crate::Batcher::flush) or `shutdown` they equal the
    ///   snapshot.
    ///
    /// A panic of the recorder is contained and counted in
    /// [`Stats::callback_panics`](crate::Stats::callback_panics). Use this
    /// or `export_metrics` for a prefix, not both: they write the same names,
    /// the histograms under different kinds.
    ///
    /// ```
    /// use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    /// use ringbatch::{Batch, Batcher};
    ///
    /// let recorder = DebuggingRecorder::new();
    /// let snapshotter = recorder.snapshotter();
    /// // Registered at build: the recorder must be in scope then (or global).
    /// let batcher = metrics::with_local_recorder(&recorder, || {
    ///     Batcher::builder()
    ///         .histograms(true)
    ///         .metrics("rb", &[("batcher", "orders")])
    ///         .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
    ///             batch.ok_with(|_| ());
    ///             Ok(())
    ///         })
    ///         .build()
    ///         .unwrap()
    /// });
    /// let producer = batcher.producer();
    /// for i in 0..100 {
    ///     producer.push(i).unwrap();
    /// }
    /// batcher.flush();
    /// let handled = snapshotter.snapshot().into_vec().into_iter().find_map(|(key, _, _, value)| {
    ///     (key.key().name() == "rb_items_handled_total").then_some(value)
    /// });
    /// assert_eq!(handled, Some(DebugValue::Counter(100)));
    /// ```
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    #[must_use = "a builder does nothing until it is built"]
    pub fn metrics(mut self, prefix: &str, labels: &[(&str, &str)]) -> Self {
        self.facade = Some(crate::metrics_facade::FacadeSettings {
            prefix: prefix.to_owned(),
            labels: labels
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        });
        self
    }

    /// The sink, as a closure called with each batch.
    #[must_use = "a builder does nothing until it is built"]
    pub fn handler_fn<F>(self, f: F) -> Self
    where
        F: FnMut(&mut Batch<'_, T, R>) -> Result<(), BatchError> + Send + 'static,
    {
        self.handler(FnHandler(f))
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
