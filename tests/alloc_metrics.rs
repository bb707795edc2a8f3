//! Zero heap allocations per item with histograms on and the `metrics`
//! facade recording per batch (feature `metrics`): a counting global
//! allocator watches 200,000 submissions with results go through a batcher
//! whose handles record into a recorder that allocates nothing per value
//! (atomics), so that any allocation counted is the batcher's.
//!
//! It runs without the test harness (see `counting`), so that no thread
//! but the test's and the batcher's allocates while it counts.

#![cfg(feature = "metrics")]

mod counting;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use counting::allocations;
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use ringbatch::{Batch, Batcher, Error};

/// Counts the values a histogram handle records.
#[derive(Debug, Default)]
struct Tally(AtomicU64);

impl HistogramFn for Tally {
    fn record(&self, _: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn record_many(&self, _: f64, count: usize) {
        self.0.fetch_add(count as u64, Ordering::Relaxed);
    }
}

/// Atomic handles: allocation only when registering (at build).
#[derive(Debug, Default)]
struct Atomics {
    /// Values recorded into every histogram, together.
    recorded: Arc<Tally>,
    /// The handled-items counter, once registered.
    handled: std::sync::Mutex<Option<Arc<AtomicU64>>>,
}

impl Recorder for Atomics {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let counter = Arc::new(AtomicU64::new(0));
        if key.name() == "rb_items_handled_total" {
            *self.handled.lock().unwrap() = Some(Arc::clone(&counter));
        }
        Counter::from_arc(counter)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(AtomicU64::new(0)))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::clone(&self.recorded))
    }
}

fn workload(producer: &ringbatch::Producer<u64, u64>, n: u64) {
    for i in 0..n {
        let ticket = producer.submit(i).expect("accepted");
        assert_eq!(ticket.wait().expect("handled"), i + 1);
        producer.push(i).expect("accepted");
    }
}

fn recording_per_batch_makes_no_allocation_per_item() {
    let recorder = Atomics::default();
    let batcher = metrics::with_local_recorder(&recorder, || {
        Batcher::builder()
            .lanes(2)
            .histograms(true)
            .metrics("rb", &[("batcher", "orders")])
            .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
                batch.complete_with(|&x| Ok::<_, Error>(x + 1));
                Ok(())
            })
            .build()
            .expect("valid settings")
    });
    let producer = batcher.producer();

    // Warm-up: every path, lazily initialised std state, the waiting
    // thread's waker, and the facade's scratch snapshot.
    counting::build_thread_waker();
    workload(&producer, 20_000);
    batcher.flush();

    let recorded_before = recorder.recorded.0.load(Ordering::Relaxed);
    let before = allocations();
    workload(&producer, 200_000);
    batcher.flush();
    let made = allocations() - before;

    let handled = recorder
        .handled
        .lock()
        .unwrap()
        .as_ref()
        .map(|c| c.load(Ordering::Relaxed));
    assert_eq!(
        handled,
        Some(440_000),
        "the facade's counter saw every item"
    );
    assert!(
        recorder.recorded.0.load(Ordering::Relaxed) - recorded_before >= 2 * 400_000,
        "the per-item histograms recorded each item (queue wait, end to end)"
    );
    assert_eq!(
        made, 0,
        "expected no heap allocation for 200,000 submissions with results (and as \
         many pushes) with histograms and the metrics facade on, counted {made}"
    );
}

fn main() {
    counting::run(
        "recording_per_batch_makes_no_allocation_per_item",
        recording_per_batch_makes_no_allocation_per_item,
    );
}
