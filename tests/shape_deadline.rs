//! Deadlines and the maximum age: expired items never reach the handler,
//! their tickets fail with `Expired`, and a deadline cuts a linger short.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BOUND, Gate, encode, spawn_bounded, wait_for, wait_ticket};
use ringbatch::{Batch, Batcher, Error, Linger, SubmitError};

type Batches = common::Batches<u64>;

fn recording(
    batches: &Batches,
    gate: Option<&Gate>,
) -> impl FnMut(&mut Batch<'_, u64, u64>) -> Result<(), ringbatch::BatchError> + Send + 'static {
    common::recording_with(batches, gate, |&x| x)
}

/// Sleeps until `instant` has passed (a known moment, not a guess).
fn sleep_past(instant: Instant) {
    while Instant::now() <= instant {
        std::thread::sleep(
            instant.saturating_duration_since(Instant::now()) + Duration::from_millis(1),
        );
    }
}

#[test]
fn expired_items_never_reach_the_handler() {
    let gate = Gate::closed();
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .lanes(1)
        .deadlines(true)
        .handler_fn(recording(&batches, Some(&gate)))
        .build()
        .unwrap();
    let producer = batcher.producer();
    producer.push(1_000).unwrap();
    gate.wait_arrived(1);
    // Even items expire while the handler is held; odd ones have a minute.
    let short = Instant::now() + Duration::from_millis(50);
    let long = Instant::now() + Duration::from_secs(60);
    let tickets: Vec<_> = (0..10u64)
        .map(|i| {
            let deadline = if i % 2 == 0 { short } else { long };
            producer.submit_with_deadline(i, deadline).unwrap()
        })
        .collect();
    // A plain submission has no deadline.
    let plain = producer.submit(100).unwrap();
    sleep_past(short);
    gate.open();
    for (i, ticket) in tickets.into_iter().enumerate() {
        match (i % 2, wait_ticket(ticket)) {
            (0, Err(Error::Expired)) => {}
            (1, Ok(value)) => assert_eq!(value, i as u64),
            (_, other) => panic!("item {i}: unexpected {other:?}"),
        }
    }
    assert_eq!(wait_ticket(plain).unwrap(), 100);
    let stats = batcher.shutdown();
    assert_eq!(stats.expired, 5);
    assert_eq!(
        stats.items_handled, 7,
        "the plug, five odd items, the plain one"
    );
    assert_eq!(stats.items_handled + stats.expired, stats.accepted);
    let handled: Vec<u64> = batches.lock().unwrap().iter().flatten().copied().collect();
    assert_eq!(
        handled,
        [1_000, 1, 3, 5, 7, 9, 100],
        "no expired item handled"
    );
}

#[test]
fn a_deadline_already_passed_expires_without_a_batch() {
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .deadlines(true)
        .handler_fn(recording(&batches, None))
        .build()
        .unwrap();
    let producer = batcher.producer();
    let ticket = producer.submit_with_deadline(1, Instant::now()).unwrap();
    assert!(matches!(wait_ticket(ticket), Err(Error::Expired)));
    let stats = batcher.shutdown();
    assert_eq!(stats.expired, 1);
    assert_eq!(stats.batches, 0, "the handler never ran");
    assert!(batches.lock().unwrap().is_empty());
}

#[test]
fn max_age_expires_items_that_waited_too_long() {
    let max_age = Duration::from_millis(300);
    let gate = Gate::closed();
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .lanes(1)
        .max_age(max_age)
        .handler_fn(recording(&batches, Some(&gate)))
        .build()
        .unwrap();
    let producer = batcher.producer();
    producer.push(1_000).unwrap();
    gate.wait_arrived(1);
    let submitted = Instant::now();
    let stale: Vec<_> = (0..5).map(|i| producer.submit(i).unwrap()).collect();
    // A later explicit deadline does not extend the maximum age.
    let capped = producer
        .submit_with_deadline(5, Instant::now() + Duration::from_secs(60))
        .unwrap();
    sleep_past(submitted + max_age);
    gate.open();
    for ticket in stale {
        assert!(matches!(wait_ticket(ticket), Err(Error::Expired)));
    }
    assert!(
        matches!(wait_ticket(capped), Err(Error::Expired)),
        "the earlier of deadline and max age wins"
    );
    // A fresh item goes through.
    assert_eq!(wait_ticket(producer.submit(6).unwrap()).unwrap(), 6);
    let stats = batcher.shutdown();
    assert_eq!(stats.expired, 6);
    let handled: Vec<u64> = batches.lock().unwrap().iter().flatten().copied().collect();
    assert_eq!(handled, [1_000, 6]);
}

#[test]
fn an_earlier_deadline_wins_over_max_age() {
    let gate = Gate::closed();
    let batcher = Batcher::builder()
        .lanes(1)
        .max_age(Duration::from_secs(60))
        .handler_fn(recording(&Batches::default(), Some(&gate)))
        .build()
        .unwrap();
    let producer = batcher.producer();
    producer.push(1_000).unwrap();
    gate.wait_arrived(1);
    let deadline = Instant::now() + Duration::from_millis(50);
    let ticket = producer.submit_with_deadline(1, deadline).unwrap();
    sleep_past(deadline);
    gate.open();
    assert!(matches!(wait_ticket(ticket), Err(Error::Expired)));
    assert_eq!(batcher.shutdown().expired, 1);
}

#[test]
fn submit_with_deadline_needs_deadlines_on() {
    let batcher = Batcher::builder()
        .handler_fn(recording(&Batches::default(), None))
        .build()
        .unwrap();
    let producer = batcher.producer();
    match producer.submit_with_deadline(42, Instant::now() + Duration::from_secs(1)) {
        Err(SubmitError::NoDeadlines(item)) => assert_eq!(item, 42, "the item comes back"),
        Err(other) => panic!("expected NoDeadlines(42), got {other:?}"),
        Ok(_) => panic!("expected NoDeadlines(42), got a ticket"),
    }
    assert_eq!(batcher.shutdown().accepted, 0);
}

#[test]
fn a_deadline_inside_the_linger_dispatches_early() {
    let linger = Duration::from_secs(30);
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .deadlines(true)
        .linger(Linger::Fixed(linger))
        .handler_fn(recording(&batches, None))
        .build()
        .unwrap();
    let producer = batcher.producer();
    // One item lingers with no deadline...
    let mut lingering = producer.submit(1).unwrap();
    wait_for("the first item staged", || batcher.stats().staged == 1);
    assert!(!lingering.is_ready());
    // ...until one that must go within 10 s joins it.
    let start = Instant::now();
    let mut urgent = producer
        .submit_with_deadline(2, Instant::now() + Duration::from_secs(10))
        .unwrap();
    let result = urgent
        .wait_timeout(linger / 2)
        .expect("the urgent item does not wait for the 30 s linger");
    assert_eq!(
        result.unwrap(),
        2,
        "dispatched before its deadline, not expired"
    );
    assert_eq!(lingering.wait_timeout(BOUND).unwrap().unwrap(), 1);
    assert!(start.elapsed() < linger);
    let stats = batcher.shutdown();
    assert_eq!(stats.dispatched.deadline, 1, "{:?}", stats.dispatched);
    assert_eq!(stats.dispatched.linger, 0);
    assert_eq!(stats.expired, 0);
    assert_eq!(
        *batches.lock().unwrap(),
        [vec![1, 2]],
        "one batch, both items"
    );
}

#[test]
fn every_item_is_handled_or_expired_exactly_once() {
    const PRODUCERS: u64 = 3;
    const EACH: u64 = 3_000;
    // A moment already passed, for deadlines that are.
    let epoch = Instant::now();
    let handled: Arc<Mutex<Vec<u64>>> = Arc::default();
    let sink = Arc::clone(&handled);
    let batcher = Batcher::builder()
        .max_batch(32)
        .deadlines(true)
        .linger(Linger::Fixed(Duration::from_millis(1)))
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            // A slow sink, so that items queue and some expire.
            std::thread::sleep(Duration::from_micros(300));
            sink.lock().unwrap().extend_from_slice(batch.items());
            batch.ok_with(|&x| x);
            Ok(())
        })
        .build()
        .unwrap();
    let threads: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let make = batcher.producers();
            spawn_bounded(format!("producer {p}"), move || {
                let producer = make.producer();
                let (mut ok, mut expired) = (0u64, 0u64);
                let mut tickets = Vec::with_capacity(200);
                for window in (0..EACH).collect::<Vec<_>>().chunks(200) {
                    for &i in window {
                        // Already passed, a few hundred µs, or a minute.
                        let deadline = match i % 3 {
                            0 => epoch,
                            1 => Instant::now() + Duration::from_micros(300),
                            _ => Instant::now() + Duration::from_secs(60),
                        };
                        let id = encode(p, i);
                        tickets.push((i, producer.submit_with_deadline(id, deadline).unwrap()));
                    }
                    for (i, ticket) in tickets.drain(..) {
                        match wait_ticket(ticket) {
                            Ok(value) => {
                                assert_ne!(i % 3, 0, "item {i}'s deadline had passed");
                                assert_eq!(value, encode(p, i));
                                ok += 1;
                            }
                            Err(Error::Expired) => {
                                assert_ne!(i % 3, 2, "item {i} had a minute");
                                expired += 1;
                            }
                            Err(other) => panic!("item {i}: {other:?}"),
                        }
                    }
                }
                (ok, expired)
            })
        })
        .collect();
    let (mut ok, mut expired) = (0, 0);
    for thread in threads {
        let (o, e) = thread.join();
        ok += o;
        expired += e;
    }
    let stats = batcher.shutdown();
    assert_eq!(stats.expired, expired, "stats count what tickets saw");
    assert_eq!(stats.items_handled, ok);
    assert_eq!(stats.items_handled + stats.expired, stats.accepted);
    assert_eq!(stats.accepted, PRODUCERS * EACH);
    let handled = handled.lock().unwrap();
    let unique: HashSet<u64> = handled.iter().copied().collect();
    assert_eq!(unique.len(), handled.len(), "no item handled twice");
    assert_eq!(handled.len() as u64, ok);
}
