//! `PrometheusCollector` (feature `prometheus-client`): registered in a
//! `prometheus_client` registry with a prefix and a label, it encodes a
//! fresh snapshot on each scrape, with the values of `Stats` after a known
//! workload, the histograms as Prometheus histograms, and nothing once the
//! batcher is gone.
//!
//! Run with `cargo test --features prometheus-client --test collector`.

#![cfg(feature = "prometheus-client")]

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use ringbatch::{Batch, Batcher, PrometheusCollector};

/// The longest any single wait may take.
const BOUND: Duration = Duration::from_secs(60);

/// The value of the one line `series value` of `text`.
fn value(text: &str, series: &str) -> f64 {
    let found: Vec<f64> = text
        .lines()
        .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one line `{series} ...` in\n{text}"
    );
    found[0]
}

fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).expect("encodes");
    text
}

#[test]
fn a_scrape_reports_the_workload() {
    let batcher = Batcher::builder()
        .lanes(1)
        .histograms(true)
        .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
            for i in 0..batch.len() {
                if batch.items()[i] % 4 == 0 {
                    batch.fail(i, "a multiple of four").unwrap();
                } else {
                    batch.ok(i, ()).unwrap();
                }
            }
            Ok(())
        })
        .build()
        .expect("valid settings");
    let mut registry =
        Registry::with_prefix_and_labels("rb", [("batcher".into(), "orders".into())].into_iter());
    registry.register_collector(Box::new(PrometheusCollector::new(&batcher)));

    let before = scrape(&registry);
    assert_eq!(
        value(&before, "rb_items_handled_total{batcher=\"orders\"}"),
        0.0
    );

    let producer = batcher.producer();
    for i in 0..40 {
        // One at a time: 40 batches of one item.
        let _ = producer
            .submit(i)
            .expect("open")
            .wait_timeout(BOUND)
            .expect("answered within the bound");
    }
    assert!(batcher.flush_timeout(BOUND), "flush did not finish");
    let stats = batcher.stats();
    let text = scrape(&registry);
    let series = |name: &str| format!("rb_{name}{{batcher=\"orders\"}}");
    assert_eq!(value(&text, &series("items_handled_total")), 40.0);
    assert_eq!(value(&text, &series("items_failed_total")), 10.0);
    assert_eq!(value(&text, &series("accepted_total")), 40.0);
    assert_eq!(value(&text, &series("batches_total")), 40.0);
    assert_eq!(
        value(&text, &series("memory_bytes")),
        stats.memory_bytes as f64
    );
    assert_eq!(
        value(
            &text,
            "rb_lane_accepted_total{batcher=\"orders\",lane=\"0\"}"
        ),
        40.0
    );
    let reasons: f64 = ringbatch::DispatchReason::ALL
        .iter()
        .map(|r| {
            value(
                &text,
                &format!(
                    "rb_dispatched_total{{batcher=\"orders\",reason=\"{}\"}}",
                    r.name()
                ),
            )
        })
        .sum();
    assert_eq!(reasons, 40.0, "the reasons add up to the batches");

    assert!(text.contains("# TYPE rb_batch_size histogram\n"), "{text}");
    assert_eq!(value(&text, &series("batch_size_count")), 40.0);
    assert_eq!(value(&text, &series("batch_size_sum")), 40.0);
    assert_eq!(
        value(&text, "rb_batch_size_bucket{batcher=\"orders\",le=\"1.0\"}"),
        40.0,
        "every batch held one item"
    );
    assert_eq!(
        value(
            &text,
            "rb_batch_size_bucket{batcher=\"orders\",le=\"+Inf\"}"
        ),
        40.0
    );
    assert_eq!(value(&text, &series("end_to_end_seconds_count")), 40.0);
    let handler_sum = value(&text, &series("handler_seconds_sum"));
    let expected = stats.buckets.expect("histograms").handler_ns.sum as f64 / 1e9;
    assert!(
        (handler_sum - expected).abs() <= expected * 1e-6,
        "handler seconds {handler_sum}, the snapshot's {expected}"
    );
    assert!(text.ends_with("# EOF\n"), "an OpenMetrics text");

    // Weakly held: once the batcher is gone, a scrape has nothing of it.
    drop(producer);
    drop(batcher);
    let after = scrape(&registry);
    assert!(
        !after.contains("rb_"),
        "nothing encoded once the batcher is gone:\n{after}"
    );
}
