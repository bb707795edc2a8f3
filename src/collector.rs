//! A batcher's stats as a [`prometheus-client`](https://docs.rs/prometheus-client)
//! collector (feature `prometheus-client`), for applications that serve
//! their own registry.

use core::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::Batcher;
use crate::engine::Shared;
use crate::stats::{DispatchReason, Stats};

/// Takes a fresh snapshot of the batcher, or `None` once it is gone.
type Source = Box<dyn Fn() -> Option<Stats> + Send + Sync>;

/// A [`Collector`] that encodes a fresh [`Stats`] snapshot of one batcher
/// on each scrape: every series of [`Stats::prometheus`], under the same
/// names and help texts, the histograms (when the batcher records them) as
/// Prometheus histograms from [`Stats::buckets`].
///
/// The registry names it: register it in a registry made with a prefix and
/// labels (`Registry::with_prefix_and_labels`, or a sub-registry), so that
/// several batchers share one registry. The text encoder adds `_total` to
/// counters itself, so the names come out as in `Stats::prometheus`.
///
/// The collector holds the batcher weakly: once the batcher and its
/// producers are gone it encodes nothing, and it never keeps the lanes'
/// memory alive.
///
/// ```
/// use prometheus_client::encoding::text::encode;
/// use prometheus_client::registry::Registry;
/// use ringbatch::{Batch, Batcher, PrometheusCollector};
///
/// let batcher = Batcher::builder()
///     .histograms(true)
///     .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
///         batch.ok_with(|_| ());
///         Ok(())
///     })
///     .build()
///     .unwrap();
/// let mut registry = Registry::with_prefix_and_labels(
///     "rb",
///     [("batcher".into(), "orders".into())].into_iter(),
/// );
/// registry.register_collector(Box::new(PrometheusCollector::new(&batcher)));
///
/// batcher.producer().push(1).unwrap();
/// batcher.flush();
/// let mut text = String::new();
/// encode(&mut text, &registry).unwrap();
/// assert!(text.contains("rb_items_handled_total{batcher=\"orders\"} 1\n"));
/// assert!(text.contains("# TYPE rb_handler_seconds histogram\n"));
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus-client")))]
pub struct PrometheusCollector {
    source: Source,
}

impl PrometheusCollector {
    /// A collector of `batcher`'s stats.
    pub fn new<T: Send + 'static, R: Send + 'static>(batcher: &Batcher<T, R>) -> Self {
        let shared = std::sync::Arc::downgrade(&batcher.shared);
        Self {
            source: Box::new(move || shared.upgrade().map(|s| Shared::stats(&s))),
        }
    }
}

impl fmt::Debug for PrometheusCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusCollector")
            .finish_non_exhaustive()
    }
}

/// Counters are named without `_total`: the encoder appends it.
fn counter_name(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

impl Collector for PrometheusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(stats) = (self.source)() else {
            return Ok(());
        };
        let counters = stats.counter_series();
        for (name, help, value) in counters.into_iter().chain(stats.durable_counter_series()) {
            let mut metric =
                encoder.encode_descriptor(counter_name(name), help, None, MetricType::Counter)?;
            metric.encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        let mut metric = encoder.encode_descriptor(
            "dispatched",
            "Batches dispatched, by the reason they left.",
            None,
            MetricType::Counter,
        )?;
        for reason in DispatchReason::ALL {
            let labels = [("reason", reason.name())];
            metric
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&stats.dispatched.get(reason), None)?;
        }
        let gauges = stats.gauge_series();
        for (name, help, value) in gauges.into_iter().chain(stats.durable_gauge_series()) {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            metric.encode_gauge(&value)?;
        }
        let lane_labels: Vec<String> = (0..stats.lanes.len()).map(|i| i.to_string()).collect();
        for (name, help, field) in Stats::LANE_COUNTERS {
            let mut metric =
                encoder.encode_descriptor(counter_name(name), help, None, MetricType::Counter)?;
            for (lane, label) in stats.lanes.iter().zip(&lane_labels) {
                let labels = [("lane", label.as_str())];
                metric
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&field(lane), None)?;
            }
        }
        for (name, help, field) in Stats::LANE_GAUGES {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (lane, label) in stats.lanes.iter().zip(&lane_labels) {
                let labels = [("lane", label.as_str())];
                metric.encode_family(&labels)?.encode_gauge(&field(lane))?;
            }
        }
        let Some(buckets) = &stats.buckets else {
            return Ok(());
        };
        for (name, help, counts, per_unit) in buckets.exported() {
            // The encoder wants each bucket's own count (it adds them up),
            // the last one bounded by `f64::MAX` for `+Inf`.
            let mut below = 0;
            let mut own: Vec<(f64, u64)> = counts
                .bounds
                .iter()
                .zip(&counts.cumulative)
                .map(|(&bound, &cumulative)| {
                    let count = cumulative - below;
                    below = cumulative;
                    (bound as f64 / per_unit, count)
                })
                .collect();
            own.push((f64::MAX, counts.count - below));
            let sum = counts.sum as f64 / per_unit;
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            metric.encode_histogram::<NoLabelSet>(sum, counts.count, &own, None)?;
        }
        Ok(())
    }
}
