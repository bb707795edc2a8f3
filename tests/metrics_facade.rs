//! The `metrics` crate facade (feature `metrics`): `Stats::export_metrics`
//! sets, through a `metrics-util` debugging recorder, counters equal to the
//! snapshot's counts, gauges for the sizes and lanes, and quantile gauges
//! for the histograms, every one described.
//!
//! Run with `cargo test --features metrics --test metrics_facade`.

#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};
use ringbatch::{Batch, Batcher, Stats};

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
