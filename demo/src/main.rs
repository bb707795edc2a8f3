//! The demo: adaptive batching in front of a simulated backend, under a load
//! pattern, with a live progress line, a summary table and an SVG chart.
//!
//! ```text
//! cargo run --release --bin demo
//! cargo run --release --bin demo -- --pattern spikes --adaptive off
//! cargo run --release --bin demo -- --help
//! ```
//!
//! # What runs
//!
//! - **The backend** is a [`Handler`] standing in for a shared database. A
//!   batch of `n` items costs a fixed part (the round trip), a part per item,
//!   and a contention part that grows with `n²` and with the backend's
//!   background load (other tenants): big batches hold its locks longer, and
//!   under load they collide. So the best batch size is large when the
//!   backend is idle and small when it is busy. It waits out each batch's
//!   cost (sleeping, then spinning the last stretch), answers every item
//!   with a sequence number, and reports [`LoadFeedback`]: `cpu` is the
//!   background load, `contention` the share of the batch's time lost to
//!   contention.
//! - **The load pattern** (`--pattern`: `constant`, `sine` or `sinewave`,
//!   `spikes`, `gradual`; the simulator is `ringbatch_demo::load`) sets the
//!   background load from 0 to 1 over the run, and with it the rate the
//!   producers offer (35 % of `--items` per second at load 0, all of it at
//!   load 1). `--count` ends the run once that many items are offered.
//! - **Producers** (`--producers` threads) run hot loops paced to the
//!   offered rate: most items are pushed fire-and-forget; every 32nd is
//!   submitted with a ticket, collected later without blocking the loop.
//! - **Adaptive sizing** (`--adaptive`): `load` lets the handler's feedback
//!   move the effective batch size ([`Adaptive::load`]); `latency` aims the
//!   handler time at 1 ms ([`Adaptive::latency`]); `off` keeps `--max-batch`.
//!   The size moves between `--min-batch` and `--max-batch`, starts at
//!   `--initial-batch`, by steps of `--adjust-factor`, and (load mode) at
//!   most once per `--adjust-interval`.
//!   A batch also waits up to `--linger` for more items.
//!
//! Every 100 ms the demo samples [`Batcher::stats`] and its own histogram of
//! per-item latency (submission to handled, HDR) for the progress line and
//! the chart: throughput, batch size (dispatched mean, and the adaptive
//! limit) and p99 latency over time. At the end it prints a summary table
//! (counts, dispatch reasons, the batcher's own histograms) and writes the
//! chart as SVG to `--out`, printing where.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use ringbatch::{
    Adaptive, Batch, BatchError, Batcher, Handler, Linger, LoadFeedback, LoadWeights, Stats, Ticket,
};
use ringbatch_demo::load::{Pattern, offered_rate};

/// The backend's fixed cost per batch (a round trip).
const FIXED: Duration = Duration::from_micros(150);
/// The backend's cost per item, in nanoseconds.
const PER_ITEM_NS: f64 = 500.0;
/// The contention cost per item², in nanoseconds, at background load 1.
const CONTENTION_NS: f64 = 40.0;
/// One item in this many is submitted with a ticket.
const TICKET_EVERY: u64 = 32;
/// How often the demo samples the batcher.
const TICK: Duration = Duration::from_millis(100);
/// The handler time latency mode aims at.
const LATENCY_TARGET: Duration = Duration::from_millis(1);

/// What drives the effective batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// The handler's load feedback (`Adaptive::load`).
    Load,
    /// The handler's time per batch, aiming at 1 ms (`Adaptive::latency`).
    Latency,
    /// No adaptive sizing: batches up to `--max-batch`.
    Off,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self
            .to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned());
        f.write_str(&name)
    }
}

/// Adaptive batching in front of a simulated backend under a load pattern.
///
/// Prints a live progress line, then a summary table, and writes an SVG
/// chart of throughput, batch size and p99 latency over time.
#[derive(Debug, Parser)]
#[command(name = "demo", version)]
struct Args {
    /// How the backend's background load, and the offered rate, move over
    /// the run (`sinewave` is `sine`).
    #[arg(long, value_enum, default_value_t = Pattern::Sine)]
    pattern: Pattern,
    /// Producer threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    producers: u16,
    /// Items per second offered at the pattern's peak, over all producers.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=20_000_000))]
    items: u64,
    /// Most items per batch (the adaptive size's upper bound).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    max_batch: u32,
    /// How long a batch waits for more items: 0, 500us, 1ms, 0.5ms, 2s.
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    linger: Duration,
    /// What drives the effective batch size.
    #[arg(long, value_enum, default_value_t = Mode::Load)]
    adaptive: Mode,
    /// Length of the run, in seconds (0.5 to 3600).
    #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
    seconds: f64,
    /// Items to offer in all; the run ends when they are offered or at
    /// `--seconds`, whichever comes first (default: no limit).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// The adaptive size at the start (default: `--max-batch`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    initial_batch: Option<u32>,
    /// The smallest adaptive size (at most `--max-batch`).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    min_batch: u32,
    /// `--adaptive load`: the least time between two size changes.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    adjust_interval: Duration,
    /// The size's step per change, 0.01 to 0.9 (0.2: by 20 %; default 0.2
    /// for `load`, 0.1 for `latency`).
    #[arg(long, value_parser = parse_factor)]
    adjust_factor: Option<f64>,
    /// Where to write the SVG chart.
    #[arg(long, default_value = "target/ringbatch-demo.svg")]
    out: PathBuf,
}

/// Parses `0`, `750ns`, `500us`, `500µs`, `1ms`, `0.5ms` or `2s`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500us, 1ms or 0.5s"))?;
    let scale = match unit.trim() {
        "" if value == 0.0 => 1.0,
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "" => return Err(format!("`{text}` needs a unit: ns, us, ms or s")),
        other => return Err(format!("unknown unit `{other}`: use ns, us, ms or s")),
    };
    let seconds = value * scale;
    if !(0.0..=60.0).contains(&seconds) {
        return Err(format!("`{text}` is out of range (0 to 60 s)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a step factor between 0.01 and 0.9.
fn parse_factor(text: &str) -> Result<f64, String> {
    let factor: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number like 0.2"))?;
    if (0.01..=0.9).contains(&factor) {
        Ok(factor)
    } else {
        Err(format!("`{text}` is out of range (0.01 to 0.9)"))
    }
}

/// Parses the run length in seconds.
fn parse_seconds(text: &str) -> Result<f64, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if (0.5..=3600.0).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(format!("`{text}` is out of range (0.5 to 3600 seconds)"))
    }
}

/// One item: when it was submitted, in nanoseconds since the run began.
#[derive(Debug, Clone, Copy)]
struct Job {
    submitted_ns: u64,
}

/// The run's clock and pattern, shared by every thread.
#[derive(Debug, Clone, Copy)]
struct Clock {
    start: Instant,
    run: Duration,
    pattern: Pattern,
}

impl Clock {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The background load now.
    fn load(&self) -> f64 {
        self.pattern
            .load(self.start.elapsed().as_secs_f64() / self.run.as_secs_f64())
    }
}

/// The backend's cost for a batch of `n` items at background `load`, and the
/// share of it lost to contention.
fn backend_cost(n: usize, load: f64) -> (Duration, f64) {
    let n = n as f64;
    let contention = load * CONTENTION_NS * n * n;
    let total = FIXED.as_nanos() as f64 + PER_ITEM_NS * n + contention;
    (Duration::from_nanos(total as u64), contention / total)
}

/// Waits `d` as a remote call would, without holding a core: sleeps most of
/// it, spins the last stretch for precision.
fn wait_out(d: Duration) {
    let end = Instant::now() + d;
    let slack = Duration::from_micros(80);
    if d > slack {
        thread::sleep(d - slack);
    }
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// Per-item latency (submission to handled) since the last sample.
type Window = Arc<Mutex<Histogram<u64>>>;

fn new_window() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// The simulated backend (see the module docs).
struct Backend {
    clock: Clock,
    window: Window,
    next_id: u64,
}

impl Handler<Job, u64> for Backend {
    fn handle(&mut self, batch: &mut Batch<'_, Job, u64>) -> Result<(), BatchError> {
        let load = self.clock.load();
        let (cost, contention) = backend_cost(batch.len(), load);
        wait_out(cost);
        let now = self.clock.now_ns();
        {
            let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            for job in batch.iter() {
                window.saturating_record(now.saturating_sub(job.submitted_ns).max(1));
            }
        }
        let mut id = self.next_id;
        batch.ok_with(|_| {
            id += 1;
            id
        });
        self.next_id = id;
        batch.report_load(LoadFeedback {
            cpu: load,
            contention,
            ..LoadFeedback::default()
        });
        Ok(())
    }
}

/// What a producer thread reports.
#[derive(Debug, Default)]
struct ProducerReport {
    offered: u64,
    tickets_ok: u64,
    tickets_failed: u64,
}

/// Collects the results of the tickets at the front that are ready.
fn collect(tickets: &mut VecDeque<Ticket<u64>>, report: &mut ProducerReport) {
    while let Some(ticket) = tickets.front_mut() {
        match ticket.try_take() {
            Some(Ok(_)) => report.tickets_ok += 1,
            Some(Err(_)) => report.tickets_failed += 1,
            None => break,
        }
        tickets.pop_front();
    }
}

/// A producer's hot loop: offers `share` of the pattern's rate until `stop`.
fn produce(
    batcher: &Batcher<Job, u64>,
    clock: Clock,
    peak_rate: f64,
    quota: u64,
    stop: &AtomicBool,
) -> ProducerReport {
    let producer = batcher.producer();
    let mut report = ProducerReport::default();
    let mut tickets = VecDeque::with_capacity(4096);
    let mut credit = 0.0f64;
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) && report.offered < quota {
        let now = Instant::now();
        let rate = offered_rate(peak_rate, clock.load());
        // Owed items; after a stall (backpressure) catch up at most 20 ms.
        credit = (credit + rate * (now - last).as_secs_f64()).min(rate * 0.02 + 64.0);
        last = now;
        let due = credit.floor() as u64;
        for _ in 0..due.min(256).min(quota - report.offered) {
            let job = Job {
                submitted_ns: clock.now_ns(),
            };
            report.offered += 1;
            credit -= 1.0;
            if report.offered % TICKET_EVERY == 0 {
                match producer.submit(job) {
                    Ok(ticket) => tickets.push_back(ticket),
                    Err(_) => report.tickets_failed += 1,
                }
            } else if producer.push(job).is_err() {
                report.offered -= 1;
                return report;
            }
        }
        collect(&mut tickets, &mut report);
        if credit < 1.0 {
            let gap = (1.0 - credit) / rate.max(1.0);
            thread::sleep(Duration::from_secs_f64(gap.clamp(20e-6, 2e-3)));
        }
    }
    for mut ticket in tickets {
        match ticket.wait_timeout(Duration::from_secs(10)) {
            Some(Ok(_)) => report.tickets_ok += 1,
            _ => report.tickets_failed += 1,
        }
    }
    report
}

/// One point of the time series.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Seconds since the start.
    t: f64,
    /// Items handled per second over the interval.
    throughput: f64,
    /// Mean items per batch dispatched in the interval (0 if none).
    mean_batch: f64,
    /// The effective maximum batch size at the sample.
    limit: u64,
    /// p99 of per-item latency over the interval, in milliseconds.
    p99_ms: f64,
    /// The background load.
    load: f64,
}

/// Samples the batcher every [`TICK`] until the run ends.
struct Sampler {
    last: Stats,
    last_at: Instant,
    samples: Vec<Sample>,
    window: Window,
}

impl Sampler {
    fn sample(&mut self, batcher: &Batcher<Job, u64>, clock: &Clock) -> Sample {
        let stats = batcher.stats();
        let now = Instant::now();
        let dt = (now - self.last_at).as_secs_f64().max(1e-6);
        let items = stats.items_handled - self.last.items_handled;
        let batches = stats.batches - self.last.batches;
        let p99_ns = {
            let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            let p99 = if window.is_empty() {
                0
            } else {
                window.value_at_quantile(0.99)
            };
            window.reset();
            p99
        };
        let sample = Sample {
            t: (now - clock.start).as_secs_f64(),
            throughput: items as f64 / dt,
            mean_batch: if batches == 0 {
                0.0
            } else {
                items as f64 / batches as f64
            },
            limit: stats.effective_max_batch,
            p99_ms: p99_ns as f64 / 1e6,
            load: clock.load(),
        };
        self.samples.push(sample);
        self.last = stats;
        self.last_at = now;
        sample
    }
}

fn main() -> Result<(), Box<dyn StdError>> {
    let args = Args::parse();
    let max_batch = args.max_batch as usize;
    let run = Duration::from_secs_f64(args.seconds);
    let peak_rate = args.items as f64;

    let window: Window = Arc::new(Mutex::new(new_window()));
    let clock = Clock {
        start: Instant::now(),
        run,
        pattern: args.pattern,
    };
    let mut builder = Batcher::builder()
        .capacity(max_batch.next_power_of_two().max(1024))
        .max_batch(max_batch)
        .histograms(true)
        .thread_name("demo-drainer");
    if !args.linger.is_zero() {
        builder = builder.linger(Linger::Fixed(args.linger));
    }
    let min_batch = args.min_batch as usize;
    if min_batch > max_batch {
        return Err(format!("--min-batch {min_batch} is above --max-batch {max_batch}").into());
    }
    if let Some(initial) = args.initial_batch {
        if !(min_batch..=max_batch).contains(&(initial as usize)) {
            return Err(format!(
                "--initial-batch {initial} is outside --min-batch {min_batch} to --max-batch {max_batch}"
            )
            .into());
        }
    }
    let start = |adaptive: Adaptive| match args.initial_batch {
        Some(initial) => adaptive.initial(initial as usize),
        None => adaptive,
    };
    builder = match args.adaptive {
        Mode::Load => builder.adaptive(start(
            Adaptive::load()
                .bounds(min_batch, max_batch)
                .weights(LoadWeights {
                    cpu: 0.3,
                    error_rate: 0.0,
                    queue_depth: 0.0,
                    contention: 0.7,
                })
                .thresholds(0.3, 0.6)
                .steps(
                    args.adjust_factor.unwrap_or(0.2),
                    args.adjust_factor.unwrap_or(0.2),
                )
                .check_interval(args.adjust_interval),
        )),
        Mode::Latency => {
            let factor = args.adjust_factor.unwrap_or(0.1);
            builder.adaptive(start(
                Adaptive::latency(LATENCY_TARGET)
                    .bounds(min_batch, max_batch)
                    .steps(factor, factor),
            ))
        }
        Mode::Off => builder,
    };
    let batcher = builder
        .handler(Backend {
            clock,
            window: Arc::clone(&window),
            next_id: 0,
        })
        .build()?;

    println!(
        "ringbatch demo: pattern {}, adaptive {}, {} producers, up to {} items/s, \
         batch {min_batch} to {max_batch} from {}, linger {:?}, {:.1} s{}",
        args.pattern,
        args.adaptive,
        args.producers,
        args.items,
        args.initial_batch.map_or(max_batch, |i| i as usize),
        args.linger,
        args.seconds,
        args.count
            .map_or_else(String::new, |count| format!(" or {count} items")),
    );

    let progress = ProgressBar::new(run.as_millis() as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>3} [{bar:24}] {msg}")?
            .progress_chars("=> "),
    );
    let stop = AtomicBool::new(false);
    let offered = AtomicU64::new(0);
    // Producers done with their share of `--count`.
    let finished = AtomicU64::new(0);
    let mut sampler = Sampler {
        last: batcher.stats(),
        last_at: Instant::now(),
        samples: Vec::new(),
        window: Arc::clone(&window),
    };
    let reports: Vec<ProducerReport> = thread::scope(|s| -> Result<_, Box<dyn StdError>> {
        let mut handles = Vec::new();
        for id in 0..args.producers {
            let (batcher, stop, offered, finished) = (&batcher, &stop, &offered, &finished);
            let share = peak_rate / f64::from(args.producers);
            let quota = args.count.map_or(u64::MAX, |count| {
                let p = u64::from(args.producers);
                count / p + u64::from(u64::from(id) < count % p)
            });
            handles.push(
                thread::Builder::new()
                    .name(format!("producer-{id}"))
                    .spawn_scoped(s, move || {
                        let report = produce(batcher, clock, share, quota, stop);
                        offered.fetch_add(report.offered, Ordering::Relaxed);
                        finished.fetch_add(1, Ordering::Relaxed);
                        report
                    })?,
            );
        }
        let mut next = clock.start + TICK;
        while clock.start.elapsed() < run
            && finished.load(Ordering::Relaxed) < u64::from(args.producers)
        {
            thread::sleep(next.saturating_duration_since(Instant::now()));
            next += TICK;
            let sample = sampler.sample(&batcher, &clock);
            let stats = &sampler.last;
            progress.set_position(clock.start.elapsed().as_millis() as u64);
            progress.set_message(format!(
                "{:>8.0} items/s | batch {:>5.1} (limit {:>4}) | p99 {:>7} | load {:.2}",
                sample.throughput,
                sample.mean_batch,
                stats.effective_max_batch,
                format_ns((sample.p99_ms * 1e6) as u64),
                sample.load,
            ));
        }
        stop.store(true, Ordering::Relaxed);
        let mut reports = Vec::new();
        for handle in handles {
            reports.push(handle.join().map_err(|_| "a producer thread panicked")?);
        }
        Ok(reports)
    })?;
    progress.finish_and_clear();
    let drained = batcher.flush_timeout(Duration::from_secs(30));
    let elapsed = clock.start.elapsed();
    let stats = batcher.shutdown();

    let offered: u64 = reports.iter().map(|r| r.offered).sum();
    let tickets_ok: u64 = reports.iter().map(|r| r.tickets_ok).sum();
    let tickets_failed: u64 = reports.iter().map(|r| r.tickets_failed).sum();
    print_summary(
        &stats,
        &sampler.samples,
        offered,
        elapsed,
        tickets_ok,
        tickets_failed,
    );

    let out = absolute(&args.out);
    let title = format!(
        "ringbatch demo: pattern {}, adaptive {}, {} producers, up to {} items/s",
        args.pattern, args.adaptive, args.producers, args.items
    );
    draw_chart(&out, &title, &sampler.samples, args.seconds)?;
    println!("chart: {}", out.display());

    if !drained || stats.items_handled != offered || tickets_failed != 0 {
        return Err(format!(
            "delivery check failed: offered {offered}, handled {}, tickets failed {tickets_failed}",
            stats.items_handled
        )
        .into());
    }
    Ok(())
}

/// `path` made absolute against the working directory.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// A time in nanoseconds, in a readable unit.
fn format_ns(ns: u64) -> String {
    let ns = ns as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn print_summary(
    stats: &Stats,
    samples: &[Sample],
    offered: u64,
    elapsed: Duration,
    tickets_ok: u64,
    tickets_failed: u64,
) {
    let d = &stats.dispatched;
    let peak = samples.iter().map(|s| s.throughput).fold(0.0, f64::max);
    let limits = samples.iter().map(|s| s.limit);
    let (low, high) = (limits.clone().min().unwrap_or(0), limits.max().unwrap_or(0));
    println!();
    println!("{:<22}{}", "items offered", offered);
    println!(
        "{:<22}{} ({} failed)",
        "items handled", stats.items_handled, stats.items_failed
    );
    println!(
        "{:<22}{} ok, {} failed",
        "tickets", tickets_ok, tickets_failed
    );
    println!(
        "{:<22}{} (mean {:.1} items, largest {})",
        "batches",
        stats.batches,
        stats.mean_batch_items(),
        stats.max_batch_items
    );
    println!(
        "{:<22}{} batched, {} of a single item; efficiency {:.0} % of the limit now",
        "batch shapes",
        stats.multi_item_batches(),
        stats.single_item_batches,
        stats.batch_efficiency() * 100.0
    );
    println!(
        "{:<22}full {}, linger {}, lanes idle {}, flush {}, shutdown {}",
        "dispatched by", d.full, d.linger, d.lanes_idle, d.flush, d.shutdown
    );
    println!(
        "{:<22}{} to {} (now {})",
        "adaptive limit", low, high, stats.effective_max_batch
    );
    println!(
        "{:<22}{:.0} items/s mean, {:.0} peak ({:.1} s)",
        "throughput",
        stats.items_handled as f64 / elapsed.as_secs_f64(),
        peak,
        elapsed.as_secs_f64()
    );
    println!(
        "{:<22}{:.0} items/s, {:.0} batches/s over the last {:.1} s",
        "recent throughput",
        stats.throughput.items_per_sec,
        stats.throughput.batches_per_sec,
        stats.throughput.window.as_secs_f64()
    );
    if let Some(handler) = stats.handler_time() {
        println!(
            "{:<22}{:.2} s in all ({:.0} % of the run)",
            "handler time",
            handler.as_secs_f64(),
            100.0 * handler.as_secs_f64() / elapsed.as_secs_f64()
        );
    }
    let Some(h) = &stats.histograms else {
        return;
    };
    println!();
    println!(
        "{:<22}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    println!(
        "{:<22}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "batch size (items)",
        h.batch_size.count,
        h.batch_size.p50,
        h.batch_size.p90,
        h.batch_size.p99,
        h.batch_size.p999,
        h.batch_size.max
    );
    for (name, p) in [
        ("queue wait", &h.queue_wait_ns),
        ("handler time", &h.handler_ns),
        ("end to end", &h.end_to_end_ns),
    ] {
        println!(
            "{:<22}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            name,
            p.count,
            format_ns(p.p50),
            format_ns(p.p90),
            format_ns(p.p99),
            format_ns(p.p999),
            format_ns(p.max)
        );
    }
}

/// One series of the chart.
struct Line {
    label: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// One panel of the chart: its caption, y unit and series.
struct Panel {
    caption: &'static str,
    unit: &'static str,
    lines: Vec<Line>,
}

/// Writes the three panels (throughput, batch size, p99 latency) as SVG.
fn draw_chart(
    path: &Path,
    title: &str,
    samples: &[Sample],
    seconds: f64,
) -> Result<(), Box<dyn StdError>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (1000, 960)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let panels = root.split_evenly((3, 1));
    let x_max = samples.last().map_or(seconds, |s| s.t).max(seconds);
    let ceiling = |values: &mut dyn Iterator<Item = f64>| {
        let top = values.fold(0.0, f64::max);
        if top > 0.0 { top * 1.1 } else { 1.0 }
    };
    let line = |label, color, y: fn(&Sample) -> f64| Line {
        label,
        color,
        points: samples.iter().map(|s| (s.t, y(s))).collect(),
    };
    let panels_content = [
        Panel {
            caption: "throughput",
            unit: "items/s",
            lines: vec![line("throughput (items/s)", RGBColor(31, 119, 180), |s| {
                s.throughput
            })],
        },
        Panel {
            caption: "batch size",
            unit: "items",
            lines: vec![
                line("batch size (mean dispatched)", RGBColor(44, 160, 44), |s| {
                    s.mean_batch
                }),
                line(
                    "adaptive limit (effective_max_batch)",
                    RGBColor(152, 223, 138),
                    |s| s.limit as f64,
                ),
            ],
        },
        Panel {
            caption: "p99 latency",
            unit: "ms",
            lines: vec![line(
                "p99 latency (ms, submit to handled)",
                RGBColor(214, 39, 40),
                |s| s.p99_ms,
            )],
        },
    ];
    for (area, panel) in panels.iter().zip(panels_content) {
        let Panel {
            caption,
            unit,
            lines,
        } = panel;
        let y_max = ceiling(&mut lines.iter().flat_map(|l| l.points.iter().map(|&(_, y)| y)));
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(unit)
            .x_labels(11)
            .y_labels(6)
            .y_label_formatter(&|v| {
                if y_max >= 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            })
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        for Line {
            label,
            color,
            points,
        } in lines
        {
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
