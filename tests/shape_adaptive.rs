//! Adaptive batch sizing: the latency controller settles where the sink's
//! time per batch meets the target; the load controller follows feedback.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BOUND, spawn_bounded, wait_for};
use ringbatch::{Adaptive, Batch, Batcher, ConfigError, LoadFeedback};

/// Pushes items until `stop` is set (at most [`BOUND`]), keeping the
/// batcher saturated.
fn flood(batcher: &Batcher<u64, ()>, stop: &Arc<AtomicBool>) -> common::Bounded<u64> {
    let (make, stop) = (batcher.producers(), Arc::clone(stop));
    spawn_bounded("flood", move || {
        let producer = make.producer();
        let start = Instant::now();
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) && start.elapsed() < BOUND / 2 {
            if producer
                .push_timeout(sent, Duration::from_millis(100))
                .is_ok()
            {
                sent += 1;
            }
        }
        sent
    })
}

#[test]
fn the_latency_controller_settles_where_the_sink_meets_the_target() {
    // The sink costs 100 µs per item: a 5 ms target is met by batches of
    // about 50. The controller holds still between 0.8 and 1.2 times the
    // target (40 to 60 items); the band checked is much wider.
    let per_item = Duration::from_micros(100);
    let target = Duration::from_millis(5);
    let ideal = 50u64;
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&sizes);
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(400)
        .adaptive(Adaptive::latency(target).bounds(1, 400))
        .handler_fn(move |batch: &mut Batch<'_, u64, ()>| {
            std::thread::sleep(per_item * batch.len() as u32);
            sink.lock().unwrap().push(batch.len());
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .unwrap();
    assert_eq!(
        batcher.stats().effective_max_batch,
        400,
        "starts at the maximum"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let producer = flood(&batcher, &stop);
    // Settling from 400 takes a couple of dozen batches; give it a second.
    wait_for("100 batches", || batcher.stats().batches >= 100);
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Then sample the effective size for a second.
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        samples.push(batcher.stats().effective_max_batch);
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    producer.join();
    batcher.shutdown();

    samples.sort_unstable();
    let median = samples[samples.len() / 2];
    let (low, high) = (ideal * 2 / 5, ideal * 5 / 2);
    assert!(
        (low..=high).contains(&median),
        "the median effective size {median} is outside {low}..={high} (ideal {ideal}); samples {samples:?}"
    );
    // The sink really saw batches of that size, not of the maximum.
    let sizes = sizes.lock().unwrap();
    let late = &sizes[sizes.len() / 2..];
    let mean = late.iter().sum::<usize>() as u64 / late.len() as u64;
    assert!(
        mean <= high,
        "the sink's batches averaged {mean} items late in the run (ideal {ideal})"
    );
}

#[test]
fn the_latency_controller_shrinks_a_slow_sink_to_min_and_grows_a_fast_one_to_max() {
    // 5 ms per batch against a 1 ms target shrinks to the minimum; a sink
    // that costs nothing then grows back to the maximum.
    let slow = Arc::new(AtomicBool::new(true));
    let is_slow = Arc::clone(&slow);
    let largest = Arc::new(AtomicU64::new(0));
    let big = Arc::clone(&largest);
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(128)
        .adaptive(Adaptive::latency(Duration::from_millis(1)).bounds(2, 64))
        .handler_fn(move |batch: &mut Batch<'_, u64, ()>| {
            big.fetch_max(batch.len() as u64, Ordering::Relaxed);
            if is_slow.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .unwrap();
    assert_eq!(batcher.stats().effective_max_batch, 64, "starts at max");
    let stop = Arc::new(AtomicBool::new(false));
    let producer = flood(&batcher, &stop);
    wait_for("the size to shrink to the minimum", || {
        batcher.stats().effective_max_batch == 2
    });
    slow.store(false, Ordering::Relaxed);
    wait_for("the size to grow to the maximum", || {
        batcher.stats().effective_max_batch == 64
    });
    stop.store(true, Ordering::Relaxed);
    producer.join();
    let stats = batcher.shutdown();
    assert_eq!(stats.effective_max_batch, 64);
    let largest = largest.load(Ordering::Relaxed);
    assert!(
        largest <= 64,
        "a batch of {largest}, above the adaptive maximum"
    );
    assert_eq!(stats.max_batch_items, largest);
}

/// The feedback the load test's handler reports, by phase.
const BUSY: LoadFeedback = LoadFeedback {
    cpu: 1.0,
    error_rate: 1.0,
    queue_depth: 1.0,
    contention: 1.0,
};
const IDLE: LoadFeedback = LoadFeedback {
    cpu: 0.0,
    error_rate: 0.0,
    queue_depth: 0.0,
    contention: 0.0,
};
/// Score 0.5: between the thresholds.
const STEADY: LoadFeedback = LoadFeedback {
    cpu: 0.5,
    error_rate: 0.5,
    queue_depth: 0.5,
    contention: 0.5,
};

#[test]
fn the_load_controller_shrinks_under_load_and_grows_when_idle() {
    let feedback = Arc::new(Mutex::new(BUSY));
    // The largest batch since the last reset.
    let largest = Arc::new(AtomicU64::new(0));
    let (fb, big) = (Arc::clone(&feedback), Arc::clone(&largest));
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(64)
        .adaptive(
            Adaptive::load()
                .bounds(4, 64)
                .check_interval(Duration::from_millis(5)),
        )
        .handler_fn(move |batch: &mut Batch<'_, u64, ()>| {
            big.fetch_max(batch.len() as u64, Ordering::Relaxed);
            std::thread::sleep(Duration::from_micros(200));
            batch.report_load(*fb.lock().unwrap());
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = flood(&batcher, &stop);

    wait_for("the size to shrink to the minimum under load", || {
        batcher.stats().effective_max_batch == 4
    });
    // At the minimum, batches stay at most 4 items.
    let batches = batcher.stats().batches;
    largest.store(0, Ordering::Relaxed);
    wait_for("50 more batches", || {
        batcher.stats().batches >= batches + 50
    });
    let at_min = largest.load(Ordering::Relaxed);
    assert!(at_min <= 4, "a batch of {at_min} items at effective size 4");
    assert_eq!(
        batcher.stats().effective_max_batch,
        4,
        "stays at the minimum"
    );

    // Between the thresholds nothing moves.
    *feedback.lock().unwrap() = STEADY;
    let batches = batcher.stats().batches;
    wait_for("50 steady batches", || {
        batcher.stats().batches >= batches + 50
    });
    assert_eq!(
        batcher.stats().effective_max_batch,
        4,
        "a 0.5 score holds still"
    );

    *feedback.lock().unwrap() = IDLE;
    wait_for("the size to grow to the maximum when idle", || {
        batcher.stats().effective_max_batch == 64
    });
    stop.store(true, Ordering::Relaxed);
    producer.join();
    let stats = batcher.shutdown();
    assert_eq!(stats.effective_max_batch, 64);
}

#[test]
fn the_load_controller_acts_at_most_once_per_check_interval() {
    let interval = Duration::from_millis(100);
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(64)
        .adaptive(Adaptive::load().bounds(1, 64).check_interval(interval))
        .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
            batch.report_load(BUSY);
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let producer = flood(&batcher, &stop);
    wait_for("many batches", || batcher.stats().batches >= 2_000);
    let size = batcher.stats().effective_max_batch;
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    producer.join();
    batcher.shutdown();
    // At most one 10 % step per interval (and one at the first batch).
    let steps = (elapsed.as_nanos() / interval.as_nanos()) as i32 + 1;
    let floor = (64.0 * 0.9f64.powi(steps)).round() as u64;
    assert!(
        size + 1 >= floor,
        "after {elapsed:?} ({steps} intervals at most) the size is {size}, below {floor}"
    );
}

#[test]
fn adaptive_bounds_are_checked() {
    let build = |adaptive: Adaptive| {
        Batcher::builder()
            .max_batch(64)
            .adaptive(adaptive)
            .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
                batch.ok_with(|_| ());
                Ok(())
            })
            .build()
    };
    let target = Duration::from_millis(1);
    for (adaptive, what) in [
        (Adaptive::latency(target).bounds(0, 10), "min 0"),
        (Adaptive::latency(target).bounds(20, 10), "min above max"),
        (
            Adaptive::latency(target).bounds(1, 65),
            "max above max_batch",
        ),
        (Adaptive::latency(Duration::ZERO), "a zero target"),
        (Adaptive::load().steps(1.5, 0.1), "a growth step of 150 %"),
        (
            Adaptive::latency(target).bounds(8, 32).initial(4),
            "initial below min",
        ),
        (
            Adaptive::latency(target).bounds(8, 32).initial(33),
            "initial above max",
        ),
        (Adaptive::latency(target).smoothing(0), "a smoothing of 0"),
        (
            Adaptive::load().smoothing(Adaptive::MAX_SMOOTHING + 1),
            "a smoothing above the longest window",
        ),
    ] {
        match build(adaptive) {
            Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "adaptive", "{what}"),
            Err(other) => panic!("{what}: expected Invalid(adaptive), got {other:?}"),
            Ok(_) => panic!("{what}: expected Invalid(adaptive), got a batcher"),
        }
    }
    let ok = build(Adaptive::latency(target).bounds(8, 32)).unwrap();
    assert_eq!(ok.stats().effective_max_batch, 32);
}

#[test]
fn the_adaptive_size_starts_at_its_initial_size_and_grows_from_there() {
    // A sink far under its 1 s target: each batch grows the size by 10 %, at
    // least one item, from the initial 8 (without it, from max_batch, 256).
    const HOLD: u64 = u64::MAX;
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let (started, on_start) = std::sync::mpsc::channel();
    let (release, on_release) = std::sync::mpsc::channel::<()>();
    let sink = Arc::clone(&sizes);
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(256)
        .adaptive(
            Adaptive::latency(Duration::from_secs(1))
                .bounds(2, 256)
                .initial(8),
        )
        .handler_fn(move |batch: &mut Batch<'_, u64, ()>| {
            if batch.iter().any(|&x| x == HOLD) {
                // Holds the drainer while the test fills the lane.
                let _ = started.send(());
                let _ = on_release.recv_timeout(BOUND);
            }
            sink.lock().unwrap().push(batch.len());
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .unwrap();
    assert_eq!(
        batcher.stats().effective_max_batch,
        8,
        "starts at the initial size"
    );
    let producer = batcher.producer();
    let mut hold = producer.submit(HOLD).unwrap();
    on_start
        .recv_timeout(BOUND)
        .expect("the handler takes the holding item");
    let mut tickets = Vec::new();
    for i in 0..500u64 {
        tickets.push(producer.submit(i).expect("room for 500 items"));
    }
    release.send(()).unwrap();
    assert!(
        hold.wait_timeout(BOUND).is_some(),
        "the holding item handled"
    );
    for mut ticket in tickets {
        assert!(
            ticket.wait_timeout(BOUND).is_some(),
            "every item handled within {BOUND:?}"
        );
    }
    let sizes = sizes.lock().unwrap().clone();
    assert_eq!(
        &sizes[..5],
        &[1, 9, 10, 11, 12],
        "after the holding batch, full batches at 8 grown by 10 % (at least one item) per batch: {sizes:?}"
    );
}
