//! The fire-and-forget throughput workload, one harness per system, shared by
//! `benches/peers.rs` (criterion) and `benches/scaling.rs` (plain timer).
//!
//! # The workload
//!
//! One *round* pushes [`ITEMS`] items, split evenly across `P` producers (the
//! first `ITEMS % P` push one more), into the system under test; one consumer
//! takes them out in batches of up to [`MAX_BATCH`], sums each batch into
//! [`black_box`] and adds the batch's length to a shared counter. A round ends when the counter reaches the
//! number of items pushed so far, so every timed round covers the last item's
//! hand-over to the consumer, not just the producers' side.
//!
//! # Threads
//!
//! [`with_system`] starts the system (its consumer thread, or ringbatch's
//! drainer) and `P` persistent producer threads once, then hands the caller a
//! `run(rounds) -> Duration` closure to time with. Producer threads make their
//! sending handle on their own thread (ringbatch: [`Batcher::producer`], which
//! binds the lane of the core the thread runs on), then sleep on a condition
//! variable between rounds, so idle producers take no CPU. `run` starts a
//! round, blocks until every producer has pushed its share, then waits
//! (spin, then yield) for the consumer's counter. When the caller returns,
//! the producers are told to stop and joined, their handles dropped, then the
//! system is stopped and its consumer joined; nothing is left running, and
//! the harness checks that the consumer saw every item.
//!
//! # The systems
//!
//! Queue capacity is [`CAPACITY`] for all; the consumer's batch limit is
//! [`MAX_BATCH`] wherever the system lets the consumer choose one.
//!
//! - `ringbatch`: a [`Batcher`] with `lanes(min(P, cores))`, capacity
//!   [`CAPACITY`], `max_batch` [`MAX_BATCH`], default wait strategy
//!   (`Backoff`: spin, yield, park) and backpressure (`Block`); the handler is
//!   the consumer. Producers call `push`.
//! - `array_queue`: a [`crossbeam_queue::ArrayQueue`]; the consumer pops up to
//!   [`MAX_BATCH`] items into a reused `Vec`. An idle consumer spins, yields,
//!   then parks for at most [`IDLE_PARK`] (the steps of ringbatch's `Backoff`);
//!   a producer finding the queue full snoozes with a crossbeam [`Backoff`]
//!   and unparks the consumer once the backoff is spent.
//! - `crossbeam_channel`, `flume`, `std_sync_channel`: a bounded channel
//!   (`bounded`, `bounded`, `sync_channel`); the consumer blocks in `recv`,
//!   then takes up to [`MAX_BATCH`] - 1 more with `try_recv`. Producers call
//!   the blocking `send`.
//! - `tokio_mpsc`: a bounded `tokio::sync::mpsc` channel; the consumer is a
//!   thread driving a current-thread runtime whose one task loops on
//!   `recv_many(.., MAX_BATCH)`. Producers (plain threads) call
//!   `blocking_send`.
//! - `disruptor`: the `disruptor` crate's multi-producer ring
//!   (`build_multi_producer`, `BusySpin` consumer); producers clone the
//!   `MultiProducer` and `publish` (which spins while the ring is full). The
//!   consumer is the crate's managed event-handler thread, which hands over
//!   every available event per batch (no [`MAX_BATCH`] limit) and spins at
//!   100% of a core while the bench function runs.
//! - `rtrb` (one producer only): the `rtrb` SPSC ring, the physical reference;
//!   the consumer reads chunks of up to [`MAX_BATCH`] with `read_chunk`, waits
//!   like `array_queue`'s, and the producer pushes item by item, backing off
//!   like `array_queue`'s.

use crate::rounds::{Rounds, wait_for_count};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::{Backoff, CachePadded};
use disruptor::ProcessorSettings as _;
use ringbatch::{Batch, Batcher};

/// Items pushed per round, split evenly across the producers.
pub const ITEMS: u64 = 1 << 18;
/// Queue capacity of every system (ringbatch: per lane).
pub const CAPACITY: usize = 4096;
/// Most items per consumer batch (ringbatch's `max_batch`).
pub const MAX_BATCH: usize = 256;
/// Longest an idle spin-based consumer parks before looking again.
pub const IDLE_PARK: Duration = Duration::from_millis(1);

/// An item type the workload can push: made from a counter, summed by the
/// consumer.
pub trait Item: Copy + Send + Sync + 'static {
    /// The `i`-th item a producer pushes.
    fn make(i: u64) -> Self;
    /// What the consumer adds up (every word of the item).
    fn sum(&self) -> u64;
}

impl Item for u64 {
    #[inline]
    fn make(i: u64) -> Self {
        i
    }
    #[inline]
    fn sum(&self) -> u64 {
        *self
    }
}

/// The consumer's work: sum a batch into [`black_box`].
#[inline]
pub fn consume<T: Item>(items: &[T]) {
    black_box(items.iter().fold(0u64, |acc, x| acc.wrapping_add(x.sum())));
}

/// Items the consumer has handled so far.
pub type Counter = Arc<CachePadded<AtomicU64>>;

/// Where the threads of a run may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Wherever the scheduler puts them.
    Free,
    /// The consumer (ringbatch's drainer, `disruptor`'s event handler) pinned
    /// to the first core this process may use, producer `i` to core
    /// `1 + i % (cores - 1)` of the rest: the consumer has a core to itself,
    /// as a latency-sensitive deployment arranges it. Needs two cores.
    Pinned,
}

impl Placement {
    /// The cores this process may run on, in order.
    fn cores() -> Vec<core_affinity::CoreId> {
        core_affinity::get_core_ids().unwrap_or_default()
    }

    /// The consumer's core, when pinned.
    pub fn consumer_core(self) -> Option<usize> {
        match self {
            Placement::Free => None,
            Placement::Pinned => {
                let cores = Self::cores();
                assert!(cores.len() >= 2, "pinned placement needs two cores");
                Some(cores[0].id)
            }
        }
    }

    /// Pins the calling thread as the consumer, when pinned.
    pub fn pin_consumer(self) {
        if let Some(id) = self.consumer_core() {
            assert!(
                core_affinity::set_for_current(core_affinity::CoreId { id }),
                "cannot pin the consumer to core {id}"
            );
        }
    }

    /// Pins the calling thread as producer `index`, when pinned.
    pub fn pin_producer(self, index: usize) {
        if self == Placement::Pinned {
            let cores = Self::cores();
            assert!(cores.len() >= 2, "pinned placement needs two cores");
            let core = cores[1 + index % (cores.len() - 1)];
            assert!(
                core_affinity::set_for_current(core),
                "cannot pin producer {index} to core {}",
                core.id
            );
        }
    }
}

/// One system under test.
pub trait System<T: Item>: Sync + Sized {
    /// A producer's sending handle, made on the producer's thread.
    type Tx;
    /// Starts the system and its consumer for `producers` producers, the
    /// consumer placed as `placement` says.
    fn start(producers: usize, consumed: Counter, placement: Placement) -> Self;
    /// A sending handle for the calling thread.
    fn sender(&self) -> Self::Tx;
    /// Pushes one item, waiting while the queue is full.
    fn send(tx: &mut Self::Tx, item: T);
    /// Called at the start of every round (wakes a parked spin consumer).
    fn wake(&self) {}
    /// Stops the consumer and joins every thread the system started; every
    /// sending handle has been dropped.
    fn stop(self);
}

/// The systems, by bench-function name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sys {
    Ringbatch,
    RingbatchExclusive,
    ArrayQueue,
    CrossbeamChannel,
    Disruptor,
    Flume,
    StdSyncChannel,
    TokioMpsc,
    Rtrb,
}

impl Sys {
    /// Every multi-producer system, ringbatch first.
    pub const MPSC: [Sys; 7] = [
        Sys::Ringbatch,
        Sys::ArrayQueue,
        Sys::CrossbeamChannel,
        Sys::Disruptor,
        Sys::Flume,
        Sys::StdSyncChannel,
        Sys::TokioMpsc,
    ];

    /// The bench-function name.
    pub fn name(self) -> &'static str {
        match self {
            Sys::Ringbatch => "ringbatch",
            Sys::RingbatchExclusive => "ringbatch_exclusive",
            Sys::ArrayQueue => "array_queue",
            Sys::CrossbeamChannel => "crossbeam_channel",
            Sys::Disruptor => "disruptor",
            Sys::Flume => "flume",
            Sys::StdSyncChannel => "std_sync_channel",
            Sys::TokioMpsc => "tokio_mpsc",
            Sys::Rtrb => "rtrb",
        }
    }

    /// The system named `name`, if any.
    #[allow(dead_code)] // used by scaling.rs only
    pub fn from_name(name: &str) -> Option<Sys> {
        Sys::MPSC
            .into_iter()
            .chain([Sys::RingbatchExclusive, Sys::Rtrb])
            .find(|s| s.name() == name)
    }

    /// Whether the system takes more than one producer.
    #[allow(dead_code)] // used by scaling.rs only
    pub fn multi_producer(self) -> bool {
        self != Sys::Rtrb
    }
}

/// Runs `body` with a `run(rounds)` closure for `system` with `producers`
/// producer threads placed as `placement` says; see [`with_system`].
pub fn with_throughput<T: Item, R>(
    system: Sys,
    producers: usize,
    placement: Placement,
    body: impl FnOnce(&mut dyn FnMut(u64) -> Duration) -> R,
) -> R {
    match system {
        Sys::Ringbatch => with_system::<T, Ringbatch<T>, R>(producers, placement, body),
        Sys::RingbatchExclusive => {
            with_system::<T, RingbatchExclusive<T>, R>(producers, placement, body)
        }
        Sys::ArrayQueue => with_system::<T, ArrayQueueSys<T>, R>(producers, placement, body),
        Sys::CrossbeamChannel => {
            with_system::<T, CrossbeamChannel<T>, R>(producers, placement, body)
        }
        Sys::Disruptor => with_system::<T, DisruptorSys<T>, R>(producers, placement, body),
        Sys::Flume => with_system::<T, Flume<T>, R>(producers, placement, body),
        Sys::StdSyncChannel => with_system::<T, StdSyncChannel<T>, R>(producers, placement, body),
        Sys::TokioMpsc => with_system::<T, TokioMpsc<T>, R>(producers, placement, body),
        Sys::Rtrb => with_system::<T, Rtrb<T>, R>(producers, placement, body),
    }
}

/// Starts `S` and `producers` persistent producer threads (all placed as
/// `placement` says), runs `body` with a closure that times `rounds` rounds
/// of [`ITEMS`] items, then stops and joins everything and checks that no
/// item was lost.
pub fn with_system<T: Item, S: System<T>, R>(
    producers: usize,
    placement: Placement,
    body: impl FnOnce(&mut dyn FnMut(u64) -> Duration) -> R,
) -> R {
    assert!(producers > 0);
    let consumed: Counter = Arc::default();
    let system = S::start(producers, Arc::clone(&consumed), placement);
    let rounds = Rounds::default();
    let mut target = 0u64;
    let result = thread::scope(|s| {
        let threads: Vec<_> = (0..producers)
            .map(|index| {
                let (system, rounds) = (&system, &rounds);
                s.spawn(move || {
                    // Pinned before the handle is made: ringbatch's shared
                    // producer binds the lane of the core it runs on.
                    placement.pin_producer(index);
                    let mut tx = system.sender();
                    let mut seen = 0;
                    while let Some(items) = rounds.next(&mut seen) {
                        // This producer's share: the remainder goes one item
                        // each to the first producers.
                        let p = producers as u64;
                        let n = items / p + u64::from((index as u64) < items % p);
                        for i in 0..n {
                            S::send(&mut tx, T::make(i));
                        }
                        rounds.done();
                    }
                })
            })
            .collect();
        let mut run = |iters: u64| {
            let start = Instant::now();
            for _ in 0..iters {
                system.wake();
                rounds.start(ITEMS);
                rounds.wait_done(producers);
                target += ITEMS;
                wait_for_count(&consumed, target);
            }
            start.elapsed()
        };
        let result = body(&mut run);
        rounds.stop();
        for thread in threads {
            thread.join().expect("producer panicked");
        }
        result
    });
    system.stop();
    assert_eq!(consumed.load(Ordering::Acquire), target, "items lost");
    result
}

/// How an idle spin-based consumer waits: `2^k` spins for `k < 7`, then 64
/// yields, then parks of at most [`IDLE_PARK`]. These were the steps of
/// ringbatch's `Backoff` until its spin phase began to check after every
/// hint; the peers keep them, since with a check after every hint `rtrb`'s
/// consumer chased its producer more closely and moved about 17 % fewer
/// items (124 to 127 M/s against 150 to 151, alternated paired runs).
#[derive(Default)]
struct Idle {
    step: u32,
}

impl Idle {
    const SPIN_STEPS: u32 = 7;
    const YIELD_STEPS: u32 = 64;

    fn reset(&mut self) {
        self.step = 0;
    }

    fn wait(&mut self) {
        if self.step < Self::SPIN_STEPS {
            for _ in 0..1u32 << self.step {
                std::hint::spin_loop();
            }
            self.step += 1;
        } else if self.step < Self::SPIN_STEPS + Self::YIELD_STEPS {
            thread::yield_now();
            self.step += 1;
        } else {
            thread::park_timeout(IDLE_PARK);
        }
    }
}

/// Retries `try_push` while the queue is full, snoozing with a [`Backoff`]
/// and unparking `consumer` once the backoff is spent.
#[inline]
fn push_spinning<T>(mut item: T, consumer: &Thread, mut try_push: impl FnMut(T) -> Result<(), T>) {
    let backoff = Backoff::new();
    while let Err(back) = try_push(item) {
        item = back;
        if backoff.is_completed() {
            consumer.unpark();
        }
        backoff.snooze();
    }
}

// ---------------------------------------------------------------------------
// ringbatch
// ---------------------------------------------------------------------------

struct Ringbatch<T: Item> {
    batcher: Batcher<T>,
    consumed: Counter,
}

impl<T: Item> Ringbatch<T> {
    fn with_lanes(lanes: usize, exclusive: usize, consumed: Counter, placement: Placement) -> Self {
        let counter = Arc::clone(&consumed);
        let mut builder = Batcher::builder()
            .lanes(lanes)
            .exclusive_lanes(exclusive)
            .spin_between_short_runs(exclusive > 0)
            .capacity(CAPACITY)
            .max_batch(MAX_BATCH);
        if let Some(core) = placement.consumer_core() {
            builder = builder.pin_drainer(core);
        }
        let batcher = builder
            .handler_fn(move |batch: &mut Batch<'_, T, ()>| {
                consume(batch.items());
                counter.fetch_add(batch.len() as u64, Ordering::Release);
                Ok(())
            })
            .build()
            .expect("valid settings");
        Ringbatch { batcher, consumed }
    }
}

impl<T: Item> System<T> for Ringbatch<T> {
    type Tx = ringbatch::Producer<T>;

    fn start(producers: usize, consumed: Counter, placement: Placement) -> Self {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_lanes(producers.min(cores), 0, consumed, placement)
    }

    fn sender(&self) -> Self::Tx {
        self.batcher.producer()
    }

    #[inline]
    fn send(tx: &mut Self::Tx, item: T) {
        tx.push(item).expect("batcher open");
    }

    fn stop(self) {
        let stats = self.batcher.shutdown();
        assert_eq!(
            stats.items_handled,
            self.consumed.load(Ordering::Acquire),
            "ringbatch handled items after the last round"
        );
    }
}

/// ringbatch with one exclusive producer per producer thread (a lane each,
/// laid out for exclusive producers with `exclusive_lanes`, plus the lane
/// that stays open to shared producers).
struct RingbatchExclusive<T: Item>(Ringbatch<T>);

impl<T: Item> System<T> for RingbatchExclusive<T> {
    type Tx = ringbatch::Producer<T>;

    fn start(producers: usize, consumed: Counter, placement: Placement) -> Self {
        Self(Ringbatch::with_lanes(
            producers + 1,
            producers,
            consumed,
            placement,
        ))
    }

    fn sender(&self) -> Self::Tx {
        self.0
            .batcher
            .exclusive_producer()
            .expect("a lane per producer")
    }

    #[inline]
    fn send(tx: &mut Self::Tx, item: T) {
        tx.push(item).expect("batcher open");
    }

    fn stop(self) {
        self.0.stop();
    }
}

// ---------------------------------------------------------------------------
// crossbeam-queue ArrayQueue
// ---------------------------------------------------------------------------

struct ArrayQueueSys<T> {
    queue: Arc<ArrayQueue<T>>,
    stop: Arc<AtomicBool>,
    consumer: JoinHandle<()>,
}

impl<T: Item> System<T> for ArrayQueueSys<T> {
    type Tx = (Arc<ArrayQueue<T>>, Thread);

    fn start(_producers: usize, consumed: Counter, placement: Placement) -> Self {
        let queue = Arc::new(ArrayQueue::new(CAPACITY));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, flag) = (Arc::clone(&queue), Arc::clone(&stop));
        let consumer = thread::spawn(move || {
            placement.pin_consumer();
            let mut batch = Vec::with_capacity(MAX_BATCH);
            let mut idle = Idle::default();
            loop {
                while batch.len() < MAX_BATCH {
                    match q.pop() {
                        Some(item) => batch.push(item),
                        None => break,
                    }
                }
                if !batch.is_empty() {
                    consume(&batch);
                    consumed.fetch_add(batch.len() as u64, Ordering::Release);
                    batch.clear();
                    idle.reset();
                } else if flag.load(Ordering::Acquire) {
                    return;
                } else {
                    idle.wait();
                }
            }
        });
        ArrayQueueSys {
            queue,
            stop,
            consumer,
        }
    }

    fn sender(&self) -> Self::Tx {
        (Arc::clone(&self.queue), self.consumer.thread().clone())
    }

    #[inline]
    fn send((queue, consumer): &mut Self::Tx, item: T) {
        push_spinning(item, consumer, |item| queue.push(item));
    }

    fn wake(&self) {
        self.consumer.thread().unpark();
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.consumer.thread().unpark();
        self.consumer.join().expect("consumer panicked");
    }
}

// ---------------------------------------------------------------------------
// Bounded channels: crossbeam-channel, flume, std::sync::mpsc::sync_channel
// ---------------------------------------------------------------------------

/// The channel consumer: blocks in `recv`, then takes up to [`MAX_BATCH`]
/// items with `try_recv`, until `recv` reports the channel disconnected.
fn channel_consumer<T: Item>(
    consumed: Counter,
    mut recv: impl FnMut() -> Option<T>,
    mut try_recv: impl FnMut() -> Option<T>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match try_recv() {
                Some(item) => batch.push(item),
                None => break,
            }
        }
        consume(&batch);
        consumed.fetch_add(batch.len() as u64, Ordering::Release);
        batch.clear();
    }
}

/// A bounded channel of one crate, as the throughput harness drives it.
trait Bounded<T: Item>: Sized + Send + 'static {
    /// The sending half, cloned for each producer.
    type Tx: Clone + Send + Sync + 'static;
    /// A channel of `capacity` and a consumer loop over its receiving half
    /// (runs [`channel_consumer`] until every sender is gone).
    fn channel(capacity: usize, consumed: Counter) -> (Self::Tx, Box<dyn FnOnce() + Send>);
    /// Sends one item, blocking while the channel is full.
    fn send(tx: &Self::Tx, item: T);
}

/// Any [`Bounded`] channel with its consumer thread.
struct Channel<T: Item, C: Bounded<T>> {
    tx: C::Tx,
    consumer: JoinHandle<()>,
}

impl<T: Item, C: Bounded<T>> System<T> for Channel<T, C> {
    type Tx = C::Tx;

    fn start(_producers: usize, consumed: Counter, placement: Placement) -> Self {
        let (tx, consume_all) = C::channel(CAPACITY, consumed);
        let consumer = thread::spawn(move || {
            placement.pin_consumer();
            consume_all();
        });
        Channel { tx, consumer }
    }

    fn sender(&self) -> Self::Tx {
        self.tx.clone()
    }

    #[inline]
    fn send(tx: &mut Self::Tx, item: T) {
        C::send(tx, item);
    }

    fn stop(self) {
        drop(self.tx);
        self.consumer.join().expect("consumer panicked");
    }
}

struct CrossbeamBounded;

impl<T: Item> Bounded<T> for CrossbeamBounded {
    type Tx = crossbeam_channel::Sender<T>;

    fn channel(capacity: usize, consumed: Counter) -> (Self::Tx, Box<dyn FnOnce() + Send>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let consume_all =
            move || channel_consumer(consumed, || rx.recv().ok(), || rx.try_recv().ok());
        (tx, Box::new(consume_all))
    }

    #[inline]
    fn send(tx: &Self::Tx, item: T) {
        tx.send(item).expect("consumer running");
    }
}

struct FlumeBounded;

impl<T: Item> Bounded<T> for FlumeBounded {
    type Tx = flume::Sender<T>;

    fn channel(capacity: usize, consumed: Counter) -> (Self::Tx, Box<dyn FnOnce() + Send>) {
        let (tx, rx) = flume::bounded(capacity);
        let consume_all =
            move || channel_consumer(consumed, || rx.recv().ok(), || rx.try_recv().ok());
        (tx, Box::new(consume_all))
    }

    #[inline]
    fn send(tx: &Self::Tx, item: T) {
        tx.send(item).expect("consumer running");
    }
}

struct StdBounded;

impl<T: Item> Bounded<T> for StdBounded {
    type Tx = std::sync::mpsc::SyncSender<T>;

    fn channel(capacity: usize, consumed: Counter) -> (Self::Tx, Box<dyn FnOnce() + Send>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        let consume_all =
            move || channel_consumer(consumed, || rx.recv().ok(), || rx.try_recv().ok());
        (tx, Box::new(consume_all))
    }

    #[inline]
    fn send(tx: &Self::Tx, item: T) {
        tx.send(item).expect("consumer running");
    }
}

type CrossbeamChannel<T> = Channel<T, CrossbeamBounded>;
type Flume<T> = Channel<T, FlumeBounded>;
type StdSyncChannel<T> = Channel<T, StdBounded>;

// ---------------------------------------------------------------------------
// tokio::sync::mpsc
// ---------------------------------------------------------------------------

struct TokioMpsc<T> {
    tx: tokio::sync::mpsc::Sender<T>,
    consumer: JoinHandle<()>,
}

impl<T: Item> System<T> for TokioMpsc<T> {
    type Tx = tokio::sync::mpsc::Sender<T>;

    fn start(_producers: usize, consumed: Counter, placement: Placement) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel(CAPACITY);
        let consumer = thread::spawn(move || {
            placement.pin_consumer();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let mut batch = Vec::with_capacity(MAX_BATCH);
                while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                    consume(&batch);
                    consumed.fetch_add(batch.len() as u64, Ordering::Release);
                    batch.clear();
                }
            });
        });
        TokioMpsc { tx, consumer }
    }

    fn sender(&self) -> Self::Tx {
        self.tx.clone()
    }

    #[inline]
    fn send(tx: &mut Self::Tx, item: T) {
        tx.blocking_send(item).expect("consumer running");
    }

    fn stop(self) {
        drop(self.tx);
        self.consumer.join().expect("consumer panicked");
    }
}

// ---------------------------------------------------------------------------
// disruptor
// ---------------------------------------------------------------------------

type DisruptorProducer<T> = disruptor::MultiProducer<T, disruptor::SingleConsumerBarrier>;

struct DisruptorSys<T> {
    /// The original producer handle; producers clone it. Dropping the last
    /// handle stops and joins the consumer thread.
    producer: Mutex<Option<DisruptorProducer<T>>>,
}

impl<T: Item> System<T> for DisruptorSys<T> {
    type Tx = DisruptorProducer<T>;

    fn start(_producers: usize, consumed: Counter, placement: Placement) -> Self {
        let mut sum = 0u64;
        let mut count = 0u64;
        let handler = move |item: &T, _seq: disruptor::Sequence, end_of_batch: bool| {
            sum = sum.wrapping_add(item.sum());
            count += 1;
            if end_of_batch {
                black_box(sum);
                consumed.fetch_add(count, Ordering::Release);
                count = 0;
            }
        };
        let builder = disruptor::build_multi_producer(CAPACITY, || T::make(0), disruptor::BusySpin);
        let producer = match placement.consumer_core() {
            Some(core) => builder.pin_at_core(core).handle_events_with(handler),
            None => builder.handle_events_with(handler),
        }
        .build();
        DisruptorSys {
            producer: Mutex::new(Some(producer)),
        }
    }

    fn sender(&self) -> Self::Tx {
        let producer = self.producer.lock().expect("lock poisoned");
        producer.as_ref().expect("running").clone()
    }

    #[inline]
    fn send(tx: &mut Self::Tx, item: T) {
        use disruptor::Producer as _;
        tx.publish(|slot| *slot = item);
    }

    fn stop(self) {
        let producer = self.producer.into_inner().expect("lock poisoned");
        // The last handle: its drop lets the consumer finish and joins it.
        drop(producer);
    }
}

// ---------------------------------------------------------------------------
// rtrb (single producer)
// ---------------------------------------------------------------------------

struct Rtrb<T> {
    producer: Mutex<Option<rtrb::Producer<T>>>,
    consumer: JoinHandle<()>,
}

impl<T: Item> System<T> for Rtrb<T> {
    type Tx = (rtrb::Producer<T>, Thread);

    fn start(producers: usize, consumed: Counter, placement: Placement) -> Self {
        assert_eq!(producers, 1, "rtrb is single-producer");
        let (producer, mut rx) = rtrb::RingBuffer::new(CAPACITY);
        let consumer = thread::spawn(move || {
            placement.pin_consumer();
            let mut idle = Idle::default();
            loop {
                let n = rx.slots().min(MAX_BATCH);
                if n > 0 {
                    let chunk = rx.read_chunk(n).expect("n slots are readable");
                    let (first, second) = chunk.as_slices();
                    consume(first);
                    consume(second);
                    chunk.commit_all();
                    consumed.fetch_add(n as u64, Ordering::Release);
                    idle.reset();
                } else if rx.is_abandoned() {
                    // The producer is gone: stop once nothing is left.
                    if rx.slots() == 0 {
                        return;
                    }
                } else {
                    idle.wait();
                }
            }
        });
        Rtrb {
            producer: Mutex::new(Some(producer)),
            consumer,
        }
    }

    fn sender(&self) -> Self::Tx {
        let producer = self.producer.lock().expect("lock poisoned").take();
        (
            producer.expect("one producer only"),
            self.consumer.thread().clone(),
        )
    }

    #[inline]
    fn send((producer, consumer): &mut Self::Tx, item: T) {
        push_spinning(item, consumer, |item| {
            producer
                .push(item)
                .map_err(|rtrb::PushError::Full(item)| item)
        });
    }

    fn wake(&self) {
        self.consumer.thread().unpark();
    }

    fn stop(self) {
        drop(self.producer);
        self.consumer.thread().unpark();
        self.consumer.join().expect("consumer panicked");
    }
}
