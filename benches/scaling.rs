//! Throughput by producer count: ringbatch and its peers at 1, 2, … N
//! producers.
//!
//! Run through `benches/scaling.sh [N]` (N defaults to `nproc`), or directly
//! as `cargo bench --bench scaling -- 1 2 4 8`: the arguments are the producer
//! counts. `SYSTEMS=ringbatch,array_queue` limits the systems (default: every
//! multi-producer system of `benches/harness/throughput.rs`, plus `rtrb` at
//! one producer). `PLACEMENT=pinned` pins each consumer to the first core and
//! the producers to the others (default `free`). A plain `main`, not
//! criterion.
//!
//! The workload and harness are `benches/peers.rs`'s throughput groups
//! (`benches/harness/throughput.rs`): persistent producer threads push
//! `u64`s in rounds of 2^18 items split across them, and a round ends when
//! the consumer has counted every item. For each system and count the
//! harness warms up for [`WARM_UP`] (whole rounds), picks a number of rounds
//! that takes about [`SAMPLE`], times [`SAMPLES`] such samples and keeps
//! their median in items per second. It makes [`PASSES`] passes over every
//! count and system and reports, per cell, the median of the passes. It prints a markdown table (rows:
//! producer counts; columns: systems) and writes the numbers to
//! `target/bench-results/scaling.json` for `benches/chart.py`.

#[path = "harness/rounds.rs"]
mod rounds;
#[path = "harness/throughput.rs"]
mod throughput;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use throughput::{ITEMS, Placement, Sys, with_throughput};

/// Untimed rounds first, for at least this long.
const WARM_UP: Duration = Duration::from_millis(300);
/// Target length of one timed sample.
const SAMPLE: Duration = Duration::from_millis(150);
/// Timed samples per system and producer count, in each pass.
const SAMPLES: usize = 5;
/// Passes over every producer count and system; a cell's result is the
/// median of its passes, so that a burst of outside load spoils one pass of
/// a few cells rather than a whole row.
const PASSES: usize = 3;

/// Median items per second of `system` with `producers` producers.
fn measure(system: Sys, producers: usize, placement: Placement) -> f64 {
    with_throughput::<u64, _>(system, producers, placement, |run| {
        let mut warm = Duration::ZERO;
        let mut rounds = 0u64;
        while warm < WARM_UP {
            warm += run(1);
            rounds += 1;
        }
        let per_round = warm / rounds as u32;
        let k = (SAMPLE.as_nanos() / per_round.as_nanos().max(1)).max(1) as u64;
        let mut rates: Vec<f64> = (0..SAMPLES)
            .map(|_| (k * ITEMS) as f64 / run(k).as_secs_f64())
            .collect();
        rates.sort_by(f64::total_cmp);
        rates[SAMPLES / 2]
    })
}

/// The 1, 5 and 15 minute load averages (Linux), to judge the machine's
/// noise during the run.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn main() {
    let mut counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--")) // cargo bench passes `--bench`
        .map(|a| a.parse().expect("producer counts are numbers"))
        .collect();
    if counts.is_empty() {
        counts = (1..=std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    }
    let systems: Vec<Sys> = match std::env::var("SYSTEMS") {
        Ok(list) => list
            .split(',')
            .map(|name| Sys::from_name(name.trim()).unwrap_or_else(|| panic!("no system {name}")))
            .collect(),
        Err(_) => {
            let mut all = Sys::MPSC.to_vec();
            all.push(Sys::Rtrb);
            all
        }
    };

    // `PLACEMENT=pinned`: the consumer on the first core, producers spread
    // over the others (see `Placement::Pinned`).
    let placement = match std::env::var("PLACEMENT").as_deref() {
        Ok("pinned") => Placement::Pinned,
        Ok("free") | Err(_) => Placement::Free,
        Ok(other) => panic!("PLACEMENT is `free` or `pinned`, not `{other}`"),
    };

    let total = Instant::now();
    let load_start = loadavg();
    // passes[pass][count][system]
    let mut passes: Vec<Vec<Vec<Option<f64>>>> = Vec::new();
    for pass in 1..=PASSES {
        let mut rows = Vec::new();
        for &producers in &counts {
            let row = systems
                .iter()
                .map(|&system| {
                    if producers > 1 && !system.multi_producer() {
                        return None;
                    }
                    let rate = measure(system, producers, placement);
                    eprintln!(
                        "  pass {pass}, {producers} producers, {:<18} {:>8.2} M items/s",
                        system.name(),
                        rate / 1e6
                    );
                    Some(rate)
                })
                .collect();
            rows.push(row);
        }
        passes.push(rows);
    }
    let table: Vec<(usize, Vec<Option<f64>>)> = counts
        .iter()
        .enumerate()
        .map(|(c, &producers)| {
            let row = (0..systems.len())
                .map(|s| {
                    let mut rates: Vec<f64> = passes.iter().filter_map(|p| p[c][s]).collect();
                    rates.sort_by(f64::total_cmp);
                    rates.get(rates.len() / 2).copied()
                })
                .collect();
            (producers, row)
        })
        .collect();

    println!(
        "## Throughput by producer count (M items/s; median of {PASSES} passes of the median of {SAMPLES} samples; placement {placement:?})\n"
    );
    let header: Vec<&str> = systems.iter().map(|s| s.name()).collect();
    println!("| producers | {} |", header.join(" | "));
    println!("| ---: |{}", " ---: |".repeat(systems.len()));
    for (producers, row) in &table {
        let cells: Vec<String> = row
            .iter()
            .map(|r| r.map_or_else(|| "–".to_owned(), |r| format!("{:.2}", r / 1e6)))
            .collect();
        println!("| {producers} | {} |", cells.join(" | "));
    }

    let load_end = loadavg();
    println!("\nLoad average (1, 5, 15 min): {load_start} at the start, {load_end} at the end.");
    let mut json =
        format!("{{\n  \"loadavg\": [\"{load_start}\", \"{load_end}\"],\n  \"items_per_s\": {{\n");
    for (i, system) in systems.iter().enumerate() {
        let points: Vec<String> = table
            .iter()
            .filter_map(|(p, row)| row[i].map(|r| format!("[{p}, {r:.0}]")))
            .collect();
        let _ = write!(json, "    \"{}\": [{}]", system.name(), points.join(", "));
        json.push_str(if i + 1 < systems.len() { ",\n" } else { "\n" });
    }
    json.push_str("  }\n}\n");
    let dir = std::path::Path::new("target").join("bench-results");
    let path = dir.join("scaling.json");
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, json)) {
        Ok(()) => eprintln!("wrote {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
    eprintln!("total {:.1} s", total.elapsed().as_secs_f64());
}
