//! ringbatch against peer harnesses of the same shape, in one criterion run.
//!
//! Every harness keeps its long-lived threads (ringbatch's drainer, the peer's
//! consumer or server, persistent producer threads) alive across iterations
//! of its bench function, so thread start-up is never measured, and stops and
//! joins all of them before the next bench function starts, so no idle thread
//! spins on this machine's cores while another benchmark runs.
//!
//! # `push_throughput`: fire-and-forget items per second
//!
//! Each iteration pushes [`ITEMS`] `u64`s, split evenly across the producers,
//! and the clock stops once the consumer has handled all of them. The
//! consumer of either kind sums each batch into [`black_box`] and does nothing
//! else.
//!
//! - `ringbatch_1p`, `ringbatch_2p`: a [`Batcher`] with capacity
//!   [`CAPACITY`], `max_batch` [`MAX_BATCH`] and the default wait strategy,
//!   built once per bench function. One producer pushes from the bench
//!   thread into a one-lane batcher; two producers are persistent threads,
//!   each taking lane `i` of a two-lane batcher with
//!   [`Batcher::producer_on_lane`] on its own thread. An iteration ends when
//!   [`Batcher::flush`] returns (every pushed item handled).
//! - `array_queue_1p`, `array_queue_2p`: a [`crossbeam_queue::ArrayQueue`] of
//!   the same capacity and a persistent consumer thread that pops up to
//!   [`MAX_BATCH`] items into a reused `Vec`, handles them as one batch and
//!   adds their count to an atomic counter. While the queue is empty the
//!   consumer spins, then yields, then parks, with the same step counts as
//!   ringbatch's drainer under the default strategy; producers finding it
//!   full spin with a [`Backoff`], unparking the consumer once the backoff
//!   is spent. An iteration ends when the counter reaches the number of
//!   items pushed so far.
//!
//! With two producers, the producer threads wait on a condition variable
//! between rounds; the bench thread starts a round, blocks until both have
//! pushed their share, then waits for the consumer as above.
//!
//! Two producers and a consumer are three busy threads: on a machine with
//! fewer than three free cores the `_2p` results (and, under outside load,
//! the `_1p` ones) measure the scheduler as much as the queue, and swing
//! between runs; compare functions within one run.
//!
//! # `roundtrip`: one request and its reply, one at a time
//!
//! A single requester sends a value and waits for the reply `x + 1` before
//! sending the next; one iteration is one round trip.
//!
//! - `ringbatch`: `producer.submit(x)?.wait()` on a one-lane batcher whose
//!   handler completes each item with `x + 1`.
//! - `crossbeam_channel`: a server thread receives `(x, reply_sender)` from a
//!   bounded request channel and answers on `reply_sender`, a `bounded(1)`
//!   channel the requester creates for each request (the idiomatic pattern).
//!   The server stops when the request channel disconnects.
//!
//! # `drain_cost`: the drainer's cost per item
//!
//! - `ringbatch`: a one-lane batcher of capacity [`DRAIN_CAPACITY`] whose
//!   handler counts items. To time draining alone, each iteration first holds
//!   the drainer inside the handler (on a sentinel item), pre-fills the lane
//!   with a burst of [`DRAIN_BURST`] items with `push_slice`, and only then
//!   starts the clock, releases the drainer and calls [`Batcher::flush`]. The
//!   time covers the release, [`DRAIN_BURST`] / `max_batch` batches and the
//!   flush hand-back; the reported throughput is per item of the burst.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::{Backoff, CachePadded};
use ringbatch::{Batch, Batcher};

#[path = "harness/rounds.rs"]
mod rounds;
use rounds::{Rounds, wait_for_count};

/// Items pushed per `push_throughput` iteration, split across producers.
const ITEMS: u64 = 1 << 20;
/// Lane capacity of the ringbatch batchers, and capacity of the peer queue.
const CAPACITY: usize = 4096;
/// Most items per batch, for ringbatch and the peer consumer alike.
const MAX_BATCH: usize = 256;
/// Lane capacity of the `drain_cost` batcher.
const DRAIN_CAPACITY: usize = 65536;
/// Items pre-filled per `drain_cost` iteration (`MAX_BATCH * 128`).
const DRAIN_BURST: usize = MAX_BATCH * 128;
/// Holds the `drain_cost` drainer until the burst is in; never a burst item.
const SENTINEL: u64 = u64::MAX;
/// Longest an idle peer consumer parks before looking again.
const IDLE_PARK: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------

/// Applies the common settings of a group.
fn configure(group: &mut BenchmarkGroup<'_, WallTime>, measurement: Duration) {
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(measurement);
}

/// The "work" of every throughput consumer: sum the batch, keep the sum.
#[inline]
fn consume_batch(items: &[u64]) {
    black_box(items.iter().copied().fold(0u64, u64::wrapping_add));
}

/// A handler for fire-and-forget `u64` items that only reads them.
fn sink_handler(batch: &mut Batch<'_, u64, ()>) -> Result<(), ringbatch::BatchError> {
    consume_batch(batch.items());
    Ok(())
}

/// A ringbatch batcher for `push_throughput`.
fn sink_batcher(lanes: usize) -> Batcher<u64> {
    Batcher::builder()
        .lanes(lanes)
        .capacity(CAPACITY)
        .max_batch(MAX_BATCH)
        .handler_fn(sink_handler)
        .build()
        .expect("valid settings")
}

// ---------------------------------------------------------------------------
// The ArrayQueue peer
// ---------------------------------------------------------------------------

/// The peer consumer: drains `queue` in batches of up to [`MAX_BATCH`] into a
/// reused `Vec` until `stop` is set and the queue is empty.
///
/// While the queue is empty it waits as ringbatch's drainer does under
/// `WaitStrategy::Backoff`: spin steps of `2^k` spins for `k < 7`, then 64
/// yields, then a park (bounded by [`IDLE_PARK`]; producers and the bench
/// thread unpark it).
fn array_queue_consumer(queue: &ArrayQueue<u64>, consumed: &AtomicU64, stop: &AtomicBool) {
    const SPIN_STEPS: u32 = 7;
    const YIELD_STEPS: u32 = 64;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut idle_step = 0u32;
    loop {
        while batch.len() < MAX_BATCH {
            match queue.pop() {
                Some(item) => batch.push(item),
                None => break,
            }
        }
        if !batch.is_empty() {
            consume_batch(&batch);
            consumed.fetch_add(batch.len() as u64, Ordering::Release);
            batch.clear();
            idle_step = 0;
        } else if stop.load(Ordering::Acquire) {
            return;
        } else if idle_step < SPIN_STEPS {
            for _ in 0..1u32 << idle_step {
                std::hint::spin_loop();
            }
            idle_step += 1;
        } else if idle_step < SPIN_STEPS + YIELD_STEPS {
            thread::yield_now();
            idle_step += 1;
        } else {
            thread::park_timeout(IDLE_PARK);
        }
    }
}

/// Pushes `item`, spinning (then yielding) while the queue is full and
/// waking the consumer once the backoff is spent.
#[inline]
fn array_queue_push(queue: &ArrayQueue<u64>, mut item: u64, consumer: &Thread) {
    let backoff = Backoff::new();
    while let Err(back) = queue.push(item) {
        item = back;
        if backoff.is_completed() {
            consumer.unpark();
        }
        backoff.snooze();
    }
}

// ---------------------------------------------------------------------------
// push_throughput
// ---------------------------------------------------------------------------

fn push_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("push_throughput");
    configure(&mut group, Duration::from_secs(3));
    // An iteration takes milliseconds: flat sampling keeps the run short.
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(ITEMS));
    ringbatch_1p(&mut group);
    array_queue_1p(&mut group);
    ringbatch_2p(&mut group);
    array_queue_2p(&mut group);
    group.finish();
}

fn ringbatch_1p(group: &mut BenchmarkGroup<'_, WallTime>) {
    let batcher = sink_batcher(1);
    let producer = batcher.producer();
    let mut pushed = 0;
    group.bench_function("ringbatch_1p", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                for i in 0..ITEMS {
                    producer.push(i).expect("batcher open");
                }
                batcher.flush();
            }
            pushed += iters * ITEMS;
            start.elapsed()
        });
    });
    drop(producer);
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled, pushed, "ringbatch_1p lost items");
}

fn array_queue_1p(group: &mut BenchmarkGroup<'_, WallTime>) {
    let queue = ArrayQueue::new(CAPACITY);
    let consumed = CachePadded::new(AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let consumer = s.spawn(|| array_queue_consumer(&queue, &consumed, &stop));
        let waker = consumer.thread().clone();
        let mut target = 0;
        group.bench_function("array_queue_1p", |b| {
            b.iter_custom(|iters| {
                waker.unpark();
                let start = Instant::now();
                for _ in 0..iters {
                    for i in 0..ITEMS {
                        array_queue_push(&queue, i, &waker);
                    }
                    target += ITEMS;
                    wait_for_count(&consumed, target);
                }
                start.elapsed()
            });
        });
        stop.store(true, Ordering::Release);
        waker.unpark();
        consumer.join().expect("consumer panicked");
    });
}

fn ringbatch_2p(group: &mut BenchmarkGroup<'_, WallTime>) {
    const PRODUCERS: usize = 2;
    let batcher = sink_batcher(PRODUCERS);
    let rounds = Rounds::default();
    let mut pushed = 0;
    thread::scope(|s| {
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|lane| {
                let (batcher, rounds) = (&batcher, &rounds);
                s.spawn(move || {
                    let producer = batcher.producer_on_lane(lane).expect("lane exists");
                    let mut seen = 0;
                    while let Some(n) = rounds.next(&mut seen) {
                        for i in 0..n {
                            producer.push(i).expect("batcher open");
                        }
                        rounds.done();
                    }
                })
            })
            .collect();
        group.bench_function("ringbatch_2p", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    rounds.start(ITEMS / PRODUCERS as u64);
                    rounds.wait_done(PRODUCERS);
                    batcher.flush();
                }
                pushed += iters * ITEMS;
                start.elapsed()
            });
        });
        rounds.stop();
        for producer in producers {
            producer.join().expect("producer panicked");
        }
    });
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled, pushed, "ringbatch_2p lost items");
}

fn array_queue_2p(group: &mut BenchmarkGroup<'_, WallTime>) {
    const PRODUCERS: usize = 2;
    let queue = ArrayQueue::new(CAPACITY);
    let consumed = CachePadded::new(AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    let rounds = Rounds::default();
    thread::scope(|s| {
        let consumer = s.spawn(|| array_queue_consumer(&queue, &consumed, &stop));
        let waker = consumer.thread().clone();
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|_| {
                let (queue, rounds, waker) = (&queue, &rounds, waker.clone());
                s.spawn(move || {
                    let mut seen = 0;
                    while let Some(n) = rounds.next(&mut seen) {
                        for i in 0..n {
                            array_queue_push(queue, i, &waker);
                        }
                        rounds.done();
                    }
                })
            })
            .collect();
        let mut target = 0;
        group.bench_function("array_queue_2p", |b| {
            b.iter_custom(|iters| {
                waker.unpark();
                let start = Instant::now();
                for _ in 0..iters {
                    rounds.start(ITEMS / PRODUCERS as u64);
                    rounds.wait_done(PRODUCERS);
                    target += ITEMS;
                    wait_for_count(&consumed, target);
                }
                start.elapsed()
            });
        });
        rounds.stop();
        for producer in producers {
            producer.join().expect("producer panicked");
        }
        stop.store(true, Ordering::Release);
        waker.unpark();
        consumer.join().expect("consumer panicked");
    });
}

// ---------------------------------------------------------------------------
// roundtrip
// ---------------------------------------------------------------------------

fn roundtrip(c: &mut Criterion) {
    let mut group = c.benchmark_group("roundtrip");
    configure(&mut group, Duration::from_secs(2));
    group.throughput(Throughput::Elements(1));
    roundtrip_ringbatch(&mut group);
    roundtrip_crossbeam_channel(&mut group);
    group.finish();
}

fn roundtrip_ringbatch(group: &mut BenchmarkGroup<'_, WallTime>) {
    let batcher = Batcher::builder()
        .lanes(1)
        .capacity(CAPACITY)
        .max_batch(MAX_BATCH)
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.complete_with(|x| Ok::<_, ringbatch::Error>(x + 1));
            Ok(())
        })
        .build()
        .expect("valid settings");
    let producer = batcher.producer();
    let mut next = 0u64;
    group.bench_function("ringbatch", |b| {
        b.iter(|| {
            next += 1;
            let reply = producer
                .submit(black_box(next))
                .expect("batcher open")
                .wait()
                .expect("handled");
            debug_assert_eq!(reply, next + 1);
            reply
        });
    });
    drop(producer);
    batcher.shutdown();
}

fn roundtrip_crossbeam_channel(group: &mut BenchmarkGroup<'_, WallTime>) {
    let (requests, inbox) = crossbeam_channel::bounded::<(u64, crossbeam_channel::Sender<u64>)>(64);
    thread::scope(|s| {
        let server = s.spawn(move || {
            // Ends when every request sender is gone.
            for (x, reply) in inbox {
                let _ = reply.send(x + 1);
            }
        });
        let mut next = 0u64;
        group.bench_function("crossbeam_channel", |b| {
            b.iter(|| {
                next += 1;
                let (reply_to, reply) = crossbeam_channel::bounded(1);
                requests
                    .send((black_box(next), reply_to))
                    .expect("server running");
                let reply = reply.recv().expect("server replied");
                debug_assert_eq!(reply, next + 1);
                reply
            });
        });
        drop(requests);
        server.join().expect("server panicked");
    });
}

// ---------------------------------------------------------------------------
// drain_cost
// ---------------------------------------------------------------------------

/// Holds the drainer inside the handler while a burst is pre-filled.
#[derive(Default)]
struct Hold {
    /// Set by the handler once it holds the drainer.
    held: AtomicBool,
    /// Set by the bench thread to let the drainer go.
    release: AtomicBool,
}

fn drain_cost(c: &mut Criterion) {
    let mut group = c.benchmark_group("drain_cost");
    configure(&mut group, Duration::from_secs(2));
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(DRAIN_BURST as u64));

    let hold = std::sync::Arc::new(Hold::default());
    let handler_hold = std::sync::Arc::clone(&hold);
    let mut handled = 0u64;
    let batcher = Batcher::builder()
        .lanes(1)
        .capacity(DRAIN_CAPACITY)
        .max_batch(MAX_BATCH)
        .handler_fn(move |batch: &mut Batch<'_, u64, ()>| {
            if batch.items().first() == Some(&SENTINEL) {
                handler_hold.held.store(true, Ordering::Release);
                let backoff = Backoff::new();
                while !handler_hold.release.swap(false, Ordering::AcqRel) {
                    backoff.snooze();
                }
            }
            handled += batch.len() as u64;
            black_box(handled);
            Ok(())
        })
        .build()
        .expect("valid settings");
    let producer = batcher.producer();
    let burst: Vec<u64> = (0..DRAIN_BURST as u64).collect();
    let mut pushed = 0;
    group.bench_function("ringbatch", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                producer.push(SENTINEL).expect("batcher open");
                let backoff = Backoff::new();
                while !hold.held.swap(false, Ordering::AcqRel) {
                    backoff.snooze();
                }
                producer.push_slice(&burst).expect("burst fits the lane");
                let start = Instant::now();
                hold.release.store(true, Ordering::Release);
                batcher.flush();
                elapsed += start.elapsed();
            }
            pushed += iters * (DRAIN_BURST as u64 + 1);
            elapsed
        });
    });
    drop(producer);
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled, pushed, "drain_cost lost items");
    group.finish();
}

criterion_group!(benches, push_throughput, roundtrip, drain_cost);
criterion_main!(benches);
