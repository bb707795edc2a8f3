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

use core::fmt::{self, Write as _};
use std::time::Duration;

use hdrhistogram::Histogram;

pub use crate::stats::{BucketCounts, HistogramBuckets, Histograms, Percentiles};
use crate::stats::{DispatchReason, Stats};

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

/// How [`Stats::prometheus_with`] names and labels the series: a namespace
/// (every name starts with it and an underscore) and constant labels that
/// every series carries, so that several batchers (or instances) can share
/// one endpoint.
///
/// ```
/// use ringbatch::metrics::PrometheusOptions;
///
/// let options = PrometheusOptions::new("rb")
///     .label("batcher", "orders")?
///     .label("region", "eu \"west\"")?;
/// let text = ringbatch::Stats::default().prometheus_with(&options);
/// assert!(text.contains("rb_batches_total{batcher=\"orders\",region=\"eu \\\"west\\\"\"} 0\n"));
/// # Ok::<(), ringbatch::metrics::LabelError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrometheusOptions {
    namespace: String,
    labels: Vec<(String, String)>,
}

/// Label names the exposition writes itself.
const RESERVED_LABELS: [&str; 4] = ["lane", "reason", "le", "quantile"];

impl PrometheusOptions {
    /// Series named `namespace_...` (`namespace` must match
    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`; other characters become underscores),
    /// with no constant labels.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            labels: Vec::new(),
        }
    }

    /// Adds a constant label to every series. The value may hold any text
    /// (it is escaped); the name must be a Prometheus label name
    /// (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`).
    ///
    /// # Errors
    ///
    /// A [`LabelError`] with the name and value, when the name is not a
    /// label name, is one the exposition writes itself (`lane`, `reason`,
    /// `le`, `quantile`), or was given already.
    pub fn label(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, LabelError> {
        let (name, value) = (name.into(), value.into());
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with("__");
        let problem = if !valid {
            Some(LabelProblem::InvalidName)
        } else if RESERVED_LABELS.contains(&name.as_str()) {
            Some(LabelProblem::Reserved)
        } else if self.labels.iter().any(|(n, _)| *n == name) {
            Some(LabelProblem::Duplicate)
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(LabelError {
                name,
                value,
                problem,
            });
        }
        self.labels.push((name, value));
        Ok(self)
    }

    /// The namespace, as given.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The constant labels, in the order given.
    pub fn labels(&self) -> &[(String, String)] {
        &self.labels
    }
}

/// A constant label [`PrometheusOptions::label`] refused, given back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LabelError {
    /// The label's name.
    pub name: String,
    /// The label's value.
    pub value: String,
    /// What is wrong with it.
    pub problem: LabelProblem,
}

/// What is wrong with a constant label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LabelProblem {
    /// The name is not a Prometheus label name.
    InvalidName,
    /// The exposition writes a label of that name itself.
    Reserved,
    /// A label of that name was given already.
    Duplicate,
}

impl fmt::Display for LabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.name;
        match self.problem {
            LabelProblem::InvalidName => write!(
                f,
                "label {name:?}: not a label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
            ),
            LabelProblem::Reserved => write!(
                f,
                "label {name:?}: the exposition writes it itself (lane, reason, le, quantile)"
            ),
            LabelProblem::Duplicate => write!(f, "label {name:?} given twice"),
        }
    }
}

impl std::error::Error for LabelError {}

/// Writes `value` escaped as the exposition format wants a label value.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

impl Stats {
    /// The snapshot in the Prometheus text exposition format (version
    /// 0.0.4), every metric name starting with `namespace` and an
    /// underscore: [`prometheus_with`](Self::prometheus_with) with no
    /// constant labels.
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
    /// assert!(text.contains("# TYPE orders_handler_seconds histogram"));
    /// assert!(text.contains("orders_handler_seconds_count 1\n"));
    /// ```
    pub fn prometheus(&self, namespace: &str) -> String {
        self.prometheus_with(&PrometheusOptions::new(namespace))
    }

    /// The snapshot in the Prometheus text exposition format (version
    /// 0.0.4), named and labelled as `options` says: every metric name
    /// starts with the namespace and an underscore, and every series
    /// carries the constant labels first.
    ///
    /// Counters end in `_total`; lane gauges and counters carry a `lane`
    /// label, dispatch reasons a `reason` label. The histograms (when
    /// recorded) are Prometheus histograms, from [`Stats::buckets`]:
    /// cumulative `_bucket` series with an `le` label (`+Inf` last), an
    /// exact `_sum` and `_count`, times in seconds. Their percentiles stay
    /// in [`Stats::histograms`]: a quantile cannot be added up across
    /// instances, a bucket can.
    ///
    /// See the [module docs](crate::metrics) for two batchers on one
    /// endpoint.
    pub fn prometheus_with(&self, options: &PrometheusOptions) -> String {
        let ns: String = options
            .namespace
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
        let mut constant = String::new();
        for (name, value) in &options.labels {
            if !constant.is_empty() {
                constant.push(',');
            }
            constant.push_str(name);
            constant.push_str("=\"");
            escape_into(&mut constant, value);
            constant.push('"');
        }
        // The label set of a series: the constant labels, then its own.
        let labels = |own: &str| -> String {
            match (constant.is_empty(), own.is_empty()) {
                (true, true) => String::new(),
                (false, true) => format!("{{{constant}}}"),
                (true, false) => format!("{{{own}}}"),
                (false, false) => format!("{{{constant},{own}}}"),
            }
        };
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP {ns}_{name} {help}");
            let _ = writeln!(out, "# TYPE {ns}_{name} {kind}");
            for (own, value) in samples {
                let _ = writeln!(out, "{ns}_{name}{} {}", labels(own), number(*value));
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
                    format!("reason=\"{}\"", r.name()),
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
                .map(|(i, lane)| (format!("lane=\"{i}\""), f(lane) as f64))
                .collect()
        };
        for (name, help, field) in Stats::LANE_COUNTERS {
            metric(name, "counter", help, &lanes(field));
        }
        for (name, help, field) in Stats::LANE_GAUGES {
            metric(name, "gauge", help, &lanes(field));
        }
        if !self.groups.is_empty() {
            // A group's label is its key hash (`group_key_hash`), in hex;
            // `other` sums the groups that left the table.
            let groups = |f: fn(&crate::GroupStats) -> u64| -> Vec<(String, f64)> {
                self.groups
                    .iter()
                    .map(|g| (format!("group=\"{:016x}\"", g.key_hash), f(g) as f64))
                    .chain(core::iter::once((
                        "group=\"other\"".to_owned(),
                        f(&self.groups_other) as f64,
                    )))
                    .collect()
            };
            for (name, help, field) in Stats::GROUP_COUNTERS {
                metric(name, "counter", help, &groups(field));
            }
        }
        if let Some(buckets) = &self.buckets {
            for (name, help, counts, per_unit) in buckets.exported() {
                // `_bucket`, `_sum` and `_count` are suffixes of the name.
                let _ = writeln!(out, "# HELP {ns}_{name} {help}");
                let _ = writeln!(out, "# TYPE {ns}_{name} histogram");
                for (&bound, &count) in counts.bounds.iter().zip(&counts.cumulative) {
                    // Sizes are whole numbers: written exactly, as integers.
                    let le = if per_unit == 1.0 {
                        bound.to_string()
                    } else {
                        number(bound as f64 / per_unit)
                    };
                    let own = format!("le=\"{le}\"");
                    let _ = writeln!(out, "{ns}_{name}_bucket{} {count}", labels(&own));
                }
                let all = labels("le=\"+Inf\"");
                let _ = writeln!(out, "{ns}_{name}_bucket{all} {}", counts.count);
                let sum = number(counts.sum as f64 / per_unit);
                let _ = writeln!(out, "{ns}_{name}_sum{} {sum}", labels(""));
                let _ = writeln!(out, "{ns}_{name}_count{} {}", labels(""), counts.count);
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
    pub(crate) fn counter_series(&self) -> [(&'static str, &'static str, u64); 22] {
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
                "single_item_batches_total",
                "Batches of a single item.",
                self.single_item_batches,
            ),
            (
                "bytes_dispatched_total",
                "The weight of the items dispatched, by the weigher (0 without one).",
                self.bytes_dispatched,
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

    /// The per-lane gauges every exporter writes, with a `lane` label:
    /// `(name, help, field)`.
    pub(crate) const LANE_GAUGES: [LaneSeries; 2] = [
        (
            "lane_depth",
            "Items in the lane not yet taken by the drainer.",
            |l| l.depth,
        ),
        (
            "lane_depth_high_water",
            "The deepest the lane was seen by the drainer.",
            |l| l.high_water,
        ),
    ];

    /// The gauges every exporter writes, as [`counter_series`](Self::counter_series).
    pub(crate) fn gauge_series(&self) -> [(&'static str, &'static str, u64); 8] {
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
                "queue_depth",
                "Items accepted and not yet dispatched: in every lane and staged.",
                self.in_lanes(),
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
