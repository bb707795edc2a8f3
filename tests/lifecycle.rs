//! Handler outcomes, tickets, flush and shutdown.

mod common;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BOUND, Gate, spawn_bounded, wait_for};
use ringbatch::{Batch, BatchError, Batcher, DispatchReason, Error, Handler, SubmitError};

#[test]
fn handler_panic_fails_its_batch_and_the_drainer_carries_on() {
    let batcher = Batcher::builder()
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            if batch.items().contains(&13) {
                panic!("unlucky item");
            }
            batch.complete_with(|&x| Ok::<_, Error>(x + 1));
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    match producer.submit(13).unwrap().wait() {
        Err(Error::HandlerPanicked { message }) => assert_eq!(&*message, "unlucky item"),
        other => panic!("expected HandlerPanicked, got {other:?}"),
    }
    // The next batch is handled normally.
    assert_eq!(producer.submit(14).unwrap().wait().unwrap(), 15);
    let stats = batcher.shutdown();
    assert_eq!(stats.handler_panics, 1);
    assert_eq!(stats.items_handled, 2);
}

#[test]
fn whole_batch_error_fails_every_item_not_completed() {
    let gate = Gate::closed();
    let g = gate.clone();
    let batcher = Batcher::builder()
        .lanes(1)
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            if batch.items() == [0] {
                g.pass(); // hold the first batch so the next ones queue up
            }
            if batch.items().contains(&7) {
                // Complete the first item, then give up on the batch.
                batch.ok(0, 100).unwrap();
                return Err(BatchError::from("database unavailable"));
            }
            batch.complete_with(|&x| Ok::<_, Error>(x));
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    let first = producer.submit(0).unwrap();
    gate.wait_arrived(1);
    let mut tickets = Vec::new();
    producer.submit_many(&[5, 6, 7, 8], &mut tickets).unwrap();
    gate.open();
    assert_eq!(first.wait().unwrap(), 0);
    let results: Vec<_> = tickets.into_iter().map(|t| t.wait()).collect();
    // The four queued items form one batch (the lane was idle behind the
    // plug): the first was completed before the error, the rest fail.
    assert_eq!(results[0].as_ref().unwrap(), &100);
    for result in &results[1..] {
        match result {
            Err(e @ Error::BatchFailed(_)) => {
                assert_eq!(
                    e.handler_error().unwrap().to_string(),
                    "database unavailable"
                );
                assert!(e.to_string().contains("database unavailable"));
            }
            other => panic!("expected BatchFailed, got {other:?}"),
        }
    }
    assert_eq!(batcher.shutdown().batch_errors, 1);
}

#[test]
fn items_left_uncompleted_get_an_error_and_item_failures_arrive() {
    #[derive(Debug)]
    struct Odd(u64);
    impl std::fmt::Display for Odd {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} is odd", self.0)
        }
    }
    impl std::error::Error for Odd {}

    struct EvenOnly;
    impl Handler<u64, u64> for EvenOnly {
        fn handle(&mut self, batch: &mut Batch<'_, u64, u64>) -> Result<(), BatchError> {
            for i in 0..batch.len() {
                let x = batch.items()[i];
                match x % 4 {
                    0 => batch.ok(i, x).unwrap(),
                    1 => batch.fail(i, Odd(x)).unwrap(),
                    // 2 and 3: left uncompleted.
                    _ => {}
                }
            }
            // Completing twice or out of range is refused, not a panic.
            if !batch.is_empty() && batch.items()[0] % 4 == 0 {
                assert_eq!(
                    batch.ok(0, 1),
                    Err(ringbatch::CompleteError::AlreadyCompleted { index: 0 })
                );
            }
            assert!(matches!(
                batch.ok(batch.len(), 1),
                Err(ringbatch::CompleteError::OutOfRange { .. })
            ));
            Ok(())
        }
    }
    let batcher = Batcher::builder().handler(EvenOnly).build().unwrap();
    let producer = batcher.producer();
    for x in 0..64u64 {
        let result = producer.submit(x).unwrap().wait();
        match (x % 4, result) {
            (0, Ok(v)) => assert_eq!(v, x),
            (1, Err(e @ Error::Failed(_))) => {
                let odd = e.handler_error().unwrap().downcast_ref::<Odd>().unwrap();
                assert_eq!(odd.0, x);
            }
            (2 | 3, Err(Error::NotCompleted)) => {}
            (_, other) => panic!("item {x}: unexpected {other:?}"),
        }
    }
}

/// A result type that counts its drops, to show every result is dropped
/// exactly once whether or not its ticket takes it.
struct Counted(Arc<AtomicUsize>);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn tickets_dropped_before_and_after_completion_free_their_slots() {
    let drops = Arc::new(AtomicUsize::new(0));
    let gate = Gate::closed();
    let (g, d) = (gate.clone(), Arc::clone(&drops));
    let batcher = Batcher::builder()
        .lanes(1)
        .capacity(64)
        .result_slots(4)
        .handler_fn(move |batch: &mut Batch<'_, u64, Counted>| {
            g.pass();
            let d = &d;
            batch.complete_with(|_| Ok::<_, Error>(Counted(Arc::clone(d))));
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();

    // Dropped before its result exists: the result is dropped on arrival.
    let early = producer.submit(1).unwrap();
    gate.wait_arrived(1);
    drop(early);
    gate.open();
    // Dropped after its result exists, without taking it.
    let late = producer.submit(2).unwrap();
    assert!(batcher.flush_timeout(BOUND));
    assert!(late.is_ready());
    drop(late);
    wait_for("both results dropped", || drops.load(Ordering::SeqCst) == 2);

    // Both slots were freed: all 4 result slots can be held again at once.
    let held: Vec<_> = (0..4).map(|i| producer.try_submit(i).unwrap()).collect();
    assert!(
        producer.try_submit(99).unwrap_err().is_full(),
        "a fifth outstanding ticket has no result slot"
    );
    for mut ticket in held {
        let result = ticket.wait_timeout(BOUND).expect("result within the bound");
        assert!(result.is_ok());
        assert!(matches!(ticket.try_take(), Some(Err(Error::AlreadyTaken))));
    }
    drop(batcher);
    assert_eq!(drops.load(Ordering::SeqCst), 6, "every result dropped once");
}

#[test]
fn try_take_and_wait_timeout_report_a_missing_result() {
    let gate = Gate::closed();
    let g = gate.clone();
    let batcher = Batcher::builder()
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            g.pass();
            batch.complete_with(|&x| Ok::<_, Error>(x));
            Ok(())
        })
        .build()
        .unwrap();
    let mut ticket = batcher.producer().submit(5).unwrap();
    assert!(ticket.try_take().is_none());
    assert!(ticket.wait_timeout(Duration::from_millis(10)).is_none());
    assert!(!ticket.is_ready());
    gate.open();
    assert_eq!(ticket.wait_timeout(BOUND).unwrap().unwrap(), 5);
}

#[test]
fn wait_until_bounds_a_wait_by_an_instant_and_the_old_name_forwards() {
    let gate = Gate::closed();
    let g = gate.clone();
    let batcher = Batcher::builder()
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            g.pass();
            batch.complete_with(|&x| Ok::<_, Error>(x));
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    let mut ticket = producer.submit(7).unwrap();
    let until = Instant::now() + Duration::from_millis(10);
    assert!(
        ticket.wait_until(until).is_none(),
        "expected no result while the handler is held"
    );
    assert!(Instant::now() >= until, "returned before the instant");
    #[allow(deprecated)]
    let early = ticket.wait_deadline(Instant::now());
    assert!(early.is_none(), "expected the old name to time out as well");
    gate.open();
    let result = ticket.wait_until(Instant::now() + BOUND);
    assert_eq!(result.expect("a result within the bound").unwrap(), 7);
    let mut second = producer.submit(8).unwrap();
    #[allow(deprecated)]
    let result = second.wait_deadline(Instant::now() + BOUND);
    assert_eq!(result.expect("a result within the bound").unwrap(), 8);
}

#[test]
fn flush_is_a_barrier_for_every_producer() {
    let handled = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&handled);
    let batcher = Arc::new(
        Batcher::builder()
            .lanes(2)
            .handler_fn(move |batch: &mut Batch<'_, u64, ()>| {
                count.fetch_add(batch.len() as u64, Ordering::SeqCst);
                batch.complete_with(|_| Ok::<_, Error>(()));
                Ok(())
            })
            .build()
            .unwrap(),
    );
    for round in 1..=50u64 {
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let batcher = Arc::clone(&batcher);
                spawn_bounded(format!("p{t}"), move || {
                    let producer = batcher.producer();
                    for i in 0..1000 {
                        producer.push(i).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join();
        }
        assert!(batcher.flush_timeout(BOUND));
        assert_eq!(
            handled.load(Ordering::SeqCst),
            round * 3000,
            "after flush, everything pushed before it was handled"
        );
    }
    let stats = Arc::into_inner(batcher).unwrap().shutdown();
    assert!(stats.dispatched.flush + stats.dispatched.lanes_idle + stats.dispatched.full > 0);
    assert_eq!(stats.items_handled, 150_000);
}

#[test]
fn shutdown_while_producers_submit_loses_nothing() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let batcher = Batcher::builder()
        .lanes(2)
        .capacity(64)
        // Up to 4 producers per lane hold up to 32 tickets each.
        .result_slots(128)
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            s.lock().unwrap().extend_from_slice(batch.items());
            batch.complete_with(|&x| Ok::<_, Error>(x ^ 0xff));
            Ok(())
        })
        .build()
        .unwrap();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let producer = batcher.producer();
            spawn_bounded(format!("p{t}"), move || {
                // Submit until the batcher closes; keep every accepted item.
                let mut accepted = Vec::new();
                let mut tickets = Vec::new();
                for i in 0.. {
                    let item = (t << 32) | i;
                    let outcome = if i % 2 == 0 {
                        producer.push(item).map(|()| None)
                    } else {
                        producer.submit(item).map(Some)
                    };
                    match outcome {
                        Ok(ticket) => {
                            accepted.push(item);
                            if let Some(ticket) = ticket {
                                tickets.push((item, ticket));
                            }
                        }
                        Err(SubmitError::Closed(back)) => {
                            assert_eq!(back, item, "the refused item comes back");
                            break;
                        }
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                    if tickets.len() == 32 {
                        for (item, ticket) in tickets.drain(..) {
                            assert_eq!(ticket.wait().unwrap(), item ^ 0xff);
                        }
                    }
                }
                // Tickets outlive the batcher and still resolve.
                for (item, ticket) in tickets {
                    assert_eq!(ticket.wait().unwrap(), item ^ 0xff);
                }
                assert!(producer.is_closed());
                accepted
            })
        })
        .collect();
    wait_for("the producers to get going", || {
        seen.lock().unwrap().len() > 10_000
    });
    let stats = batcher.shutdown();
    let mut accepted: Vec<u64> = threads.into_iter().flat_map(|t| t.join()).collect();
    let mut handled = seen.lock().unwrap().clone();
    accepted.sort_unstable();
    handled.sort_unstable();
    assert_eq!(
        handled.len(),
        accepted.len(),
        "every accepted item handled once"
    );
    assert!(
        handled == accepted,
        "the handled items are exactly the accepted ones"
    );
    assert_eq!(stats.items_handled, accepted.len() as u64);
    // Producers may still be meeting the closed lanes when the final stats
    // are read, so at most one refusal each is counted by then.
    assert!(stats.refused_closed <= 4, "{stats:?}");
}

#[test]
fn dropping_the_batcher_drains_and_completes_everything() {
    let handled = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&handled);
    let batcher = Batcher::builder()
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            count.fetch_add(batch.len() as u64, Ordering::SeqCst);
            batch.complete_with(|&x| Ok::<_, Error>(x));
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    let mut tickets = Vec::new();
    for i in 0..10_000 {
        producer.push(i).unwrap();
    }
    producer.submit_many(&[1, 2, 3], &mut tickets).unwrap();
    drop(batcher);
    assert_eq!(handled.load(Ordering::SeqCst), 10_003);
    let results: Vec<u64> = tickets.into_iter().map(|t| t.wait().unwrap()).collect();
    assert_eq!(results, [1, 2, 3]);
    assert!(matches!(producer.push(1), Err(SubmitError::Closed(1))));
}

#[test]
fn stats_say_why_each_batch_was_dispatched() {
    let gate = Gate::closed();
    let g = gate.clone();
    let batcher = Batcher::builder()
        .lanes(1)
        .capacity(64)
        .max_batch(4)
        .handler_fn(move |batch: &mut Batch<'_, u64, ()>| {
            if batch.items() == [1000] {
                g.pass();
            }
            batch.complete_with(|_| Ok::<_, Error>(()));
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    producer.push(1000).unwrap();
    gate.wait_arrived(1);
    for i in 0..10 {
        producer.push(i).unwrap();
    }
    gate.open();
    assert!(batcher.flush_timeout(BOUND));
    let stats = batcher.shutdown();
    // 10 queued items with max_batch 4: two full batches, the rest dispatched
    // when the lanes went idle or by the flush.
    assert_eq!(stats.dispatched.full, 2, "{stats:?}");
    assert_eq!(stats.batches, stats.dispatched.total());
    assert_eq!(stats.max_batch_items, 4);
    assert_eq!(stats.items_handled, 11);
    assert!((stats.mean_batch_items() - 11.0 / stats.batches as f64).abs() < 1e-9);
    assert_eq!(DispatchReason::Full.to_string(), "full");
}

#[test]
fn submit_many_and_push_slice_keep_order_and_report_partial_acceptance() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let gate = Gate::closed();
    let g = gate.clone();
    let batcher = Batcher::builder()
        .lanes(1)
        .capacity(8)
        .max_batch(8)
        .backpressure(ringbatch::Backpressure::Reject)
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            if batch.items() == [999] {
                g.pass();
            }
            s.lock().unwrap().extend_from_slice(batch.items());
            batch.complete_with(|&x| Ok::<_, Error>(x + 1));
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    producer.push(999).unwrap();
    gate.wait_arrived(1);
    // 20 items into a lane of 8 under Reject: the first chunk of 8 fits.
    let items: Vec<u64> = (0..20).collect();
    let err = producer.push_slice(&items).unwrap_err();
    assert_eq!(err.accepted, 8);
    assert_eq!(err.kind, ringbatch::RefusedKind::Full);
    gate.open();
    assert!(batcher.flush_timeout(BOUND));
    let mut tickets = Vec::new();
    producer.submit_many(&items[..8], &mut tickets).unwrap();
    let results: Vec<u64> = tickets.into_iter().map(|t| t.wait().unwrap()).collect();
    assert_eq!(results, (1..=8).collect::<Vec<_>>());
    let seen = seen.lock().unwrap();
    assert_eq!(&seen[1..9], &items[..8]);
    assert_eq!(&seen[9..], &items[..8]);
    drop(seen);
    assert_eq!(batcher.shutdown().rejected, 12);
}

#[test]
fn a_producers_handle_makes_producers_anywhere_and_outlives_shutdown() {
    fn assert_send_sync<X: Send + Sync + Clone + 'static>(_: &X) {}
    let batcher = Batcher::builder()
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.ok_with(|&x| x * 3);
            Ok(())
        })
        .build()
        .unwrap();
    let producers = batcher.producers();
    assert_send_sync(&producers);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let producers = producers.clone();
            spawn_bounded(format!("p{t}"), move || {
                let producer = producers.producer();
                (0..1000u64)
                    .map(|i| producer.submit(t * 1000 + i).unwrap().wait().unwrap())
                    .sum::<u64>()
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join()).sum();
    assert_eq!(total, 3 * (0..4000u64).sum::<u64>());
    assert!(producers.producer_on_lane(batcher.lanes()).is_err());
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled, 4000);
    // After shutdown the handle still makes producers; they refuse as closed.
    assert!(matches!(
        producers.producer().push(1),
        Err(SubmitError::Closed(1))
    ));
}

#[test]
fn tickets_report_their_sequence_in_the_lane_while_slots_are_reused() {
    // Four result slots, three rounds of four tickets: every slot serves
    // three tickets, each of which keeps its own sequence number.
    let batcher = Batcher::builder()
        .lanes(1)
        .result_slots(4)
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.ok_with(|x| x * 10);
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer_on_lane(0).unwrap();
    let mut expected_seq = 0u64;
    for round in 0..3u64 {
        let tickets: Vec<_> = (0..4u64)
            .map(|i| (round * 4 + i, producer.submit(round * 4 + i).unwrap()))
            .collect();
        for (item, ticket) in tickets {
            assert_eq!(
                ticket.sequence(),
                Some(expected_seq),
                "the ticket of item {item} names its place in the lane"
            );
            expected_seq += 1;
            assert_eq!(ticket.wait().unwrap(), item * 10, "item {item}'s result");
        }
    }
    assert_eq!(batcher.shutdown().items_handled, 12);
}
