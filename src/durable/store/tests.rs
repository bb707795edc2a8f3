//! The store's behaviour through its interface, on real directories.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::*;

mod corrupt;

/// A directory under the system's temporary one, unique to the test,
/// removed on drop.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new(name: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "ringbatch-store-{name}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Relaxed)
        ));
        TempDir(path)
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Options for a store in `dir`: no fsync, room enough, large segments.
pub(super) fn options(dir: &Path) -> StoreOptions {
    StoreOptions {
        dir: dir.to_path_buf(),
        fsync: FsyncPolicy::Never,
        max_bytes: 1 << 20,
        segment_bytes: 1 << 16,
        corrupt_tail: CorruptTail::Truncate,
    }
}

/// `items` framed as `append_batch` takes them.
pub(super) fn framed(items: &[&[u8]]) -> Vec<u8> {
    let mut buf = Vec::new();
    for item in items {
        buf.extend_from_slice(&(item.len() as u32).to_le_bytes());
        buf.extend_from_slice(item);
    }
    buf
}

/// The segment files of `dir`, in order.
pub(super) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("a readable directory")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

pub(super) fn id(incarnation: u32, sequence: u64) -> ItemId {
    ItemId {
        incarnation,
        sequence,
    }
}

/// Recovered batches as `(attempt, [(id, bytes)])`, to compare.
pub(super) type Batches<'a> = Vec<(u32, Vec<(ItemId, &'a [u8])>)>;

/// Each recovered batch as `(attempt, [(id, bytes)])`.
pub(super) fn batches(recovered: &Recovered) -> Batches<'_> {
    recovered
        .batches
        .iter()
        .map(|b| {
            let items = b.items.iter().map(|(i, v)| (*i, v.as_slice())).collect();
            (b.attempt, items)
        })
        .collect()
}

#[test]
fn reopen_gives_pending_items_in_order_with_ids_and_bytes_and_the_next_incarnation() {
    let dir = TempDir::new("reopen");
    let (mut store, recovered) = Store::open(options(dir.path())).unwrap();
    assert_eq!(store.incarnation(), 1, "expected the first incarnation 1");
    assert!(
        recovered.batches.is_empty(),
        "expected nothing in a new store"
    );
    assert_eq!(store.append_batch(2, &framed(&[b"a", b"bb"])).unwrap(), 0);
    assert_eq!(store.append_batch(1, &framed(&[b"ccc"])).unwrap(), 2);
    let counters = store.counters();
    assert_eq!(counters.items_written.load(Relaxed), 3, "expected 3 items");
    assert_eq!(counters.records_written.load(Relaxed), 3, "header + 2");
    drop(store);

    let (store, recovered) = Store::open(options(dir.path())).unwrap();
    assert_eq!(store.incarnation(), 2, "expected incarnation 2 on reopen");
    let expected: Batches<'_> = vec![
        (0, vec![(id(1, 0), b"a"), (id(1, 1), b"bb")]),
        (0, vec![(id(1, 2), b"ccc")]),
    ];
    assert_eq!(batches(&recovered), expected, "expected both batches back");
    drop(store);

    let (store, recovered) = Store::open(options(dir.path())).unwrap();
    assert_eq!(store.incarnation(), 3, "expected incarnation 3 on reopen");
    assert_eq!(batches(&recovered), expected, "expected them again");
}

#[test]
fn done_items_are_not_recovered_and_a_half_done_batch_gives_its_pending_items() {
    let dir = TempDir::new("done");
    let (mut store, _) = Store::open(options(dir.path())).unwrap();
    store.append_batch(2, &framed(&[b"a0", b"a1"])).unwrap();
    store
        .append_batch(3, &framed(&[b"b0", b"b1", b"b2"]))
        .unwrap();
    store.append_batch(1, &framed(&[b"c0"])).unwrap();
    store.append_done(&[id(1, 0), id(1, 1)]).unwrap();
    store.append_done(&[id(1, 3)]).unwrap();
    drop(store);

    let (mut store, recovered) = Store::open(options(dir.path())).unwrap();
    let expected: Batches<'_> = vec![
        (0, vec![(id(1, 2), b"b0"), (id(1, 4), b"b2")]),
        (0, vec![(id(1, 5), b"c0")]),
    ];
    assert_eq!(
        batches(&recovered),
        expected,
        "expected only the pending items"
    );
    // The replayed items done by the next incarnation stay done.
    store.append_done(&[id(1, 2), id(1, 4), id(1, 5)]).unwrap();
    drop(store);
    let (_store, recovered) = Store::open(options(dir.path())).unwrap();
    assert!(
        recovered.batches.is_empty(),
        "expected nothing pending, got {:?}",
        recovered.batches
    );
    let files = segment_files(dir.path());
    assert_eq!(
        files.len(),
        1,
        "expected the done segments deleted: {files:?}"
    );
}

#[test]
fn an_id_done_twice_is_counted_once() {
    let dir = TempDir::new("twice");
    let mut opts = options(dir.path());
    opts.segment_bytes = 1;
    let (mut store, _) = Store::open(opts.clone()).unwrap();
    // Each batch in a segment of its own.
    store.append_batch(2, &framed(&[b"a0", b"a1"])).unwrap();
    store.append_batch(1, &framed(&[b"b0"])).unwrap();
    let first = segment_files(dir.path())[0].clone();
    store.append_done(&[id(1, 0)]).unwrap();
    store.append_done(&[id(1, 0), id(1, 0)]).unwrap();
    assert!(
        first.exists(),
        "expected the first segment kept: one of its items is outstanding"
    );
    store.append_done(&[id(1, 1)]).unwrap();
    assert!(
        !first.exists(),
        "expected the first segment deleted once both its items are done"
    );
    drop(store);
    let (_store, recovered) = Store::open(opts).unwrap();
    let expected: Batches<'_> = vec![(0, vec![(id(1, 2), b"b0")])];
    assert_eq!(batches(&recovered), expected, "expected only b0 pending");
}

#[test]
fn a_recovered_batch_carries_the_largest_attempt_of_its_pending_items() {
    let dir = TempDir::new("attempt");
    let (mut store, _) = Store::open(options(dir.path())).unwrap();
    store.append_batch(3, &framed(&[b"x", b"y", b"z"])).unwrap();
    store.append_batch(1, &framed(&[b"w"])).unwrap();
    store
        .append_attempt(&[id(1, 0), id(1, 1), id(1, 2)], 1)
        .unwrap();
    store.append_attempt(&[id(1, 0)], 5).unwrap();
    store.append_attempt(&[id(1, 1), id(1, 2)], 3).unwrap();
    store.append_attempt(&[id(1, 2)], 2).unwrap();
    // Attempt 5 was only for an item now done.
    store.append_done(&[id(1, 0)]).unwrap();
    drop(store);

    let (_store, recovered) = Store::open(options(dir.path())).unwrap();
    let expected: Batches<'_> = vec![
        (3, vec![(id(1, 1), b"y"), (id(1, 2), b"z")]),
        (0, vec![(id(1, 3), b"w")]),
    ];
    assert_eq!(
        batches(&recovered),
        expected,
        "expected attempt 3 for the first batch, 0 for the second"
    );
}

#[test]
fn compaction_deletes_done_segments_and_keeps_one_with_an_outstanding_item_and_all_later() {
    let dir = TempDir::new("compact");
    let mut opts = options(dir.path());
    opts.segment_bytes = 64;
    let (mut store, _) = Store::open(opts).unwrap();
    let item = [7u8; 40];
    for _ in 0..6 {
        store.append_batch(1, &framed(&[&item])).unwrap();
    }
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 6, "expected a segment per batch: {files:?}");
    let before = store.counters().bytes_on_disk.load(Relaxed);

    // All done but item 2: segments 0 and 1 go, 2 and every later stay.
    let done: Vec<ItemId> = [0, 1, 3, 4, 5].into_iter().map(|s| id(1, s)).collect();
    store.append_done(&done).unwrap();
    // The DONE record began a segment of its own (the active one was full).
    let left = segment_files(dir.path());
    assert_eq!(left.len(), 5, "expected 4 kept and 1 new: {left:?}");
    assert_eq!(
        left[..4],
        files[2..],
        "expected segments from the third on kept"
    );
    let counters = store.counters();
    assert_eq!(
        counters.segments_deleted.load(Relaxed),
        2,
        "expected 2 deleted"
    );
    assert_eq!(
        counters.segments.load(Relaxed),
        5,
        "expected 5 live segments"
    );
    let after = counters.bytes_on_disk.load(Relaxed);
    assert!(
        after < before,
        "expected bytes on disk to drop: {before} -> {after}"
    );

    // The last one done: every full segment goes, the active one rolled.
    store.append_done(&[id(1, 2)]).unwrap();
    let left = segment_files(dir.path());
    assert_eq!(
        left.len(),
        1,
        "expected only a fresh segment left: {left:?}"
    );
    assert!(
        !files.contains(&left[0]),
        "expected the full active segment rolled"
    );
    let on_disk: u64 = left
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(
        store.counters().bytes_on_disk.load(Relaxed),
        on_disk,
        "expected bytes_on_disk to be the files' size"
    );
}

#[test]
fn a_full_store_refuses_a_batch_with_its_numbers_and_writes_nothing_until_items_are_done() {
    let dir = TempDir::new("full");
    let mut opts = options(dir.path());
    opts.max_bytes = 200;
    opts.segment_bytes = 100;
    let (mut store, _) = Store::open(opts).unwrap();
    let items = framed(&[&[1u8; 50]]);
    let len = record::batch_record_bytes(items.len());
    assert_eq!(store.append_batch(1, &items).unwrap(), 0);
    assert_eq!(store.append_batch(1, &items).unwrap(), 1);
    let used = store.counters().bytes_on_disk.load(Relaxed);
    assert!(!store.would_fit(len), "expected a third record not to fit");
    let files = segment_files(dir.path());
    let sizes: Vec<u64> = files
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    match store.append_batch(1, &items) {
        Err(StoreError::Full {
            needed,
            used: u,
            limit,
        }) => {
            // The record begins a new segment: its header counts.
            assert_eq!(
                (needed, u, limit),
                (len + record::HEADER_RECORD_BYTES, used, 200),
                "expected the record's and the store's sizes"
            );
        }
        other => panic!("expected Full, got {other:?}"),
    }
    let after: Vec<u64> = files
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    assert_eq!(segment_files(dir.path()), files, "expected no new file");
    assert_eq!(after, sizes, "expected no byte written");
    assert_eq!(store.counters().items_written.load(Relaxed), 2);

    store.append_done(&[id(1, 0), id(1, 1)]).unwrap();
    assert!(
        store.would_fit(len),
        "expected room once the items are done"
    );
    assert_eq!(
        store.append_batch(1, &items).unwrap(),
        2,
        "expected the refused batch not to have used a sequence"
    );
}

#[test]
fn a_second_open_of_a_locked_directory_is_refused_until_the_first_is_dropped() {
    let dir = TempDir::new("locked");
    let (first, _) = Store::open(options(dir.path())).unwrap();
    match Store::open(options(dir.path())) {
        Err(StoreError::Locked { dir: locked }) => {
            assert_eq!(locked, dir.path(), "expected the directory named");
        }
        Err(other) => panic!("expected Locked, got {other:?}"),
        Ok(_) => panic!("expected Locked, got an open store"),
    }
    drop(first);
    let (second, _) = Store::open(options(dir.path())).expect("open after drop");
    assert_eq!(
        second.incarnation(),
        2,
        "expected the refused open not to count"
    );
}

#[test]
fn the_incarnation_never_repeats_even_with_every_segment_compacted_away() {
    let dir = TempDir::new("incarnation");
    let mut opts = options(dir.path());
    opts.segment_bytes = 1;
    for expected in 1..=3u32 {
        let (mut store, _) = Store::open(opts.clone()).unwrap();
        assert_eq!(
            store.incarnation(),
            expected,
            "expected incarnation {expected}"
        );
        let first = store.append_batch(1, &framed(&[b"x"])).unwrap();
        store.append_batch(1, &framed(&[b"y"])).unwrap();
        store
            .append_done(&[id(expected, first), id(expected, first + 1)])
            .unwrap();
    }
    // Only the segment the last store began is left, holding no item.
    for file in segment_files(dir.path()) {
        std::fs::remove_file(file).unwrap();
    }
    let (store, recovered) = Store::open(opts).unwrap();
    assert_eq!(store.incarnation(), 4, "expected 4 with no segment left");
    assert!(recovered.batches.is_empty(), "expected nothing pending");
}

#[test]
fn a_broken_incarnation_file_is_refused_or_read_past_with_the_segments_headers() {
    let dir = TempDir::new("broken-incarnation");
    for _ in 0..2 {
        let (mut store, _) = Store::open(options(dir.path())).unwrap();
        store.append_batch(1, &framed(&[b"x"])).unwrap();
    }
    let file = dir.path().join("INCARNATION");
    std::fs::write(&file, "not a number").unwrap();
    let mut opts = options(dir.path());
    opts.corrupt_tail = CorruptTail::Refuse;
    match Store::open(opts) {
        Err(StoreError::Corrupt { path, .. }) => assert_eq!(path, file, "expected the file named"),
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
    let (store, _) = Store::open(options(dir.path())).unwrap();
    assert_eq!(store.incarnation(), 3, "expected one above the headers' 2");
}

#[test]
fn every_batch_syncs_once_per_batch_never_not_at_all_interval_when_idle() {
    let count = |policy: FsyncPolicy, idle: bool| {
        let dir = TempDir::new("fsync");
        let mut opts = options(dir.path());
        opts.fsync = policy;
        let (mut store, _) = Store::open(opts).unwrap();
        for _ in 0..3 {
            store.append_batch(1, &framed(&[b"x"])).unwrap();
            store.after_batch(Instant::now()).unwrap();
        }
        let after_batches = store.counters().fsyncs.load(Relaxed);
        if idle {
            store.idle(Instant::now()).unwrap();
        }
        (after_batches, store.counters().fsyncs.load(Relaxed))
    };
    assert_eq!(
        count(FsyncPolicy::EveryBatch, false).0,
        3,
        "expected one per batch"
    );
    assert_eq!(
        count(FsyncPolicy::Never, true),
        (0, 0),
        "expected none under Never"
    );
    let interval = FsyncPolicy::Interval(Duration::from_secs(3600));
    assert_eq!(
        count(interval, true),
        (0, 1),
        "expected none after batches, one when idle"
    );
    assert_eq!(
        count(FsyncPolicy::Interval(Duration::ZERO), false).0,
        3,
        "expected a zero interval to sync every batch"
    );
}

#[test]
fn a_misframed_batch_is_refused_and_writes_nothing() {
    let dir = TempDir::new("misframed");
    let (mut store, _) = Store::open(options(dir.path())).unwrap();
    let before = store.counters().bytes_on_disk.load(Relaxed);
    let items = framed(&[b"ab", b"cd"]);
    for (count, items) in [(3, &items[..]), (2, &items[..items.len() - 1])] {
        match store.append_batch(count, items) {
            Err(StoreError::Encode { message }) => assert!(!message.is_empty()),
            other => panic!("expected Encode for a misframed batch, got {other:?}"),
        }
    }
    assert_eq!(
        store.counters().bytes_on_disk.load(Relaxed),
        before,
        "expected nothing written"
    );
    let len: u64 = segment_files(dir.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(len, before, "expected only the header on disk");
    assert_eq!(
        store.append_batch(2, &items).unwrap(),
        0,
        "expected sequence 0 unused"
    );
}

#[test]
fn an_io_error_names_its_operation_and_path() {
    let dir = TempDir::new("io-error");
    std::fs::create_dir_all(dir.path()).unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"").unwrap();
    match Store::open(options(&blocker.join("store"))) {
        Err(StoreError::Io { op, path, .. }) => {
            assert_eq!(op, "create directory", "expected the operation named");
            assert_eq!(path, blocker.join("store"), "expected the path named");
        }
        other => panic!("expected an Io error, got {:?}", other.map(|_| ())),
    }
}
