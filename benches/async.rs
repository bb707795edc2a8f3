//! ringbatch's async facade against the idiomatic tokio pattern (an mpsc
//! request channel and a oneshot reply per request), in one run.
//!
//! Every system runs on its own multi-thread tokio runtime with
//! [`WORKER_THREADS`] worker threads, built once per bench function together
//! with the system's long-lived parts (ringbatch's drainer thread and, with an
//! async handler, its worker tasks; the tokio server task), and stopped and
//! joined before the next function starts. The requesting tasks are spawned
//! on that runtime (criterion's `async_tokio` feature is not enabled in this
//! crate, so each measurement is `iter_custom` with `Runtime::block_on` of
//! the spawned tasks): they run on worker threads, as a service's tasks do.
//!
//! The systems:
//!
//! - `ringbatch`: a [`Batcher`] with a blocking `handler_fn` that completes
//!   each item `x` with `x + 1` on the drainer thread (the low-latency setup);
//!   tasks use an [`AsyncProducer`].
//! - `ringbatch_on_runtime`: the same with `drain_on_runtime(true)`: the
//!   drainer is a task on the runtime, not a thread of its own.
//! - `ringbatch_inline`: the same as `ringbatch` with
//!   `inline_when_idle(true)`: a submission that finds the drainer asleep
//!   runs the batch in the submitting task.
//! - `ringbatch_async_handler`: the same as `ringbatch` with an
//!   `async_handler_fn` (default `max_in_flight`, 4): the drainer hands each
//!   batch to a worker task on the runtime, which completes it.
//! - `ringbatch_async_on_runtime`: the async handler with the drainer as a
//!   task.
//! - `tokio_mpsc`: a server task receives `(x, oneshot::Sender<u64>)` from a
//!   `tokio::sync::mpsc::channel(`[`CHANNEL_CAPACITY`]`)`, takes up to
//!   [`MAX_BATCH`] requests at a time with `recv_many` into a reused `Vec`,
//!   and answers each with `x + 1`. The server stops when every sender is
//!   dropped.
//!
//! Every reply is checked (`== x + 1`).
//!
//! # `async_roundtrip`: one request at a time
//!
//! One task sends a value and awaits its reply before sending the next; one
//! iteration is one round trip (ringbatch: `producer.call(x).await` on a
//! one-lane batcher).
//!
//! # `async_throughput`: pipelined requests from four tasks
//!
//! [`TASKS`] tasks each send [`ITEMS_PER_TASK`] requests per iteration and
//! await every reply, keeping up to [`WINDOW`] requests outstanding each: a
//! task awaits its oldest reply before sending more (ringbatch: `submit` and
//! await the tickets in order; tokio: the oneshot receivers in order). The
//! ringbatch batchers have one lane per task. Throughput is in requests.
//!
//! # Percentiles
//!
//! After the criterion groups, a table of round-trip percentiles: each system
//! on a fresh runtime, [`WARMUP`] round trips, then [`SAMPLES`] individually
//! timed round trips (one task, one at a time, as in `async_roundtrip`)
//! recorded in an HDR histogram. Under `cargo test --benches` (criterion's
//! test mode) the table is made from 1,000 round trips, as a smoke test;
//! with `--list` it is skipped.
//!
//! # Paired throughput
//!
//! Last, `async_throughput` once more for the two systems its target
//! compares, `ringbatch_async_on_runtime` and `tokio_mpsc`, in
//! [`PAIRED_ROUNDS`] rounds that alternate between them (and which goes
//! first), [`PAIRED_ITERATIONS`] iterations per system per round: a table of
//! each round's times and ratio, then the medians. The machine these ran on
//! moves between a fast and a slow state for minutes at a time, and
//! criterion measures one system after the other, so its two medians can
//! come from different states; a round's two times are seconds apart. In
//! test mode, three rounds of one iteration.
//!
//! ```text
//! cargo bench --bench async              # everything
//! cargo bench --bench async -- paired    # no criterion group matches: the two tables only
//! ```

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use hdrhistogram::Histogram;
use ringbatch::{AsyncBatch, AsyncProducer, Batch, Batcher, Error, Ticket};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Worker threads of every runtime.
const WORKER_THREADS: usize = 2;
/// Capacity of the tokio request channel, and slots per ringbatch lane.
const CHANNEL_CAPACITY: usize = 4096;
/// Most requests per batch, for ringbatch and the tokio server alike.
const MAX_BATCH: usize = 256;
/// Requesting tasks in `async_throughput`.
const TASKS: usize = 4;
/// Requests per task per `async_throughput` iteration.
const ITEMS_PER_TASK: u64 = 8192;
/// Most requests a task has outstanding in `async_throughput`.
const WINDOW: usize = 256;
/// Round trips timed for the percentile table.
const SAMPLES: u64 = 100_000;
/// Round trips run before the timed ones.
const WARMUP: u64 = 10_000;
/// Round trips timed for the table in criterion's test mode.
const TEST_SAMPLES: u64 = 1_000;
/// Rounds of the paired throughput table.
const PAIRED_ROUNDS: usize = 21;
/// `async_throughput` iterations per system per round of the paired table.
const PAIRED_ITERATIONS: u64 = 30;

/// A request to the tokio server: the value and where to send the reply.
type Request = (u64, oneshot::Sender<u64>);

/// Which system a [`Rig`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ringbatch,
    /// The same, with the drainer as a task on the runtime.
    RingbatchOnRuntime,
    /// The same as `Ringbatch`, with `inline_when_idle`.
    RingbatchInline,
    RingbatchAsyncHandler,
    /// The same, with the drainer as a task on the runtime.
    RingbatchAsyncOnRuntime,
    TokioMpsc,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Ringbatch,
        Kind::RingbatchOnRuntime,
        Kind::RingbatchInline,
        Kind::RingbatchAsyncHandler,
        Kind::RingbatchAsyncOnRuntime,
        Kind::TokioMpsc,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Ringbatch => "ringbatch",
            Kind::RingbatchOnRuntime => "ringbatch_on_runtime",
            Kind::RingbatchInline => "ringbatch_inline",
            Kind::RingbatchAsyncHandler => "ringbatch_async_handler",
            Kind::RingbatchAsyncOnRuntime => "ringbatch_async_on_runtime",
            Kind::TokioMpsc => "tokio_mpsc",
        }
    }
}

/// The long-lived side of a system: what serves the requests.
enum Server {
    Ringbatch(Batcher<u64, u64>),
    Tokio {
        requests: mpsc::Sender<Request>,
        task: JoinHandle<()>,
    },
}

/// A system on its own runtime.
struct Rig {
    runtime: Runtime,
    server: Server,
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The blocking handler: answers each item `x` with `x + 1`.
fn plus_one(batch: &mut Batch<'_, u64, u64>) -> Result<(), ringbatch::BatchError> {
    batch.complete_with(|x| Ok::<_, Error>(x + 1));
    Ok(())
}

/// The tokio server: batches of up to `MAX_BATCH` requests, each answered
/// with `x + 1`, until every sender is gone.
async fn serve(mut requests: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        for (x, reply) in batch.drain(..) {
            // The requester may have gone; nothing to do then.
            let _ = reply.send(x + 1);
        }
    }
}

impl Rig {
    /// Starts `kind` on a fresh runtime; ringbatch batchers get `lanes` lanes.
    fn new(kind: Kind, lanes: usize) -> Self {
        let runtime = runtime();
        let builder = || {
            Batcher::builder()
                .lanes(lanes)
                .capacity(CHANNEL_CAPACITY)
                .max_batch(MAX_BATCH)
        };
        let server = match kind {
            Kind::Ringbatch => Server::Ringbatch(
                builder()
                    .handler_fn(plus_one)
                    .build()
                    .expect("valid settings"),
            ),
            Kind::RingbatchOnRuntime => Server::Ringbatch(
                builder()
                    .runtime(runtime.handle().clone())
                    .drain_on_runtime(true)
                    .handler_fn(plus_one)
                    .build()
                    .expect("valid settings"),
            ),
            Kind::RingbatchInline => Server::Ringbatch(
                builder()
                    .inline_when_idle(true)
                    .handler_fn(plus_one)
                    .build()
                    .expect("valid settings"),
            ),
            Kind::RingbatchAsyncHandler | Kind::RingbatchAsyncOnRuntime => Server::Ringbatch(
                builder()
                    .runtime(runtime.handle().clone())
                    .drain_on_runtime(kind == Kind::RingbatchAsyncOnRuntime)
                    .async_handler_fn(|mut batch: AsyncBatch<u64, u64>| async move {
                        batch.complete_with(|x| Ok::<_, Error>(x + 1));
                        Ok(())
                    })
                    .build()
                    .expect("valid settings"),
            ),
            Kind::TokioMpsc => {
                let (requests, receiver) = mpsc::channel(CHANNEL_CAPACITY);
                let task = runtime.spawn(serve(receiver));
                Server::Tokio { requests, task }
            }
        };
        Self { runtime, server }
    }

    /// Runs `client` as a task on the rig's runtime and returns its output.
    fn run<F>(&self, client: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime
            .block_on(self.runtime.spawn(client))
            .expect("the client task panicked")
    }

    /// `iters` round trips, one at a time, from one task; their total time.
    fn round_trips(&self, iters: u64) -> Duration {
        match &self.server {
            Server::Ringbatch(batcher) => {
                let mut producer = batcher.async_producer();
                self.run(async move {
                    let start = Instant::now();
                    for x in 0..iters {
                        let reply = producer.call(x).await.expect("a reply");
                        assert_eq!(black_box(reply), x + 1);
                    }
                    start.elapsed()
                })
            }
            Server::Tokio { requests, .. } => {
                let requests = requests.clone();
                self.run(async move {
                    let start = Instant::now();
                    for x in 0..iters {
                        let reply = tokio_call(&requests, x).await;
                        assert_eq!(black_box(reply), x + 1);
                    }
                    start.elapsed()
                })
            }
        }
    }

    /// `n` round trips, one at a time, from one task, each timed into a
    /// histogram (nanoseconds).
    fn sample_round_trips(&self, n: u64) -> Histogram<u64> {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
            .expect("valid histogram bounds");
        match &self.server {
            Server::Ringbatch(batcher) => {
                let mut producer = batcher.async_producer();
                self.run(async move {
                    for x in 0..n {
                        let start = Instant::now();
                        let reply = producer.call(x).await.expect("a reply");
                        let ns = start.elapsed().as_nanos() as u64;
                        assert_eq!(reply, x + 1);
                        hist.saturating_record(ns);
                    }
                    hist
                })
            }
            Server::Tokio { requests, .. } => {
                let requests = requests.clone();
                self.run(async move {
                    for x in 0..n {
                        let start = Instant::now();
                        let reply = tokio_call(&requests, x).await;
                        let ns = start.elapsed().as_nanos() as u64;
                        assert_eq!(reply, x + 1);
                        hist.saturating_record(ns);
                    }
                    hist
                })
            }
        }
    }

    /// `TASKS` tasks each send `per_task` requests, up to `WINDOW`
    /// outstanding, and await every reply; the time until the last reply.
    fn pipelined(&self, per_task: u64) -> Duration {
        match &self.server {
            Server::Ringbatch(batcher) => {
                let producers: Vec<_> = (0..TASKS).map(|_| batcher.async_producer()).collect();
                self.run(async move {
                    let start = Instant::now();
                    let tasks: Vec<_> = producers
                        .into_iter()
                        .map(|producer| tokio::spawn(ringbatch_pipelined(producer, per_task)))
                        .collect();
                    for task in tasks {
                        task.await.expect("a requesting task panicked");
                    }
                    start.elapsed()
                })
            }
            Server::Tokio { requests, .. } => {
                let requests = requests.clone();
                self.run(async move {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..TASKS)
                        .map(|_| tokio::spawn(tokio_pipelined(requests.clone(), per_task)))
                        .collect();
                    for task in tasks {
                        task.await.expect("a requesting task panicked");
                    }
                    start.elapsed()
                })
            }
        }
    }

    /// Stops the system (drainer, worker tasks or server task), then the
    /// runtime and its threads.
    fn stop(self) {
        let Rig { runtime, server } = self;
        match server {
            Server::Ringbatch(batcher) => {
                // Waits for the drainer to exit; with an async handler, also
                // for the batches on the runtime, and the workers then exit.
                let stats = runtime.block_on(batcher.shutdown_async());
                assert_eq!(stats.batches_in_flight, 0);
            }
            Server::Tokio { requests, task } => {
                drop(requests);
                runtime.block_on(task).expect("the server task panicked");
            }
        }
        runtime.shutdown_timeout(Duration::from_secs(10));
    }
}

/// One request to the tokio server and its reply.
async fn tokio_call(requests: &mpsc::Sender<Request>, x: u64) -> u64 {
    let (reply, replied) = oneshot::channel();
    requests
        .send((x, reply))
        .await
        .expect("the server is running");
    replied.await.expect("the server replies")
}

/// One `async_throughput` task on ringbatch: `submit`, awaiting the oldest
/// ticket whenever `WINDOW` are outstanding.
async fn ringbatch_pipelined(mut producer: AsyncProducer<u64, u64>, items: u64) {
    let mut window: VecDeque<(u64, Ticket<u64>)> = VecDeque::with_capacity(WINDOW);
    for x in 0..items {
        if window.len() == WINDOW {
            let (sent, ticket) = window.pop_front().expect("the window is full");
            assert_eq!(ticket.await.expect("a reply"), sent + 1);
        }
        let ticket = producer.submit(x).await.expect("the batcher is open");
        window.push_back((x, ticket));
    }
    for (sent, ticket) in window {
        assert_eq!(ticket.await.expect("a reply"), sent + 1);
    }
}

/// One `async_throughput` task on the tokio server: as
/// [`ringbatch_pipelined`], with a oneshot receiver per request.
async fn tokio_pipelined(requests: mpsc::Sender<Request>, items: u64) {
    let mut window: VecDeque<(u64, oneshot::Receiver<u64>)> = VecDeque::with_capacity(WINDOW);
    for x in 0..items {
        if window.len() == WINDOW {
            let (sent, replied) = window.pop_front().expect("the window is full");
            assert_eq!(replied.await.expect("a reply"), sent + 1);
        }
        let (reply, replied) = oneshot::channel();
        requests
            .send((x, reply))
            .await
            .expect("the server is running");
        window.push_back((x, replied));
    }
    for (sent, replied) in window {
        assert_eq!(replied.await.expect("a reply"), sent + 1);
    }
}

/// Applies the common settings of a group.
fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
}

fn async_roundtrip(c: &mut Criterion) {
    let mut group = c.benchmark_group("async_roundtrip");
    configure(&mut group);
    group.throughput(Throughput::Elements(1));
    for kind in Kind::ALL {
        let rig = Rig::new(kind, 1);
        group.bench_function(kind.name(), |b| {
            b.iter_custom(|iters| rig.round_trips(iters));
        });
        rig.stop();
    }
    group.finish();
}

fn async_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("async_throughput");
    configure(&mut group);
    // An iteration is tens of milliseconds: time each sample's iterations
    // as one run rather than growing the count linearly.
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(TASKS as u64 * ITEMS_PER_TASK));
    for kind in Kind::ALL {
        let rig = Rig::new(kind, TASKS);
        group.bench_function(kind.name(), |b| {
            b.iter_custom(|iters| rig.pipelined(iters * ITEMS_PER_TASK));
        });
        rig.stop();
    }
    group.finish();
}

/// Prints round-trip percentiles for every system, `samples` each.
fn percentile_table(samples: u64) {
    let rows: Vec<(Kind, Histogram<u64>)> = Kind::ALL
        .into_iter()
        .map(|kind| {
            let rig = Rig::new(kind, 1);
            rig.round_trips(WARMUP.min(samples));
            let hist = rig.sample_round_trips(samples);
            rig.stop();
            (kind, hist)
        })
        .collect();

    println!();
    println!(
        "async round trip: one task, one request at a time, {samples} each, \
         {WORKER_THREADS} worker threads"
    );
    println!();
    println!(
        "| {:<24} | {:>9} | {:>9} | {:>9} | {:>9} |",
        "system", "p50", "p99", "p99.9", "max"
    );
    println!(
        "| {:-<24} | {:->9} | {:->9} | {:->9} | {:->9} |",
        "", "", "", "", ""
    );
    for (kind, hist) in &rows {
        println!(
            "| {:<24} | {:>9} | {:>9} | {:>9} | {:>9} |",
            kind.name(),
            fmt_ns(hist.value_at_quantile(0.50)),
            fmt_ns(hist.value_at_quantile(0.99)),
            fmt_ns(hist.value_at_quantile(0.999)),
            fmt_ns(hist.max()),
        );
    }
    let tokio = &rows
        .iter()
        .find(|(kind, _)| matches!(kind, Kind::TokioMpsc))
        .expect("tokio_mpsc row")
        .1;
    println!();
    for (kind, hist) in rows
        .iter()
        .filter(|(kind, _)| !matches!(kind, Kind::TokioMpsc))
    {
        let ratio = |q: f64| hist.value_at_quantile(q) as f64 / tokio.value_at_quantile(q) as f64;
        println!(
            "{} / tokio_mpsc: p50 {:.2}x, p99 {:.2}x",
            kind.name(),
            ratio(0.50),
            ratio(0.99)
        );
    }
}

/// Prints `async_throughput` for the two systems its target compares
/// (`ringbatch_async_on_runtime` and `tokio_mpsc`), measured in `rounds`
/// alternating rounds of `iterations` iterations each, which system goes
/// first alternating too. This machine moves between a fast and a slow
/// state for minutes at a time, every system with it, and criterion times
/// one system after the other; a round's ratio compares the two within
/// seconds of each other.
fn paired_throughput(rounds: usize, iterations: u64) {
    let ringbatch = Rig::new(Kind::RingbatchAsyncOnRuntime, TASKS);
    let tokio = Rig::new(Kind::TokioMpsc, TASKS);
    let per_task = iterations * ITEMS_PER_TASK;
    let per_iteration = |d: Duration| d.as_secs_f64() * 1e3 / iterations as f64;
    // One warm-up round, not counted.
    ringbatch.pipelined(per_task);
    tokio.pipelined(per_task);
    println!();
    println!(
        "async throughput, paired: {rounds} rounds of {iterations} iterations \
         ({TASKS} tasks x {ITEMS_PER_TASK} requests) per system, alternating"
    );
    println!();
    println!(
        "| {:>5} | {:>26} | {:>10} | {:>5} |",
        "round", "ringbatch_async_on_runtime", "tokio_mpsc", "ratio"
    );
    println!("| {:->5} | {:->26} | {:->10} | {:->5} |", "", "", "", "");
    let mut rows: Vec<(f64, f64)> = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let (ours, theirs) = if round % 2 == 0 {
            let ours = ringbatch.pipelined(per_task);
            (ours, tokio.pipelined(per_task))
        } else {
            let theirs = tokio.pipelined(per_task);
            (ringbatch.pipelined(per_task), theirs)
        };
        let (ours, theirs) = (per_iteration(ours), per_iteration(theirs));
        println!(
            "| {:>5} | {:>23.3} ms | {:>7.3} ms | {:>4.2}x |",
            round + 1,
            ours,
            theirs,
            theirs / ours
        );
        rows.push((ours, theirs));
    }
    ringbatch.stop();
    tokio.stop();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratios: Vec<f64> = rows.iter().map(|&(ours, theirs)| theirs / ours).collect();
    let (low, high) = ratios.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &r| {
        (lo.min(r), hi.max(r))
    });
    println!();
    println!(
        "median per iteration: ringbatch_async_on_runtime {:.3} ms, tokio_mpsc {:.3} ms; \
         ratio median {:.2}x (lowest {:.2}x, highest {:.2}x)",
        median(rows.iter().map(|r| r.0).collect()),
        median(rows.iter().map(|r| r.1).collect()),
        median(ratios),
        low,
        high
    );
}

fn fmt_ns(ns: u64) -> String {
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    async_roundtrip(&mut criterion);
    async_throughput(&mut criterion);
    criterion.final_summary();

    // The percentile pass follows criterion's mode: `cargo bench` passes
    // `--bench`; without it (`cargo test --benches`), or with `--test`, this
    // is a smoke test.
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("--list") {
        return;
    }
    let full = has("--bench") && !has("--test");
    percentile_table(if full { SAMPLES } else { TEST_SAMPLES });
    if full {
        paired_throughput(PAIRED_ROUNDS, PAIRED_ITERATIONS);
    } else {
        paired_throughput(3, 1);
    }
}
