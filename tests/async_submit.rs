//! Async submissions: tasks awaiting results and room, mixed with threads,
//! and random cancellation.

#![cfg(feature = "tokio")]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BOUND, Tally, encode, f, spawn_bounded, tallying_handler};
use ringbatch::{Batch, Batcher, Error, SubmitError};

fn tallying(
    producers: usize,
    lanes: usize,
    capacity: usize,
) -> (Batcher<u64, u64>, Arc<Mutex<Tally>>) {
    let tally = Arc::new(Mutex::new(Tally::new(producers)));
    let seen = Arc::clone(&tally);
    let batcher = Batcher::builder()
        .lanes(lanes)
        .capacity(capacity)
        .handler_fn(tallying_handler(seen))
        .build()
        .unwrap();
    (batcher, tally)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_tasks_submit_a_hundred_thousand_each_and_check_every_result() {
    const TASKS: usize = 8;
    const EACH: u64 = 100_000;
    // Small lanes, so that tasks also wait for room.
    let (batcher, tally) = tallying(TASKS, 2, 64);
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let mut producer = batcher.async_producer();
            tokio::spawn(async move {
                let mut tickets = Vec::with_capacity(32);
                for i in 0..EACH {
                    let item = encode(t as u64, i);
                    match i % 3 {
                        0 => assert_eq!(producer.call(item).await.unwrap(), f(item)),
                        1 => producer.push(item).await.unwrap(),
                        _ => tickets.push((item, producer.submit(item).await.unwrap())),
                    }
                    if tickets.len() == 32 {
                        for (item, ticket) in tickets.drain(..) {
                            assert_eq!(ticket.await.unwrap(), f(item));
                        }
                    }
                }
                for (item, ticket) in tickets {
                    assert_eq!(ticket.await.unwrap(), f(item));
                }
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(BOUND, task)
            .await
            .expect("task finished within the bound")
            .unwrap();
    }
    let stats = batcher.shutdown();
    let tally = tally.lock().unwrap();
    assert!(tally.out_of_order.is_empty(), "{:?}", tally.out_of_order);
    assert!(tally.next.iter().all(|&n| n == EACH), "{:?}", tally.next);
    assert_eq!(stats.items_handled, TASKS as u64 * EACH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_and_tasks_feed_one_batcher_exactly_once() {
    const EACH: u64 = 100_000;
    let (batcher, tally) = tallying(8, 2, 128);
    let batcher = Arc::new(batcher);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let batcher = Arc::clone(&batcher);
            spawn_bounded(format!("thread-{t}"), move || {
                let producer = batcher.producer();
                for i in 0..EACH {
                    let item = encode(t, i);
                    if i % 8 == 0 {
                        // A ticket made by a thread, awaited by a task below.
                        let ticket = producer.submit(item).unwrap();
                        assert_eq!(ticket.wait().unwrap(), f(item));
                    } else {
                        producer.push(item).unwrap();
                    }
                }
            })
        })
        .collect();
    let tasks: Vec<_> = (4..8u64)
        .map(|t| {
            let mut producer = batcher.async_producer();
            tokio::spawn(async move {
                for i in 0..EACH {
                    let item = encode(t, i);
                    if i % 8 == 0 {
                        let ticket = producer.submit(item).await.unwrap();
                        // A ticket made by a task, waited on by a thread.
                        let waited = tokio::task::spawn_blocking(move || ticket.wait())
                            .await
                            .unwrap();
                        assert_eq!(waited.unwrap(), f(item));
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
    let threads = tokio::task::spawn_blocking(move || {
        for thread in threads {
            thread.join();
        }
    });
    tokio::time::timeout(BOUND, threads).await.unwrap().unwrap();
    let stats = Arc::into_inner(batcher).unwrap().shutdown();
    let tally = tally.lock().unwrap();
    assert!(tally.out_of_order.is_empty(), "{:?}", tally.out_of_order);
    assert!(tally.next.iter().all(|&n| n == EACH), "{:?}", tally.next);
    assert_eq!(stats.items_handled, 8 * EACH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_submissions_leave_nothing_and_accepted_ones_are_handled_once() {
    let handled = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&handled);
    let batcher = Batcher::builder()
        .lanes(1)
        .capacity(4)
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            count.fetch_add(batch.len() as u64, Ordering::SeqCst);
            // A slow sink, so that the lane is full most of the time and
            // submissions wait longer than their deadlines.
            std::thread::sleep(Duration::from_millis(1));
            batch.complete_with(|&x| Ok::<_, Error>(x));
            Ok(())
        })
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..4u64)
        .map(|t| {
            let mut producer = batcher.async_producer();
            tokio::spawn(async move {
                let mut accepted = 0u64;
                let mut cancelled = 0u64;
                for i in 0..500u64 {
                    // Short deadlines (the timer's resolution is a
                    // millisecond): some submissions are cancelled while
                    // waiting for room, some after acceptance.
                    let deadline = Duration::from_micros(1 + (i * 7 + t) % 3_000);
                    let done = if i % 2 == 0 {
                        tokio::time::timeout(deadline, producer.push(i))
                            .await
                            .map(|r| r.map_err(|e| e.kind()))
                    } else {
                        // Accepted once `submit` returns; dropping the
                        // ticket afterwards drops only the result.
                        match tokio::time::timeout(deadline, producer.submit(i)).await {
                            Ok(Ok(ticket)) => {
                                let _ = tokio::time::timeout(deadline, ticket).await;
                                Ok(Ok(()))
                            }
                            Ok(Err(e)) => Ok(Err(e.kind())),
                            Err(elapsed) => Err(elapsed),
                        }
                    };
                    match done {
                        Ok(Ok(())) => accepted += 1,
                        Ok(Err(kind)) => panic!("refused under Block: {kind:?}"),
                        Err(_) => cancelled += 1,
                    }
                }
                (accepted, cancelled)
            })
        })
        .collect();
    let mut accepted = 0;
    let mut cancelled = 0;
    for task in tasks {
        let (a, c) = tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
        accepted += a;
        cancelled += c;
    }
    assert_eq!(accepted + cancelled, 2_000);
    assert!(
        cancelled > 0,
        "the deadlines should cancel some submissions"
    );
    let stats = batcher.shutdown();
    assert_eq!(
        handled.load(Ordering::SeqCst),
        accepted,
        "the handler saw exactly the accepted items ({cancelled} cancelled)"
    );
    assert_eq!(stats.accepted, accepted);
}

#[tokio::test(flavor = "current_thread")]
async fn refusals_come_back_with_the_item() {
    let batcher = Batcher::builder()
        .lanes(1)
        .capacity(1)
        .backpressure(ringbatch::Backpressure::Reject)
        .handler_fn(|batch: &mut Batch<'_, String, ()>| {
            batch.complete_with(|_| Ok::<_, Error>(()));
            Ok(())
        })
        .build()
        .unwrap();
    let mut producer = batcher.async_producer();
    let closer = batcher.producer();
    drop(batcher);
    assert!(closer.is_closed());
    match producer.push("kept".to_string()).await {
        Err(SubmitError::Closed(item)) => assert_eq!(item, "kept"),
        other => panic!("expected Closed, got {other:?}"),
    }
    match producer.submit("kept too".to_string()).await {
        Err(SubmitError::Closed(item)) => assert_eq!(item, "kept too"),
        other => panic!("expected Closed, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        producer.call("gone".to_string()).await,
        Err(Error::Refused(ringbatch::RefusedKind::Closed))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_spawned_later_get_producers_from_a_shared_handle() {
    let batcher = Batcher::builder()
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.ok_with(|&x| x + 7);
            Ok(())
        })
        .build()
        .unwrap();
    let producers = batcher.producers();
    // A task that spawns a task per "connection", each with its own producer.
    let acceptor = tokio::spawn(async move {
        let mut connections = Vec::new();
        for c in 0..16u64 {
            let mut producer = producers.async_producer();
            connections.push(tokio::spawn(async move {
                let mut sum = 0;
                for i in 0..100 {
                    sum += producer.call(c * 100 + i).await.unwrap();
                }
                sum
            }));
        }
        let mut total = 0;
        for connection in connections {
            total += connection.await.unwrap();
        }
        total
    });
    let total = tokio::time::timeout(BOUND, acceptor)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(total, (0..1600u64).map(|x| x + 7).sum::<u64>());
    assert_eq!(batcher.shutdown_async().await.items_handled, 1600);
}

/// The async `submit` returns a ticket as the blocking one does, with a
/// deadline too; the old names forward to the new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_returns_a_ticket_and_the_old_names_forward() {
    let batcher = Batcher::builder()
        .deadlines(true)
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.ok_with(|x| x + 1);
            Ok(())
        })
        .build()
        .unwrap();
    let mut producer = batcher.async_producer();
    let later = Instant::now() + BOUND;
    let ticket: ringbatch::Ticket<u64> = producer.submit(1).await.unwrap();
    assert_eq!(ticket.await.unwrap(), 2);
    let ticket = producer.submit_with_deadline(2, later).await.unwrap();
    assert_eq!(ticket.await.unwrap(), 3);
    let late = producer
        .submit_with_deadline(3, Instant::now())
        .await
        .unwrap();
    assert!(
        matches!(late.await, Err(Error::Expired)),
        "expected an item past its deadline to expire"
    );
    assert_eq!(producer.call(4).await.unwrap(), 5);
    #[allow(deprecated)]
    {
        assert_eq!(producer.enqueue(5).await.unwrap().await.unwrap(), 6);
        let ticket = producer.enqueue_with_deadline(6, later).await.unwrap();
        assert_eq!(ticket.await.unwrap(), 7);
        let late = producer
            .enqueue_with_deadline(7, Instant::now())
            .await
            .unwrap();
        assert!(matches!(late.await, Err(Error::Expired)));
    }
    batcher.shutdown_async().await;

    let plain = Batcher::builder()
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.ok_with(|x| *x);
            Ok(())
        })
        .build()
        .unwrap();
    let mut producer = plain.async_producer();
    match producer.submit_with_deadline(8, later).await {
        Err(SubmitError::NoDeadlines(item)) => assert_eq!(item, 8),
        other => panic!("expected NoDeadlines, got {:?}", other.map(|_| ())),
    }
    #[allow(deprecated)]
    let old = producer.enqueue_with_deadline(9, later).await;
    match old {
        Err(SubmitError::NoDeadlines(item)) => assert_eq!(item, 9),
        other => panic!("expected NoDeadlines, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_submits_per_item_priorities_and_a_critical_one_skips_the_linger() {
    let linger = Duration::from_secs(30);
    let batcher = Batcher::builder()
        .priorities(true)
        .linger(ringbatch::Linger::Fixed(linger))
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.ok_with(|&x| x + 1);
            Ok(())
        })
        .build()
        .unwrap();
    let mut producer = batcher.async_producer();
    let urgent = ringbatch::Priority::from_level(9).unwrap();
    let ticket = producer.submit_with_priority(1, urgent).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), ticket)
        .await
        .unwrap_or_else(|_| panic!("a Critical item waited for the {linger:?} linger"));
    assert_eq!(result.unwrap(), 2);
    producer
        .push_with_priority(5, ringbatch::Priority::Low)
        .await
        .unwrap();
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled, 2, "the Low item handled at shutdown");

    let plain = Batcher::builder()
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.ok_with(|&x| x);
            Ok(())
        })
        .build()
        .unwrap();
    let mut producer = plain.async_producer();
    match producer
        .submit_with_priority(7, ringbatch::Priority::High)
        .await
    {
        Err(SubmitError::NoPriorities(7)) => {}
        other => panic!("expected NoPriorities(7), got {:?}", other.map(|_| ())),
    }
}
