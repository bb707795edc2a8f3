//! Key groups: one key per batch, per-group limits (items, share of the
//! maximum, immediate, linger), and the bound on open groups.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BOUND, Gate, decode, encode, spawn_bounded, wait_for, wait_ticket};
use ringbatch::{Batch, Batcher, ConfigError, GroupLimits, Linger};

/// An item: its key and an id.
type Item = (u32, u64);

type Batches = common::Batches<Item>;

/// What a handler recorded, one entry per batch.
type Recorded<E> = Arc<Mutex<Vec<E>>>;

/// A handler that records every batch (after `gate`, if any, lets it pass)
/// and answers each item with its id.
fn recording(
    batches: &Batches,
    gate: Option<&Gate>,
) -> impl FnMut(&mut Batch<'_, Item, u64>) -> Result<(), ringbatch::BatchError> + Send + 'static {
    common::recording_with(batches, gate, |&(_, id)| id)
}

/// Batches that hold more than one key.
fn mixed(batches: &[Vec<Item>]) -> Vec<&Vec<Item>> {
    batches
        .iter()
        .filter(|b| b.iter().any(|item| item.0 != b[0].0))
        .collect()
}

/// Batch sizes per key, in dispatch order.
fn sizes_by_key(batches: &[Vec<Item>]) -> HashMap<u32, Vec<usize>> {
    let mut sizes: HashMap<u32, Vec<usize>> = HashMap::new();
    for batch in batches {
        sizes.entry(batch[0].0).or_default().push(batch.len());
    }
    sizes
}

#[test]
fn group_limits_need_group_by() {
    let result = Batcher::builder()
        .group_limits(|_: &Item| GroupLimits::items(4))
        .handler_fn(|batch: &mut Batch<'_, Item, ()>| {
            batch.ok_with(|_| ());
            Ok(())
        })
        .build();
    match result {
        Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "group_limits"),
        Err(other) => panic!("expected Invalid(group_limits), got {other:?}"),
        Ok(_) => panic!("expected Invalid(group_limits), got a batcher"),
    }
}

#[test]
fn every_batch_holds_one_key_and_each_key_keeps_its_order() {
    const PRODUCERS: u64 = 4;
    const EACH: u64 = 4_000;
    const KEYS: u64 = 5;
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .max_batch(32)
        .group_by(|item: &Item| item.0)
        .handler_fn(recording(&batches, None))
        .build()
        .unwrap();
    let threads: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let make = batcher.producers();
            spawn_bounded(format!("producer {p}"), move || {
                let producer = make.producer();
                for i in 0..EACH {
                    let item = ((i % KEYS) as u32, encode(p, i));
                    if i % 100 == 0 {
                        assert_eq!(wait_ticket(producer.submit(item).unwrap()).unwrap(), item.1);
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
    assert!(batcher.flush_timeout(BOUND));
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled, PRODUCERS * EACH);

    let batches = batches.lock().unwrap();
    let mixed = mixed(&batches);
    assert!(
        mixed.is_empty(),
        "batches with several keys: {:?}",
        &mixed[..1]
    );
    // Per producer and key: every item once, in order.
    let mut next: HashMap<(usize, u32), u64> = HashMap::new();
    for &(key, id) in batches.iter().flatten() {
        let (p, i) = decode(id);
        let expected = next.entry((p, key)).or_insert(u64::from(key));
        assert_eq!(
            i, *expected,
            "producer {p}, key {key}: expected index {expected}"
        );
        *expected += KEYS;
    }
}

#[test]
fn item_and_share_limits_bound_each_groups_batches() {
    let gate = Gate::closed();
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(40)
        .staging(1_000)
        .group_by(|item: &Item| item.0)
        .group_limits(|item: &Item| match item.0 {
            0 => GroupLimits::items(3),
            1 => GroupLimits::share(0.25),
            _ => GroupLimits::default(),
        })
        .handler_fn(recording(&batches, Some(&gate)))
        .build()
        .unwrap();
    let producer = batcher.producer();
    producer.push((9, 0)).unwrap();
    gate.wait_arrived(1);
    // 99 items of keys 0, 1 and 2, interleaved.
    let items: Vec<Item> = (0..99).map(|i| ((i % 3) as u32, i)).collect();
    let mut tickets = Vec::new();
    producer.submit_many(&items, &mut tickets).unwrap();
    gate.open();
    for (ticket, item) in tickets.into_iter().zip(&items) {
        assert_eq!(wait_ticket(ticket).unwrap(), item.1);
    }
    drop(batcher);

    let batches = batches.lock().unwrap();
    assert!(mixed(&batches).is_empty());
    let sizes = sizes_by_key(&batches[1..]);
    // 33 items per key: 11 batches of 3; 3 full batches of 10 (a quarter
    // of 40) and 3 left; one batch of all 33.
    assert_eq!(sizes[&0], vec![3; 11], "items(3)");
    assert_eq!(sizes[&1], [10, 10, 10, 3], "share(0.25) of 40");
    assert_eq!(sizes[&2], [33], "the default limit, max_batch");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Add,
    Get,
    Pin,
    PubSub,
    Dht,
}

/// The IPFS batcher's limits: a quarter of the maximum for adds, half for
/// gets, a third for pins, and pubsub and DHT operations at once.
fn ipfs_limits(op: &(Op, u64)) -> GroupLimits {
    match op.0 {
        Op::Add => GroupLimits::share(0.25),
        Op::Get => GroupLimits::share(0.5),
        Op::Pin => GroupLimits::share(0.33),
        Op::PubSub | Op::Dht => GroupLimits::immediate(),
    }
}

#[test]
fn the_ipfs_configuration_is_expressible_and_respected() {
    let linger = Duration::from_secs(30);
    let gate = Gate::closed();
    let batches: Recorded<Vec<(Op, u64)>> = Arc::default();
    let sink = Arc::clone(&batches);
    let g = gate.clone();
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(100)
        .staging(2_000)
        .linger(Linger::Fixed(linger))
        .group_by(|op: &(Op, u64)| op.0)
        .group_limits(ipfs_limits)
        .handler_fn(move |batch: &mut Batch<'_, (Op, u64), u64>| {
            g.pass();
            sink.lock().unwrap().push(batch.items().to_vec());
            batch.ok_with(|op| op.1);
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    // A plug (an immediate DHT operation) holds the drainer while the rest
    // queues up.
    producer.push((Op::Dht, 0)).unwrap();
    gate.wait_arrived(1);
    // Whole batches' worth of each: 200 adds (8 × 25), 200 gets (4 × 50),
    // 198 pins (6 × 33), and 150 each of pubsub and DHT, interleaved.
    let mut items = Vec::new();
    for i in 1..=200 {
        items.push((Op::Add, i));
        items.push((Op::Get, i));
        if i <= 198 {
            items.push((Op::Pin, i));
        }
        if i <= 150 {
            items.push((Op::PubSub, i));
            items.push((Op::Dht, i));
        }
    }
    let mut tickets = Vec::new();
    producer.submit_many(&items, &mut tickets).unwrap();
    let start = Instant::now();
    gate.open();
    // Only whole batches: nothing needs to wait for the 30 s linger.
    for (mut ticket, item) in tickets.into_iter().zip(&items) {
        let result = ticket
            .wait_timeout(linger / 2)
            .unwrap_or_else(|| panic!("{item:?} waited for the linger"));
        assert_eq!(result.unwrap(), item.1);
    }
    assert!(start.elapsed() < linger);
    let stats = batcher.shutdown();

    let batches = batches.lock().unwrap();
    let mut sizes: HashMap<Op, Vec<usize>> = HashMap::new();
    for batch in batches[1..].iter() {
        let op = batch[0].0;
        assert!(
            batch.iter().all(|item| item.0 == op),
            "one operation type per batch: {batch:?}"
        );
        let ids: Vec<u64> = batch.iter().map(|item| item.1).collect();
        assert!(ids.is_sorted(), "{op:?} in order: {ids:?}");
        sizes.entry(op).or_default().push(batch.len());
    }
    assert_eq!(sizes[&Op::Add], [25; 8], "adds: 25% of 100");
    assert_eq!(sizes[&Op::Get], [50; 4], "gets: 50% of 100");
    assert_eq!(sizes[&Op::Pin], [33; 6], "pins: 33% of 100");
    let immediate_batches = sizes[&Op::PubSub].len() + sizes[&Op::Dht].len();
    assert!(sizes[&Op::PubSub].iter().sum::<usize>() == 150);
    assert!(sizes[&Op::Dht].iter().sum::<usize>() == 150);
    assert_eq!(
        stats.dispatched.immediate,
        immediate_batches as u64 + 1,
        "pubsub and DHT batches (and the plug) dispatched as Immediate: {:?}",
        stats.dispatched
    );
    assert_eq!(stats.dispatched.full, 18, "{:?}", stats.dispatched);
    assert_eq!(stats.dispatched.linger, 0);
}

#[test]
fn an_immediate_group_does_not_linger() {
    let linger = Duration::from_secs(30);
    let batcher = Batcher::builder()
        .max_batch(100)
        .linger(Linger::Fixed(linger))
        .group_by(|op: &(Op, u64)| op.0)
        .group_limits(ipfs_limits)
        .handler_fn(|batch: &mut Batch<'_, (Op, u64), u64>| {
            batch.ok_with(|op| op.1);
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    let mut add = producer.submit((Op::Add, 1)).unwrap();
    for (op, id) in [(Op::PubSub, 2), (Op::Dht, 3)] {
        let mut ticket = producer.submit((op, id)).unwrap();
        let result = ticket
            .wait_timeout(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{op:?} waited for the {linger:?} linger"));
        assert_eq!(result.unwrap(), id);
    }
    assert!(!add.is_ready(), "the add lingers");
    assert_eq!(batcher.stats().dispatched.immediate, 2);
    batcher.flush_now();
    assert_eq!(add.wait_timeout(linger / 2).unwrap().unwrap(), 1);
}

/// Submits two items for each of ten keys, key by key, to a batcher with a
/// 30 s linger and two open groups at most; when `one_at_a_time`, waits for
/// each key's items to reach the drainer before the next key. Checks that
/// keys 0 to 7 are pushed out at once, oldest first, and 8 and 9 linger.
fn push_out_oldest(one_at_a_time: bool) {
    let linger = Duration::from_secs(30);
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .lanes(1)
        .linger(Linger::Fixed(linger))
        .group_by(|item: &Item| item.0)
        .max_open_groups(2)
        .handler_fn(recording(&batches, None))
        .build()
        .unwrap();
    let producer = batcher.producer();
    let mut tickets = Vec::new();
    for key in 0..10 {
        for n in 0..2 {
            let id = u64::from(key) * 10 + n;
            tickets.push((id, producer.submit((key, id)).unwrap()));
        }
        if one_at_a_time {
            let taken = 2 * (u64::from(key) + 1);
            wait_for("the key's items taken by the drainer", || {
                let stats = batcher.stats();
                stats.staged + stats.items_handled == taken
            });
        }
    }
    // Keys 0 to 7 are pushed out by the keys after them, without lingering.
    for (id, ticket) in &mut tickets[..16] {
        let result = ticket
            .wait_timeout(linger / 2)
            .unwrap_or_else(|| panic!("item {id} waited for the linger with no free group"));
        assert_eq!(result.unwrap(), *id);
    }
    wait_for("keys 8 and 9 staged", || batcher.stats().staged == 4);
    assert!(
        tickets[16..].iter().all(|(_, t)| !t.is_ready()),
        "keys 8 and 9 hold the two open groups and linger"
    );
    let expected: Vec<Vec<Item>> = (0..8)
        .map(|key| vec![(key, u64::from(key) * 10), (key, u64::from(key) * 10 + 1)])
        .collect();
    assert_eq!(
        *batches.lock().unwrap(),
        expected,
        "one batch per key, oldest key first"
    );
    batcher.flush_now();
    for (id, ticket) in tickets.drain(16..) {
        assert_eq!(wait_ticket(ticket).unwrap(), id);
    }
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled, 20);
    assert_eq!(stats.dispatched.full, 8, "{:?}", stats.dispatched);
}

#[test]
fn a_new_key_with_no_free_group_pushes_out_the_oldest_group() {
    push_out_oldest(true);
}

#[test]

fn the_oldest_group_is_pushed_out_even_when_keys_arrive_together() {
    push_out_oldest(false);
}

#[test]
fn more_keys_than_open_groups_loses_nothing() {
    const PRODUCERS: u64 = 3;
    const EACH: u64 = 3_000;
    const KEYS: u64 = 17;
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .max_batch(16)
        .linger(Linger::Fixed(Duration::from_millis(2)))
        .group_by(|item: &Item| item.0)
        .max_open_groups(3)
        .handler_fn(recording(&batches, None))
        .build()
        .unwrap();
    let threads: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let make = batcher.producers();
            spawn_bounded(format!("producer {p}"), move || {
                let producer = make.producer();
                let mut tickets = Vec::with_capacity(100);
                for window in (0..EACH).collect::<Vec<_>>().chunks(100) {
                    for &i in window {
                        let item = (((i * 7 + p) % KEYS) as u32, encode(p, i));
                        tickets.push((item.1, producer.submit(item).unwrap()));
                    }
                    for (id, ticket) in tickets.drain(..) {
                        assert_eq!(wait_ticket(ticket).unwrap(), id);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join();
    }
    let stats = batcher.shutdown();
    assert_eq!(stats.accepted, PRODUCERS * EACH);
    assert_eq!(stats.items_handled, PRODUCERS * EACH, "nothing lost");
    let batches = batches.lock().unwrap();
    assert_eq!(
        batches.iter().map(Vec::len).sum::<usize>() as u64,
        PRODUCERS * EACH,
        "nothing handled twice"
    );
    assert!(mixed(&batches).is_empty());
    assert!(batches.iter().all(|b| b.len() <= 16));
}

#[test]
fn no_groups_oldest_item_waits_much_longer_than_its_linger() {
    // Two keys with their own lingers under the batcher's long one; items
    // carry their submission time (µs since `epoch`).
    let fast = Duration::from_millis(40);
    let slow = Duration::from_millis(250);
    let epoch = Instant::now();
    let batches: Recorded<(Instant, Vec<Item>)> = Arc::default();
    let sink = Arc::clone(&batches);
    let batcher = Batcher::builder()
        .linger(Linger::Fixed(Duration::from_secs(30)))
        .group_by(|item: &Item| item.0)
        .group_limits(move |item: &Item| match item.0 {
            0 => GroupLimits::default().with_linger(fast),
            _ => GroupLimits::default().with_linger(slow),
        })
        .handler_fn(move |batch: &mut Batch<'_, Item, u64>| {
            sink.lock()
                .unwrap()
                .push((Instant::now(), batch.items().to_vec()));
            batch.ok_with(|item| item.1);
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_millis(800) {
        let at = epoch.elapsed().as_micros() as u64;
        producer.push((sent % 2, at)).unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(4));
    }
    // No flush: every batch leaves by its group's linger.
    wait_for("every item handled", || {
        batcher.stats().items_handled == u64::from(sent)
    });
    let stats = batcher.shutdown();
    assert_eq!(
        stats.dispatched.linger, stats.batches,
        "{:?}",
        stats.dispatched
    );

    let batches = batches.lock().unwrap();
    let mut count = [0; 2];
    for (at, items) in batches.iter() {
        let key = items[0].0;
        let linger = if key == 0 { fast } else { slow };
        let oldest = epoch + Duration::from_micros(items[0].1);
        let age = *at - oldest;
        assert!(
            age >= linger,
            "key {key}: a batch left {age:?} after its oldest item, linger {linger:?}"
        );
        assert!(
            age < linger + Duration::from_secs(5),
            "key {key}: the oldest item waited {age:?}, linger {linger:?}"
        );
        count[key as usize] += 1;
    }
    assert!(
        count[0] > count[1],
        "the 40 ms group dispatches more often than the 250 ms group: {count:?}"
    );
}

#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_handler_gets_one_key_per_batch_within_its_limit() {
    use ringbatch::AsyncBatch;

    let batches = Batches::default();
    let sink = Arc::clone(&batches);
    let batcher = Batcher::builder()
        .max_batch(32)
        .max_in_flight(2)
        .linger(Linger::Fixed(Duration::from_millis(1)))
        .group_by(|item: &Item| item.0)
        .group_limits(|item: &Item| {
            if item.0 == 0 {
                GroupLimits::items(4)
            } else {
                GroupLimits::share(0.5)
            }
        })
        .async_handler_fn(move |mut batch: AsyncBatch<Item, u64>| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock().unwrap().push(batch.items().to_vec());
                tokio::time::sleep(Duration::from_micros(200)).await;
                batch.ok_with(|item| item.1 * 2);
                Ok(())
            }
        })
        .build()
        .unwrap();
    const TASKS: u64 = 3;
    const EACH: u64 = 500;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let mut producer = batcher.async_producer();
            tokio::spawn(async move {
                for i in 0..EACH {
                    let item = ((i % 3) as u32, encode(t, i));
                    if i % 10 == 0 {
                        assert_eq!(producer.call(item).await.unwrap(), item.1 * 2);
                    } else {
                        producer.push(item).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
    }
    let stats = tokio::time::timeout(BOUND, batcher.shutdown_async())
        .await
        .unwrap();
    assert_eq!(stats.items_handled, TASKS * EACH);
    let batches = batches.lock().unwrap();
    assert!(mixed(&batches).is_empty());
    for batch in batches.iter() {
        let limit = if batch[0].0 == 0 { 4 } else { 16 };
        assert!(
            batch.len() <= limit,
            "key {}: {} items",
            batch[0].0,
            batch.len()
        );
    }
}
