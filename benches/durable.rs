//! The durable store's cost: one producer pushes `ITEMS` 64-byte records
//! through a batcher whose handler completes them, with the store off, on
//! with an fsync per batch, and on with an fsync every 10 ms (the default);
//! against the obvious way to do without ringbatch, each record written to
//! a file with its own `write` and `fsync`; and against an embedded store
//! in the handler (redb: each batch inserted in one transaction, removed in
//! another once handled), synced every batch and never. Same run, `ROUNDS`
//! rounds alternating the systems; the median round of each is reported in
//! items per second, with its ratio to the store off.
//!
//! ```text
//! cargo bench --features durable --bench durable
//! ```
//!
//! The store's directory is under `RINGBATCH_BENCH_DIR` (default: the
//! system's temporary directory): point it at the disk to measure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringbatch::durable::{Durability, FsyncPolicy, codec_fn};
use ringbatch::{Batch, Batcher};

const ITEMS: u64 = 200_000;
/// The per-item baseline is slower: fewer items, the rate is compared.
const ITEMS_PER_ITEM_FSYNC: u64 = 2_000;
const ROUNDS: usize = 5;
const RECORD: usize = 64;

type Record = [u8; RECORD];

fn record(i: u64) -> Record {
    let mut r = [0u8; RECORD];
    r[..8].copy_from_slice(&i.to_le_bytes());
    r
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum System {
    Off,
    EveryBatch,
    Interval,
    WriteFsyncPerItem,
    RedbEveryBatch,
    RedbNever,
}

impl System {
    const ALL: [System; 6] = [
        System::Off,
        System::EveryBatch,
        System::Interval,
        System::WriteFsyncPerItem,
        System::RedbEveryBatch,
        System::RedbNever,
    ];

    fn name(self) -> &'static str {
        match self {
            System::Off => "ringbatch, store off",
            System::EveryBatch => "ringbatch, durable, fsync every batch",
            System::Interval => "ringbatch, durable, fsync every 10 ms",
            System::WriteFsyncPerItem => "write + fsync per item",
            System::RedbEveryBatch => "redb in the handler, synced every batch",
            System::RedbNever => "redb in the handler, never synced",
        }
    }
}

fn scratch(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(format!(
        "ringbatch-bench-durable-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Items per second through a batcher, with `fsync` as the store's policy
/// (`None`: no store).
fn through_batcher(base: &Path, fsync: Option<FsyncPolicy>) -> f64 {
    let dir = scratch(base, "store");
    let mut builder = Batcher::builder().lanes(1).capacity(4096).max_batch(256);
    if let Some(fsync) = fsync {
        let codec = codec_fn(
            |r: &Record, out: &mut Vec<u8>| {
                out.extend_from_slice(r);
                Ok(())
            },
            |bytes: &[u8]| {
                bytes
                    .try_into()
                    .map_err(|_| ringbatch::durable::CodecError::new("not a record"))
            },
        );
        builder = builder.durable(Durability::new(&dir).with_fsync(fsync), codec);
    }
    let batcher = builder
        .handler_fn(|batch: &mut Batch<'_, Record, ()>| {
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .expect("the batcher builds");
    let (rate, stats) = push_all(batcher);
    if let Some(durable) = stats.durable {
        assert_eq!(durable.items_written, ITEMS, "every item written");
        assert_eq!(durable.write_errors, 0);
    }
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

/// Pushes `ITEMS` records through `batcher`, flushes and shuts it down;
/// returns the items per second until the flush, and the final stats.
fn push_all(batcher: Batcher<Record, ()>) -> (f64, ringbatch::Stats) {
    let producer = batcher.producer();
    let start = Instant::now();
    for i in 0..ITEMS {
        producer.push(record(i)).expect("accepted");
    }
    batcher.flush();
    let elapsed = start.elapsed();
    drop(producer);
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled, ITEMS, "every item handled");
    (ITEMS as f64 / elapsed.as_secs_f64(), stats)
}

/// The table an embedded store keeps the queued records in.
const QUEUE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("queue");

/// Items per second through a batcher without the store whose handler
/// keeps each batch in redb while it handles it: one transaction inserts
/// the batch (synced when `sync`), another removes it (never synced
/// itself: the next synced commit carries it, as the log's completion
/// records ride on the next batch's `fsync`).
fn through_redb(base: &Path, sync: bool) -> f64 {
    let dir = scratch(base, "redb");
    std::fs::create_dir_all(&dir).unwrap();
    let db = redb::Database::create(dir.join("queue.redb")).expect("the database opens");
    let next = std::sync::atomic::AtomicU64::new(0);
    let batcher = Batcher::builder()
        .lanes(1)
        .capacity(4096)
        .max_batch(256)
        .handler_fn(move |batch: &mut Batch<'_, Record, ()>| {
            let first = next.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let keys = first..first + batch.len() as u64;
            let mut tx = db.begin_write().expect("a write transaction");
            tx.set_durability(if sync {
                redb::Durability::Immediate
            } else {
                redb::Durability::None
            });
            {
                let mut table = tx.open_table(QUEUE).expect("the table");
                for (key, item) in keys.clone().zip(batch.items()) {
                    table.insert(key, &item[..]).expect("insert");
                }
            }
            tx.commit().expect("commit the batch");
            batch.ok_with(|_| ());
            let mut tx = db.begin_write().expect("a write transaction");
            tx.set_durability(redb::Durability::None);
            {
                let mut table = tx.open_table(QUEUE).expect("the table");
                for key in keys {
                    table.remove(key).expect("remove");
                }
            }
            tx.commit().expect("commit the removal");
            Ok(())
        })
        .build()
        .expect("the batcher builds");
    let (rate, _) = push_all(batcher);
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

/// Items per second written one by one, each with its own `fsync`.
fn write_fsync_per_item(base: &Path) -> f64 {
    let dir = scratch(base, "per-item");
    std::fs::create_dir_all(&dir).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .unwrap();
    let start = Instant::now();
    for i in 0..ITEMS_PER_ITEM_FSYNC {
        file.write_all(&record(i)).unwrap();
        file.sync_data().unwrap();
    }
    let elapsed = start.elapsed();
    drop(file);
    let _ = std::fs::remove_dir_all(&dir);
    ITEMS_PER_ITEM_FSYNC as f64 / elapsed.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let base =
        std::env::var_os("RINGBATCH_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); System::ALL.len()];
    for round in 0..ROUNDS {
        // Each round starts with a different system, so that none always
        // runs on a warm or a cold page cache.
        for k in 0..System::ALL.len() {
            let index = (k + round) % System::ALL.len();
            let rate = match System::ALL[index] {
                System::Off => through_batcher(&base, None),
                System::EveryBatch => through_batcher(&base, Some(FsyncPolicy::EveryBatch)),
                System::Interval => through_batcher(
                    &base,
                    Some(FsyncPolicy::Interval(Duration::from_millis(10))),
                ),
                System::WriteFsyncPerItem => write_fsync_per_item(&base),
                System::RedbEveryBatch => through_redb(&base, true),
                System::RedbNever => through_redb(&base, false),
            };
            rates[index].push(rate);
        }
    }
    let off = median(rates[0].clone());
    println!(
        "durable store, {ROUNDS} rounds, {RECORD}-byte records, directory {}",
        base.display()
    );
    println!(
        "{:<40} {:>14} {:>10}   rounds (M items/s)",
        "system", "median items/s", "vs off"
    );
    for (system, rates) in System::ALL.iter().zip(&rates) {
        let m = median(rates.clone());
        let all: Vec<String> = rates.iter().map(|r| format!("{:.3}", r / 1e6)).collect();
        println!(
            "{:<40} {:>14.0} {:>9.3}x   {}",
            system.name(),
            m,
            m / off,
            all.join(" ")
        );
    }
}
