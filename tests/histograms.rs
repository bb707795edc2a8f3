//! The drainer's histograms (`BatcherBuilder::histograms`) against the
//! test's own tally under concurrent producers: counts equal, batch-size
//! percentiles equal the test's sorted sizes within HDR precision (three
//! significant digits), handler-time percentiles bound the test's own
//! in-handler timings from above and stay near them, and the per-item
//! histograms (queue wait, end to end) count every item handled. The
//! bucket counts are exact at every bound against the handler's own sizes,
//! and their bounds follow the settings.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ringbatch::metrics::{BucketBounds, Percentiles};
use ringbatch::{Batch, Batcher, ConfigError, Stats, Ticket};

const PRODUCERS: u64 = 4;
const PER_PRODUCER: u64 = 40_000;
/// Items whose value is a multiple of this are failed by the handler.
const FAIL_EVERY: u64 = 7;
/// One item in this many is submitted with a ticket (the rest are pushed).
const TICKET_EVERY: u64 = 16;
const MAX_BATCH: usize = 256;
/// The longest any single wait may take.
const BOUND: Duration = Duration::from_secs(60);

/// Tickets a producer leaves outstanding before waiting on the oldest. A
/// lane holds `result_slots` (1024 here) outstanding tickets, and every
/// producer may land on the same lane: 4 × 65 stays well below.
const MAX_OUTSTANDING: usize = 64;

/// Waits for a ticket's result: `(value, ok)`, checking an `Ok` result.
fn settle(ticket: Option<(u64, Ticket<u64>)>) -> (u64, bool) {
    let (value, mut ticket) = ticket.expect("a ticket to settle");
    let result = ticket
        .wait_timeout(BOUND)
        .unwrap_or_else(|| panic!("ticket {value} not completed within {BOUND:?}"));
    if let Ok(doubled) = &result {
        assert_eq!(*doubled, value * 2, "ticket {value}'s result");
    }
    (value, result.is_ok())
}

/// What the handler saw, batch by batch.
#[derive(Debug, Default)]
struct Seen {
    sizes: Vec<u64>,
    /// Nanoseconds spent inside the handler body, per batch.
    handler_ns: Vec<u64>,
    items: u64,
    failed: u64,
}

/// The `q` quantile as HDR histograms compute it: the smallest value whose
/// rank reaches `ceil(q × n)` (at least 1).
fn quantile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// The percentiles the snapshot reports, by name and quantile.
fn reported(p: &Percentiles) -> [(&'static str, f64, u64); 6] {
    [
        ("p50", 0.5, p.p50),
        ("p90", 0.9, p.p90),
        ("p99", 0.99, p.p99),
        ("p99.9", 0.999, p.p999),
        ("p99.99", 0.9999, p.p9999),
        ("max", 1.0, p.max),
    ]
}

/// Whether `hdr` is `exact` within HDR's precision at three significant
/// digits: the histogram reports the top of the value's bucket, at most one
/// part in a thousand above it.
fn within_precision(exact: u64, hdr: u64) -> bool {
    hdr >= exact && hdr - exact <= exact / 1000
}

/// Runs the load: concurrent producers, a handler that spins a little per
/// item, fails every `FAIL_EVERY`th item and records what it saw. Returns
/// the final stats, what the handler saw, and the ticket results
/// (`(value, ok)`).
fn run_load() -> (Stats, Seen, Vec<(u64, bool)>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tally = Arc::clone(&seen);
    let batcher = Batcher::builder()
        .capacity(1024)
        .max_batch(MAX_BATCH)
        .histograms(true)
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            let started = Instant::now();
            // Some work per item, so that batches grow under load.
            let until = started + Duration::from_nanos(200 * batch.len() as u64);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            let mut failed = 0;
            for i in 0..batch.len() {
                let value = batch.items()[i];
                if value % FAIL_EVERY == 0 {
                    batch.fail(i, "multiple of FAIL_EVERY").unwrap();
                    failed += 1;
                } else {
                    batch.ok(i, value * 2).unwrap();
                }
            }
            let elapsed = started.elapsed();
            let mut seen = tally.lock().unwrap();
            seen.sizes.push(batch.len() as u64);
            seen.handler_ns.push(elapsed.as_nanos() as u64);
            seen.items += batch.len() as u64;
            seen.failed += failed;
            Ok(())
        })
        .build()
        .expect("valid settings");

    let results: Vec<(u64, bool)> = thread::scope(|s| {
        let handles: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let batcher = &batcher;
                s.spawn(move || {
                    let producer = batcher.producer();
                    let mut tickets = VecDeque::new();
                    let mut results = Vec::new();
                    for i in 0..PER_PRODUCER {
                        let value = p * PER_PRODUCER + i;
                        if i % TICKET_EVERY == 0 {
                            tickets.push_back((value, producer.submit(value).expect("open")));
                            // A submitter past the lane's result slots waits
                            // for one to free, so collect as we go.
                            if tickets.len() > MAX_OUTSTANDING {
                                results.push(settle(tickets.pop_front()));
                            }
                        } else {
                            producer.push(value).expect("open");
                        }
                    }
                    results.extend(tickets.into_iter().map(|t| settle(Some(t))));
                    results
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a producer panicked"))
            .collect()
    });
    assert!(
        batcher.flush_timeout(BOUND),
        "flush did not finish within {BOUND:?}"
    );
    let stats = batcher.shutdown();
    let seen = Arc::try_unwrap(seen)
        .expect("the handler is dropped at shutdown")
        .into_inner()
        .unwrap();
    (stats, seen, results)
}

#[test]
fn counts_equal_the_tests_own_tally() {
    let (stats, seen, results) = run_load();
    let total = PRODUCERS * PER_PRODUCER;
    let expected_failed = (0..total).filter(|v| v % FAIL_EVERY == 0).count() as u64;

    assert_eq!(seen.items, total, "the handler saw every item once");
    assert_eq!(seen.failed, expected_failed, "the handler's own failures");
    assert_eq!(stats.items_handled, total, "stats.items_handled");
    assert_eq!(stats.accepted, total, "stats.accepted");
    assert_eq!(
        stats.batches,
        seen.sizes.len() as u64,
        "stats.batches against the handler's batches"
    );
    assert_eq!(
        stats.dispatched.total(),
        stats.batches,
        "dispatch reasons add up to the batches"
    );
    assert_eq!(
        stats.items_failed, expected_failed,
        "stats.items_failed against the handler's failures"
    );
    assert_eq!(
        stats.max_batch_items,
        seen.sizes.iter().copied().max().unwrap_or(0),
        "stats.max_batch_items"
    );
    assert_eq!(stats.batch_errors + stats.handler_panics, 0);
    // Tickets agree with the handler: failed exactly when a multiple.
    assert_eq!(results.len() as u64, total.div_ceil(TICKET_EVERY));
    for (value, ok) in results {
        assert_eq!(ok, value % FAIL_EVERY != 0, "ticket of {value}");
    }

    let h = stats.histograms.expect("histograms were on");
    assert_eq!(h.batch_size.count, stats.batches, "batch_size.count");
    assert_eq!(h.handler_ns.count, stats.batches, "handler_ns.count");
    assert_eq!(h.queue_wait_ns.count, total, "queue_wait_ns.count");
    assert_eq!(h.end_to_end_ns.count, total, "end_to_end_ns.count");
}

#[test]
fn batch_size_percentiles_match_the_handlers_sizes() {
    let (stats, seen, _) = run_load();
    let h = stats.histograms.expect("histograms were on");
    let mut sizes = seen.sizes;
    sizes.sort_unstable();
    assert!(
        sizes.iter().any(|&s| s > 1),
        "the load should make some batches of more than one item: {sizes:?}"
    );
    assert_eq!(h.batch_size.count, sizes.len() as u64);
    assert_eq!(h.batch_size.min, sizes[0], "batch_size.min");
    for (name, q, hdr) in reported(&h.batch_size) {
        let exact = quantile(&sizes, q);
        assert!(
            within_precision(exact, hdr),
            "batch_size {name}: the histogram says {hdr}, the handler's sizes {exact} \
             (expected equal within 0.1 %)"
        );
    }
    let mean = sizes.iter().sum::<u64>() as f64 / sizes.len() as f64;
    assert!(
        (h.batch_size.mean - mean).abs() <= mean / 1000.0 + 0.5,
        "batch_size.mean {} against the handler's {mean}",
        h.batch_size.mean
    );
}

#[test]
fn handler_time_percentiles_bound_the_handlers_own_timings() {
    let (stats, seen, _) = run_load();
    let h = stats.histograms.expect("histograms were on");
    let mut own = seen.handler_ns;
    own.sort_unstable();
    assert_eq!(h.handler_ns.count, own.len() as u64);
    // The drainer times the whole call, which contains the body the handler
    // timed: each quantile is at least the body's. Not absurdly more: at
    // most 1 % (HDR's bucket and clock reads) plus 25 ms (a preempted
    // drainer on a busy machine).
    for (name, q, hdr) in reported(&h.handler_ns) {
        let exact = quantile(&own, q);
        assert!(
            hdr >= exact,
            "handler_ns {name}: the histogram says {hdr} ns, below the handler's own {exact} ns"
        );
        if name != "max" && name != "p99.99" {
            let ceiling = exact + exact / 100 + 25_000_000;
            assert!(
                hdr <= ceiling,
                "handler_ns {name}: the histogram says {hdr} ns, far above the handler's \
                 own {exact} ns (expected at most {ceiling})"
            );
        }
    }
    assert!(
        h.handler_ns.min >= own[0],
        "handler_ns.min below the body's"
    );
}

#[test]
fn per_item_histograms_count_every_item_and_order_their_quantiles() {
    let (stats, _, _) = run_load();
    let h = stats.histograms.expect("histograms were on");
    for (name, p) in [
        ("queue_wait_ns", &h.queue_wait_ns),
        ("end_to_end_ns", &h.end_to_end_ns),
    ] {
        assert_eq!(p.count, stats.items_handled, "{name}.count");
        let values = [p.min, p.p50, p.p90, p.p99, p.p999, p.p9999, p.max];
        assert!(
            values.windows(2).all(|w| w[0] <= w[1]),
            "{name}: quantiles must not decrease: {values:?}"
        );
    }
    // An item completes after it is dispatched: end to end is at least the
    // queue wait, quantile by quantile.
    for ((name, _, wait), (_, _, end)) in reported(&h.queue_wait_ns)
        .into_iter()
        .zip(reported(&h.end_to_end_ns))
    {
        assert!(
            end >= wait,
            "{name}: end to end {end} ns below queue wait {wait} ns"
        );
    }
}

#[test]
fn bucket_counts_are_exact_at_every_bound() {
    let (stats, seen, _) = run_load();
    let buckets = stats.buckets.expect("histograms were on");
    let sizes = &buckets.batch_size;
    // The defaults: powers of two up to max_batch.
    let expected_bounds: Vec<u64> = (0..=MAX_BATCH.trailing_zeros()).map(|p| 1 << p).collect();
    assert_eq!(sizes.bounds, expected_bounds, "the default size bounds");
    for (&bound, &cumulative) in sizes.bounds.iter().zip(&sizes.cumulative) {
        let own = seen.sizes.iter().filter(|&&s| s <= bound).count() as u64;
        assert_eq!(
            cumulative, own,
            "batch sizes at most {bound}: the buckets say {cumulative}, the handler saw {own}"
        );
    }
    assert_eq!(sizes.count, seen.sizes.len() as u64, "batch_size count");
    assert_eq!(
        sizes.sum,
        u128::from(seen.items),
        "the exact sum of the batch sizes is the items handled"
    );
    let total = PRODUCERS * PER_PRODUCER;
    for (name, counts, expected) in [
        ("queue_wait_ns", &buckets.queue_wait_ns, total),
        ("handler_ns", &buckets.handler_ns, stats.batches),
        ("end_to_end_ns", &buckets.end_to_end_ns, total),
    ] {
        assert_eq!(
            counts.bounds,
            BucketBounds::DEFAULT_TIMES.map(|d| d.as_nanos() as u64),
            "{name}: the default time bounds"
        );
        assert_eq!(counts.count, expected, "{name} count");
        assert!(
            counts.cumulative.windows(2).all(|w| w[0] <= w[1])
                && counts.cumulative.last().is_some_and(|&c| c <= counts.count),
            "{name}: cumulative counts must not decrease: {:?}",
            counts.cumulative
        );
    }
    // The handler body timed itself: the drainer's time for each batch is
    // at least that, so no more batches fall under a bound than the body's
    // own timings put there; and the sum is at least the body's.
    let own_sum: u128 = seen.handler_ns.iter().map(|&ns| u128::from(ns)).sum();
    assert!(
        buckets.handler_ns.sum >= own_sum,
        "handler_ns sum {} below the handler's own {own_sum}",
        buckets.handler_ns.sum
    );
    for (&bound, &cumulative) in buckets
        .handler_ns
        .bounds
        .iter()
        .zip(&buckets.handler_ns.cumulative)
    {
        let own = seen.handler_ns.iter().filter(|&&ns| ns <= bound).count() as u64;
        assert!(
            cumulative <= own,
            "handler_ns at most {bound} ns: the buckets say {cumulative}, but only {own} bodies were that fast"
        );
    }
}

#[test]
fn bucket_bounds_are_configurable_and_checked() {
    let handler = |batch: &mut Batch<'_, u64, ()>| {
        batch.ok_with(|_| ());
        Ok(())
    };
    let bounds = BucketBounds::new()
        .batch_size([2, 3])
        .times([Duration::from_nanos(1), Duration::from_secs(3600)])
        .handler([Duration::from_secs(1)]);
    let batcher = Batcher::builder()
        .lanes(1)
        .histograms(true)
        .histogram_buckets(bounds)
        .handler_fn(handler)
        .build()
        .expect("valid bounds");
    let producer = batcher.producer();
    for i in 0..4 {
        producer
            .submit(i)
            .expect("open")
            .wait_timeout(BOUND)
            .expect("answered")
            .expect("ok");
    }
    let buckets = batcher.shutdown().buckets.expect("histograms were on");
    assert_eq!(buckets.batch_size.bounds, [2, 3]);
    assert_eq!(
        buckets.batch_size.cumulative,
        [4, 4],
        "four batches of one item"
    );
    assert_eq!(buckets.queue_wait_ns.bounds, [1, 3_600_000_000_000]);
    assert_eq!(buckets.end_to_end_ns.bounds, [1, 3_600_000_000_000]);
    assert_eq!(buckets.handler_ns.bounds, [1_000_000_000]);
    assert_eq!(
        buckets.end_to_end_ns.cumulative[1], 4,
        "every item took less than an hour"
    );

    let refused = |bounds: BucketBounds| {
        Batcher::builder()
            .histograms(true)
            .histogram_buckets(bounds)
            .handler_fn(handler)
            .build()
            .expect_err("invalid bounds")
    };
    assert_eq!(
        refused(BucketBounds::new().batch_size([1, 5, 5])),
        ConfigError::BucketsNotIncreasing {
            field: "histogram_buckets.batch_size",
            index: 2,
            bound: 5,
            previous: 5,
        }
    );
    let error = refused(
        BucketBounds::new().end_to_end([Duration::from_millis(2), Duration::from_millis(1)]),
    );
    assert_eq!(error.field(), "histogram_buckets.end_to_end");
    assert_eq!(
        error,
        ConfigError::BucketsNotIncreasing {
            field: "histogram_buckets.end_to_end",
            index: 1,
            bound: 1_000_000,
            previous: 2_000_000,
        }
    );
    assert!(matches!(
        refused(BucketBounds::new().queue_wait([Duration::MAX])),
        ConfigError::TooLong { field: "histogram_buckets.queue_wait", value, .. } if value == Duration::MAX
    ));
    // Without histograms the bounds are not used, so not checked.
    let unused = Batcher::builder()
        .histogram_buckets(BucketBounds::new().batch_size([3, 2]))
        .handler_fn(handler)
        .build();
    assert!(unused.is_ok(), "bounds are checked only with histograms on");
}

#[test]
fn no_histograms_unless_asked() {
    let batcher = Batcher::builder()
        .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .expect("valid settings");
    batcher
        .producer()
        .submit(1)
        .expect("open")
        .wait_timeout(BOUND)
        .expect("completed")
        .expect("ok");
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled, 1);
    assert_eq!(stats.histograms, None, "histograms are off by default");
    assert_eq!(stats.buckets, None, "no bucket counts either");
}
