//! (feature `durable`) Zero heap allocations per item in steady state with
//! the durable store on: a counting global allocator watches submissions
//! with results, pushes and slices go through a durable batcher after
//! warm-up. Each batch is encoded into a reused buffer, written, and marked
//! done with a record built in another reused buffer.
//!
//! The store's segments are made large enough that none closes while it
//! counts: closing one and beginning the next allocates (its path, its
//! bookkeeping), once per segment, not per item.
//!
//! It runs without the test harness (see `counting`), so that no thread
//! but the test's and the batcher's allocates while it counts.

mod common;
mod counting;

use counting::{allocations, workload};
use ringbatch::durable::{Durability, FsyncPolicy, Postcard};
use ringbatch::{Batch, Batcher, Error};

fn durable_submissions_make_no_allocation() {
    let dir = common::TempDir::new("alloc-durable");
    for fsync in [
        FsyncPolicy::Never,
        FsyncPolicy::EveryBatch,
        FsyncPolicy::default(),
    ] {
        let _ = std::fs::remove_dir_all(dir.path());
        let batcher = Batcher::builder()
            .lanes(2)
            .durable(
                Durability::new(dir.path())
                    .with_fsync(fsync)
                    .with_segment_bytes(1 << 30)
                    .with_max_bytes(1 << 31),
                Postcard,
            )
            .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
                batch.complete_with(|&x| Ok::<_, Error>(x + 1));
                Ok(())
            })
            .build()
            .expect("valid settings");
        let producer = batcher.producer();
        let mut tickets = Vec::with_capacity(16);
        counting::build_thread_waker();
        workload(&producer, 20_000, &mut tickets);
        batcher.flush();

        let n = if fsync == FsyncPolicy::EveryBatch {
            2_000
        } else {
            100_000
        };
        let before = allocations();
        workload(&producer, n, &mut tickets);
        batcher.flush();
        let made = allocations() - before;
        let stats = batcher.stats();
        let durable = stats.durable.expect("durable stats");
        assert_eq!(durable.write_errors, 0, "{durable:?}");
        assert_eq!(durable.segments, 1, "the segment never closed: {durable:?}");
        assert_eq!(
            made, 0,
            "expected no heap allocation for {n} durable submissions with results \
             (plus as many pushes and slices) under {fsync:?} after warm-up, counted {made}"
        );
        drop(producer);
        batcher.shutdown();
    }
}

fn main() {
    counting::run(
        "durable_submissions_make_no_allocation",
        durable_submissions_make_no_allocation,
    );
}
