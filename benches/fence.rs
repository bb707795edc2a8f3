//! What the drainer's park costs while an exclusive producer owns a lane:
//! the heavy side of the asymmetric fence, `membarrier`'s expedited private
//! barrier, on the thread that runs it and on a thread of the same process
//! that spins on another CPU (whom the barrier interrupts).
//!
//! `cargo bench --bench fence`. A plain `main`, not criterion, Linux only.
//! The spinner is pinned to the second CPU and reads the clock in a loop;
//! a gap between two reads longer than [`STALL`] is a stall. The caller,
//! pinned to the first CPU, runs [`ROUNDS`] rounds of a [`GAP`] busy wait,
//! with and without a barrier in each round, and the two passes alternate
//! [`PASSES`] times. The table gives, per pass, the caller's time per
//! round beyond the busy wait and the spinner's stalls per round and their
//! median length. `Stats::park_fences` counts the barriers a batcher runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Rounds per pass.
const ROUNDS: usize = 20_000;
/// The caller's busy wait in each round.
const GAP: Duration = Duration::from_micros(20);
/// A gap between two clock reads of the spinner longer than this is a stall.
const STALL: Duration = Duration::from_nanos(500);
/// Passes of each kind (with and without the barrier), alternating.
const PASSES: usize = 2;

#[cfg(target_os = "linux")]
mod membarrier {
    const PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    fn call(command: libc::c_long) -> bool {
        // SAFETY: `membarrier` takes two integers and touches no memory of
        // ours; an unknown command fails with an error code.
        unsafe { libc::syscall(libc::SYS_membarrier, command, 0 as libc::c_long) == 0 }
    }

    pub fn register() -> bool {
        call(REGISTER_PRIVATE_EXPEDITED)
    }

    pub fn barrier() {
        assert!(
            call(PRIVATE_EXPEDITED),
            "membarrier failed after registering"
        );
    }

    /// Pins the calling thread to `cpu`; false if it may not run there.
    pub fn pin(cpu: usize) -> bool {
        // SAFETY: a zeroed `cpu_set_t` is the empty set; `CPU_SET` and
        // `sched_setaffinity` only read and write the set we pass.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
        }
    }
}

/// One pass: the caller's extra time per round, the spinner's stalls per
/// round and their median length.
#[cfg(target_os = "linux")]
fn pass(with_barrier: bool) -> (Duration, f64, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let spinning = Arc::new(AtomicBool::new(false));
    let spinner = {
        let (stop, spinning) = (Arc::clone(&stop), Arc::clone(&spinning));
        std::thread::spawn(move || {
            assert!(membarrier::pin(1), "cannot pin the spinner to CPU 1");
            let mut stalls = Vec::with_capacity(2 * ROUNDS);
            let mut last = Instant::now();
            spinning.store(true, Ordering::Release);
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                let gap = now - last;
                last = now;
                if gap > STALL {
                    stalls.push(gap);
                }
            }
            stalls
        })
    };
    assert!(membarrier::pin(0), "cannot pin the caller to CPU 0");
    while !spinning.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let start = Instant::now();
    for _ in 0..ROUNDS {
        if with_barrier {
            membarrier::barrier();
        }
        let until = Instant::now() + GAP;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }
    let per_round = start.elapsed() / ROUNDS as u32;
    stop.store(true, Ordering::Relaxed);
    let mut stalls = spinner.join().expect("the spinner does not panic");
    stalls.sort();
    let median = stalls.get(stalls.len() / 2).copied().unwrap_or_default();
    (
        per_round.saturating_sub(GAP),
        stalls.len() as f64 / ROUNDS as f64,
        median,
    )
}

#[cfg(target_os = "linux")]
fn main() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 || !membarrier::register() {
        println!("fence: needs two CPUs and membarrier's expedited private barrier; skipped");
        return;
    }
    println!(
        "membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED): {ROUNDS} rounds of a {GAP:?} busy wait \
         on CPU 0, a thread spinning on CPU 1; stalls are gaps over {STALL:?}\n"
    );
    println!(
        "| pass | barrier | caller, extra per round | spinner stalls per round | median stall |"
    );
    println!("| ---: | --- | ---: | ---: | ---: |");
    for i in 0..PASSES {
        for with_barrier in [false, true] {
            let (extra, stalls, median) = pass(with_barrier);
            println!(
                "| {} | {} | {:.2} µs | {stalls:.3} | {:.2} µs |",
                i + 1,
                if with_barrier { "yes" } else { "no" },
                extra.as_secs_f64() * 1e6,
                median.as_secs_f64() * 1e6,
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("fence: membarrier is Linux only; skipped");
}
