//! Zero heap allocations per item with the shaping policies on: a counting
//! global allocator watches submissions go through a batcher that weighs,
//! groups, conflates, sorts by priority (per producer and per item) and
//! checks deadlines, after warm-up.
//!
//! It runs without the test harness (see `counting`), so that no thread
//! but the test's and the batcher's allocates while it counts.

mod counting;

use std::time::{Duration, Instant};

use counting::allocations;
use ringbatch::{Adaptive, Batch, Batcher, Error, GroupLimits, Priority, Producer, Ticket};

/// `n` submissions in three classes (one of them by per-item priority),
/// most with a deadline, waited for in windows of 32; items repeat keys, so
/// conflation replaces some.
fn workload(
    normal: &Producer<u64, u64>,
    critical: &Producer<u64, u64>,
    n: u64,
    tickets: &mut Vec<(u64, Ticket<u64>)>,
) -> (u64, u64) {
    let (mut handled, mut superseded) = (0, 0);
    let far = Instant::now() + Duration::from_secs(3600);
    for window in 0..n / 32 {
        for i in 0..32 {
            let x = window * 32 + i;
            let ticket = match i % 8 {
                0 => critical.submit_with_deadline(x, far),
                // Per-item priority: the producer's sibling in High.
                4 => normal.submit_with_priority(x, Priority::High),
                _ => normal.submit_with_deadline(x, far),
            };
            tickets.push((x, ticket.expect("accepted")));
        }
        for (x, ticket) in tickets.drain(..) {
            match ticket.wait() {
                Ok(value) => {
                    assert_eq!(value, x + 1);
                    handled += 1;
                }
                Err(Error::Superseded) => superseded += 1,
                Err(other) => panic!("item {x}: unexpected {other:?}"),
            }
        }
    }
    (handled, superseded)
}

fn shaping_policies_make_no_allocation_per_item() {
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(64)
        .priorities(true)
        .deadlines(true)
        .weigher(|_: &u64| 8)
        .max_bytes(8 * 48)
        .group_by(|x: &u64| x % 4)
        .group_limits(|x: &u64| match x % 4 {
            0 => GroupLimits::immediate(),
            1 => GroupLimits::share(0.25),
            _ => GroupLimits::default(),
        })
        .conflate_by(|x: &u64| x % 16)
        .adaptive(Adaptive::latency(Duration::from_millis(1)).bounds(8, 64))
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.complete_with(|&x| Ok::<_, Error>(x + 1));
            Ok(())
        })
        .build()
        .expect("valid settings");
    let normal = batcher.producer();
    let critical = batcher
        .producer_with_priority(Priority::Critical)
        .expect("priorities are on");

    // Warm-up: every path, lazily initialised std state, and the waiting
    // thread's waker.
    counting::build_thread_waker();
    let mut tickets = Vec::with_capacity(64);
    workload(&normal, &critical, 20_000, &mut tickets);
    batcher.flush();

    let before = allocations();
    let (handled, superseded) = workload(&normal, &critical, 200_000, &mut tickets);
    batcher.flush();
    let made = allocations() - before;

    assert_eq!(handled + superseded, 200_000, "every item accounted for");
    assert_eq!(
        made, 0,
        "expected no heap allocation for 200,000 shaped submissions after warm-up, counted {made}"
    );
}

fn main() {
    counting::run(
        "shaping_policies_make_no_allocation_per_item",
        shaping_policies_make_no_allocation_per_item,
    );
}
