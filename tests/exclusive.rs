//! Exclusive producers (`Batcher::exclusive_producer`): a lane of their
//! own, plain-store claims, and the drainer's parks and the shutdown meeting
//! them.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use common::{BOUND, Tally, encode, f, spawn_bounded, tallying_handler, wait_ticket};
use ringbatch::{
    Backpressure, Batch, Batcher, ConfigError, LaneError, Priority, SubmitError, WaitStrategy,
};

/// A batcher of `lanes` lanes (the last `exclusive` laid out for exclusive
/// producers) whose handler tallies every item (producers `0..producers`)
/// and answers `f(item)`.
fn tallying(
    lanes: usize,
    exclusive: usize,
    producers: usize,
    wait: WaitStrategy,
) -> (Batcher<u64, u64>, Arc<Mutex<Tally>>) {
    let tally = Arc::new(Mutex::new(Tally::new(producers)));
    let batcher = Batcher::builder()
        .lanes(lanes)
        .exclusive_lanes(exclusive)
        .capacity(64)
        .max_batch(16)
        .wait_strategy(wait)
        .handler_fn(tallying_handler(Arc::clone(&tally)))
        .build()
        .expect("valid settings");
    (batcher, tally)
}

/// A batcher of `lanes` lanes (the last `exclusive` laid out for exclusive
/// producers) whose drainer parks as soon as it is idle, with
/// `inline_when_idle` as given, tallying two producers' items.
fn parking_tallier(
    lanes: usize,
    exclusive: usize,
    inline: bool,
) -> (Batcher<u64, u64>, Arc<Mutex<Tally>>) {
    let tally = Arc::new(Mutex::new(Tally::new(2)));
    let batcher = Batcher::builder()
        .lanes(lanes)
        .exclusive_lanes(exclusive)
        .wait_strategy(WaitStrategy::Park)
        .inline_when_idle(inline)
        .handler_fn(tallying_handler(Arc::clone(&tally)))
        .build()
        .expect("valid settings");
    (batcher, tally)
}

/// Spins (yielding) until the handler has seen `n` items, failing the test
/// after [`BOUND`]: no flush, so a drainer that slept through a published
/// item is caught.
fn wait_seen(tally: &Mutex<Tally>, n: u64) {
    let deadline = Instant::now() + BOUND;
    while tally.lock().unwrap().items < n {
        assert!(
            Instant::now() < deadline,
            "the handler saw {} of {n} items within {BOUND:?}: the drainer slept through a push",
            tally.lock().unwrap().items
        );
        thread::yield_now();
    }
}

/// Spins (yielding) until the handler has seen producer `p`'s items up to
/// index `n` (exclusive), failing the test after [`BOUND`] (no flush).
fn wait_stream(tally: &Mutex<Tally>, p: usize, n: u64) {
    let deadline = Instant::now() + BOUND;
    while tally.lock().unwrap().next[p] < n {
        assert!(
            Instant::now() < deadline,
            "the handler reached index {} of producer {p}'s {n} items within {BOUND:?}: \
             the drainer slept through a push",
            tally.lock().unwrap().next[p]
        );
        thread::yield_now();
    }
}

#[test]
fn an_exclusive_producer_owns_its_lane_until_dropped() {
    let (batcher, _) = tallying(3, 0, 1, WaitStrategy::Backoff);
    let first = batcher.exclusive_producer().expect("lane 0 is free");
    assert!(first.is_exclusive());
    assert_eq!(first.lane(), 0, "the first lane with no producer");
    assert!(!batcher.producer().is_exclusive());

    assert_eq!(
        batcher.producer_on_lane(0).map(|p| p.lane()),
        Err(LaneError::LaneTaken { lane: 0 })
    );
    assert_eq!(
        first.with_class(Priority::Normal).map(|p| p.lane()),
        Err(LaneError::LaneTaken { lane: 0 }),
        "no second producer on an owned lane through a class either"
    );
    // Shared producers pass the owned lane over.
    for _ in 0..6 {
        assert_ne!(batcher.producer().lane(), 0);
        assert_ne!(batcher.async_producer().lane(), 0);
    }

    let second = batcher.exclusive_producer().expect("lane 1 is free");
    assert_eq!(second.lane(), 1);
    // The last lane stays open to shared producers.
    let err = batcher.exclusive_producer().map(|p| p.lane()).unwrap_err();
    assert_eq!(err, LaneError::NoFreeLane { lanes: 3 });
    assert!(err.to_string().contains("no lane is free"), "{err}");
    assert_eq!(
        LaneError::LaneTaken { lane: 0 }.to_string(),
        "lane 0 is owned by an exclusive producer"
    );
    for _ in 0..6 {
        assert_eq!(batcher.producer().lane(), 2, "the one open lane");
    }

    let open = batcher.producer();
    assert_eq!(open.lane(), 2);
    drop(first);
    let shared = batcher.producer_on_lane(0).expect("lane 0 is free again");
    assert!(!shared.is_exclusive());
    // Lane 0 now has a producer, lane 1 an owner: nothing is free.
    assert_eq!(
        batcher.exclusive_producer().map(|p| p.lane()).unwrap_err(),
        LaneError::NoFreeLane { lanes: 3 }
    );
    drop(shared);
    assert_eq!(batcher.exclusive_producer().map(|p| p.lane()), Ok(0));
    drop((second, open));
}

#[test]
fn a_one_lane_batcher_has_no_lane_to_give() {
    let (batcher, _) = tallying(1, 0, 1, WaitStrategy::Backoff);
    assert_eq!(
        batcher.exclusive_producer().map(|p| p.lane()).unwrap_err(),
        LaneError::NoFreeLane { lanes: 1 }
    );
    assert_eq!(
        batcher
            .producers()
            .exclusive_async_producer()
            .map(|p| p.lane())
            .unwrap_err(),
        LaneError::NoFreeLane { lanes: 1 }
    );
}

/// The drainer parks at once whenever the lanes are empty (`Park`), and
/// the test waits for each item to be handled before pushing the next, so
/// that nearly every push races a park: every item must be handled without
/// a flush to wake the drainer, once each and in order. On a lane of each
/// layout (`exclusive_lanes` 0 and 1).
#[test]
fn pushes_wake_a_drainer_that_parks_after_every_item() {
    for exclusive in [0, 1] {
        pushes_wake_a_parking_drainer(exclusive);
    }
}

fn pushes_wake_a_parking_drainer(exclusive: usize) {
    let (batcher, tally) = tallying(2, exclusive, 1, WaitStrategy::Park);
    let producer = batcher.exclusive_producer().expect("a free lane");
    let n = 20_000;
    for i in 0..n {
        producer.push(encode(0, i)).expect("accepted");
        wait_seen(&tally, i + 1);
    }
    // Bursts too, from a thread of its own.
    let tally2 = Arc::clone(&tally);
    let bursts = spawn_bounded("bursts", move || {
        for burst in 0..500 {
            for i in 0..7 {
                producer
                    .push(encode(0, n + burst * 7 + i))
                    .expect("accepted");
            }
            wait_seen(&tally2, n + burst * 7 + 7);
        }
    });
    bursts.join();
    let seen = tally.lock().unwrap();
    assert_eq!(seen.items, n + 3_500);
    assert!(seen.out_of_order.is_empty(), "{:?}", seen.out_of_order);
    drop(seen);
    assert_eq!(batcher.shutdown().items_handled, n + 3_500);
}

/// Polls the statistics until `done` holds, failing the test after
/// [`BOUND`] with `what` was expected.
fn wait_stats(
    batcher: &Batcher<u64, u64>,
    what: &str,
    done: impl Fn(&ringbatch::Stats) -> bool,
) -> ringbatch::Stats {
    let deadline = Instant::now() + BOUND;
    loop {
        let stats = batcher.stats();
        if done(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "expected {what} within {BOUND:?}; parks {}, park fences {}",
            stats.parks,
            stats.park_fences
        );
        thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Whether this process may run `membarrier`'s expedited private barrier,
/// which an exclusive producer's plain-store claims need (without it they
/// claim with the CAS, and the drainer's parks run no fence).
fn membarrier_works() -> bool {
    #[cfg(target_os = "linux")]
    {
        const REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;
        // SAFETY: `membarrier` takes two integers and touches no memory of
        // ours; registering again is harmless.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                REGISTER_PRIVATE_EXPEDITED,
                0 as libc::c_long,
            ) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// `Stats::parks` counts the drainer's sleeps, and `Stats::park_fences`
/// the parks that ran the asymmetric fence: none while only shared
/// producers are on the lanes, and every park while an exclusive producer
/// owns a lane (where the fence works).
#[test]
fn parks_and_their_fences_are_counted() {
    let (batcher, tally) = tallying(2, 0, 2, WaitStrategy::Park);
    let shared = batcher.producer_on_lane(0).expect("lane 0");
    shared.push(encode(0, 0)).expect("accepted");
    wait_seen(&tally, 1);
    let stats = wait_stats(&batcher, "a park", |s| s.parks >= 1);
    assert_eq!(
        stats.park_fences, 0,
        "no lane is owned, so no park runs the fence"
    );
    drop(shared);

    let owner = batcher.exclusive_producer().expect("a free lane");
    let before = batcher.stats();
    owner.push(encode(1, 0)).expect("accepted");
    wait_seen(&tally, 2);
    if membarrier_works() {
        // The park after the owner's item announces on an owned lane.
        wait_stats(&batcher, "a park that runs the fence", |s| {
            s.park_fences > before.park_fences && s.parks > before.parks
        });
    } else {
        // Two parks: at least one announced after the lane was owned.
        let after = wait_stats(&batcher, "two more parks", |s| s.parks >= before.parks + 2);
        assert_eq!(
            after.park_fences, 0,
            "no fence runs where membarrier does not work"
        );
    }
    drop(owner);
    let last = batcher.shutdown();
    assert_eq!(last.items_handled, 2);
}

/// Shutdown while an exclusive producer pushes flat out: each push is either
/// accepted (and then handled exactly once) or refused as closed with its
/// item given back; no item is lost and none arrives after the refusals.
/// Every other round on a lane laid out for exclusive producers.
#[test]
fn shutdown_racing_an_exclusive_producer_loses_nothing() {
    for round in 0..20 {
        let (batcher, tally) = tallying(2, round as usize % 2, 1, WaitStrategy::Backoff);
        let producer = batcher.exclusive_producer().expect("a free lane");
        let accepted = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&accepted);
        let pusher = spawn_bounded("pusher", move || {
            let mut i = 0;
            loop {
                match producer.push(encode(0, i)) {
                    Ok(()) => {
                        i += 1;
                        counted.store(i, Ordering::Release);
                    }
                    Err(SubmitError::Closed(item)) => {
                        assert_eq!(item, encode(0, i), "the refused item comes back");
                        // Refused from now on.
                        assert!(matches!(producer.push(0), Err(SubmitError::Closed(0))));
                        return i;
                    }
                    Err(other) => panic!("unexpected refusal: {other:?}"),
                }
            }
        });
        // Let some items through first (a few rounds close at once).
        let target = round * 500;
        let deadline = Instant::now() + BOUND;
        while accepted.load(Ordering::Acquire) < target {
            assert!(Instant::now() < deadline, "the pusher made no progress");
            thread::yield_now();
        }
        let stats = batcher.shutdown();
        let pushed = pusher.join();
        let seen = tally.lock().unwrap();
        assert_eq!(seen.items, pushed, "round {round}: handled = accepted");
        assert_eq!(stats.items_handled, pushed);
        assert_eq!(stats.accepted, pushed);
        assert!(seen.out_of_order.is_empty(), "{:?}", seen.out_of_order);
    }
}

/// Tickets, slices and the `inline_when_idle` direct path from an exclusive
/// producer, and a shared producer on the lane once the owner is gone, on
/// a lane of each layout.
#[test]
fn tickets_slices_and_handover_to_a_shared_producer() {
    for (inline, exclusive) in [(false, 0), (true, 0), (false, 1), (true, 1)] {
        let (batcher, tally) = parking_tallier(2, exclusive, inline);
        let owner = batcher.exclusive_producer().expect("a free lane");
        let lane = owner.lane();
        for i in 0..1_000 {
            let item = encode(0, i);
            let result = wait_ticket(owner.submit(item).expect("accepted"));
            assert_eq!(result.expect("handled"), f(item));
        }
        let slice: Vec<u64> = (1_000..1_064).map(|i| encode(0, i)).collect();
        owner.push_slice(&slice).expect("accepted");
        drop(owner);

        let shared = batcher.producer_on_lane(lane).expect("the lane is free");
        for i in 0..1_000 {
            let item = encode(1, i);
            let result = wait_ticket(shared.submit(item).expect("accepted"));
            assert_eq!(result.expect("handled"), f(item));
        }
        let stats = batcher.shutdown();
        let seen = tally.lock().unwrap();
        assert_eq!(seen.items, 2_064, "inline_when_idle {inline}, {exclusive}");
        assert_eq!(stats.items_handled, 2_064);
        assert!(seen.out_of_order.is_empty(), "{:?}", seen.out_of_order);
    }
}

#[test]
fn an_exclusive_async_producer_submits_from_a_task() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let batcher = Batcher::builder()
        .lanes(2)
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.ok_with(|x| x * 3);
            Ok(())
        })
        .build()
        .expect("valid settings");
    let mut producer = batcher.exclusive_async_producer().expect("a free lane");
    assert!(producer.as_sync().is_exclusive());
    runtime.block_on(async {
        for i in 0..1_000 {
            assert_eq!(producer.call(i).await.expect("handled"), i * 3);
        }
    });
    assert_eq!(batcher.shutdown().items_handled, 1_000);
}

/// Under `DropOldest` the owner's producers also evict, so it claims with
/// the CAS; it still owns its lane, and the accounting holds.
#[test]
fn an_exclusive_producer_of_an_evicting_batcher_still_accounts_every_item() {
    let handled = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&handled);
    let batcher = Batcher::builder()
        .lanes(2)
        .capacity(16)
        .max_batch(4)
        .backpressure(Backpressure::DropOldest)
        .handler_fn(move |batch: &mut Batch<'_, u64, ()>| {
            count.fetch_add(batch.len() as u64, Ordering::Relaxed);
            Ok(())
        })
        .build()
        .expect("valid settings");
    let producer = batcher.exclusive_producer().expect("a free lane");
    for i in 0..100_000 {
        producer.push(i).expect("accepted or evicting");
    }
    drop(producer);
    let stats = batcher.shutdown();
    assert_eq!(stats.accepted, 100_000 - stats.dropped);
    assert_eq!(stats.items_handled, handled.load(Ordering::Relaxed));
    assert_eq!(stats.items_handled, stats.accepted);
}

/// A lane changes hands again and again while the drainer parks whenever
/// it is idle: an exclusive producer takes it (the drainer may be parking
/// with its announcement in the tail word, which the owner's stores
/// overwrite), pushes, and is dropped; a shared producer then pushes on the
/// same lane. Meanwhile another thread submits on another lane (with
/// `inline_when_idle`, those submissions run drainer turns, which announce
/// parks too). Each batch is waited for without a flush, so a lost wake-up
/// fails the test. With `exclusive_lanes(2)`, the lanes changing hands and
/// the other thread's lane are laid out for exclusive producers.
#[test]
fn lanes_change_hands_while_the_drainer_parks() {
    for (inline, exclusive) in [(false, 0), (true, 0), (false, 2), (true, 2)] {
        let (batcher, tally) = parking_tallier(3, exclusive, inline);
        let other = batcher.producer_on_lane(2).expect("lane 2");
        let submitter = spawn_bounded("submitter", move || {
            for i in 0..5_000 {
                let item = encode(1, i);
                let result = wait_ticket(other.submit(item).expect("accepted"));
                assert_eq!(result.expect("handled"), f(item));
            }
        });
        let mut next = 0;
        for round in 0..400 {
            let owner = batcher.exclusive_producer().expect("lane 0 or 1 is free");
            let lane = owner.lane();
            for _ in 0..5 {
                owner.push(encode(0, next)).expect("accepted");
                next += 1;
            }
            wait_stream(&tally, 0, next);
            drop(owner);
            let shared = batcher.producer_on_lane(lane).expect("free again");
            shared.push(encode(0, next)).expect("accepted");
            next += 1;
            wait_stream(&tally, 0, next);
            assert!(!shared.is_exclusive(), "round {round}");
        }
        submitter.join();
        let stats = batcher.shutdown();
        let seen = tally.lock().unwrap();
        assert_eq!(
            seen.items,
            next + 5_000,
            "inline_when_idle {inline}, {exclusive}"
        );
        assert_eq!(stats.items_handled, next + 5_000);
        assert!(seen.out_of_order.is_empty(), "{:?}", seen.out_of_order);
    }
}

#[test]
fn exclusive_lanes_are_taken_first_and_left_out_of_the_lane_assignment() {
    let (batcher, _) = tallying(4, 2, 1, WaitStrategy::Backoff);
    for _ in 0..16 {
        let lane = batcher.producer().lane();
        assert!(
            lane < 2,
            "a shared producer was assigned lane {lane} of 4 (2 exclusive)"
        );
    }
    let first = batcher.exclusive_producer().expect("a free lane");
    let second = batcher.exclusive_producer().expect("a free lane");
    let third = batcher.exclusive_producer().expect("a free lane");
    let mut lanes = [first.lane(), second.lane()];
    lanes.sort_unstable();
    assert_eq!(lanes, [2, 3], "the laid-out lanes are taken first");
    assert!(third.lane() < 2, "then the others: lane {}", third.lane());
}

#[test]
fn exclusive_lanes_must_leave_a_lane_to_shared_producers() {
    let error = Batcher::builder()
        .lanes(2)
        .exclusive_lanes(2)
        .handler_fn(|_: &mut Batch<'_, u64, ()>| Ok(()))
        .build()
        .map(|_| ())
        .unwrap_err();
    assert_eq!(error.field(), "exclusive_lanes", "{error}");
    assert!(matches!(error, ConfigError::Invalid { .. }), "{error:?}");
}

/// An item whose clone panics when its value is [`Fragile::BOOM`].
#[derive(Debug, PartialEq, Eq)]
struct Fragile(u64);

impl Fragile {
    const BOOM: u64 = u64::MAX;
}

impl Clone for Fragile {
    fn clone(&self) -> Self {
        assert_ne!(self.0, Self::BOOM, "a clone that panics");
        Fragile(self.0)
    }
}

/// On a lane laid out for exclusive producers the owner's plain items are
/// read by its cursor, and the ticketed and skipped ones by stamp. A stream
/// mixing all three (pushes, submits every few items, slices, and slices
/// whose clone panics midway, leaving their tail published empty) reaches
/// the handler once each and in order, with every ticket answered.
#[test]
fn an_owner_mixes_plain_ticketed_and_skipped_items_on_an_exclusive_lane() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let batcher = Batcher::builder()
        .lanes(2)
        .exclusive_lanes(1)
        .capacity(64)
        .max_batch(8)
        .handler_fn(move |batch: &mut Batch<'_, Fragile, u64>| {
            record
                .lock()
                .unwrap()
                .extend(batch.items().iter().map(|item| item.0));
            batch.ok_with(|item| f(item.0));
            Ok(())
        })
        .build()
        .expect("valid settings");
    let owner = batcher.exclusive_producer().expect("a free lane");
    assert_eq!(owner.lane(), 1, "the lane laid out for it");
    let mut expected = Vec::new();
    let mut tickets = Vec::new();
    let mut next = 0u64;
    for round in 0..2_000 {
        match round % 5 {
            0 | 1 => {
                owner.push(Fragile(next)).expect("accepted");
                expected.push(next);
                next += 1;
            }
            2 => {
                tickets.push((next, owner.submit(Fragile(next)).expect("accepted")));
                expected.push(next);
                next += 1;
            }
            3 => {
                let slice: Vec<Fragile> = (next..next + 5).map(Fragile).collect();
                owner.push_slice(&slice).expect("accepted");
                expected.extend(next..next + 5);
                next += 5;
            }
            _ => {
                // The third clone panics: the first two are published, the
                // rest of the run is published empty.
                let slice = vec![
                    Fragile(next),
                    Fragile(next + 1),
                    Fragile(Fragile::BOOM),
                    Fragile(next + 2),
                ];
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    owner.push_slice(&slice)
                }));
                assert!(outcome.is_err(), "the clone panicked");
                expected.extend(next..next + 2);
                next += 3;
            }
        }
        if tickets.len() == 16 {
            for (item, ticket) in tickets.drain(..) {
                assert_eq!(wait_ticket(ticket).expect("handled"), f(item));
            }
        }
    }
    for (item, ticket) in tickets.drain(..) {
        assert_eq!(wait_ticket(ticket).expect("handled"), f(item));
    }
    drop(owner);
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled, expected.len() as u64);
    assert_eq!(*seen.lock().unwrap(), expected, "once each, in order");
}

/// With `spin_between_short_runs`, the drainer spins between short runs
/// while items keep coming; a burst still reaches the handler without a
/// flush once it ends (the sweep that finds nothing dispatches), once each
/// and in order, from an exclusive producer on a lane laid out for it and
/// from a shared one.
#[test]
fn spinning_between_short_runs_holds_no_item_back() {
    let tally = Arc::new(Mutex::new(Tally::new(2)));
    let batcher = Batcher::builder()
        .lanes(2)
        .exclusive_lanes(1)
        .capacity(1024)
        .max_batch(256)
        .spin_between_short_runs(true)
        .handler_fn(tallying_handler(Arc::clone(&tally)))
        .build()
        .expect("valid settings");
    let owner = batcher.exclusive_producer().expect("a free lane");
    let shared = batcher.producer();
    let mut sent = [0u64; 2];
    for burst in 1..=200u64 {
        // Bursts of varying length, most shorter than a batch.
        for _ in 0..(burst * 7) % 300 {
            owner.push(encode(0, sent[0])).expect("accepted");
            sent[0] += 1;
        }
        shared.push(encode(1, sent[1])).expect("accepted");
        sent[1] += 1;
        wait_stream(&tally, 0, sent[0]);
        wait_stream(&tally, 1, sent[1]);
    }
    drop((owner, shared));
    let stats = batcher.shutdown();
    let seen = tally.lock().unwrap();
    assert_eq!(stats.items_handled, sent[0] + sent[1]);
    assert_eq!(seen.items, sent[0] + sent[1]);
    assert!(seen.out_of_order.is_empty(), "{:?}", seen.out_of_order);
}
