//! The drainer as a task on the tokio runtime (`drain_on_runtime`).

#![cfg(feature = "tokio")]

mod common;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{BOUND, Tally, encode, f, spawn_bounded, tallying_handler};
use ringbatch::{AsyncBatch, Batch, Batcher, ConfigError, Error, SubmitError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_submit_through_a_drainer_task_exactly_once() {
    const TASKS: usize = 8;
    const EACH: u64 = 100_000;
    let tally = Arc::new(Mutex::new(Tally::new(TASKS)));
    let seen = Arc::clone(&tally);
    let batcher = Batcher::builder()
        .lanes(2)
        .capacity(64)
        .drain_on_runtime(true)
        .handler_fn(tallying_handler(seen))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let mut producer = batcher.async_producer();
            tokio::spawn(async move {
                for i in 0..EACH {
                    let item = encode(t as u64, i);
                    if i % 4 == 0 {
                        assert_eq!(producer.call(item).await.unwrap(), f(item));
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
    let tally = tally.lock().unwrap();
    assert!(tally.out_of_order.is_empty(), "{:?}", tally.out_of_order);
    assert!(tally.next.iter().all(|&n| n == EACH), "{:?}", tally.next);
    assert_eq!(stats.items_handled, TASKS as u64 * EACH);
    assert_eq!(stats.pool_free, stats.pool_size);
}

#[tokio::test(flavor = "current_thread")]
async fn one_thread_runs_producers_drainer_and_async_sink() {
    let running = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (r, m) = (Arc::clone(&running), Arc::clone(&max));
    let batcher = Batcher::builder()
        .lanes(1)
        .capacity(16)
        .max_in_flight(2)
        .drain_on_runtime(true)
        .async_handler_fn(move |mut batch: AsyncBatch<u64, u64>| {
            let (r, m) = (Arc::clone(&r), Arc::clone(&m));
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
                batch.complete_with(|&x| Ok::<_, Error>(x + 1));
                r.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..4u64)
        .map(|t| {
            let mut producer = batcher.async_producer();
            tokio::spawn(async move {
                for i in 0..500u64 {
                    let item = t * 1000 + i;
                    if i % 5 == 0 {
                        assert_eq!(producer.call(item).await.unwrap(), item + 1);
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
    let stats = tokio::time::timeout(BOUND, batcher.shutdown_async())
        .await
        .unwrap();
    assert_eq!(stats.items_handled, 2000);
    assert!(max.load(Ordering::SeqCst) <= 2);
    assert_eq!(stats.pool_free, stats.pool_size);
}

#[test]
fn a_runtime_shutting_down_fails_what_the_drainer_task_left() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let entered = Arc::new(AtomicU64::new(0));
    let e = Arc::clone(&entered);
    let batcher = Batcher::builder()
        .lanes(1)
        .max_in_flight(1)
        .runtime(runtime.handle().clone())
        .drain_on_runtime(true)
        .async_handler_fn(move |_batch: AsyncBatch<u64, u64>| {
            let e = Arc::clone(&e);
            async move {
                e.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
                Ok(())
            }
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    let stuck = producer.submit(1).unwrap();
    common::wait_for("the batch to start", || entered.load(Ordering::SeqCst) == 1);
    let queued: Vec<_> = (2..6).map(|i| producer.submit(i).unwrap()).collect();
    drop(runtime);
    let results = spawn_bounded("waiter", move || {
        let mut all = vec![stuck.wait()];
        all.extend(queued.into_iter().map(|t| t.wait()));
        all
    })
    .join();
    for result in results {
        assert!(matches!(result, Err(Error::RuntimeShutdown)), "{result:?}");
    }
    // The lanes are closed: nothing is accepted into a drainer-less batcher.
    assert!(matches!(producer.push(9), Err(SubmitError::Closed(9))));
    spawn_bounded("shutdown", move || batcher.shutdown()).join();
}

#[test]
fn drain_on_runtime_settings_are_checked() {
    let handler = |batch: &mut Batch<'_, u64, ()>| {
        batch.complete_with(|_| Ok::<_, Error>(()));
        Ok(())
    };
    let e = Batcher::builder()
        .drain_on_runtime(true)
        .handler_fn(handler)
        .build()
        .unwrap_err();
    assert_eq!(e, ConfigError::NoRuntime);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let e = Batcher::builder()
        .runtime(runtime.handle().clone())
        .drain_on_runtime(true)
        .pin_drainer(0)
        .handler_fn(handler)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::PinOnRuntime { core: 0 } | ConfigError::NoSuchCore { .. }
        ),
        "{e:?}"
    );
    assert_eq!(e.field(), "pin_drainer");
}
