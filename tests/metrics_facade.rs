//! The `metrics` crate facade (feature `metrics`): `Stats::export_metrics`
//! sets, through a `metrics-util` debugging recorder, counters equal to the
//! snapshot's counts, gauges for the sizes and lanes, and quantile gauges
//! for the histograms, every one described. `BatcherBuilder::metrics`
//! registers its handles once at build and records as the batcher runs:
//! after a known workload its counters and gauges equal the snapshot's
//! (and `export_metrics`'), its histograms hold one value per batch or per
//! item, and no handle is registered after build; a recorder that panics
//! costs neither items nor the drainer.
//!
//! Run with `cargo test --features metrics --test metrics_facade`.

#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use ringbatch::{Batch, Batcher, Stats};

/// The longest any single wait may take.
const BOUND: Duration = Duration::from_secs(60);

/// One exported series: its kind, name and labels (sorted), and value.
type Series = HashMap<(MetricKind, String, Vec<(String, String)>), f64>;

/// Exports `stats` under `prefix` into a fresh debugging recorder; the
/// series, and the names that carry a description.
fn export(stats: &Stats, prefix: &str) -> (Series, Vec<String>) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || stats.export_metrics(prefix));
    let mut series = Series::new();
    let mut described = Vec::new();
    for (key, _unit, description, value) in snapshotter.snapshot().into_vec() {
        let key: CompositeKey = key;
        let name = key.key().name().to_owned();
        let mut labels: Vec<(String, String)> = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        let value = match value {
            DebugValue::Counter(v) => v as f64,
            DebugValue::Gauge(v) => v.0,
            DebugValue::Histogram(_) => panic!("{name}: no histograms are exported"),
        };
        if description.is_some() {
            described.push(name.clone());
        }
        let previous = series.insert((key.kind(), name.clone(), labels.clone()), value);
        assert!(previous.is_none(), "{name} {labels:?} exported twice");
    }
    (series, described)
}

fn get(series: &Series, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    *series
        .get(&(kind, name.to_owned(), labels.clone()))
        .unwrap_or_else(|| {
            let mut names: Vec<_> = series.keys().collect();
            names.sort_by(|a, b| a.1.cmp(&b.1));
            panic!("no {kind:?} {name} {labels:?}; exported: {names:?}")
        })
}

/// A batcher with histograms after 1000 items, 1 in 10 failed.
fn loaded_stats() -> Stats {
    let batcher = Batcher::builder()
        .lanes(2)
        .max_batch(64)
        .histograms(true)
        .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
            for i in 0..batch.len() {
                if batch.items()[i] % 10 == 0 {
                    batch.fail(i, "tenth").unwrap();
                } else {
                    batch.ok(i, ()).unwrap();
                }
            }
            Ok(())
        })
        .build()
        .expect("valid settings");
    let producer = batcher.producer();
    for i in 0..1000 {
        producer.push(i).expect("open");
    }
    assert!(
        batcher.flush_timeout(Duration::from_secs(60)),
        "flush timed out"
    );
    batcher.shutdown()
}

#[test]
fn counters_equal_the_snapshot() {
    let stats = loaded_stats();
    assert_eq!(stats.items_handled, 1000);
    assert_eq!(stats.items_failed, 100);
    let (series, _) = export(&stats, "rb");
    let counter = |name: &str| get(&series, MetricKind::Counter, name, &[]);
    assert_eq!(counter("rb_items_handled_total"), 1000.0);
    assert_eq!(counter("rb_accepted_total"), 1000.0);
    assert_eq!(counter("rb_submitted_total"), 1000.0);
    assert_eq!(counter("rb_items_failed_total"), 100.0);
    assert_eq!(counter("rb_batches_total"), stats.batches as f64);
    assert_eq!(counter("rb_rejected_total"), 0.0);
    assert_eq!(counter("rb_retried_total"), 0.0);
    assert_eq!(counter("rb_dead_lettered_total"), 0.0);
    assert_eq!(counter("rb_circuit_rejected_total"), 0.0);
    let mut reasons = 0.0;
    for reason in ringbatch::DispatchReason::ALL {
        let value = get(
            &series,
            MetricKind::Counter,
            "rb_dispatched_total",
            &[("reason", reason.name())],
        );
        assert_eq!(value, stats.dispatched.get(reason) as f64, "{reason}");
        reasons += value;
    }
    assert_eq!(reasons, stats.batches as f64, "reasons add up to batches");
}

#[test]
fn gauges_and_lanes() {
    let stats = loaded_stats();
    let (series, _) = export(&stats, "rb");
    let gauge = |name: &str| get(&series, MetricKind::Gauge, name, &[]);
    assert_eq!(gauge("rb_effective_max_batch"), 64.0);
    assert_eq!(gauge("rb_max_batch_items"), stats.max_batch_items as f64);
    assert_eq!(gauge("rb_memory_bytes"), stats.memory_bytes as f64);
    assert_eq!(gauge("rb_pool_free"), stats.pool_free as f64);
    assert_eq!(gauge("rb_staged"), 0.0);
    assert_eq!(gauge("rb_batches_in_flight"), 0.0);
    assert_eq!(stats.lanes.len(), 2);
    for (i, lane) in stats.lanes.iter().enumerate() {
        let lane_label = i.to_string();
        let labels = [("lane", lane_label.as_str())];
        assert_eq!(
            get(&series, MetricKind::Gauge, "rb_lane_depth", &labels),
            lane.depth as f64
        );
        assert_eq!(
            get(
                &series,
                MetricKind::Gauge,
                "rb_lane_depth_high_water",
                &labels
            ),
            lane.high_water as f64
        );
        assert_eq!(
            get(
                &series,
                MetricKind::Counter,
                "rb_lane_accepted_total",
                &labels
            ),
            lane.accepted as f64
        );
        assert_eq!(
            get(
                &series,
                MetricKind::Counter,
                "rb_lane_rejected_total",
                &labels
            ),
            lane.rejected as f64
        );
    }
}

#[test]
fn histograms_as_quantile_gauges() {
    let stats = loaded_stats();
    let h = stats.histograms.expect("histograms were on");
    let (series, _) = export(&stats, "rb");
    for (q, value) in h.batch_size.quantiles() {
        let q = q.to_string();
        assert_eq!(
            get(
                &series,
                MetricKind::Gauge,
                "rb_batch_size",
                &[("quantile", &q)]
            ),
            value as f64,
            "batch_size quantile {q}"
        );
    }
    for (q, value) in h.end_to_end_ns.quantiles() {
        let q = q.to_string();
        let seconds = get(
            &series,
            MetricKind::Gauge,
            "rb_end_to_end_seconds",
            &[("quantile", &q)],
        );
        assert!(
            seconds == value as f64 / 1e9,
            "end_to_end quantile {q}: {seconds} s against {value} ns"
        );
    }
    for (name, count) in [
        ("rb_batch_size_count", stats.batches),
        ("rb_queue_wait_seconds_count", 1000),
        ("rb_handler_seconds_count", stats.batches),
        ("rb_end_to_end_seconds_count", 1000),
    ] {
        assert_eq!(
            get(&series, MetricKind::Counter, name, &[]),
            count as f64,
            "{name}"
        );
    }
    let sum = get(&series, MetricKind::Gauge, "rb_batch_size_sum", &[]);
    assert!(
        (sum - 1000.0).abs() < 1.0,
        "batch sizes sum to the items handled: {sum}"
    );
}

#[test]
fn every_metric_is_described_and_prefixed() {
    let stats = loaded_stats();
    let (series, described) = export(&stats, "orders");
    assert!(!series.is_empty());
    for (_, name, _) in series.keys() {
        assert!(name.starts_with("orders_"), "{name} lacks the prefix");
        assert!(described.contains(name), "{name} has no description");
    }
}

#[test]
fn no_histogram_series_without_histograms() {
    let batcher = Batcher::builder()
        .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .expect("valid settings");
    batcher.producer().push(1).expect("open");
    assert!(batcher.flush_timeout(Duration::from_secs(60)));
    let stats = batcher.shutdown();
    let (series, _) = export(&stats, "rb");
    assert_eq!(
        get(&series, MetricKind::Counter, "rb_items_handled_total", &[]),
        1.0
    );
    assert!(
        !series
            .keys()
            .any(|(_, name, _)| name.contains("seconds") || name.starts_with("rb_batch_size")),
        "no summary series without histograms"
    );
}

/// Forwards to a debugging recorder, counting registrations.
#[derive(Debug)]
struct Counting {
    inner: DebuggingRecorder,
    registered: AtomicUsize,
}

impl Recorder for Counting {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
        self.inner.describe_counter(key, unit, help);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
        self.inner.describe_gauge(key, unit, help);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
        self.inner.describe_histogram(key, unit, help);
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.registered.fetch_add(1, Ordering::Relaxed);
        self.inner.register_counter(key, metadata)
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.registered.fetch_add(1, Ordering::Relaxed);
        self.inner.register_gauge(key, metadata)
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.registered.fetch_add(1, Ordering::Relaxed);
        self.inner.register_histogram(key, metadata)
    }
}

/// The process's global recorder (installed once): registration from any
/// thread, the drainer's included, reaches it. Only
/// `handles_are_registered_once_and_track_the_snapshot` builds a batcher
/// with no local recorder around `build`.
fn global() -> (&'static Counting, Snapshotter) {
    static GLOBAL: OnceLock<(&'static Counting, Snapshotter)> = OnceLock::new();
    let (counting, snapshotter) = GLOBAL.get_or_init(|| {
        let counting: &'static Counting = Box::leak(Box::new(Counting {
            inner: DebuggingRecorder::new(),
            registered: AtomicUsize::new(0),
        }));
        let snapshotter = counting.inner.snapshotter();
        metrics::set_global_recorder(counting).expect("no global recorder yet");
        (counting, snapshotter)
    });
    (counting, snapshotter.clone())
}

/// The series of a snapshot, without the histograms, and the histograms'
/// values by name.
fn split(snapshotter: &Snapshotter) -> (Series, HashMap<String, Vec<f64>>) {
    let mut series = Series::new();
    let mut histograms = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let name = key.key().name().to_owned();
        let mut labels: Vec<(String, String)> = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        match value {
            DebugValue::Counter(v) => {
                series.insert((key.kind(), name, labels), v as f64);
            }
            DebugValue::Gauge(v) => {
                series.insert((key.kind(), name, labels), v.0);
            }
            DebugValue::Histogram(values) => {
                assert_eq!(
                    labels,
                    [("batcher".to_owned(), "orders".to_owned())],
                    "{name}'s labels"
                );
                histograms.insert(name, values.into_iter().map(|v| v.0).collect());
            }
        }
    }
    (series, histograms)
}

#[test]
fn handles_are_registered_once_and_track_the_snapshot() {
    let (counting, snapshotter) = global();
    let batcher = Batcher::builder()
        .lanes(2)
        .max_batch(64)
        .histograms(true)
        .metrics("push", &[("batcher", "orders")])
        .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
            for i in 0..batch.len() {
                if batch.items()[i] % 10 == 0 {
                    batch.fail(i, "tenth").unwrap();
                } else {
                    batch.ok(i, ()).unwrap();
                }
            }
            Ok(())
        })
        .build()
        .expect("valid settings");
    let at_build = counting.registered.load(Ordering::Relaxed);
    // 22 counters, 10 reasons, 8 gauges, 2 lanes of 4 counters and 2
    // gauges, 4 histograms.
    assert_eq!(at_build, 22 + 10 + 8 + 2 * (4 + 2) + 4, "handles at build");

    let producer = batcher.producer();
    for round in 0..10u64 {
        for i in 0..100 {
            producer.push(round * 100 + i).expect("open");
        }
        assert!(batcher.flush_timeout(BOUND), "flush timed out");
    }
    let (series, histograms) = split(&snapshotter);
    let stats = batcher.stats();
    assert!(stats.batches >= 10, "at least a batch per round");
    assert_eq!(
        counting.registered.load(Ordering::Relaxed),
        at_build,
        "no handle is registered after build, however many batches ran"
    );

    // The pushed values equal what `export_metrics` sets from the snapshot
    // taken after the same flush (its histograms aside: quantile gauges).
    let (pulled, _) = export(&stats, "push");
    let histogram_names = [
        "batch_size",
        "queue_wait_seconds",
        "handler_seconds",
        "end_to_end_seconds",
    ];
    let mut compared = 0;
    for ((kind, name, labels), value) in &pulled {
        if histogram_names
            .iter()
            .any(|h| name.starts_with(&format!("push_{h}")))
        {
            continue;
        }
        let mut labels = labels.clone();
        labels.push(("batcher".to_owned(), "orders".to_owned()));
        labels.sort();
        let pushed = series.get(&(*kind, name.clone(), labels.clone()));
        if name == "push_parks_total" || name == "push_park_fences_total" {
            // The drainer parks on its own time after the flush: the pushed
            // count, read first, may trail the snapshot, never lead it.
            let pushed = pushed.copied().unwrap_or_else(|| panic!("{name} pushed"));
            assert!(
                pushed <= *value,
                "{name}: pushed {pushed}, more than the later snapshot's {value}"
            );
        } else {
            assert_eq!(
                pushed,
                Some(value),
                "{kind:?} {name} {labels:?}: pushed {pushed:?}, the snapshot says {value}"
            );
        }
        compared += 1;
    }
    assert_eq!(compared, 22 + 10 + 8 + 2 * (4 + 2), "every series compared");
    assert_eq!(stats.items_handled, 1000);
    assert_eq!(stats.items_failed, 100);

    // The histograms: a value per batch (sizes, handler times), a value per
    // item (queue wait, end to end), matching the bucket counts.
    let buckets = stats.buckets.expect("histograms were on");
    let sizes = &histograms["push_batch_size"];
    assert_eq!(sizes.len() as u64, stats.batches, "a size per batch");
    assert_eq!(
        sizes.iter().sum::<f64>(),
        1000.0,
        "the sizes sum to the items"
    );
    assert_eq!(
        histograms["push_handler_seconds"].len() as u64,
        stats.batches
    );
    for name in ["push_queue_wait_seconds", "push_end_to_end_seconds"] {
        assert_eq!(histograms[name].len(), 1000, "{name}: a value per item");
    }
    let handler_sum: f64 = histograms["push_handler_seconds"].iter().sum();
    let expected = buckets.handler_ns.sum as f64 / 1e9;
    assert!(
        (handler_sum - expected).abs() <= expected * 1e-9 + 1e-12,
        "handler seconds: {handler_sum} recorded, {expected} in the buckets"
    );
    drop(producer);
    batcher.shutdown();
}

#[test]
fn no_histogram_handles_without_histograms() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let batcher = metrics::with_local_recorder(&recorder, || {
        Batcher::builder()
            .metrics("plain", &[])
            .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
                batch.ok_with(|_| ());
                Ok(())
            })
            .build()
            .expect("valid settings")
    });
    batcher.producer().push(1).expect("open");
    assert!(batcher.flush_timeout(BOUND), "flush timed out");
    let entries = snapshotter.snapshot().into_vec();
    assert!(
        entries
            .iter()
            .all(|(key, ..)| key.kind() != MetricKind::Histogram),
        "no histogram registered without histograms"
    );
    let handled = entries.iter().find_map(|(key, _, _, value)| {
        (key.key().name() == "plain_items_handled_total").then_some(value)
    });
    assert_eq!(handled, Some(&DebugValue::Counter(1)));
    batcher.shutdown();
}

/// A recorder whose every handle panics when used.
#[derive(Debug)]
struct Panicking;

impl CounterFn for Panicking {
    fn increment(&self, _: u64) {
        panic!("counter");
    }
    fn absolute(&self, _: u64) {
        panic!("counter");
    }
}

impl GaugeFn for Panicking {
    fn increment(&self, _: f64) {
        panic!("gauge");
    }
    fn decrement(&self, _: f64) {
        panic!("gauge");
    }
    fn set(&self, _: f64) {
        panic!("gauge");
    }
}

impl HistogramFn for Panicking {
    fn record(&self, _: f64) {
        panic!("histogram");
    }
}

impl Recorder for Panicking {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Panicking))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Panicking))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Panicking))
    }
}

#[test]
fn a_panicking_recorder_loses_no_item() {
    let batcher = metrics::with_local_recorder(&Panicking, || {
        Batcher::builder()
            .histograms(true)
            .metrics("boom", &[])
            .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
                batch.complete_with(|&x| Ok::<_, ringbatch::Error>(x * 2));
                Ok(())
            })
            .build()
            .expect("valid settings")
    });
    let producer = batcher.producer();
    for i in 0..200 {
        let answer = producer
            .submit(i)
            .expect("open")
            .wait_timeout(BOUND)
            .expect("answered within the bound");
        assert_eq!(answer.ok(), Some(i * 2), "item {i}'s result");
    }
    assert!(batcher.flush_timeout(BOUND), "flush timed out");
    drop(producer);
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled, 200);
    assert_eq!(stats.handler_panics, 0, "the handler never panicked");
    assert!(
        stats.callback_panics >= 200,
        "each batch's histograms and syncs panicked and were counted: {}",
        stats.callback_panics
    );
}
