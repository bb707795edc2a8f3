//! Histograms recorded by the drainer, and the Prometheus text exposition of
//! a [`Stats`] snapshot.
//!
//! With [`BatcherBuilder::histograms`](crate::BatcherBuilder::histograms) on,
//! the drainer (and, with an async handler, the worker tasks) record four
//! distributions once per batch (per-item times once per run of items
//! dated alike), never per item on the producer's side:
//!
//! - batch size, in items;
//! - queue wait, from submission to dispatch, in nanoseconds;
//! - handler time per batch, in nanoseconds;
//! - end to end, from submission to completion, in nanoseconds.
//!
//! Each is kept twice: as an HDR histogram, for the percentiles of
//! [`Stats::histograms`] (over the batcher's whole life), and as counts in
//! fixed buckets with an exact sum, [`Stats::buckets`], which the
//! Prometheus exposition writes as a histogram (`_bucket{le=...}`, `_sum`,
//! `_count`) that can be `rate()`d and summed across instances. The bounds
//! are [`BucketBounds`], set with
//! [`BatcherBuilder::histogram_buckets`](crate::BatcherBuilder::histogram_buckets).
//!
//! Several batchers can share one endpoint: give each its constant labels
//! with [`PrometheusOptions`] and concatenate their texts.
//!
//! ```
//! use ringbatch::metrics::PrometheusOptions;
//! use ringbatch::{Batch, Batcher};
//!
//! let make = || {
//!     Batcher::builder()
//!         .histograms(true)
//!         .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
//!             batch.ok_with(|_| ());
//!             Ok(())
//!         })
//!         .build()
//!         .unwrap()
//! };
//! let (orders, audit) = (make(), make());
//! orders.producer().push(1).unwrap();
//! orders.flush();
//! let mut text = String::new();
//! for (name, batcher) in [("orders", &orders), ("audit", &audit)] {
//!     let options = PrometheusOptions::new("rb").label("batcher", name)?;
//!     text += &batcher.stats().prometheus_with(&options);
//! }
//! assert!(text.contains("rb_items_handled_total{batcher=\"orders\"} 1\n"));
//! assert!(text.contains("rb_batch_size_bucket{batcher=\"orders\",le=\"1\"} 1\n"));
//! assert!(text.contains("rb_batch_size_count{batcher=\"audit\"} 0\n"));
//! # Ok::<(), ringbatch::metrics::LabelError>(())
//! ```
//!
//! Producers do not read the clock. The drainer dates each item by the last
//! sweep that found its lane caught up (every item it takes after that was
//! published after it): the recorded wait is at least the real one and
//! exceeds it by at most the time between two looks at the lane, which is
//! short while the drainer keeps up.
//!
//! # Coming from another batcher's series
//!
//! The series a production batcher with adaptive sizing exported, and the
//! ones that answer the same questions here (names without the namespace;
//! `Stats` fields in brackets):
//!
//! | their series | ours |
//! | --- | --- |
//! | `items_processed_total` | `items_handled_total` (`items_handled`); failed ones in `items_failed_total` |
//! | `batches_processed_total` | `batches_total` (`batches`); `single_item_batches_total` of them held one item |
//! | `errors_total` | `batch_errors_total` (batches whose handler returned an error) and `handler_panics_total`; per item, `items_failed_total` |
//! | `processing_duration_seconds` | `handler_seconds` (histogram, with `histograms` on; its `_sum` is [`Stats::handler_time`]) |
//! | `queue_depth` | `queue_depth` (gauge: every lane and the staging area, [`Stats::queue_depth`]); per lane `lane_depth{lane}` |
//! | `batch_size` | `batch_size` (histogram, with `histograms` on); the adaptive size now is `effective_max_batch` |
//!
//! Throughput is a rate of the counters (`rate(…_items_handled_total[1m])`
//! in Prometheus); batch efficiency is [`Stats::batch_efficiency`], bytes
//! processed (with a weigher) `bytes_dispatched_total`.

use std::time::Duration;

use hdrhistogram::Histogram;

// The module docs name `Stats` and its fields.
#[cfg(doc)]
use crate::stats::Stats;

pub use crate::stats::{BucketCounts, HistogramBuckets, Histograms, Percentiles};

mod prometheus;

pub use prometheus::{LabelError, LabelProblem, PrometheusOptions};

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

#[cfg(feature = "metrics")]
impl Histograms {
    /// Each histogram as exported: its name (in seconds where it is a time),
    /// help text, percentiles, and its units per exported unit (1e9 ns per
    /// second: exporters divide once, so 90559 ns reads 0.000090559).
    pub(crate) fn exported(&self) -> [(&'static str, &'static str, &Percentiles, f64); 4] {
        let [a, b, c, d] = EXPORTED;
        [
            (a.0, a.1, &self.batch_size, a.2),
            (b.0, b.1, &self.queue_wait_ns, b.2),
            (c.0, c.1, &self.handler_ns, c.2),
            (d.0, d.1, &self.end_to_end_ns, d.2),
        ]
    }
}

impl HistogramBuckets {
    /// Each histogram as exported, as [`Histograms::exported`] names them.
    pub(crate) fn exported(&self) -> [(&'static str, &'static str, &BucketCounts, f64); 4] {
        let [a, b, c, d] = EXPORTED;
        [
            (a.0, a.1, &self.batch_size, a.2),
            (b.0, b.1, &self.queue_wait_ns, b.2),
            (c.0, c.1, &self.handler_ns, c.2),
            (d.0, d.1, &self.end_to_end_ns, d.2),
        ]
    }
}

/// The four histograms' names, help texts and units per exported unit, in
/// the order of [`Histograms`]' fields (every exporter uses these).
pub(crate) const EXPORTED: [(&str, &str, f64); 4] = [
    ("batch_size", "Items per batch.", 1.0),
    (
        "queue_wait_seconds",
        "Submission to dispatch, per item.",
        1e9,
    ),
    ("handler_seconds", "Handler time per batch.", 1e9),
    (
        "end_to_end_seconds",
        "Submission to completion, per item.",
        1e9,
    ),
];

/// Highest time recorded: an hour (longer values are clamped).
const MAX_NS: u64 = 3_600_000_000_000;

/// The default time bounds: 1, 2.5 and 5 per decade from 1 µs to 10 s.
const DEFAULT_TIME_NS: [u64; 22] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The bucket bounds of the four histograms, set with
/// [`BatcherBuilder::histogram_buckets`](crate::BatcherBuilder::histogram_buckets).
///
/// Each bound is an inclusive upper bound (Prometheus' `le`); a last bucket
/// with no bound (`+Inf`) takes the rest. The defaults:
///
/// - batch size: powers of two from 1 up to `max_batch` (rounded up to a
///   power of two);
/// - the three times: 1, 2.5 and 5 per decade from 1 µs to 10 s
///   ([`DEFAULT_TIMES`](Self::DEFAULT_TIMES)).
///
/// Bounds must increase strictly, and a time bound may be at most an hour
/// (longer times are recorded as an hour); `build` says which histogram's
/// bound is at fault ([`ConfigError::BucketsNotIncreasing`],
/// [`ConfigError::TooLong`]). Give every instance the same bounds so that
/// their buckets add up.
///
/// ```
/// use std::time::Duration;
/// use ringbatch::metrics::BucketBounds;
/// use ringbatch::{Batch, Batcher};
///
/// let batcher = Batcher::builder()
///     .histograms(true)
///     .histogram_buckets(
///         BucketBounds::new()
///             .batch_size([1, 10, 100])
///             .handler((1..=4).map(|ms| Duration::from_millis(ms * 5))),
///     )
///     .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
///         batch.ok_with(|_| ());
///         Ok(())
///     })
///     .build()
///     .unwrap();
/// batcher.producer().push(1).unwrap();
/// let stats = batcher.shutdown();
/// let sizes = stats.buckets.unwrap().batch_size;
/// assert_eq!(sizes.bounds, [1, 10, 100]);
/// assert_eq!(sizes.cumulative, [1, 1, 1]);
/// assert_eq!((sizes.count, sizes.sum), (1, 1));
/// ```
///
/// [`ConfigError::BucketsNotIncreasing`]: crate::ConfigError::BucketsNotIncreasing
/// [`ConfigError::TooLong`]: crate::ConfigError::TooLong
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketBounds {
    /// `None`: powers of two up to `max_batch`.
    pub(crate) batch_size: Option<Vec<u64>>,
    /// `None`: [`DEFAULT_TIMES`](Self::DEFAULT_TIMES), for each time (queue
    /// wait, handler, end to end).
    pub(crate) times: [Option<Vec<Duration>>; 3],
}

/// What is wrong with a [`BucketBounds`] (made into a `ConfigError` by
/// `build`, which knows that type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BoundsFault {
    /// `bound` (items or ns) at `index` is not above `previous`.
    NotIncreasing {
        field: &'static str,
        index: usize,
        bound: u64,
        previous: u64,
    },
    /// A time bound above the longest time recorded.
    TooLong {
        field: &'static str,
        value: Duration,
        max: Duration,
    },
}

/// Resolved bounds, in the order of [`Histograms`]' fields (items, then ns).
pub(crate) type Bounds = [Box<[u64]>; 4];

impl BucketBounds {
    /// The default time bounds: 1, 2.5 and 5 per decade from 1 µs to 10 s.
    pub const DEFAULT_TIMES: [Duration; 22] = {
        let mut out = [Duration::ZERO; 22];
        let mut i = 0;
        while i < 22 {
            out[i] = Duration::from_nanos(DEFAULT_TIME_NS[i]);
            i += 1;
        }
        out
    };

    /// The defaults (see the type's docs).
    pub fn new() -> Self {
        Self::default()
    }

    /// The batch size histogram's bounds, in items.
    #[must_use = "the bounds are returned, not changed in place"]
    pub fn batch_size(mut self, bounds: impl IntoIterator<Item = u64>) -> Self {
        self.batch_size = Some(bounds.into_iter().collect());
        self
    }

    /// The bounds of all three time histograms (queue wait, handler, end to
    /// end).
    #[must_use = "the bounds are returned, not changed in place"]
    pub fn times(mut self, bounds: impl IntoIterator<Item = Duration>) -> Self {
        let bounds: Vec<Duration> = bounds.into_iter().collect();
        self.times = [Some(bounds.clone()), Some(bounds.clone()), Some(bounds)];
        self
    }

    /// The queue wait histogram's bounds.
    #[must_use = "the bounds are returned, not changed in place"]
    pub fn queue_wait(mut self, bounds: impl IntoIterator<Item = Duration>) -> Self {
        self.times[0] = Some(bounds.into_iter().collect());
        self
    }

    /// The handler time histogram's bounds.
    #[must_use = "the bounds are returned, not changed in place"]
    pub fn handler(mut self, bounds: impl IntoIterator<Item = Duration>) -> Self {
        self.times[1] = Some(bounds.into_iter().collect());
        self
    }

    /// The end-to-end histogram's bounds.
    #[must_use = "the bounds are returned, not changed in place"]
    pub fn end_to_end(mut self, bounds: impl IntoIterator<Item = Duration>) -> Self {
        self.times[2] = Some(bounds.into_iter().collect());
        self
    }

    /// The bounds in recording units, checked.
    pub(crate) fn resolve(&self, max_batch: usize) -> Result<Bounds, BoundsFault> {
        let sizes: Vec<u64> = match &self.batch_size {
            Some(bounds) => bounds.clone(),
            None => {
                let top = (max_batch.max(1) as u64).next_power_of_two();
                core::iter::successors(Some(1u64), |&b| (b < top).then(|| b * 2)).collect()
            }
        };
        let fields = [
            "histogram_buckets.queue_wait",
            "histogram_buckets.handler",
            "histogram_buckets.end_to_end",
        ];
        let mut times: [Vec<u64>; 3] = Default::default();
        for ((out, bounds), field) in times.iter_mut().zip(&self.times).zip(fields) {
            *out = match bounds {
                None => DEFAULT_TIME_NS.to_vec(),
                Some(bounds) => {
                    let max = Duration::from_nanos(MAX_NS);
                    if let Some(&value) = bounds.iter().find(|&&b| b > max) {
                        return Err(BoundsFault::TooLong { field, value, max });
                    }
                    bounds.iter().map(|&b| ns(b)).collect()
                }
            };
        }
        let [queue_wait, handler, end_to_end] = times;
        let all = [
            ("histogram_buckets.batch_size", sizes),
            (fields[0], queue_wait),
            (fields[1], handler),
            (fields[2], end_to_end),
        ];
        for (field, bounds) in &all {
            if let Some(index) = bounds.windows(2).position(|w| w[1] <= w[0]) {
                return Err(BoundsFault::NotIncreasing {
                    field,
                    index: index + 1,
                    bound: bounds[index + 1],
                    previous: bounds[index],
                });
            }
        }
        Ok(all.map(|(_, bounds)| bounds.into_boxed_slice()))
    }
}

/// One distribution in fixed buckets: a count per bucket (the last one
/// past every bound) and the exact sum.
#[derive(Debug)]
struct Counts {
    bounds: Box<[u64]>,
    /// `bounds.len() + 1` counts, not cumulative (one add per record).
    counts: Box<[u64]>,
    sum: u128,
}

impl Counts {
    fn new(bounds: Box<[u64]>) -> Self {
        Self {
            counts: vec![0; bounds.len() + 1].into_boxed_slice(),
            bounds,
            sum: 0,
        }
    }

    /// `n` values of `value`: a binary search and two adds.
    #[inline]
    fn record_n(&mut self, value: u64, n: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.counts[bucket] += n;
        self.sum += u128::from(value) * u128::from(n);
    }

    fn snapshot(&self) -> BucketCounts {
        let mut running = 0;
        let mut cumulative: Vec<u64> = self
            .counts
            .iter()
            .map(|&c| {
                running += c;
                running
            })
            .collect();
        let count = cumulative.pop().unwrap_or(0);
        BucketCounts {
            bounds: self.bounds.to_vec(),
            cumulative,
            count,
            sum: self.sum,
        }
    }
}

/// The `metrics` crate histograms a batcher built with
/// `BatcherBuilder::metrics` records into, beside its own (batch size in
/// items, the times in seconds), and where a panic of the recorder behind
/// them is counted.
#[cfg(feature = "metrics")]
#[derive(Debug)]
pub(crate) struct FacadeHistograms {
    pub(crate) handles: [::metrics::Histogram; 4],
    pub(crate) panics: std::sync::Arc<crate::stats::ContainedPanics>,
}

#[cfg(feature = "metrics")]
impl FacadeHistograms {
    /// Records `(value, count)` runs into histogram `which`, values divided
    /// by `per_unit`; the recorder is user code: a panic is contained.
    fn record(&self, which: usize, per_unit: f64, runs: impl Iterator<Item = (u64, u64)>) {
        let handle = &self.handles[which];
        let outcome = crate::contain::call(|| {
            for (value, count) in runs {
                let count = usize::try_from(count).unwrap_or(usize::MAX);
                handle.record_many(value as f64 / per_unit, count);
            }
        });
        if outcome.is_err() {
            self.panics.callback();
        }
    }
}

/// The live histograms (behind a lock taken once per batch).
#[derive(Debug)]
pub(crate) struct Recorder {
    batch_size: Histogram<u64>,
    queue_wait: Histogram<u64>,
    handler: Histogram<u64>,
    end_to_end: Histogram<u64>,
    /// The same four in fixed buckets, in the same order.
    buckets: [Counts; 4],
    #[cfg(feature = "metrics")]
    facade: Option<FacadeHistograms>,
}

impl Recorder {
    pub(crate) fn new(max_batch: usize, bounds: Bounds) -> Self {
        let sizes = (max_batch as u64).max(2);
        let times = || Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid bounds");
        Self {
            batch_size: Histogram::new_with_bounds(1, sizes, 3).expect("valid bounds"),
            queue_wait: times(),
            handler: times(),
            end_to_end: times(),
            buckets: bounds.map(Counts::new),
            #[cfg(feature = "metrics")]
            facade: None,
        }
    }

    /// Records into the `metrics` crate's histograms too.
    #[cfg(feature = "metrics")]
    pub(crate) fn with_facade(mut self, facade: Option<FacadeHistograms>) -> Self {
        self.facade = facade;
        self
    }

    /// One dispatched batch of `size` items, with the queue wait of its
    /// items as `(wait_ns, count)` runs.
    pub(crate) fn dispatched(
        &mut self,
        size: usize,
        waits: impl Iterator<Item = (u64, u64)> + Clone,
    ) {
        self.batch_size.saturating_record(size as u64);
        self.buckets[0].record_n(size as u64, 1);
        for (wait, count) in waits.clone() {
            let wait = wait.min(MAX_NS);
            self.queue_wait.saturating_record_n(wait, count);
            self.buckets[1].record_n(wait, count);
        }
        #[cfg(feature = "metrics")]
        if let Some(facade) = &self.facade {
            facade.record(0, 1.0, core::iter::once((size as u64, 1)));
            facade.record(1, 1e9, waits.map(|(wait, n)| (wait.min(MAX_NS), n)));
        }
    }

    /// One finished batch: its handler time, and each item's end to end
    /// time as `(ns, count)` runs.
    pub(crate) fn finished(
        &mut self,
        handler: Duration,
        ends: impl Iterator<Item = (u64, u64)> + Clone,
    ) {
        let handler = ns(handler);
        self.handler.saturating_record(handler);
        self.buckets[2].record_n(handler, 1);
        for (end, count) in ends.clone() {
            let end = end.min(MAX_NS);
            self.end_to_end.saturating_record_n(end, count);
            self.buckets[3].record_n(end, count);
        }
        #[cfg(feature = "metrics")]
        if let Some(facade) = &self.facade {
            facade.record(2, 1e9, core::iter::once((handler, 1)));
            facade.record(3, 1e9, ends.map(|(end, n)| (end.min(MAX_NS), n)));
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

    /// The bucket counts (allocates: a snapshot, not the recording path).
    pub(crate) fn buckets(&self) -> HistogramBuckets {
        let [batch_size, queue_wait_ns, handler_ns, end_to_end_ns] =
            self.buckets.each_ref().map(Counts::snapshot);
        HistogramBuckets {
            batch_size,
            queue_wait_ns,
            handler_ns,
            end_to_end_ns,
        }
    }

    /// Bytes the histograms hold (for the memory report).
    pub(crate) fn footprint(&self) -> usize {
        let hdr: usize = [
            &self.batch_size,
            &self.queue_wait,
            &self.handler,
            &self.end_to_end,
        ]
        .iter()
        .map(|h| h.distinct_values() * core::mem::size_of::<u64>())
        .sum();
        let buckets: usize = self
            .buckets
            .iter()
            .map(|c| (c.bounds.len() + c.counts.len()) * core::mem::size_of::<u64>())
            .sum();
        hdr + buckets
    }
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).min(MAX_NS)
}
