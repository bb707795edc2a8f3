//! The Prometheus text exposition of a [`Stats`] snapshot: names, labels,
//! the series lists the other exports share.

use core::fmt::{self, Write as _};

use crate::stats::{DispatchReason, Stats};

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
        for (name, help, value) in counters.into_iter().chain(self.durable_counter_series()) {
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
        for (name, help, value) in gauges.into_iter().chain(self.durable_gauge_series()) {
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

    /// (feature `durable`) The durable store's counters, when the batcher
    /// has one, as [`counter_series`](Self::counter_series).
    pub(crate) fn durable_counter_series(&self) -> Vec<(&'static str, &'static str, u64)> {
        #[cfg(feature = "durable")]
        if let Some(d) = &self.durable {
            return vec![
                (
                    "durable_items_written_total",
                    "Items written to the durable store.",
                    d.items_written,
                ),
                (
                    "durable_written_at_shutdown_total",
                    "Items written to the durable store at shutdown instead of handled.",
                    d.written_at_shutdown,
                ),
                (
                    "durable_replayed_total",
                    "Items replayed from the durable store.",
                    d.replayed,
                ),
                (
                    "durable_fsyncs_total",
                    "fsyncs of the durable store's files.",
                    d.fsyncs,
                ),
                (
                    "durable_corrupt_records_cut_total",
                    "Corrupt records cut from the durable store when it was opened.",
                    d.corrupt_records_cut,
                ),
                (
                    "durable_write_errors_total",
                    "Failed writes and syncs of the durable store.",
                    d.write_errors,
                ),
                (
                    "durable_decode_errors_total",
                    "Replayed items that did not decode.",
                    d.decode_errors,
                ),
            ];
        }
        Vec::new()
    }

    /// (feature `durable`) The durable store's gauges, as
    /// [`durable_counter_series`](Self::durable_counter_series).
    pub(crate) fn durable_gauge_series(&self) -> Vec<(&'static str, &'static str, u64)> {
        #[cfg(feature = "durable")]
        if let Some(d) = &self.durable {
            return vec![
                (
                    "durable_bytes_on_disk",
                    "Bytes of the durable store's segment files.",
                    d.bytes_on_disk,
                ),
                (
                    "durable_segments",
                    "Segment files of the durable store.",
                    d.segments,
                ),
            ];
        }
        Vec::new()
    }

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
