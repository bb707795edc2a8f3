//! What each batch shaping policy costs, in one criterion run.
//!
//! # `shaping_drain`: the drainer's cost per item, per policy
//!
//! Each function builds a one-lane batcher of capacity [`CAPACITY`] and
//! `max_batch` [`MAX_BATCH`] with one policy on (`natural` has none: the
//! drainer moves items straight into the batch). An iteration holds the
//! drainer inside the handler (on a sentinel item), pre-fills the lane with
//! [`BURST`] `u64`s, then starts the clock, releases the drainer and calls
//! `flush`: the time is the drainer taking the burst out of the lane,
//! applying the policy, dispatching the batches to a handler that only sums
//! them, and the flush hand-back. Throughput is per item of the burst.
//!
//! # `shaping_push`: the producer's cost with every policy off
//!
//! One producer pushes [`PUSH_ITEMS`] items into a default batcher, then
//! flushes; `policies_off` is the same code path as the core benchmark's
//! `push_throughput/ringbatch_1p`. `max_age` shows what a policy that needs
//! the producer's help (a clock read and a stamp per item) adds.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use crossbeam_utils::Backoff;
use ringbatch::{Adaptive, Batch, Batcher, BatcherBuilder, Linger, Priority};

const CAPACITY: usize = 65536;
const MAX_BATCH: usize = 256;
const BURST: usize = MAX_BATCH * 128;
const SENTINEL: u64 = u64::MAX;
const PUSH_ITEMS: u64 = 1 << 20;

#[derive(Default)]
struct Hold {
    held: AtomicBool,
    release: AtomicBool,
}

type Builder = BatcherBuilder<u64, ()>;
/// A named change to the builder.
type Policy = (&'static str, fn(Builder) -> Builder);

/// The policies measured, by name.
fn policies() -> Vec<Policy> {
    vec![
        ("natural", |b| b),
        ("max_bytes", |b| {
            b.weigher(|_: &u64| 8).max_bytes(8 * MAX_BATCH / 2)
        }),
        ("linger", |b| {
            b.linger(Linger::Fixed(Duration::from_micros(200)))
        }),
        ("priorities", |b| b.priorities(true)),
        ("group_by_8_keys", |b| b.group_by(|x: &u64| *x % 8)),
        ("conflate_by_1024_keys", |b| {
            b.conflate_by(|x: &u64| *x % 1024)
        }),
        ("max_age", |b| b.max_age(Duration::from_secs(60))),
        ("adaptive_latency", |b| {
            b.adaptive(Adaptive::latency(Duration::from_micros(50)).bounds(16, MAX_BATCH))
        }),
    ]
}

fn shaping_drain(c: &mut Criterion) {
    let mut group = c.benchmark_group("shaping_drain");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(BURST as u64));
    let burst: Vec<u64> = (0..BURST as u64).collect();
    for (name, policy) in policies() {
        let hold = Arc::new(Hold::default());
        let handler_hold = Arc::clone(&hold);
        let builder = Batcher::builder()
            .lanes(1)
            .capacity(CAPACITY)
            .max_batch(MAX_BATCH)
            .staging(MAX_BATCH * 4)
            .handler_fn(move |batch: &mut Batch<'_, u64, ()>| {
                if batch.items().contains(&SENTINEL) {
                    handler_hold.held.store(true, Ordering::Release);
                    let backoff = Backoff::new();
                    while !handler_hold.release.swap(false, Ordering::AcqRel) {
                        backoff.snooze();
                    }
                }
                black_box(batch.items().iter().fold(0u64, |a, x| a.wrapping_add(*x)));
                Ok(())
            });
        let batcher = policy(builder).build().expect("valid settings");
        // Priorities: push in the Normal class, as plain producers do.
        let producer = batcher
            .producer_with_priority(Priority::Normal)
            .expect("Normal exists");
        let mut pushed = 0;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    producer.push(SENTINEL).expect("batcher open");
                    batcher.flush_now();
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
                pushed += iters * (BURST as u64 + 1);
                elapsed
            });
        });
        drop(producer);
        let stats = batcher.shutdown();
        assert_eq!(
            stats.items_handled + stats.superseded,
            pushed,
            "{name}: items lost"
        );
    }
    group.finish();
}

fn shaping_push(c: &mut Criterion) {
    let mut group = c.benchmark_group("shaping_push");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(PUSH_ITEMS));
    let variants: [Policy; 2] = [
        ("policies_off", |b| b),
        ("max_age", |b| b.max_age(Duration::from_secs(60))),
    ];
    for (name, policy) in variants {
        let builder = Batcher::builder()
            .lanes(1)
            .capacity(4096)
            .max_batch(MAX_BATCH)
            .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
                black_box(batch.items().iter().fold(0u64, |a, x| a.wrapping_add(*x)));
                Ok(())
            });
        let batcher = policy(builder).build().expect("valid settings");
        let producer = batcher.producer();
        group.bench_function(name, |b| {
            b.iter(|| {
                for i in 0..PUSH_ITEMS {
                    producer.push(i).expect("batcher open");
                }
                batcher.flush();
            });
        });
        drop(producer);
        batcher.shutdown();
    }
    group.finish();
}

criterion_group!(benches, shaping_drain, shaping_push);
criterion_main!(benches);
