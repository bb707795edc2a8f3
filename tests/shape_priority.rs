//! Priority classes: higher classes first, Critical at once, no starvation
//! of lower classes, FIFO per producer within a class.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BOUND, Gate, Tally, encode, spawn_bounded, wait_ticket};
use ringbatch::{Batch, Batcher, LaneError, Linger, Priority};

type Batches = common::Batches<u64>;

/// A handler that records every batch (after `gate` lets it pass) and
/// answers each item with itself.
fn recording(
    batches: &Batches,
    gate: Option<&Gate>,
) -> impl FnMut(&mut Batch<'_, u64, u64>) -> Result<(), ringbatch::BatchError> + Send + 'static {
    common::recording_with(batches, gate, |&x| x)
}

/// Item values that say their class: 1000s Critical, 2000s High, 3000s
/// Normal, 4000s Low.
fn class_of(item: u64) -> u64 {
    item / 1000
}

#[test]
fn a_priority_class_needs_priorities_on() {
    let batcher = Batcher::builder()
        .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .unwrap();
    for priority in [Priority::Critical, Priority::High, Priority::Low] {
        match batcher.producer_with_priority(priority) {
            Err(LaneError::NoPriorities) => {}
            Err(other) => panic!("{priority:?}: expected NoPriorities, got {other:?}"),
            Ok(_) => panic!("{priority:?}: expected NoPriorities, got a producer"),
        }
    }
    let normal = batcher
        .producer_with_priority(Priority::Normal)
        .expect("Normal is every producer's class");
    assert_eq!(normal.priority(), Priority::Normal);
    assert!(batcher.producer().with_class(Priority::High).is_err());
}

#[test]
fn producers_report_their_class() {
    let batcher = Batcher::builder()
        .priorities(true)
        .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .unwrap();
    assert_eq!(batcher.producer().priority(), Priority::Normal);
    for priority in Priority::ALL {
        let producer = batcher.producer_with_priority(priority).unwrap();
        assert_eq!(producer.priority(), priority);
    }
}

#[test]
fn queued_items_leave_highest_class_first() {
    let gate = Gate::closed();
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(64)
        .priorities(true)
        // Nothing counts as starving here.
        .starvation_age(Duration::from_secs(60))
        .handler_fn(recording(&batches, Some(&gate)))
        .build()
        .unwrap();
    let producer = |p| batcher.producer_with_priority(p).unwrap();
    let (critical, high, normal, low) = (
        producer(Priority::Critical),
        producer(Priority::High),
        producer(Priority::Normal),
        producer(Priority::Low),
    );
    // A plug holds the drainer in the handler while the others queue up.
    normal.push(0).unwrap();
    gate.wait_arrived(1);
    // Submitted lowest class first, interleaved.
    let mut tickets = Vec::new();
    for i in 0..5 {
        tickets.push(low.submit(4000 + i).unwrap());
        tickets.push(normal.submit(3000 + i).unwrap());
        tickets.push(high.submit(2000 + i).unwrap());
    }
    for i in 0..3 {
        tickets.push(critical.submit(1000 + i).unwrap());
    }
    gate.open();
    for ticket in tickets {
        wait_ticket(ticket).unwrap();
    }
    let stats = batcher.shutdown();

    let batches = batches.lock().unwrap();
    let after_plug: Vec<u64> = batches[1..].iter().flatten().copied().collect();
    let expected: Vec<u64> = (1000..1003)
        .chain(2000..2005)
        .chain(3000..3005)
        .chain(4000..4005)
        .collect();
    assert_eq!(
        after_plug, expected,
        "Critical first, then High, Normal, Low, each in submission order"
    );
    assert_eq!(
        batches[1].first().map(|&x| class_of(x)),
        Some(1),
        "the next batch starts with the Critical items: {:?}",
        batches[1]
    );
    assert!(
        stats.dispatched.priority >= 1,
        "a Critical dispatch is counted: {:?}",
        stats.dispatched
    );
}

#[test]
fn a_critical_item_does_not_linger() {
    let linger = Duration::from_secs(30);
    let batcher = Batcher::builder()
        .priorities(true)
        .linger(Linger::Fixed(linger))
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.ok_with(|&x| x);
            Ok(())
        })
        .build()
        .unwrap();
    let critical = batcher.producer_with_priority(Priority::Critical).unwrap();
    let start = Instant::now();
    let mut ticket = critical.submit(1).unwrap();
    let result = ticket
        .wait_timeout(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("a Critical item waited for the {linger:?} linger"));
    assert_eq!(result.unwrap(), 1);
    assert!(start.elapsed() < linger);
    let stats = batcher.shutdown();
    assert_eq!(stats.dispatched.priority, 1, "{:?}", stats.dispatched);
    assert_eq!(stats.dispatched.linger, 0);
}

#[test]
fn a_critical_item_ignores_the_minimum_interval() {
    let interval = Duration::from_secs(30);
    let batcher = Batcher::builder()
        .priorities(true)
        .min_interval(interval)
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.ok_with(|&x| x);
            Ok(())
        })
        .build()
        .unwrap();
    // A first batch starts the interval.
    assert_eq!(
        wait_ticket(batcher.producer().submit(1).unwrap()).unwrap(),
        1
    );
    let critical = batcher.producer_with_priority(Priority::Critical).unwrap();
    let mut ticket = critical.submit(2).unwrap();
    let result = ticket
        .wait_timeout(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("a Critical item waited for the {interval:?} interval"));
    assert_eq!(result.unwrap(), 2);
    assert_eq!(batcher.shutdown().dispatched.priority, 1);
}

#[test]
fn each_producer_keeps_its_order_within_its_class() {
    // Two producers per class on every lane, all at once; each producer's
    // items must reach the handler once each and in order.
    const PER_CLASS: usize = 2;
    const EACH: u64 = 3_000;
    let producers = Priority::ALL.len() * PER_CLASS;
    let tally = Arc::new(Mutex::new(Tally::new(producers)));
    let batcher = Batcher::builder()
        .max_batch(32)
        .priorities(true)
        .starvation_age(Duration::from_millis(1))
        .handler_fn(common::tallying_handler(Arc::clone(&tally)))
        .build()
        .unwrap();
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let class = Priority::ALL[p / PER_CLASS];
            let make = batcher.producers();
            spawn_bounded(format!("producer {p} ({class:?})"), move || {
                let producer = make.producer_with_priority(class).unwrap();
                for i in 0..EACH {
                    let item = encode(p as u64, i);
                    if i % 100 == 0 {
                        wait_ticket(producer.submit(item).unwrap()).unwrap();
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
    let tally = tally.lock().unwrap();
    assert!(
        tally.out_of_order.is_empty(),
        "(producer, expected, got): {:?}",
        tally.out_of_order
    );
    assert_eq!(tally.next, vec![EACH; producers]);
    assert_eq!(stats.items_handled, EACH * producers as u64);
}

#[test]

fn a_low_item_is_taken_under_a_stream_of_high_items() {
    let starvation_age = Duration::from_millis(20);
    let high_seen = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&high_seen);
    let batcher = Batcher::builder()
        .lanes(1)
        .capacity(64)
        .max_batch(4)
        .priorities(true)
        .starvation_age(starvation_age)
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            // A sink slower than the High producer: a millisecond per batch.
            std::thread::sleep(Duration::from_millis(1));
            let high = batch.iter().filter(|&&x| class_of(x) == 2).count();
            seen.fetch_add(high as u64, Ordering::Relaxed);
            batch.ok_with(|&x| x);
            Ok(())
        })
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let high = {
        let (make, stop) = (batcher.producers(), Arc::clone(&stop));
        spawn_bounded("high stream", move || {
            let producer = make.producer_with_priority(Priority::High).unwrap();
            let start = Instant::now();
            // At most 20 s, so that a starving Low item is seen as such.
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(20) {
                producer.push(2000).unwrap();
            }
        })
    };
    // The stream is running and the sink is saturated.
    common::wait_for("the High stream under way", || {
        high_seen.load(Ordering::Relaxed) >= 200
    });
    let low = batcher.producer_with_priority(Priority::Low).unwrap();
    let start = Instant::now();
    let mut ticket = low.submit(4000).unwrap();
    let result = ticket.wait_timeout(Duration::from_secs(10));
    let waited = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    high.join();
    let result = result.unwrap_or_else(|| {
        panic!(
            "a Low item was not handled within {waited:?} under a High stream \
             (starvation age {starvation_age:?})"
        )
    });
    assert_eq!(result.unwrap(), 4000);
    assert!(
        waited < Duration::from_secs(2),
        "a Low item waited {waited:?} with a {starvation_age:?} starvation age"
    );
}

#[test]
fn a_staged_low_item_older_than_the_starvation_age_goes_first() {
    // Staged items linger; once the Low item is older than the starvation
    // age it leads the next batch, ahead of the High items staged after it.
    let starvation_age = Duration::from_millis(50);
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(4)
        .priorities(true)
        .starvation_age(starvation_age)
        .linger(Linger::Fixed(Duration::from_secs(30)))
        .handler_fn(recording(&batches, None))
        .build()
        .unwrap();
    let low = batcher.producer_with_priority(Priority::Low).unwrap();
    let high = batcher.producer_with_priority(Priority::High).unwrap();
    let low_ticket = low.submit(4000).unwrap();
    common::wait_for("the Low item staged", || batcher.stats().staged == 1);
    // Past the starvation age (a lower bound: the item was staged earlier).
    std::thread::sleep(starvation_age * 2);
    // Eight High items: two full batches' worth.
    let mut tickets = Vec::new();
    for i in 0..8 {
        tickets.push(high.submit(2000 + i).unwrap());
    }
    assert_eq!(wait_ticket(low_ticket).unwrap(), 4000);
    batcher.flush_now();
    for ticket in tickets {
        wait_ticket(ticket).unwrap();
    }
    drop(batcher);
    let batches = batches.lock().unwrap();
    assert_eq!(
        batches[0],
        [4000, 2000, 2001, 2002],
        "the starving Low item leads the first full batch: {batches:?}"
    );
}

#[test]
fn one_producer_with_per_item_priorities_orders_by_class_and_keeps_each_class_in_order() {
    let gate = Gate::closed();
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(64)
        .priorities(true)
        .starvation_age(Duration::from_secs(60))
        .handler_fn(recording(&batches, Some(&gate)))
        .build()
        .unwrap();
    let producer = batcher.producer();
    producer.push(0).unwrap();
    gate.wait_arrived(1);
    // One producer, every class, interleaved and lowest first.
    let mut tickets = Vec::new();
    for i in 0..5 {
        tickets.push(
            producer
                .submit_with_priority(4000 + i, Priority::Low)
                .unwrap(),
        );
        tickets.push(producer.submit(3000 + i).unwrap());
        tickets.push(
            producer
                .submit_with_priority(2000 + i, Priority::High)
                .unwrap(),
        );
    }
    for i in 0..3 {
        producer
            .push_with_priority(1000 + i, Priority::Critical)
            .unwrap();
    }
    gate.open();
    for ticket in tickets {
        wait_ticket(ticket).unwrap();
    }
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled, 19, "every item handled once");
    let batches = batches.lock().unwrap();
    let after_plug: Vec<u64> = batches[1..].iter().flatten().copied().collect();
    let expected: Vec<u64> = (1000..1003)
        .chain(2000..2005)
        .chain(3000..3005)
        .chain(4000..4005)
        .collect();
    assert_eq!(
        after_plug, expected,
        "Critical, High, Normal, Low, each class in submission order"
    );
}

#[test]
fn levels_map_onto_classes_and_level_8_goes_at_once() {
    let expected = [
        (0, Priority::Low),
        (2, Priority::Low),
        (3, Priority::Normal),
        (5, Priority::Normal),
        (6, Priority::High),
        (7, Priority::High),
        (8, Priority::Critical),
        (10, Priority::Critical),
    ];
    for (level, class) in expected {
        assert_eq!(Priority::from_level(level), Ok(class), "level {level}");
        assert_eq!(Priority::try_from(level), Ok(class), "level {level}");
    }
    let error = Priority::from_level(11).unwrap_err();
    assert_eq!(error.level, 11);
    assert!(error.to_string().contains("0 to 10"), "{error}");

    // Under a 30 s linger, a level-8 item from a plain producer is
    // dispatched at once.
    let linger = Duration::from_secs(30);
    let batcher = Batcher::builder()
        .priorities(true)
        .linger(Linger::Fixed(linger))
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.ok_with(|&x| x);
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    let level_8 = Priority::from_level(8).unwrap();
    let mut ticket = producer.submit_with_priority(8, level_8).unwrap();
    let result = ticket
        .wait_timeout(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("a level-8 item waited for the {linger:?} linger"));
    assert_eq!(result.unwrap(), 8);
    let stats = batcher.shutdown();
    assert_eq!(stats.dispatched.priority, 1, "{:?}", stats.dispatched);
}

#[test]
fn a_per_item_priority_needs_priorities_on_and_gives_the_item_back() {
    let batcher = Batcher::builder()
        .handler_fn(|batch: &mut Batch<'_, String, ()>| {
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    match producer.submit_with_priority("urgent".to_owned(), Priority::High) {
        Err(ringbatch::SubmitError::NoPriorities(item)) => assert_eq!(item, "urgent"),
        other => panic!("expected NoPriorities, got {:?}", other.map(|_| ())),
    }
    match producer.push_with_priority("later".to_owned(), Priority::Low) {
        Err(error) => assert_eq!(error.into_inner(), "later"),
        Ok(()) => panic!("expected NoPriorities"),
    }
    // Normal is the only class there is: it is accepted.
    producer
        .submit_with_priority("plain".to_owned(), Priority::Normal)
        .unwrap()
        .wait()
        .unwrap();
}
