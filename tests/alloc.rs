//! Zero heap allocations per item in steady state: a counting global
//! allocator watches a million submissions with results (and a million
//! fire-and-forget pushes and slices) go through a batcher after warm-up,
//! from a shared producer and then from an exclusive one; and the same
//! through handler threads.
//!
//! It runs without the test harness (see `counting`), so that no thread
//! but the test's and the batcher's allocates while it counts.

mod counting;

use counting::{allocations, workload};
use ringbatch::{Batch, Batcher, Error, ThreadRouting};

fn a_million_submissions_with_results_make_no_allocation() {
    let batcher = Batcher::builder()
        .lanes(2)
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.complete_with(|&x| Ok::<_, Error>(x + 1));
            Ok(())
        })
        .build()
        .expect("valid settings");
    let producer = batcher.producer();
    let mut tickets = Vec::with_capacity(16);

    // Warm-up: every path of the workload, lazily initialised std state,
    // and the waiting thread's waker.
    counting::build_thread_waker();
    workload(&producer, 20_000, &mut tickets);
    batcher.flush();

    let before = allocations();
    workload(&producer, 1_000_000, &mut tickets);
    batcher.flush();
    let made = allocations() - before;

    let stats = batcher.stats();
    assert!(stats.items_handled >= 2_000_000 + 2 * 1_000_000 / 16 * 16);
    assert_eq!(
        made, 0,
        "expected no heap allocation for 1,000,000 submissions with results \
         (plus as many pushes and 125,000 slices) after warm-up, counted {made}"
    );

    // The same from an exclusive producer (plain-store claims), on the
    // other lane.
    let exclusive = batcher.exclusive_producer().expect("a free lane");
    assert_ne!(exclusive.lane(), producer.lane());
    workload(&exclusive, 20_000, &mut tickets);
    batcher.flush();
    let before = allocations();
    workload(&exclusive, 1_000_000, &mut tickets);
    batcher.flush();
    let made = allocations() - before;
    assert_eq!(
        made, 0,
        "expected no heap allocation for the same workload from an exclusive \
         producer after warm-up, counted {made}"
    );
}

/// The same workload through handler threads: the hand-off queues, the
/// in-flight count and the threads' waits allocate nothing per batch, in
/// either routing.
fn handler_threads_make_no_allocation() {
    for routing in [ThreadRouting::AnyFree, ThreadRouting::ByGroup] {
        let batcher = Batcher::builder()
            .lanes(2)
            .max_batch(16)
            .group_by(|&x: &u64| x % 4)
            .handler_threads_fn(3, |_| {
                |batch: &mut Batch<'_, u64, u64>| {
                    batch.complete_with(|&x| Ok::<_, Error>(x + 1));
                    Ok(())
                }
            })
            .thread_routing(routing)
            .build()
            .expect("valid settings");
        let producer = batcher.producer();
        let mut tickets = Vec::with_capacity(16);
        counting::build_thread_waker();
        workload(&producer, 20_000, &mut tickets);
        batcher.flush();

        let before = allocations();
        workload(&producer, 200_000, &mut tickets);
        batcher.flush();
        let made = allocations() - before;
        assert_eq!(
            made, 0,
            "expected no heap allocation for 200,000 submissions with results \
             through handler threads ({routing:?}) after warm-up, counted {made}"
        );
        assert!(batcher.shutdown().items_handled >= 400_000);
    }
}

fn main() {
    counting::run(
        "a_million_submissions_with_results_make_no_allocation",
        a_million_submissions_with_results_make_no_allocation,
    );
    counting::run(
        "handler_threads_make_no_allocation",
        handler_threads_make_no_allocation,
    );
}
