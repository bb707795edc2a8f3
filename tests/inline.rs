//! `inline_when_idle`: a submitter that finds the drainer asleep runs the
//! batch itself. Every item is still handled exactly once and in per-producer
//! order, whichever thread runs it; requests (pause, flush, shutdown) stay
//! with the drainer thread; settings it cannot serve are refused.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use common::{BOUND, Tally, encode, f, spawn_bounded, tallying_handler, wait_ticket};
#[cfg(feature = "tokio")]
use ringbatch::AsyncBatch;
use ringbatch::{
    Batch, Batcher, ConfigError, Error, LaneAssignment, Linger, RetryPolicy, WaitStrategy,
};

/// The thread each batch ran on, in order.
type Threads = Arc<Mutex<Vec<ThreadId>>>;

/// Extra builder settings for [`recording_threads_with`].
type Settings = fn(ringbatch::BatcherBuilder<u64, u64>) -> ringbatch::BatcherBuilder<u64, u64>;

/// A one-lane batcher answering `x` with `f(x)` that records the thread of
/// every batch.
fn recording_threads(wait: WaitStrategy) -> (Batcher<u64, u64>, Threads) {
    recording_threads_with(wait, |builder| builder)
}

/// [`recording_threads`] with `settings` applied to the builder.
fn recording_threads_with(wait: WaitStrategy, settings: Settings) -> (Batcher<u64, u64>, Threads) {
    let threads: Threads = Arc::default();
    let seen = Arc::clone(&threads);
    let batcher = settings(
        Batcher::builder()
            .lanes(1)
            .wait_strategy(wait)
            .inline_when_idle(true),
    )
    .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
        seen.lock().unwrap().push(thread::current().id());
        batch.ok_with(|&x| f(x));
        Ok(())
    })
    .build()
    .expect("valid settings");
    (batcher, threads)
}

/// Round trips on the calling thread until one batch ran on it (the drainer
/// went to sleep and the submitter took its turn); panics if none did within
/// the bound. Returns the round trips made.
fn round_trips_until_inline(producer: &ringbatch::Producer<u64, u64>, threads: &Threads) -> u64 {
    let me = thread::current().id();
    let deadline = Instant::now() + BOUND;
    let mut x = 0;
    loop {
        assert_eq!(
            wait_ticket(producer.submit(x).unwrap()).expect("a result"),
            f(x)
        );
        x += 1;
        if threads.lock().unwrap().last() == Some(&me) {
            return x;
        }
        assert!(
            Instant::now() < deadline,
            "no batch ran on the submitting thread in {x} round trips within {BOUND:?}"
        );
        // Give the drainer's backoff time to run out and park it.
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn an_idle_drainer_lets_the_submitter_run_the_batch() {
    for wait in [WaitStrategy::Park, WaitStrategy::Backoff] {
        let (batcher, threads) = recording_threads(wait);
        let producer = batcher.producer();
        let before = round_trips_until_inline(&producer, &threads);
        // The drainer stays asleep while submitters serve themselves: the
        // next round trips (no pause between them) all run here.
        let me = thread::current().id();
        let from = threads.lock().unwrap().len();
        for x in 0..1_000 {
            assert_eq!(
                wait_ticket(producer.submit(x).unwrap()).expect("a result"),
                f(x)
            );
        }
        let ran = threads.lock().unwrap()[from..].to_vec();
        let here = ran.iter().filter(|&&t| t == me).count();
        assert!(
            here >= 990,
            "{wait:?}: only {here} of {} batches after the first inline one ran on the \
             submitting thread",
            ran.len()
        );
        let stats = batcher.shutdown();
        assert_eq!(stats.items_handled, before + 1_000);
        assert_eq!(stats.items_failed, 0);
    }
}

/// Once the drainer sleeps, a round trip skips the lane: the submitter
/// handles its item as a batch of one and gets a ticket that already holds
/// the result and has no lane sequence. The stats still count every item
/// as accepted, on its lane.
#[test]
fn idle_round_trips_skip_the_lane() {
    let (batcher, threads) = recording_threads(WaitStrategy::Park);
    let producer = batcher.producer();
    let before = round_trips_until_inline(&producer, &threads);
    let mut direct = 0;
    for x in 0..1_000 {
        let ticket = producer.submit(x).unwrap();
        if ticket.sequence().is_none() {
            assert!(ticket.is_ready(), "a ticket without a sequence is ready");
            direct += 1;
        }
        assert_eq!(wait_ticket(ticket).expect("a result"), f(x));
    }
    assert!(
        direct >= 990,
        "only {direct} of 1000 idle round trips took the direct path"
    );
    let stats = batcher.stats();
    assert_eq!(stats.items_handled, before + 1_000);
    assert_eq!(
        stats.accepted,
        before + 1_000,
        "accepted counts direct items"
    );
    assert_eq!(stats.lanes[0].accepted, before + 1_000);
    assert_eq!(stats.in_lanes(), 0);
    assert_eq!(batcher.shutdown().items_handled, before + 1_000);
}

/// With histograms or failure policies a batch needs more than the
/// handler, so round trips keep going through the lane (every ticket has
/// a sequence), though the submitter still runs the turns.
#[test]
fn histograms_and_failure_policies_keep_the_lane() {
    let settings: [(&str, Settings); 2] = [
        ("histograms", |b| b.histograms(true)),
        ("dead letters", |b| b.dead_letter(|_| {})),
    ];
    for (name, settings) in settings {
        let (batcher, threads) = recording_threads_with(WaitStrategy::Park, settings);
        let producer = batcher.producer();
        let before = round_trips_until_inline(&producer, &threads);
        for x in 0..200 {
            let ticket = producer.submit(x).unwrap();
            assert!(
                ticket.sequence().is_some(),
                "{name}: a round trip skipped the lane"
            );
            assert_eq!(wait_ticket(ticket).expect("a result"), f(x));
        }
        let me = thread::current().id();
        let here = threads.lock().unwrap().iter().filter(|&&t| t == me).count();
        assert!(here > 0, "{name}: no turn ran on the submitting thread");
        assert_eq!(batcher.shutdown().items_handled, before + 200, "{name}");
    }
}

#[test]
fn pushes_never_run_the_handler_on_the_pushing_thread() {
    let (batcher, threads) = recording_threads(WaitStrategy::Park);
    let producer = batcher.producer();
    round_trips_until_inline(&producer, &threads);
    let from = threads.lock().unwrap().len();
    for x in 0..2_000 {
        producer.push(x).unwrap();
        if x % 100 == 0 {
            thread::sleep(Duration::from_micros(200));
        }
    }
    batcher.flush();
    let me = thread::current().id();
    let ran = threads.lock().unwrap()[from..].to_vec();
    assert!(!ran.is_empty(), "the pushed items were handled");
    assert!(
        ran.iter().all(|&t| t != me),
        "a push ran a batch on the pushing thread"
    );
    assert_eq!(batcher.shutdown().items_handled as usize, 2_000 + from);
}

/// Producers on several lanes, each alternating round trips and bursts of
/// pushes with pauses (so that the drainer sleeps often and turns run on
/// every producer thread): every item arrives once, in per-producer order,
/// with its own result, and the stats agree.
#[test]
fn exactly_once_and_in_order_when_submitters_run_turns() {
    stress(64, false);
}

/// As above on lanes of 4 slots (producers wait for room while turns run),
/// with a thread flushing throughout.
#[test]
fn exactly_once_with_tiny_lanes_and_flushes() {
    stress(4, true);
}

fn stress(capacity: usize, flushing: bool) {
    const PRODUCERS: u64 = 4;
    const ITEMS: u64 = 20_000;
    let tally = Arc::new(Mutex::new(Tally::new(PRODUCERS as usize)));
    let turns_elsewhere = Arc::new(AtomicU64::new(0));
    let drainer_thread = Arc::new(Mutex::new(None::<ThreadId>));
    let handler = {
        let mut tally = tallying_handler(Arc::clone(&tally));
        let (turns, drainer) = (Arc::clone(&turns_elsewhere), Arc::clone(&drainer_thread));
        move |batch: &mut Batch<'_, u64, u64>| {
            let name = thread::current().name().map(str::to_owned);
            if name.as_deref() == Some("inline-drainer") {
                *drainer.lock().unwrap() = Some(thread::current().id());
            } else {
                turns.fetch_add(1, Ordering::Relaxed);
            }
            tally(batch)
        }
    };
    let batcher = Batcher::builder()
        .lanes(2)
        .capacity(capacity)
        .wait_strategy(WaitStrategy::Park)
        .lane_assignment(LaneAssignment::RoundRobin)
        .thread_name("inline-drainer")
        .inline_when_idle(true)
        .handler_fn(handler)
        .build()
        .expect("valid settings");
    let batcher = Arc::new(batcher);
    let workers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let producer = batcher.producer();
            spawn_bounded(format!("producer {p}"), move || {
                let mut i = 0;
                while i < ITEMS {
                    let item = encode(p, i);
                    match i % 64 {
                        0..=31 => {
                            let result = wait_ticket(producer.submit(item).unwrap());
                            assert_eq!(result.expect("a result"), f(item), "producer {p} item {i}");
                        }
                        _ => producer.push(item).unwrap(),
                    }
                    i += 1;
                    if i % 512 == 0 {
                        thread::sleep(Duration::from_micros(100));
                    }
                }
            })
        })
        .collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flusher = flushing.then(|| {
        let (batcher, done) = (Arc::clone(&batcher), Arc::clone(&done));
        spawn_bounded("flusher", move || {
            let mut flushes = 0u64;
            while !done.load(Ordering::Relaxed) {
                batcher.flush();
                flushes += 1;
                thread::sleep(Duration::from_micros(300));
            }
            flushes
        })
    });
    for worker in workers {
        worker.join();
    }
    done.store(true, Ordering::Relaxed);
    if let Some(flusher) = flusher {
        assert!(flusher.join() > 0);
    }
    let batcher = Arc::into_inner(batcher).expect("every clone is gone");
    let stats = batcher.shutdown();
    let tally = tally.lock().unwrap();
    assert!(
        tally.out_of_order.is_empty(),
        "lost, duplicated or reordered (producer, expected, got): {:?}",
        tally.out_of_order
    );
    assert_eq!(tally.items, PRODUCERS * ITEMS);
    assert!(tally.next.iter().all(|&n| n == ITEMS), "{:?}", tally.next);
    assert_eq!(stats.items_handled, PRODUCERS * ITEMS);
    assert_eq!(stats.batches, tally.batches);
    assert!(
        turns_elsewhere.load(Ordering::Relaxed) > 0,
        "no batch ran on a producer thread"
    );
}

#[test]
fn a_paused_batcher_keeps_items_until_resumed() {
    let (batcher, threads) = recording_threads(WaitStrategy::Park);
    let producer = batcher.producer();
    let before = round_trips_until_inline(&producer, &threads);
    batcher.pause();
    let mut ticket = producer.submit(7).unwrap();
    // The submitter saw the drainer asleep but must not run a paused batch.
    assert!(ticket.wait_timeout(Duration::from_millis(50)).is_none());
    assert_eq!(threads.lock().unwrap().len() as u64, before);
    batcher.resume();
    assert_eq!(wait_ticket(ticket).expect("a result"), f(7));
    assert_eq!(batcher.shutdown().items_handled, before + 1);
}

#[test]
fn a_panicking_handler_fails_the_submitters_own_ticket() {
    let calls = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&calls);
    let batcher = Batcher::builder()
        .lanes(1)
        .wait_strategy(WaitStrategy::Park)
        .inline_when_idle(true)
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            seen.fetch_add(1, Ordering::Relaxed);
            if batch.items().contains(&13) {
                panic!("the sink rejects 13");
            }
            batch.ok_with(|&x| x);
            Ok(())
        })
        .build()
        .expect("valid settings");
    let producer = batcher.producer();
    for x in 0..200 {
        let result = wait_ticket(producer.submit(x).unwrap());
        if x == 13 {
            assert!(
                matches!(result, Err(Error::HandlerPanicked { .. })),
                "item 13 failed with the panic, got {result:?}"
            );
        } else {
            assert_eq!(result.expect("a result"), x);
        }
        thread::sleep(Duration::from_micros(50));
    }
    let stats = batcher.shutdown();
    // Every item went to the handler; the one in the panicking batch failed.
    assert_eq!(stats.items_handled, 200);
    assert_eq!(stats.items_failed, 1);
}

#[cfg(feature = "tokio")]
#[test]
fn async_submitters_run_turns_on_the_runtime() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("inline-runtime")
        .enable_all()
        .build()
        .expect("a runtime");
    let threads: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let seen = Arc::clone(&threads);
    let batcher = Batcher::builder()
        .lanes(1)
        .wait_strategy(WaitStrategy::Park)
        .inline_when_idle(true)
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            seen.lock()
                .unwrap()
                .push(thread::current().name().map(str::to_owned));
            batch.ok_with(|&x| f(x));
            Ok(())
        })
        .build()
        .expect("valid settings");
    let mut producer = batcher.async_producer();
    let last_thread = {
        let threads = Arc::clone(&threads);
        move || threads.lock().unwrap().last().cloned().flatten()
    };
    // The requesting task runs on a worker thread, as a service's do.
    let task = runtime.spawn(async move {
        let deadline = Instant::now() + BOUND;
        let mut x = 0;
        loop {
            assert_eq!(producer.call(x).await.expect("a result"), f(x));
            x += 1;
            if last_thread().as_deref() == Some("inline-runtime") {
                break;
            }
            assert!(Instant::now() < deadline, "no turn ran on the runtime");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for x in 0..1_000 {
            assert_eq!(producer.call(x).await.expect("a result"), f(x));
        }
    });
    runtime
        .block_on(async { tokio::time::timeout(BOUND, task).await })
        .expect("the round trips finished in time")
        .expect("the requesting task did not panic");
    let total = threads.lock().unwrap().len() as u64;
    assert_eq!(batcher.shutdown().items_handled, total);
}

/// The reason of an `inline_when_idle` refusal; fails the test otherwise.
fn refused(result: Result<Batcher<u64, u64>, ConfigError>) -> &'static str {
    match result {
        Err(ConfigError::Invalid {
            field: "inline_when_idle",
            reason,
        }) => reason,
        Err(other) => panic!("expected an inline_when_idle error, got {other:?}"),
        Ok(_) => panic!("expected an inline_when_idle error, the batcher was built"),
    }
}

#[test]
fn settings_it_cannot_serve_are_refused() {
    let sync = || {
        Batcher::<u64, u64>::builder()
            .inline_when_idle(true)
            .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
                batch.ok_with(|&x| x);
                Ok(())
            })
    };
    assert!(
        refused(
            sync()
                .linger(Linger::Fixed(Duration::from_millis(1)))
                .build()
        )
        .contains("shaping")
    );
    assert!(refused(sync().retry_policy(RetryPolicy::default()).build()).contains("retry"));
    #[cfg(feature = "tokio")]
    refused_on_tokio(sync);
}

#[cfg(feature = "tokio")]
fn refused_on_tokio(sync: impl Fn() -> ringbatch::BatcherBuilder<u64, u64>) {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    assert!(
        refused(
            sync()
                .runtime(runtime.handle().clone())
                .drain_on_runtime(true)
                .build()
        )
        .contains("drain_on_runtime")
    );
    let async_handler = Batcher::<u64, u64>::builder()
        .inline_when_idle(true)
        .runtime(runtime.handle().clone())
        .async_handler_fn(|mut batch: AsyncBatch<u64, u64>| async move {
            batch.complete_with(|x| Ok::<_, Error>(*x));
            Ok(())
        })
        .build();
    assert!(refused(async_handler).contains("async"));
}
