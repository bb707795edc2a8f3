//! The workloads `benches/callgrind.sh` runs under `valgrind --tool=callgrind`.
//!
//! - `push` (the default): one producer pushes `N` (the first argument,
//!   default 2^19) `u64` items into a one-lane batcher whose handler sums
//!   each batch, then flushes.
//! - `push_exclusive`: the same from an exclusive producer (a batcher of
//!   two lanes, one laid out for exclusive producers).
//! - `inline` (second argument): `N` round trips, `submit(x)` then `wait`,
//!   on a one-lane batcher with `inline_when_idle` whose handler completes
//!   each item with `x + 1`; after the first, each runs on the calling
//!   thread.
//! - `async_inline`: the same round trips from a task on a current-thread
//!   tokio runtime, `AsyncProducer::submit(x).await` (feature `tokio`).
//! - `async_pipeline`: `N` requests from each of 4 tasks on a 2-worker
//!   runtime, up to 256 outstanding per task (`submit`, then await the
//!   oldest ticket), into an async handler with `drain_on_runtime`: the
//!   `async_throughput` workload of `benches/async.rs` (feature `tokio`).
//!
//! Running a workload at two sizes and taking the difference cancels the
//! fixed costs (build, shutdown), leaving instructions per push and per
//! drained item, or per round trip. Not a timing benchmark: run as a bench
//! it only does the work once.

use ringbatch::{Batch, Batcher, WaitStrategy};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1 << 19);
    match args.next().as_deref() {
        Some("inline") => inline(n),
        Some("push_exclusive") => push_exclusive(n),
        #[cfg(feature = "tokio")]
        Some("async_inline") => async_inline(n),
        #[cfg(feature = "tokio")]
        Some("async_pipeline") => async_pipeline(n),
        _ => push(n),
    }
}

fn push(n: u64) {
    let batcher = push_batcher(1, 0);
    let producer = batcher.producer_on_lane(0).expect("lane 0 exists");
    for i in 0..n {
        producer.push(std::hint::black_box(i)).expect("accepted");
    }
    batcher.flush();
}

fn push_exclusive(n: u64) {
    let batcher = push_batcher(2, 1);
    let producer = batcher.exclusive_producer().expect("a free lane");
    for i in 0..n {
        producer.push(std::hint::black_box(i)).expect("accepted");
    }
    batcher.flush();
}

/// A batcher of `lanes` lanes (the last `exclusive` laid out for exclusive
/// producers) whose handler sums each batch.
fn push_batcher(lanes: usize, exclusive: usize) -> Batcher<u64> {
    Batcher::builder()
        .lanes(lanes)
        .exclusive_lanes(exclusive)
        .capacity(1 << 20)
        .max_batch(256)
        .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
            std::hint::black_box(batch.items().iter().sum::<u64>());
            Ok(())
        })
        .build()
        .expect("valid settings")
}

/// A one-lane `inline_when_idle` batcher answering `x` with `x + 1`.
fn inline_batcher() -> Batcher<u64, u64> {
    Batcher::builder()
        .lanes(1)
        .wait_strategy(WaitStrategy::Park)
        .inline_when_idle(true)
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.ok_with(|x| x + 1);
            Ok(())
        })
        .build()
        .expect("valid settings")
}

fn inline(n: u64) {
    let batcher = inline_batcher();
    let producer = batcher.producer_on_lane(0).expect("lane 0 exists");
    for i in 0..n {
        let reply = producer.submit(std::hint::black_box(i)).expect("accepted");
        assert_eq!(reply.wait().expect("handled"), i + 1);
    }
    batcher.shutdown();
}

#[cfg(feature = "tokio")]
fn async_inline(n: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let batcher = inline_batcher();
    let mut producer = batcher.async_producer();
    runtime.block_on(async move {
        for i in 0..n {
            let reply = producer.call(std::hint::black_box(i)).await;
            assert_eq!(reply.expect("handled"), i + 1);
        }
    });
    batcher.shutdown();
}

#[cfg(feature = "tokio")]
fn async_pipeline(n: u64) {
    use std::collections::VecDeque;
    const TASKS: usize = 4;
    const WINDOW: usize = 256;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("a runtime");
    let batcher: Batcher<u64, u64> = Batcher::builder()
        .lanes(TASKS)
        .capacity(4096)
        .max_batch(256)
        .runtime(runtime.handle().clone())
        .drain_on_runtime(true)
        .async_handler_fn(|mut batch: ringbatch::AsyncBatch<u64, u64>| async move {
            batch.complete_with(|x| Ok::<_, ringbatch::Error>(x + 1));
            Ok(())
        })
        .build()
        .expect("valid settings");
    let producers: Vec<_> = (0..TASKS).map(|_| batcher.async_producer()).collect();
    runtime.block_on(async move {
        let tasks: Vec<_> = producers
            .into_iter()
            .map(|mut producer| {
                tokio::spawn(async move {
                    let mut window = VecDeque::with_capacity(WINDOW);
                    for x in 0..n {
                        if window.len() == WINDOW {
                            let (sent, ticket): (u64, ringbatch::Ticket<u64>) =
                                window.pop_front().expect("full");
                            assert_eq!(ticket.await.expect("a reply"), sent + 1);
                        }
                        let ticket = producer.submit(x).await.expect("open");
                        window.push_back((x, ticket));
                    }
                    for (sent, ticket) in window {
                        assert_eq!(ticket.await.expect("a reply"), sent + 1);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("a task");
        }
    });
    runtime.block_on(batcher.shutdown_async());
}
