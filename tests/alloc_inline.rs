//! Zero heap allocations per round trip under `inline_when_idle`: a counting
//! global allocator watches 200,000 submissions, most of them handled on the
//! submitting thread, and as many pushes, after warm-up.
//!
//! It runs without the test harness (see `counting`), so that no thread
//! but the test's and the batcher's allocates while it counts.

mod counting;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use counting::allocations;
use ringbatch::{Batch, Batcher, WaitStrategy};

/// The drainer thread's name, to tell its batches from the inline ones.
const DRAINER: &str = "alloc-inline-drainer";

fn workload(producer: &ringbatch::Producer<u64, u64>, n: u64) {
    for i in 0..n {
        let ticket = producer.submit(i).expect("accepted");
        assert_eq!(ticket.wait().expect("handled"), i + 1);
        if i % 8 == 0 {
            producer.push(i).expect("accepted");
        }
    }
}

fn inline_round_trips_make_no_allocation() {
    let inline_batches = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&inline_batches);
    let batcher = Batcher::builder()
        .lanes(1)
        .wait_strategy(WaitStrategy::Park)
        .thread_name(DRAINER)
        .inline_when_idle(true)
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            if std::thread::current().name() != Some(DRAINER) {
                counted.fetch_add(1, Ordering::Relaxed);
            }
            batch.ok_with(|&x| x + 1);
            Ok(())
        })
        .build()
        .expect("valid settings");
    let producer = batcher.producer();

    // Warm-up: every path, lazily initialised std state, and this thread's
    // waker and handle.
    counting::build_thread_waker();
    workload(&producer, 20_000);
    batcher.flush();

    let inline_before = inline_batches.load(Ordering::Relaxed);
    let before = allocations();
    workload(&producer, 200_000);
    batcher.flush();
    let made = allocations() - before;
    let inline = inline_batches.load(Ordering::Relaxed) - inline_before;
    assert_eq!(
        made, 0,
        "200,000 round trips (and 25,000 pushes) under inline_when_idle made {made} allocations"
    );
    assert!(
        inline > 0,
        "no batch ran on the submitting thread: the test did not exercise the inline path"
    );
    let stats = batcher.shutdown();
    // Every submission, and every eighth index pushed as well.
    assert_eq!(stats.items_handled, 220_000 + 220_000 / 8);
}

fn main() {
    counting::run(
        "inline_round_trips_make_no_allocation",
        inline_round_trips_make_no_allocation,
    );
}
