//! Exactly-once and per-producer order under stress: `2 × cores` producers,
//! a million items each, mixing `push`, `submit`, `submit_many` and
//! `push_slice`, plus an oversubscribed run (8 producers, several per lane).

mod common;

use std::sync::{Arc, Mutex};

use common::{Tally, cores, encode, f, spawn_bounded, tallying_handler};
use ringbatch::{Batcher, LaneAssignment, Ticket, WaitStrategy};

/// Builds a batcher whose handler records every item in `tally` and answers
/// each with `f(item)`.
fn tallying_batcher(
    producers: usize,
    lanes: Option<usize>,
    capacity: usize,
    wait: WaitStrategy,
) -> (Batcher<u64, u64>, Arc<Mutex<Tally>>) {
    let tally = Arc::new(Mutex::new(Tally::new(producers)));
    let seen = Arc::clone(&tally);
    let mut builder = Batcher::builder()
        .capacity(capacity)
        .max_batch(capacity.min(256))
        // Each producer holds up to 72 tickets before waiting on them.
        .result_slots(1024)
        .wait_strategy(wait)
        .lane_assignment(LaneAssignment::RoundRobin);
    if let Some(lanes) = lanes {
        builder = builder.lanes(lanes);
    }
    let batcher = builder
        .handler_fn(tallying_handler(seen))
        .build()
        .expect("valid settings");
    (batcher, tally)
}

/// One producer's run: `items` values in order, by rounds of the four ways to
/// submit. Returns how many results it checked.
fn mixed_producer(producer: ringbatch::Producer<u64, u64>, id: u64, items: u64) -> u64 {
    let mut next = 0u64;
    let mut checked = 0u64;
    let mut tickets: Vec<Ticket<u64>> = Vec::with_capacity(64);
    let mut slice = Vec::with_capacity(32);
    let mut expected = Vec::with_capacity(64);
    let mut round = 0u64;
    while next < items {
        let n = (items - next).min(24);
        match round % 4 {
            0 => {
                for i in next..next + n {
                    producer.push(encode(id, i)).expect("push accepted");
                }
            }
            1 => {
                for i in next..next + n {
                    tickets.push(producer.submit(encode(id, i)).expect("submit accepted"));
                    expected.push(f(encode(id, i)));
                }
            }
            2 => {
                slice.clear();
                slice.extend((next..next + n).map(|i| encode(id, i)));
                producer.push_slice(&slice).expect("push_slice accepted");
            }
            _ => {
                slice.clear();
                slice.extend((next..next + n).map(|i| encode(id, i)));
                producer
                    .submit_many(&slice, &mut tickets)
                    .expect("submit_many accepted");
                expected.extend(slice.iter().map(|&x| f(x)));
            }
        }
        next += n;
        round += 1;
        if tickets.len() >= 48 || next == items {
            for (ticket, want) in tickets.drain(..).zip(expected.drain(..)) {
                let got = ticket.wait().expect("every ticket resolves Ok");
                assert_eq!(
                    got, want,
                    "producer {id}: a ticket returned another item's result"
                );
                checked += 1;
            }
        }
    }
    checked
}

fn run(producers: usize, lanes: Option<usize>, items: u64, capacity: usize, wait: WaitStrategy) {
    let (batcher, tally) = tallying_batcher(producers, lanes, capacity, wait);
    let batcher = Arc::new(batcher);
    let threads: Vec<_> = (0..producers)
        .map(|id| {
            let batcher = Arc::clone(&batcher);
            spawn_bounded(format!("producer-{id}"), move || {
                let producer = batcher.producer();
                mixed_producer(producer, id as u64, items)
            })
        })
        .collect();
    let checked: u64 = threads.into_iter().map(|t| t.join()).sum();
    let batcher = Arc::into_inner(batcher).expect("producers are done");
    let stats = batcher.shutdown();

    let tally = tally.lock().unwrap();
    let total = producers as u64 * items;
    assert!(
        tally.out_of_order.is_empty(),
        "items lost, duplicated or reordered (producer, expected index, got): {:?}",
        tally.out_of_order
    );
    for (producer, &next) in tally.next.iter().enumerate() {
        assert_eq!(
            next, items,
            "producer {producer}: handler saw {next} of {items} items"
        );
    }
    assert_eq!(tally.items, total, "handler saw every item exactly once");
    // Half the rounds carry tickets.
    assert!(
        checked >= total / 2 - 24 * producers as u64,
        "checked only {checked} results"
    );
    assert_eq!(stats.items_handled, total);
    assert_eq!(stats.accepted, total);
    assert_eq!(stats.submitted, total);
    assert_eq!(stats.batches, tally.batches);
    assert!(stats.max_batch_items <= 256);
    assert_eq!(
        stats.pool_free, stats.pool_size,
        "every batch buffer is back in the pool"
    );
}

#[test]
fn every_item_once_in_producer_order_under_stress() {
    run(2 * cores(), None, 1_000_000, 1024, WaitStrategy::Backoff);
}

#[test]
fn eight_producers_on_few_cores_share_lanes_without_spinning_forever() {
    // 8 producers on 2 lanes: several producers per lane, more threads than
    // cores; Backoff parks waiting producers and the drainer. Every join is
    // bounded, so a thread that never finishes fails the test.
    run(8, Some(2), 200_000, 64, WaitStrategy::Backoff);
}

#[test]
fn park_strategy_loses_no_wake_up() {
    // `Park` sleeps at once whenever a thread waits: every hand-off relies on
    // a wake-up.
    run(4, Some(2), 50_000, 16, WaitStrategy::Park);
}

#[test]
fn yield_and_busy_spin_strategies_deliver_everything() {
    run(2, Some(1), 100_000, 64, WaitStrategy::Yield);
    run(2, Some(2), 100_000, 64, WaitStrategy::BusySpin);
}
