//! The `metrics` crate facade (feature `metrics`): a [`Stats`] snapshot
//! exported through the `metrics` macros, for applications that already
//! ship their metrics through a `metrics` recorder (a Prometheus exporter,
//! StatsD, OpenTelemetry bridges).

use crate::metrics::Percentiles;
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
    ///   `circuit_rejected_total`, and `dispatched_total` with a `reason`
    ///   label;
    /// - gauges: `batches_in_flight`, `staged`, `effective_max_batch`,
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
        let counters: [(&str, &str, u64); 16] = [
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
                "Items that failed for good and went to the dead-letter handler.",
                self.dead_lettered,
            ),
            (
                "circuit_rejected_total",
                "Items failed because the circuit breaker was open.",
                self.circuit_rejected,
            ),
        ];
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

        let gauges: [(&str, &str, f64); 6] = [
            (
                "batches_in_flight",
                "Batches handed to async handler tasks and not finished.",
                self.batches_in_flight as f64,
            ),
            (
                "staged",
                "Items held in the drainer's staging area.",
                self.staged as f64,
            ),
            (
                "effective_max_batch",
                "The effective maximum batch size.",
                self.effective_max_batch as f64,
            ),
            (
                "max_batch_items",
                "The largest batch dispatched.",
                self.max_batch_items as f64,
            ),
            (
                "pool_free",
                "Batch buffers free in the pool.",
                self.pool_free as f64,
            ),
            (
                "memory_bytes",
                "Bytes fixed at build time.",
                self.memory_bytes as f64,
            ),
        ];
        for (suffix, help, value) in gauges {
            let name = name(suffix);
            ::metrics::describe_gauge!(name.clone(), help);
            ::metrics::gauge!(name).set(value);
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
        let summaries: [(&str, &str, &Percentiles, f64); 4] = [
            ("batch_size", "Items per batch.", &h.batch_size, 1.0),
            (
                "queue_wait_seconds",
                "Submission to dispatch, per item.",
                &h.queue_wait_ns,
                1e9,
            ),
            (
                "handler_seconds",
                "Handler time per batch.",
                &h.handler_ns,
                1e9,
            ),
            (
                "end_to_end_seconds",
                "Submission to completion, per item.",
                &h.end_to_end_ns,
                1e9,
            ),
        ];
        // The last field is the units per exported unit (ns per second).
        for (suffix, help, p, per_unit) in summaries {
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
