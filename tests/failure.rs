//! Failure policies: retries with backoff, the circuit breaker, dead
//! letters, pause and resume, live settings and `shutdown_timeout`, under a
//! fault-injecting handler.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BOUND, Gate, decode, encode, spawn_bounded, wait_for, wait_ticket};
use ringbatch::{
    Batch, BatchError, Batcher, BreakerState, CircuitBreaker, DeadLetter, Error, Failure,
    RetryPolicy,
};

/// Fast retries for tests.
fn quick_retries(max_retries: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_max_retries(max_retries)
        .with_initial_delay(Duration::from_millis(1))
        .with_max_delay(Duration::from_millis(20))
        .with_multiplier(2.0)
        .with_jitter(0.1)
}

type Letters = Arc<Mutex<Vec<(u64, String, u32)>>>;

fn collect_letters(letters: &Letters) -> impl FnMut(DeadLetter<u64>) + Send + 'static {
    let letters = Arc::clone(letters);
    move |letter| {
        letters
            .lock()
            .unwrap()
            .push((letter.item, letter.error.to_string(), letter.attempts));
    }
}

/// What the fault injector does with an item, decided by its value so that
/// the test knows each item's fate in advance.
fn fate(value: u64) -> &'static str {
    match decode(value).1 % 50 {
        7 => "permanent",     // fails for good, one by one
        13 => "flaky",        // fails once, then succeeds on retry
        21 => "always_retry", // fails on every attempt: retries run out
        _ => "ok",
    }
}

#[test]
fn every_item_ends_once_as_handled_dead_lettered_or_failed_under_injected_faults() {
    const PRODUCERS: u64 = 4;
    const EACH: u64 = 2_000;
    let letters: Letters = Arc::default();
    let attempts: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let handled: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let batch_no = Arc::new(AtomicU64::new(0));
    let (seen, done) = (Arc::clone(&attempts), Arc::clone(&handled));
    let counter = Arc::clone(&batch_no);
    let batcher = Batcher::builder()
        .max_batch(32)
        .retry_policy(quick_retries(3))
        .dead_letter(collect_letters(&letters))
        .handler_fn(
            move |batch: &mut Batch<'_, u64, u64>| -> Result<(), BatchError> {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let tries: Vec<u32> = {
                    let mut seen = seen.lock().unwrap();
                    batch
                        .items()
                        .iter()
                        .map(|&x| {
                            let n = seen.entry(x).or_default();
                            *n += 1;
                            *n
                        })
                        .collect()
                };
                // Whole-batch faults: every 17th batch is rate-limited, every
                // 11th fails (retryable), every 29th panics (permanent), every
                // 23rd stalls a little first.
                if n % 23 == 5 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                if n % 17 == 3 {
                    return Err(Failure::rate_limited("slow down").into());
                }
                if n % 11 == 4 {
                    return Err("connection reset".into());
                }
                if n % 29 == 9 {
                    panic!("injected panic");
                }
                let mut done = done.lock().unwrap();
                for (i, &tried) in tries.iter().enumerate() {
                    let x = batch.items()[i];
                    match fate(x) {
                        "permanent" => batch.fail(i, "constraint violation").unwrap(),
                        "flaky" if tried == 1 => batch.retry(i, "timeout").unwrap(),
                        "always_retry" => batch.retry(i, "timeout").unwrap(),
                        _ => {
                            assert!(done.insert(x), "item {x} handled twice");
                            batch.ok(i, x).unwrap();
                        }
                    }
                }
                Ok(())
            },
        )
        .build()
        .unwrap();
    let threads: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let producers = batcher.producers();
            spawn_bounded(format!("producer {p}"), move || {
                let producer = producers.producer();
                let mut outcomes = Vec::new();
                for window in (0..EACH).collect::<Vec<_>>().chunks(100) {
                    let tickets: Vec<_> = window
                        .iter()
                        .map(|&i| {
                            let x = encode(p, i);
                            (x, producer.submit(x).unwrap())
                        })
                        .collect();
                    for (x, ticket) in tickets {
                        outcomes.push((x, wait_ticket(ticket)));
                    }
                }
                outcomes
            })
        })
        .collect();
    let outcomes: Vec<(u64, Result<u64, Error>)> =
        threads.into_iter().flat_map(|t| t.join()).collect();
    let stats = batcher.shutdown();

    let letters = letters.lock().unwrap();
    let dead: HashMap<u64, &(u64, String, u32)> = letters.iter().map(|l| (l.0, l)).collect();
    assert_eq!(dead.len(), letters.len(), "an item was dead-lettered twice");
    let handled = handled.lock().unwrap();
    let (mut ok, mut failed) = (0u64, 0u64);
    for (x, outcome) in &outcomes {
        match outcome {
            Ok(value) => {
                assert_eq!(value, x);
                assert!(
                    handled.contains(x),
                    "item {x} succeeded without being handled"
                );
                assert!(
                    !dead.contains_key(x),
                    "item {x} succeeded and was dead-lettered"
                );
                ok += 1;
            }
            Err(error) => {
                assert!(!handled.contains(x), "item {x} failed after being handled");
                let letter = dead
                    .get(x)
                    .unwrap_or_else(|| panic!("failed item {x} ({error}) was not dead-lettered"));
                assert_eq!(
                    letter.1,
                    error.to_string(),
                    "the dead letter carries the ticket's error"
                );
                let tries = attempts.lock().unwrap()[x];
                match error {
                    // A panic is permanent: no retry after it.
                    Error::HandlerPanicked { .. } => {
                        assert!(tries <= 4, "item {x} tried {tries} times")
                    }
                    // Whole-batch failures (retryable, rate-limited) until
                    // the retries ran out.
                    Error::BatchFailed(_) => {
                        assert_eq!(tries, 4, "item {x}: 1 + 3 tries before {error}")
                    }
                    // Its own failure: a permanent one, or retries spent.
                    Error::Failed(_) => match fate(*x) {
                        "permanent" => assert!(tries <= 4),
                        "always_retry" => assert_eq!(tries, 4, "item {x}: 1 + 3 tries"),
                        other => panic!("item {x} ({other}) failed with {error:?}"),
                    },
                    other => panic!("item {x}: unexpected {other:?}"),
                }
                failed += 1;
            }
        }
    }
    assert_eq!(
        ok + failed,
        PRODUCERS * EACH,
        "every item has exactly one outcome"
    );
    assert_eq!(ok, handled.len() as u64);
    assert_eq!(stats.dead_lettered, failed);
    assert_eq!(stats.items_failed, failed);
    assert!(stats.retried > 0, "retries ran: {stats:?}");
    assert!(stats.batch_errors > 0 && stats.handler_panics > 0);
}

#[test]
fn retry_delays_stay_within_their_bounds() {
    let policy = RetryPolicy::default()
        .with_max_retries(4)
        .with_initial_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(60))
        .with_multiplier(2.0)
        .with_jitter(0.1);
    let times: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let record = Arc::clone(&times);
    let batcher = Batcher::builder()
        .retry_policy(policy)
        .handler_fn(
            move |_: &mut Batch<'_, u64, ()>| -> Result<(), BatchError> {
                record.lock().unwrap().push(Instant::now());
                Err("unavailable".into())
            },
        )
        .build()
        .unwrap();
    let result = wait_ticket(batcher.producer().submit(1).unwrap());
    assert!(matches!(result, Err(Error::BatchFailed(_))), "{result:?}");
    let times = times.lock().unwrap();
    assert_eq!(times.len(), 5, "1 attempt + 4 retries");
    // Nominal delays 10, 20, 40, 60 (capped) ms, each within 10 % jitter.
    for (i, nominal) in [10u64, 20, 40, 60].into_iter().enumerate() {
        let gap = times[i + 1] - times[i];
        let low = Duration::from_millis(nominal * 9 / 10);
        assert!(
            gap >= low,
            "retry {i}: waited {gap:?}, at least {low:?} expected"
        );
        assert!(
            gap < Duration::from_millis(nominal) * 20,
            "retry {i}: waited {gap:?}, far beyond {nominal} ms"
        );
    }
}

#[test]
fn a_batch_waiting_to_retry_does_not_hold_up_the_others() {
    let batcher = Batcher::builder()
        .retry_policy(
            RetryPolicy::default()
                .with_max_retries(1)
                .with_initial_delay(Duration::from_secs(2))
                .with_max_delay(Duration::from_secs(2))
                .with_multiplier(1.0)
                .with_jitter(0.0),
        )
        .handler_fn(
            |batch: &mut Batch<'_, u64, u64>| -> Result<(), BatchError> {
                if batch.items().contains(&0) {
                    return Err("first batch fails".into());
                }
                batch.ok_with(|x| *x);
                Ok(())
            },
        )
        .build()
        .unwrap();
    let producer = batcher.producer();
    let slow = producer.submit(0).unwrap();
    wait_for("the first batch to fail once", || {
        batcher.stats().retried == 1
    });
    let start = Instant::now();
    assert_eq!(wait_ticket(producer.submit(5).unwrap()).unwrap(), 5);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "a later batch waited {:?} behind a 2 s retry",
        start.elapsed()
    );
    // The retried batch still fails (it contains 0 every time), for good.
    assert!(matches!(wait_ticket(slow), Err(Error::BatchFailed(_))));
}

#[test]
fn the_breaker_opens_fails_fast_half_opens_and_closes() {
    let fail = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicU64::new(0));
    let (failing, counted) = (Arc::clone(&fail), Arc::clone(&calls));
    let letters: Letters = Arc::default();
    let batcher = Batcher::builder()
        .circuit_breaker(
            CircuitBreaker::default()
                .with_failure_threshold(2)
                .with_recovery_timeout(Duration::from_millis(200))
                .with_hold_while_open(false),
        )
        .dead_letter(collect_letters(&letters))
        .handler_fn(
            move |batch: &mut Batch<'_, u64, u64>| -> Result<(), BatchError> {
                counted.fetch_add(1, Ordering::SeqCst);
                if failing.load(Ordering::SeqCst) {
                    return Err(Failure::permanent("down").into());
                }
                batch.ok_with(|x| *x);
                Ok(())
            },
        )
        .build()
        .unwrap();
    let producer = batcher.producer();
    for x in 0..2 {
        assert!(matches!(
            wait_ticket(producer.submit(x).unwrap()),
            Err(Error::BatchFailed(_))
        ));
    }
    assert_eq!(batcher.stats().breaker, BreakerState::Open);
    // Open: refused without calling the handler.
    let opened = Instant::now();
    assert!(matches!(
        wait_ticket(producer.submit(10).unwrap()),
        Err(Error::CircuitOpen)
    ));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "an open breaker does not call the handler"
    );
    // After the recovery timeout, a failing trial reopens it.
    wait_for("the recovery timeout", || {
        opened.elapsed() > Duration::from_millis(250)
    });
    assert!(matches!(
        wait_ticket(producer.submit(11).unwrap()),
        Err(Error::BatchFailed(_))
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 3, "one trial batch");
    assert_eq!(batcher.stats().breaker, BreakerState::Open);
    // A succeeding trial closes it.
    let reopened = Instant::now();
    fail.store(false, Ordering::SeqCst);
    wait_for("the recovery timeout", || {
        reopened.elapsed() > Duration::from_millis(250)
    });
    assert_eq!(wait_ticket(producer.submit(12).unwrap()).unwrap(), 12);
    assert_eq!(batcher.stats().breaker, BreakerState::Closed);
    assert_eq!(wait_ticket(producer.submit(13).unwrap()).unwrap(), 13);
    let stats = batcher.shutdown();
    assert_eq!(stats.circuit_rejected, 1);
    let letters = letters.lock().unwrap();
    let items: Vec<u64> = letters.iter().map(|l| l.0).collect();
    assert_eq!(items, [0, 1, 10, 11], "every failed item was dead-lettered");
    assert_eq!(letters[2].2, 0, "the refused item was never tried");
}

#[test]
fn a_holding_breaker_keeps_items_in_the_lanes_until_it_half_opens() {
    let fail = Arc::new(AtomicBool::new(true));
    let failing = Arc::clone(&fail);
    let batcher = Batcher::builder()
        .circuit_breaker(
            CircuitBreaker::default()
                .with_failure_threshold(1)
                .with_recovery_timeout(Duration::from_millis(200))
                .with_hold_while_open(true),
        )
        .handler_fn(
            move |batch: &mut Batch<'_, u64, u64>| -> Result<(), BatchError> {
                if failing.swap(false, Ordering::SeqCst) {
                    return Err(Failure::permanent("down").into());
                }
                batch.ok_with(|x| *x);
                Ok(())
            },
        )
        .build()
        .unwrap();
    let producer = batcher.producer();
    // The breaker opens while item 1 is handled, so after this instant.
    let before_open = Instant::now();
    assert!(wait_ticket(producer.submit(1).unwrap()).is_err());
    let held = producer.submit(2).unwrap();
    assert_eq!(
        wait_ticket(held).unwrap(),
        2,
        "held, then handled by the trial"
    );
    assert!(
        before_open.elapsed() >= Duration::from_millis(200),
        "the item waited for the 200 ms recovery timeout (handled {:?} after item 1 was submitted)",
        before_open.elapsed()
    );
    let stats = batcher.shutdown();
    assert_eq!(stats.circuit_rejected, 0);
    assert_eq!(stats.breaker, BreakerState::Closed);
}

#[test]
fn pause_stops_dispatching_and_resume_delivers_everything() {
    let handled = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&handled);
    let batcher = Batcher::builder()
        .lanes(1)
        .capacity(64)
        .max_batch(8)
        .handler_fn(move |batch: &mut Batch<'_, u64, ()>| {
            count.fetch_add(batch.len() as u64, Ordering::SeqCst);
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer_on_lane(0).unwrap();
    producer.push(0).unwrap();
    batcher.flush();
    batcher.pause();
    assert!(batcher.is_paused());
    // Fill the lane: a paused drainer takes nothing, so it fills up.
    let mut pushed = 1;
    let start = Instant::now();
    loop {
        match producer.try_push(pushed) {
            Ok(()) => pushed += 1,
            Err(e) if e.is_full() => break,
            Err(e) => panic!("unexpected {e:?}"),
        }
        assert!(
            start.elapsed() < BOUND,
            "the lane never filled while paused"
        );
    }
    assert!(
        pushed >= 64,
        "the full lane holds its capacity ({pushed} pushed)"
    );
    let before = handled.load(Ordering::SeqCst);
    assert!(
        before <= 1 + 8,
        "at most the batch under way when pausing went out ({before})"
    );
    // A flush waits for the resume.
    assert!(!batcher.flush_timeout(Duration::from_millis(100)));
    assert_eq!(
        handled.load(Ordering::SeqCst),
        before,
        "nothing dispatched while paused"
    );
    batcher.resume();
    assert!(batcher.flush_timeout(BOUND));
    assert_eq!(
        handled.load(Ordering::SeqCst),
        pushed,
        "nothing lost across the pause"
    );
}

#[test]
fn live_settings_take_effect_on_the_next_batch() {
    let gate = Arc::new(Gate::closed());
    let sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
    let letters: Letters = Arc::default();
    let (record, pass) = (Arc::clone(&sizes), Arc::clone(&gate));
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(64)
        .retry_policy(quick_retries(5))
        .dead_letter(collect_letters(&letters))
        .handler_fn(
            move |batch: &mut Batch<'_, u64, u64>| -> Result<(), BatchError> {
                pass.pass();
                record.lock().unwrap().push(batch.len());
                if batch.items().contains(&999) {
                    return Err("unavailable".into());
                }
                batch.ok_with(|x| *x);
                Ok(())
            },
        )
        .build()
        .unwrap();
    let producer = batcher.producer_on_lane(0).unwrap();
    // A plug batch holds the drainer while 40 items queue up.
    producer.push(1_000).unwrap();
    gate.wait_arrived(1);
    batcher.set_max_batch(4).unwrap();
    let tickets: Vec<_> = (0..40).map(|x| producer.submit(x).unwrap()).collect();
    gate.open();
    for ticket in tickets {
        wait_ticket(ticket).unwrap();
    }
    let sizes_now = sizes.lock().unwrap().clone();
    assert!(
        sizes_now[1..].iter().all(|&n| n <= 4),
        "batches after set_max_batch(4): {sizes_now:?}"
    );
    assert!(matches!(
        batcher.set_max_batch(65),
        Err(ringbatch::ConfigError::TooLarge {
            field: "max_batch",
            ..
        })
    ));
    // No retries from now on: the failing item is dead-lettered at once.
    batcher.set_retry_policy(quick_retries(0)).unwrap();
    assert!(wait_ticket(producer.submit(999).unwrap()).is_err());
    assert_eq!(batcher.stats().retried, 0);
    assert_eq!(letters.lock().unwrap()[0].2, 1, "tried once");
    // The linger needs a staging drainer.
    assert!(batcher.set_linger(ringbatch::Linger::None).is_err());
}

#[test]
fn shutdown_timeout_returns_exactly_the_items_not_completed() {
    let gate = Arc::new(Gate::closed());
    let handled: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (record, pass) = (Arc::clone(&handled), Arc::clone(&gate));
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(4)
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            pass.pass();
            record.lock().unwrap().extend_from_slice(batch.items());
            batch.ok_with(|x| *x);
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer_on_lane(0).unwrap();
    let tickets: Vec<_> = (0..50).map(|x| (x, producer.submit(x).unwrap())).collect();
    gate.wait_arrived(1);
    // The drainer is stuck in its first batch; shut down with a deadline
    // that passes before the gate opens.
    let opener = {
        let gate = Arc::clone(&gate);
        spawn_bounded("opener", move || {
            std::thread::sleep(Duration::from_millis(100));
            gate.open();
        })
    };
    let (stats, unhandled) = batcher.shutdown_timeout(Duration::from_millis(20));
    opener.join();
    let handled = handled.lock().unwrap().clone();
    assert!(
        !handled.is_empty() && handled.len() <= 4,
        "only the first batch: {handled:?}"
    );
    let mut all: Vec<u64> = handled.iter().chain(unhandled.iter()).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..50).collect::<Vec<_>>(),
        "handled and given back: each item once"
    );
    assert_eq!(stats.items_handled, handled.len() as u64);
    for (x, ticket) in tickets {
        let result = wait_ticket(ticket);
        if handled.contains(&x) {
            assert_eq!(result.unwrap(), x);
        } else {
            assert!(matches!(result, Err(Error::Closed)), "item {x}: {result:?}");
        }
    }
}

#[cfg(feature = "tokio")]
#[test]
fn an_async_handler_retries_and_dead_letters() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let letters: Letters = Arc::default();
        let tries: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
        let seen = Arc::clone(&tries);
        let batcher = Batcher::builder()
            .retry_policy(quick_retries(2))
            .dead_letter(collect_letters(&letters))
            .async_handler_fn(move |mut batch: ringbatch::AsyncBatch<u64, u64>| {
                let seen = Arc::clone(&seen);
                async move {
                    tokio::task::yield_now().await;
                    for i in 0..batch.len() {
                        let x = batch.items()[i];
                        let n = {
                            let mut seen = seen.lock().unwrap();
                            let n = seen.entry(x).or_default();
                            *n += 1;
                            *n
                        };
                        if x % 2 == 1 || (x % 4 == 2 && n == 1) {
                            batch.retry(i, "busy").unwrap();
                        } else {
                            batch.ok(i, x).unwrap();
                        }
                    }
                    Ok::<(), BatchError>(())
                }
            })
            .build()
            .unwrap();
        let mut producer = batcher.async_producer();
        let mut results = Vec::new();
        for x in 0..20u64 {
            results.push((x, producer.call(x).await));
        }
        let stats = batcher.shutdown_async().await;
        for (x, result) in results {
            if x % 2 == 1 {
                assert!(
                    matches!(result, Err(Error::Failed(_))),
                    "odd {x}: {result:?}"
                );
                assert_eq!(tries.lock().unwrap()[&x], 3, "1 + 2 tries for {x}");
            } else {
                assert_eq!(result.unwrap(), x);
            }
        }
        assert_eq!(stats.dead_lettered, 10);
        assert_eq!(letters.lock().unwrap().len(), 10);
    });
}

#[cfg(feature = "tokio")]
#[test]
fn shutdown_timeout_async_gives_back_what_a_slow_async_sink_did_not_take() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let handled = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&handled);
        let batcher = Batcher::builder()
            .max_batch(1)
            .max_in_flight(1)
            .async_handler_fn(move |mut batch: ringbatch::AsyncBatch<u64, ()>| {
                let count = Arc::clone(&count);
                async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    count.fetch_add(batch.len() as u64, Ordering::SeqCst);
                    batch.ok_with(|_| ());
                    Ok::<(), BatchError>(())
                }
            })
            .build()
            .unwrap();
        let producer = batcher.producer();
        for x in 0..10 {
            producer.push(x).unwrap();
        }
        let (stats, unhandled) = batcher
            .shutdown_timeout_async(Duration::from_millis(30))
            .await;
        assert!(
            !unhandled.is_empty(),
            "a sink taking 100 ms per item cannot take 10 in 30 ms"
        );
        assert_eq!(
            handled.load(Ordering::SeqCst) + unhandled.len() as u64,
            10,
            "each item handled or given back, once (given back: {unhandled:?})"
        );
        assert_eq!(stats.items_handled, handled.load(Ordering::SeqCst));
    });
}
