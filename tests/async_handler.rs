//! Async handlers: bounded batches in flight, results from tasks, failures,
//! async flush and shutdown, and a runtime that goes away mid-batch.

#![cfg(feature = "tokio")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use common::{BOUND, spawn_bounded};
use ringbatch::{AsyncBatch, Batcher, ConfigError, Error};

/// Counts batches running at once, and the most ever seen.
#[derive(Default)]
struct Concurrency {
    now: AtomicUsize,
    max: AtomicUsize,
    items: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_most_max_in_flight_batches_run_and_every_buffer_comes_back() {
    let seen = Arc::new(Concurrency::default());
    let sink = Arc::clone(&seen);
    let batcher = Batcher::builder()
        .lanes(2)
        .capacity(64)
        .max_batch(16)
        .max_in_flight(2)
        .async_handler_fn(move |mut batch: AsyncBatch<u64, u64>| {
            let sink = Arc::clone(&sink);
            async move {
                let running = sink.now.fetch_add(1, Ordering::SeqCst) + 1;
                sink.max.fetch_max(running, Ordering::SeqCst);
                // A slow sink: a network round trip.
                tokio::time::sleep(Duration::from_millis(2)).await;
                sink.items.fetch_add(batch.len() as u64, Ordering::SeqCst);
                batch.complete_with(|&x| Ok::<_, Error>(x * 3));
                sink.now.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .unwrap();
    assert_eq!(
        batcher.config().pool_size,
        3,
        "max_in_flight + 1 by default"
    );

    const TASKS: u64 = 8;
    const EACH: u64 = 2_000;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let mut producer = batcher.async_producer();
            tokio::spawn(async move {
                for i in 0..EACH {
                    let item = t * EACH + i;
                    if i % 4 == 0 {
                        assert_eq!(producer.call(item).await.unwrap(), item * 3);
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
    tokio::time::timeout(BOUND, batcher.flush_async())
        .await
        .unwrap();
    assert_eq!(seen.items.load(Ordering::SeqCst), TASKS * EACH);
    let stats = tokio::time::timeout(BOUND, batcher.shutdown_async())
        .await
        .unwrap();
    let max = seen.max.load(Ordering::SeqCst);
    assert!(max <= 2, "{max} batches ran at once with max_in_flight = 2");
    assert!(max >= 1);
    assert_eq!(stats.items_handled, TASKS * EACH);
    assert_eq!(stats.batches_in_flight, 0);
    assert_eq!(
        stats.pool_free, stats.pool_size,
        "every buffer back in the pool"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn failures_in_async_handlers_reach_the_tickets() {
    let batcher = Batcher::builder()
        .lanes(1)
        .async_handler_fn(|mut batch: AsyncBatch<u64, u64>| async move {
            tokio::task::yield_now().await;
            let first = batch.items()[0];
            match first {
                1 => Err("sink refused the batch".into()),
                2 => panic!("sink bug"),
                3 => Ok(()), // completes nothing
                _ => {
                    batch.ok(0, first).unwrap();
                    Ok(())
                }
            }
        })
        .build()
        .unwrap();
    let mut producer = batcher.async_producer();
    match producer.call(1).await {
        Err(e @ Error::BatchFailed(_)) => assert!(e.to_string().contains("sink refused")),
        other => panic!("expected BatchFailed, got {other:?}"),
    }
    match producer.call(2).await {
        Err(Error::HandlerPanicked { message }) => assert_eq!(&*message, "sink bug"),
        other => panic!("expected HandlerPanicked, got {other:?}"),
    }
    assert!(matches!(producer.call(3).await, Err(Error::NotCompleted)));
    assert_eq!(producer.call(4).await.unwrap(), 4);
    let stats = batcher.shutdown_async().await;
    assert_eq!(stats.batch_errors, 1);
    assert_eq!(stats.handler_panics, 1);
}

#[test]
fn a_runtime_shutting_down_mid_batch_fails_its_tickets_instead_of_hanging() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&started);
    let batcher = Batcher::builder()
        .lanes(1)
        .max_in_flight(1)
        .runtime(runtime.handle().clone())
        .async_handler_fn(move |_batch: AsyncBatch<u64, u64>| {
            let s = Arc::clone(&s);
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                // A sink that never answers.
                std::future::pending::<()>().await;
                Ok(())
            }
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    let stuck = producer.submit(1).unwrap();
    common::wait_for("the batch to start", || started.load(Ordering::SeqCst) == 1);
    // Queued behind the stuck batch.
    let queued = producer.submit(2).unwrap();
    drop(runtime);
    let waiter = spawn_bounded("waiter", move || (stuck.wait(), queued.wait()));
    let (stuck, queued) = waiter.join();
    assert!(matches!(stuck, Err(Error::RuntimeShutdown)), "{stuck:?}");
    assert!(matches!(queued, Err(Error::RuntimeShutdown)), "{queued:?}");
    // Later batches fail at once too, and shutdown does not hang.
    assert!(matches!(
        producer.submit(3).unwrap().wait(),
        Err(Error::RuntimeShutdown)
    ));
    let stats = spawn_bounded("shutdown", move || batcher.shutdown()).join();
    assert_eq!(stats.pool_free, stats.pool_size);
}

#[test]
fn async_handler_settings_are_checked() {
    let handler = |_batch: AsyncBatch<u64, ()>| async { Ok(()) };
    // Outside a runtime, without a handle.
    let e = Batcher::builder()
        .async_handler_fn(handler)
        .build()
        .unwrap_err();
    assert_eq!(e, ConfigError::NoRuntime);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let e = Batcher::builder()
        .runtime(runtime.handle().clone())
        .max_in_flight(4)
        .pool_size(4)
        .async_handler_fn(handler)
        .build()
        .unwrap_err();
    assert_eq!(
        e,
        ConfigError::PoolTooSmall {
            pool_size: 4,
            needed: 5
        }
    );
    assert_eq!(e.field(), "pool_size");
    let e = Batcher::builder()
        .runtime(runtime.handle().clone())
        .max_in_flight(0)
        .async_handler_fn(handler)
        .build()
        .unwrap_err();
    assert_eq!(
        e,
        ConfigError::Zero {
            field: "max_in_flight"
        }
    );
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_an_async_batcher_inside_its_runtime_does_not_block_it() {
    let handled = Arc::new(AtomicU64::new(0));
    let h = Arc::clone(&handled);
    let batcher = Batcher::builder()
        .async_handler_fn(move |mut batch: AsyncBatch<u64, ()>| {
            let h = Arc::clone(&h);
            async move {
                tokio::task::yield_now().await;
                h.fetch_add(batch.len() as u64, Ordering::SeqCst);
                batch.complete_with(|_| Ok::<_, Error>(()));
                Ok(())
            }
        })
        .build()
        .unwrap();
    let mut producer = batcher.async_producer();
    for i in 0..100 {
        producer.push(i).await.unwrap();
    }
    let ticket = producer.submit(100).await.unwrap();
    // On this single-threaded runtime, a blocking drop would deadlock: the
    // last batches need this very thread.
    drop(batcher);
    tokio::time::timeout(BOUND, ticket).await.unwrap().unwrap();
    let deadline = tokio::time::Instant::now() + BOUND;
    while handled.load(Ordering::SeqCst) < 101 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the drop drained everything"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
