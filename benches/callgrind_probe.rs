//! The workload `benches/callgrind.sh` runs under `valgrind --tool=callgrind`:
//! one producer pushes `N` (the first argument, default 2^19) `u64` items
//! into a one-lane batcher whose handler sums each batch, then flushes.
//! Running it at two sizes and taking the difference cancels the fixed costs
//! (build, shutdown), leaving instructions per push and per drained item.
//! Not a timing benchmark: run as a bench it only does the work once.

use ringbatch::{Batch, Batcher};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 19);
    let batcher: Batcher<u64> = Batcher::builder()
        .lanes(1)
        .capacity(1 << 20)
        .max_batch(256)
        .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
            std::hint::black_box(batch.items().iter().sum::<u64>());
            Ok(())
        })
        .build()
        .expect("valid settings");
    let producer = batcher.producer_on_lane(0).expect("lane 0 exists");
    for i in 0..n {
        producer.push(std::hint::black_box(i)).expect("accepted");
    }
    batcher.flush();
}
