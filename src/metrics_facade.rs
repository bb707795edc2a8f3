//! The `metrics` crate facade (feature `metrics`), for applications that
//! already ship their metrics through a `metrics` recorder (a Prometheus
//! exporter, StatsD, OpenTelemetry bridges). Two ways:
//!
//! - Push, per batch:
//!   [`BatcherBuilder::metrics`](crate::BatcherBuilder::metrics) registers
//!   every series' handle once, at `build` (with the recorder then in
//!   scope), and the drainer records into them as it goes: the histograms
//!   per batch (per run of items for the per-item times), as real
//!   histograms; the counters and gauges from the batcher's own counts,
//!   per batch (at most every 10 ms under a steady load, where reading
//!   every lane's cursors per batch would cost the producers), and when it
//!   falls idle, finishes a flush or exits. Nothing runs at scrape time.
//! - Pull, per call: [`Stats::export_metrics`] sets every value from a
//!   snapshot, the histograms as quantile gauges, through the recorder in
//!   scope at the call.
//!
//! Use one or the other for a given prefix: both write the same names, and
//! the histograms under different kinds. The public docs are on the two
//! methods.

use std::time::Duration;

use ::metrics::{Counter, Gauge, Histogram, Label};

use crate::stats::{ContainedPanics, DispatchReason, Moment, Stats};
use crate::sync::Mutex;

/// The longest the counters and gauges lag the batcher's own counts while
/// batches keep filling up (a full batch does not read the lanes sooner).
const SYNC_EVERY: Duration = Duration::from_millis(10);

/// What `BatcherBuilder::metrics` asked for: the names' prefix and the
/// labels every series carries.
#[derive(Debug, Clone)]
pub(crate) struct FacadeSettings {
    pub(crate) prefix: String,
    pub(crate) labels: Vec<(String, String)>,
}

/// The handles registered at build, and what the sync keeps between calls.
pub(crate) struct Facade {
    /// In the order of `Stats::counter_series`.
    counters: Vec<Counter>,
    /// In the order of `DispatchReason::ALL`.
    dispatched: Vec<Counter>,
    /// In the order of `Stats::gauge_series`.
    gauges: Vec<Gauge>,
    /// Per ring: `Stats::LANE_COUNTERS`, then `Stats::LANE_GAUGES`.
    lanes: Vec<([Counter; 4], [Gauge; 2])>,
    state: Mutex<SyncState>,
    /// Where a panic of the recorder (user code) is counted.
    panics: std::sync::Arc<ContainedPanics>,
}

impl core::fmt::Debug for Facade {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Facade")
            .field("lanes", &self.lanes.len())
            .finish_non_exhaustive()
    }
}

/// The sync's own state (locked by the drainer only).
struct SyncState {
    /// The counts last read; its `lanes` keeps its allocation between syncs.
    scratch: Stats,
    /// The drainer's clock (ns) at the last sync.
    last: u64,
    /// A batch skipped the sync: the next idle turn makes it.
    pending: bool,
}

impl Facade {
    /// Registers every series (describing each name once) with the recorder
    /// in scope, for `rings` lanes; the four histograms too when `histograms`
    /// (batch size, queue wait, handler, end to end).
    pub(crate) fn register(
        settings: &FacadeSettings,
        rings: usize,
        histograms: bool,
        panics: std::sync::Arc<ContainedPanics>,
    ) -> (Self, Option<[Histogram; 4]>) {
        let prefix = &settings.prefix;
        let labels: Vec<Label> = settings
            .labels
            .iter()
            .map(|(k, v)| Label::new(k.clone(), v.clone()))
            .collect();
        let with = |key: &'static str, value: String| {
            let mut all = labels.clone();
            all.push(Label::new(key, value));
            all
        };
        let stats = Stats::default();
        let counters = stats
            .counter_series()
            .iter()
            .map(|&(suffix, help, _)| {
                let name = format!("{prefix}_{suffix}");
                ::metrics::describe_counter!(name.clone(), help);
                ::metrics::counter!(name, labels.clone())
            })
            .collect();
        let dispatched_name = format!("{prefix}_dispatched_total");
        ::metrics::describe_counter!(
            dispatched_name.clone(),
            "Batches dispatched, by the reason they left."
        );
        let dispatched = DispatchReason::ALL
            .iter()
            .map(|r| {
                ::metrics::counter!(dispatched_name.clone(), with("reason", r.name().to_owned()))
            })
            .collect();
        let gauges = stats
            .gauge_series()
            .iter()
            .map(|&(suffix, help, _)| {
                let name = format!("{prefix}_{suffix}");
                ::metrics::describe_gauge!(name.clone(), help);
                ::metrics::gauge!(name, labels.clone())
            })
            .collect();
        let lane_counters = Stats::LANE_COUNTERS.map(|(suffix, help, _)| {
            let name = format!("{prefix}_{suffix}");
            ::metrics::describe_counter!(name.clone(), help);
            name
        });
        let lane_gauges = Stats::LANE_GAUGES.map(|(suffix, help, _)| {
            let name = format!("{prefix}_{suffix}");
            ::metrics::describe_gauge!(name.clone(), help);
            name
        });
        let lanes = (0..rings)
            .map(|i| {
                let lane = || with("lane", i.to_string());
                (
                    lane_counters
                        .each_ref()
                        .map(|name| ::metrics::counter!(name.clone(), lane())),
                    lane_gauges
                        .each_ref()
                        .map(|name| ::metrics::gauge!(name.clone(), lane())),
                )
            })
            .collect();
        let histograms = histograms.then(|| {
            crate::metrics::EXPORTED.map(|(suffix, help, _)| {
                let name = format!("{prefix}_{suffix}");
                ::metrics::describe_histogram!(name.clone(), help);
                ::metrics::histogram!(name, labels.clone())
            })
        });
        let facade = Self {
            counters,
            dispatched,
            gauges,
            lanes,
            state: Mutex::new(SyncState {
                scratch: Stats::default(),
                last: 0,
                pending: false,
            }),
            panics,
        };
        (facade, histograms)
    }

    /// Brings the counters and gauges up to the batcher's counts (`fill`
    /// reads them into a `Stats` without histograms) when `moment` calls
    /// for it; `now` is the drainer's clock in ns. Allocates nothing once
    /// the first sync has sized the lanes.
    pub(crate) fn sync(&self, moment: Moment, now: u64, fill: impl FnOnce(&mut Stats)) {
        let mut state = crate::contain::lock(&self.state);
        let due = match moment {
            // A full batch means more is coming: sync now and then only.
            Moment::Batch(DispatchReason::Full | DispatchReason::Bytes) => {
                now.saturating_sub(state.last) >= SYNC_EVERY.as_nanos() as u64
            }
            Moment::Batch(_) | Moment::Final => true,
            Moment::Idle => state.pending,
        };
        if !due {
            state.pending |= matches!(moment, Moment::Batch(_));
            return;
        }
        state.last = now;
        state.pending = false;
        let lanes = core::mem::take(&mut state.scratch.lanes);
        state.scratch = Stats {
            lanes,
            ..Stats::default()
        };
        fill(&mut state.scratch);
        // The recorder behind the handles is user code.
        if crate::contain::call(|| self.set(&state.scratch)).is_err() {
            self.panics.callback();
        }
    }

    /// Sets every handle from `stats`.
    fn set(&self, stats: &Stats) {
        for (handle, (_, _, value)) in self.counters.iter().zip(stats.counter_series()) {
            handle.absolute(value);
        }
        for (handle, reason) in self.dispatched.iter().zip(DispatchReason::ALL) {
            handle.absolute(stats.dispatched.get(reason));
        }
        for (handle, (_, _, value)) in self.gauges.iter().zip(stats.gauge_series()) {
            handle.set(value as f64);
        }
        for ((counters, gauges), lane) in self.lanes.iter().zip(&stats.lanes) {
            for (handle, (_, _, field)) in counters.iter().zip(Stats::LANE_COUNTERS) {
                handle.absolute(field(lane));
            }
            for (handle, (_, _, field)) in gauges.iter().zip(Stats::LANE_GAUGES) {
                handle.set(field(lane) as f64);
            }
        }
    }
}

impl Stats {
    /// Exports the snapshot through the [`metrics`](https://docs.rs/metrics)
    /// crate's recorder (the global one, or a local one in scope), under the
    /// names [`prometheus`](Stats::prometheus) uses, each starting with
    /// `prefix` and an underscore: the pull alternative to
    /// [`BatcherBuilder::metrics`](crate::BatcherBuilder::metrics), which
    /// records as the batcher runs, with real histograms.
    ///
    /// - counters (set with `absolute`, so call this as often as you like):
    ///   `submitted_total`, `accepted_total`, `rejected_total`,
    ///   `dropped_total`, `refused_closed_total`, `batches_total`,
    ///   `items_handled_total`, `single_item_batches_total`,
    ///   `bytes_dispatched_total`, `items_failed_total`, `expired_total`,
    ///   `superseded_total`, `too_large_total`, `batch_errors_total`,
    ///   `handler_panics_total`, `retried_total`, `dead_lettered_total`,
    ///   `circuit_rejected_total`, `parks_total`, `park_fences_total`,
    ///   `callback_panics_total`, `drop_panics_total`, `dispatched_total`
    ///   with a `reason` label, and `lane_accepted_total`,
    ///   `lane_rejected_total`, `lane_dropped_total`,
    ///   `lane_refused_closed_total` with a `lane` label;
    /// - gauges: `breaker_state` (0 closed, 1 open, 2 half open),
    ///   `batches_in_flight`, `staged`, `queue_depth`, `effective_max_batch`,
    ///   `max_batch_items`, `pool_free`, `memory_bytes`, and `lane_depth`,
    ///   `lane_depth_high_water` with a `lane` label;
    /// - with histograms recorded: `batch_size`, `queue_wait_seconds`,
    ///   `handler_seconds`, `end_to_end_seconds` as gauges with a
    ///   `quantile` label (`"0.5"` to `"0.9999"`), plus a `_sum` gauge and a
    ///   `_count` counter each (times in seconds).
    ///
    /// Every metric is described (its help text) on each call too.
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
    /// batcher.producer().push(1).unwrap();
    /// batcher.flush();
    /// // With a recorder installed (`metrics::set_global_recorder`), call
    /// // this periodically, e.g. from the thread that serves /metrics.
    /// batcher.stats().export_metrics("orders");
    /// ```
    pub fn export_metrics(&self, prefix: &str) {
        let name = |suffix: &str| format!("{prefix}_{suffix}");
        let counters = self.counter_series();
        for (suffix, help, value) in counters.into_iter().chain(self.durable_counter_series()) {
            let name = name(suffix);
            ::metrics::describe_counter!(name.clone(), help);
            ::metrics::counter!(name).absolute(value);
        }

        let dispatched = name("dispatched_total");
        ::metrics::describe_counter!(
            dispatched.clone(),
            "Batches dispatched, by the reason they left."
        );
        for reason in DispatchReason::ALL {
            ::metrics::counter!(dispatched.clone(), "reason" => reason.name())
                .absolute(self.dispatched.get(reason));
        }

        let gauges = self.gauge_series();
        for (suffix, help, value) in gauges.into_iter().chain(self.durable_gauge_series()) {
            let name = name(suffix);
            ::metrics::describe_gauge!(name.clone(), help);
            ::metrics::gauge!(name).set(value as f64);
        }

        for (suffix, help, field) in Stats::LANE_COUNTERS {
            let name = name(suffix);
            ::metrics::describe_counter!(name.clone(), help);
            for (i, lane) in self.lanes.iter().enumerate() {
                ::metrics::counter!(name.clone(), "lane" => i.to_string()).absolute(field(lane));
            }
        }

        for (suffix, help, field) in Stats::LANE_GAUGES {
            let name = name(suffix);
            ::metrics::describe_gauge!(name.clone(), help);
            for (i, lane) in self.lanes.iter().enumerate() {
                ::metrics::gauge!(name.clone(), "lane" => i.to_string()).set(field(lane) as f64);
            }
        }

        let Some(h) = &self.histograms else {
            return;
        };
        for (suffix, help, p, per_unit) in h.exported() {
            let name = name(suffix);
            ::metrics::describe_gauge!(name.clone(), help);
            for (q, value) in p.quantiles() {
                ::metrics::gauge!(name.clone(), "quantile" => q.to_string())
                    .set(value as f64 / per_unit);
            }
            let sum = format!("{name}_sum");
            ::metrics::describe_gauge!(sum.clone(), help);
            ::metrics::gauge!(sum).set(p.mean * p.count as f64 / per_unit);
            let count = format!("{name}_count");
            ::metrics::describe_counter!(count.clone(), help);
            ::metrics::counter!(count).absolute(p.count);
        }
    }
}
