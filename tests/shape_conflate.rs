//! Conflation: the latest item per key within a batch, at the place of the
//! key's first arrival; superseded items' tickets and counts.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cfg(feature = "tokio")]
use common::BOUND;
use common::{Gate, decode, encode, spawn_bounded, wait_ticket};
use ringbatch::{Batch, Batcher, Error, Linger};

/// A quote: a symbol and a price (or a sequence number).
type Quote = (&'static str, u64);

type Batches = common::Batches<Quote>;

fn recording(
    batches: &Batches,
    gate: Option<&Gate>,
) -> impl FnMut(&mut Batch<'_, Quote, u64>) -> Result<(), ringbatch::BatchError> + Send + 'static {
    common::recording_with(batches, gate, |quote| quote.1)
}

#[test]
fn the_latest_per_key_is_kept_in_order_of_first_arrival() {
    let gate = Gate::closed();
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .lanes(1)
        .conflate_by(|quote: &Quote| quote.0)
        .handler_fn(recording(&batches, Some(&gate)))
        .build()
        .unwrap();
    let producer = batcher.producer();
    producer.push(("PLUG", 0)).unwrap();
    gate.wait_arrived(1);
    let quotes = [
        ("AAPL", 1),
        ("MSFT", 2),
        ("AAPL", 3),
        ("GOOG", 4),
        ("MSFT", 5),
        ("AAPL", 6),
    ];
    let tickets: Vec<_> = quotes
        .iter()
        .map(|&quote| producer.submit(quote).unwrap())
        .collect();
    gate.open();
    let results: Vec<_> = tickets.into_iter().map(wait_ticket).collect();
    let stats = batcher.shutdown();

    assert_eq!(
        batches.lock().unwrap()[1],
        [("AAPL", 6), ("MSFT", 5), ("GOOG", 4)],
        "the latest per symbol, at the place of the symbol's first quote"
    );
    for (quote, result) in quotes.iter().zip(&results) {
        match (quote.1, result) {
            (1..=3, Err(Error::Superseded)) => {}
            (4..=6, Ok(price)) => assert_eq!(*price, quote.1),
            (_, other) => panic!("{quote:?}: unexpected {other:?}"),
        }
    }
    assert_eq!(stats.superseded, 3);
    assert_eq!(stats.items_handled, 4, "the plug and three quotes");
    assert_eq!(stats.items_handled + stats.superseded, stats.accepted);
}

#[test]
fn conflation_works_within_a_batch_only() {
    // Two batches of the same symbols: each keeps its own latest.
    let batches = Batches::default();
    let batcher = Batcher::builder()
        .max_batch(4)
        .linger(Linger::Fixed(Duration::from_secs(30)))
        .conflate_by(|quote: &Quote| quote.0)
        .handler_fn(recording(&batches, None))
        .build()
        .unwrap();
    let producer = batcher.producer();
    let first: Vec<_> = [("A", 1), ("B", 2), ("A", 3)]
        .into_iter()
        .map(|q| producer.submit(q).unwrap())
        .collect();
    batcher.flush_now();
    let results: Vec<_> = first.into_iter().map(wait_ticket).collect();
    assert!(matches!(results[0], Err(Error::Superseded)));
    assert_eq!(results[1].as_ref().unwrap(), &2);
    assert_eq!(results[2].as_ref().unwrap(), &3);
    let second = producer.submit(("A", 4)).unwrap();
    batcher.flush_now();
    assert_eq!(
        wait_ticket(second).unwrap(),
        4,
        "a new batch: nothing to supersede"
    );
    let stats = batcher.shutdown();
    assert_eq!(
        *batches.lock().unwrap(),
        [vec![("A", 3), ("B", 2)], vec![("A", 4)]]
    );
    assert_eq!(stats.superseded, 1);
}

#[test]
fn every_item_is_handled_or_superseded_exactly_once() {
    // Producers send sequence numbers per (producer, key); superseded
    // items are counted from their tickets. The last item of every key
    // is never superseded (nothing comes after it).
    const PRODUCERS: u64 = 3;
    const EACH: u64 = 6_000;
    const KEYS: u64 = 8;
    let handled: Arc<Mutex<Vec<Vec<u64>>>> = Arc::default();
    let sink = Arc::clone(&handled);
    let batcher = Batcher::builder()
        .max_batch(64)
        .linger(Linger::Fixed(Duration::from_micros(500)))
        // Key: producer and key number.
        .conflate_by(|&id: &u64| {
            let (p, i) = decode(id);
            (p, i % KEYS)
        })
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            sink.lock().unwrap().push(batch.items().to_vec());
            batch.ok_with(|&id| id);
            Ok(())
        })
        .build()
        .unwrap();
    let threads: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let make = batcher.producers();
            spawn_bounded(format!("producer {p}"), move || {
                let producer = make.producer();
                let (mut kept, mut superseded) = (0u64, 0u64);
                let mut tickets = Vec::with_capacity(200);
                for window in (0..EACH).collect::<Vec<_>>().chunks(200) {
                    for &i in window {
                        let id = encode(p, i);
                        tickets.push((i, producer.submit(id).unwrap()));
                    }
                    for (i, ticket) in tickets.drain(..) {
                        match wait_ticket(ticket) {
                            Ok(value) => {
                                assert_eq!(value, encode(p, i));
                                kept += 1;
                            }
                            Err(Error::Superseded) => {
                                assert!(
                                    i + KEYS < EACH,
                                    "the last item of a key ({i}) was superseded"
                                );
                                superseded += 1;
                            }
                            Err(other) => panic!("item {i}: {other:?}"),
                        }
                    }
                }
                (kept, superseded)
            })
        })
        .collect();
    let (mut kept, mut superseded) = (0, 0);
    for thread in threads {
        let (k, s) = thread.join();
        kept += k;
        superseded += s;
    }
    let stats = batcher.shutdown();
    assert!(superseded > 0, "bursts of 200 items over 24 keys conflate");
    assert_eq!(stats.superseded, superseded, "stats count what tickets saw");
    assert_eq!(stats.items_handled, kept);
    assert_eq!(stats.accepted, PRODUCERS * EACH);
    assert_eq!(stats.items_handled + stats.superseded, stats.accepted);

    let handled = handled.lock().unwrap();
    // No key twice in a batch; per key, handled items in increasing order.
    let mut last: HashMap<(usize, u64), u64> = HashMap::new();
    for batch in handled.iter() {
        let mut keys: Vec<(usize, u64)> = batch
            .iter()
            .map(|&id| {
                let (p, i) = decode(id);
                (p, i % KEYS)
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), batch.len(), "a key twice in one batch");
        for &id in batch {
            let (p, i) = decode(id);
            if let Some(prev) = last.insert((p, i % KEYS), i) {
                assert!(prev < i, "producer {p}: {i} after {prev} for one key");
            }
        }
    }
}

#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_handler_gets_conflated_batches() {
    use ringbatch::AsyncBatch;

    let batches = Batches::default();
    let sink = Arc::clone(&batches);
    let batcher = Batcher::builder()
        .max_in_flight(2)
        .linger(Linger::Fixed(Duration::from_secs(30)))
        .conflate_by(|quote: &Quote| quote.0)
        .async_handler_fn(move |mut batch: AsyncBatch<Quote, u64>| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock().unwrap().push(batch.items().to_vec());
                tokio::task::yield_now().await;
                batch.ok_with(|quote| quote.1 * 10);
                Ok(())
            }
        })
        .build()
        .unwrap();
    let mut producer = batcher.async_producer();
    let mut tickets = Vec::new();
    for quote in [("X", 1), ("Y", 2), ("X", 3), ("Z", 4), ("Y", 5)] {
        tickets.push(producer.submit(quote).await.unwrap());
    }
    // Everything is lingering; flush it as one batch.
    batcher.flush_now();
    let mut results = Vec::new();
    for ticket in tickets {
        results.push(
            tokio::time::timeout(BOUND, ticket)
                .await
                .expect("a result within the bound"),
        );
    }
    assert!(matches!(results[0], Err(Error::Superseded)));
    assert!(matches!(results[1], Err(Error::Superseded)));
    assert_eq!(results[2].as_ref().unwrap(), &30);
    assert_eq!(results[3].as_ref().unwrap(), &40);
    assert_eq!(results[4].as_ref().unwrap(), &50);
    let stats = tokio::time::timeout(BOUND, batcher.shutdown_async())
        .await
        .unwrap();
    assert_eq!(
        *batches.lock().unwrap(),
        [vec![("X", 3), ("Y", 5), ("Z", 4)]]
    );
    assert_eq!(stats.superseded, 2);
    assert_eq!(stats.items_handled + stats.superseded, stats.accepted);
}
