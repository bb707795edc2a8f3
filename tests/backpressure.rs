//! Backpressure policies, and the classic lock-free hang: producers waiting
//! on a ring that fills to capacity, drains and wraps around.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{BOUND, Gate, decode, encode, spawn_bounded};
use ringbatch::{Backpressure, Batch, Batcher, Error, SubmitError};

/// A one-lane batcher whose handler waits at `gate` for every batch, counts
/// the items it sees, and answers each with its value doubled.
fn gated(
    capacity: usize,
    policy: Backpressure,
    gate: &Gate,
) -> (Batcher<u64, u64>, Arc<AtomicU64>) {
    let handled = Arc::new(AtomicU64::new(0));
    let (gate, count) = (gate.clone(), Arc::clone(&handled));
    let batcher = Batcher::builder()
        .lanes(1)
        .capacity(capacity)
        .max_batch(1)
        .backpressure(policy)
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            gate.pass();
            count.fetch_add(batch.len() as u64, Ordering::Relaxed);
            batch.complete_with(|&x| Ok::<_, Error>(x * 2));
            Ok(())
        })
        .build()
        .expect("valid settings");
    (batcher, handled)
}

/// Holds the drainer in the handler with one plug item, then fills the lane
/// to exactly its capacity.
fn plug_and_fill(batcher: &Batcher<u64, u64>, gate: &Gate, capacity: u64) {
    let producer = batcher.producer_on_lane(0).unwrap();
    producer.push(1_000_000).unwrap();
    gate.wait_arrived(1);
    for i in 0..capacity {
        producer
            .try_push(i)
            .expect("room for exactly `capacity` items");
    }
    assert_eq!(batcher.stats().lanes[0].depth, capacity);
}

#[test]
fn reject_gives_back_the_very_item() {
    let gate = Gate::closed();
    let (batcher, handled) = gated(4, Backpressure::Reject, &gate);
    plug_and_fill(&batcher, &gate, 4);
    let producer = batcher.producer();

    let item = 4242;
    match producer.push(item) {
        Err(SubmitError::Full(back)) => assert_eq!(back, item),
        other => panic!("expected Full({item}), got {other:?}"),
    }
    match producer.submit(4343) {
        Err(SubmitError::Full(back)) => assert_eq!(back, 4343),
        Err(other) => panic!("expected Full(4343), got {other:?}"),
        Ok(_) => panic!("expected Full(4343), got a ticket"),
    }
    let stats = batcher.stats();
    assert_eq!(stats.rejected, 2);
    assert_eq!(stats.lanes[0].rejected, 2);

    gate.open();
    assert!(batcher.flush_timeout(BOUND));
    assert_eq!(handled.load(Ordering::Relaxed), 5, "plug and the 4 queued");
    // Room again: accepted.
    assert_eq!(producer.submit(21).unwrap().wait().unwrap(), 42);
    let stats = batcher.shutdown();
    assert_eq!(stats.accepted, 6);
    assert_eq!(stats.submitted, 8);
}

#[test]
fn reject_returns_a_non_copy_item_intact() {
    let gate = Gate::closed();
    let g = gate.clone();
    let batcher = Batcher::builder()
        .lanes(1)
        .capacity(1)
        .max_batch(1)
        .backpressure(Backpressure::Reject)
        .handler_fn(move |batch: &mut Batch<'_, Box<String>, ()>| {
            g.pass();
            batch.complete_with(|_| Ok::<_, Error>(()));
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    producer.push(Box::new("plug".into())).unwrap();
    gate.wait_arrived(1);
    producer.push(Box::new("queued".into())).unwrap();
    let item = Box::new(String::from("refused"));
    let addr = &*item as *const String;
    let back = producer.try_push(item).unwrap_err().into_inner();
    assert_eq!(*back, "refused");
    assert_eq!(
        &*back as *const String, addr,
        "the same allocation came back"
    );
    gate.open();
}

#[test]
fn block_waits_for_room_and_loses_nothing() {
    let gate = Gate::closed();
    let (batcher, handled) = gated(4, Backpressure::Block, &gate);
    plug_and_fill(&batcher, &gate, 4);
    let producer = batcher.producer();

    // A bounded wait on a full lane times out and returns the item.
    match producer.push_timeout(77, Duration::from_millis(20)) {
        Err(SubmitError::Timeout(77)) => {}
        other => panic!("expected Timeout(77), got {other:?}"),
    }
    match producer.submit_timeout(78, Duration::from_millis(20)) {
        Err(SubmitError::Timeout(78)) => {}
        Err(other) => panic!("expected Timeout(78), got {other:?}"),
        Ok(_) => panic!("expected Timeout(78), got a ticket"),
    }

    // A blocking submit waits (the lane stays full while the gate is shut)
    // and completes once the drainer makes room.
    let batcher = Arc::new(batcher);
    let blocked = {
        let batcher = Arc::clone(&batcher);
        spawn_bounded("blocked-producer", move || {
            let producer = batcher.producer();
            producer.submit(100).unwrap().wait().unwrap()
        })
    };
    assert!(
        blocked.still_running_after(Duration::from_millis(50)),
        "the submit should block while the lane is full"
    );
    assert_eq!(
        batcher.stats().lanes[0].depth,
        4,
        "nothing was added while blocked"
    );
    gate.open();
    assert_eq!(blocked.join(), 200);
    assert!(batcher.flush_timeout(BOUND));
    assert_eq!(handled.load(Ordering::Relaxed), 6);
    let stats = Arc::into_inner(batcher).unwrap().shutdown();
    assert_eq!(stats.rejected, 2, "the two timeouts are counted as refused");
    assert_eq!(stats.dropped, 0);
}

#[test]
fn drop_newest_counts_exactly_the_drops() {
    // Deterministic: the lane is full, so every further item is dropped.
    let gate = Gate::closed();
    let (batcher, handled) = gated(4, Backpressure::DropNewest, &gate);
    plug_and_fill(&batcher, &gate, 4);
    let producer = batcher.producer();
    for i in 0..10 {
        producer.push(i).expect("DropNewest accepts by dropping");
    }
    let ticket = producer.submit(5).unwrap();
    assert!(matches!(ticket.wait(), Err(Error::Dropped)));
    assert_eq!(batcher.stats().dropped, 11);
    gate.open();
    assert!(batcher.flush_timeout(BOUND));
    let stats = batcher.shutdown();
    assert_eq!(handled.load(Ordering::Relaxed), 5);
    assert_eq!(stats.dropped, 11);
    assert_eq!(stats.items_handled, 5);
}

#[test]
fn drop_newest_under_concurrent_load_matches_the_test_tally() {
    let handled = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&handled);
    let batcher = Arc::new(
        Batcher::builder()
            .lanes(2)
            .capacity(8)
            .max_batch(8)
            .backpressure(Backpressure::DropNewest)
            .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
                count.fetch_add(batch.len() as u64, Ordering::Relaxed);
                // A slow sink, so that the lanes overflow.
                std::hint::black_box((0..2_000).sum::<u64>());
                batch.complete_with(|&x| Ok::<_, Error>(x));
                Ok(())
            })
            .build()
            .unwrap(),
    );
    const PER_THREAD: u64 = 50_000;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let batcher = Arc::clone(&batcher);
            spawn_bounded(format!("producer-{t}"), move || {
                let producer = batcher.producer();
                let mut dropped = 0u64;
                let mut tickets = Vec::with_capacity(64);
                for i in 0..PER_THREAD {
                    tickets.push(producer.submit(i).unwrap());
                    if tickets.len() == 64 || i + 1 == PER_THREAD {
                        for ticket in tickets.drain(..) {
                            match ticket.wait() {
                                Ok(_) => {}
                                Err(Error::Dropped) => dropped += 1,
                                Err(e) => panic!("unexpected {e:?}"),
                            }
                        }
                    }
                }
                dropped
            })
        })
        .collect();
    let dropped: u64 = threads.into_iter().map(|t| t.join()).sum();
    let stats = Arc::into_inner(batcher).unwrap().shutdown();
    assert!(
        dropped > 0,
        "the load should overflow the lanes at least once"
    );
    assert_eq!(
        stats.dropped, dropped,
        "stats count every drop the producers saw"
    );
    assert_eq!(handled.load(Ordering::Relaxed), 4 * PER_THREAD - dropped);
    assert_eq!(stats.items_handled, 4 * PER_THREAD - dropped);
}

/// The regression test for producers hanging on a full ring: a lane filled to
/// exactly its capacity by several producers at once, drained, and refilled,
/// round after round across many wrap-arounds. Every wait is bounded.
#[test]
fn lane_filled_to_capacity_drained_and_refilled_across_wrap_around() {
    const CAPACITY: u64 = 8;
    const PRODUCERS: u64 = 4;
    const ROUNDS: u64 = 300;
    let gate = Gate::closed();
    let (batcher, handled) = gated(CAPACITY as usize, Backpressure::Block, &gate);
    let batcher = Arc::new(batcher);
    let plug = batcher.producer_on_lane(0).unwrap();
    for round in 0..ROUNDS {
        gate.close();
        plug.push(u64::MAX).unwrap();
        gate.wait_arrived(1 + round * (CAPACITY + 1));
        // Several producers fill the lane to exactly its capacity, at once.
        let fillers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let batcher = Arc::clone(&batcher);
                spawn_bounded(format!("filler-{p}"), move || {
                    let producer = batcher.producer_on_lane(0).unwrap();
                    for i in 0..CAPACITY / PRODUCERS {
                        producer.push(p * 1000 + i).unwrap();
                    }
                })
            })
            .collect();
        for filler in fillers {
            filler.join();
        }
        assert_eq!(batcher.stats().lanes[0].depth, CAPACITY, "round {round}");
        assert!(
            plug.try_push(0).unwrap_err().is_full(),
            "round {round}: lane is full"
        );
        gate.open();
        assert!(
            batcher.flush_timeout(BOUND),
            "round {round}: flush timed out"
        );
        assert_eq!(batcher.stats().lanes[0].depth, 0);
    }
    assert_eq!(handled.load(Ordering::Relaxed), ROUNDS * (CAPACITY + 1));
}

/// Free-running: several producers blocking on a tiny lane while the
/// drainer races them, millions of wrap-arounds; nobody hangs.
#[test]
fn producers_blocking_on_a_tiny_lane_never_hang() {
    for capacity in [1usize, 2, 4] {
        let handled = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&handled);
        let batcher = Arc::new(
            Batcher::builder()
                .lanes(1)
                .capacity(capacity)
                .max_batch(capacity)
                .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
                    count.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.complete_with(|&x| Ok::<_, Error>(x));
                    Ok(())
                })
                .build()
                .unwrap(),
        );
        const PER_THREAD: u64 = 100_000;
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let batcher = Arc::clone(&batcher);
                spawn_bounded(format!("producer-{t}"), move || {
                    let producer = batcher.producer();
                    for i in 0..PER_THREAD {
                        if i % 16 == 0 {
                            assert_eq!(producer.submit(i).unwrap().wait().unwrap(), i);
                        } else {
                            producer.push(i).unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join();
        }
        let stats = Arc::into_inner(batcher).unwrap().shutdown();
        assert_eq!(
            handled.load(Ordering::Relaxed),
            4 * PER_THREAD,
            "capacity {capacity}"
        );
        assert_eq!(stats.items_handled, 4 * PER_THREAD);
    }
}

/// What a spill callback of the tests keeps.
type Spilled = Arc<Mutex<Vec<u64>>>;

/// A one-lane gated batcher (as [`gated`]) whose drop policy hands the
/// items it discards to a spill callback that keeps them.
fn gated_with_spill(
    capacity: usize,
    policy: Backpressure,
    gate: &Gate,
) -> (Batcher<u64, u64>, Arc<AtomicU64>, Spilled) {
    let handled = Arc::new(AtomicU64::new(0));
    let spilled = Arc::new(Mutex::new(Vec::new()));
    let (gate, count, keep) = (gate.clone(), Arc::clone(&handled), Arc::clone(&spilled));
    let batcher = Batcher::builder()
        .lanes(1)
        .capacity(capacity)
        .max_batch(1)
        .backpressure(policy)
        .spill(move |item| keep.lock().unwrap().push(item))
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            gate.pass();
            count.fetch_add(batch.len() as u64, Ordering::Relaxed);
            batch.complete_with(|&x| Ok::<_, Error>(x * 2));
            Ok(())
        })
        .build()
        .expect("valid settings");
    (batcher, handled, spilled)
}

#[test]
fn drop_oldest_evicts_exactly_the_oldest() {
    // Deterministic: the drainer is held with a plug, the lane holds four
    // ticketed items; each further submission evicts the oldest one.
    let gate = Gate::closed();
    let (batcher, handled, spilled) = gated_with_spill(4, Backpressure::DropOldest, &gate);
    let producer = batcher.producer_on_lane(0).unwrap();
    producer.push(1_000_000).unwrap();
    gate.wait_arrived(1);
    let queued: Vec<_> = (0..4).map(|i| producer.submit(i).unwrap()).collect();
    assert_eq!(batcher.stats().lanes[0].depth, 4);

    let fresh: Vec<_> = (10..13).map(|i| producer.submit(i).unwrap()).collect();
    producer.push(13).expect("DropOldest makes room");
    let stats = batcher.stats();
    assert_eq!(stats.dropped, 4);
    assert_eq!(stats.lanes[0].dropped, 4);
    assert_eq!(stats.lanes[0].depth, 4);
    assert_eq!(stats.accepted, 5, "the plug and the four now queued");
    assert_eq!(stats.submitted, 9);
    assert_eq!(*spilled.lock().unwrap(), vec![0, 1, 2, 3], "oldest first");
    for ticket in queued {
        assert!(matches!(ticket.wait(), Err(Error::Dropped)));
    }
    // `try_push` never evicts.
    assert!(producer.try_push(99).unwrap_err().is_full());

    gate.open();
    assert!(batcher.flush_timeout(BOUND));
    for (ticket, i) in fresh.into_iter().zip(10..) {
        assert_eq!(ticket.wait().unwrap(), i * 2);
    }
    let stats = batcher.shutdown();
    assert_eq!(handled.load(Ordering::Relaxed), 5, "plug, 10, 11, 12, 13");
    assert_eq!(stats.items_handled, 5);
    assert_eq!(stats.dropped, 4);
    assert_eq!(stats.rejected, 1);
    assert_eq!(
        stats.accepted + stats.dropped + stats.rejected,
        stats.submitted
    );
}

#[test]
fn drop_oldest_makes_room_for_a_slice() {
    let gate = Gate::closed();
    let (batcher, _handled, spilled) = gated_with_spill(4, Backpressure::DropOldest, &gate);
    let producer = batcher.producer_on_lane(0).unwrap();
    producer.push(1_000_000).unwrap();
    gate.wait_arrived(1);
    producer.push_slice(&[0, 1, 2, 3]).unwrap();
    let mut tickets = Vec::new();
    producer.submit_many(&[10, 11, 12], &mut tickets).unwrap();
    assert_eq!(*spilled.lock().unwrap(), vec![0, 1, 2]);
    gate.open();
    let got: Vec<u64> = tickets.into_iter().map(|t| t.wait().unwrap()).collect();
    assert_eq!(got, vec![20, 22, 24]);
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled, 5, "plug, 3, 10, 11, 12");
    assert_eq!(stats.dropped, 3);
}

#[test]
fn spill_receives_what_drop_newest_refuses() {
    let gate = Gate::closed();
    let (batcher, handled, spilled) = gated_with_spill(4, Backpressure::DropNewest, &gate);
    plug_and_fill(&batcher, &gate, 4);
    let producer = batcher.producer();
    producer.push(100).unwrap();
    assert!(matches!(
        producer.submit(101).unwrap().wait(),
        Err(Error::Dropped)
    ));
    producer.push_slice(&[102, 103]).unwrap();
    let mut tickets = Vec::new();
    producer.submit_many(&[104], &mut tickets).unwrap();
    assert!(matches!(tickets.pop().unwrap().wait(), Err(Error::Dropped)));
    assert_eq!(*spilled.lock().unwrap(), vec![100, 101, 102, 103, 104]);
    gate.open();
    let stats = batcher.shutdown();
    assert_eq!(handled.load(Ordering::Relaxed), 5);
    assert_eq!(stats.dropped, 5);
}

/// Concurrent producers under `DropOldest` (or `DropNewest`) with a slow
/// sink: every item ends exactly once, handled or dropped; tickets say which;
/// the spill callback receives exactly the dropped items; stats match the
/// test's own count; each producer's handled items keep their order.
fn drop_policy_under_concurrent_load(policy: Backpressure) {
    const PRODUCERS: u64 = 4;
    const PER_THREAD: u64 = 20_000;
    let handled = Arc::new(Mutex::new(Vec::new()));
    let spilled = Arc::new(Mutex::new(Vec::new()));
    let (seen, keep) = (Arc::clone(&handled), Arc::clone(&spilled));
    let batcher = Arc::new(
        Batcher::builder()
            .lanes(2)
            .capacity(8)
            .max_batch(8)
            .backpressure(policy)
            .spill(move |item| keep.lock().unwrap().push(item))
            .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
                seen.lock().unwrap().extend_from_slice(batch.items());
                // A slow sink, so that the lanes overflow.
                std::hint::black_box((0..2_000).sum::<u64>());
                batch.complete_with(|&x| Ok::<_, Error>(x));
                Ok(())
            })
            .build()
            .unwrap(),
    );
    let threads: Vec<_> = (0..PRODUCERS)
        .map(|t| {
            let batcher = Arc::clone(&batcher);
            spawn_bounded(format!("producer-{t}"), move || {
                let producer = batcher.producer();
                // Per item: Some(true) handled, Some(false) dropped, None
                // fire-and-forget (the spill log tells).
                let mut outcome = vec![None; PER_THREAD as usize];
                let mut tickets = Vec::with_capacity(64);
                for i in 0..PER_THREAD {
                    let value = encode(t, i);
                    if i % 4 == 3 {
                        producer.push(value).unwrap();
                    } else {
                        tickets.push((i, producer.submit(value).unwrap()));
                    }
                    if tickets.len() == 64 || i + 1 == PER_THREAD {
                        for (i, ticket) in tickets.drain(..) {
                            outcome[i as usize] = Some(match ticket.wait() {
                                Ok(v) => {
                                    assert_eq!(v, encode(t, i));
                                    true
                                }
                                Err(Error::Dropped) => false,
                                Err(e) => panic!("unexpected {e:?}"),
                            });
                        }
                    }
                }
                outcome
            })
        })
        .collect();
    let outcomes: Vec<Vec<Option<bool>>> = threads.into_iter().map(|t| t.join()).collect();
    let stats = Arc::into_inner(batcher).unwrap().shutdown();
    let handled = Arc::into_inner(handled).unwrap().into_inner().unwrap();
    let spilled = Arc::into_inner(spilled).unwrap().into_inner().unwrap();

    // Exactly once: each item handled or spilled, never both, never lost.
    let mut fate = vec![vec![0u8; PER_THREAD as usize]; PRODUCERS as usize];
    let mut last = vec![None::<u64>; PRODUCERS as usize];
    for &value in &handled {
        let (p, i) = decode(value);
        fate[p][i as usize] += 1;
        assert!(
            last[p].is_none_or(|l| l < i),
            "producer {p}'s items out of order: {i} after {:?}",
            last[p]
        );
        last[p] = Some(i);
    }
    for &value in &spilled {
        let (p, i) = decode(value);
        fate[p][i as usize] += 10;
    }
    for (p, (fates, outcome)) in fate.iter().zip(&outcomes).enumerate() {
        for (i, (&fate, &outcome)) in fates.iter().zip(outcome).enumerate() {
            match (fate, outcome) {
                (1, Some(true) | None) | (10, Some(false) | None) => {}
                _ => panic!("item {p}/{i}: fate {fate}, ticket {outcome:?}"),
            }
        }
    }
    let dropped = spilled.len() as u64;
    assert!(
        dropped > 0,
        "the load should overflow the lanes at least once"
    );
    assert_eq!(stats.dropped, dropped, "stats count every drop");
    assert_eq!(handled.len() as u64, PRODUCERS * PER_THREAD - dropped);
    assert_eq!(stats.items_handled, handled.len() as u64);
    assert_eq!(stats.submitted, PRODUCERS * PER_THREAD);
    assert_eq!(stats.accepted, stats.items_handled);
}

#[test]
fn drop_oldest_under_concurrent_load_ends_every_item_once() {
    drop_policy_under_concurrent_load(Backpressure::DropOldest);
}

#[test]
fn drop_newest_spills_exactly_the_dropped_items_under_load() {
    drop_policy_under_concurrent_load(Backpressure::DropNewest);
}

/// A batcher under `IncreaseBatchSize`: one lane of 16, batches of 2 to 16
/// items starting at 2, steps of 50 %, and a handler taking 200 µs a batch.
fn increasing() -> Batcher<u64, u64> {
    Batcher::builder()
        .lanes(1)
        .capacity(16)
        .max_batch(16)
        .backpressure(Backpressure::IncreaseBatchSize)
        .adaptive(
            ringbatch::Adaptive::load()
                .bounds(2, 16)
                .initial(2)
                .steps(0.5, 0.5),
        )
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            std::thread::sleep(Duration::from_micros(200));
            batch.ok_with(|&x| x);
            Ok(())
        })
        .build()
        .unwrap()
}

#[test]
fn increase_batch_size_raises_the_size_while_lanes_are_full_and_lowers_it_after() {
    let batcher = increasing();
    assert_eq!(batcher.stats().effective_max_batch, 2, "the initial size");
    // A flood keeps the lane full: producers find it full, and each batch
    // after that raises the size, up to 16. (No load feedback is reported,
    // so nothing else moves it.)
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let (make, stop) = (batcher.producers(), Arc::clone(&stop));
        spawn_bounded("flood", move || {
            let producer = make.producer();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                producer.push(sent).unwrap();
                sent += 1;
            }
            sent
        })
    };
    common::wait_for("the size raised to its bound of 16", || {
        batcher.stats().effective_max_batch == 16
    });
    stop.store(true, Ordering::Relaxed);
    let flooded = flood.join();
    assert!(batcher.flush_timeout(BOUND), "the flood drained");
    // Once nothing is full, each batch lowers the size a step, back to 2.
    let producer = batcher.producer();
    common::wait_for("the size lowered back to 2", || {
        let mut ticket = producer.submit(0).unwrap();
        assert!(ticket.wait_timeout(BOUND).is_some(), "a lone item handled");
        batcher.stats().effective_max_batch == 2
    });
    let stats = batcher.shutdown();
    assert!(stats.items_handled > flooded, "every item handled");
    assert_eq!(
        stats.dropped, 0,
        "nothing lost: the producer waited for room"
    );
}

#[test]
fn increase_batch_size_needs_adaptive_sizing() {
    let built = Batcher::builder()
        .backpressure(Backpressure::IncreaseBatchSize)
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.ok_with(|&x| x);
            Ok(())
        })
        .build();
    match built {
        Err(ringbatch::ConfigError::Invalid { field, .. }) => assert_eq!(field, "backpressure"),
        other => panic!("expected Invalid(backpressure), got {:?}", other.err()),
    }
}
