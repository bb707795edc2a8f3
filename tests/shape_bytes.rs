//! Byte limits: a user weigher and `max_bytes`, and what happens to an item
//! heavier than the limit on its own (`Oversize::Fail` and `Oversize::Alone`).

mod common;

use std::sync::{Arc, Mutex};

use common::{BOUND, Gate, Tally, decode, encode, f, spawn_bounded, wait_ticket};
use ringbatch::{Batch, Batcher, Error, Oversize};

/// An item: an id (from [`encode`]) and its weight in bytes.
type Item = (u64, usize);

/// What a recording handler saw: every batch's items, in dispatch order.
type Batches = common::Batches<Item>;

/// A handler that records every batch (after `gate`, if any, lets it pass)
/// and answers each item with its id.
fn recording(
    batches: &Batches,
    gate: Option<&Gate>,
) -> impl FnMut(&mut Batch<'_, Item, u64>) -> Result<(), ringbatch::BatchError> + Send + 'static {
    common::recording_with(batches, gate, |&(id, _)| id)
}

fn weight_of(batch: &[Item]) -> usize {
    batch.iter().map(|item| item.1).sum()
}

/// A weight from 1 to 300 bytes, fixed by the item's id.
fn small_weight(id: u64) -> usize {
    1 + (f(id) % 300) as usize
}

#[test]
fn no_batch_exceeds_the_byte_limit_under_concurrent_producers() {
    const LIMIT: usize = 1_000;
    const PRODUCERS: u64 = 4;
    const EACH: u64 = 5_000;
    // Over-limit batches, per-producer order, and the heaviest batch.
    #[derive(Default)]
    struct Seen {
        over: Vec<(usize, usize)>,
        heaviest: usize,
        tally: Tally,
    }
    let seen = Arc::new(Mutex::new(Seen {
        tally: Tally::new(PRODUCERS as usize),
        ..Seen::default()
    }));
    let sink = Arc::clone(&seen);
    let batcher = Batcher::builder()
        .max_batch(64)
        .weigher(|item: &Item| item.1)
        .max_bytes(LIMIT)
        .handler_fn(move |batch: &mut Batch<'_, Item, u64>| {
            let weight = weight_of(batch.items());
            let mut seen = sink.lock().unwrap();
            if weight > LIMIT {
                seen.over.push((batch.len(), weight));
            }
            seen.heaviest = seen.heaviest.max(weight);
            for &(id, _) in batch.items() {
                seen.tally.see(id);
            }
            drop(seen);
            batch.ok_with(|&(id, _)| id);
            Ok(())
        })
        .build()
        .unwrap();

    let threads: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let producers = batcher.producers();
            spawn_bounded(format!("producer {p}"), move || {
                let producer = producers.producer();
                for i in 0..EACH {
                    let id = encode(p, i);
                    let item = (id, small_weight(id));
                    if i % 64 == 0 {
                        assert_eq!(wait_ticket(producer.submit(item).unwrap()).unwrap(), id);
                    } else {
                        producer.push(item).unwrap();
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join();
    }
    assert!(batcher.flush_timeout(BOUND), "flush within {BOUND:?}");
    let stats = batcher.shutdown();

    let seen = seen.lock().unwrap();
    assert!(
        seen.over.is_empty(),
        "batches over the {LIMIT}-byte limit (items, bytes): {:?}",
        seen.over
    );
    assert!(
        seen.tally.out_of_order.is_empty(),
        "per-producer order broken (producer, expected, got): {:?}",
        seen.tally.out_of_order
    );
    assert_eq!(seen.tally.next, vec![EACH; PRODUCERS as usize]);
    assert_eq!(stats.items_handled, PRODUCERS * EACH);
    assert_eq!(stats.accepted, PRODUCERS * EACH);
    assert_eq!(stats.too_large, 0);
    assert!(seen.heaviest <= LIMIT);
}

#[test]
fn a_burst_is_cut_into_batches_at_the_byte_limit() {
    // 20 items of 300 bytes under a 1000-byte limit: three per batch.
    let gate = Gate::closed();
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(64)
        .weigher(|item: &Item| item.1)
        .max_bytes(1_000)
        .handler_fn(recording(&batches, Some(&gate)))
        .build()
        .unwrap();
    let producer = batcher.producer();
    // A plug holds the drainer in the handler while the burst queues up.
    producer.push((999, 1)).unwrap();
    gate.wait_arrived(1);
    let burst: Vec<Item> = (0..20).map(|i| (i, 300)).collect();
    let mut tickets = Vec::new();
    producer.submit_many(&burst, &mut tickets).unwrap();
    gate.open();
    for (i, ticket) in tickets.into_iter().enumerate() {
        assert_eq!(wait_ticket(ticket).unwrap(), i as u64);
    }
    let stats = batcher.shutdown();

    let batches = batches.lock().unwrap();
    let sizes: Vec<usize> = batches[1..].iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        [3, 3, 3, 3, 3, 3, 2],
        "each batch takes as many 300-byte items as fit in 1000 bytes"
    );
    let ids: Vec<u64> = batches[1..].iter().flatten().map(|item| item.0).collect();
    assert_eq!(ids, (0..20).collect::<Vec<_>>(), "in submission order");
    assert_eq!(
        stats.dispatched.bytes, 6,
        "six batches left at the byte limit: {:?}",
        stats.dispatched
    );
}

#[test]
fn an_item_over_the_limit_fails_with_too_large_and_is_counted() {
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .weigher(|item: &Item| item.1)
        .max_bytes(1_000)
        .handler_fn(recording(&batches, None))
        .build()
        .unwrap();
    let producer = batcher.producer();
    let before = producer.submit((1, 100)).unwrap();
    let big = producer.submit((2, 5_000)).unwrap();
    let at_limit = producer.submit((3, 1_000)).unwrap();
    let after = producer.submit((4, 100)).unwrap();
    match wait_ticket(big) {
        Err(Error::TooLarge { weight, limit }) => {
            assert_eq!((weight, limit), (5_000, 1_000));
        }
        other => panic!("expected TooLarge {{ weight: 5000, limit: 1000 }}, got {other:?}"),
    }
    assert_eq!(wait_ticket(before).unwrap(), 1);
    assert_eq!(
        wait_ticket(at_limit).unwrap(),
        3,
        "an item of exactly the limit is not too large"
    );
    assert_eq!(wait_ticket(after).unwrap(), 4);
    let stats = batcher.shutdown();
    assert_eq!(stats.too_large, 1);
    assert_eq!(stats.items_handled, 3);
    assert_eq!(stats.items_handled + stats.too_large, stats.accepted);
    let batches = batches.lock().unwrap();
    assert!(
        batches.iter().flatten().all(|item| item.0 != 2),
        "the too-large item never reached the handler: {batches:?}"
    );
}

#[test]
fn a_weight_of_4_gib_or_more_is_reported_as_u32_max() {
    let batcher = Batcher::builder()
        .weigher(|item: &Item| item.1)
        .max_bytes(1_000)
        .handler_fn(recording(&Batches::default(), None))
        .build()
        .unwrap();
    let producer = batcher.producer();
    match wait_ticket(producer.submit((1, usize::MAX)).unwrap()) {
        Err(Error::TooLarge { weight, limit }) => assert_eq!((weight, limit), (u32::MAX, 1_000)),
        other => panic!("expected TooLarge {{ weight: u32::MAX, limit: 1000 }}, got {other:?}"),
    }
    assert_eq!(batcher.shutdown().too_large, 1);
}

#[test]
fn the_default_byte_limit_is_one_mebibyte() {
    let batcher = Batcher::builder()
        .weigher(|item: &Item| item.1)
        .handler_fn(recording(&Batches::default(), None))
        .build()
        .unwrap();
    let producer = batcher.producer();
    assert_eq!(
        wait_ticket(producer.submit((1, 1 << 20)).unwrap()).unwrap(),
        1
    );
    match wait_ticket(producer.submit((2, (1 << 20) + 1)).unwrap()) {
        Err(Error::TooLarge { weight, limit }) => {
            assert_eq!((weight, limit), ((1 << 20) + 1, 1 << 20));
        }
        other => panic!("expected TooLarge with the 1 MiB default limit, got {other:?}"),
    }
    assert_eq!(batcher.shutdown().too_large, 1);
}

#[test]
fn with_oversize_alone_a_heavy_item_travels_in_a_batch_of_one() {
    let gate = Gate::closed();
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .lanes(1)
        .weigher(|item: &Item| item.1)
        .max_bytes(1_000)
        .oversize(Oversize::Alone)
        .handler_fn(recording(&batches, Some(&gate)))
        .build()
        .unwrap();
    let producer = batcher.producer();
    producer.push((999, 1)).unwrap();
    gate.wait_arrived(1);
    let items = [
        (1, 100),
        (2, 5_000),
        (3, 100),
        (4, 100),
        (5, 7_000),
        (6, 50),
    ];
    let mut tickets = Vec::new();
    producer.submit_many(&items, &mut tickets).unwrap();
    gate.open();
    for (ticket, item) in tickets.into_iter().zip(items) {
        assert_eq!(
            wait_ticket(ticket).unwrap(),
            item.0,
            "every item is handled, heavy or not"
        );
    }
    let stats = batcher.shutdown();
    assert_eq!(stats.too_large, 0);
    assert_eq!(stats.items_handled, 7);

    let batches = batches.lock().unwrap();
    for heavy in [2, 5] {
        let batch = batches
            .iter()
            .find(|b| b.iter().any(|item| item.0 == heavy))
            .expect("the heavy item was handled");
        assert_eq!(batch.len(), 1, "item {heavy} travels alone: {batches:?}");
    }
    for batch in batches.iter().filter(|b| b.len() > 1) {
        assert!(weight_of(batch) <= 1_000, "over the limit: {batch:?}");
    }
    let ids: Vec<u64> = batches[1..].iter().flatten().map(|item| item.0).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6], "in submission order");
}

/// Which indexes of each producer's stream weigh more than the limit.
fn is_too_large(index: u64) -> bool {
    index % 37 == 5
}

#[test]
fn every_item_is_handled_or_too_large_exactly_once() {
    const LIMIT: usize = 1_000;
    const PRODUCERS: u64 = 3;
    const EACH: u64 = 3_000;
    let tally = Arc::new(Mutex::new(Tally::new(PRODUCERS as usize)));
    let sink = Arc::clone(&tally);
    let batcher = Batcher::builder()
        .max_batch(32)
        .weigher(|item: &Item| item.1)
        .max_bytes(LIMIT)
        .handler_fn(move |batch: &mut Batch<'_, Item, u64>| {
            assert!(weight_of(batch.items()) <= LIMIT);
            let mut tally = sink.lock().unwrap();
            for &(id, _) in batch.items() {
                // Too-large items are missing from each producer's sequence.
                let (p, _) = decode(id);
                while is_too_large(tally.next[p]) {
                    tally.next[p] += 1;
                }
                tally.see(id);
            }
            drop(tally);
            batch.ok_with(|&(id, _)| id);
            Ok(())
        })
        .build()
        .unwrap();
    let threads: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let producers = batcher.producers();
            spawn_bounded(format!("producer {p}"), move || {
                let producer = producers.producer();
                let (mut handled, mut too_large) = (0u64, 0u64);
                // Tickets held in windows of 200, well within the lane's
                // result slots.
                let mut tickets = Vec::with_capacity(200);
                for window in (0..EACH).collect::<Vec<_>>().chunks(200) {
                    for &i in window {
                        let id = encode(p, i);
                        let weight = if is_too_large(i) {
                            LIMIT + 1 + (i as usize % 3)
                        } else {
                            small_weight(id)
                        };
                        tickets.push((id, weight, producer.submit((id, weight)).unwrap()));
                    }
                    for (id, weight, ticket) in tickets.drain(..) {
                        match wait_ticket(ticket) {
                            Ok(value) if weight <= LIMIT => {
                                assert_eq!(value, id);
                                handled += 1;
                            }
                            Err(Error::TooLarge { weight: w, limit }) if weight > LIMIT => {
                                assert_eq!((w as usize, limit as usize), (weight, LIMIT));
                                too_large += 1;
                            }
                            other => panic!("item {id} weighing {weight}: unexpected {other:?}"),
                        }
                    }
                }
                (handled, too_large)
            })
        })
        .collect();
    let (mut handled, mut too_large) = (0, 0);
    for thread in threads {
        let (h, t) = thread.join();
        handled += h;
        too_large += t;
    }
    let stats = batcher.shutdown();
    assert_eq!(stats.too_large, too_large, "stats count what tickets saw");
    assert_eq!(stats.items_handled, handled);
    assert_eq!(stats.accepted, PRODUCERS * EACH);
    assert_eq!(
        stats.items_handled + stats.too_large,
        stats.accepted,
        "every accepted item handled or too large, once"
    );
    let tally = tally.lock().unwrap();
    assert!(tally.out_of_order.is_empty(), "{:?}", tally.out_of_order);
}

#[test]
fn the_staged_bytes_threshold_flushes_the_heaviest_group_before_its_linger() {
    // Four groups under a one-minute linger, each far below its 1,000-byte
    // batch limit: only the 100-byte threshold on everything staged can
    // send a batch early, and it sends the heaviest group's.
    let batches: Batches = Arc::default();
    let batcher = Batcher::builder()
        .lanes(1)
        .weigher(|item: &Item| item.1)
        .max_bytes(1_000)
        .max_staged_bytes(100)
        .group_by(|item: &Item| item.0 % 4)
        .linger(ringbatch::Linger::Fixed(std::time::Duration::from_secs(60)))
        .handler_fn(recording(&batches, None))
        .build()
        .unwrap();
    let producer = batcher.producer();
    // Ids 0, 4, 8, 12, 16 are group 0 (50 bytes); 1, 5, 9 group 1 (30);
    // 2 group 2 (10): 90 bytes staged, under the threshold.
    for id in [0, 4, 8, 12, 16, 1, 5, 9, 2] {
        producer.push((id, 10)).unwrap();
    }
    // Group 3's item takes the staged weight to 100.
    producer.push((3, 10)).unwrap();
    common::wait_for("a batch sent by the staged-bytes threshold", || {
        !batches.lock().unwrap().is_empty() && batcher.stats().items_handled >= 5
    });
    let first = batches.lock().unwrap()[0].clone();
    assert_eq!(
        first.iter().map(|item| item.0).collect::<Vec<_>>(),
        [0, 4, 8, 12, 16],
        "the heaviest group (50 of the 100 bytes) goes first"
    );
    let stats = batcher.stats();
    assert_eq!(stats.dispatched.bytes, 1, "dispatched for its bytes");
    assert_eq!(
        stats.batches, 1,
        "50 bytes left staged: under the threshold"
    );
    drop(producer);
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled, 10, "the rest handled at shutdown");
}

#[test]
fn a_staged_bytes_threshold_needs_a_weigher_and_a_positive_limit() {
    let build = |batcher: ringbatch::BatcherBuilder<Item, u64>| {
        batcher
            .handler_fn(|batch: &mut Batch<'_, Item, u64>| {
                batch.ok_with(|_| 0);
                Ok(())
            })
            .build()
    };
    match build(Batcher::builder().max_staged_bytes(100)) {
        Err(ringbatch::ConfigError::Invalid { field, .. }) => {
            assert_eq!(field, "max_staged_bytes")
        }
        other => panic!("expected Invalid(max_staged_bytes), got {:?}", other.err()),
    }
    match build(
        Batcher::builder()
            .weigher(|item: &Item| item.1)
            .max_staged_bytes(0),
    ) {
        Err(ringbatch::ConfigError::Zero { field }) => assert_eq!(field, "max_staged_bytes"),
        other => panic!("expected Zero(max_staged_bytes), got {:?}", other.err()),
    }
}
