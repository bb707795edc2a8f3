//! Histograms recorded by the drainer, and the Prometheus text exposition of
//! a [`Stats`] snapshot.
//!
//! With [`BatcherBuilder::histograms`](crate::BatcherBuilder::histograms) on,
//! the drainer (and, with an async handler, the worker tasks) record four HDR
//! histograms once per batch, never per item on the producer's side:
//!
//! - batch size, in items;
//! - queue wait, from submission to dispatch, in nanoseconds;
//! - handler time per batch, in nanoseconds;
//! - end to end, from submission to completion, in nanoseconds.
//!
//! Producers do not read the clock. The drainer dates each item by the last
//! sweep that found its lane caught up (every item it takes after that was
//! published after it): the recorded wait is at least the real one and
//! exceeds it by at most the time between two looks at the lane, which is
//! short while the drainer keeps up.

use core::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::stats::{DispatchReason, Stats};
pub use crate::stats::{Histograms, Percentiles};

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
        }
    }
}

impl Histograms {
    /// Each histogram as exported: its name (in seconds where it is a time),
    /// help text, percentiles, and its units per exported unit (1e9 ns per
    /// second: exporters divide once, so 90559 ns reads 0.000090559).
    pub(crate) fn exported(&self) -> [(&'static str, &'static str, &Percentiles, f64); 4] {
        [
            ("batch_size", "Items per batch.", &self.batch_size, 1.0),
            (
                "queue_wait_seconds",
                "Submission to dispatch, per item.",
                &self.queue_wait_ns,
                1e9,
            ),
            (
                "handler_seconds",
                "Handler time per batch.",
                &self.handler_ns,
                1e9,
            ),
            (
                "end_to_end_seconds",
                "Submission to completion, per item.",
                &self.end_to_end_ns,
                1e9,
            ),
        ]
    }
}

/// Highest time recorded: an hour (longer values are clamped).
const MAX_NS: u64 = 3_600_000_000_000;

/// The live histograms (behind a lock taken once per batch).
#[derive(Debug)]
pub(crate) struct Recorder {
    batch_size: Histogram<u64>,
    queue_wait: Histogram<u64>,
    handler: Histogram<u64>,
    end_to_end: Histogram<u64>,
}

impl Recorder {
    pub(crate) fn new(max_batch: usize) -> Self {
        let sizes = (max_batch as u64).max(2);
        let times = || Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid bounds");
        Self {
            batch_size: Histogram::new_with_bounds(1, sizes, 3).expect("valid bounds"),
            queue_wait: times(),
            handler: times(),
            end_to_end: times(),
        }
    }

    /// One dispatched batch of `size` items, with the queue wait of its
    /// items as `(wait_ns, count)` runs.
    pub(crate) fn dispatched(&mut self, size: usize, waits: impl Iterator<Item = (u64, u64)>) {
        self.batch_size.saturating_record(size as u64);
        for (wait, count) in waits {
            self.queue_wait.saturating_record_n(wait.min(MAX_NS), count);
        }
    }

    /// One finished batch: its handler time, and each item's end to end
    /// time as `(ns, count)` runs.
    pub(crate) fn finished(&mut self, handler: Duration, ends: impl Iterator<Item = (u64, u64)>) {
        self.handler.saturating_record(ns(handler));
        for (end, count) in ends {
            self.end_to_end.saturating_record_n(end.min(MAX_NS), count);
        }
    }

    pub(crate) fn snapshot(&self) -> Histograms {
        Histograms {
            batch_size: Percentiles::of(&self.batch_size),
            queue_wait_ns: Percentiles::of(&self.queue_wait),
            handler_ns: Percentiles::of(&self.handler),
            end_to_end_ns: Percentiles::of(&self.end_to_end),
        }
    }

    /// Bytes the histograms hold (for the memory report).
    pub(crate) fn footprint(&self) -> usize {
        [
            &self.batch_size,
            &self.queue_wait,
            &self.handler,
            &self.end_to_end,
        ]
        .iter()
        .map(|h| h.distinct_values() * core::mem::size_of::<u64>())
        .sum()
    }
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).min(MAX_NS)
}

impl Stats {
    /// The snapshot in the Prometheus text exposition format (version
    /// 0.0.4), every metric name starting with `namespace` and an
    /// underscore (`namespace` must match `[a-zA-Z_:][a-zA-Z0-9_:]*`; other
    /// characters become underscores).
    ///
    /// Counters end in `_total`; lane gauges and counters carry a `lane` label; dispatch
    /// reasons a `reason` label; the histograms (when recorded) are
    /// summaries with `quantile` labels, times in seconds.
    ///
    /// ```
    /// use ringbatch::{Batch, Batcher};
    ///
    /// let batcher = Batcher::builder()
    ///     .histograms(true)
    ///     .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
    ///         batch.ok_with(|_| ());
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// batcher.producer().submit(1).unwrap().wait().unwrap();
    /// // The drainer counts a batch after delivering its results: flush so
    /// // that the snapshot includes it.
    /// batcher.flush();
    /// let text = batcher.stats().prometheus("orders");
    /// assert!(text.contains("# TYPE orders_items_handled_total counter"));
    /// assert!(text.contains("orders_items_handled_total 1\n"));
    /// ```
    pub fn prometheus(&self, namespace: &str) -> String {
        let ns: String = namespace
            .chars()
            .enumerate()
            .map(|(i, c)| {
                let ok = c.is_ascii_alphabetic()
                    || c == '_'
                    || c == ':'
                    || (i > 0 && c.is_ascii_digit());
                if ok { c } else { '_' }
            })
            .collect();
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP {ns}_{name} {help}");
            let _ = writeln!(out, "# TYPE {ns}_{name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{ns}_{name}{labels} {}", number(*value));
            }
        };
        let one = |v: u64| vec![(String::new(), v as f64)];
        let counters = self.counter_series();
        for (name, help, value) in counters {
            metric(name, "counter", help, &one(value));
        }
        let reasons: Vec<(String, f64)> = DispatchReason::ALL
            .iter()
            .map(|&r| {
                (
                    format!("{{reason=\"{}\"}}", r.name()),
                    self.dispatched.get(r) as f64,
                )
            })
            .collect();
        metric(
            "dispatched_total",
            "counter",
            "Batches dispatched, by the reason they left.",
            &reasons,
        );
        let gauges = self.gauge_series();
        for (name, help, value) in gauges {
            metric(name, "gauge", help, &one(value));
        }
        let lanes = |f: fn(&crate::LaneStats) -> u64| -> Vec<(String, f64)> {
            self.lanes
                .iter()
                .enumerate()
                .map(|(i, lane)| (format!("{{lane=\"{i}\"}}"), f(lane) as f64))
                .collect()
        };
        for (name, help, field) in Stats::LANE_COUNTERS {
            metric(name, "counter", help, &lanes(field));
        }
        metric(
            "lane_depth",
            "gauge",
            "Items in the lane not yet taken by the drainer.",
            &lanes(|l| l.depth),
        );
        metric(
            "lane_depth_high_water",
            "gauge",
            "The deepest the lane was seen by the drainer.",
            &lanes(|l| l.high_water),
        );
        if let Some(h) = &self.histograms {
            for (name, help, p, per_unit) in h.exported() {
                let mut samples: Vec<(String, f64)> = p
                    .quantiles()
                    .iter()
                    .map(|&(q, v)| (format!("{{quantile=\"{q}\"}}"), v as f64 / per_unit))
                    .collect();
                samples.push(("_sum".to_owned(), p.mean * p.count as f64 / per_unit));
                samples.push(("_count".to_owned(), p.count as f64));
                // `_sum` and `_count` are suffixes of the name, not labels.
                let _ = writeln!(out, "# HELP {ns}_{name} {help}");
                let _ = writeln!(out, "# TYPE {ns}_{name} summary");
                for (labels, value) in samples {
                    let _ = writeln!(out, "{ns}_{name}{labels} {}", number(value));
                }
            }
        }
        out
    }
}

/// A per-lane series: its name (without the namespace), help, and the
/// field of [`LaneStats`](crate::LaneStats) it exports.
pub(crate) type LaneSeries = (&'static str, &'static str, fn(&crate::LaneStats) -> u64);

impl Stats {
    /// The counters every exporter writes: `(name, help, value)`, names
    /// without the namespace.
    pub(crate) fn counter_series(&self) -> [(&'static str, &'static str, u64); 20] {
        [
            (
                "submitted_total",
                "Items offered to the batcher.",
                self.submitted,
            ),
            (
                "accepted_total",
                "Items accepted into a lane.",
                self.accepted,
            ),
            (
                "rejected_total",
                "Items refused because their lane was full.",
                self.rejected,
            ),
            (
                "dropped_total",
                "Items dropped by the DropNewest policy or evicted by DropOldest.",
                self.dropped,
            ),
            (
                "refused_closed_total",
                "Items refused after shutdown.",
                self.refused_closed,
            ),
            (
                "batches_total",
                "Batches dispatched to the handler.",
                self.batches,
            ),
            (
                "items_handled_total",
                "Items dispatched to the handler.",
                self.items_handled,
            ),
            (
                "items_failed_total",
                "Items whose result was an error.",
                self.items_failed,
            ),
            (
                "expired_total",
                "Items whose deadline passed before dispatch.",
                self.expired,
            ),
            (
                "superseded_total",
                "Items replaced by a later item of their key.",
                self.superseded,
            ),
            (
                "too_large_total",
                "Items heavier than the byte limit alone.",
                self.too_large,
            ),
            (
                "batch_errors_total",
                "Batches whose handler returned an error.",
                self.batch_errors,
            ),
            (
                "handler_panics_total",
                "Batches whose handler panicked.",
                self.handler_panics,
            ),
            (
                "retried_total",
                "Items handed to the handler again by the retry policy.",
                self.retried,
            ),
            (
                "dead_lettered_total",
                "Items that failed for good (to the dead-letter handler).",
                self.dead_lettered,
            ),
            (
                "circuit_rejected_total",
                "Items failed at once because the circuit breaker was open.",
                self.circuit_rejected,
            ),
            (
                "parks_total",
                "Times the drainer went to sleep with every lane empty.",
                self.parks,
            ),
            (
                "park_fences_total",
                "Park announcements that ran the asymmetric fence (owned lanes).",
                self.park_fences,
            ),
            (
                "callback_panics_total",
                "Contained panics of callbacks other than the handler.",
                self.callback_panics,
            ),
            (
                "drop_panics_total",
                "Contained panics of Drop of items and results.",
                self.drop_panics,
            ),
        ]
    }

    /// The per-lane counters every exporter writes, with a `lane` label:
    /// `(name, help, field)`.
    pub(crate) const LANE_COUNTERS: [LaneSeries; 4] = [
        (
            "lane_accepted_total",
            "Items accepted into the lane.",
            |l| l.accepted,
        ),
        (
            "lane_rejected_total",
            "Submissions refused because the lane was full.",
            |l| l.rejected,
        ),
        (
            "lane_dropped_total",
            "Items of the lane dropped or evicted by the drop policies.",
            |l| l.dropped,
        ),
        (
            "lane_refused_closed_total",
            "Submissions to the lane refused after shutdown.",
            |l| l.refused_closed,
        ),
    ];

    /// The gauges every exporter writes, as [`counter_series`](Self::counter_series).
    pub(crate) fn gauge_series(&self) -> [(&'static str, &'static str, u64); 7] {
        let breaker = match self.breaker {
            crate::stats::BreakerState::Closed => 0,
            crate::stats::BreakerState::Open => 1,
            crate::stats::BreakerState::HalfOpen => 2,
        };
        [
            (
                "breaker_state",
                "The circuit breaker: 0 closed, 1 open, 2 half open.",
                breaker,
            ),
            (
                "batches_in_flight",
                "Batches handed to async handler tasks and not finished.",
                self.batches_in_flight,
            ),
            (
                "staged",
                "Items held in the drainer's staging area.",
                self.staged,
            ),
            (
                "effective_max_batch",
                "The effective maximum batch size.",
                self.effective_max_batch,
            ),
            (
                "max_batch_items",
                "The largest batch dispatched.",
                self.max_batch_items,
            ),
            (
                "pool_free",
                "Batch buffers free in the pool.",
                self.pool_free as u64,
            ),
            (
                "memory_bytes",
                "Bytes fixed at build time.",
                self.memory_bytes as u64,
            ),
        ]
    }
}

/// A sample value as Prometheus writes it.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}
