//! Telemetry export: hot loops emit events, one exporter thread ships them in
//! batches.
//!
//! This is the shape `ringbatch` is built for. Several producer threads (one
//! per available core, at least two) each run a tight loop that records a
//! small telemetry [`Event`]: a timestamp, a metric id, a kind and a value.
//! Every event goes through a [`Batcher`] to an [`Exporter`], a stateful
//! [`Handler`] that runs on the batcher's drainer thread and stands in for a
//! real exporter (an OTLP client, a socket, a file):
//!
//! - It encodes each batch into one reused `Vec<u8>` frame (a small header,
//!   then fixed-size little-endian records) and writes the frame to an
//!   [`io::Write`] (here [`io::sink`], so the example measures the batching,
//!   not a disk or a network). Nothing is allocated per item or per batch.
//! - It answers every event with the byte offset of its record in the export
//!   stream, the kind of receipt a real exporter hands back.
//! - It keeps running totals (events, bytes, frames, a checksum of the metric
//!   ids) that `main` reads at the end to check delivery.
//!
//! Most events are fire-and-forget ([`Producer::push`]): they cost the producer
//! a slot claim and a store, and their result is never delivered anywhere.
//! Every [`SUBMIT_EVERY`]th event is instead sent with [`Producer::submit`] and
//! the producer waits on the [`Ticket`](ringbatch::Ticket) for its offset,
//! timing the round trip (submit, batch, encode, write, complete, wake-up)
//! into a per-thread sample buffer sized before the loop starts, so the hot
//! loop never allocates.
//!
//! At the end the example prints the throughput, how the drainer batched the
//! load (from [`Stats`]), the memory the batcher fixed at build time, and the
//! round-trip percentiles, then checks that the exporter saw every event
//! exactly once (count and metric-id checksum), that the batcher's own
//! counters agree, and that each producer's receipts came back in the order
//! it submitted them.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example telemetry
//! ```
//!
//! Two environment variables override the defaults:
//!
//! - `RINGBATCH_EVENTS`: total events over all producers (default 30 000 000);
//! - `RINGBATCH_THREADS`: producer threads (default: available cores, at
//!   least 2).

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ringbatch::{Batch, BatchError, Batcher, Handler, Stats};

/// Default total number of events, over all producers.
const DEFAULT_EVENTS: u64 = 30_000_000;
/// One event in this many is submitted with a ticket and waited for.
const SUBMIT_EVERY: u64 = 64;
/// Slots per lane.
const CAPACITY: usize = 4096;
/// Most events per batch (and per exported frame).
const MAX_BATCH: usize = 512;
/// Distinct metric ids the producers cycle through.
const METRICS: u32 = 1000;

/// What a metric measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One telemetry event: small, `Copy`, no heap data.
#[derive(Debug, Clone, Copy)]
struct Event {
    /// Nanoseconds since the run started.
    timestamp_ns: u64,
    /// Which metric.
    metric: u32,
    /// What kind of metric.
    kind: Kind,
    /// The measurement.
    value: f64,
}

/// Bytes of one encoded record: timestamp, metric id, kind, value.
const RECORD_BYTES: usize = 8 + 4 + 1 + 8;
/// Bytes of a frame header: magic, record count, frame sequence number.
const HEADER_BYTES: usize = 4 + 4 + 8;
/// Frame magic.
const MAGIC: &[u8; 4] = b"TLM1";

impl Event {
    /// Appends the event's record to `out` (little-endian, fixed size).
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp_ns.to_le_bytes());
        out.extend_from_slice(&self.metric.to_le_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.value.to_le_bytes());
    }
}

/// The exporter's running totals, shared with `main`.
///
/// The exporter itself is moved into the batcher and not handed back, so it
/// publishes its totals here once per frame (single writer, read after
/// shutdown has joined the drainer).
#[derive(Debug, Default)]
struct ExportTotals {
    events: AtomicU64,
    frames: AtomicU64,
    bytes: AtomicU64,
    /// Wrapping sum of every exported metric id.
    metric_sum: AtomicU64,
}

/// A simulated exporter: frames each batch into a reused buffer, writes it
/// out, and answers every event with its record's byte offset in the stream.
struct Exporter<W> {
    out: W,
    /// The frame being built; cleared, never shrunk, between batches.
    frame: Vec<u8>,
    /// Bytes written to `out` so far (the next frame's offset).
    offset: u64,
    frames: u64,
    events: u64,
    metric_sum: u64,
    totals: Arc<ExportTotals>,
}

impl<W: Write> Exporter<W> {
    fn new(out: W, totals: Arc<ExportTotals>) -> Self {
        Self {
            out,
            frame: Vec::with_capacity(HEADER_BYTES + MAX_BATCH * RECORD_BYTES),
            offset: 0,
            frames: 0,
            events: 0,
            metric_sum: 0,
            totals,
        }
    }
}

impl<W: Write + Send + 'static> Handler<Event, u64> for Exporter<W> {
    fn handle(&mut self, batch: &mut Batch<'_, Event, u64>) -> Result<(), BatchError> {
        // Encode the whole batch into one frame.
        let count = u32::try_from(batch.len()).expect("a batch holds at most MAX_BATCH events");
        self.frame.clear();
        self.frame.extend_from_slice(MAGIC);
        self.frame.extend_from_slice(&count.to_le_bytes());
        self.frame.extend_from_slice(&self.frames.to_le_bytes());
        let mut metric_sum = 0u64;
        for event in batch.iter() {
            event.encode(&mut self.frame);
            metric_sum = metric_sum.wrapping_add(u64::from(event.metric));
        }

        // Ship it. An error here fails every event of the batch: their
        // tickets report `Error::BatchFailed`.
        self.out.write_all(&self.frame)?;

        // Only now that the frame is out, answer each event with its offset.
        let mut next = self.offset + HEADER_BYTES as u64;
        batch.complete_with(|_| {
            let offset = next;
            next += RECORD_BYTES as u64;
            Ok::<_, std::convert::Infallible>(offset)
        });

        self.offset += self.frame.len() as u64;
        self.frames += 1;
        self.events += u64::from(count);
        self.metric_sum = self.metric_sum.wrapping_add(metric_sum);
        let totals = &self.totals;
        totals.events.store(self.events, Ordering::Relaxed);
        totals.frames.store(self.frames, Ordering::Relaxed);
        totals.bytes.store(self.offset, Ordering::Relaxed);
        totals.metric_sum.store(self.metric_sum, Ordering::Relaxed);
        Ok(())
    }
}

/// What one producer thread reports back.
struct ProducerReport {
    events: u64,
    /// Wrapping sum of the metric ids it emitted.
    metric_sum: u64,
    /// Round trips of its submitted events, in nanoseconds.
    round_trips_ns: Vec<u64>,
}

/// A tiny xorshift generator, so that values vary without a dependency.
struct XorShift(u64);

impl XorShift {
    #[inline]
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// The hot loop of producer `id`: emits `events` events, pushing most of
/// them and submitting every `SUBMIT_EVERY`th with a ticket.
fn produce(
    batcher: &Batcher<Event, u64>,
    id: usize,
    events: u64,
    epoch: Instant,
) -> ProducerReport {
    // Made on this thread, so it takes this core's lane.
    let producer = batcher.producer();
    // Sized up front: the loop below never grows it.
    let mut round_trips_ns = Vec::with_capacity(events.div_ceil(SUBMIT_EVERY) as usize);
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1));
    let mut metric_sum = 0u64;
    let mut last_receipt: Option<u64> = None;

    for i in 0..events {
        let metric = (i % u64::from(METRICS)) as u32;
        let kind = match metric % 3 {
            0 => Kind::Counter,
            1 => Kind::Gauge,
            _ => Kind::Histogram,
        };
        let event = Event {
            timestamp_ns: epoch.elapsed().as_nanos() as u64,
            metric,
            kind,
            value: (rng.next() >> 11) as f64 / (1u64 << 53) as f64,
        };
        metric_sum = metric_sum.wrapping_add(u64::from(metric));

        if i % SUBMIT_EVERY == SUBMIT_EVERY - 1 {
            let sent = Instant::now();
            let receipt = producer
                .submit(event)
                .expect("the batcher stays open while producers run")
                .wait()
                .expect("the exporter answers every event");
            round_trips_ns.push(sent.elapsed().as_nanos() as u64);
            // One producer's events reach the exporter in order, so its
            // receipts (stream offsets) only grow.
            assert!(
                last_receipt.is_none_or(|last| receipt > last),
                "producer {id}: receipt {receipt} after {last_receipt:?}"
            );
            last_receipt = Some(receipt);
        } else {
            producer
                .push(event)
                .expect("the batcher stays open while producers run");
        }
    }

    ProducerReport {
        events,
        metric_sum,
        round_trips_ns,
    }
}

/// Reads a positive integer from the environment variable `name`.
fn env_override(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    match raw.trim().parse::<u64>() {
        Ok(n) if n > 0 => Some(n),
        _ => panic!("{name} must be a positive integer, got {raw:?}"),
    }
}

/// The `q` quantile of `sorted` (nearest rank).
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1e3)
}

fn main() {
    let threads = env_override("RINGBATCH_THREADS").map_or_else(
        || {
            thread::available_parallelism()
                .map_or(2, std::num::NonZeroUsize::get)
                .max(2)
        },
        |n| n as usize,
    );
    let total_events = env_override("RINGBATCH_EVENTS").unwrap_or(DEFAULT_EVENTS);

    let totals = Arc::new(ExportTotals::default());
    let batcher = Batcher::builder()
        .capacity(CAPACITY)
        .max_batch(MAX_BATCH)
        .handler(Exporter::new(io::sink(), Arc::clone(&totals)))
        .build()
        .expect("valid batcher settings");

    println!(
        "telemetry: {threads} producers -> {} lanes -> 1 exporter; {total_events} events, \
         every {SUBMIT_EVERY}th waited for",
        batcher.lanes()
    );

    // Split the events as evenly as possible over the producers.
    let share = |id: usize| {
        let (base, extra) = (total_events / threads as u64, total_events % threads as u64);
        base + u64::from((id as u64) < extra)
    };

    let epoch = Instant::now();
    let reports: Vec<ProducerReport> = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|id| {
                let batcher = &batcher;
                thread::Builder::new()
                    .name(format!("producer-{id}"))
                    .spawn_scoped(s, move || produce(batcher, id, share(id), epoch))
                    .expect("spawn a producer thread")
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a producer panicked"))
            .collect()
    });
    // Every event pushed so far is handled once `flush` returns.
    batcher.flush();
    let elapsed = epoch.elapsed();
    let stats: Stats = batcher.shutdown();

    let events: u64 = reports.iter().map(|r| r.events).sum();
    let expected_metric_sum = reports
        .iter()
        .fold(0u64, |sum, r| sum.wrapping_add(r.metric_sum));
    let mut round_trips: Vec<u64> = reports.into_iter().flat_map(|r| r.round_trips_ns).collect();
    round_trips.sort_unstable();

    print_report(events, elapsed, &stats, &totals, &round_trips);

    // Exactly once: the exporter saw every event, no more, no fewer, and the
    // same metric ids the producers emitted; the batcher's counters agree.
    let exported = totals.events.load(Ordering::Relaxed);
    assert_eq!(exported, events, "exporter count != events emitted");
    assert_eq!(
        totals.metric_sum.load(Ordering::Relaxed),
        expected_metric_sum,
        "exporter metric-id checksum != producers' checksum"
    );
    assert_eq!(stats.accepted, events, "batcher accepted != events emitted");
    assert_eq!(
        stats.items_handled, events,
        "batcher handled != events emitted"
    );
    assert_eq!(
        stats.rejected + stats.dropped + stats.refused_closed,
        0,
        "no event may be refused or dropped under Backpressure::Block"
    );
    assert_eq!(stats.batch_errors + stats.handler_panics, 0);
    assert_eq!(totals.frames.load(Ordering::Relaxed), stats.batches);
    println!(
        "check: exporter received {exported} of {events} events exactly once \
         (count, metric-id checksum and batcher stats agree; per-producer receipts in order)"
    );
}

fn print_report(
    events: u64,
    elapsed: Duration,
    stats: &Stats,
    totals: &ExportTotals,
    round_trips: &[u64],
) {
    let secs = elapsed.as_secs_f64();
    let bytes = totals.bytes.load(Ordering::Relaxed);
    println!("events:       {events}");
    println!("elapsed:      {secs:.3} s");
    println!("throughput:   {:.2} M events/s", events as f64 / secs / 1e6);
    println!(
        "exported:     {:.1} MiB in {} frames",
        bytes as f64 / (1024.0 * 1024.0),
        totals.frames.load(Ordering::Relaxed)
    );
    println!(
        "batches:      {} (mean {:.1}, max {} items; max_batch {MAX_BATCH})",
        stats.batches,
        stats.mean_batch_items(),
        stats.max_batch_items
    );
    let d = &stats.dispatched;
    println!(
        "dispatched:   {} full, {} lanes idle, {} flush, {} shutdown",
        d.full, d.lanes_idle, d.flush, d.shutdown
    );
    println!(
        "memory:       {} bytes ({:.1} KiB, fixed at build)",
        stats.memory_bytes,
        stats.memory_bytes as f64 / 1024.0
    );
    if round_trips.is_empty() {
        println!("round trip:   no submitted events to time");
        return;
    }
    println!(
        "round trip:   {} samples, p50 {}, p99 {}, max {}",
        round_trips.len(),
        micros(quantile(round_trips, 0.50)),
        micros(quantile(round_trips, 0.99)),
        micros(round_trips.last().copied().unwrap_or(0)),
    );
}
