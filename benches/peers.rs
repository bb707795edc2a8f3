//! ringbatch against its peers on the same workloads, in one criterion run.
//!
//! Run with `cargo bench --bench peers` (about two minutes on the 2-core
//! reference machine; longer when `disruptor` lacks a free core and crawls);
//! filter with `cargo bench --bench peers -- throughput_1p/` and the like.
//! Every group has one function per system, named `ringbatch`, `array_queue`,
//! `crossbeam_channel`, `disruptor`, `flume`, `std_sync_channel`,
//! `tokio_mpsc` (and `rtrb` in `throughput_1p` and `throughput_1p_64b`).
//! Settings: 10 samples, 500 ms warm-up, 2 s measurement per function.
//!
//! # Throughput groups: fire-and-forget items per second
//!
//! `throughput_1p`, `throughput_2p`, `throughput_8p` push `u64` items from 1,
//! 2 and 8 producer threads; `throughput_1p_64b` pushes 64-byte items
//! (`[u64; 8]`) from one. One iteration pushes `ITEMS` (2^18) items split
//! evenly across the producers, and the clock stops when the consumer has
//! counted all of them; criterion reports items per second. Eight producers
//! on a machine with fewer cores are oversubscribed on purpose: it measures
//! how each system behaves when producers are preempted. The harness (the
//! systems, their consumers, the persistent producer threads and how each
//! waits) is described in `benches/harness/throughput.rs`. Each function's
//! threads start before its first iteration and are stopped and joined after
//! its last, so nothing spins while another function runs; the harness also
//! checks that every pushed item was consumed.
//!
//! # `roundtrip`: one request and its reply, one at a time
//!
//! One iteration is one round trip: the requester sends `x`, waits for
//! `x + 1`, and only then sends the next request. Each system's request and
//! reply paths are described in `benches/harness/roundtrip.rs`; for
//! `disruptor`, which has no reply path, the handler answers through an
//! atomic slot that the requester spin-waits on.
//!
//! Criterion's time per iteration is a mean over many back-to-back round
//! trips; `benches/latency.rs` gives their percentiles.
//!
//! # Paired one-producer tables
//!
//! After the groups (in a full run, or alone with `cargo bench --bench peers
//! -- paired`), `throughput_1p` and `throughput_1p_64b` once more in 11
//! rounds of 5 iterations per system, the order rotating from round to
//! round: each round's items per second, the medians, and ringbatch's ratio
//! to each round's best multi-producer peer and its fraction of `rtrb`
//! (medians over rounds). Within a round the systems run seconds apart, so
//! the machine's slow spells, which last minutes, shift a whole round
//! rather than one system.
//!
//! The tables come twice: with the threads placed by the scheduler, then
//! with the consumer pinned to the first core and the producer to another
//! (`Placement::Pinned` in `benches/harness/throughput.rs`: ringbatch's
//! drainer through `pin_drainer`, `disruptor`'s handler through
//! `pin_at_core`, the other consumers' threads directly). Pinned, no
//! consumer can land on its producer's core, as none does in a deployment
//! that gives the consumer a core of its own; placed by the scheduler, a
//! consumer that sleeps may wake on the producer's core and share its
//! cache for a while.
//!
//! # Reading the numbers
//!
//! On a machine with few cores (the reference machine has 2, shared) every
//! multi-producer result measures the scheduler as much as the queue, and
//! `disruptor`'s busy-spinning consumer takes a whole core; compare functions
//! within one run and repeat runs before trusting a difference.

#[path = "harness/rounds.rs"]
mod rounds;
#[path = "harness/roundtrip.rs"]
mod roundtrip;
#[path = "harness/throughput.rs"]
mod throughput;

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group};
use roundtrip::{Rt, with_roundtrip};
use throughput::{ITEMS, Item, Placement, Sys, with_throughput};

/// A 64-byte item: eight words, all summed by the consumer.
impl Item for [u64; 8] {
    #[inline]
    fn make(i: u64) -> Self {
        [i; 8]
    }
    #[inline]
    fn sum(&self) -> u64 {
        self.iter().fold(0u64, |acc, &w| acc.wrapping_add(w))
    }
}

/// The settings of every group: 10 samples, 500 ms warm-up, 2 s measurement.
fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
}

/// One throughput group: every system in `systems` with `producers`
/// producers pushing items of type `T`.
fn throughput_group<T: Item>(c: &mut Criterion, name: &str, producers: usize, systems: &[Sys]) {
    let mut group = c.benchmark_group(name);
    configure(&mut group);
    // An iteration takes milliseconds: flat sampling keeps the run short.
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(ITEMS));
    for &system in systems {
        with_throughput::<T, _>(system, producers, Placement::Free, |run| {
            group.bench_function(system.name(), |b| b.iter_custom(&mut *run));
        });
    }
    group.finish();
}

/// The multi-producer systems with `ringbatch_exclusive` after `ringbatch`,
/// then `extra`.
fn with_exclusive(extra: &[Sys]) -> Vec<Sys> {
    let mut systems = Sys::MPSC.to_vec();
    systems.insert(1, Sys::RingbatchExclusive);
    systems.extend_from_slice(extra);
    systems
}

fn throughput_1p(c: &mut Criterion) {
    throughput_group::<u64>(c, "throughput_1p", 1, &with_exclusive(&[Sys::Rtrb]));
}

fn throughput_2p(c: &mut Criterion) {
    throughput_group::<u64>(c, "throughput_2p", 2, &with_exclusive(&[]));
}

fn throughput_8p(c: &mut Criterion) {
    throughput_group::<u64>(c, "throughput_8p", 8, &Sys::MPSC);
}

fn throughput_1p_64b(c: &mut Criterion) {
    throughput_group::<[u64; 8]>(c, "throughput_1p_64b", 1, &with_exclusive(&[Sys::Rtrb]));
}

fn roundtrip(c: &mut Criterion) {
    let mut group = c.benchmark_group("roundtrip");
    configure(&mut group);
    group.throughput(Throughput::Elements(1));
    for system in Rt::ALL {
        with_roundtrip(system, |call| {
            let mut next = 0u64;
            group.bench_function(system.name(), |b| {
                b.iter(|| {
                    // Requests must differ from one to the next (the
                    // disruptor harness matches its reply slot on `x + 1`).
                    next += 1;
                    let reply = call(black_box(next));
                    debug_assert_eq!(reply, next + 1);
                    reply
                });
            });
        });
    }
    group.finish();
}

/// One producer's throughput for every system of `throughput_1p` (items of
/// type `T`), in `rounds` rounds of `iterations` iterations per system, the
/// order rotating from round to round. Each system is started and stopped
/// within its turn, as in criterion's groups, so nothing spins during
/// another's. Prints each round's items per second, then per system the
/// median, and the median over rounds of ringbatch's ratio to that round's
/// best multi-producer peer and of its fraction of `rtrb`.
///
/// The machine these benches were written on moves between a fast and a
/// slow state for minutes at a time; criterion measures one system after
/// the other, so two of its medians can come from different states. Within
/// a round the systems run seconds apart.
fn paired_1p<T: Item>(label: &str, placement: Placement, rounds: usize, iterations: u64) {
    let systems = with_exclusive(&[Sys::Rtrb]);
    let mut rates: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); systems.len()];
    let placed = match placement {
        Placement::Free => "threads placed by the scheduler",
        Placement::Pinned => "consumer pinned to one core, producer to another",
    };
    println!();
    println!(
        "{label}, paired: one producer, {placed}; {rounds} rounds of {iterations} x {ITEMS} \
         items per system, the order rotating; M items/s"
    );
    println!();
    let header: Vec<String> = systems
        .iter()
        .map(|s| format!("{:>10}", short(*s)))
        .collect();
    println!("| round | {} |", header.join(" | "));
    println!("| ----- |{}", " ---------: |".repeat(systems.len()));
    for round in 0..rounds {
        for k in 0..systems.len() {
            let i = (round + k) % systems.len();
            let elapsed = with_throughput::<T, _>(systems[i], 1, placement, |run| {
                run(1); // warm-up, not counted
                run(iterations)
            });
            rates[i].push((iterations * ITEMS) as f64 / elapsed.as_secs_f64() / 1e6);
        }
        let row: Vec<String> = rates
            .iter()
            .map(|r| format!("{:>10.1}", r[round]))
            .collect();
        println!("| {:>5} | {} |", round + 1, row.join(" | "));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let row: Vec<String> = rates
        .iter()
        .map(|r| format!("{:>10.1}", median(r.clone())))
        .collect();
    println!("| median | {} |", row.join(" | "));
    let index = |sys: Sys| systems.iter().position(|&s| s == sys).expect("in the list");
    let peers: Vec<usize> = systems
        .iter()
        .enumerate()
        .filter(|(_, s)| !matches!(s, Sys::Ringbatch | Sys::RingbatchExclusive | Sys::Rtrb))
        .map(|(i, _)| i)
        .collect();
    println!();
    for ours in [Sys::Ringbatch, Sys::RingbatchExclusive] {
        let (ours_i, rtrb_i) = (index(ours), index(Sys::Rtrb));
        let vs_best: Vec<f64> = (0..rounds)
            .map(|r| {
                let best = peers.iter().map(|&p| rates[p][r]).fold(0.0, f64::max);
                rates[ours_i][r] / best
            })
            .collect();
        let of_rtrb: Vec<f64> = (0..rounds)
            .map(|r| rates[ours_i][r] / rates[rtrb_i][r])
            .collect();
        let lowest = vs_best.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{}: {:.2}x the round's best multi-producer peer (median; lowest {:.2}x), \
             {:.2} of rtrb (median)",
            ours.name(),
            median(vs_best),
            lowest,
            median(of_rtrb)
        );
    }
}

/// A column name for the paired table.
fn short(system: Sys) -> &'static str {
    match system {
        Sys::Ringbatch => "ringbatch",
        Sys::RingbatchExclusive => "exclusive",
        Sys::ArrayQueue => "array_q",
        Sys::CrossbeamChannel => "crossbeam",
        Sys::Disruptor => "disruptor",
        Sys::Flume => "flume",
        Sys::StdSyncChannel => "std_sync",
        Sys::TokioMpsc => "tokio",
        Sys::Rtrb => "rtrb",
    }
}

criterion_group!(
    benches,
    throughput_1p,
    throughput_2p,
    throughput_8p,
    throughput_1p_64b,
    roundtrip
);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // The paired tables follow criterion's mode (`cargo bench` passes
    // `--bench`; `cargo test --benches` does not: one short round, as a
    // smoke test). With a filter they run only if it is `paired`.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("--list") {
        return;
    }
    let filtered = args.iter().any(|a| !a.starts_with('-'));
    if filtered && !has("paired") {
        return;
    }
    let (rounds, iterations) = if has("--bench") && !has("--test") {
        (11, 5)
    } else {
        (1, 1)
    };
    for placement in [Placement::Free, Placement::Pinned] {
        if placement == Placement::Pinned
            && core_affinity::get_core_ids().is_none_or(|c| c.len() < 2)
        {
            println!("\npinned paired tables skipped: fewer than two cores to pin to");
            continue;
        }
        paired_1p::<u64>("throughput_1p", placement, rounds, iterations);
        paired_1p::<[u64; 8]>("throughput_1p_64b", placement, rounds, iterations);
    }
}
