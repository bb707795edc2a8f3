//! Async tasks submitting events to an async sink that behaves like a network
//! exporter, through a [`Batcher`] with an [`AsyncHandler`].
//!
//! What it shows:
//!
//! - **An async sink.** `NetworkExporter` implements [`AsyncHandler`]: each
//!   batch "goes over the network" as one `tokio::time::sleep` of a fixed
//!   `BATCH_LATENCY` plus `PER_EVENT` per event, and only then answers
//!   every event with an acknowledgement id. The drainer thread keeps
//!   assembling the next batch while up to `MAX_IN_FLIGHT` batches are out
//!   at once (`max_in_flight(4)`); when all of them are out, the lanes fill and
//!   producers wait for room asynchronously (their tasks return `Pending`,
//!   no thread blocks).
//! - **Async producers.** `TASKS` tasks on a multi-thread tokio runtime each
//!   take an [`AsyncProducer`](ringbatch::AsyncProducer). Each round, a task
//!   sends `PUSHES_PER_ROUND` events fire-and-forget (`push(..).await`) and
//!   one with `call(..).await`, which resolves to that event's ack; the
//!   time from the call to the ack is one round-trip sample.
//! - **Flush and shutdown from async code.** After the tasks finish, `main`
//!   pushes one final "end of stream" event per task and awaits
//!   [`Batcher::flush_async`]: once it resolves, the exporter has every event
//!   so far. [`Batcher::shutdown_async`] then drains, waits for the batches in
//!   flight, stops the drainer thread and the worker tasks, and returns the
//!   final [`Stats`], all without blocking a runtime thread.
//! - **Exactly once.** The simulated collector marks each event id it
//!   receives in a table with one counter per id; at the end every counter
//!   must be 1, and the collector's counts, the acks it issued, the batcher's
//!   counters and the number of events sent must agree. It also checks that
//!   no more than `max_in_flight` requests ever ran at once.
//!
//! It prints a few acks, the round-trip p50/p99/max, and the batching stats
//! (batches, mean batch size, `batches_in_flight` sampled mid-run, dispatch
//! reasons). `Stats::batches_in_flight` counts the batches handed to the
//! worker tasks and not finished, including those queued for a free worker
//! (with the default pool, one), so a sample can read `max_in_flight + 1`
//! while at most `max_in_flight` run.
//!
//! Tokio's timer has a 1 ms resolution, so a sleep of a few hundred
//! microseconds really lasts until a later tick (1 to 2 ms): the example
//! prints the mean time a batch spent in the exporter, the network cost the
//! run actually simulated.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example async_sink
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ringbatch::{AsyncBatch, AsyncHandler, BatchError, Batcher, Error, Stats};
use tokio::task::JoinSet;

/// Producer tasks.
const TASKS: u64 = 32;
/// Rounds per task: each sends `PUSHES_PER_ROUND` events plus one submitted.
const ROUNDS: u64 = 300;
/// Fire-and-forget events per round, before the awaited one.
const PUSHES_PER_ROUND: u64 = 63;
/// Events per task.
const EVENTS_PER_TASK: u64 = ROUNDS * (PUSHES_PER_ROUND + 1);
/// Events sent by the tasks, plus one end-of-stream event per task.
const TOTAL_EVENTS: u64 = TASKS * EVENTS_PER_TASK + TASKS;
/// Batches the exporter may have in flight at once.
const MAX_IN_FLIGHT: usize = 4;
/// Most events per batch.
const MAX_BATCH: usize = 512;
/// Slots per lane.
const CAPACITY: usize = 1024;
/// The fixed cost of sending one batch.
const BATCH_LATENCY: Duration = Duration::from_micros(200);
/// The extra cost of each event in a batch.
const PER_EVENT: Duration = Duration::from_nanos(500);
/// How often `main` samples the batcher's stats while the tasks run.
const SAMPLE_EVERY: Duration = Duration::from_millis(5);

/// One event: an id unique over the run and the task that sent it.
#[derive(Debug, Clone, Copy)]
struct Event {
    id: u64,
    source: u32,
}

impl Event {
    /// Event `seq` of task `source`; ids are dense in `0..TOTAL_EVENTS`.
    fn new(source: u64, seq: u64) -> Self {
        Self {
            id: source * EVENTS_PER_TASK + seq,
            source: source as u32,
        }
    }

    /// The end-of-stream event of task `source` (ids after the tasks' own).
    fn end_of_stream(source: u64) -> Self {
        Self {
            id: TASKS * EVENTS_PER_TASK + source,
            source: source as u32,
        }
    }
}

/// The remote collector's side of the simulation: it hands out ack ids and
/// records what arrived. Shared between the exporter (owned by the batcher)
/// and `main`, which reads it after shutdown.
struct Collector {
    /// The next ack id to hand out.
    next_ack: AtomicU64,
    /// Events received.
    events: AtomicU64,
    /// Requests (batches) received.
    requests: AtomicU64,
    /// Nanoseconds the exporter spent per request, summed.
    busy_ns: AtomicU64,
    /// Requests being handled right now, and the most at once.
    active: AtomicU64,
    peak_active: AtomicU64,
    /// How many times each event id arrived (must end as all ones).
    seen: Box<[AtomicU8]>,
    /// Events received from each source task.
    per_source: Box<[AtomicU64]>,
}

impl Collector {
    fn new(events: u64) -> Self {
        Self {
            next_ack: AtomicU64::new(1),
            events: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            active: AtomicU64::new(0),
            peak_active: AtomicU64::new(0),
            seen: (0..events).map(|_| AtomicU8::new(0)).collect(),
            per_source: (0..TASKS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// A simulated network exporter: each batch is one request to the remote
/// collector, which answers every event with an acknowledgement id.
///
/// Up to `MAX_IN_FLIGHT` batches run at once, so `handle` takes `&self` and
/// the state it touches is atomics.
struct NetworkExporter {
    collector: Arc<Collector>,
}

impl AsyncHandler<Event, u64> for NetworkExporter {
    async fn handle(&self, mut batch: AsyncBatch<Event, u64>) -> Result<(), BatchError> {
        let started = Instant::now();
        let collector = &*self.collector;
        let active = collector.active.fetch_add(1, Ordering::Relaxed) + 1;
        collector.peak_active.fetch_max(active, Ordering::Relaxed);
        let n = batch.len();
        for event in batch.items() {
            collector.seen[event.id as usize].fetch_add(1, Ordering::Relaxed);
            collector.per_source[event.source as usize].fetch_add(1, Ordering::Relaxed);
        }
        // The request: a fixed round trip plus the time to ship the payload.
        let cost = BATCH_LATENCY + PER_EVENT * n as u32;
        tokio::time::sleep(cost).await;
        // The collector acknowledged the request: a run of ack ids, one per
        // event, in the batch's order.
        let mut ack = collector.next_ack.fetch_add(n as u64, Ordering::Relaxed);
        batch.complete_with(|_| {
            let id = ack;
            ack += 1;
            Ok::<_, Error>(id)
        });
        collector.events.fetch_add(n as u64, Ordering::Relaxed);
        collector.requests.fetch_add(1, Ordering::Relaxed);
        collector.active.fetch_sub(1, Ordering::Relaxed);
        collector
            .busy_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// What one producer task reports back.
struct TaskReport {
    source: u64,
    /// Round trips of its submitted events, in nanoseconds.
    round_trips_ns: Vec<u64>,
    /// Its first few (event id, ack id) pairs.
    sample_acks: Vec<(u64, u64)>,
}

/// Producer task `source`: `ROUNDS` rounds of pushes and one awaited submit.
async fn produce(mut producer: ringbatch::AsyncProducer<Event, u64>, source: u64) -> TaskReport {
    let mut round_trips_ns = Vec::with_capacity(ROUNDS as usize);
    let mut sample_acks = Vec::new();
    let mut seq = 0;
    for _ in 0..ROUNDS {
        for _ in 0..PUSHES_PER_ROUND {
            producer
                .push(Event::new(source, seq))
                .await
                .expect("the batcher stays open while tasks run");
            seq += 1;
        }
        let event = Event::new(source, seq);
        seq += 1;
        let sent = Instant::now();
        let ack = producer
            .call(event)
            .await
            .expect("the exporter acknowledges every event");
        round_trips_ns.push(sent.elapsed().as_nanos() as u64);
        if sample_acks.len() < 3 {
            sample_acks.push((event.id, ack));
        }
    }
    TaskReport {
        source,
        round_trips_ns,
        sample_acks,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let collector = Arc::new(Collector::new(TOTAL_EVENTS));
    let batcher = Batcher::builder()
        .capacity(CAPACITY)
        .max_batch(MAX_BATCH)
        .max_in_flight(MAX_IN_FLIGHT)
        // Built inside the runtime: the batches run on its worker threads.
        .async_handler(NetworkExporter {
            collector: Arc::clone(&collector),
        })
        .build()
        .expect("valid batcher settings");

    println!(
        "async_sink: {TASKS} tasks -> {} lanes -> exporter ({} µs + {} ns/event per batch, \
         max_in_flight {MAX_IN_FLIGHT}, max_batch {MAX_BATCH}); {} events, every {}th awaited",
        batcher.lanes(),
        BATCH_LATENCY.as_micros(),
        PER_EVENT.as_nanos(),
        TASKS * EVENTS_PER_TASK,
        PUSHES_PER_ROUND + 1,
    );

    let epoch = Instant::now();
    let mut tasks = JoinSet::new();
    for source in 0..TASKS {
        tasks.spawn(produce(batcher.async_producer(), source));
    }

    // Wait for the tasks, sampling the batcher's stats meanwhile.
    let mut reports = Vec::with_capacity(TASKS as usize);
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    let mut peak_in_flight = 0;
    let mut mid_run: Option<(Duration, Stats)> = None;
    while !tasks.is_empty() {
        tokio::select! {
            joined = tasks.join_next() => {
                reports.push(joined.expect("the set is not empty").expect("a task panicked"));
            }
            _ = ticker.tick() => {
                let stats = batcher.stats();
                peak_in_flight = peak_in_flight.max(stats.batches_in_flight);
                // Keep the first sample taken with the exporter busy.
                if mid_run.is_none() && stats.batches_in_flight > 0 && stats.batches > 100 {
                    mid_run = Some((epoch.elapsed(), stats));
                }
            }
        }
    }

    // One last event per task, fire-and-forget, then wait until the exporter
    // has everything sent so far.
    let mut producer = batcher.async_producer();
    for source in 0..TASKS {
        producer
            .push(Event::end_of_stream(source))
            .await
            .expect("the batcher is still open");
    }
    batcher.flush_async().await;
    let elapsed = epoch.elapsed();
    let exported_at_flush = collector.events.load(Ordering::Relaxed);
    drop(producer);

    // Drain, wait for the batches in flight, stop the drainer thread and the
    // worker tasks.
    let stats = batcher.shutdown_async().await;

    reports.sort_by_key(|r| r.source);
    let mut round_trips: Vec<u64> = reports
        .iter()
        .flat_map(|r| r.round_trips_ns.iter().copied())
        .collect();
    round_trips.sort_unstable();
    print_report(
        elapsed,
        &stats,
        &collector,
        &round_trips,
        &reports[0].sample_acks,
        peak_in_flight,
        mid_run,
    );

    // Exactly once: every event id arrived once, no more, no fewer.
    let duplicates = collector
        .seen
        .iter()
        .filter(|c| c.load(Ordering::Relaxed) > 1)
        .count();
    let missing = collector
        .seen
        .iter()
        .filter(|c| c.load(Ordering::Relaxed) == 0)
        .count();
    assert_eq!(
        (missing, duplicates),
        (0, 0),
        "(missing, duplicated) event ids"
    );
    assert_eq!(
        exported_at_flush, TOTAL_EVENTS,
        "flush_async resolved before the exporter had every event"
    );
    let exported = collector.events.load(Ordering::Relaxed);
    assert_eq!(exported, TOTAL_EVENTS, "exporter count != events sent");
    assert_eq!(stats.accepted, TOTAL_EVENTS);
    assert_eq!(stats.items_handled, TOTAL_EVENTS);
    assert_eq!(stats.rejected + stats.dropped + stats.refused_closed, 0);
    assert_eq!(stats.batch_errors + stats.handler_panics, 0);
    assert_eq!(stats.batches, collector.requests.load(Ordering::Relaxed));
    assert_eq!(
        stats.batches_in_flight, 0,
        "shutdown left batches in flight"
    );
    // Ack ids are handed out in runs, one per event: the last one issued
    // says how many events were acknowledged.
    assert_eq!(
        collector.next_ack.load(Ordering::Relaxed) - 1,
        TOTAL_EVENTS,
        "acks issued != events sent"
    );
    for (source, count) in collector.per_source.iter().enumerate() {
        let count = count.load(Ordering::Relaxed);
        assert_eq!(count, EVENTS_PER_TASK + 1, "events from task {source}");
    }
    assert!(
        collector.peak_active.load(Ordering::Relaxed) <= MAX_IN_FLIGHT as u64,
        "more requests at once than max_in_flight"
    );
    println!(
        "check:        exporter received each of the {TOTAL_EVENTS} events exactly once \
         (per-id table, counts and batcher stats agree)"
    );
}

/// The `q` quantile of `sorted` (nearest rank).
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn millis(ns: u64) -> String {
    format!("{:.2} ms", ns as f64 / 1e6)
}

fn print_report(
    elapsed: Duration,
    stats: &Stats,
    collector: &Collector,
    round_trips: &[u64],
    sample_acks: &[(u64, u64)],
    peak_in_flight: u64,
    mid_run: Option<(Duration, Stats)>,
) {
    let secs = elapsed.as_secs_f64();
    println!("events:       {}", stats.items_handled);
    println!("elapsed:      {secs:.3} s");
    println!(
        "throughput:   {:.0} k events/s",
        stats.items_handled as f64 / secs / 1e3
    );
    let acks: Vec<String> = sample_acks
        .iter()
        .map(|(event, ack)| format!("event {event} -> ack {ack}"))
        .collect();
    println!("task 0 acks:  {}", acks.join(", "));
    println!(
        "round trip:   {} awaited submits, p50 {}, p99 {}, max {}",
        round_trips.len(),
        millis(quantile(round_trips, 0.50)),
        millis(quantile(round_trips, 0.99)),
        millis(round_trips.last().copied().unwrap_or(0)),
    );
    let requests = collector.requests.load(Ordering::Relaxed).max(1);
    println!(
        "exporter:     {} requests, mean {} in the sink per batch, at most {} at once",
        requests,
        millis(collector.busy_ns.load(Ordering::Relaxed) / requests),
        collector.peak_active.load(Ordering::Relaxed),
    );
    println!(
        "batches:      {} (mean {:.1}, max {} events)",
        stats.batches,
        stats.mean_batch_items(),
        stats.max_batch_items
    );
    match mid_run {
        // `batches_in_flight` counts batches handed to the workers and not
        // finished: the ones running plus one queued for a worker, so it can
        // reach `max_in_flight + 1` (the pool size).
        Some((at, sample)) => println!(
            "in flight:    batches_in_flight {} at {:.0} ms (pool {} buffers, {} free; \
             {} batches dispatched, {} events in lanes); peak sampled {peak_in_flight}",
            sample.batches_in_flight,
            at.as_secs_f64() * 1e3,
            sample.pool_size,
            sample.pool_free,
            sample.batches,
            sample.in_lanes(),
        ),
        None => println!("in flight:    no busy sample taken; peak sampled {peak_in_flight}"),
    }
    let d = &stats.dispatched;
    println!(
        "dispatched:   {} full, {} lanes idle, {} flush, {} shutdown",
        d.full, d.lanes_idle, d.flush, d.shutdown
    );
}
