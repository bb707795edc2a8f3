//! Crash recovery of the durable store (feature `durable`): a child process
//! (this test binary, run again in child mode) submits numbered items into
//! a durable batcher whose handler logs each batch's items as durable when
//! it receives them (the store wrote them first) and as handled when it is
//! done; the test kills it with SIGKILL at a random moment, runs it again
//! from the first item it had not reported durable, and checks that every
//! item reported durable, and in the end every item, was handled at least
//! once, with duplicates bounded by what can be in flight.
//!
//! Without the libtest harness: `main` is either the test or the child.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ringbatch::durable::{Durability, FsyncPolicy, Postcard};
use ringbatch::{Batch, Batcher};

const CHILD: &str = "RINGBATCH_CRASH_CHILD";
const ITEMS: u64 = 20_000;
const MAX_BATCH: usize = 64;
const ROUNDS: usize = 20;

fn main() {
    match std::env::var_os(CHILD) {
        Some(dir) => child(Path::new(&dir)),
        None => parent(),
    }
}

/// Appends `prefix` and the items as one line, in one `write` (a kill cuts
/// at most the line being written; readers skip a line without its end).
fn log(file: &mut std::fs::File, items: &[u64]) {
    let mut line = String::with_capacity(items.len() * 8);
    for x in items {
        line.push_str(&x.to_string());
        line.push(' ');
    }
    line.push('\n');
    file.write_all(line.as_bytes()).expect("log write");
}

fn open_log(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log file")
}

/// The child: submits items `from..ITEMS` into a durable batcher and exits
/// once they are all handled.
fn child(dir: &Path) {
    let from: u64 = std::env::var("RINGBATCH_CRASH_FROM")
        .expect("from")
        .parse()
        .expect("a number");
    let mut durable = open_log(&dir.join("durable.log"));
    let mut handled = open_log(&dir.join("handled.log"));
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(MAX_BATCH)
        // A process crash loses nothing written, whatever the policy.
        .durable(
            Durability::new(dir.join("store")).with_fsync(FsyncPolicy::Never),
            Postcard,
        )
        .handler_fn(move |batch: &mut Batch<'_, u64, ()>| {
            log(&mut durable, batch.items());
            // A slow sink: batches stay in flight for a while.
            std::thread::sleep(Duration::from_micros(500));
            log(&mut handled, batch.items());
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .expect("the store opens");
    let producer = batcher.producer();
    for i in from..ITEMS {
        producer.push(i).expect("accepted");
    }
    batcher.flush();
    let stats = batcher.shutdown();
    assert_eq!(stats.durable.expect("durable").write_errors, 0);
    std::process::exit(0);
}

/// The numbers of the whole lines of a log.
fn read_log(path: &Path) -> Vec<Vec<u64>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let whole = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    whole
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(|x| x.parse().expect("a number in the log"))
                .collect()
        })
        .collect()
}

fn spawn(dir: &Path, from: u64) -> Child {
    Command::new(std::env::current_exe().expect("this test binary"))
        .env(CHILD, dir)
        .env("RINGBATCH_CRASH_FROM", from.to_string())
        .spawn()
        .expect("the child starts")
}

fn wait(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the {what} child did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A small xorshift generator: the kill points, from a seed printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn parent() {
    let seed = std::env::var("RINGBATCH_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("durable crash test: {ROUNDS} rounds, seed {seed} (RINGBATCH_CRASH_SEED to repeat)");
    let mut rng = Rng(seed);
    for round in 0..ROUNDS {
        let dir: PathBuf =
            std::env::temp_dir().join(format!("ringbatch-crash-{}-{round}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let kill_after = Duration::from_millis(5 + rng.next() % 300);
        let outcome = std::panic::catch_unwind(|| one_round(&dir, kill_after));
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(panic) = outcome {
            eprintln!("round {round} failed (seed {seed}, kill after {kill_after:?})");
            std::panic::resume_unwind(panic);
        }
    }
    println!("durable crash test: ok");
}

fn one_round(dir: &Path, kill_after: Duration) {
    let mut first = spawn(dir, 0);
    std::thread::sleep(kill_after);
    // SIGKILL: no destructor, no flush, no shutdown runs in the child.
    let _ = first.kill();
    let status = wait(&mut first, "first");
    let durable: Vec<u64> = read_log(&dir.join("durable.log")).concat();
    let from = durable.iter().max().map_or(0, |&m| m + 1);

    let mut second = spawn(dir, from);
    let status2 = wait(&mut second, "second");
    assert!(status2.success(), "the second child failed: {status2}");

    let mut times: HashMap<u64, u32> = HashMap::new();
    for x in read_log(&dir.join("handled.log")).concat() {
        *times.entry(x).or_insert(0) += 1;
    }
    for x in &durable {
        assert!(
            times.contains_key(x),
            "item {x} was reported durable (first child {status}) but never handled"
        );
    }
    for x in 0..ITEMS {
        assert!(times.contains_key(&x), "item {x} was never handled");
    }
    // Handled twice: at most the batch in the handler at the kill, and one
    // written but not yet handed to the handler (both replayed, the second
    // also resubmitted).
    let twice: u64 = times.values().map(|&n| u64::from(n - 1)).sum();
    assert!(
        twice <= 2 * MAX_BATCH as u64,
        "{twice} duplicate deliveries, more than two batches in flight can explain"
    );
}
