//! The statistics the replaced batchers reported, against the test's own
//! tally: single-item and batched batches, bytes dispatched, batch
//! efficiency, total handler time and the total queue depth.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::BOUND;
use ringbatch::{Batch, Batcher};

#[test]
fn batch_counts_bytes_and_efficiency_match_the_handlers_tally() {
    // (items, bytes) per batch, as the handler saw them.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let batcher = Batcher::builder()
        .lanes(2)
        .max_batch(32)
        .weigher(|line: &String| line.len())
        .max_bytes(4096)
        .histograms(true)
        .handler_fn(move |batch: &mut Batch<'_, String, ()>| {
            let bytes: usize = batch.items().iter().map(String::len).sum();
            log.lock().unwrap().push((batch.len(), bytes));
            std::thread::sleep(Duration::from_micros(200));
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    let mut weight = 0;
    for i in 0..2000usize {
        let line = "x".repeat(1 + i % 50);
        weight += line.len();
        producer.push(line).unwrap();
        if i % 100 == 0 {
            // A lone item now and then: single-item batches as well.
            assert!(batcher.flush_timeout(BOUND), "flushed");
        }
    }
    assert!(batcher.flush_timeout(BOUND), "flushed");
    let stats = batcher.stats();
    let seen = seen.lock().unwrap().clone();
    let singles = seen.iter().filter(|&&(n, _)| n == 1).count() as u64;
    assert_eq!(stats.batches, seen.len() as u64, "batches");
    assert_eq!(stats.single_item_batches, singles, "single-item batches");
    assert_eq!(
        stats.multi_item_batches(),
        seen.len() as u64 - singles,
        "batched"
    );
    assert_eq!(
        stats.bytes_dispatched,
        seen.iter().map(|&(_, b)| b as u64).sum::<u64>(),
        "bytes: the handler's sum"
    );
    assert_eq!(
        stats.bytes_dispatched, weight as u64,
        "bytes: the producer's sum"
    );
    let efficiency = stats.mean_batch_items() / stats.effective_max_batch as f64;
    assert!((stats.batch_efficiency() - efficiency).abs() < 1e-12);
    assert!(stats.batch_efficiency() > 0.0 && stats.batch_efficiency() <= 1.0);
    let handler = stats.handler_time().expect("histograms are on");
    assert!(
        handler >= Duration::from_micros(200) * seen.len() as u32,
        "at least 200 µs per batch: {handler:?} for {} batches",
        seen.len()
    );
    assert_eq!(stats.queue_depth(), 0, "everything dispatched");
    // The first snapshot's rates run from the start: rate × window is every
    // item and batch.
    let t = stats.throughput;
    let items = t.items_per_sec * t.window.as_secs_f64();
    let batches = t.batches_per_sec * t.window.as_secs_f64();
    assert!((items - 2000.0).abs() < 1e-6, "{t:?}");
    assert!((batches - stats.batches as f64).abs() < 1e-6, "{t:?}");
    batcher.shutdown();
}

#[test]
fn without_histograms_the_handler_time_is_unknown_and_without_a_weigher_no_bytes() {
    let batcher = Batcher::builder()
        .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    for i in 0..100 {
        producer.push(i).unwrap();
    }
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled, 100);
    assert_eq!(stats.handler_time(), None);
    assert_eq!(stats.bytes_dispatched, 0);
}

#[test]
fn the_queue_depth_counts_every_lane_and_the_staging_area() {
    let gate = common::Gate::closed();
    let batches = common::Batches::<u64>::default();
    let batcher = Batcher::builder()
        .lanes(2)
        .max_batch(4)
        .handler_fn(common::recording_with(&batches, Some(&gate), |_| ()))
        .build()
        .unwrap();
    let first = batcher.producer_on_lane(0).unwrap();
    let second = batcher.producer_on_lane(1).unwrap();
    first.push(0).unwrap();
    gate.wait_arrived(1);
    // The drainer is held in the handler: these wait in the lanes.
    for i in 1..=5 {
        first.push(i).unwrap();
    }
    for i in 6..=8 {
        second.push(i).unwrap();
    }
    let stats = batcher.stats();
    assert_eq!(
        stats.queue_depth(),
        8,
        "5 + 3 in the lanes: {:?}",
        stats.lanes
    );
    assert_eq!(
        stats.queue_depth(),
        stats.lanes.iter().map(|l| l.depth).sum::<u64>() + stats.staged
    );
    gate.open();
    batcher.shutdown();
}

#[test]
fn per_group_counts_match_the_handlers_tally_and_the_export() {
    // Per key (x % 3): items, batches, bytes and failures the handler saw.
    let seen = Arc::new(Mutex::new(
        std::collections::BTreeMap::<u64, [u64; 4]>::new(),
    ));
    let log = Arc::clone(&seen);
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(16)
        .group_by(|x: &u64| x % 3)
        .weigher(|x: &u64| (*x % 7 + 1) as usize)
        .handler_fn(move |batch: &mut Batch<'_, u64, ()>| {
            let key = batch.items()[0] % 3;
            let mut log = log.lock().unwrap();
            let entry = log.entry(key).or_default();
            entry[0] += batch.len() as u64;
            entry[1] += 1;
            entry[2] += batch.items().iter().map(|x| x % 7 + 1).sum::<u64>();
            for i in 0..batch.len() {
                assert_eq!(batch.items()[i] % 3, key, "one group per batch");
                if batch.items()[i] % 5 == 0 {
                    entry[3] += 1;
                    batch.fail(i, "a fifth").unwrap();
                } else {
                    batch.ok(i, ()).unwrap();
                }
            }
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    for x in 0..3000u64 {
        producer.push(x).unwrap();
    }
    assert!(batcher.flush_timeout(BOUND), "flushed");
    let stats = batcher.stats();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(stats.groups.len(), 3, "three keys: {:?}", stats.groups);
    for (key, [items, batches, bytes, failures]) in seen {
        let group = stats
            .groups
            .iter()
            .find(|g| g.key_hash == ringbatch::group_key_hash(&key))
            .unwrap_or_else(|| panic!("no group for key {key}: {:?}", stats.groups));
        assert_eq!(
            (group.items, group.batches, group.bytes, group.failures),
            (items, batches, bytes, failures),
            "key {key}: (items, batches, bytes, failures)"
        );
    }
    assert_eq!(stats.groups_other, ringbatch::GroupStats::default());
    let text = stats.prometheus("rb");
    let first = stats.groups[0];
    assert!(
        text.contains(&format!(
            "rb_group_items_total{{group=\"{:016x}\"}} {}\n",
            first.key_hash, first.items
        )),
        "the export carries each group's items:\n{text}"
    );
    batcher.shutdown();
}

#[test]
fn a_groups_failures_count_each_failed_item_once_breaker_refusals_included() {
    let batcher = Batcher::builder()
        .lanes(1)
        .group_by(|x: &u64| x % 2)
        .circuit_breaker(
            ringbatch::CircuitBreaker::default()
                .with_failure_threshold(1)
                .with_recovery_timeout(Duration::from_secs(60))
                .with_hold_while_open(false),
        )
        .dead_letter(|_| {})
        .handler_fn(|_: &mut Batch<'_, u64, ()>| Err("the sink is down".into()))
        .build()
        .unwrap();
    let producer = batcher.producer();
    let mut failed = 0;
    // One at a time: the first batch fails in the handler and opens the
    // breaker, which refuses every later one.
    for x in 0..10u64 {
        let mut ticket = producer.submit(x * 2).unwrap();
        match ticket.wait_timeout(BOUND).expect("an answer in time") {
            Err(_) => failed += 1,
            Ok(()) => panic!("the handler never succeeds"),
        }
    }
    let stats = batcher.stats();
    let group = stats
        .groups
        .iter()
        .find(|g| g.key_hash == ringbatch::group_key_hash(&0u64))
        .expect("group 0");
    assert_eq!(failed, 10);
    assert_eq!(group.failures, failed, "each failed item once: {group:?}");
    assert_eq!(stats.items_failed, failed);
    batcher.shutdown();
}
