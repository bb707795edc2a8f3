//! Linger, the minimum interval between batches, `flush_now`, and what a
//! lingering batch does at flush and shutdown.
//!
//! Timing bounds are lower bounds, or upper bounds far (10x and more) above
//! what is asked for: the machines are shared and slow.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BOUND, wait_for, wait_ticket};
use ringbatch::{Batch, Batcher, Linger};

/// Every batch's items and the moment the handler started on it.
type Batches = Arc<Mutex<Vec<(Instant, Vec<u64>)>>>;

fn recording(
    batches: &Batches,
) -> impl FnMut(&mut Batch<'_, u64, u64>) -> Result<(), ringbatch::BatchError> + Send + 'static {
    let batches = Arc::clone(batches);
    move |batch| {
        batches
            .lock()
            .unwrap()
            .push((Instant::now(), batch.items().to_vec()));
        batch.ok_with(|&x| x + 1);
        Ok(())
    }
}

#[test]
fn a_lone_item_waits_out_the_linger_then_goes() {
    let linger = Duration::from_millis(200);
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .linger(Linger::Fixed(linger))
        .handler_fn(recording(&batches))
        .build()
        .unwrap();
    let producer = batcher.producer();
    let start = Instant::now();
    let ticket = producer.submit(7).unwrap();
    assert_eq!(wait_ticket(ticket).unwrap(), 8);
    let waited = start.elapsed();
    assert!(
        waited >= linger,
        "a lone item waits for the {linger:?} linger, waited {waited:?}"
    );
    assert!(
        waited < linger + Duration::from_secs(5),
        "a lone item goes once the {linger:?} linger ends, waited {waited:?}"
    );
    let stats = batcher.shutdown();
    assert_eq!(stats.batches, 1);
    assert_eq!(stats.dispatched.linger, 1, "{:?}", stats.dispatched);
}

#[test]
fn items_within_the_linger_share_one_batch() {
    let linger = Duration::from_secs(1);
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .linger(Linger::Fixed(linger))
        .handler_fn(recording(&batches))
        .build()
        .unwrap();
    let producer = batcher.producer();
    let start = Instant::now();
    let tickets: Vec<_> = (0..5).map(|i| producer.submit(i).unwrap()).collect();
    let submitted = start.elapsed();
    for (i, ticket) in tickets.into_iter().enumerate() {
        assert_eq!(wait_ticket(ticket).unwrap(), i as u64 + 1);
    }
    assert!(start.elapsed() >= linger, "the batch waited for the linger");
    let stats = batcher.shutdown();
    assert!(submitted < linger, "five submissions took {submitted:?}");
    let batches = batches.lock().unwrap();
    let items: Vec<_> = batches.iter().map(|(_, items)| items.clone()).collect();
    assert_eq!(
        items,
        [vec![0, 1, 2, 3, 4]],
        "five items submitted within {submitted:?} of a {linger:?} linger form one batch"
    );
    assert_eq!(stats.dispatched.linger, 1, "{:?}", stats.dispatched);
}

#[test]
fn a_burst_fills_batches_without_waiting_for_the_linger() {
    let linger = Duration::from_secs(30);
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .max_batch(8)
        .linger(Linger::Fixed(linger))
        .handler_fn(recording(&batches))
        .build()
        .unwrap();
    let producer = batcher.producer();
    let start = Instant::now();
    let items: Vec<u64> = (0..32).collect();
    let mut tickets = Vec::new();
    producer.submit_many(&items, &mut tickets).unwrap();
    for (i, mut ticket) in tickets.into_iter().enumerate() {
        let result = ticket
            .wait_timeout(linger / 2)
            .unwrap_or_else(|| panic!("item {i} of a full batch waited for the {linger:?} linger"));
        assert_eq!(result.unwrap(), i as u64 + 1);
    }
    assert!(start.elapsed() < linger);
    let stats = batcher.shutdown();
    assert_eq!(stats.dispatched.full, 4, "{:?}", stats.dispatched);
    assert_eq!(stats.dispatched.linger, 0);
    let batches = batches.lock().unwrap();
    let items: Vec<Vec<u64>> = batches.iter().map(|(_, items)| items.clone()).collect();
    let expected: Vec<Vec<u64>> = (0..4).map(|b| (b * 8..b * 8 + 8).collect()).collect();
    assert_eq!(items, expected, "four full batches, in order");
}

#[test]
fn batches_are_at_least_the_minimum_interval_apart() {
    let interval = Duration::from_millis(100);
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .min_interval(interval)
        .handler_fn(recording(&batches))
        .build()
        .unwrap();
    let producer = batcher.producer();
    // A steady trickle, one item every 2 ms for a second.
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        producer.push(sent).unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    // Wait for the last items without a flush (a flush ignores the interval).
    wait_for("every item handled", || {
        batcher.stats().items_handled == sent
    });
    let elapsed = start.elapsed();
    let stats = batcher.shutdown();
    assert_eq!(stats.dispatched.flush, 0);

    let batches = batches.lock().unwrap();
    let starts: Vec<Instant> = batches.iter().map(|(at, _)| *at).collect();
    assert!(
        starts.len() >= 3,
        "a second of items at a 100 ms interval makes several batches, got {}",
        starts.len()
    );
    // Lower bound, with some slack for when the handler starts after the
    // drainer decides.
    let slack = interval / 4;
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= interval - slack,
            "batches started {gap:?} apart, less than the {interval:?} minimum interval"
        );
    }
    let most = (elapsed.as_millis() / interval.as_millis()) as usize + 2;
    assert!(
        starts.len() <= most,
        "{} batches in {elapsed:?} at a {interval:?} minimum interval (at most {most})",
        starts.len()
    );
    let handled: Vec<u64> = batches
        .iter()
        .flat_map(|(_, items)| items.clone())
        .collect();
    assert_eq!(
        handled,
        (0..sent).collect::<Vec<_>>(),
        "every item, in order"
    );
}

#[test]
fn flush_now_dispatches_a_lingering_batch_at_once() {
    let linger = Duration::from_secs(30);
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .linger(Linger::Fixed(linger))
        .handler_fn(recording(&batches))
        .build()
        .unwrap();
    let producer = batcher.producer();
    let mut first = producer.submit(1).unwrap();
    let mut second = producer.submit(2).unwrap();
    // Both are staged, lingering.
    wait_for("two items staged", || batcher.stats().staged == 2);
    assert!(!first.is_ready());
    let start = Instant::now();
    batcher.flush_now();
    let result = first
        .wait_timeout(Duration::from_secs(5))
        .expect("flush_now dispatches the lingering batch within 5 s");
    assert_eq!(result.unwrap(), 2);
    assert_eq!(second.wait_timeout(BOUND).unwrap().unwrap(), 3);
    assert!(start.elapsed() < linger);
    let stats = batcher.shutdown();
    assert_eq!(stats.dispatched.flush, 1, "{:?}", stats.dispatched);
    assert_eq!(stats.dispatched.linger, 0);
    let items: Vec<Vec<u64>> = batches
        .lock()
        .unwrap()
        .iter()
        .map(|(_, items)| items.clone())
        .collect();
    assert_eq!(items, [vec![1, 2]], "one batch of both items");
}

#[test]
fn flush_now_also_takes_items_not_staged_yet() {
    let batcher = Batcher::builder()
        .linger(Linger::Fixed(Duration::from_secs(30)))
        .handler_fn(recording(&Batches::default()))
        .build()
        .unwrap();
    let producer = batcher.producer();
    let mut ticket = producer.submit(10).unwrap();
    batcher.flush_now();
    let result = ticket
        .wait_timeout(Duration::from_secs(5))
        .expect("flush_now dispatches an item submitted before it within 5 s");
    assert_eq!(result.unwrap(), 11);
}

#[test]
fn flush_and_shutdown_do_not_wait_for_the_linger() {
    let linger = Duration::from_secs(30);
    let batcher = Batcher::builder()
        .linger(Linger::Fixed(linger))
        .handler_fn(recording(&Batches::default()))
        .build()
        .unwrap();
    let producer = batcher.producer();
    let flushed = producer.submit(1).unwrap();
    let start = Instant::now();
    assert!(
        batcher.flush_timeout(linger / 2),
        "a flush does not wait for the {linger:?} linger"
    );
    assert!(flushed.is_ready());
    assert_eq!(wait_ticket(flushed).unwrap(), 2);

    let at_shutdown = producer.submit(5).unwrap();
    let stats = batcher.shutdown();
    assert!(start.elapsed() < linger);
    assert_eq!(wait_ticket(at_shutdown).unwrap(), 6);
    assert_eq!(stats.dispatched.flush, 1, "{:?}", stats.dispatched);
    assert_eq!(stats.dispatched.shutdown, 1, "{:?}", stats.dispatched);
    assert_eq!(stats.items_handled, 2);
}

#[test]
fn an_adaptive_linger_without_a_controller_waits_its_target() {
    let target = Duration::from_millis(150);
    let batcher = Batcher::builder()
        .linger(Linger::Adaptive { target })
        .handler_fn(recording(&Batches::default()))
        .build()
        .unwrap();
    let producer = batcher.producer();
    let start = Instant::now();
    assert_eq!(wait_ticket(producer.submit(1).unwrap()).unwrap(), 2);
    let waited = start.elapsed();
    assert!(waited >= target, "waited {waited:?}, target {target:?}");
    assert!(
        waited < target + Duration::from_secs(5),
        "waited {waited:?}"
    );
    assert_eq!(batcher.shutdown().dispatched.linger, 1);
}

#[test]
fn without_a_linger_a_lone_item_goes_at_once() {
    // Natural batching: nothing waits for company.
    let batcher = Batcher::builder()
        .min_interval(Duration::from_millis(1))
        .handler_fn(recording(&Batches::default()))
        .build()
        .unwrap();
    let producer = batcher.producer();
    let mut ticket = producer.submit(1).unwrap();
    let result = ticket
        .wait_timeout(Duration::from_secs(5))
        .expect("dispatched without lingering");
    assert_eq!(result.unwrap(), 2);
    let stats = batcher.shutdown();
    assert_eq!(stats.dispatched.lanes_idle, 1, "{:?}", stats.dispatched);
}

#[test]
fn a_linger_counts_from_the_oldest_item_of_the_batch() {
    // Under a steady stream, each linger batch leaves about one linger after
    // its oldest item: never before, and items never wait far longer.
    let linger = Duration::from_millis(100);
    let batches = Batches::default();
    let sink = Arc::clone(&batches);
    // Items carry their submission time (µs since `epoch`).
    let epoch = Instant::now();
    let batcher = Batcher::builder()
        .linger(Linger::Fixed(linger))
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            sink.lock()
                .unwrap()
                .push((Instant::now(), batch.items().to_vec()));
            batch.ok_with(|&x| x);
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_millis(800) {
        producer.push(epoch.elapsed().as_micros() as u64).unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    wait_for("every item handled", || {
        batcher.stats().items_handled == sent
    });
    let stats = batcher.shutdown();
    assert_eq!(
        stats.dispatched.linger, stats.batches,
        "{:?}",
        stats.dispatched
    );
    let batches = batches.lock().unwrap();
    assert!(batches.len() >= 2);
    for (at, items) in batches.iter() {
        let oldest = epoch + Duration::from_micros(items[0]);
        let age = *at - oldest;
        assert!(age >= linger, "a batch left {age:?} after its oldest item");
        assert!(
            age < linger + Duration::from_secs(5),
            "the oldest item waited {age:?} with a {linger:?} linger"
        );
    }
}
