//! Latency percentiles: ringbatch against its peers and the hardware floor.
//!
//! Run with `cargo bench --bench latency` (about a minute; a plain `main`, not
//! criterion). It prints two markdown tables and writes their numbers to
//! `target/bench-results/latency.json` (read by `benches/chart.py`). Every
//! latency is recorded in nanoseconds into an `hdrhistogram::Histogram<u64>`
//! (3 significant digits).
//!
//! # (a) Round trip, closed loop
//!
//! One requester sends `x`, waits for `x + 1`, then sends the next request;
//! each of [`REQUESTS`] round trips (after [`WARMUP`] untimed ones) is timed
//! with two `Instant::now()` calls around it. The systems are those of
//! `benches/harness/roundtrip.rs` (ringbatch `submit(x).wait()`, ArrayQueue
//! with a spin-waited reply queue, crossbeam-channel / flume /
//! `std::sync::mpsc` with a per-request capacity-1 reply channel, tokio mpsc
//! with a oneshot reply, the disruptor with an atomic reply slot), plus:
//!
//! - `ringbatch_busyspin`: ringbatch with `WaitStrategy::BusySpin` (drainer
//!   and ticket wait never yield), the setting closest to the floor;
//! - `atomic_ping_pong`, the floor: two threads and one cache-padded
//!   `AtomicU64`; the requester stores an odd `x`, the responder spins until
//!   it sees it and stores `x + 1`, the requester spins until it sees that.
//!   No queue, no batching, no parking: the cost of moving a cache line
//!   there and back.
//!
//! It prints p50, p99, p99.9 and max per system, then ringbatch's p50 (default
//! settings) as a multiple of the ping-pong p50 and as a fraction of the best
//! peer's p50.
//!
//! # (b) Open loop at fixed offered rates
//!
//! A producer thread offers items at intended times `t0 + i / rate` for
//! [`OPEN_LOOP`], spinning until each intended time (or sending at once when
//! it is behind), and each item carries its intended time. The consumer reads
//! the clock once per batch it receives and records, for every item of the
//! batch, that time minus the item's intended time. Measuring from the
//! intended time, not the actual send, counts the queueing a late producer
//! suffers (no coordinated omission).
//!
//! - `ringbatch`: fire-and-forget `push` into a one-lane batcher (capacity
//!   4096, `max_batch` 256, default `Backoff` waiting); the handler is the
//!   consumer.
//! - `crossbeam_channel`: a `bounded(4096)` channel; the consumer thread blocks
//!   in `recv`, then drains up to 255 more with `try_recv`.
//!
//! First each pipeline runs with no pacing (every item's intended time is
//! its send time) [`MAX_RATE_RUNS`] times for [`MAX_RATE_SPAN`] to find its
//! maximum rate (the best of the runs, items handled per second); then both
//! run at 10%, 50% and 90%
//! of **ringbatch's** maximum, so the two are compared at the same offered
//! loads (a column gives the load as a share of each system's own maximum).
//! A run that falls behind stops offering after three times [`OPEN_LOOP`].
//! It prints p50, p99, p99.9, p99.99 and max per system and rate, with the
//! rate actually handled and the mean number of items per consumer batch.

#[path = "harness/roundtrip.rs"]
mod roundtrip;

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use ringbatch::{Batch, Batcher, WaitStrategy};
use roundtrip::{CAPACITY, MAX_BATCH, Rt, with_roundtrip};

/// Timed round trips per system.
const REQUESTS: usize = 200_000;
/// Untimed round trips first, per system.
const WARMUP: usize = 10_000;
/// How long each open-loop run offers items.
const OPEN_LOOP: Duration = Duration::from_secs(2);
/// Unpaced runs per system to find its maximum rate (the best is kept)...
const MAX_RATE_RUNS: usize = 3;
/// ... each this long.
const MAX_RATE_SPAN: Duration = Duration::from_secs(1);
/// Offered loads, as fractions of ringbatch's maximum rate.
const LOADS: [f64; 3] = [0.1, 0.5, 0.9];

fn histogram() -> Histogram<u64> {
    // 1 ns to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

/// Nanoseconds since `base`.
#[inline]
fn ns_since(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// Formats nanoseconds with a unit that keeps three or so digits.
fn fmt_ns(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns} ns"),
        1_000..=999_999 => format!("{:.2} µs", ns as f64 / 1e3),
        _ => format!("{:.2} ms", ns as f64 / 1e6),
    }
}

// ---------------------------------------------------------------------------
// (a) Round trip
// ---------------------------------------------------------------------------

/// Times `REQUESTS` calls of `call` after `WARMUP` untimed ones.
fn time_calls(call: &mut dyn FnMut(u64) -> u64) -> Histogram<u64> {
    let mut hist = histogram();
    for i in 0..(WARMUP + REQUESTS) as u64 {
        // Odd, and different from one request to the next.
        let x = 2 * i + 1;
        let start = Instant::now();
        let reply = call(black_box(x));
        let ns = start.elapsed().as_nanos() as u64;
        assert_eq!(reply, x + 1, "wrong reply");
        if i >= WARMUP as u64 {
            hist.saturating_record(ns);
        }
    }
    hist
}

/// The floor: a two-thread ping-pong on one atomic.
fn ping_pong() -> Histogram<u64> {
    const STOP: u64 = u64::MAX;
    let cell = CachePadded::new(AtomicU64::new(0));
    thread::scope(|s| {
        let cell = &cell;
        s.spawn(move || {
            loop {
                let v = cell.load(Ordering::Acquire);
                if v == STOP {
                    return;
                }
                if v % 2 == 1 {
                    cell.store(v + 1, Ordering::Release);
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        let hist = time_calls(&mut |x| {
            cell.store(x, Ordering::Release);
            loop {
                let v = cell.load(Ordering::Acquire);
                if v == x + 1 {
                    return v;
                }
                std::hint::spin_loop();
            }
        });
        cell.store(STOP, Ordering::Release);
        hist
    })
}

struct RoundTripRow {
    name: &'static str,
    hist: Histogram<u64>,
}

fn round_trips() -> Vec<RoundTripRow> {
    let mut rows = Vec::new();
    let mut systems = vec![Rt::Ringbatch(WaitStrategy::BusySpin)];
    systems.extend(Rt::ALL);
    for system in systems {
        let start = Instant::now();
        let hist = with_roundtrip(system, time_calls);
        eprintln!(
            "  {:<20} {:>6.1} s",
            system.name(),
            start.elapsed().as_secs_f64()
        );
        rows.push(RoundTripRow {
            name: system.name(),
            hist,
        });
    }
    let start = Instant::now();
    rows.push(RoundTripRow {
        name: "atomic_ping_pong",
        hist: ping_pong(),
    });
    eprintln!(
        "  {:<20} {:>6.1} s",
        "atomic_ping_pong",
        start.elapsed().as_secs_f64()
    );
    rows
}

// ---------------------------------------------------------------------------
// (b) Open loop
// ---------------------------------------------------------------------------

/// One open-loop run.
struct OpenRun {
    system: &'static str,
    /// Offered rate (items/s); `None` for the unpaced maximum-rate run.
    offered: Option<f64>,
    sent: u64,
    /// Items handled per second, from the first intended send to the last
    /// item handled.
    achieved: f64,
    /// Mean items per batch the consumer received.
    mean_batch: f64,
    hist: Histogram<u64>,
}

/// Offers items through `send` at `rate` (or unpaced) for `span`; returns
/// (nanoseconds since `base` at the start, items sent).
fn offer(
    base: Instant,
    rate: Option<f64>,
    span: Duration,
    mut send: impl FnMut(u64),
) -> (u64, u64) {
    let start = ns_since(base);
    let wall_limit = Instant::now() + 3 * span;
    let span = span.as_nanos() as u64;
    let mut i = 0u64;
    loop {
        let intended = match rate {
            Some(rate) => {
                let at = start + (i as f64 * 1e9 / rate) as u64;
                if at - start >= span {
                    break;
                }
                while ns_since(base) < at {
                    std::hint::spin_loop();
                }
                at
            }
            None => {
                let now = ns_since(base);
                if now - start >= span {
                    break;
                }
                now
            }
        };
        send(intended);
        i += 1;
        if i % 1024 == 0 && Instant::now() > wall_limit {
            eprintln!("  (fell behind: stopped offering after {i} items)");
            break;
        }
    }
    (start, i)
}

fn open_loop_ringbatch(rate: Option<f64>, span: Duration) -> OpenRun {
    let base = Instant::now();
    let hist = Arc::new(Mutex::new(histogram()));
    let last = Arc::new(AtomicU64::new(0));
    let (handler_hist, handler_last) = (Arc::clone(&hist), Arc::clone(&last));
    let batcher = Batcher::builder()
        .lanes(1)
        .capacity(CAPACITY)
        .max_batch(MAX_BATCH)
        .handler_fn(move |batch: &mut Batch<'_, u64, ()>| {
            let now = ns_since(base);
            let mut hist = handler_hist.lock().expect("lock poisoned");
            for &intended in batch.items() {
                hist.saturating_record(now.saturating_sub(intended));
            }
            handler_last.store(now, Ordering::Relaxed);
            Ok(())
        })
        .build()
        .expect("valid settings");
    let (start, sent) = thread::scope(|s| {
        s.spawn(|| {
            let producer = batcher.producer();
            offer(base, rate, span, |t| {
                producer.push(t).expect("batcher open")
            })
        })
        .join()
        .expect("producer panicked")
    });
    batcher.flush();
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled, sent, "ringbatch lost items");
    let end = last.load(Ordering::Relaxed);
    let hist = hist.lock().expect("lock poisoned").clone();
    OpenRun {
        system: "ringbatch",
        offered: rate,
        sent,
        achieved: sent as f64 * 1e9 / (end - start) as f64,
        mean_batch: stats.mean_batch_items(),
        hist,
    }
}

fn open_loop_crossbeam(rate: Option<f64>, span: Duration) -> OpenRun {
    let base = Instant::now();
    let (tx, rx) = crossbeam_channel::bounded::<u64>(CAPACITY);
    let consumer = thread::spawn(move || {
        let mut hist = histogram();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut last = 0;
        let mut batches = 0u64;
        while let Ok(first) = rx.recv() {
            batches += 1;
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            let now = ns_since(base);
            for &intended in &batch {
                hist.saturating_record(now.saturating_sub(intended));
            }
            batch.clear();
            last = now;
        }
        (hist, last, batches)
    });
    let (start, sent) = thread::scope(|s| {
        s.spawn(move || offer(base, rate, span, |t| tx.send(t).expect("consumer running")))
            .join()
            .expect("producer panicked")
    });
    // The producer dropped `tx`: the consumer drains and returns.
    let (hist, end, batches) = consumer.join().expect("consumer panicked");
    assert_eq!(hist.len(), sent, "crossbeam lost items");
    OpenRun {
        system: "crossbeam_channel",
        offered: rate,
        sent,
        achieved: sent as f64 * 1e9 / (end - start) as f64,
        mean_batch: sent as f64 / batches.max(1) as f64,
        hist,
    }
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

fn json_hist(out: &mut String, hist: &Histogram<u64>, quantiles: &[(&str, f64)]) {
    for (name, q) in quantiles {
        let _ = write!(out, "\"{name}\": {}, ", hist.value_at_quantile(*q));
    }
    let _ = write!(out, "\"max\": {}", hist.max());
}

/// The 1, 5 and 15 minute load averages (Linux), to judge the machine's
/// noise during the run.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn main() {
    let total = Instant::now();
    let load_start = loadavg();
    eprintln!("(a) round trip: {REQUESTS} requests per system");
    let rows = round_trips();

    eprintln!("(b) open loop: {} s per run", OPEN_LOOP.as_secs_f64());
    let best_of = |run: fn(Option<f64>, Duration) -> OpenRun| {
        (0..MAX_RATE_RUNS)
            .map(|_| run(None, MAX_RATE_SPAN).achieved)
            .fold(0.0, f64::max)
    };
    let rb_max = best_of(open_loop_ringbatch);
    let cb_max = best_of(open_loop_crossbeam);
    let max_rate = rb_max;
    let mut runs = Vec::new();
    for load in LOADS {
        let rate = load * max_rate;
        eprintln!(
            "  {:.0}% of ringbatch's maximum: {:.2} M items/s",
            load * 100.0,
            rate / 1e6
        );
        runs.push(open_loop_ringbatch(Some(rate), OPEN_LOOP));
        runs.push(open_loop_crossbeam(Some(rate), OPEN_LOOP));
    }

    // (a) table.
    println!("## Round trip (closed loop, {REQUESTS} requests each)\n");
    println!("| system | p50 | p99 | p99.9 | max |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for row in &rows {
        let h = &row.hist;
        println!(
            "| {} | {} | {} | {} | {} |",
            row.name,
            fmt_ns(h.value_at_quantile(0.5)),
            fmt_ns(h.value_at_quantile(0.99)),
            fmt_ns(h.value_at_quantile(0.999)),
            fmt_ns(h.max()),
        );
    }
    let p50 = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .map(|r| r.hist.value_at_quantile(0.5))
            .expect("row present")
    };
    let rb = p50("ringbatch");
    let floor = p50("atomic_ping_pong");
    let (best_name, best) = rows
        .iter()
        .filter(|r| !r.name.starts_with("ringbatch") && r.name != "atomic_ping_pong")
        .map(|r| (r.name, r.hist.value_at_quantile(0.5)))
        .min_by_key(|&(_, p)| p)
        .expect("peers present");
    let p99 = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .map(|r| r.hist.value_at_quantile(0.99))
            .expect("row present")
    };
    let best_p99 = rows
        .iter()
        .filter(|r| !r.name.starts_with("ringbatch") && r.name != "atomic_ping_pong")
        .map(|r| r.hist.value_at_quantile(0.99))
        .min()
        .expect("peers present");
    println!();
    for name in ["ringbatch", "ringbatch_inline"] {
        println!(
            "{name} p50 = {:.2} x the atomic ping-pong p50; = {:.2} x the best peer's p50 \
             ({best_name}); p99 = {:.2} x the best peer p99.",
            p50(name) as f64 / floor as f64,
            p50(name) as f64 / best as f64,
            p99(name) as f64 / best_p99 as f64,
        );
    }
    let _ = rb;

    // (b) table.
    println!();
    println!(
        "## Open loop (one producer, {} s per run; intended-time to handled)\n",
        OPEN_LOOP.as_secs_f64()
    );
    println!(
        "Maximum rate (unpaced): ringbatch {:.2} M items/s, crossbeam_channel {:.2} M items/s.\n",
        rb_max / 1e6,
        cb_max / 1e6
    );
    println!(
        "| system | offered (M items/s) | % of rb max | % of own max | handled (M items/s) | mean batch | p50 | p99 | p99.9 | p99.99 | max |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for run in &runs {
        let offered = run.offered.expect("paced run");
        let own_max = if run.system == "ringbatch" {
            rb_max
        } else {
            cb_max
        };
        let h = &run.hist;
        println!(
            "| {} | {:.2} | {:.0}% | {:.0}% | {:.2} | {:.1} | {} | {} | {} | {} | {} |",
            run.system,
            offered / 1e6,
            100.0 * offered / max_rate,
            100.0 * offered / own_max,
            run.achieved / 1e6,
            run.mean_batch,
            fmt_ns(h.value_at_quantile(0.5)),
            fmt_ns(h.value_at_quantile(0.99)),
            fmt_ns(h.value_at_quantile(0.999)),
            fmt_ns(h.value_at_quantile(0.9999)),
            fmt_ns(h.max()),
        );
    }

    // JSON for benches/chart.py.
    let load_end = loadavg();
    println!("\nLoad average (1, 5, 15 min): {load_start} at the start, {load_end} at the end.");
    let mut json =
        format!("{{\n  \"loadavg\": [\"{load_start}\", \"{load_end}\"],\n  \"roundtrip_ns\": {{\n");
    for (i, row) in rows.iter().enumerate() {
        let _ = write!(json, "    \"{}\": {{", row.name);
        json_hist(
            &mut json,
            &row.hist,
            &[("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)],
        );
        json.push_str(if i + 1 < rows.len() { "},\n" } else { "}\n" });
    }
    let _ = write!(
        json,
        "  }},\n  \"max_rate\": {{\"ringbatch\": {:.0}, \"crossbeam_channel\": {:.0}}},\n  \"open_loop_ns\": [\n",
        rb_max, cb_max
    );
    for (i, run) in runs.iter().enumerate() {
        let _ = write!(
            json,
            "    {{\"system\": \"{}\", \"offered\": {:.0}, \"sent\": {}, \"handled_rate\": {:.0}, \"mean_batch\": {:.1}, ",
            run.system,
            run.offered.unwrap_or(0.0),
            run.sent,
            run.achieved,
            run.mean_batch
        );
        json_hist(
            &mut json,
            &run.hist,
            &[
                ("p50", 0.5),
                ("p99", 0.99),
                ("p99.9", 0.999),
                ("p99.99", 0.9999),
            ],
        );
        json.push_str(if i + 1 < runs.len() { "},\n" } else { "}\n" });
    }
    json.push_str("  ]\n}\n");
    let dir = std::path::Path::new("target").join("bench-results");
    let path = dir.join("latency.json");
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, json)) {
        Ok(()) => eprintln!("wrote {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
    eprintln!("total {:.1} s", total.elapsed().as_secs_f64());
}
