//! The `metrics` crate facade (feature `metrics`): a [`Stats`] snapshot
//! exported through the `metrics` macros, for applications that already
//! ship their metrics through a `metrics` recorder (a Prometheus exporter,
//! StatsD, OpenTelemetry bridges).

use crate::stats::{DispatchReason, LaneStats, Stats};

/// Reads one figure of a lane.
type LaneField = fn(&LaneStats) -> u64;

impl Stats {
    /// Exports the snapshot through the [`metrics`](https://docs.rs/metrics)
    /// crate's recorder (the global one, or a local one in scope), under the
    /// names [`prometheus`](Stats::prometheus) uses, each starting with
    /// `prefix` and an underscore:
    ///
    /// - counters (set with `absolute`, so call this as often as you like):
    ///   `submitted_total`, `accepted_total`, `rejected_total`,
    ///   `dropped_total`, `refused_closed_total`, `batches_total`,
    ///   `items_handled_total`, `items_failed_total`, `expired_total`,
    ///   `superseded_total`, `too_large_total`, `batch_errors_total`,
    ///   `handler_panics_total`, `retried_total`, `dead_lettered_total`,
    ///   `circuit_rejected_total`, `parks_total`, `park_fences_total`,
    ///   `callback_panics_total`, `drop_panics_total`, `dispatched_total`
    ///   with a `reason` label, and `lane_accepted_total`,
    ///   `lane_rejected_total`, `lane_dropped_total`,
    ///   `lane_refused_closed_total` with a `lane` label;
    /// - gauges: `breaker_state` (0 closed, 1 open, 2 half open),
    ///   `batches_in_flight`, `staged`, `effective_max_batch`,
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
        for (suffix, help, value) in counters {
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
        for (suffix, help, value) in gauges {
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

        let lane_gauges: [(&str, &str, LaneField); 2] = [
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
        for (suffix, help, field) in lane_gauges {
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
