//! Handler threads: `n` blocking handlers running batches at once, key
//! groups kept on one thread, panics, retries, flush and shutdown, and the
//! settings `build` refuses.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{BOUND, spawn_bounded};
use ringbatch::{
    Batch, BatchError, Batcher, ConfigError, Error, Handler, MAX_HANDLER_THREADS, RetryPolicy,
    ThreadRouting,
};

/// A rendezvous of `n` parties that gives up after [`BOUND`] (a
/// `std::sync::Barrier` would hang the test if the parties never meet).
#[derive(Default)]
struct Rendezvous {
    arrived: Mutex<usize>,
    cond: Condvar,
}

impl Rendezvous {
    /// Arrives and waits for `n` arrivals in all; false if they did not
    /// come within the bound.
    fn meet(&self, n: usize) -> bool {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.cond.notify_all();
        let deadline = Instant::now() + BOUND;
        while *arrived < n {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            arrived = self.cond.wait_timeout(arrived, deadline - now).unwrap().0;
        }
        true
    }
}

#[test]
fn n_threads_run_n_batches_at_once() {
    const N: usize = 3;
    let meeting = Arc::new(Rendezvous::default());
    let threads_seen = Arc::new(Mutex::new(Vec::new()));
    let (m, seen) = (Arc::clone(&meeting), Arc::clone(&threads_seen));
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(1)
        .handler_threads_fn(N, move |thread| {
            let (meeting, seen) = (Arc::clone(&m), Arc::clone(&seen));
            move |batch: &mut Batch<'_, u64, bool>| {
                seen.lock().unwrap().push(thread);
                // Every batch of the first N waits here for the others: they
                // meet only if N handlers run at once.
                let met = meeting.meet(N);
                batch.ok_with(|_| met);
                Ok(())
            }
        })
        .build()
        .unwrap();
    assert_eq!(
        batcher.config().pool_size,
        N + 1,
        "n + 1 buffers by default"
    );
    let producer = batcher.producer();
    let tickets: Vec<_> = (0..N as u64).map(|i| producer.submit(i).unwrap()).collect();
    for mut ticket in tickets {
        let met = ticket.wait_timeout(BOUND).expect("handled").expect("ok");
        assert!(met, "the {N} handlers did not all run at once");
    }
    let mut seen = threads_seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, (0..N).collect::<Vec<_>>(), "one batch on each thread");
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled, N as u64);
    assert_eq!(stats.batches_in_flight, 0);
}

#[test]
fn by_group_keeps_each_groups_batches_in_order_on_one_thread() {
    const GROUPS: u64 = 12;
    const EACH: u64 = 3_000;
    const PRODUCERS: u64 = 2;
    // Per group: the thread it ran on and the last sequence number seen.
    type Seen = Arc<Mutex<HashMap<u64, (usize, u64)>>>;
    let seen: Seen = Arc::default();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (s, r, m) = (Arc::clone(&seen), Arc::clone(&running), Arc::clone(&most));
    let batcher = Batcher::builder()
        .lanes(2)
        .capacity(256)
        .max_batch(8)
        .group_by(|&(group, _): &(u64, u64)| group)
        .handler_threads_fn(4, move |thread| {
            let (seen, running, most) = (Arc::clone(&s), Arc::clone(&r), Arc::clone(&m));
            move |batch: &mut Batch<'_, (u64, u64), ()>| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let group = batch.items()[0].0;
                for &(g, seq) in batch.items() {
                    assert_eq!(g, group, "a batch holds one key group");
                    let mut seen = seen.lock().unwrap();
                    let entry = seen.entry(g).or_insert((thread, 0));
                    assert_eq!(entry.0, thread, "group {g} moved to another thread");
                    assert!(seq > entry.1, "group {g}: {seq} ran after {}", entry.1);
                    entry.1 = seq;
                }
                // Some work, so that batches of other groups overlap.
                for _ in 0..2_000 {
                    std::hint::spin_loop();
                }
                batch.ok_with(|_| ());
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .thread_routing(ThreadRouting::ByGroup)
        .build()
        .unwrap();
    let batcher = Arc::new(batcher);
    // Each producer owns half of the groups: one producer per group keeps
    // the group's submission order well defined.
    let workers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let batcher = Arc::clone(&batcher);
            spawn_bounded(format!("producer-{p}"), move || {
                let producer = batcher.producer();
                for seq in 1..=EACH {
                    for g in (p..GROUPS).step_by(PRODUCERS as usize) {
                        producer.push((g, seq)).unwrap();
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join();
    }
    let batcher = Arc::into_inner(batcher).expect("the producers are gone");
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled, GROUPS * EACH);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), GROUPS as usize);
    for (g, &(_, last)) in seen.iter() {
        assert_eq!(last, EACH, "group {g} ended at {last}");
    }
    assert!(most.load(Ordering::SeqCst) <= 4);
}

#[test]
fn a_panicking_handler_fails_its_batch_and_the_thread_goes_on() {
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(1)
        .handler_threads_fn(2, |_| {
            |batch: &mut Batch<'_, u64, u64>| {
                if batch.items()[0] % 10 == 3 {
                    panic!("injected panic");
                }
                batch.ok_with(|&x| x * 2);
                Ok(())
            }
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    let tickets: Vec<_> = (0..100).map(|i| producer.submit(i).unwrap()).collect();
    for (i, ticket) in tickets.into_iter().enumerate() {
        match ticket.wait() {
            Ok(x) => assert_eq!(x, 2 * i as u64),
            Err(Error::HandlerPanicked { message }) => {
                assert_eq!(i % 10, 3);
                assert_eq!(message.as_str(), "injected panic");
            }
            Err(e) => panic!("item {i}: {e}"),
        }
    }
    let stats = batcher.shutdown();
    assert_eq!(stats.handler_panics, 10);
    assert_eq!(stats.items_failed, 10);
}

#[test]
fn retries_and_batch_errors_run_on_the_handler_threads() {
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(4)
        .retry_policy(
            RetryPolicy::default()
                .with_max_retries(3)
                .with_initial_delay(Duration::from_millis(1)),
        )
        .handler_threads_fn(3, |_| {
            |batch: &mut Batch<'_, u64, u32>| {
                let attempt = batch.attempt();
                for i in 0..batch.len() {
                    if attempt == 1 && batch.items()[i] % 2 == 0 {
                        batch.retry(i, "flaky").unwrap();
                    } else {
                        batch.ok(i, attempt).unwrap();
                    }
                }
                Ok(())
            }
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    let tickets: Vec<_> = (0..200u64)
        .map(|i| (i, producer.submit(i).unwrap()))
        .collect();
    for (i, ticket) in tickets {
        let attempt = ticket.wait().unwrap();
        assert_eq!(attempt, if i % 2 == 0 { 2 } else { 1 }, "item {i}");
    }
    let stats = batcher.shutdown();
    assert_eq!(stats.retried, 100);
    assert_eq!(stats.items_failed, 0);
}

#[test]
fn flush_waits_for_every_batch_in_flight_and_shutdown_drops_every_handler() {
    struct Counting {
        handled: Arc<AtomicUsize>,
        dropped: Arc<AtomicUsize>,
    }
    impl Handler<u64, ()> for Counting {
        fn handle(&mut self, batch: &mut Batch<'_, u64, ()>) -> Result<(), BatchError> {
            std::thread::yield_now();
            self.handled.fetch_add(batch.len(), Ordering::SeqCst);
            Ok(())
        }
    }
    impl Drop for Counting {
        fn drop(&mut self) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
    let handled = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let (h, d) = (Arc::clone(&handled), Arc::clone(&dropped));
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(16)
        .handler_threads(4, move |_| Counting {
            handled: Arc::clone(&h),
            dropped: Arc::clone(&d),
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    for round in 1..=20 {
        for i in 0..1_000 {
            producer.push(i).unwrap();
        }
        batcher.flush();
        assert_eq!(handled.load(Ordering::SeqCst), round * 1_000);
        assert_eq!(batcher.stats().batches_in_flight, 0);
    }
    drop(producer);
    assert_eq!(dropped.load(Ordering::SeqCst), 0);
    batcher.shutdown();
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        4,
        "shutdown joins every thread"
    );
}

fn handler(_: usize) -> impl FnMut(&mut Batch<'_, u64, ()>) -> Result<(), BatchError> + Send {
    |_batch: &mut Batch<'_, u64, ()>| Ok(())
}

fn invalid_field(result: Result<Batcher<u64, ()>, ConfigError>) -> &'static str {
    match result {
        Err(ConfigError::Invalid { field, .. }) => field,
        Err(other) => panic!("expected ConfigError::Invalid, got {other:?}"),
        Ok(_) => panic!("expected ConfigError::Invalid, built"),
    }
}

#[test]
fn build_refuses_what_handler_threads_cannot_do() {
    let zero = Batcher::<u64, ()>::builder()
        .handler_threads_fn(0, handler)
        .build();
    assert!(matches!(
        zero,
        Err(ConfigError::Zero {
            field: "handler_threads"
        })
    ));
    let many = Batcher::<u64, ()>::builder()
        .handler_threads_fn(MAX_HANDLER_THREADS + 1, handler)
        .build();
    assert!(matches!(
        many,
        Err(ConfigError::TooLarge {
            field: "handler_threads",
            ..
        })
    ));
    let small = Batcher::<u64, ()>::builder()
        .pool_size(4)
        .handler_threads_fn(4, handler)
        .build();
    assert!(matches!(
        small,
        Err(ConfigError::PoolTooSmall {
            pool_size: 4,
            needed: 5
        })
    ));
    let inline = Batcher::<u64, ()>::builder()
        .inline_when_idle(true)
        .handler_threads_fn(2, handler)
        .build();
    assert_eq!(invalid_field(inline), "inline_when_idle");
    let replaced = Batcher::<u64, ()>::builder()
        .handler_threads_fn(2, handler)
        .handler_fn(handler(0))
        .build();
    assert_eq!(invalid_field(replaced), "handler_threads");
    let routing_alone = Batcher::<u64, ()>::builder()
        .handler_fn(handler(0))
        .thread_routing(ThreadRouting::ByGroup)
        .build();
    assert_eq!(invalid_field(routing_alone), "thread_routing");
    let no_groups = Batcher::<u64, ()>::builder()
        .handler_threads_fn(2, handler)
        .thread_routing(ThreadRouting::ByGroup)
        .build();
    assert_eq!(invalid_field(no_groups), "thread_routing");
    let factory_panics = Batcher::<u64, ()>::builder()
        .handler_threads_fn(3, |i| {
            assert!(i < 2, "no third handler");
            handler(i)
        })
        .build();
    assert_eq!(invalid_field(factory_panics), "handler_threads");
}

#[cfg(feature = "tokio")]
#[test]
fn build_refuses_handler_threads_with_async_settings() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let async_after = Batcher::<u64, ()>::builder()
        .runtime(runtime.handle().clone())
        .handler_threads_fn(2, handler)
        .async_handler_fn(|_batch| async { Ok(()) })
        .build();
    assert_eq!(invalid_field(async_after), "handler_threads");
    let on_runtime = Batcher::<u64, ()>::builder()
        .runtime(runtime.handle().clone())
        .drain_on_runtime(true)
        .handler_threads_fn(2, handler)
        .build();
    assert_eq!(invalid_field(on_runtime), "handler_threads");
}
