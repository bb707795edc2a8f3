//! Regressions of the safety audit: teardown races, panics in user code
//! other than the handler, absurd durations, and calls from a handler back
//! into its own batcher. Each test names the failure it guards against.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{BOUND, spawn_bounded};
use ringbatch::{
    Batch, Batcher, Callback, CircuitBreaker, ConfigError, Error, Linger, MAX_DURATION,
    RetryPolicy, SubmitError,
};

/// Where a handler finds the batcher it runs in, to call back into it.
type BatcherSlot = Mutex<Option<Arc<Batcher<u64, u64>>>>;

/// An item that counts its drops per id and panics in `Drop` when asked.
struct Tracked {
    id: usize,
    drops: Arc<Vec<AtomicUsize>>,
    panics_on_drop: bool,
}

impl Tracked {
    fn new(id: usize, drops: &Arc<Vec<AtomicUsize>>, panics_on_drop: bool) -> Self {
        Self {
            id,
            drops: Arc::clone(drops),
            panics_on_drop,
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops[self.id].fetch_add(1, Ordering::SeqCst);
        if self.panics_on_drop {
            panic!("item {} panics in its drop", self.id);
        }
    }
}

fn counters(n: usize) -> Arc<Vec<AtomicUsize>> {
    Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect())
}

fn drop_counts(drops: &[AtomicUsize]) -> Vec<usize> {
    drops.iter().map(|d| d.load(Ordering::SeqCst)).collect()
}

/// A weigher that panicked on one item used to end the drainer silently:
/// every ticket stayed unresolved, `push` kept accepting, and
/// `shutdown_timeout` returned at once with nothing handled or given back.
/// Now the item fails with `CallbackPanicked` and the rest are handled.
#[test]
fn a_weigher_panicking_on_one_item_fails_that_item_only() {
    let batcher = Batcher::builder()
        .lanes(1)
        .max_bytes(1 << 20)
        .weigher(|x: &u64| {
            assert!(*x != 13, "the weigher refuses item 13");
            8
        })
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.ok_with(|x| x + 1);
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    let tickets: Vec<_> = (0..40).map(|i| producer.submit(i).unwrap()).collect();
    let results = spawn_bounded("waiter", move || {
        tickets.into_iter().map(|t| t.wait()).collect::<Vec<_>>()
    })
    .join();
    for (i, result) in results.iter().enumerate() {
        if i == 13 {
            match result {
                Err(Error::CallbackPanicked(panic)) => {
                    assert_eq!(panic.callback(), Callback::Weigher);
                    assert!(panic.message().contains("refuses item 13"), "{panic:?}");
                }
                other => panic!("item 13: expected CallbackPanicked, got {other:?}"),
            }
        } else {
            assert_eq!(result.as_ref().ok(), Some(&(i as u64 + 1)), "item {i}");
        }
    }
    assert!(producer.push(100).is_ok());
    drop(producer);
    let (stats, unhandled) =
        spawn_bounded("shutdown", move || batcher.shutdown_timeout(BOUND)).join();
    assert!(unhandled.is_empty());
    assert_eq!(stats.items_handled, 40, "39 submitted items and the push");
    assert_eq!(stats.callback_panics, 1);
}

/// Key functions and group limits panicking: the same rule as the weigher.
#[test]
fn key_functions_and_group_limits_panicking_fail_their_item() {
    let batcher = Batcher::builder()
        .lanes(1)
        .group_by(|x: &u64| {
            assert!(*x != 3, "no key for 3");
            *x % 2
        })
        .group_limits(|x: &u64| {
            assert!(*x != 4, "no limits for 4");
            ringbatch::GroupLimits::items(8)
        })
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.ok_with(|x| *x);
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    // 4 opens the group of even keys (its limits are asked then) only if
    // it comes first: submit it alone, flushed, before the others.
    let four = producer.submit(4).unwrap();
    let result = spawn_bounded("four", move || four.wait()).join();
    match result {
        Err(Error::CallbackPanicked(p)) => assert_eq!(p.callback(), Callback::GroupLimits),
        other => panic!("expected the group limits' panic, got {other:?}"),
    }
    let tickets: Vec<_> = (0..6).map(|i| producer.submit(i).unwrap()).collect();
    let results = spawn_bounded("waiter", move || {
        tickets.into_iter().map(|t| t.wait()).collect::<Vec<_>>()
    })
    .join();
    for (i, result) in results.into_iter().enumerate() {
        match (i, result) {
            (3, Err(Error::CallbackPanicked(p))) => assert_eq!(p.callback(), Callback::GroupBy),
            (4, Err(Error::CallbackPanicked(p))) => {
                // The group of 4 may have been opened by 0 or 2 already.
                assert_eq!(p.callback(), Callback::GroupLimits);
            }
            (4, Ok(4)) => {}
            (i, Ok(v)) if i != 3 => assert_eq!(v, i as u64),
            (i, other) => panic!("item {i}: {other:?}"),
        }
    }
    let stats = spawn_bounded("shutdown", move || batcher.shutdown()).join();
    assert!(stats.callback_panics >= 2, "{stats:?}");
}

/// A conflation key panicking fails its item; the batch goes on.
#[test]
fn a_conflation_key_panicking_fails_its_item() {
    let batcher = Batcher::builder()
        .lanes(1)
        .linger(Linger::Fixed(Duration::from_millis(5)))
        .conflate_by(|x: &u64| {
            assert!(*x != 7, "no key for 7");
            *x
        })
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.ok_with(|x| *x);
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    let tickets: Vec<_> = (5..10).map(|i| producer.submit(i).unwrap()).collect();
    let results = spawn_bounded("waiter", move || {
        tickets.into_iter().map(|t| t.wait()).collect::<Vec<_>>()
    })
    .join();
    for (value, result) in (5..10u64).zip(results) {
        match result {
            Err(Error::CallbackPanicked(p)) if value == 7 => {
                assert_eq!(p.callback(), Callback::ConflateBy);
            }
            Ok(v) if value != 7 => assert_eq!(v, value),
            other => panic!("item {value}: {other:?}"),
        }
    }
    spawn_bounded("shutdown", move || batcher.shutdown()).join();
}

/// Items whose `Drop` panics after their batch: each is dropped once, the
/// drainer goes on, and the panics are counted.
#[test]
fn items_whose_drop_panics_are_dropped_once_and_counted() {
    let drops = counters(20);
    let batcher = Batcher::builder()
        .lanes(1)
        .handler_fn(|batch: &mut Batch<'_, Tracked, usize>| {
            batch.ok_with(|item| item.id);
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    for id in 0..20 {
        let ticket = producer
            .submit(Tracked::new(id, &drops, id % 3 == 0))
            .unwrap();
        assert_eq!(
            spawn_bounded("wait", move || ticket.wait()).join().unwrap(),
            id
        );
    }
    drop(producer);
    let stats = spawn_bounded("shutdown", move || batcher.shutdown()).join();
    assert_eq!(drop_counts(&drops), vec![1; 20]);
    assert_eq!(stats.drop_panics, 7, "ids 0, 3, ... 18 panic in their drop");
}

/// The runtime dropping the drainer task (`drain_on_runtime`) while items
/// wait in the lanes, some of them panicking in `Drop`: the items were
/// dropped inside the lane run, a panic left the head behind and the
/// ring's own drop dropped them again (`[2, 2, 1]`), and the exit was never
/// reported, so a later `shutdown` waited for ever. Each item must now be
/// dropped once, its ticket must fail, and `shutdown` must return.
#[cfg(feature = "tokio")]
#[test]
fn a_runtime_dropping_the_drainer_task_drops_each_item_once() {
    let drops = counters(3);
    // A runtime nobody drives: the drainer task is spawned on it, never
    // polled, and dropped with it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let batcher = Batcher::builder()
        .lanes(1)
        .runtime(runtime.handle().clone())
        .drain_on_runtime(true)
        .handler_fn(|batch: &mut Batch<'_, Tracked, ()>| {
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    let tickets: Vec<_> = (0..3)
        .map(|id| producer.submit(Tracked::new(id, &drops, id < 2)).unwrap())
        .collect();
    drop(runtime);
    assert_eq!(drop_counts(&drops), vec![1, 1, 1]);
    for ticket in tickets {
        let result = spawn_bounded("wait", move || ticket.wait()).join();
        assert!(matches!(result, Err(Error::RuntimeShutdown)), "{result:?}");
    }
    drop(producer);
    let stats = spawn_bounded("shutdown", move || batcher.shutdown()).join();
    assert_eq!(drop_counts(&drops), vec![1, 1, 1], "no item dropped twice");
    assert_eq!(stats.drop_panics, 2);
}

/// A retry policy's `Duration::MAX` delay passed `build` and then crashed
/// the drainer ("overflow when adding duration to instant"). Durations are
/// now checked against `MAX_DURATION`, naming the field.
#[test]
fn absurd_durations_are_refused_naming_the_field() {
    let handler = |batch: &mut Batch<'_, u64, ()>| {
        batch.ok_with(|_| ());
        Ok(())
    };
    let retry = RetryPolicy::default()
        .with_initial_delay(Duration::MAX)
        .with_max_delay(Duration::MAX);
    let e = Batcher::builder()
        .retry_policy(retry)
        .handler_fn(handler)
        .build()
        .unwrap_err();
    assert!(
        matches!(e, ConfigError::TooLong { field: "initial_delay", max, .. } if max == MAX_DURATION),
        "{e:?}"
    );
    let breaker = CircuitBreaker::default().with_recovery_timeout(Duration::MAX);
    let e = Batcher::builder()
        .circuit_breaker(breaker)
        .handler_fn(handler)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "recovery_timeout");
    for (linger, field) in [
        (Linger::Fixed(Duration::MAX), "linger"),
        (
            Linger::Adaptive {
                target: MAX_DURATION + Duration::from_nanos(1),
            },
            "linger",
        ),
    ] {
        let e = Batcher::builder()
            .linger(linger)
            .handler_fn(handler)
            .build()
            .unwrap_err();
        assert_eq!(e.field(), field);
    }
    let e = Batcher::builder()
        .max_age(Duration::MAX)
        .handler_fn(handler)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "max_age");
    let e = Batcher::builder()
        .min_interval(Duration::MAX)
        .handler_fn(handler)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "min_interval");

    // At the limit, everything works, and absurd waits on calls saturate.
    let at_limit = RetryPolicy::default()
        .with_initial_delay(MAX_DURATION)
        .with_max_delay(MAX_DURATION);
    assert_eq!(at_limit.delay(40, false, f64::NAN), MAX_DURATION);
    let batcher = Batcher::builder()
        .retry_policy(at_limit)
        .circuit_breaker(
            CircuitBreaker::default()
                .with_recovery_timeout(MAX_DURATION)
                .with_failure_threshold(1)
                .with_hold_while_open(false),
        )
        .linger(Linger::Fixed(Duration::ZERO))
        .handler_fn(handler)
        .build()
        .unwrap();
    let e = batcher
        .set_linger(Linger::Fixed(Duration::MAX))
        .unwrap_err();
    assert_eq!(e.field(), "linger");
    let producer = batcher.producer();
    producer.push_timeout(1, Duration::MAX).unwrap();
    let mut ticket = producer.submit_timeout(2, Duration::MAX).unwrap();
    assert!(ticket.wait_timeout(Duration::MAX).unwrap().is_ok());
    assert!(batcher.flush_timeout(Duration::MAX));
    let (stats, _) =
        spawn_bounded("shutdown", move || batcher.shutdown_timeout(Duration::MAX)).join();
    assert_eq!(stats.items_handled, 2);
}

/// A handler that flushes its own batcher from an async handler waited for
/// its own batch until an outer timeout; now `flush_async` resolves at once.
#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_async_from_the_batchers_own_handler_resolves_at_once() {
    let slot: Arc<BatcherSlot> = Arc::default();
    let inside = Arc::clone(&slot);
    let batcher = Arc::new(
        Batcher::builder()
            .lanes(1)
            .async_handler_fn(move |mut batch: ringbatch::AsyncBatch<u64, u64>| {
                let own = inside.lock().unwrap().clone();
                async move {
                    if let Some(own) = own {
                        tokio::time::timeout(BOUND, own.flush_async())
                            .await
                            .expect("flush_async inside the handler resolves at once");
                    }
                    batch.ok_with(|x| x * 2);
                    Ok(())
                }
            })
            .build()
            .unwrap(),
    );
    *slot.lock().unwrap() = Some(Arc::clone(&batcher));
    let mut producer = batcher.async_producer();
    let result = tokio::time::timeout(BOUND, producer.call(21)).await;
    assert_eq!(result.expect("handled within the bound").unwrap(), 42);
    slot.lock().unwrap().take();
    drop(producer);
    let batcher = Arc::into_inner(batcher).expect("the last handle");
    tokio::time::timeout(BOUND, batcher.shutdown_async())
        .await
        .unwrap();
}

/// A blocking `push` from the handler into its own full lane deadlocked the
/// drainer until shutdown; now it returns `Full` with the item at once.
#[test]
fn a_blocking_push_into_the_handlers_own_full_lane_returns_full() {
    let slot: Arc<Mutex<Option<ringbatch::Producer<u64, ()>>>> = Arc::default();
    let inside = Arc::clone(&slot);
    let (tx, rx) = std::sync::mpsc::channel();
    let batcher = Batcher::builder()
        .lanes(1)
        .capacity(2)
        .max_batch(1)
        .handler_fn(move |batch: &mut Batch<'_, u64, ()>| {
            if batch.items() == [0] {
                let producer = inside.lock().unwrap().take().expect("set before item 0");
                // Two slots: the third push finds the lane full.
                let outcomes: Vec<_> = (1..=3).map(|i| producer.push(i)).collect();
                tx.send(outcomes).unwrap();
            }
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .unwrap();
    *slot.lock().unwrap() = Some(batcher.producer());
    batcher.producer().push(0).unwrap();
    let outcomes = rx.recv_timeout(BOUND).expect("the handler returned");
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "{outcomes:?}");
    assert!(
        matches!(outcomes[2], Err(SubmitError::Full(3))),
        "{outcomes:?}"
    );
    let stats = spawn_bounded("shutdown", move || batcher.shutdown()).join();
    assert_eq!(stats.items_handled, 3);
    assert_eq!(stats.rejected, 1);
}

/// `shutdown` from the handler panicked in the standard library ("failed
/// to join thread: Resource deadlock avoided"), which the drainer caught as
/// a handler panic. Now it starts the shutdown and returns; the batch in
/// hand and everything before the shutdown are handled.
#[test]
fn shutdown_from_the_handler_starts_the_shutdown_and_returns() {
    let slot: Arc<Mutex<Option<Batcher<u64, u64>>>> = Arc::default();
    let inside = Arc::clone(&slot);
    let (tx, rx) = std::sync::mpsc::channel();
    let batcher = Batcher::builder()
        .lanes(1)
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            if let Some(own) = inside.lock().unwrap().take() {
                tx.send(own.shutdown()).unwrap();
            }
            batch.ok_with(|x| x + 1);
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    *slot.lock().unwrap() = Some(batcher);
    let ticket = producer.submit(1).unwrap();
    let _stats = rx
        .recv_timeout(BOUND)
        .expect("shutdown returned in the handler");
    assert_eq!(
        spawn_bounded("wait", move || ticket.wait()).join().unwrap(),
        2
    );
    assert!(matches!(producer.push(5), Err(SubmitError::Closed(5))));
}

/// Dropping the last handle of a batcher inside its handler: the same.
#[test]
fn dropping_the_batcher_in_its_handler_does_not_join_itself() {
    let slot: Arc<Mutex<Option<Batcher<u64, u64>>>> = Arc::default();
    let inside = Arc::clone(&slot);
    let batcher = Batcher::builder()
        .lanes(1)
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            drop(inside.lock().unwrap().take());
            batch.ok_with(|x| x + 1);
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    *slot.lock().unwrap() = Some(batcher);
    let ticket = producer.submit(1).unwrap();
    assert_eq!(
        spawn_bounded("wait", move || ticket.wait()).join().unwrap(),
        2
    );
}

/// `flush` from the handler returns at once (it always did on the drainer
/// thread), and `flush_timeout` says it did not complete.
#[test]
fn flush_from_the_handler_returns_at_once() {
    let slot: Arc<BatcherSlot> = Arc::default();
    let inside = Arc::clone(&slot);
    let (tx, rx) = std::sync::mpsc::channel();
    let batcher = Arc::new(
        Batcher::builder()
            .lanes(1)
            .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
                if let Some(own) = inside.lock().unwrap().take() {
                    own.flush();
                    tx.send(own.flush_timeout(BOUND)).unwrap();
                }
                batch.ok_with(|x| x + 1);
                Ok(())
            })
            .build()
            .unwrap(),
    );
    *slot.lock().unwrap() = Some(Arc::clone(&batcher));
    let producer = batcher.producer();
    let ticket = producer.submit(1).unwrap();
    assert!(
        !rx.recv_timeout(BOUND)
            .expect("flushes returned in the handler")
    );
    assert_eq!(
        spawn_bounded("wait", move || ticket.wait()).join().unwrap(),
        2
    );
}
