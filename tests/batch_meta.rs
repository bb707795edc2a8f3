//! What a handler sees about its batch: its number, which attempt this is,
//! and when its oldest item was accepted.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::BOUND;
use ringbatch::{Batch, BatchError, Batcher, Linger, RetryPolicy};

/// What the handler saw per call: `(id, attempt, items, oldest_accepted)`.
type Seen = Arc<Mutex<Vec<(u64, u32, Vec<u64>, Option<Instant>)>>>;

fn record(seen: &Seen, batch: &Batch<'_, u64, u64>) {
    seen.lock().unwrap().push((
        batch.id(),
        batch.attempt(),
        batch.items().to_vec(),
        batch.oldest_accepted(),
    ));
}

fn quick_retries(max_retries: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_max_retries(max_retries)
        .with_initial_delay(Duration::from_millis(1))
        .with_max_delay(Duration::from_millis(2))
        .with_jitter(0.0)
}

#[test]
fn batches_are_numbered_in_dispatch_order_and_a_retry_keeps_its_number() {
    let seen = Seen::default();
    let log = Arc::clone(&seen);
    let batcher = Batcher::builder()
        .lanes(1)
        .retry_policy(quick_retries(3))
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            record(&log, batch);
            // Item 7 fails its first two attempts.
            if batch.items().contains(&7) && batch.attempt() < 3 {
                return Err(BatchError::from("not yet"));
            }
            batch.ok_with(|&x| x);
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    for x in [1, 2, 7, 3] {
        let mut ticket = producer.submit(x).unwrap();
        let result = ticket.wait_timeout(BOUND).expect("handled in time");
        assert_eq!(result.unwrap(), x);
    }
    batcher.shutdown();
    let seen: Vec<(u64, u32, Vec<u64>)> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(id, attempt, items, _)| (*id, *attempt, items.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (1, 1, vec![1]),
            (2, 1, vec![2]),
            (3, 1, vec![7]),
            (3, 2, vec![7]),
            (3, 3, vec![7]),
            (4, 1, vec![3]),
        ],
        "one number per dispatched batch, the same through its retries, attempts from 1"
    );
}

#[cfg(feature = "tokio")]
#[test]
fn an_async_handler_sees_the_same_numbers_and_attempts() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let batcher = Batcher::builder()
        .lanes(1)
        .runtime(runtime.handle().clone())
        .retry_policy(quick_retries(2))
        .async_handler_fn(move |mut batch: ringbatch::AsyncBatch<u64, u64>| {
            let log = Arc::clone(&log);
            async move {
                log.lock().unwrap().push((batch.id(), batch.attempt()));
                if batch.attempt() < 2 {
                    return Err(BatchError::from("once more"));
                }
                batch.complete_with(|&x| Ok::<_, ringbatch::Error>(x));
                Ok(())
            }
        })
        .build()
        .unwrap();
    let mut ticket = batcher.producer().submit(5).unwrap();
    assert_eq!(ticket.wait_timeout(BOUND).expect("handled").unwrap(), 5);
    batcher.shutdown();
    assert_eq!(*seen.lock().unwrap(), [(1, 1), (1, 2)]);
}

/// Builds a batcher with `configure`, submits one item, and returns when
/// the submission began and ended, and what the handler saw.
fn oldest_of_one(
    configure: impl FnOnce(ringbatch::BatcherBuilder<u64, u64>) -> ringbatch::BatcherBuilder<u64, u64>,
) -> (Instant, Instant, Instant, Option<Instant>) {
    let seen = Seen::default();
    let log = Arc::clone(&seen);
    let built = Instant::now();
    let batcher = configure(Batcher::builder().lanes(1))
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            record(&log, batch);
            batch.ok_with(|&x| x);
            Ok(())
        })
        .build()
        .unwrap();
    let before = Instant::now();
    let mut ticket = batcher.producer().submit(1).unwrap();
    let after = Instant::now();
    ticket.wait_timeout(BOUND).expect("handled").unwrap();
    batcher.shutdown();
    let oldest = seen.lock().unwrap()[0].3;
    (built, before, after, oldest)
}

#[test]
fn the_oldest_acceptance_is_known_with_histograms_or_shaping_and_bounded() {
    let (built, _, after, oldest) = oldest_of_one(|b| b.histograms(true));
    let oldest = oldest.expect("known with histograms");
    assert!(
        oldest >= built && oldest <= after,
        "with histograms: no later than the acceptance, which ended by {after:?}; got {oldest:?}"
    );

    let (_, before, _, oldest) =
        oldest_of_one(|b| b.linger(Linger::Fixed(Duration::from_millis(1))));
    let oldest = oldest.expect("known with shaping");
    assert!(
        oldest >= before && oldest <= Instant::now(),
        "with shaping: when the drainer took it, after the submission began; got {oldest:?}"
    );

    let (_, _, _, oldest) = oldest_of_one(|b| b);
    assert_eq!(oldest, None, "unknown without histograms or shaping");
}
